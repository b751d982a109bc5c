"""The ``workos`` profile against WorkOS AuthKit's documented access token.

The payload is the "Access Token JWT" of
https://workos.com/docs/reference/authkit/session-tokens (``org_id``, ``role``,
``roles``, ``permissions``, ``entitlements``, ``sid``, ``act``); the
multiple-roles form follows https://workos.com/docs/authkit/roles-and-permissions.
AuthKit tokens carry no ``aud`` unless a JWT template adds one.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://api.workos.com"
USER = "user_01HBEQKA6K4QJAS93VPE39W1JT"
ORG = "org_01HRDMC6CM357W30QMHMQ96Q0S"
SID = "session_01HQSXZGF8FHF7A9ZZFCW4387R"
TEMPLATE_AUD = "https://api.example.com"

ACCESS = {
    "iss": ISS,
    "sub": USER,
    "act": {"sub": "admin@foocorp.com"},
    "org_id": ORG,
    "role": "member",
    "roles": ["member"],
    "permissions": ["posts:read", "posts:write"],
    "entitlements": ["audit-logs"],
    "sid": SID,
    "jti": "01HQSXZXPPFPKMDD32RKTFY6PV",
}


def opted_in(issuer: DevIssuer) -> TokenVerifier:
    """The default AuthKit setup: no aud, bound by issuer and keys (explicitly)."""
    return verifier(issuer, profile="workos", iss=ISS, audience_claim="none")


def with_template(issuer: DevIssuer) -> TokenVerifier:
    """A JWT template adds aud: no opt-in, the audience is checked."""
    return verifier(issuer, profile="workos", iss=ISS, audience=TEMPLATE_AUD)


def test_the_access_token_gives_its_one_active_org_with_role_and_permissions(
    issuer: DevIssuer,
) -> None:
    session = opted_in(issuer).session(sign(issuer, ACCESS))

    org = {
        "id": ORG,
        "slug": None,
        "name": None,
        "role": "member",
        "roles": ["member"],
        "permissions": ["posts:read", "posts:write"],
    }
    assert session_dict(session) == {
        "user": {
            "id": USER,
            "email": None,
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [org],
        "active_organization": ORG,
        "projects": [],
        "scopes": [],
        "roles": ["member"],
        "permissions": ["posts:read", "posts:write"],
        "session_id": SID,
    }


def test_multiple_roles_keep_the_primary_role_first(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "role": "admin", "roles": ["billing-admin", "admin"]}

    org = opted_in(issuer).session(sign(issuer, claims)).organizations[0]

    assert (org.role, org.roles) == ("admin", ("admin", "billing-admin"))
    assert org.rank_in(opted_in(issuer).role_ranks) == 2


def test_a_user_outside_any_organization_has_none(issuer: DevIssuer) -> None:
    claims = {
        k: v for k, v in ACCESS.items() if k not in ("org_id", "role", "roles", "permissions")
    }

    session = opted_in(issuer).session(sign(issuer, claims))

    assert session.organizations == ()
    assert session.active_organization is None
    assert (session.roles, session.permissions) == ((), ())
    assert session.session_id == SID


# -- audience: with and without the opt-in ----------------------------------------------


def test_without_the_opt_in_a_default_token_without_aud_is_refused(issuer: DevIssuer) -> None:
    assert refused(with_template(issuer), sign(issuer, ACCESS)).code == "audience_mismatch"


def test_without_the_opt_in_the_templates_aud_is_accepted(issuer: DevIssuer) -> None:
    session = with_template(issuer).session(sign(issuer, {**ACCESS, "aud": TEMPLATE_AUD}))

    assert session.active_organization is not None
    assert session.active_organization.id == ORG


@pytest.mark.parametrize("aud", ["https://other.example.com", ["client_01HXYZ"]])
def test_without_the_opt_in_a_wrong_aud_is_refused(issuer: DevIssuer, aud: Any) -> None:
    error = refused(with_template(issuer), sign(issuer, {**ACCESS, "aud": aud}))

    assert error.code == "audience_mismatch"


def test_with_the_opt_in_tokens_are_bound_by_issuer_and_keys_only(issuer: DevIssuer) -> None:
    tv = opted_in(issuer)

    assert tv.audience_claim is None
    assert tv.session(sign(issuer, {**ACCESS, "aud": "anything"})).user.id == USER
    other_issuer = {**ACCESS, "iss": "https://api.workos.com/user_management/client_other"}
    assert refused(tv, sign(issuer, other_issuer)).code == "issuer_mismatch"


def test_the_user_management_issuer_form_is_matched_exactly(issuer: DevIssuer) -> None:
    iss = "https://api.workos.com/user_management/client_01HXYZABCDEF"
    tv = verifier(issuer, profile="workos", iss=iss, audience_claim="none")

    assert tv.session(sign(issuer, {**ACCESS, "iss": iss})).user.id == USER
    assert refused(tv, sign(issuer, ACCESS)).code == "issuer_mismatch"


@pytest.mark.parametrize(
    ("name", "value"),
    [("org_id", 42), ("role", ["member"]), ("roles", "member"), ("permissions", "posts:read")],
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(opted_in(issuer), sign(issuer, {**ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message
