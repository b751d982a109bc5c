"""The ``cognito`` profile against Amazon Cognito's documented token payloads.

Access token: https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html
(no ``aud``; ``client_id``; ``token_use: access``; ``cognito:groups``).
ID token: .../amazon-cognito-user-pools-using-the-id-token.html (``aud`` = the
app client id; ``token_use: id``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE"
CLIENT = "1example23456789"
SUB = "aaaaaaaa-bbbb-cccc-dddd-example"

ACCESS = {
    "sub": SUB,
    "device_key": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "cognito:groups": ["admin"],
    "token_use": "access",
    "scope": "aws.cognito.signin.user.admin openid email",
    "auth_time": 0,
    "iss": ISS,
    "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "event_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "client_id": CLIENT,
    "username": "my-test-user",
    "version": 2,
}
ID_TOKEN = {
    "sub": SUB,
    "cognito:groups": ["test-group-a", "test-group-b", "test-group-c"],
    "email_verified": True,
    "cognito:preferred_role": "arn:aws:iam::111122223333:role/my-test-role",
    "iss": ISS,
    "cognito:username": "my-test-user",
    "middle_name": "Jane",
    "nonce": "abcdefg",
    "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "cognito:roles": ["arn:aws:iam::111122223333:role/my-test-role"],
    "aud": CLIENT,
    "identities": [],
    "event_id": "64f513be-32db-42b0-b78e-b02127b4f463",
    "token_use": "id",
    "auth_time": 0,
    "name": "John Doe",
    "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "email": "admin@example.com",
}


def cognito(issuer: DevIssuer, **settings: Any) -> TokenVerifier:
    values: dict[str, Any] = {"audience": CLIENT, "client_id": CLIENT, **settings}
    return verifier(issuer, profile="cognito", iss=ISS, **values)


def test_the_access_token_and_its_id_token_give_the_session(issuer: DevIssuer) -> None:
    session = cognito(issuer).session(sign(issuer, ACCESS), sign(issuer, ID_TOKEN))

    assert session_dict(session) == {
        "user": {
            "id": SUB,
            "email": "admin@example.com",
            "name": "John Doe",
            "picture": None,
            "email_verified": True,
        },
        "organizations": [],
        "active_organization": None,
        "projects": [],
        "scopes": ["aws.cognito.signin.user.admin", "openid", "email"],
        "roles": ["admin"],
        "permissions": [],
        "session_id": None,
    }


def test_the_app_client_id_is_the_audience_although_it_is_the_client_id(
    issuer: DevIssuer,
) -> None:
    # auth.audience holds auth.client_id: allowed, token_use tells the tokens apart.
    tv = cognito(issuer)

    assert tv.audience_claim == "client_id"
    assert tv.session(sign(issuer, ACCESS)).user.id == SUB


def test_a_machine_to_machine_token_is_its_client(issuer: DevIssuer) -> None:
    m2m = {
        "sub": CLIENT,
        "token_use": "access",
        "scope": "reports/read",
        "auth_time": 0,
        "iss": ISS,
        "version": 2,
        "jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
        "client_id": CLIENT,
    }

    session = cognito(issuer).session(sign(issuer, m2m))

    assert (session.user.id, session.token_scopes, session.roles) == (CLIENT, ("reports/read",), ())


def test_the_id_token_is_not_an_access_token(issuer: DevIssuer) -> None:
    with_client_id = {**ID_TOKEN, "client_id": CLIENT}

    assert refused(cognito(issuer), sign(issuer, with_client_id)).code == "token_type_invalid"


@pytest.mark.parametrize("token_use", [None, "refresh", "ACCESS", 1])
def test_an_access_token_must_say_token_use_access(issuer: DevIssuer, token_use: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "token_use"}
    if token_use is not None:
        claims["token_use"] = token_use

    assert refused(cognito(issuer), sign(issuer, claims)).code == "token_type_invalid"


def test_the_access_token_is_not_an_id_token(issuer: DevIssuer) -> None:
    as_id = {**ACCESS, "aud": CLIENT}

    error = refused(cognito(issuer), sign(issuer, ACCESS), sign(issuer, as_id))

    assert error.code == "token_type_invalid"


def test_another_app_clients_token_is_audience_mismatch(issuer: DevIssuer) -> None:
    other = {**ACCESS, "client_id": "2other3456789abc"}

    assert refused(cognito(issuer), sign(issuer, other)).code == "audience_mismatch"


def test_a_token_without_client_id_is_audience_mismatch(issuer: DevIssuer) -> None:
    # The aud of an ID token does not stand in for the access token's client_id.
    claims = {k: v for k, v in ACCESS.items() if k != "client_id"} | {"aud": CLIENT}

    error = refused(cognito(issuer), sign(issuer, claims))

    assert error.code == "audience_mismatch"
    assert "client_id" in error.message


@pytest.mark.parametrize(
    ("name", "value"), [("cognito:groups", "admin"), ("client_id", 5), ("scope", 3)]
)
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(cognito(issuer), sign(issuer, {**ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message
