"""Sign-in through the reference app: /auth/login, the callback, /auth/refresh, logout.

The app runs under TestClient; its calls to the issuer (token exchange,
refresh, revocation) go to a DevIssuer's ASGI app through
``issuer_transport``, and the browser's leg to /authorize is followed by
calling the DevIssuer app with the Location URL.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from verifier.app import create_app
from verifier.config import AppConfig
from verifier.errors import ConfigInvalid
from verifier.jwks import parse_jwks
from verifier.login import (
    STATE_COOKIE_PREFIX,
    STATE_TTL,
    LoginError,
    StateCipher,
    safe_return_path,
)
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

APP = "http://127.0.0.1"
ISSUER_URL = "https://issuer.test"
STATE_KEY = "k" * 40
ORIGIN = {"Origin": APP}
ORGS = [
    {"id": "org_acme", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
    {"id": "org_globex", "slug": "globex", "name": "Globex Corporation", "role": "member"},
]
PROJECTS = [
    {"id": "prj_web", "slug": "website", "organizationId": "org_acme"},
    {"id": "prj_bill", "slug": "billing", "organizationId": "org_globex"},
]
TOKEN_COOKIES = ("jwtedge_access", "jwtedge_id", "jwtedge_refresh")


# -- helpers (test_app.py uses them too) ----------------------------------------------


def new_issuer(**kwargs: Any) -> DevIssuer:
    """A DevIssuer at ISSUER_URL whose default user is Ada, in two organizations."""
    issuer = DevIssuer(issuer=ISSUER_URL, audience="api", client_id="web", **kwargs)
    issuer.add_user(
        "ada", email="ada@example.com", name="Ada Lovelace", organizations=ORGS, projects=PROJECTS
    )
    issuer.default_user = "ada"
    return issuer


def edge_config(issuer: DevIssuer, **sections: Any) -> AppConfig:
    """A config baked from ``issuer`` with its endpoints; ``sections`` are merged in."""
    discovery = issuer.discovery()
    meta = {
        name: discovery[name]
        for name in (
            "issuer",
            "jwks_uri",
            "token_endpoint",
            "authorization_endpoint",
            "end_session_endpoint",
            "revocation_endpoint",
        )
    }
    meta["baked_at"] = "2030-01-01T00:00:00Z"
    values: dict[str, Any] = {
        "auth": {
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": issuer.client_id,
            "jwks": parse_jwks(issuer.jwks()),
            "jwks_meta": meta,
        },
        "keys": {"remote": "never"},
        "login": {"state_key": STATE_KEY},
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return AppConfig(_env_file=None, **values)


def edge_app(issuer: DevIssuer, **sections: Any) -> Starlette:
    return create_app(
        edge_config(issuer, **sections), issuer_transport=httpx2.ASGITransport(app=issuer.app)
    )


@pytest.fixture
def issuer() -> DevIssuer:
    return new_issuer()


@pytest.fixture
def client(issuer: DevIssuer) -> Iterator[TestClient]:
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        yield client


def authorize(issuer: DevIssuer, location: str) -> str:
    """Follow the browser's leg to the issuer: the callback URL it redirects to."""
    with TestClient(issuer.app, base_url=issuer.issuer, follow_redirects=False) as browser:
        response = browser.get(location)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def start_login(client: TestClient, next_path: str = "/") -> str:
    """GET /auth/login; the authorize URL it redirects to."""
    response = client.get(f"/auth/login?{urlencode({'next': next_path})}")
    assert response.status_code == 302, response.text
    return response.headers["location"]


def sign_in(client: TestClient, issuer: DevIssuer, next_path: str = "/") -> httpx2.Response:
    """The whole login; the callback's response (303 to ``next_path``)."""
    callback = authorize(issuer, start_login(client, next_path))
    response = client.get(callback)
    assert response.status_code == 303, response.text
    return response


