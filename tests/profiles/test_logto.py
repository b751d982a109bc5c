"""The ``logto`` profile against Logto's documented access tokens.

Payloads follow https://docs.logto.io/authorization/validate-access-tokens
(``jti``, ``sub``, ``scope``, ``client_id``, ``iss`` ``https://<tenant>.logto.app/oidc``,
``aud`` the API resource indicator), the organization token
(``aud`` ``urn:logto:organization:<id>``, organization permissions in ``scope``)
and the organization-level API resource token (``organization_id``) of
https://docs.logto.io/authorization/organization-template/protect-organization-level-api-resources.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://g6c3ek.logto.app/oidc"
API = "https://api.example.com"
USER = "5u3gbamhwfpe"
ORG = "wzbf0c5mt8ms"
ORG_AUD = f"urn:logto:organization:{ORG}"

API_TOKEN = {
    "jti": "iyBwzWeIN3qd3ACfIZHVy",
    "sub": USER,
    "scope": "read:products write:products",
    "client_id": "k7u9zt6azlfeyhvk0x2x4",
    "iss": ISS,
    "aud": API,
}
ORG_TOKEN = {**API_TOKEN, "aud": ORG_AUD, "scope": "invite:member manage:billing"}
ORG_API_TOKEN = {**API_TOKEN, "organization_id": ORG}


def logto(issuer: DevIssuer, audience: Any = API) -> TokenVerifier:
    return verifier(issuer, profile="logto", iss=ISS, audience=audience)


def org_view(scopes: list[str]) -> dict[str, Any]:
    org = {"id": ORG, "slug": None, "name": None, "role": None, "roles": [], "permissions": []}
    return {
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
        "scopes": scopes,
        "roles": [],
        "permissions": [],
        "session_id": None,
    }


def test_an_api_token_has_scopes_and_no_organization(issuer: DevIssuer) -> None:
    session = logto(issuer).session(sign(issuer, API_TOKEN))

    view = session_dict(session)
    assert view["organizations"] == []
    assert view["active_organization"] is None
    assert view["scopes"] == ["read:products", "write:products"]
    assert view["user"]["id"] == USER


def test_an_organization_token_names_its_organization_in_the_audience(issuer: DevIssuer) -> None:
    session = logto(issuer, audience=ORG_AUD).session(sign(issuer, ORG_TOKEN))

    assert session_dict(session) == org_view(["invite:member", "manage:billing"])


def test_an_organization_level_api_token_names_it_in_organization_id(issuer: DevIssuer) -> None:
    session = logto(issuer).session(sign(issuer, ORG_API_TOKEN))

    assert session_dict(session) == org_view(["read:products", "write:products"])


# -- audience ------------------------------------------------------------------------------------


def test_an_app_may_accept_its_api_and_organization_tokens(issuer: DevIssuer) -> None:
    tv = logto(issuer, audience=[API, ORG_AUD])

    assert tv.session(sign(issuer, API_TOKEN)).active_organization is None
    assert tv.session(sign(issuer, ORG_TOKEN)).active_organization is not None


@pytest.mark.parametrize(
    ("audience", "claims"),
    [
        (API, ORG_TOKEN),  # an organization token is not an API token
        (ORG_AUD, {**ORG_TOKEN, "aud": "urn:logto:organization:otherorg"}),
        (API, {**API_TOKEN, "aud": "https://other.example.com"}),
        (API, {k: v for k, v in API_TOKEN.items() if k != "aud"}),
    ],
)
def test_another_or_no_audience_is_audience_mismatch(
    issuer: DevIssuer, audience: str, claims: dict[str, Any]
) -> None:
    assert refused(logto(issuer, audience), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({**ORG_API_TOKEN, "organization_id": 7}, "organization_id"),
        ({**API_TOKEN, "scope": 1}, "scope"),
    ],
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, claims: dict[str, Any], named: str
) -> None:
    error = refused(logto(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert named in error.message
