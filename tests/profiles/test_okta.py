"""The ``okta`` profile against Okta's documented access and ID token pair.

Shapes from https://developer.okta.com/docs/guides/validate-access-tokens/ and
validate-id-tokens/: the access token's ``sub`` is the user's login while its
``uid`` is the user id, which the ID token calls ``sub``; ``cid`` is the client;
``scp`` is a list; ``jti`` starts with ``AT.`` / ``ID.``; a groups claim
(customize-tokens-groups-claim) carries the groups.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.errors import RefreshFailed
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://dev-133337.okta.com/oauth2/default"
AUD = "api://default"
CLIENT = "0oa1a2b3c4d5e6f7g8h9"
UID = "00u1a2b3c4d5e6f7g8h9"

ACCESS = {
    "ver": 1,
    "jti": "AT.MNAoEQ_jbKqoinrQo1D0XKjMX28U5d7ZszBceot7-Ts",
    "iss": ISS,
    "aud": AUD,
    "sub": "ada@example.com",
    "cid": CLIENT,
    "uid": UID,
    "scp": ["openid", "profile", "email", "groups"],
    "auth_time": 0,
    "groups": ["Everyone", "Admins"],
}
ID_TOKEN = {
    "sub": UID,
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "ver": 1,
    "iss": ISS,
    "aud": CLIENT,
    "jti": "ID.radCQMOQUmyvcTBmmIL0J6BaS60apUEiC7-vI7pOmkw",
    "amr": ["pwd"],
    "idp": "00o1zyyqo9bpRehCw1t7",
    "nonce": "af948789-ead2-4cfa-a89b-379f95c5cc52",
    "preferred_username": "ada@example.com",
    "auth_time": 0,
    "at_hash": "fPlsvVszI29LU2UhDyJ9vg",
}


def okta(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    values: dict[str, Any] = {"audience": AUD, "client_id": CLIENT, **settings}
    return verifier(issuer, profile="okta", iss=ISS, **values)


def test_the_access_and_id_token_pair_binds_on_uid(issuer: DevIssuer) -> None:
    session = okta(issuer).session(sign(issuer, ACCESS), sign(issuer, ID_TOKEN))

    assert session_dict(session) == {
        "user": {
            "id": UID,
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "picture": None,
            "email_verified": False,
        },
        "organizations": [],
        "active_organization": None,
        "projects": [],
        "scopes": ["openid", "profile", "email", "groups"],
        "roles": ["Everyone", "Admins"],
        "permissions": [],
        "session_id": None,
    }


def test_without_the_profile_the_pair_never_binds(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="jwtedge", iss=ISS, audience=AUD, client_id=CLIENT)

    error = refused(tv, sign(issuer, ACCESS), sign(issuer, ID_TOKEN))

    assert error.code == "id_token_mismatch"


def test_an_id_token_for_another_user_is_refused(issuer: DevIssuer) -> None:
    other = {**ID_TOKEN, "sub": "00u9z9z9z9z9z9z9z9z9"}

    assert refused(okta(issuer), sign(issuer, ACCESS), sign(issuer, other)).code == (
        "id_token_mismatch"
    )


def test_the_refresh_proof_is_the_same_user_from_either_token(issuer: DevIssuer) -> None:
    tv = okta(issuer)
    access = tv.verify_access(sign(issuer, ACCESS))
    id_claims = tv.verify_id(sign(issuer, ID_TOKEN))
    renamed = tv.verify_access(sign(issuer, {**ACCESS, "sub": "ada.l@example.com"}))

    assert tv.same_subject(id_claims, access)
    # A changed login keeps the user: uid binds, not the mutable sub.
    assert tv.same_subject(access, renamed)
    assert not tv.same_subject(access, {**access, "uid": "00u-someone-else"})


def test_groups_from_the_id_token_when_the_access_token_has_none(issuer: DevIssuer) -> None:
    access = {k: v for k, v in ACCESS.items() if k != "groups"}
    id_token = {**ID_TOKEN, "groups": ["Everyone", "Billing"]}

    session = okta(issuer).session(sign(issuer, access), sign(issuer, id_token))

    assert session.roles == ("Everyone", "Billing")


def test_claims_roles_names_another_groups_claim(issuer: DevIssuer) -> None:
    tv = okta(issuer, claims={"roles": "okta_roles"})

    session = tv.session(sign(issuer, {**ACCESS, "okta_roles": ["app-admin"]}))

    assert session.roles == ("app-admin",)


def test_a_client_credentials_token_is_its_client(issuer: DevIssuer) -> None:
    service = {
        "ver": 1,
        "jti": "AT.7gq8k2Jt4m",
        "iss": ISS,
        "aud": AUD,
        "sub": CLIENT,
        "cid": CLIENT,
        "scp": ["reports.read"],
    }

    session = okta(issuer).session(sign(issuer, service))

    assert (session.user.id, session.token_scopes) == (CLIENT, ("reports.read",))


def test_the_id_token_is_not_an_access_token(issuer: DevIssuer) -> None:
    # Even with aud holding the client id (allowed: cid and jti mark Okta tokens).
    tv = okta(issuer, audience=[AUD, CLIENT])
    without_hints = {k: v for k, v in ID_TOKEN.items() if k not in ("nonce", "at_hash")}

    assert refused(tv, sign(issuer, ID_TOKEN)).code == "token_type_invalid"
    assert refused(tv, sign(issuer, without_hints)).code == "token_type_invalid"
    assert refused(tv, sign(issuer, ACCESS), sign(issuer, ACCESS)).code == "token_type_invalid"


@pytest.mark.parametrize("aud", [AUD, [AUD, "api://other"]])
def test_the_authorization_server_audience_is_accepted(issuer: DevIssuer, aud: Any) -> None:
    assert okta(issuer).session(sign(issuer, {**ACCESS, "aud": aud})).user.id == UID


@pytest.mark.parametrize("aud", ["api://other", "https://dev-133337.okta.com", None])
def test_a_wrong_or_missing_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(okta(issuer), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(
    ("name", "value"), [("uid", 12), ("uid", ""), ("scp", [1]), ("groups", "Admins")]
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(okta(issuer), sign(issuer, {**ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message


def refresh_with(tv: TokenVerifier, answer: dict[str, str], proof: dict[str, Any]) -> Any:
    """One refresh against a token endpoint that answers ``answer`` (no network)."""

    def endpoint(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"token_type": "Bearer", "expires_in": 3600, **answer})

    async def run() -> Any:
        refresher = InProcessRefresher(
            token_endpoint=f"{ISS}/v1/token",
            client_id=CLIENT,
            verifier=tv,
            transport=httpx2.MockTransport(endpoint),
        )
        try:
            return await refresher.refresh("refresh-token-value", proof=proof)
        finally:
            await refresher.aclose()

    return asyncio.run(run())


def test_a_refresh_proved_by_the_id_token_keeps_the_user(issuer: DevIssuer) -> None:
    tv = okta(issuer)
    proof = tv.verify_id(sign(issuer, ID_TOKEN))  # sub = uid
    answer = {"access_token": sign(issuer, ACCESS), "id_token": sign(issuer, ID_TOKEN)}

    result = refresh_with(tv, answer, proof)

    assert result.claims["uid"] == UID


def test_a_refresh_for_another_user_is_refused(issuer: DevIssuer) -> None:
    tv = okta(issuer)
    proof = tv.verify_id(sign(issuer, ID_TOKEN))
    someone = {**ACCESS, "uid": "00u-someone-else"}

    with pytest.raises(RefreshFailed) as caught:
        refresh_with(tv, {"access_token": sign(issuer, someone)}, proof)

    # The new tokens are for someone else: never handed out.
    assert caught.value.context["reason"] == "bad_tokens"
