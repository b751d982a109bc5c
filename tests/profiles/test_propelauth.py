"""The ``propelauth`` profile against PropelAuth's documented access tokens.

The payload has the shape of a PropelAuth access token as its SDKs read it
(``propelauth_py/user.py`` ``_to_user``; https://docs.propelauth.com/reference/backend-apis/python):
``user_id`` (= ``sub``), ``email``, ``org_id_to_org_member_info`` with
``org_name``, ``url_safe_org_name``, ``user_role``,
``inherited_user_roles_plus_current_role``, ``org_role_structure``,
``additional_roles``, ``user_permissions``; ``login_method``; no ``aud``. The
active-organization form carries ``org_member_info`` instead.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.profiles.helpers import NOW, refused, session_dict, sign, verifier
from verifier.authz import requires_org
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://8367878.propelauthtest.com"
USER = "e50870d2-9dcd-44fe-a273-1b9cc1e982de"
PERSONAL = "107e06da-e857-4864-bc1d-4adcba02ab76"
ACME = "4b5d2f0e-3c1a-4e8b-9f6d-7a2b1c0d9e8f"
OWNER_PERMISSIONS = [
    "propelauth::can_invite",
    "propelauth::can_change_roles",
    "propelauth::can_remove_users",
    "propelauth::can_setup_saml",
    "propelauth::can_manage_api_keys",
    "propelauth::can_edit_org_access",
    "propelauth::can_update_org_metadata",
    "propelauth::can_view_other_members",
    "propelauth::can_delete_org",
]
PERSONAL_MEMBERSHIP = {
    "org_id": PERSONAL,
    "org_name": "Personal fa0H1m",
    "url_safe_org_name": "personal-fa0h1m",
    "org_metadata": {"personal": True},
    "user_role": "Owner",
    "inherited_user_roles_plus_current_role": ["Owner", "Admin", "Member"],
    "org_role_structure": "single_role_in_hierarchy",
    "additional_roles": [],
    "user_permissions": OWNER_PERMISSIONS,
}
ACME_MEMBERSHIP = {
    "org_id": ACME,
    "org_name": "Acme Inc",
    "url_safe_org_name": "acme-inc",
    "org_metadata": {},
    "user_role": "Member",
    "inherited_user_roles_plus_current_role": ["Member"],
    "org_role_structure": "multi_role",
    "additional_roles": ["Billing"],
    "user_permissions": ["propelauth::can_view_other_members"],
}
ACCESS = {
    "sub": USER,
    "user_id": USER,
    "iss": ISS,
    "email": "ada@example.com",
    "org_id_to_org_member_info": {PERSONAL: PERSONAL_MEMBERSHIP, ACME: ACME_MEMBERSHIP},
    "login_method": {"login_method": "social_sso", "provider": "Google"},
}
#: A token created for one organization: org_member_info, the active membership.
ACTIVE_ORG_ACCESS = {
    **{k: v for k, v in ACCESS.items() if k != "org_id_to_org_member_info"},
    "org_member_info": ACME_MEMBERSHIP,
}


def propelauth(issuer: DevIssuer) -> TokenVerifier:
    return verifier(issuer, profile="propelauth", iss=ISS, audience_claim="none")


def personal_org() -> dict[str, Any]:
    return {
        "id": PERSONAL,
        "slug": "personal-fa0h1m",
        "name": "Personal fa0H1m",
        "role": "Owner",
        "roles": ["Owner", "Admin", "Member"],
        "permissions": OWNER_PERMISSIONS,
    }


def acme_org() -> dict[str, Any]:
    return {
        "id": ACME,
        "slug": "acme-inc",
        "name": "Acme Inc",
        "role": "Member",
        "roles": ["Member", "Billing"],
        "permissions": ["propelauth::can_view_other_members"],
    }


def test_every_membership_is_an_organization_with_its_roles_and_permissions(
    issuer: DevIssuer,
) -> None:
    session = propelauth(issuer).session(sign(issuer, ACCESS))

    assert session_dict(session) == {
        "user": {
            "id": USER,
            "email": "ada@example.com",
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [personal_org(), acme_org()],
        "active_organization": None,
        "projects": [],
        "scopes": [],
        "roles": [],
        "permissions": [],
        "session_id": None,
    }


def test_an_active_org_token_has_that_one_organization_active(issuer: DevIssuer) -> None:
    session = propelauth(issuer).session(sign(issuer, ACTIVE_ORG_ACCESS))

    view = session_dict(session)
    assert view["organizations"] == [acme_org()]
    assert view["active_organization"] == ACME


def test_a_user_in_no_organization_has_none(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "org_id_to_org_member_info": {}}

    assert propelauth(issuer).session(sign(issuer, claims)).organizations == ()


def test_propelauths_roles_rank_owner_over_admin_over_member(issuer: DevIssuer) -> None:
    session = propelauth(issuer).session(sign(issuer, ACCESS))
    personal, acme = session.organizations

    assert personal.rank_in(session.role_ranks) == 3
    assert acme.rank_in(session.role_ranks) == 1
    assert dict(session.role_ranks) == {"Member": 1, "Admin": 2, "Owner": 3}


def test_the_user_is_user_id_and_first_and_last_name_make_the_name(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "first_name": "Ada", "last_name": "Lovelace"}

    user = propelauth(issuer).session(sign(issuer, claims)).user

    assert (user.id, user.name, user.email) == (USER, "Ada Lovelace", "ada@example.com")


def test_a_token_without_user_id_is_claims_invalid(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "user_id"}

    error = refused(propelauth(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert "user_id" in error.message


# -- audience: none, by the explicit opt-in ----------------------------------------------------


def test_propelauth_tokens_need_the_opt_in_since_they_carry_no_aud(issuer: DevIssuer) -> None:
    strict = verifier(issuer, profile="propelauth", iss=ISS, audience="https://api.example.com")

    assert refused(strict, sign(issuer, ACCESS)).code == "audience_mismatch"
    assert propelauth(issuer).session(sign(issuer, ACCESS)).user.id == USER


def test_with_the_opt_in_another_issuer_is_still_refused(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "iss": "https://1234567.propelauthtest.com"}

    assert refused(propelauth(issuer), sign(issuer, claims)).code == "issuer_mismatch"


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({**ACCESS, "org_id_to_org_member_info": [PERSONAL]}, "org_id_to_org_member_info"),
        (
            {**ACCESS, "org_id_to_org_member_info": {PERSONAL: "Owner"}},
            f"org_id_to_org_member_info.{PERSONAL}",
        ),
        (
            {
                **ACCESS,
                "org_id_to_org_member_info": {
                    PERSONAL: {**PERSONAL_MEMBERSHIP, "user_permissions": "all"}
                },
            },
            "user_permissions",
        ),
        ({**ACTIVE_ORG_ACCESS, "org_member_info": {"org_name": "Acme"}}, "org_member_info.org_id"),
        ({**ACCESS, "user_id": 7}, "user_id"),
    ],
)
def test_a_claim_of_the_wrong_shape_is_claims_invalid(
    issuer: DevIssuer, claims: dict[str, Any], named: str
) -> None:
    error = refused(propelauth(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert named in error.message


# -- requires_org ranks by PropelAuth's roles ----------------------------------------------------


def test_requires_org_admin_passes_an_owner_and_refuses_a_member(issuer: DevIssuer) -> None:
    @requires_org(role="Admin", path_param="org")
    async def settings(request: Request) -> JSONResponse:
        return JSONResponse({"org": request.state.org.slug})

    cfg = AppConfig(
        auth={"issuer": ISS, "audience_claim": "none", "jwks": parse_jwks(issuer.jwks())},
        claims={"profile": "propelauth"},
        keys={"remote": "never"},
    )
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW)
    inner = Starlette(routes=[Route("/api/orgs/{org}/settings", settings)])
    headers = {"Authorization": f"Bearer {sign(issuer, ACCESS)}"}

    with TestClient(JWTSessionMiddleware(inner, cfg, verifier=tv)) as client:
        owner = client.get("/api/orgs/personal-fa0h1m/settings", headers=headers)
        member = client.get(f"/api/orgs/{ACME}/settings", headers=headers)

    assert (owner.status_code, owner.json()) == (200, {"org": "personal-fa0h1m"})
    assert member.status_code == 403
    assert member.json()["code"] == "role_insufficient"