def with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def param(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def token_cookies(client: TestClient) -> dict[str, str]:
    return {name: client.cookies[name] for name in TOKEN_COOKIES if name in client.cookies}


# -- the happy path -----------------------------------------------------------------


def test_login_sets_token_cookies_and_the_home_page_shows_orgs_and_projects(
    client: TestClient, issuer: DevIssuer
) -> None:
    callback = sign_in(client, issuer)

    assert callback.headers["location"] == "/"
    assert callback.headers["cache-control"] == "no-store"
    assert set(token_cookies(client)) == set(TOKEN_COOKIES)
    assert not [name for name in client.cookies if STATE_COOKIE_PREFIX in name]
    page = client.get("/")
    assert page.status_code == 200
    for text in ("Ada Lovelace", "Acme Inc.", "Globex Corporation", "owner", "website", "billing"):
        assert text in page.text
    session = client.get("/api/session")
    assert session.status_code == 200
    assert session.headers["cache-control"] == "no-store"
    body = session.json()
    assert body["user"]["id"] == "ada"
    assert [org["name"] for org in body["organizations"]] == ["Acme Inc.", "Globex Corporation"]
    assert issuer.stats.code_grants == 1


def test_login_asks_for_code_with_pkce_s256_state_nonce_and_a_derived_redirect_uri(
    client: TestClient,
) -> None:
    location = start_login(client)

    assert location.startswith(f"{ISSUER_URL}/authorize?")
    assert param(location, "response_type") == "code"
    assert param(location, "client_id") == "web"
    assert param(location, "redirect_uri") == f"{APP}/auth/callback"
    assert param(location, "code_challenge_method") == "S256"
    assert len(param(location, "code_challenge")) == 43
    assert param(location, "scope") == "openid profile email offline_access"
    assert param(location, "state") != param(location, "nonce")


def test_the_state_cookie_is_httponly_lax_short_lived_and_sealed(client: TestClient) -> None:
    response = client.get("/auth/login?next=/secret-place")
    cookie = response.headers["set-cookie"]

    assert cookie.startswith(STATE_COOKIE_PREFIX)
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=lax" in lowered
    assert f"max-age={STATE_TTL}" in lowered
    # Sealed: neither the return path nor the state can be read from it.
    assert "secret-place" not in cookie
    assert param(response.headers["location"], "state") not in cookie


def test_login_is_redirected_to_the_return_path(client: TestClient, issuer: DevIssuer) -> None:
    response = sign_in(client, issuer, "/account?tab=orgs")

    assert response.headers["location"] == "/account?tab=orgs"
    assert client.get("/account?tab=orgs").status_code == 200


def test_two_logins_in_parallel_tabs_both_complete(client: TestClient, issuer: DevIssuer) -> None:
    first = start_login(client, "/one")
    second = start_login(client, "/two")

    assert client.get(authorize(issuer, second)).headers["location"] == "/two"
    assert client.get(authorize(issuer, first)).headers["location"] == "/one"


def test_a_configured_redirect_uri_names_the_callback_route(issuer: DevIssuer) -> None:
    app = edge_app(issuer, login={"redirect_uri": f"{APP}/oauth/cb"})
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        location = start_login(client)
        assert param(location, "redirect_uri") == f"{APP}/oauth/cb"
        callback = authorize(issuer, location)
        assert urlsplit(callback).path == "/oauth/cb"
        assert client.get(callback).status_code == 303
        assert client.get("/auth/callback").status_code == 404


def test_a_confidential_client_authenticates_the_code_exchange() -> None:
    issuer = new_issuer(client_secret="s3cr3t-value")
    app = edge_app(issuer, auth={"client_secret": "s3cr3t-value"})
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        assert client.get("/api/session").status_code == 200


# -- refused callbacks ------------------------------------------------------------------


def assert_refused(response: httpx2.Response, code: str) -> None:
    assert response.status_code == 400, response.text
    assert code in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("text/html")


def test_a_callback_whose_state_matches_no_started_login_is_refused(
    client: TestClient, issuer: DevIssuer
) -> None:
    callback = authorize(issuer, start_login(client))

    response = client.get(with_param(callback, "state", "someone-elses-state"))

    assert_refused(response, "state_missing")
    assert issuer.stats.code_grants == 0
    assert not token_cookies(client)


def test_a_callback_without_state_is_refused(client: TestClient, issuer: DevIssuer) -> None:
    callback = authorize(issuer, start_login(client))
    parts = urlsplit(callback)
    query = urlencode({"code": param(callback, "code")})

    assert_refused(client.get(urlunsplit(parts._replace(query=query))), "state_missing")


def test_a_tampered_state_cookie_is_refused(client: TestClient, issuer: DevIssuer) -> None:
    callback = authorize(issuer, start_login(client))
    (name,) = [n for n in client.cookies if n.startswith(STATE_COOKIE_PREFIX)]
    value = client.cookies[name]
    client.cookies.delete(name)  # replace it, so only the tampered copy is sent
    client.cookies.set(name, value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB"))

    assert_refused(client.get(callback), "state_invalid")
    assert issuer.stats.code_grants == 0


def test_a_state_cookie_moved_under_another_logins_name_is_refused(
    client: TestClient, issuer: DevIssuer
) -> None:
    first = authorize(issuer, start_login(client))
    before = set(client.cookies.keys())
    start_login(client)
    (second_name,) = set(client.cookies.keys()) - before
    (first_name,) = [n for n in before if n.startswith(STATE_COOKIE_PREFIX)]
    # The first login's callback, but its cookie now holds the second login's sealed state.
    moved = client.cookies[second_name]
    client.cookies.delete(first_name)  # replace it, so only the moved copy is sent
    client.cookies.set(first_name, moved)

    assert_refused(client.get(first), "state_invalid")


def test_an_expired_login_state_is_refused(issuer: DevIssuer) -> None:
    clock = [time.time()]
    app = create_app(
        edge_config(issuer),
        issuer_transport=httpx2.ASGITransport(app=issuer.app),
        now=lambda: clock[0],
    )
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        callback = authorize(issuer, start_login(client))
        clock[0] += STATE_TTL + 1
        assert_refused(client.get(callback), "state_invalid")


def test_a_nonce_mismatch_is_refused(client: TestClient, issuer: DevIssuer) -> None:
    # The issuer puts another nonce in the ID token than the login asked for.
    location = with_param(start_login(client), "nonce", "a-nonce-from-another-login")

    response = client.get(authorize(issuer, location))

    assert_refused(response, "nonce_mismatch")
    assert issuer.stats.code_grants == 1
    assert not token_cookies(client)


def test_swapped_codes_of_two_logins_are_refused(client: TestClient, issuer: DevIssuer) -> None:
    first = authorize(issuer, start_login(client))
    second = authorize(issuer, start_login(client))
    # The second login's state with the first login's code: PKCE binds the code.
    swapped = with_param(second, "code", param(first, "code"))

    assert_refused(client.get(swapped), "token_exchange_failed")
    assert not token_cookies(client)


def test_a_foreign_iss_is_refused_before_the_code_is_spent(
    client: TestClient, issuer: DevIssuer
) -> None:
    callback = authorize(issuer, start_login(client))

    response = client.get(with_param(callback, "iss", "https://evil.test"))

    assert_refused(response, "issuer_mismatch")
    assert issuer.stats.token_requests == 0


def test_an_authorization_error_from_the_issuer_is_shown_by_code(client: TestClient) -> None:
    state = param(start_login(client), "state")

    response = client.get(f"/auth/callback?{urlencode({'state': state, 'error': 'access_denied'})}")

    assert_refused(response, "authorization_failed")
    assert "access_denied" in response.text


def test_a_failing_token_endpoint_is_refused_and_the_state_is_spent(
    client: TestClient, issuer: DevIssuer
) -> None:
    callback = authorize(issuer, start_login(client))
    issuer.fail_mode, issuer.fail_count = "500", 1

    assert_refused(client.get(callback), "token_exchange_failed")
    # One attempt per login: the state cookie is gone, a retry is refused.
    assert_refused(client.get(callback), "state_missing")


def test_tokens_that_do_not_verify_are_refused(client: TestClient, issuer: DevIssuer) -> None:
    callback = authorize(issuer, start_login(client))
    issuer.fail_mode, issuer.fail_count = "bad_signature", 1

    assert_refused(client.get(callback), "token_invalid")
    assert not token_cookies(client)


def test_repeated_callback_parameters_are_refused(client: TestClient, issuer: DevIssuer) -> None:
    callback = authorize(issuer, start_login(client))

    assert_refused(client.get(callback + "&code=another"), "callback_invalid")


# -- the return path --------------------------------------------------------------------

REFUSED_NEXT = [
    "https://evil.test",
    "//evil.test",
    "/\\evil.test",
    "/%5Cevil.test",
    "/%5cevil.test",
    "/%2F%2Fevil.test",
    "/%2f/evil.test",
    "/%252F%252Fevil.test",
    "\\\\evil.test",
    "javascript:alert(1)",
    "evil.test",
    "/path\twith-tab",
    "/path\nwith-newline",
    "/path%09with-encoded-tab",
    "/path%0Awith-encoded-newline",
    "/path%0d%0aSet-Cookie:x=1",
    "/path%00nul",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("target", REFUSED_NEXT)
def test_a_return_path_that_is_not_local_is_refused(
    client: TestClient, issuer: DevIssuer, target: str
) -> None:
    response = client.get(f"/auth/login?{urlencode({'next': target})}")

    assert_refused(response, "next_invalid")
    assert issuer.stats.authorize_requests == 0
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "target", ["/", "/x", "/a/b?c=d&e=f", "/%E2%9C%93", "/path#frag", "/a%2Fb", "/a//b"]
)
def test_a_local_return_path_is_accepted(target: str) -> None:
    assert safe_return_path(target) == target


def test_no_return_path_means_the_start_page() -> None:
    assert safe_return_path(None) == "/"
    assert safe_return_path("") == "/"


def test_a_signed_in_visitor_with_an_expired_access_token_is_sent_on_without_the_issuer() -> None:
    clock = [time.time()]
    issuer = new_issuer(clock=lambda: clock[0])
    config = edge_config(issuer)
    app = create_app(
        config,
        issuer_transport=httpx2.ASGITransport(app=issuer.app),
        verifier=TokenVerifier.from_config(config, now=lambda: clock[0]),
    )
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        clock[0] += 3600  # an hour later the access token has long expired
        authorize_requests, refresh_grants = (
            issuer.stats.authorize_requests,
            issuer.stats.refresh_grants,
        )

        response = client.get("/auth/login?next=/x")

        assert response.status_code == 302
        assert response.headers["location"] == "/x"
        assert issuer.stats.authorize_requests == authorize_requests
        assert issuer.stats.refresh_grants == refresh_grants + 1
        assert "jwtedge_access=" in response.headers["set-cookie"]


def test_a_signed_in_visitor_is_sent_straight_to_the_return_path(
    client: TestClient, issuer: DevIssuer
) -> None:
    sign_in(client, issuer)
    before = issuer.stats.authorize_requests

    response = client.get("/auth/login?next=/account")

    assert (response.status_code, response.headers["location"]) == (302, "/account")
    assert issuer.stats.authorize_requests == before


# -- refresh ------------------------------------------------------------------------------


def test_post_auth_refresh_picks_up_a_new_project_at_once(
    client: TestClient, issuer: DevIssuer
) -> None:
    sign_in(client, issuer)
    assert "Apollo" not in client.get("/").text
    issuer.add_project("ada", {"id": "prj_apollo", "slug": "Apollo", "organizationId": "org_acme"})
    assert "Apollo" not in client.get("/").text  # claims only change with new tokens

    response = client.post("/auth/refresh", headers=ORIGIN)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "prj_apollo" in [project["id"] for project in response.json()["projects"]]
    assert "Apollo" in client.get("/").text
    assert issuer.stats.refresh_grants == 1


def test_post_auth_refresh_needs_the_same_origin(client: TestClient, issuer: DevIssuer) -> None:
    sign_in(client, issuer)

    response = client.post("/auth/refresh", headers={"Origin": "https://evil.test"})

    assert response.status_code == 403
    assert response.json()["code"] == "csrf_rejected"
    assert issuer.stats.refresh_grants == 0


def test_post_auth_refresh_without_a_session_is_401(client: TestClient) -> None:
    response = client.post("/auth/refresh", headers=ORIGIN)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- logout ---------------------------------------------------------------------------------


def test_logout_clears_cookies_revokes_and_ends_the_issuer_session(
    issuer: DevIssuer,
) -> None:
    app = edge_app(issuer, login={"post_logout_redirect": f"{APP}/"})
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        refresh_token = client.cookies["jwtedge_refresh"]

        response = client.post("/auth/logout", headers=ORIGIN)

        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith(f"{ISSUER_URL}/logout?")
        assert param(location, "post_logout_redirect_uri") == f"{APP}/"
        assert param(location, "client_id") == "web"
        assert "id_token_hint" not in location
        assert not token_cookies(client)
        assert issuer.stats.revocations == 1
        assert client.get("/api/session").status_code == 401
    # The refresh token is dead at the issuer too.
    with TestClient(issuer.app, base_url=issuer.issuer) as direct:
        grant = direct.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": "web",
            },
        )
    assert grant.json()["error"] == "invalid_grant"


