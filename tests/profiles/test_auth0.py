"""The ``auth0`` profile against Auth0's documented token shapes.

Payloads follow https://auth0.com/docs/manage-users/organizations/using-tokens
(organization tokens, ``org_id`` / ``org_name``, the namespaced
``https://marketplace/roles`` claim) and
https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles
(the default Auth0 profile and the RFC 9068 profile).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://exampleco.auth0.com/"
API = "https://example-api/"
CLIENT = "9ybsU1dN2dKfDkBiClient0123456789"
ROLES = "https://marketplace/roles"

#: Auth0 profile access token issued through an organization (using-tokens).
ORG_ACCESS = {
    "iss": ISS,
    "sub": "auth0|602c0dcab993d10073daf680",
    "aud": [API, "https://exampleco.auth0.com/userinfo"],
    "azp": CLIENT,
    "scope": "openid profile email read:reports",
    "org_id": "org_9ybsU1dN2dKfDkBi",
    "org_name": "exampleco",
    "permissions": ["read:reports", "create:reports"],
    ROLES: ["marketplace-administrator"],
}
#: The matching ID token (using-tokens): standard claims, the namespaced roles, org_id.
ORG_ID_TOKEN = {
    ROLES: ["marketplace-administrator"],
    "https://namespace.exampleco.com": "my custom claim",
    "nickname": "firstName.lastName",
    "name": "firstName.lastName@email.com",
    "picture": "https://s.gravatar.com/avatar/638",
    "updated_at": "2021-03-23T11:34:14.566z",
    "email": "username@exampleco.com",
    "email_verified": True,
    "sub": "auth0|602c0dcab993d10073daf680",
    "org_id": "org_9ybsU1dN2dKfDkBi",
    "org_name": "exampleco",
    "iss": ISS,
    "aud": CLIENT,
    "nonce": "n-0S6_WzA2Mj",
    "sid": "Hb5n2bBJ0rB2X9vAa6lEb0s8xYsHk2v9",
}
#: access-token-profiles: "RFC 9068 profile sample token" (typ at+jwt, client_id, jti).
RFC9068_ACCESS = {
    "iss": ISS,
    "sub": "auth0|123456",
    "aud": [API, "https://exampleco.auth0.com/userinfo"],
    "client_id": CLIENT,
    "jti": "73WakrfVbNJBaAmhQtEeDv",
    "scope": "openid profile read:patients read:admin",
    "my_custom_claim": "my_custom_value",
}


def auth0(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    return verifier(
        issuer,
        profile="auth0",
        iss=ISS,
        audience=API,
        client_id=CLIENT,
        claims={"roles": ROLES},
        **settings,
    )


def test_an_organization_login_gives_one_active_org_with_its_roles_and_permissions(
    issuer: DevIssuer,
) -> None:
    session = auth0(issuer).session(sign(issuer, ORG_ACCESS), sign(issuer, ORG_ID_TOKEN))

    org = {
        "id": "org_9ybsU1dN2dKfDkBi",
        "slug": "exampleco",
        "name": "exampleco",
        "role": "marketplace-administrator",
        "roles": ["marketplace-administrator"],
        "permissions": ["read:reports", "create:reports"],
    }
    assert session_dict(session) == {
        "user": {
            "id": "auth0|602c0dcab993d10073daf680",
            "email": "username@exampleco.com",
            "name": "firstName.lastName@email.com",
            "picture": "https://s.gravatar.com/avatar/638",
            "email_verified": True,
        },
        "organizations": [org],
        "active_organization": "org_9ybsU1dN2dKfDkBi",
        "projects": [],
        "scopes": ["openid", "profile", "email", "read:reports"],
        "roles": ["marketplace-administrator"],
        "permissions": ["read:reports", "create:reports"],
        "session_id": "Hb5n2bBJ0rB2X9vAa6lEb0s8xYsHk2v9",
    }


def test_org_id_alone_gives_an_org_without_slug_or_name(issuer: DevIssuer) -> None:
    # By default Auth0 puts only org_id in tokens; org_name needs a tenant setting.
    claims = {k: v for k, v in ORG_ACCESS.items() if k not in ("org_name", ROLES)}

    session = auth0(issuer).session(sign(issuer, claims))

    org = session.organizations[0]
    assert (org.id, org.slug, org.name, org.roles) == ("org_9ybsU1dN2dKfDkBi", None, None, ())
    assert org.label == "org_9ybsU1dN2dKfDkBi"
    assert session.active_organization == org


def test_a_login_without_an_organization_has_none(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in ORG_ACCESS.items() if not k.startswith("org_")}

    session = auth0(issuer).session(sign(issuer, claims))

    assert session_dict(session) == {
        "user": {
            "id": "auth0|602c0dcab993d10073daf680",
            "email": None,
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [],
        "active_organization": None,
        "projects": [],
        "scopes": ["openid", "profile", "email", "read:reports"],
        "roles": ["marketplace-administrator"],
        "permissions": ["read:reports", "create:reports"],
        "session_id": None,
    }


def test_the_rfc9068_profile_is_an_access_token_even_with_require_at_jwt(
    issuer: DevIssuer,
) -> None:
    tv = auth0(issuer, require_at_jwt=True)

    session = tv.session(sign(issuer, RFC9068_ACCESS, typ="at+jwt"))

    assert session.user.id == "auth0|123456"
    assert session.token_scopes == ("openid", "profile", "read:patients", "read:admin")
    assert session.organizations == ()
    assert refused(tv, sign(issuer, RFC9068_ACCESS, typ="JWT")).code == "token_type_invalid"


def test_without_claims_roles_auth0_tokens_have_no_roles(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="auth0", iss=ISS, audience=API)

    session = tv.session(sign(issuer, ORG_ACCESS))

    assert session.roles == ()
    assert session.permissions == ("read:reports", "create:reports")


def test_the_id_token_is_not_an_access_token(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="auth0", iss=ISS, audience=[API, CLIENT], access_claim="scope")

    assert refused(tv, sign(issuer, ORG_ID_TOKEN)).code == "token_type_invalid"


@pytest.mark.parametrize(
    "aud",
    [
        API,
        [API, "https://exampleco.auth0.com/userinfo"],
        ["https://exampleco.auth0.com/userinfo", API],
    ],
)
def test_the_api_identifier_in_aud_is_accepted(issuer: DevIssuer, aud: Any) -> None:
    assert auth0(issuer).session(sign(issuer, {**ORG_ACCESS, "aud": aud})).user.id


@pytest.mark.parametrize(
    "aud", ["https://other-api/", ["https://exampleco.auth0.com/userinfo"], CLIENT, None]
)
def test_a_wrong_or_missing_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in ORG_ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(auth0(issuer), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("org_id", 42),
        ("org_name", ["exampleco"]),
        ("permissions", "read:reports"),
        (ROLES, "admin"),
    ],
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(auth0(issuer), sign(issuer, {**ORG_ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message
