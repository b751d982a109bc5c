"""The ``descope`` profile against Descope's documented session JWTs.

Payloads follow https://docs.descope.com/session-management/jwt-templates/default-jwt-claims
(``drn`` ``DS``, ``amr``, ``tenants`` as ``{tenantId: {roles, permissions}}``,
top-level ``roles`` / ``permissions``, ``dct`` the current tenant) with Descope's
default "Tenant Admin" role. The refresh token is signed with the same keys and
differs by ``drn: "DSR"`` (``descope/node-sdk`` ``lib/constants.ts``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

PROJECT = "P2abcDEFghiJKLmnoPQRstu"
ISS = f"https://api.descope.com/{PROJECT}"
USER = "U2xyzUVWrstOPQlmnIJKfgh"
ACME = "T2acmeTENANTaaaaaaaaaaa"
GLOBEX = "T2globexTENANTbbbbbbbbb"

SESSION = {
    "amr": ["email"],
    "aud": [PROJECT],
    "drn": "DS",
    "iss": ISS,
    "sub": USER,
    "roles": ["Support"],
    "permissions": ["Read Tickets"],
    "tenants": {
        ACME: {
            "roles": ["Tenant Admin"],
            "permissions": ["User Admin", "SSO Admin", "Impersonate"],
        },
        GLOBEX: {"roles": ["Viewer"], "permissions": []},
    },
    "dct": ACME,
}
REFRESH = {
    "amr": ["email"],
    "aud": [PROJECT],
    "drn": "DSR",
    "iss": ISS,
    "sub": USER,
}


def descope(issuer: DevIssuer) -> TokenVerifier:
    return verifier(issuer, profile="descope", iss=ISS, audience=PROJECT)


def opted_in(issuer: DevIssuer) -> TokenVerifier:
    return verifier(issuer, profile="descope", iss=ISS, audience_claim="none")


def test_tenants_are_organizations_and_dct_is_the_active_one(issuer: DevIssuer) -> None:
    session = descope(issuer).session(sign(issuer, SESSION))

    assert session_dict(session) == {
        "user": {
            "id": USER,
            "email": None,
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [
            {
                "id": ACME,
                "slug": None,
                "name": None,
                "role": "Tenant Admin",
                "roles": ["Tenant Admin"],
                "permissions": ["User Admin", "SSO Admin", "Impersonate"],
            },
            {
                "id": GLOBEX,
                "slug": None,
                "name": None,
                "role": "Viewer",
                "roles": ["Viewer"],
                "permissions": [],
            },
        ],
        "active_organization": ACME,
        "projects": [],
        "scopes": [],
        "roles": ["Support"],
        "permissions": ["Read Tickets"],
        "session_id": None,
    }


def test_descopes_tenant_admin_ranks_as_admin(issuer: DevIssuer) -> None:
    session = descope(issuer).session(sign(issuer, SESSION))
    acme, globex = session.organizations

    assert acme.rank_in(session.role_ranks) == 2
    assert globex.rank_in(session.role_ranks) == 0  # a custom role ranks lowest


def test_without_a_selected_tenant_none_is_active(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in SESSION.items() if k != "dct"}

    session = descope(issuer).session(sign(issuer, claims))

    assert len(session.organizations) == 2
    assert session.active_organization is None


def test_a_current_tenant_the_user_is_not_in_is_not_active(issuer: DevIssuer) -> None:
    session = descope(issuer).session(sign(issuer, {**SESSION, "dct": "T2otherTENANTccccccccc"}))

    assert session.active_organization is None


def test_a_project_level_user_has_no_organizations(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in SESSION.items() if k not in ("tenants", "dct")}

    session = descope(issuer).session(sign(issuer, claims))

    assert session.organizations == ()
    assert (session.roles, session.permissions) == (("Support",), ("Read Tickets",))


# -- the refresh token ---------------------------------------------------------------------------


def test_a_refresh_token_is_never_an_access_token(issuer: DevIssuer) -> None:
    error = refused(descope(issuer), sign(issuer, REFRESH))

    assert error.code == "token_type_invalid"
    assert "refresh token" in error.message


def test_a_refresh_token_is_refused_with_the_audience_opt_in_too(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in REFRESH.items() if k != "aud"}

    assert refused(opted_in(issuer), sign(issuer, claims)).code == "token_type_invalid"


# -- audience --------------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [PROJECT, [PROJECT]])
def test_the_project_id_is_the_audience(issuer: DevIssuer, aud: Any) -> None:
    assert descope(issuer).session(sign(issuer, {**SESSION, "aud": aud})).user.id == USER


@pytest.mark.parametrize("aud", ["P2otherPROJECTcccccccccc", None])
def test_another_or_no_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in SESSION.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(descope(issuer), sign(issuer, claims)).code == "audience_mismatch"


def test_tokens_without_aud_pass_only_with_the_opt_in(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in SESSION.items() if k != "aud"}

    assert opted_in(issuer).session(sign(issuer, claims)).user.id == USER


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({**SESSION, "tenants": [ACME]}, "tenants"),
        ({**SESSION, "tenants": {ACME: ["Tenant Admin"]}}, f"tenants.{ACME}"),
        ({**SESSION, "tenants": {ACME: {"roles": "Tenant Admin"}}}, f"tenants.{ACME}.roles"),
        ({**SESSION, "roles": "Support"}, "roles"),
        ({**SESSION, "dct": 1}, "dct"),
    ],
)
def test_a_claim_of_the_wrong_shape_is_claims_invalid(
    issuer: DevIssuer, claims: dict[str, Any], named: str
) -> None:
    error = refused(descope(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert named in error.message


def test_an_error_never_echoes_a_long_or_control_character_tenant_id(issuer: DevIssuer) -> None:
    hostile = "T\n" + "x" * 500

    error = refused(descope(issuer), sign(issuer, {**SESSION, "tenants": {hostile: "admin"}}))

    assert error.code == "claims_invalid"
    assert "tenants.<key>" in error.message
    assert "\n" not in error.message
    assert "x" * 100 not in error.message