def test_logout_never_follows_a_redirect_the_request_names(
    client: TestClient, issuer: DevIssuer
) -> None:
    sign_in(client, issuer)

    response = client.post(
        "/auth/logout?post_logout_redirect_uri=https://evil.test&next=https://evil.test",
        headers=ORIGIN,
    )

    assert "evil.test" not in response.headers["location"]


def test_logout_without_an_end_session_endpoint_goes_home(issuer: DevIssuer) -> None:
    app = edge_app(
        issuer,
        auth={"jwks_meta": {"issuer": issuer.issuer}},
        endpoints={
            "authorization": f"{ISSUER_URL}/authorize",
            "token": f"{ISSUER_URL}/token",
        },
    )
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        response = client.post("/auth/logout", headers=ORIGIN)
        assert (response.status_code, response.headers["location"]) == (303, "/")
        assert not token_cookies(client)
        assert issuer.stats.revocations == 0  # no revocation endpoint configured


def test_a_cross_site_logout_is_refused(client: TestClient, issuer: DevIssuer) -> None:
    sign_in(client, issuer)

    response = client.post("/auth/logout", headers={"Origin": "https://evil.test"})

    assert response.status_code == 403
    assert set(token_cookies(client)) == set(TOKEN_COOKIES)
    assert issuer.stats.revocations == 0


