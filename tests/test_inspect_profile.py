"""``jwtedge inspect --profile NAME``: how a token reads under an issuer profile."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from deploy.bake import dotenv_json
from deploy.cli import Seams, app
from verifier.jwks import parse_jwks
from verifier.testing import DevIssuer

runner = CliRunner()
ISS = "https://renewing-bobcat-00.clerk.accounts.dev"
ORIGIN = "https://app.example.com"
#: A Clerk v2 session token (see tests/profiles/test_clerk.py).
CLERK_V2 = {
    "azp": ORIGIN,
    "fea": "o:impersonation",
    "iss": ISS,
    "o": {
        "fpm": "3",
        "id": "org_2vf9pbXnvF3rRRs5qj8NtGCJkC7",
        "per": "read,manage",
        "rol": "admin",
        "slg": "example-org",
    },
    "sid": "sess_2vgGmUhF4ozjr5vHjWyUbKdvkFK",
    "sub": "user_2vYVtestTESTtestTESTtestTESTtest",
    "v": 2,
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def app_env(issuer: DevIssuer, tmp_path: Path) -> Path:
    """The app's env file: the Clerk issuer and origin, the default profile (jwtedge)."""
    env = tmp_path / "app.env"
    jwks = parse_jwks(issuer.jwks()).canonical_json()
    env.write_text(
        f"APP_CONFIG_AUTH__ISSUER={ISS}\n"
        f"APP_CONFIG_AUTH__AUDIENCE={ORIGIN}\n"
        f"APP_CONFIG_AUTH__JWKS={dotenv_json(jwks)}\n"
        "APP_CONFIG_KEYS__REMOTE=never\n"
    )
    return env


def clerk_token(issuer: DevIssuer, ttl: int = 60, **extra: Any) -> str:
    now = int(time.time())
    claims = {**CLERK_V2, "iat": now - 10, "nbf": now - 10, "exp": now + ttl, **extra}
    kid = issuer.kids("RS256")[-1]
    return issuer.sign(claims, {"alg": "RS256", "kid": kid, "typ": "JWT"}, kid=kid, alg="RS256")


def inspect(env: Path, token: str, *args: str) -> Result:
    return runner.invoke(app, ["inspect", "--env-file", str(env), *args], input=token, obj=Seams())


def test_under_the_default_profile_a_clerk_token_has_no_aud_and_is_refused(
    issuer: DevIssuer, app_env: Path
) -> None:
    result = inspect(app_env, clerk_token(issuer))

    assert result.exit_code == 1
    assert "verdict: invalid (audience_mismatch)" in result.stdout
    assert "profile: jwtedge" in result.stdout


def test_profile_clerk_shows_the_session_clerk_claims_make(
    issuer: DevIssuer, app_env: Path
) -> None:
    token = clerk_token(issuer)
    result = inspect(app_env, token, "--profile", "clerk")

    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    assert "verdict: valid" in out
    assert "profile: clerk" in out
    assert "user: user_2vYVtestTESTtestTESTtestTESTtest" in out
    assert "example-org (example-org, id org_2vf9pbXnvF3rRRs5qj8NtGCJkC7): admin [active]" in out
    assert "permissions: org:impersonation:read org:impersonation:manage" in out
    assert "session id: sess_2vgGmUhF4ozjr5vHjWyUbKdvkFK" in out
    assert token not in out + result.stderr
    assert token.rsplit(".", 1)[1] not in out + result.stderr


def test_a_token_that_does_not_verify_is_still_mapped_and_labelled_unverified(
    issuer: DevIssuer, app_env: Path
) -> None:
    result = inspect(app_env, clerk_token(issuer, ttl=-600), "--profile", "clerk")

    assert result.exit_code == 1
    out = result.stdout
    assert "verdict: invalid (token_expired)" in out
    assert "mapped from the unverified claims (the token did not verify):" in out
    assert "  permissions: org:impersonation:read org:impersonation:manage" in out


def test_unverified_claims_that_do_not_map_say_why(issuer: DevIssuer, app_env: Path) -> None:
    token = clerk_token(issuer, ttl=-600, o={"id": 5})

    result = inspect(app_env, token, "--profile", "clerk")

    assert result.exit_code == 1
    assert "the unverified claims do not map (claims_invalid)" in result.stdout


def test_json_names_the_profile_and_the_unverified_mapping(
    issuer: DevIssuer, app_env: Path
) -> None:
    result = inspect(app_env, clerk_token(issuer, ttl=-600), "--profile", "clerk", "--json")

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["profile"] == "clerk"
    assert document["session"] is None
    unverified = document["unverified_session"]
    assert unverified["active_organization"] == "org_2vf9pbXnvF3rRRs5qj8NtGCJkC7"
    assert unverified["permissions"] == ["org:impersonation:read", "org:impersonation:manage"]


def test_without_profile_nothing_unverified_is_mapped(issuer: DevIssuer, app_env: Path) -> None:
    result = inspect(app_env, clerk_token(issuer, ttl=-600), "--json")

    document = json.loads(result.stdout)
    assert document["profile"] == "jwtedge"
    assert "unverified_session" not in document


def test_an_unknown_profile_is_a_usage_error_naming_the_known_ones(
    issuer: DevIssuer, app_env: Path
) -> None:
    result = inspect(app_env, clerk_token(issuer), "--profile", "nope")

    assert result.exit_code == 2
    assert "unknown claims profile 'nope'" in result.stderr
    for name in ("clerk", "keycloak", "supabase"):
        assert name in result.stderr
