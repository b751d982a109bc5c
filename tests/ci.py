"""Whether the suite runs under CI, and the skip that turns into a failure there.

Tests that need something outside Python (a system binary such as
``redis-server``, ``nginx``, Chromium or ``wrk``; the published JOSE vectors)
skip with the reason on a developer's machine that lacks it. Under CI a
missing dependency is a broken setup, never a reason to pass: there
:func:`skip_or_fail` fails the test instead.

CI systems spell the flag differently (GitHub Actions and GitLab set
``CI=true``, others ``CI=1`` or ``CI=yes``), so every value in
:data:`CI_VALUES`, in any case, counts; anything else (unset, empty,
``false``, ``0``) does not.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["CI_VALUES", "skip_or_fail", "under_ci"]

#: ``CI`` values that mean "this is CI" (compared lower-cased, spaces stripped).
CI_VALUES = frozenset({"true", "1", "yes"})


def under_ci() -> bool:
    """True when ``CI`` is ``true``, ``1`` or ``yes`` (any case)."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def skip_or_fail(reason: str) -> NoReturn:
    """``pytest.skip(reason)`` locally; ``pytest.fail`` under CI, naming the flag."""
    if under_ci():
        flag = os.environ["CI"].strip()
        pytest.fail(f"{reason} (CI={flag}: a missing dependency is a failure, not a skip)")
    pytest.skip(reason)
