"""The ``firebase`` profile against Firebase Authentication's documented ID tokens.

Payloads follow
https://firebase.google.com/docs/auth/admin/verify-id-tokens#verify_id_tokens_using_a_third-party_jwt_library
(``iss`` ``https://securetoken.google.com/<project>``, ``aud`` the project,
``auth_time``, ``user_id`` = ``sub``, the ``firebase`` object), the
multi-tenancy form of
https://cloud.google.com/identity-platform/docs/multi-tenancy-authentication
(``firebase.tenant``) and custom claims set with ``setCustomUserClaims``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

PROJECT = "acme-prod"
ISS = f"https://securetoken.google.com/{PROJECT}"
UID = "tXHbKQ2xGzTz0ptbfSHbEkq7Hsq2"

TOKEN = {
    "name": "Ada Lovelace",
    "picture": "https://lh3.googleusercontent.com/a/ACg8ocK",
    "iss": ISS,
    "aud": PROJECT,
    "auth_time": 0,
    "user_id": UID,
    "sub": UID,
    "email": "ada@example.com",
    "email_verified": True,
    "firebase": {
        "identities": {"google.com": ["104592363281730364125"], "email": ["ada@example.com"]},
        "sign_in_provider": "google.com",
    },
}
TENANT_TOKEN = {
    **TOKEN,
    "firebase": {
        "identities": {"email": ["ada@example.com"]},
        "sign_in_provider": "password",
        "tenant": "tenant-2-p9gxy",
    },
}


def firebase(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    return verifier(issuer, profile="firebase", iss=ISS, audience=PROJECT, **settings)


def test_an_id_token_gives_the_user_from_its_own_claims(issuer: DevIssuer) -> None:
    session = firebase(issuer).session(sign(issuer, TOKEN))

    assert session_dict(session) == {
        "user": {
            "id": UID,
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "picture": "https://lh3.googleusercontent.com/a/ACg8ocK",
            "email_verified": True,
        },
        "organizations": [],
        "active_organization": None,
        "projects": [],
        "scopes": [],
        "roles": [],
        "permissions": [],
        "session_id": None,
    }


def test_a_tenants_token_has_the_tenant_as_its_one_active_organization(
    issuer: DevIssuer,
) -> None:
    session = firebase(issuer).session(sign(issuer, TENANT_TOKEN))

    tenant = {
        "id": "tenant-2-p9gxy",
        "slug": None,
        "name": None,
        "role": None,
        "roles": [],
        "permissions": [],
    }
    view = session_dict(session)
    assert view["organizations"] == [tenant]
    assert view["active_organization"] == "tenant-2-p9gxy"


@pytest.mark.parametrize(
    ("claims_roles", "custom", "roles"),
    [
        ("roles", {"roles": ["editor", "billing"]}, ("editor", "billing")),
        ("/app/roles", {"app": {"roles": ["admin"]}}, ("admin",)),
        (None, {"roles": ["editor"]}, ()),
    ],
)
def test_roles_come_from_the_custom_claim_claims_roles_names(
    issuer: DevIssuer, claims_roles: str | None, custom: dict[str, Any], roles: tuple[str, ...]
) -> None:
    tv = firebase(issuer, claims={"roles": claims_roles} if claims_roles else None)

    assert tv.session(sign(issuer, {**TOKEN, **custom})).roles == roles


def test_the_firebase_token_is_an_access_token_even_when_client_id_is_set(
    issuer: DevIssuer,
) -> None:
    # Firebase has one kind of token; its markers say "access" before the generic rules.
    tv = firebase(issuer, client_id="1:123456789:web:abcdef")

    assert tv.session(sign(issuer, TOKEN)).user.id == UID


def test_a_token_without_the_firebase_object_is_judged_by_the_generic_rules(
    issuer: DevIssuer,
) -> None:
    claims = {k: v for k, v in TOKEN.items() if k != "firebase"}

    assert refused(firebase(issuer), sign(issuer, {**claims, "nonce": "n-0S6"})).code == (
        "token_type_invalid"
    )


# -- audience and issuer ---------------------------------------------------------------------


def test_the_project_id_is_the_audience(issuer: DevIssuer) -> None:
    assert firebase(issuer).session(sign(issuer, TOKEN)).user.id == UID


@pytest.mark.parametrize("aud", ["acme-staging", ["acme-staging"], None])
def test_another_projects_or_no_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in TOKEN.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(firebase(issuer), sign(issuer, claims)).code == "audience_mismatch"


def test_another_projects_issuer_is_issuer_mismatch(issuer: DevIssuer) -> None:
    claims = {**TOKEN, "iss": "https://securetoken.google.com/acme-staging"}

    assert refused(firebase(issuer), sign(issuer, claims)).code == "issuer_mismatch"


def test_a_uid_longer_than_firebase_allows_is_claims_invalid(issuer: DevIssuer) -> None:
    uid = "u" * 129

    error = refused(firebase(issuer), sign(issuer, {**TOKEN, "sub": uid, "user_id": uid}))

    assert error.code == "claims_invalid"
    assert "sub" in error.message


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({**TOKEN, "firebase": "google.com"}, "firebase"),
        ({**TENANT_TOKEN, "firebase": {"tenant": 2}}, "firebase.tenant"),
        ({**TOKEN, "email_verified": "true"}, "email_verified"),
    ],
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, claims: dict[str, Any], named: str
) -> None:
    error = refused(firebase(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert named in error.message
