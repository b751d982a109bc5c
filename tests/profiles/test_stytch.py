"""The ``stytch`` profile against Stytch's documented session JWTs.

Payloads follow https://stytch.com/docs/b2b/guides/sessions/resources/jwt-claims
(B2B: ``https://stytch.com/organization`` with ``organization_id`` and
``slug``, ``https://stytch.com/session`` with ``id``, timestamps,
``authentication_factors`` and RBAC ``roles``) and the consumer session JWT
(no organization). ``aud`` is the project id and ``iss``
``stytch.com/<project id>``, as ``stytch-python``'s ``authenticate_jwt_local``
checks them; a custom domain's issuer is an https URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from typer.testing import CliRunner

from deploy.cli import Seams, app
from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.config import AppConfig
from verifier.errors import ConfigInvalid
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

PROJECT = "project-test-11111111-2222-3333-4444-555555555555"
ISS = f"stytch.com/{PROJECT}"
MEMBER = "member-test-32fc5024-9c09-4da3-bd2e-c9ce4da9375f"
ORG = "organization-test-07971b06-ac8b-4cdb-9c15-63b17e653931"
SESSION = "member-session-test-e3d4c0e5-7a29-4b8f-a1e3-1f2b3c4d5e6f"
ORG_CLAIM = "https://stytch.com/organization"
SESSION_CLAIM = "https://stytch.com/session"

B2B = {
    "aud": [PROJECT],
    "iss": ISS,
    "nbf": 0,
    "sub": MEMBER,
    ORG_CLAIM: {"organization_id": ORG, "slug": "example-org"},
    SESSION_CLAIM: {
        "id": SESSION,
        "started_at": "2024-06-01T12:00:00Z",
        "last_accessed_at": "2024-06-01T12:00:00Z",
        "expires_at": "2024-06-02T12:00:00Z",
        "attributes": {"user_agent": "", "ip_address": ""},
        "authentication_factors": [
            {
                "delivery_method": "email",
                "email_factor": {
                    "email_address": "ada@example.com",
                    "email_id": "member-email-test-d2e3f4a5-6b7c-4d8e-9f0a-1b2c3d4e5f6a",
                },
                "last_authenticated_at": "2024-06-01T12:00:00Z",
                "type": "magic_link",
            }
        ],
        "roles": ["stytch_member", "stytch_admin"],
    },
}
CONSUMER = {
    "aud": [PROJECT],
    "iss": ISS,
    "nbf": 0,
    "sub": "user-test-16d9ba61-97a1-4ba4-9720-b03761dc50c6",
    SESSION_CLAIM: {
        "id": "session-test-fe6c042b-6286-479f-8a4f-b046a6c46509",
        "started_at": "2024-06-01T12:00:00Z",
        "last_accessed_at": "2024-06-01T12:00:00Z",
        "expires_at": "2024-06-02T12:00:00Z",
        "attributes": {"user_agent": "", "ip_address": ""},
        "authentication_factors": [],
    },
}


def stytch(issuer: DevIssuer, iss: str = ISS) -> TokenVerifier:
    return verifier(issuer, profile="stytch", iss=iss, audience=PROJECT)


def test_a_b2b_session_gives_its_organization_roles_and_session_id(issuer: DevIssuer) -> None:
    session = stytch(issuer).session(sign(issuer, B2B))

    roles = ["stytch_member", "stytch_admin"]
    assert session_dict(session) == {
        "user": {
            "id": MEMBER,
            "email": None,
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [
            {
                "id": ORG,
                "slug": "example-org",
                "name": None,
                "role": "stytch_member",
                "roles": roles,
                "permissions": [],
            }
        ],
        "active_organization": ORG,
        "projects": [],
        "scopes": [],
        "roles": roles,
        "permissions": [],
        "session_id": SESSION,
    }
    assert session.organizations[0].rank_in(session.role_ranks) == 2


def test_a_consumer_session_has_no_organization(issuer: DevIssuer) -> None:
    session = stytch(issuer).session(sign(issuer, CONSUMER))

    assert (session.organizations, session.roles) == ((), ())
    assert session.session_id == "session-test-fe6c042b-6286-479f-8a4f-b046a6c46509"


def test_a_custom_domain_issuer_is_an_https_url(issuer: DevIssuer) -> None:
    iss = "https://login.example.com"

    assert stytch(issuer, iss).session(sign(issuer, {**B2B, "iss": iss})).user.id == MEMBER
    assert refused(stytch(issuer, iss), sign(issuer, B2B)).code == "issuer_mismatch"


def test_only_stytchs_own_project_issuer_may_be_a_bare_name(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid):
        AppConfig(auth={"issuer": "example.com/project-test-x", "audience": PROJECT})
    with pytest.raises(ConfigInvalid):
        AppConfig(auth={"issuer": f"stytch.com/{PROJECT}/extra", "audience": PROJECT})
    assert AppConfig(auth={"issuer": ISS, "audience": PROJECT}).auth.issuer == ISS


# -- audience ------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [PROJECT, [PROJECT]])
def test_the_project_id_is_the_audience(issuer: DevIssuer, aud: Any) -> None:
    assert stytch(issuer).session(sign(issuer, {**B2B, "aud": aud})).user.id == MEMBER


@pytest.mark.parametrize("aud", ["project-live-11111111-2222-3333-4444-555555555555", [ORG], None])
def test_another_or_no_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in B2B.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(stytch(issuer), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({**B2B, ORG_CLAIM: ORG}, ORG_CLAIM),
        ({**B2B, ORG_CLAIM: {"slug": "example-org"}}, f"{ORG_CLAIM}.organization_id"),
        ({**B2B, SESSION_CLAIM: {**B2B[SESSION_CLAIM], "roles": "stytch_admin"}}, "roles"),
        ({**B2B, SESSION_CLAIM: {**B2B[SESSION_CLAIM], "id": 5}}, f"{SESSION_CLAIM}.id"),
    ],
)
def test_a_claim_of_the_wrong_shape_is_claims_invalid(
    issuer: DevIssuer, claims: dict[str, Any], named: str
) -> None:
    error = refused(stytch(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert named in error.message


# -- baking Stytch's keys ---------------------------------------------------------------------

runner = CliRunner()


def test_bake_of_stytchs_issuer_needs_the_jwks_url_and_names_it() -> None:
    result = runner.invoke(app, ["bake", "--issuer", ISS], obj=Seams())

    assert result.exit_code == 2
    assert f"--jwks-url=https://test.stytch.com/v1/b2b/sessions/jwks/{PROJECT}" in result.stderr


@pytest.mark.e2e
def test_bake_and_check_of_stytchs_issuer_with_its_jwks_url(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    with DevIssuer.serve(port=0) as keys:
        jwks_url = f"{keys.url}/jwks"
        bake = runner.invoke(
            app,
            [
                *("bake", "--allow-loopback", "--issuer", ISS, "--jwks-url", jwks_url),
                *("--env-file", str(env_file), "--write-profile"),
            ],
            obj=Seams(),
        )
        check = runner.invoke(
            app, ["check", "--allow-loopback", "--env-file", str(env_file)], obj=Seams()
        )

    assert bake.exit_code == 0, bake.stderr
    assert "profile stytch" in bake.stderr
    assert f"APP_CONFIG_AUTH__AUDIENCE={PROJECT}" in bake.stderr
    values = dotenv_values(env_file)
    assert values["APP_CONFIG_CLAIMS__PROFILE"] == "stytch"
    assert f'"issuer":"{ISS}"' in (values["APP_CONFIG_AUTH__JWKS_META"] or "")
    assert check.exit_code == 0, check.stderr
    assert "in sync" in check.stderr
