"""The oidc-provider helper's skip rule: a skip locally, a failure under CI."""

from __future__ import annotations

import pytest

from tests.e2e.node_oidc import ci_requires_everything, skip_or_fail


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", " Yes "])
def test_ci_true_1_and_yes_turn_a_missing_provider_into_a_failure(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)

    assert ci_requires_everything()
    with pytest.raises(pytest.fail.Exception, match=r"node is missing.*CI"):
        skip_or_fail("node is missing")


@pytest.mark.parametrize("value", [None, "", "false", "0", "no"])
def test_outside_ci_a_missing_provider_is_a_skip_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)

    assert not ci_requires_everything()
    with pytest.raises(pytest.skip.Exception, match="node is missing"):
        skip_or_fail("node is missing")