def test_logout_with_a_due_token_does_not_refresh_behind_its_back(issuer: DevIssuer) -> None:
    # 5 s tokens minted 4 s ago: inside a third of their lifetime, so every request would refresh.
    issuer.access_ttl = 5
    issuer.clock = lambda: time.time() - 4
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        grants = issuer.stats.refresh_grants

        response = client.post("/auth/logout", headers=ORIGIN)

        assert issuer.stats.refresh_grants == grants
        assert all("Max-Age=0" in value for value in response.headers.get_list("set-cookie"))
        assert not token_cookies(client)


# -- configuration ------------------------------------------------------------------------


def test_create_app_without_a_state_key_names_the_setting(issuer: DevIssuer) -> None:
    config = edge_config(issuer, login={"state_key": None})

    with pytest.raises(ConfigInvalid) as caught:
        create_app(config)

    assert "APP_CONFIG_LOGIN__STATE_KEY" in caught.value.message


def test_create_app_refuses_a_short_state_key(issuer: DevIssuer) -> None:
    config = edge_config(issuer, login={"state_key": "short-key"})

    with pytest.raises(ConfigInvalid) as caught:
        create_app(config)

    assert "APP_CONFIG_LOGIN__STATE_KEY" in caught.value.message
    assert "short-key" not in caught.value.message


