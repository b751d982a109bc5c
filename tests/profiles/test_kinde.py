"""The ``kinde`` profile against Kinde's documented access tokens.

Payloads follow https://docs.kinde.com/build/tokens/about-access-tokens/ and
the example token of Kinde's SDK READMEs (``org_code``, ``permissions``,
``scp``, ``aud`` a list), with the optional claims Kinde adds when enabled
(https://docs.kinde.com/build/tokens/token-customization/): ``org_name`` and
``roles`` as ``[{id, key, name}]``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://acme.kinde.com"
API = "https://api.acme.com"
USER = "kp_c3143a4b50ad43c88e541d9077681782"

ACCESS = {
    "aud": [API],
    "azp": "b9da18c441b44d81bab3e8232de2e18d",
    "iss": ISS,
    "jti": "a7b8f3e2-1f2d-4b8e-9c1a-2d3e4f5a6b7c",
    "org_code": "org_e5f28e1676d",
    "org_name": "Acme Corp",
    "permissions": ["read:todos", "create:todos"],
    "roles": [
        {"id": "018f6a5e-6a2c-4f3a-9d3b-1c2d3e4f5a6b", "key": "admin", "name": "Admin"},
        {"id": "018f6a5e-6a2c-4f3a-9d3b-1c2d3e4f5a6c", "key": "member", "name": "Member"},
    ],
    "scp": ["openid", "profile", "email", "offline"],
    "sub": USER,
}


def kinde(issuer: DevIssuer) -> TokenVerifier:
    return verifier(issuer, profile="kinde", iss=ISS, audience=API)


def test_the_token_gives_its_organization_with_role_keys_and_permissions(
    issuer: DevIssuer,
) -> None:
    session = kinde(issuer).session(sign(issuer, ACCESS))

    org = {
        "id": "org_e5f28e1676d",
        "slug": None,
        "name": "Acme Corp",
        "role": "admin",
        "roles": ["admin", "member"],
        "permissions": ["read:todos", "create:todos"],
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
        "active_organization": "org_e5f28e1676d",
        "projects": [],
        "scopes": ["openid", "profile", "email", "offline"],
        "roles": ["admin", "member"],
        "permissions": ["read:todos", "create:todos"],
        "session_id": None,
    }


def test_the_minimal_token_has_an_org_without_name_or_roles(issuer: DevIssuer) -> None:
    # The SDK README's example: org_code, permissions, scp; no org_name, no roles.
    claims = {k: v for k, v in ACCESS.items() if k not in ("org_name", "roles")}

    session = kinde(issuer).session(sign(issuer, claims))

    org = session.organizations[0]
    assert (org.id, org.name, org.role, org.roles) == ("org_e5f28e1676d", None, None, ())
    assert org.permissions == ("read:todos", "create:todos")
    assert org.label == "org_e5f28e1676d"


def test_a_token_without_org_code_has_no_organization_but_keeps_its_scopes(
    issuer: DevIssuer,
) -> None:
    claims = {
        k: v for k, v in ACCESS.items() if k not in ("org_code", "org_name", "roles", "permissions")
    }

    session = kinde(issuer).session(sign(issuer, claims))

    assert (session.organizations, session.active_organization) == ((), None)
    assert session.token_scopes == ("openid", "profile", "email", "offline")


@pytest.mark.parametrize("aud", [API, [API, "https://other.acme.com"]])
def test_the_api_audience_is_accepted(issuer: DevIssuer, aud: Any) -> None:
    assert kinde(issuer).session(sign(issuer, {**ACCESS, "aud": aud})).user.id == USER


@pytest.mark.parametrize("aud", ["https://other.acme.com", None])
def test_a_wrong_or_missing_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(kinde(issuer), sign(issuer, claims)).code == "audience_mismatch"


def test_kindes_empty_audience_list_is_refused(issuer: DevIssuer) -> None:
    # A token requested without an API audience carries "aud": [].
    # jwtedge counts an empty aud list as malformed (tests/test_attacks.py), Kinde's or not.
    assert refused(kinde(issuer), sign(issuer, {**ACCESS, "aud": []})).code == "claims_invalid"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("roles", ["admin"]),
        ("roles", [{"id": "1", "name": "Admin"}]),
        ("permissions", "read:todos"),
        ("org_code", 7),
        ("org_name", ["Acme"]),
        ("scp", 3),
    ],
)
def test_a_claim_of_the_wrong_shape_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(kinde(issuer), sign(issuer, {**ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message
