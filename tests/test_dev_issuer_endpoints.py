"""DevIssuer's OAuth endpoints: code + PKCE, rotation, reuse detection, failures, revoke, logout."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from verifier.testing import DEFAULT_SCOPE, DevIssuer

ISSUER = "http://127.0.0.1:9000"
REDIRECT = "http://127.0.0.1:8000/auth/callback"
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> DevIssuer:
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=clock)


@pytest.fixture
def client(issuer: DevIssuer) -> TestClient:
    return TestClient(issuer.app, follow_redirects=False)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_params(challenge: str, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": REDIRECT,
        "scope": DEFAULT_SCOPE,
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return {k: v for k, v in params.items() if v is not None}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(client: TestClient | httpx2.Client, challenge: str) -> str:
    response = client.get("/authorize", params=authorize_params(challenge))
    assert response.status_code == 302
    return query_of(response.headers["location"])["code"]


def claims(issuer: DevIssuer, token: str) -> dict[str, Any]:
    jwks: Any = issuer.jwks()
    algorithms = sorted({key["alg"] for key in jwks["keys"]})
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=algorithms).claims


def basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: each part form-urlencoded before the Basic encoding.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def refresh(client: TestClient, token: str, **form: str) -> httpx2.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "web", **form}
    return client.post("/token", data=data)


def exchange(client: TestClient, code: str, verifier: str, **form: str) -> httpx2.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": "web",
        **form,
    }
    return client.post("/token", data=data)


def error_of(response: httpx2.Response) -> str:
    error: str = response.json()["error"]
    return error


# -- authorization code flow ----------------------------------------------------


def test_code_flow_with_pkce_issues_tokens_that_verify_with_the_published_keys(
    issuer: DevIssuer, client: TestClient
) -> None:
    verifier, challenge = pkce()

    redirect = client.get("/authorize", params=authorize_params(challenge))

    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = query_of(location)
    assert query["state"] == "st-1"
    assert query["iss"] == ISSUER

    response = exchange(client, query["code"], verifier)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == DEFAULT_SCOPE
    access, id_claims = claims(issuer, body["access_token"]), claims(issuer, body["id_token"])
    assert access["iss"] == id_claims["iss"] == ISSUER
    assert access["sub"] == id_claims["sub"] == "u1"
    assert access["aud"] == "api"
    assert access["exp"] - access["iat"] == 300
    assert access["sid"] == id_claims["sid"]
    assert access["organizations"] == issuer.user("u1")["organizations"]
    assert access["projects"] == issuer.user("u1")["projects"]
    assert id_claims["aud"] == "web"
    assert id_claims["nonce"] == "n-1"
    assert id_claims["email"] == "a@example.com"
    assert isinstance(body["refresh_token"], str)
    stats = issuer.stats
    assert (stats.authorize_requests, stats.token_requests, stats.code_grants) == (1, 1, 1)


def test_sid_stays_stable_across_refreshes_of_a_code_login(
    issuer: DevIssuer, client: TestClient
) -> None:
    verifier, challenge = pkce()
    first = exchange(client, get_code(client, challenge), verifier).json()

    second = refresh(client, first["refresh_token"]).json()

    sid = claims(issuer, first["access_token"])["sid"]
    assert claims(issuer, second["access_token"])["sid"] == sid
    assert claims(issuer, second["id_token"])["sid"] == sid
    assert "nonce" not in claims(issuer, second["id_token"])


def test_authorize_keeps_the_query_the_redirect_uri_already_has(client: TestClient) -> None:
    _, challenge = pkce()

    response = client.get(
        "/authorize", params=authorize_params(challenge, redirect_uri=REDIRECT + "?next=%2Fa")
    )

    query = query_of(response.headers["location"])
    assert query["next"] == "/a"
    assert {"code", "state", "iss"} <= query.keys()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),
        ({"redirect_uri": "javascript:alert(1)"}, "invalid_request"),
        ({"redirect_uri": "ftp://127.0.0.1/cb"}, "invalid_request"),
        ({"redirect_uri": REDIRECT + "#frag"}, "invalid_request"),
        ({"client_id": "other"}, "invalid_client"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_authorize_answers_400_json_and_never_redirects_an_invalid_request(
    issuer: DevIssuer, client: TestClient, overrides: dict[str, str | None], error: str
) -> None:
    _, challenge = pkce()

    response = client.get("/authorize", params=authorize_params(challenge, **overrides))

    assert response.status_code == 400
    assert "location" not in response.headers
    assert error_of(response) == error
    assert issuer.stats.authorize_requests == 1


def test_authorize_refuses_a_repeated_parameter(client: TestClient) -> None:
    _, challenge = pkce()
    query = "&".join(f"{k}={quote_plus(v)}" for k, v in authorize_params(challenge).items())

    response = client.get(f"/authorize?{query}&state=again")

    assert response.status_code == 400
    assert error_of(response) == "invalid_request"


def test_authorize_approves_the_default_user(issuer: DevIssuer, client: TestClient) -> None:
    issuer.add_user("u9", email="nine@example.com")
    issuer.default_user = "u9"
    verifier, challenge = pkce()

    body = exchange(client, get_code(client, challenge), verifier).json()

    assert claims(issuer, body["id_token"])["email"] == "nine@example.com"


@pytest.mark.parametrize(
    "form",
    [
        {"code_verifier": "x" * 43},
        {"code_verifier": ""},
        {"redirect_uri": "http://127.0.0.1:8000/other"},
        {"client_id": "other"},
    ],
    ids=["wrong-verifier", "missing-verifier", "wrong-redirect-uri", "other-client"],
)
def test_code_exchange_refuses_a_mismatch(client: TestClient, form: dict[str, str]) -> None:
    verifier, challenge = pkce()

    response = exchange(client, get_code(client, challenge), verifier, **form)

    expected = (401, "invalid_client") if "client_id" in form else (400, "invalid_grant")
    assert (response.status_code, error_of(response)) == expected


def test_a_code_is_spent_by_a_failed_attempt(client: TestClient) -> None:
    verifier, challenge = pkce()
    code = get_code(client, challenge)
    exchange(client, code, "y" * 43)

    response = exchange(client, code, verifier)

    assert error_of(response) == "invalid_grant"


def test_a_reused_code_is_refused_and_revokes_what_it_issued(
    issuer: DevIssuer, client: TestClient
) -> None:
    verifier, challenge = pkce()
    code = get_code(client, challenge)
    first = exchange(client, code, verifier).json()

    again = exchange(client, code, verifier)

    assert (again.status_code, error_of(again)) == (400, "invalid_grant")
    assert error_of(refresh(client, first["refresh_token"])) == "invalid_grant"
    assert issuer.stats.revoked_families == 1
    assert issuer.stats.code_grants == 1


def test_a_code_expires_after_60_seconds(client: TestClient, clock: Clock) -> None:
    verifier, challenge = pkce()
    code = get_code(client, challenge)
    clock.now += 61

    response = exchange(client, code, verifier)

    assert error_of(response) == "invalid_grant"


def test_a_code_is_still_good_at_60_seconds(client: TestClient, clock: Clock) -> None:
    verifier, challenge = pkce()
    code = get_code(client, challenge)
    clock.now += 60

    assert exchange(client, code, verifier).status_code == 200


def test_a_code_login_without_offline_access_gets_no_refresh_token(
    issuer: DevIssuer, client: TestClient
) -> None:
    verifier, challenge = pkce()
    params = authorize_params(challenge, scope="openid email")
    code = query_of(client.get("/authorize", params=params).headers["location"])["code"]

    body = exchange(client, code, verifier).json()

    assert "refresh_token" not in body
    id_claims = claims(issuer, body["id_token"])
    assert id_claims["email"] == "a@example.com"
    assert "name" not in id_claims


# -- token endpoint: requests ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"client_id": "web"}, "invalid_request"),
        ({"client_id": "web", "grant_type": "password"}, "unsupported_grant_type"),
        ({"client_id": "web", "grant_type": "refresh_token"}, "invalid_request"),
        (
            {"client_id": "web", "grant_type": "refresh_token", "refresh_token": "nope"},
            "invalid_grant",
        ),
    ],
)
def test_token_endpoint_answers_rfc_6749_errors(
    issuer: DevIssuer, client: TestClient, data: dict[str, str], error: str
) -> None:
    response = client.post("/token", data=data)

    assert response.status_code == 400
    assert response.headers["cache-control"] == "no-store"
    assert error_of(response) == error
    assert isinstance(response.json()["error_description"], str)
    assert issuer.stats.token_requests == 1


def test_token_endpoint_refuses_a_json_body(client: TestClient) -> None:
    response = client.post("/token", json={"grant_type": "refresh_token", "client_id": "web"})

    assert error_of(response) == "invalid_request"


def test_token_endpoint_refuses_a_repeated_parameter(issuer: DevIssuer, client: TestClient) -> None:
    token = issuer.login()["refresh_token"]
    body = f"grant_type=refresh_token&client_id=web&refresh_token={token}&refresh_token={token}"

    response = client.post(
        "/token", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )

    assert error_of(response) == "invalid_request"


# -- client authentication --------------------------------------------------------


@pytest.fixture
def confidential(clock: Clock) -> DevIssuer:
    return DevIssuer(issuer=ISSUER, client_id="web", client_secret="s3:cr+t é", clock=clock)


def test_client_secret_basic_is_accepted_with_form_urlencoded_parts(
    confidential: DevIssuer,
) -> None:
    client = TestClient(confidential.app)
    token = confidential.login()["refresh_token"]

    response = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={"Authorization": basic("web", "s3:cr+t é")},
    )

    assert response.status_code == 200
    assert confidential.stats.refresh_grants == 1


def test_client_secret_post_is_accepted(confidential: DevIssuer) -> None:
    client = TestClient(confidential.app)
    token = confidential.login()["refresh_token"]

    response = refresh(client, token, client_secret="s3:cr+t é")

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        ({"Authorization": basic("web", "wrong")}, {}),
        ({}, {"client_id": "web", "client_secret": "wrong"}),
        ({}, {"client_id": "web"}),
        ({}, {}),
        ({"Authorization": "Basic !!!"}, {}),
        ({"Authorization": basic("other", "s3:cr+t é")}, {}),
    ],
    ids=["basic-wrong", "post-wrong", "no-secret", "nothing", "malformed", "other-client"],
)
def test_failed_client_authentication_is_401_invalid_client(
    confidential: DevIssuer, headers: dict[str, str], form: dict[str, str]
) -> None:
    client = TestClient(confidential.app)
    token = confidential.login()["refresh_token"]
    data = {"grant_type": "refresh_token", "refresh_token": token, **form}

    response = client.post("/token", data=data, headers=headers)

    assert response.status_code == 401
    assert error_of(response) == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert confidential.stats.refresh_grants == 0


def test_two_client_authentication_methods_at_once_are_refused(confidential: DevIssuer) -> None:
    client = TestClient(confidential.app)
    token = confidential.login()["refresh_token"]

    response = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_secret": "s3:cr+t é"},
        headers={"Authorization": basic("web", "s3:cr+t é")},
    )

    assert (response.status_code, error_of(response)) == (400, "invalid_request")


def test_public_client_needs_the_right_client_id(issuer: DevIssuer, client: TestClient) -> None:
    token = issuer.login()["refresh_token"]

    missing = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token})
    other = refresh(client, token, client_id="other")

    assert (missing.status_code, error_of(missing)) == (401, "invalid_client")
    assert (other.status_code, error_of(other)) == (401, "invalid_client")


def test_discovery_advertises_the_client_authentication_methods(confidential: DevIssuer) -> None:
    public = DevIssuer(issuer=ISSUER)

    assert confidential.discovery()["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert public.discovery()["token_endpoint_auth_methods_supported"] == ["none"]
    assert public.discovery()["authorization_response_iss_parameter_supported"] is True


# -- refresh: rotation, reuse detection, grace -------------------------------------


def test_refresh_rotates_the_refresh_token_and_keeps_sub_and_sid(
    issuer: DevIssuer, client: TestClient
) -> None:
    tokens = issuer.login(sid="sid-1")

    response = refresh(client, tokens["refresh_token"])

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["access_token"] != tokens["access_token"]
    for name in ("access_token", "id_token"):
        assert claims(issuer, body[name])["sub"] == "u1"
        assert claims(issuer, body[name])["sid"] == "sid-1"
    assert issuer.stats.refresh_grants == 1
    assert refresh(client, body["refresh_token"]).status_code == 200


def test_a_reused_refresh_token_revokes_the_whole_family(
    issuer: DevIssuer, client: TestClient
) -> None:
    first = issuer.login()["refresh_token"]
    newest = refresh(client, first).json()["refresh_token"]

    reuse = refresh(client, first)

    assert (reuse.status_code, error_of(reuse)) == (400, "invalid_grant")
    assert error_of(refresh(client, newest)) == "invalid_grant"
    stats = issuer.stats
    assert (stats.reuse_detected, stats.revoked_families, stats.refresh_grants) == (1, 1, 1)
    assert stats.token_requests == 3


def test_revoking_one_family_leaves_other_logins_alone(
    issuer: DevIssuer, client: TestClient
) -> None:
    first, other = issuer.login()["refresh_token"], issuer.login()["refresh_token"]
    refresh(client, first)
    refresh(client, first)

    assert refresh(client, other).status_code == 200


def test_reuse_grace_replays_the_same_answer_within_the_window(
    issuer: DevIssuer, client: TestClient, clock: Clock
) -> None:
    issuer.reuse_grace = 10
    first = issuer.login()["refresh_token"]
    answer = refresh(client, first).json()
    clock.now += 5

    replay = refresh(client, first)

    assert replay.status_code == 200
    assert replay.json() == answer
    assert issuer.stats.revoked_families == 0
    clock.now += 6
    late = refresh(client, first)
    assert error_of(late) == "invalid_grant"
    assert error_of(refresh(client, answer["refresh_token"])) == "invalid_grant"
    assert (issuer.stats.reuse_detected, issuer.stats.refresh_grants) == (1, 2)


def test_refresh_may_narrow_the_scope_but_not_widen_it(
    issuer: DevIssuer, client: TestClient
) -> None:
    tokens = issuer.login(scope="openid offline_access")

    narrowed = refresh(client, tokens["refresh_token"], scope="openid")
    widened = refresh(client, narrowed.json()["refresh_token"], scope="openid admin")

    assert narrowed.json()["scope"] == "openid"
    assert claims(issuer, narrowed.json()["access_token"])["scope"] == "openid"
    assert "refresh_token" in narrowed.json()
    assert error_of(widened) == "invalid_scope"


def test_a_profile_change_shows_up_in_the_next_refreshed_access_token(
    issuer: DevIssuer, client: TestClient
) -> None:
    tokens = issuer.login()
    project = {"id": "prj_new", "slug": "new", "organizationId": "org_acme"}
    org = {"id": "org_new", "slug": "new", "name": "New Org", "role": "admin"}

    issuer.add_project("u1", project)
    issuer.add_organization("u1", org)
    body = refresh(client, tokens["refresh_token"]).json()

    assert project not in claims(issuer, tokens["access_token"])["projects"]
    refreshed = claims(issuer, body["access_token"])
    assert project in refreshed["projects"]
    assert org in refreshed["organizations"]


def test_access_ttl_sets_expires_in_and_exp(issuer: DevIssuer, client: TestClient) -> None:
    tokens = issuer.login()
    issuer.access_ttl = 60

    body = refresh(client, tokens["refresh_token"]).json()

    access = claims(issuer, body["access_token"])
    assert body["expires_in"] == 60
    assert access["exp"] - access["iat"] == 60


# -- failure switches -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [("500", 500, "server_error"), ("invalid_grant", 400, "invalid_grant")],
)
def test_fail_mode_fails_the_next_requests_then_recovers(
    issuer: DevIssuer, client: TestClient, mode: str, status: int, error: str
) -> None:
    token = issuer.login()["refresh_token"]
    issuer.fail_mode, issuer.fail_count = mode, 2

    failures = [refresh(client, token) for _ in range(2)]
    recovered = refresh(client, token)

    assert [(r.status_code, error_of(r)) for r in failures] == [(status, error)] * 2
    assert recovered.status_code == 200
    assert (issuer.fail_mode, issuer.fail_count) == (None, None)
    assert (issuer.stats.token_requests, issuer.stats.refresh_grants) == (3, 1)


def test_fail_mode_without_a_count_fails_every_request(
    issuer: DevIssuer, client: TestClient
) -> None:
    token = issuer.login()["refresh_token"]
    issuer.fail_mode = "500"

    statuses = [refresh(client, token).status_code for _ in range(3)]

    assert statuses == [500, 500, 500]
    assert issuer.fail_mode == "500"
    issuer.fail_mode = None
    assert refresh(client, token).status_code == 200


def test_fail_mode_timeout_waits_fail_delay_then_answers_500(
    issuer: DevIssuer, client: TestClient
) -> None:
    issuer.fail_mode, issuer.fail_count, issuer.fail_delay = "timeout", 1, 0.01

    response = refresh(client, issuer.login()["refresh_token"])

    assert (response.status_code, error_of(response)) == (500, "server_error")


def test_fail_mode_other_sub_returns_valid_tokens_for_another_user(
    issuer: DevIssuer, client: TestClient
) -> None:
    token = issuer.login()["refresh_token"]
    issuer.fail_mode, issuer.fail_count = "other_sub", 1

    body = refresh(client, token).json()

    assert claims(issuer, body["access_token"])["sub"] == "u1-other"
    assert claims(issuer, body["id_token"])["sub"] == "u1-other"
    normal = refresh(client, body["refresh_token"]).json()
    assert claims(issuer, normal["access_token"])["sub"] == "u1"


def test_fail_mode_bad_signature_returns_tokens_that_do_not_verify(
    issuer: DevIssuer, client: TestClient
) -> None:
    token = issuer.login()["refresh_token"]
    issuer.fail_mode, issuer.fail_count = "bad_signature", 1

    body = refresh(client, token).json()

    for name in ("access_token", "id_token"):
        with pytest.raises(BadSignatureError):
            claims(issuer, body[name])
    assert claims(issuer, refresh(client, body["refresh_token"]).json()["access_token"])


def test_fail_mode_refuses_an_unknown_value(issuer: DevIssuer) -> None:
    with pytest.raises(ValueError, match="fail_mode"):
        issuer.fail_mode = "503"


# -- revoke and logout ----------------------------------------------------------------


def test_revoke_ends_the_family_and_answers_200_for_unknown_tokens(
    issuer: DevIssuer, client: TestClient
) -> None:
    token = issuer.login()["refresh_token"]

    revoked = client.post("/revoke", data={"token": token, "client_id": "web"})
    unknown = client.post("/revoke", data={"token": "unknown", "client_id": "web"})

    assert (revoked.status_code, unknown.status_code) == (200, 200)
    assert error_of(refresh(client, token)) == "invalid_grant"
    assert (issuer.stats.revocations, issuer.stats.revoked_families) == (2, 1)


def test_revoke_needs_client_authentication(confidential: DevIssuer) -> None:
    client = TestClient(confidential.app)
    token = confidential.login()["refresh_token"]

    response = client.post("/revoke", data={"token": token, "client_id": "web"})

    assert (response.status_code, error_of(response)) == (401, "invalid_client")
    assert refresh(client, token, client_secret="s3:cr+t é").status_code == 200


def test_logout_redirects_to_post_logout_redirect_uri_with_state(client: TestClient) -> None:
    response = client.get(
        "/logout",
        params={"post_logout_redirect_uri": "http://127.0.0.1:8000/bye", "state": "s1"},
    )

    assert response.status_code == 302
    assert response.headers["location"] == "http://127.0.0.1:8000/bye?state=s1"


def test_logout_without_a_redirect_says_signed_out(issuer: DevIssuer, client: TestClient) -> None:
    response = client.get("/logout")

    assert response.status_code == 200
    assert "signed out" in response.text
    assert issuer.stats.logout_requests == 1


def test_logout_refuses_a_non_http_redirect(client: TestClient) -> None:
    response = client.get("/logout", params={"post_logout_redirect_uri": "javascript:alert(1)"})

    assert response.status_code == 400
    assert "location" not in response.headers


def test_logout_with_an_id_token_hint_revokes_that_session(
    issuer: DevIssuer, client: TestClient
) -> None:
    ended, other = issuer.login(sid="s-ended"), issuer.login(sid="s-other")

    client.get("/logout", params={"id_token_hint": ended["id_token"]})
    client.get("/logout", params={"id_token_hint": issuer.sign({"sid": "s-other"})})

    assert error_of(refresh(client, ended["refresh_token"])) == "invalid_grant"
    assert refresh(client, other["refresh_token"]).status_code == 200


# -- users and login() -----------------------------------------------------------------


def test_login_mints_a_full_token_response_without_http(issuer: DevIssuer) -> None:
    issuer.add_user("u2", email="b@example.com", name="Bea", picture="https://p.example/b.png")

    tokens = issuer.login("u2", nonce="n-2")

    assert tokens.keys() == {
        "access_token",
        "id_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "scope",
    }
    assert (tokens["token_type"], tokens["expires_in"], tokens["scope"]) == (
        "Bearer",
        300,
        DEFAULT_SCOPE,
    )
    access, id_claims = claims(issuer, tokens["access_token"]), claims(issuer, tokens["id_token"])
    assert access["sub"] == id_claims["sub"] == "u2"
    assert isinstance(access["sid"], str)
    assert access["sid"] == id_claims["sid"]
    assert (id_claims["email"], id_claims["name"], id_claims["nonce"]) == (
        "b@example.com",
        "Bea",
        "n-2",
    )
    assert id_claims["picture"] == "https://p.example/b.png"
    assert issuer.stats.token_requests == 0


def test_each_login_starts_a_new_session(issuer: DevIssuer) -> None:
    first, second = issuer.login(), issuer.login()

    assert (
        claims(issuer, first["access_token"])["sid"]
        != claims(issuer, second["access_token"])["sid"]
    )


def test_login_refuses_an_unknown_user(issuer: DevIssuer) -> None:
    with pytest.raises(KeyError, match="nobody"):
        issuer.login("nobody")


def test_the_default_user_has_demo_data(issuer: DevIssuer) -> None:
    user = issuer.user("u1")

    assert user["sub"] == "u1"
    assert user["email_verified"] is True
    org_ids = {org["id"] for org in user["organizations"]}
    assert org_ids
    assert all(project["organizationId"] in org_ids for project in user["projects"])


def test_add_user_replaces_and_user_returns_a_copy(issuer: DevIssuer) -> None:
    issuer.add_user("u2", organizations=[{"id": "o1", "slug": "o", "name": "O", "role": "member"}])
    issuer.add_user("u2", email="c@example.com", email_verified=False)

    user = issuer.user("u2")
    user["projects"].append({"id": "x"})

    assert user["email"] == "c@example.com"
    assert user["email_verified"] is False
    assert user["name"] == "u2"
    assert user["organizations"] == []
    assert issuer.user("u2")["projects"] == []


def test_add_organization_replaces_one_with_the_same_id(issuer: DevIssuer) -> None:
    issuer.add_user("u2", organizations=[{"id": "o1", "slug": "o", "name": "O", "role": "member"}])

    issuer.add_organization("u2", {"id": "o1", "slug": "o", "name": "O", "role": "admin"})

    assert [org["role"] for org in issuer.user("u2")["organizations"]] == ["admin"]


# -- through a real server -----------------------------------------------------------


@pytest.mark.e2e
def test_code_flow_and_refresh_over_a_real_server() -> None:
    with DevIssuer.serve(port=0, client_id="web", client_secret="s3cret") as issuer:
        verifier, challenge = pkce()
        with httpx2.Client(base_url=issuer.url, follow_redirects=False) as client:
            code = get_code(client, challenge)
            data = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            }
            tokens = client.post("/token", data=data, auth=("web", "s3cret")).json()
            refreshed = client.post(
                "/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                auth=("web", "s3cret"),
            ).json()
        assert claims(issuer, tokens["id_token"])["nonce"] == "n-1"
        assert claims(issuer, refreshed["access_token"])["iss"] == issuer.url
        assert (issuer.stats.code_grants, issuer.stats.refresh_grants) == (1, 1)


@pytest.mark.e2e
def test_token_delay_is_served_by_a_real_server() -> None:
    with DevIssuer.serve(port=0) as issuer:
        issuer.token_delay = 0.2
        token = issuer.login()["refresh_token"]
        with httpx2.Client(base_url=issuer.url, timeout=10) as client:
            response = client.post(
                "/token",
                data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "web"},
            )
        assert response.status_code == 200
        assert issuer.stats.refresh_grants == 1


@pytest.mark.e2e
def test_a_stalled_token_request_does_not_hold_up_shutdown() -> None:
    with DevIssuer.serve(port=0) as issuer:
        issuer.fail_mode, issuer.fail_count = "timeout", 1  # fail_delay stays 30 s
        token = issuer.login()["refresh_token"]
        data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "web"}
        with (
            httpx2.Client(base_url=issuer.url, timeout=0.3) as client,
            pytest.raises(httpx2.ReadTimeout),
        ):
            client.post("/token", data=data)
        with httpx2.Client(base_url=issuer.url, timeout=10) as client:
            assert client.post("/token", data=data).status_code == 200
        # The first request is still parked in its 30 s sleep while the server stops.
        with httpx2.Client(base_url=issuer.url, timeout=0.3) as client:
            issuer.fail_mode = "timeout"
            with pytest.raises(httpx2.ReadTimeout):
                client.post("/token", data=data)
        started = time.monotonic()
    assert time.monotonic() - started < 5