def test_without_an_authorization_endpoint_no_login_is_served(issuer: DevIssuer) -> None:
    config = edge_config(issuer, auth={"jwks_meta": None}, login={"state_key": None})
    with TestClient(create_app(config), base_url=APP, follow_redirects=False) as client:
        assert client.get("/auth/login").status_code == 404
        assert client.get("/auth/callback").status_code == 404
        assert "not configured" in client.get("/").text


# -- the state cipher ---------------------------------------------------------------------


def test_the_state_cipher_round_trips_and_refuses_tampering() -> None:
    cipher = StateCipher(b"x" * 32)
    sealed = cipher.seal({"s": "state"}, aad=b"name")

    assert cipher.open(sealed, aad=b"name") == {"s": "state"}
    for bad in (sealed[:-2] + "AA", "", "not base64!", sealed + "A"):
        with pytest.raises(LoginError):
            cipher.open(bad, aad=b"name")
    with pytest.raises(LoginError):
        cipher.open(sealed, aad=b"other-name")
    with pytest.raises(LoginError):
        StateCipher(b"y" * 32).open(sealed, aad=b"name")
    assert "x" * 32 not in repr(cipher)


def test_the_state_cipher_needs_32_bytes() -> None:
    with pytest.raises(ValueError, match="32"):
        StateCipher(b"x" * 31)


