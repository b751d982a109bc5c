"""The ``clerk`` profile against Clerk's documented session token shapes.

Payloads follow https://clerk.com/docs/guides/sessions/session-tokens (version
2 with ``o``/``fea``, and the deprecated version 1 with ``org_*``). The
permission masks come from Clerk's own integration test of JWT v2
(``integration/tests/jwt-v2-organizations``: ``per`` ``create,delete,manage,read``,
``fpm`` ``12,12,9,14``), decoded as ``@clerk/shared``'s ``jwtPayloadParser``
does: the n-th mask belongs to the n-th organization feature, lowest bit first.
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
from verifier.authz import requires_permissions
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware
from verifier.profiles.clerk import org_permissions
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://renewing-bobcat-00.clerk.accounts.dev"
ORIGIN = "http://localhost:3000"
USER = "user_2vYVtestTESTtestTESTtestTESTtest"
SID = "sess_2vgGmUhF4ozjr5vHjWyUbKdvkFK"
ORG = "org_2vf9pbXnvF3rRRs5qj8NtGCJkC7"

#: Version 2, as the session-tokens page shows it (an active organization).
V2 = {
    "azp": ORIGIN,
    "fea": "o:billing,o:impersonation,o:magic_links,o:posts",
    "fva": [0, -1],
    "iss": ISS,
    "nbf": 0,
    "o": {
        "fpm": "12,12,9,14",
        "id": ORG,
        "per": "create,delete,manage,read",
        "rol": "admin",
        "slg": "example-org",
    },
    "pla": "o:free_org",
    "sid": SID,
    "sts": "active",
    "sub": USER,
    "v": 2,
}
#: What Clerk's integration test asserts for these masks, and nothing more.
V2_PERMISSIONS = [
    "org:billing:manage",
    "org:billing:read",
    "org:impersonation:manage",
    "org:impersonation:read",
    "org:magic_links:create",
    "org:magic_links:read",
    "org:posts:delete",
    "org:posts:manage",
    "org:posts:read",
]
#: Version 1 (deprecated), the same membership in the flat org_* claims.
V1 = {
    "azp": ORIGIN,
    "fva": [0, -1],
    "iss": ISS,
    "nbf": 0,
    "org_id": ORG,
    "org_permissions": ["org:impersonation:read", "org:impersonation:manage"],
    "org_role": "org:admin",
    "org_slug": "example-org",
    "sid": SID,
    "sub": USER,
}


def clerk(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    return verifier(issuer, profile="clerk", iss=ISS, audience=[ORIGIN], **settings)


def expected(org: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "user": {
            "id": USER,
            "email": None,
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [org] if org else [],
        "active_organization": org["id"] if org else None,
        "projects": [],
        "scopes": [],
        "roles": org["roles"] if org else [],
        "permissions": org["permissions"] if org else [],
        "session_id": SID,
    }


def test_v2_token_gives_the_active_org_with_permissions_decoded_from_fpm(
    issuer: DevIssuer,
) -> None:
    session = clerk(issuer).session(sign(issuer, V2))

    assert session_dict(session) == expected(
        {
            "id": ORG,
            "slug": "example-org",
            "name": None,
            "role": "admin",
            "roles": ["admin"],
            "permissions": V2_PERMISSIONS,
        }
    )


def test_v1_token_gives_the_same_org_with_the_org_prefix_dropped_from_the_role(
    issuer: DevIssuer,
) -> None:
    session = clerk(issuer).session(sign(issuer, V1))

    assert session_dict(session) == expected(
        {
            "id": ORG,
            "slug": "example-org",
            "name": None,
            "role": "admin",
            "roles": ["admin"],
            "permissions": ["org:impersonation:read", "org:impersonation:manage"],
        }
    )


def test_v1_and_v2_of_the_same_membership_give_the_same_session(issuer: DevIssuer) -> None:
    # Clerk's parser test: v2 fea "o:impersonation", per "read,manage", fpm "3".
    v2 = {**V2, "fea": "o:impersonation", "o": {**V2["o"], "per": "read,manage", "fpm": "3"}}

    tv = clerk(issuer)

    assert session_dict(tv.session(sign(issuer, v2))) == session_dict(tv.session(sign(issuer, V1)))


@pytest.mark.parametrize(
    "claims",
    [
        {k: v for k, v in V2.items() if k != "o"},
        {k: v for k, v in V1.items() if not k.startswith("org_")},
    ],
    ids=["v2", "v1"],
)
def test_a_token_without_an_active_organization_has_none(
    issuer: DevIssuer, claims: dict[str, Any]
) -> None:
    session = clerk(issuer).session(sign(issuer, claims))

    assert session_dict(session) == expected(None)


@pytest.mark.parametrize(
    ("fea", "per", "fpm", "permissions"),
    [
        # Lowest bit first: 1 grants the first permission, 2 the second.
        ("o:reports", "read,manage", "1", ["org:reports:read"]),
        ("o:reports", "read,manage", "2", ["org:reports:manage"]),
        ("o:reports", "read,manage", "0", []),
        # Clerk's parser test: fpm "1,3" over two features.
        (
            "o:impersonation,o:memberships",
            "read,manage",
            "1,3",
            ["org:impersonation:read", "org:memberships:read", "org:memberships:manage"],
        ),
        # User-scoped features take no mask; "uo"/"ou" are both scopes.
        (
            "u:dashboard,uo:support,o:reports,ou:export",
            "read,manage",
            "1,2,3",
            [
                "org:support:read",
                "org:reports:manage",
                "org:export:read",
                "org:export:manage",
            ],
        ),
        # A feature past the masks, and bits past the permissions, grant nothing.
        ("o:a,o:b", "read", "3", ["org:a:read"]),
        # Spaces around elements, as the SDK trims them.
        (" o:a , o:b ", " read , manage ", " 2 , 1 ", ["org:a:manage", "org:b:read"]),
        # No per or no fpm: no permissions (the SDK needs both).
        ("o:a", "", "1", []),
        ("o:a", "read", None, []),
        (None, "read", "1", []),
    ],
)
def test_fpm_decoding_matches_clerks_sdk(
    fea: str | None, per: str, fpm: str | None, permissions: list[str]
) -> None:
    assert list(org_permissions(fea, per, fpm)) == permissions


def test_a_mask_wider_than_64_bits_decodes_exactly() -> None:
    per = ",".join(f"p{i}" for i in range(70))
    mask = str(1 << 69 | 1)

    assert org_permissions("o:wide", per, mask) == ("org:wide:p0", "org:wide:p69")


# -- audience: azp ------------------------------------------------------------------


@pytest.mark.parametrize("azp", [ORIGIN, "https://app.example.com"])
def test_a_listed_origin_in_azp_is_accepted(issuer: DevIssuer, azp: str) -> None:
    tv = verifier(issuer, profile="clerk", iss=ISS, audience=[ORIGIN, "https://app.example.com"])

    assert tv.session(sign(issuer, {**V2, "azp": azp})).user.id == USER


@pytest.mark.parametrize("azp", ["https://evil.example.com", "", "http://localhost:3000/"])
def test_an_origin_not_listed_is_audience_mismatch(issuer: DevIssuer, azp: str) -> None:
    assert refused(clerk(issuer), sign(issuer, {**V2, "azp": azp})).code == "audience_mismatch"


def test_azp_is_one_origin_never_a_list(issuer: DevIssuer) -> None:
    error = refused(clerk(issuer), sign(issuer, {**V2, "azp": [ORIGIN]}))

    assert error.code == "claims_invalid"
    assert "azp" in error.message


def test_a_token_without_azp_is_accepted_as_clerk_documents(issuer: DevIssuer) -> None:
    # "This claim could be omitted if, for privacy-related reasons, Origin is empty or null."
    claims = {k: v for k, v in V2.items() if k != "azp"}

    assert clerk(issuer).session(sign(issuer, claims)).user.id == USER


def test_the_aud_claim_plays_no_part_for_clerk(issuer: DevIssuer) -> None:
    # Clerk's audience is azp; an aud naming something else does not matter.
    session = clerk(issuer).session(sign(issuer, {**V2, "aud": "https://other.example.com"}))

    assert session.user.id == USER


def test_an_overridden_audience_claim_is_required(issuer: DevIssuer) -> None:
    # A JWT template that adds aud: with audience_claim=aud an absent aud is refused.
    tv = clerk(issuer, audience_claim="aud")

    assert refused(tv, sign(issuer, V2)).code == "audience_mismatch"
    assert tv.session(sign(issuer, {**V2, "aud": ORIGIN})).user.id == USER


# -- refusals and types ---------------------------------------------------------------


def test_a_pending_session_is_refused(issuer: DevIssuer) -> None:
    error = refused(clerk(issuer), sign(issuer, {**V2, "sts": "pending"}))

    assert error.code == "claims_invalid"
    assert "pending" in error.message


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({**V2, "o": "org_1"}, "o"),
        ({**V2, "o": {**V2["o"], "id": 7}}, "o.id"),
        ({**V2, "o": {**V2["o"], "fpm": "12,x"}}, "o.fpm"),
        ({**V2, "o": {**V2["o"], "fpm": 12}}, "o.fpm"),
        ({**V2, "o": {**V2["o"], "per": ["read"]}}, "o.per"),
        ({**V2, "fea": "billing"}, "fea"),
        ({**V2, "sts": 1}, "sts"),
        ({**V1, "org_permissions": "org:a:read"}, "org_permissions"),
        ({**V1, "org_role": ["org:admin"]}, "org_role"),
    ],
)
def test_a_claim_of_the_wrong_shape_is_claims_invalid(
    issuer: DevIssuer, claims: dict[str, Any], named: str
) -> None:
    error = refused(clerk(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert named in error.message


def test_clerks_default_roles_rank_admin_above_member(issuer: DevIssuer) -> None:
    tv = clerk(issuer)
    admin = tv.session(sign(issuer, V2))
    member = tv.session(sign(issuer, {**V2, "o": {**V2["o"], "rol": "member"}}))

    assert admin.organizations[0].rank_in(admin.role_ranks) == 2
    assert member.organizations[0].rank_in(member.role_ranks) == 1


# -- the __session cookie ---------------------------------------------------------------


def test_the_session_cookie_authenticates_a_page_with_refresh_off(issuer: DevIssuer) -> None:
    async def whoami(request: Request) -> JSONResponse:
        org = request.auth.active_organization
        return JSONResponse({"user": request.user.identity, "org": org.slug if org else None})

    cfg = AppConfig(
        auth={
            "issuer": ISS,
            "audience": ["https://app.example.com"],
            "jwks": parse_jwks(issuer.jwks()),
        },
        claims={"profile": "clerk"},
        keys={"remote": "never"},
        # What the bake prints for Clerk: its cookie, without __Host-, and no refresh.
        cookies={"access": "__session", "host_prefix": "never"},
        refresh={"enabled": False},
    )
    verifier_ = TokenVerifier.from_config(cfg, now=lambda: NOW)
    app = JWTSessionMiddleware(Starlette(routes=[Route("/me", whoami)]), cfg, verifier=verifier_)
    token = sign(issuer, {**V2, "azp": "https://app.example.com"})

    with TestClient(app, base_url="https://app.example.com") as client:
        client.cookies.set("__session", token)
        response = client.get("/me")

    assert response.status_code == 200
    assert response.json() == {"user": USER, "org": "example-org"}


def test_requires_permissions_reads_the_permissions_decoded_from_fpm(issuer: DevIssuer) -> None:
    @requires_permissions("org:magic_links:create")
    async def magic(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @requires_permissions("org:magic_links:delete")
    async def purge(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    cfg = AppConfig(
        auth={"issuer": ISS, "audience": [ORIGIN], "jwks": parse_jwks(issuer.jwks())},
        claims={"profile": "clerk"},
        keys={"remote": "never"},
        refresh={"enabled": False},
    )
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW)
    inner = Starlette(routes=[Route("/api/magic", magic), Route("/api/purge", purge)])
    headers = {"Authorization": f"Bearer {sign(issuer, V2)}"}

    with TestClient(JWTSessionMiddleware(inner, cfg, verifier=tv)) as client:
        allowed = client.get("/api/magic", headers=headers)
        denied = client.get("/api/purge", headers=headers)

    assert allowed.status_code == 200
    assert denied.status_code == 403
    assert denied.json()["error"] == "insufficient_scope"
