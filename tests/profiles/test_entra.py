"""The ``entra`` profile against Microsoft Entra ID's documented token shapes.

v1.0 and v2.0 access tokens and a v2.0 ID token as the claims references
describe them (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference,
.../id-token-claims-reference): ``iss`` per version, ``oid``/``tid``, a
pairwise ``sub`` that differs between the API's token and the client's ID
token, ``scp`` (space separated), ``roles``, ``groups``, ``appid``/``azp``.
Also a multi-tenant ``{tenantid}`` issuer, a Microsoft Graph token, and the
bake of the multi-tenant issuer.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx2
import orjson
import pytest

from deploy.bake import bake
from tests.profiles.helpers import config, refused, session_dict, sign, verifier
from verifier.errors import ConfigInvalid
from verifier.fetch import Fetcher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

TID = "9122040d-6c67-4c5b-b112-36a304b66dad"
OTHER_TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OID = "00000000-0000-0000-d63d-21b67ec0fb53"
API = "6e74172b-be56-4843-9ff4-e66a39bb12e3"  # the API's (and web app's) client id
V1 = f"https://sts.windows.net/{TID}/"
V2 = f"https://login.microsoftonline.com/{TID}/v2.0"
TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"

V2_ACCESS = {
    "aud": API,
    "iss": V2,
    "nbf": 0,
    "aio": "AXQAi/8TAAAAXQE2",
    "azp": "5d1f9e3f-38c8-4c15-9f2a-5b2b0b8a5a1e",
    "azpacr": "0",
    "name": "Abe Lincoln",
    "oid": OID,
    "preferred_username": "abeli@microsoft.com",
    "rh": "I",
    "scp": "access_as_user Files.Read",
    "roles": ["Reports.Reader"],
    "groups": ["8c2b6c1a-4d2e-4a57-8f6b-3f1a9f5f2c11"],
    "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
    "tid": TID,
    "uti": "fqiBqXLPj0eQa82S-IYFAA",
    "ver": "2.0",
}
V1_ACCESS = {
    "aud": f"api://{API}",
    "iss": V1,
    "nbf": 0,
    "acr": "1",
    "aio": "AVQAq/8TAAAA",
    "amr": ["pwd", "mfa"],
    "appid": "5d1f9e3f-38c8-4c15-9f2a-5b2b0b8a5a1e",
    "appidacr": "0",
    "ipaddr": "203.0.113.7",
    "name": "Abe Lincoln",
    "oid": OID,
    "scp": "access_as_user",
    "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
    "tid": TID,
    "unique_name": "abeli@microsoft.com",
    "upn": "abeli@microsoft.com",
    "uti": "fqiBqXLPj0eQa82S-IYFAA",
    "ver": "1.0",
}
#: The web app's v2.0 ID token: same user (oid, tid), another pairwise sub.
V2_ID = {
    "aud": API,
    "iss": V2,
    "nbf": 0,
    "name": "Abe Lincoln",
    "nonce": "123523",
    "oid": OID,
    "preferred_username": "abeli@microsoft.com",
    "email": "abeli@microsoft.com",
    "rh": "I",
    "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
    "tid": TID,
    "uti": "AbCdEfGhIjKlMnOpQrStUv",
    "ver": "2.0",
}


def entra(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    values: dict[str, Any] = {
        "iss": V2,
        "audience": [API, f"api://{API}"],
        "client_id": API,
        **settings,
    }
    return verifier(issuer, profile="entra", **values)


def tenant(tid: str = TID) -> dict[str, Any]:
    return {"id": tid, "slug": None, "name": None, "role": None, "roles": [], "permissions": []}


def test_a_v2_access_token_and_its_id_token_bind_on_oid_and_tid(issuer: DevIssuer) -> None:
    assert V2_ACCESS["sub"] != V2_ID["sub"]  # pairwise per application

    session = entra(issuer).session(sign(issuer, V2_ACCESS), sign(issuer, V2_ID))

    assert session_dict(session) == {
        "user": {
            "id": OID,
            "email": "abeli@microsoft.com",
            "name": "Abe Lincoln",
            "picture": None,
            "email_verified": False,
        },
        "organizations": [tenant()],
        "active_organization": TID,
        "projects": [],
        "scopes": ["access_as_user", "Files.Read"],
        "roles": ["Reports.Reader", "8c2b6c1a-4d2e-4a57-8f6b-3f1a9f5f2c11"],
        "permissions": [],
        "session_id": None,
    }


def test_a_v1_access_token_from_sts_windows_net_pairs_with_the_v2_id_token(
    issuer: DevIssuer,
) -> None:
    tv = entra(issuer)

    session = tv.session(sign(issuer, V1_ACCESS), sign(issuer, V2_ID))

    assert session.user.id == OID
    assert session.token_scopes == ("access_as_user",)
    assert session.active_organization is not None
    assert session.active_organization.id == TID
    access, id_claims = session.claims, session.id_claims
    assert id_claims is not None
    assert tv.same_subject(access, id_claims)  # the refresh proof, either token


@pytest.mark.parametrize(
    "changes", [{"oid": "11111111-0000-0000-0000-000000000000"}, {"tid": OTHER_TID}]
)
def test_an_id_token_of_another_user_or_tenant_is_refused(
    issuer: DevIssuer, changes: dict[str, str]
) -> None:
    other = {**V2_ID, **changes}

    error = refused(entra(issuer), sign(issuer, V2_ACCESS), sign(issuer, other))

    assert error.code == "id_token_mismatch"


def test_without_the_profile_the_pairwise_subs_never_bind(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="jwtedge", iss=V2, audience=f"api://{API}", client_id=API)
    access = sign(issuer, {**V2_ACCESS, "aud": f"api://{API}"})

    assert refused(tv, access, sign(issuer, V2_ID)).code == "id_token_mismatch"
    # And the API's default v1.0 token has another issuer altogether.
    assert refused(tv, sign(issuer, V1_ACCESS)).code == "issuer_mismatch"


def test_an_app_only_token_carries_its_app_roles(issuer: DevIssuer) -> None:
    app_token = {
        "aud": API,
        "iss": V2,
        "azp": "5d1f9e3f-38c8-4c15-9f2a-5b2b0b8a5a1e",
        "azpacr": "1",
        "idtyp": "app",
        "oid": "a1b2c3d4-0000-0000-0000-00000000beef",
        "roles": ["Reports.Read.All"],
        "sub": "a1b2c3d4-0000-0000-0000-00000000beef",
        "tid": TID,
        "ver": "2.0",
    }

    session = entra(issuer).session(sign(issuer, app_token))

    assert (session.user.id, session.roles, session.token_scopes) == (
        "a1b2c3d4-0000-0000-0000-00000000beef",
        ("Reports.Read.All",),
        (),
    )


def test_the_id_token_is_not_an_access_token_though_aud_is_the_client_id(
    issuer: DevIssuer,
) -> None:
    without_nonce = {k: v for k, v in V2_ID.items() if k != "nonce"}

    assert refused(entra(issuer), sign(issuer, V2_ID)).code == "token_type_invalid"
    assert refused(entra(issuer), sign(issuer, without_nonce)).code == "token_type_invalid"


def test_the_access_token_is_not_an_id_token(issuer: DevIssuer) -> None:
    error = refused(entra(issuer), sign(issuer, V2_ACCESS), sign(issuer, V2_ACCESS))

    assert error.code == "token_type_invalid"


def test_a_token_without_oid_is_claims_invalid(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in V2_ACCESS.items() if k != "oid"}

    error = refused(entra(issuer), sign(issuer, claims))

    assert error.code == "claims_invalid"
    assert "oid" in error.message


# -- audience --------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [API, f"api://{API}"])
def test_the_apis_audience_is_accepted(issuer: DevIssuer, aud: str) -> None:
    assert entra(issuer).session(sign(issuer, {**V2_ACCESS, "aud": aud})).user.id == OID


@pytest.mark.parametrize("aud", ["00000002-0000-0000-c000-000000000000", "api://other", None])
def test_a_wrong_or_missing_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in V2_ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(entra(issuer), sign(issuer, claims)).code == "audience_mismatch"


def graph_token(issuer: DevIssuer, aud: str) -> str:
    """A Graph token: a nonce in the header, so its signature cannot verify."""
    header = {"typ": "JWT", "nonce": "AQABAAAAAAD", "alg": "RS256", "kid": issuer.kids("RS256")[-1]}
    claims = {**V1_ACCESS, "aud": aud, "scp": "User.Read openid profile"}
    token = issuer.sign(claims, header, kid=header["kid"], alg="RS256")
    head, payload, signature = token.split(".")
    flipped = base64.urlsafe_b64encode(
        bytes(255 - b for b in base64.urlsafe_b64decode(signature + "=="))
    )
    return f"{head}.{payload}.{flipped.decode().rstrip('=')}"


@pytest.mark.parametrize(
    "aud", ["00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com"]
)
def test_a_graph_token_is_refused_as_not_for_this_app_before_its_signature(
    issuer: DevIssuer, aud: str
) -> None:
    error = refused(entra(issuer), graph_token(issuer, aud))

    assert error.code == "audience_mismatch"
    assert "Microsoft Graph token" in error.message


def test_a_graph_token_is_refused_even_if_listed_as_an_audience(issuer: DevIssuer) -> None:
    tv = entra(issuer, audience=["00000003-0000-0000-c000-000000000000"])

    error = refused(tv, sign(issuer, {**V2_ACCESS, "aud": "00000003-0000-0000-c000-000000000000"}))

    assert error.code == "audience_mismatch"


# -- tenants and issuers -----------------------------------------------------------------------


def test_tid_must_be_one_of_auth_tenants(issuer: DevIssuer) -> None:
    tv = entra(issuer, iss=TEMPLATE, tenants=[TID])
    other_iss = f"https://login.microsoftonline.com/{OTHER_TID}/v2.0"

    assert tv.session(sign(issuer, V2_ACCESS)).user.id == OID
    error = refused(tv, sign(issuer, {**V2_ACCESS, "tid": OTHER_TID, "iss": other_iss}))
    assert error.code == "issuer_mismatch"


def test_a_multi_tenant_issuer_accepts_both_forms_of_each_allowed_tenant(
    issuer: DevIssuer,
) -> None:
    tv = entra(issuer, iss=TEMPLATE, tenants=[TID, OTHER_TID])
    other_v1 = {**V1_ACCESS, "tid": OTHER_TID, "iss": f"https://sts.windows.net/{OTHER_TID}/"}

    assert tv.issuers == {
        V1,
        V2,
        f"https://sts.windows.net/{OTHER_TID}/",
        f"https://login.microsoftonline.com/{OTHER_TID}/v2.0",
    }
    for claims in (V2_ACCESS, V1_ACCESS, other_v1):
        session = tv.session(sign(issuer, claims))
        assert session.organizations[0].id == claims["tid"]


def test_a_token_whose_issuer_is_another_tenants_is_refused(issuer: DevIssuer) -> None:
    tv = entra(issuer, iss=TEMPLATE, tenants=[TID, OTHER_TID])
    mixed = {**V2_ACCESS, "tid": OTHER_TID}  # iss names TID

    assert refused(tv, sign(issuer, mixed)).code == "issuer_mismatch"


def test_a_single_tenant_issuer_accepts_its_v1_form_only_for_its_tenant(
    issuer: DevIssuer,
) -> None:
    tv = entra(issuer)
    foreign_v1 = {**V1_ACCESS, "iss": f"https://sts.windows.net/{OTHER_TID}/", "tid": OTHER_TID}

    assert tv.issuers == {V1, V2}
    assert refused(tv, sign(issuer, foreign_v1)).code == "issuer_mismatch"
    assert refused(tv, sign(issuer, {**V2_ACCESS, "tid": OTHER_TID})).code == "issuer_mismatch"


@pytest.mark.parametrize(
    ("iss", "tenants", "setting"),
    [
        (TEMPLATE, None, "APP_CONFIG_AUTH__TENANTS"),
        ("https://login.microsoftonline.com/common/v2.0", None, "APP_CONFIG_AUTH__ISSUER"),
        (V2, [OTHER_TID], "APP_CONFIG_AUTH__TENANTS"),
    ],
)
def test_tenant_settings_are_checked_at_start_up(
    issuer: DevIssuer, iss: str, tenants: list[str] | None, setting: str
) -> None:
    extra = {} if tenants is None else {"tenants": tenants}
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="entra", iss=iss, audience=API, **extra)

    assert setting in caught.value.message


def test_a_template_issuer_is_only_for_the_entra_profile(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="jwtedge", iss=TEMPLATE, audience=API)

    assert "APP_CONFIG_AUTH__ISSUER" in caught.value.message


# -- the bake of a multi-tenant issuer -----------------------------------------------------------


def test_the_bake_of_a_template_issuer_fetches_the_common_key_set(issuer: DevIssuer) -> None:
    requested: list[str] = []
    keys_url = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
    discovery = {
        "issuer": TEMPLATE,
        "jwks_uri": keys_url,
        "token_endpoint": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "authorization_endpoint": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        requested.append(str(request.url))
        body = issuer.jwks() if str(request.url) == keys_url else discovery
        return httpx2.Response(
            200, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )

    async def run() -> Any:
        async with Fetcher(transport=httpx2.MockTransport(handler)) as fetcher:
            return await bake(TEMPLATE, fetcher=fetcher)

    result = asyncio.run(run())

    assert requested == [
        "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
        keys_url,
    ]
    assert result.meta["issuer"] == TEMPLATE