def test_sealing_twice_gives_different_values() -> None:
    cipher = StateCipher(b"x" * 32)

    assert cipher.seal({"a": 1}, aad=b"n") != cipher.seal({"a": 1}, aad=b"n")


# -- no token anywhere but Set-Cookie ------------------------------------------------------


def test_no_response_or_log_line_carries_a_token(
    issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[httpx2.Response] = []
    secrets_seen: set[str] = set()

    def record(response: httpx2.Response) -> None:
        response.read()
        seen.append(response)
        for value in response.headers.get_list("set-cookie"):
            name, _, rest = value.partition("=")
            token = rest.split(";")[0]
            is_token_cookie = name.startswith("jwtedge_") and STATE_COOKIE_PREFIX not in name
            if is_token_cookie and len(token) > 20:  # not a clearing value
                secrets_seen.add(token)

    # 5 s tokens minted 4 s ago: every request refreshes, rotating tokens a few times.
    issuer.access_ttl = 5
    issuer.clock = lambda: time.time() - 4
    app = edge_app(issuer, login={"post_logout_redirect": f"{APP}/"})
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        client.event_hooks = {"request": [], "response": [record]}
        location = start_login(client)
        callback = authorize(issuer, location)
        code = param(callback, "code")
        client.get(callback)
        for path in ("/", "/account", "/api/session", "/auth/verify", "/api/orgs/acme/projects"):
            client.get(path)
        client.post("/auth/refresh", headers=ORIGIN)
        client.get(with_param(callback, "state", "x"))  # a refused callback
        client.get("/readyz")
        client.get("/metrics")
        client.post("/auth/logout", headers=ORIGIN)

    assert len(secrets_seen) >= 6  # access, ID and refresh tokens, rotated
    secrets_seen.add(code)
    for response in seen:
        headers = [
            f"{name}: {value}"
            for name, value in response.headers.multi_items()
            if name.lower() != "set-cookie"
        ]
        text = response.text + "\n".join(headers)
        for secret in secrets_seen:
            assert secret not in text, f"a token leaked into {response.request.url.path}"
    # The browser side (this test's client, logger "httpx2") logs the URLs it
    # requests, the callback's code included; everything else must not.
    server_side = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not (record.name == "httpx2" and "HTTP Request: GET" in record.getMessage())
    )
    for secret in secrets_seen:
        assert secret not in server_side
        assert base64.urlsafe_b64encode(secret.encode()).decode() not in caplog.text


def test_login_error_pages_escape_what_they_show(client: TestClient) -> None:
    state = param(start_login(client), "state")
    query = urlencode({"state": state, "error": "<script>alert(1)</script>"})

    response = client.get(f"/auth/callback?{query}")

    assert "<script>alert" not in response.text
    assert quote("<script>") not in response.text
