"""The public surface other code relies on (pinned like httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types

import pytest

import verifier
from tests.conftest import REPO

#: Every name ``verifier`` exports. Extend this when the package exports more.
EXPORTED = (
    "AppConfig",
    "JWTSessionMiddleware",
    "KeyStore",
    "Organization",
    "Project",
    "Session",
    "TokenVerifier",
    "User",
    "VerifierError",
    "get_session",
)


def test_all_is_exactly_the_pinned_names_sorted() -> None:
    assert verifier.__all__ == sorted(EXPORTED)


def test_every_public_attribute_of_the_package_is_in_all() -> None:
    # dir(), not vars(): the package loads its names on first use (PEP 562).
    public = {
        name
        for name in dir(verifier)
        if not name.startswith("_") and not isinstance(getattr(verifier, name), types.ModuleType)
    }

    assert public == set(verifier.__all__)


def test_importing_the_package_loads_none_of_its_modules() -> None:
    probe = (
        "import sys, verifier\nprint(sorted(m for m in sys.modules if m.startswith('verifier.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", EXPORTED)
def test_each_exported_name_is_importable_from_the_package(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from verifier import {name}", namespace)  # noqa: S102 - a fixed name from EXPORTED

    assert namespace[name] is getattr(verifier, name)
    assert getattr(namespace[name], "__module__", "").startswith("verifier.")


def test_dev_issuer_is_importable_from_verifier_testing() -> None:
    from verifier.testing import DevIssuer

    assert importlib.import_module("verifier.testing").DevIssuer is DevIssuer


def test_verifier_error_is_the_base_of_every_error_code() -> None:
    from verifier.errors import ERROR_CODES

    assert all(issubclass(cls, verifier.VerifierError) for cls in ERROR_CODES.values())
