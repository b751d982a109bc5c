"""The ``keycloak`` profile against Keycloak's token shapes.

Access and ID tokens as Keycloak 26 issues them (``typ: Bearer`` / ``ID`` in
the payload, ``realm_access``, ``resource_access``, ``azp``, ``sid``), the
``organization`` claim in each shape ``OrganizationMembershipMapper`` emits
(a list of aliases, one alias, a map alias -> ``{id, attributes...}``), and a
Keycloak 24 access token that still carried ``nonce`` (keycloak#26893).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://keycloak.example.com/realms/acme"
CLIENT = "acme-web"
SUB = "f1b4f3c2-7a1e-4c7c-9b61-2f0e6b1d9a10"

ACCESS = {
    "jti": "onrtac:0f0b6a7c-5d38-4a3e-bd8e-4b9b2b3c1d2e",
    "iss": ISS,
    "aud": ["acme-api", "account"],
    "sub": SUB,
    "typ": "Bearer",
    "azp": CLIENT,
    "sid": "7c3d1a52-58f9-4a57-9f62-0e0f5e0c8b11",
    "acr": "1",
    "allowed-origins": ["https://app.acme.example"],
    "realm_access": {"roles": ["default-roles-acme", "offline_access", "uma_authorization"]},
    "resource_access": {
        CLIENT: {"roles": ["editor"]},
        "account": {"roles": ["manage-account", "view-profile"]},
    },
    "scope": "openid organization profile email",
    "email_verified": True,
    "name": "Ada Lovelace",
    "preferred_username": "ada",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "email": "ada@acme.example",
    "groups": ["/engineering", "/engineering/backend"],
    "organization": ["acme", "globex"],
}
ID_TOKEN = {
    "jti": "ofrtid:1a2b3c4d-0000-4000-8000-000000000001",
    "iss": ISS,
    "aud": CLIENT,
    "sub": SUB,
    "typ": "ID",
    "azp": CLIENT,
    "nonce": "d3b07384d113edec",
    "sid": "7c3d1a52-58f9-4a57-9f62-0e0f5e0c8b11",
    "at_hash": "x3Q2c7BZ6O0mRf8k1aQ9gA",
    "acr": "1",
    "email_verified": True,
    "name": "Ada Lovelace",
    "preferred_username": "ada",
    "email": "ada@acme.example",
    "picture": "https://acme.example/ada.png",
}
ROLES = [
    "default-roles-acme",
    "offline_access",
    "uma_authorization",
    "editor",
    "/engineering",
    "/engineering/backend",
]


def keycloak(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    values: dict[str, Any] = {"audience": "acme-api", "client_id": CLIENT, **settings}
    return verifier(issuer, profile="keycloak", iss=ISS, **values)


def org(id_: str, slug: str, roles: list[str] | None = None) -> dict[str, Any]:
    roles = roles or []
    return {
        "id": id_,
        "slug": slug,
        "name": None,
        "role": roles[0] if roles else None,
        "roles": roles,
        "permissions": [],
    }


def test_a_list_of_aliases_gives_memberships_named_by_alias(issuer: DevIssuer) -> None:
    session = keycloak(issuer).session(sign(issuer, ACCESS), sign(issuer, ID_TOKEN))

    assert session_dict(session) == {
        "user": {
            "id": SUB,
            "email": "ada@acme.example",
            "name": "Ada Lovelace",
            "picture": "https://acme.example/ada.png",
            "email_verified": True,
        },
        "organizations": [org("acme", "acme"), org("globex", "globex")],
        "active_organization": None,
        "projects": [],
        "scopes": ["openid", "organization", "profile", "email"],
        "roles": ROLES,
        "permissions": [],
        "session_id": "7c3d1a52-58f9-4a57-9f62-0e0f5e0c8b11",
    }


def test_a_single_alias_is_the_active_organization(issuer: DevIssuer) -> None:
    session = keycloak(issuer).session(sign(issuer, {**ACCESS, "organization": "acme"}))

    assert session.to_dict()["organizations"] == [org("acme", "acme")]
    assert session.active_organization == session.organizations[0]


def test_the_json_map_gives_ids_attributes_ignored_and_roles_when_present(
    issuer: DevIssuer,
) -> None:
    claims = {
        **ACCESS,
        "scope": "openid organization:acme profile email",
        "organization": {
            "acme": {
                "id": "42c3e46f-2b2e-4d0b-8f11-7c0e8a3a2b51",
                "website": ["https://acme.example"],
                "roles": ["admin", "member"],
            }
        },
    }

    session = keycloak(issuer).session(sign(issuer, claims))

    acme = org("42c3e46f-2b2e-4d0b-8f11-7c0e8a3a2b51", "acme", ["admin", "member"])
    assert session.to_dict()["organizations"] == [acme]
    # Asked for by name (organization:acme), so it is the current one.
    assert session.to_dict()["active_organization"] == acme["id"]


def test_a_map_entry_without_an_id_uses_the_alias(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "organization": {"acme": {}, "globex": {"id": "g-1"}}}

    session = keycloak(issuer).session(sign(issuer, claims))

    assert [(o.id, o.slug) for o in session.organizations] == [("acme", "acme"), ("g-1", "globex")]
    assert session.active_organization is None


def test_client_roles_are_read_for_auth_client_id_only(issuer: DevIssuer) -> None:
    session = keycloak(issuer, client_id="account").session(sign(issuer, ACCESS))

    assert "manage-account" in session.roles
    assert "editor" not in session.roles


def test_claims_roles_pointer_replaces_the_default_sources(issuer: DevIssuer) -> None:
    tv = keycloak(issuer, claims={"roles": "/resource_access/account/roles"})

    assert tv.session(sign(issuer, ACCESS)).roles == ("manage-account", "view-profile")


def test_keycloak_24_access_tokens_with_a_nonce_are_access_tokens(issuer: DevIssuer) -> None:
    legacy = {**ACCESS, "nonce": "d3b07384d113edec", "session_state": "7c3d1a52"}

    assert keycloak(issuer).session(sign(issuer, legacy)).user.id == SUB


def test_the_payload_typ_tells_id_tokens_from_access_tokens(issuer: DevIssuer) -> None:
    # aud holding the client id is allowed: Keycloak marks every token's type.
    tv = keycloak(issuer, audience=["acme-api", CLIENT])
    id_as_access = refused(tv, sign(issuer, ID_TOKEN))
    access_as_id = refused(tv, sign(issuer, ACCESS), sign(issuer, {**ACCESS, "aud": CLIENT}))
    refresh = refused(tv, sign(issuer, {**ACCESS, "typ": "Refresh"}))

    assert id_as_access.code == "token_type_invalid"
    assert access_as_id.code == "token_type_invalid"
    assert access_as_id.message == "an access token is not an ID token"
    assert refresh.code == "token_type_invalid"


def test_the_id_token_must_be_the_same_subject(issuer: DevIssuer) -> None:
    other = {**ID_TOKEN, "sub": "00000000-0000-4000-8000-000000000000"}

    assert refused(keycloak(issuer), sign(issuer, ACCESS), sign(issuer, other)).code == (
        "id_token_mismatch"
    )


@pytest.mark.parametrize("aud", ["acme-api", ["account", "acme-api"]])
def test_the_api_audience_is_accepted(issuer: DevIssuer, aud: Any) -> None:
    assert keycloak(issuer).session(sign(issuer, {**ACCESS, "aud": aud})).user.id == SUB


@pytest.mark.parametrize("aud", ["account", ["account", "broker"], None])
def test_a_wrong_or_missing_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(keycloak(issuer), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("organization", 7),
        ("organization", [1]),
        ("organization", {"acme": {"id": 5}}),
        ("organization", {"acme": ["x"]}),
        ("organization", {"acme": {"roles": "admin"}}),
        ("realm_access", ["admin"]),
        ("realm_access", {"roles": "admin"}),
        ("resource_access", {CLIENT: {"roles": [1]}}),
        ("groups", "/engineering"),
    ],
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(keycloak(issuer), sign(issuer, {**ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message
