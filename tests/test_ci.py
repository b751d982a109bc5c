"""Under CI a missing dependency fails instead of skipping, whichever way CI spells the flag."""

from __future__ import annotations

import re

import pytest

from tests.ci import skip_or_fail, under_ci
from tests.conftest import REPO
from tests.e2e.browser import DEBIAN_PACKAGE as CHROMIUM_PACKAGE


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", "yes", "YES", " yes\n"])
def test_a_missing_dependency_fails_under_every_ci_spelling(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)

    assert under_ci()
    with pytest.raises(pytest.fail.Exception, match=f"wrk is missing \\(CI={value.strip()}: "):
        skip_or_fail("wrk is missing")


@pytest.mark.parametrize("value", [None, "", "false", "0", "no", "off", "maybe"])
def test_a_missing_dependency_skips_outside_ci(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)

    assert not under_ci()
    with pytest.raises(pytest.skip.Exception, match="wrk is missing"):
        skip_or_fail("wrk is missing")


def test_make_test_installs_every_system_binary_the_suite_starts() -> None:
    makefile = (REPO / "Makefile").read_text("utf-8")
    match = re.search(r"^SYSTEM_DEPS\s*=(.*)$", makefile, re.MULTILINE)
    assert match is not None

    # redis-server (tests/redis_server.py), Chromium (tests/e2e/browser.py),
    # nginx (tests/e2e/nginx.py) and wrk (bench/http.py, its smoke test).
    needed = {"redis-server", CHROMIUM_PACKAGE, "nginx", "wrk"}
    assert set(match.group(1).split()) == needed
