"""Login settings a real issuer needs, and clearing only the cookies that exist.

``login.prompt``, ``login.resource`` (RFC 8707: on the authorization request
and on every token request) and ``login.extra_params``; the warning when a
login asked for ``offline_access`` and got no refresh token; and the
``Set-Cookie`` headers of the callback and logout, which cover only the
token cookies the request carried (the middleware names them in
``scope["jwtedge.cookies_present"]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx2
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.test_login import (
    APP,
    ORIGIN,
    TOKEN_COOKIES,
    authorize,
    edge_config,
    new_issuer,
    start_login,
)
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.errors import ConfigInvalid
from verifier.login import OFFLINE_ACCESS_WARNING, STATE_COOKIE_PREFIX
from verifier.middleware import COOKIES_PRESENT_KEY, JWTSessionMiddleware
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

RESOURCES = ["https://api.example.test/", "urn:example:billing"]


class Recording(httpx2.AsyncBaseTransport):
    """Forwards to the issuer app, keeps every request, and may edit token answers."""

    def __init__(
        self,
        issuer: DevIssuer,
        edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.inner = httpx2.ASGITransport(app=issuer.app)
        self.edit = edit
        self.requests: list[httpx2.Request] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        if self.edit is None or request.url.path != "/token":
            return response
        body = orjson.loads(await response.aread())
        return httpx2.Response(response.status_code, json=self.edit(body))

    def forms(self, path: str = "/token") -> list[list[tuple[str, str]]]:
        return [
            parse_qsl(request.content.decode())
            for request in self.requests
            if request.url.path == path
        ]


def app_for(issuer: DevIssuer, transport: httpx2.AsyncBaseTransport, **sections: Any) -> Starlette:
    return create_app(edge_config(issuer, **sections), issuer_transport=transport)


@pytest.fixture
def issuer() -> DevIssuer:
    return new_issuer()


def sign_in(client: TestClient, issuer: DevIssuer) -> httpx2.Response:
    callback = authorize(issuer, start_login(client))
    response = client.get(callback)
    assert response.status_code == 303, response.text
    return response


def set_cookie_names(response: httpx2.Response) -> list[str]:
    return [value.partition("=")[0] for value in response.headers.get_list("set-cookie")]


# -- the authorization request --------------------------------------------------------


def test_login_sends_prompt_resource_and_extra_params_on_the_authorization_request(
    issuer: DevIssuer,
) -> None:
    app = app_for(
        issuer,
        Recording(issuer),
        login={
            "prompt": "consent",
            "resource": RESOURCES,
            "extra_params": {"audience": "https://api.example.test/", "ui_locales": "fr"},
        },
    )
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        location = start_login(client)

    query = parse_qs(urlsplit(location).query)
    assert query["prompt"] == ["consent"]
    assert query["resource"] == RESOURCES
    assert query["audience"] == ["https://api.example.test/"]
    assert query["ui_locales"] == ["fr"]
    # jwtedge's own parameters are still there, once each.
    for name in ("state", "nonce", "code_challenge", "redirect_uri", "scope"):
        assert len(query[name]) == 1


def test_without_the_settings_the_authorization_request_has_no_prompt_or_resource(
    issuer: DevIssuer,
) -> None:
    with TestClient(
        app_for(issuer, Recording(issuer)), base_url=APP, follow_redirects=False
    ) as client:
        query = parse_qs(urlsplit(start_login(client)).query)

    assert "prompt" not in query
    assert "resource" not in query


# -- token requests ----------------------------------------------------------------------


def test_the_code_exchange_and_every_refresh_send_each_resource_indicator(
    issuer: DevIssuer,
) -> None:
    recording = Recording(issuer)
    app = app_for(issuer, recording, login={"resource": RESOURCES})
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        for _ in range(2):
            assert client.post("/auth/refresh", headers=ORIGIN).status_code == 200

    exchange, *refreshes = recording.forms()
    assert ("grant_type", "authorization_code") in exchange
    assert [value for name, value in exchange if name == "resource"] == RESOURCES
    assert len(refreshes) == 2
    for form in refreshes:
        assert ("grant_type", "refresh_token") in form
        assert [value for name, value in form if name == "resource"] == RESOURCES


async def test_the_in_process_refresher_sends_one_resource_as_one_parameter(
    issuer: DevIssuer,
) -> None:
    recording = Recording(issuer)
    config = edge_config(issuer, login={"resource": [RESOURCES[0]]})
    verifier = TokenVerifier.from_config(config)
    refresher = InProcessRefresher.from_config(config, verifier, transport=recording)
    assert refresher is not None
    assert refresher.resource == (RESOURCES[0],)
    tokens = issuer.login("ada")
    try:
        await refresher.refresh(tokens["refresh_token"], proof=None)
    finally:
        await refresher.aclose()

    (form,) = recording.forms()
    assert [pair for pair in form if pair[0] == "resource"] == [("resource", RESOURCES[0])]


# -- offline_access without a refresh token ----------------------------------------------


def _without_refresh_token(body: dict[str, Any]) -> dict[str, Any]:
    body.pop("refresh_token", None)
    return body


def test_a_login_that_gets_no_refresh_token_warns_once_naming_login_prompt(
    issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jwtedge")
    app = app_for(issuer, Recording(issuer, edit=_without_refresh_token))
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        assert client.get("/readyz").json()["warnings"] == []
        for _ in range(3):
            client.cookies.clear()
            callback = sign_in(client, issuer)
            assert "jwtedge_refresh" not in set_cookie_names(callback)
        ready = client.get("/readyz")
        metrics = client.get("/metrics").text

    assert ready.status_code == 200  # a warning, not unreadiness
    assert ready.json()["warnings"] == [OFFLINE_ACCESS_WARNING]
    assert "jwtedge_login_refresh_token_missing_total 3.0" in metrics
    warned = [r for r in caplog.records if r.getMessage() == OFFLINE_ACCESS_WARNING]
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    assert "login.prompt" in OFFLINE_ACCESS_WARNING
    assert "prompt=consent" in OFFLINE_ACCESS_WARNING


def test_a_login_that_did_not_ask_for_offline_access_does_not_warn(
    issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jwtedge")
    app = app_for(
        issuer,
        Recording(issuer, edit=_without_refresh_token),
        login={"scopes": "openid profile email"},
    )
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        assert client.get("/readyz").json()["warnings"] == []

    assert not [r for r in caplog.records if r.getMessage() == OFFLINE_ACCESS_WARNING]


# -- clearing only what exists -----------------------------------------------------------


def test_a_first_login_sets_three_token_cookies_and_clears_only_the_login_state(
    issuer: DevIssuer,
) -> None:
    with TestClient(
        app_for(issuer, Recording(issuer)), base_url=APP, follow_redirects=False
    ) as client:
        callback = sign_in(client, issuer)

    names = set_cookie_names(callback)
    tokens = sorted(name for name in names if not name.startswith(STATE_COOKIE_PREFIX))
    assert tokens == sorted(TOKEN_COOKIES)
    assert len(names) == 4  # was 16: twelve of them clearing chunks that never existed
    assert sum(name.startswith(STATE_COOKIE_PREFIX) for name in names) == 1


def test_a_login_over_chunked_cookies_clears_exactly_the_chunks_the_browser_sent(
    issuer: DevIssuer,
) -> None:
    with TestClient(
        app_for(issuer, Recording(issuer)), base_url=APP, follow_redirects=False
    ) as client:
        location = start_login(client)
        client.cookies.set("jwtedge_access.0", "old-part-0")
        client.cookies.set("jwtedge_access.1", "old-part-1")
        client.cookies.set("jwtedge_id", "old-id")
        response = client.get(authorize(issuer, location))

    assert response.status_code == 303
    cleared = [
        value.partition("=")[0]
        for value in response.headers.get_list("set-cookie")
        if "Max-Age=0" in value and not value.startswith(STATE_COOKIE_PREFIX)
    ]
    assert sorted(cleared) == ["jwtedge_access.0", "jwtedge_access.1"]


def test_logout_clears_only_the_token_cookies_the_request_carried(issuer: DevIssuer) -> None:
    with TestClient(
        app_for(issuer, Recording(issuer)), base_url=APP, follow_redirects=False
    ) as client:
        sign_in(client, issuer)
        signed_in = client.post("/auth/logout", headers=ORIGIN)
        again = client.post("/auth/logout", headers=ORIGIN)

    assert sorted(set_cookie_names(signed_in)) == sorted(TOKEN_COOKIES)
    assert all("Max-Age=0" in value for value in signed_in.headers.get_list("set-cookie"))
    assert set_cookie_names(again) == []  # nothing left to clear


def test_the_middleware_tells_the_app_which_token_cookies_it_saw(issuer: DevIssuer) -> None:
    seen_by_app: list[Any] = []

    async def endpoint(request: Request) -> Response:
        seen_by_app.append(request.scope.get(COOKIES_PRESENT_KEY))
        return JSONResponse({"cookie": request.headers.get("cookie")})

    config = edge_config(issuer, refresh={"enabled": False})
    app = JWTSessionMiddleware(Starlette(routes=[Route("/", endpoint)]), config)
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        stripped = client.get(
            "/",
            headers={"Cookie": "theme=dark; jwtedge_access.0=a; jwtedge_access.1=b; jwtedge_id=c"},
        )
        client.get("/")

    # The cookies themselves are gone from what the app sees; their names are not.
    assert stripped.json()["cookie"] == "theme=dark"
    assert seen_by_app == [("jwtedge_access.0", "jwtedge_access.1", "jwtedge_id"), ()]


# -- validation --------------------------------------------------------------------------


def config_with(**login: Any) -> AppConfig:
    return AppConfig(
        _env_file=None, auth={"issuer": "https://issuer.test", "audience": "api"}, login=login
    )


def test_the_login_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CONFIG_AUTH__ISSUER", "https://issuer.test")
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "api")
    monkeypatch.setenv("APP_CONFIG_LOGIN__PROMPT", "consent")
    monkeypatch.setenv("APP_CONFIG_LOGIN__RESOURCE", "https://api.example.test/, urn:x:y")
    monkeypatch.setenv("APP_CONFIG_LOGIN__EXTRA_PARAMS", '{"audience": "https://api"}')

    login = AppConfig(_env_file=None).login

    assert login.prompt == "consent"
    assert login.resource == ["https://api.example.test/", "urn:x:y"]
    assert login.extra_params == {"audience": "https://api"}


@pytest.mark.parametrize(
    ("login", "setting", "says"),
    [
        ({"extra_params": {"state": "x"}}, "APP_CONFIG_LOGIN__EXTRA_PARAMS", "state"),
        ({"extra_params": {"prompt": "none"}}, "APP_CONFIG_LOGIN__EXTRA_PARAMS", "login.prompt"),
        ({"extra_params": {"resource": "x"}}, "APP_CONFIG_LOGIN__EXTRA_PARAMS", "resource"),
        (
            {"extra_params": {"client_secret": "x"}},
            "APP_CONFIG_LOGIN__EXTRA_PARAMS",
            "client_secret",
        ),
        ({"extra_params": "not json"}, "APP_CONFIG_LOGIN__EXTRA_PARAMS", "JSON object"),
        ({"extra_params": {"a b": "x"}}, "APP_CONFIG_LOGIN__EXTRA_PARAMS", "parameter name"),
        ({"resource": ["api"]}, "APP_CONFIG_LOGIN__RESOURCE", "absolute URI"),
        ({"resource": ["https://api/#frag"]}, "APP_CONFIG_LOGIN__RESOURCE", "fragment"),
        ({"prompt": "Consent!"}, "APP_CONFIG_LOGIN__PROMPT", "consent"),
    ],
)
def test_bad_login_settings_are_refused_naming_the_setting(
    login: dict[str, Any], setting: str, says: str
) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config_with(**login)

    assert setting in caught.value.message
    assert says in caught.value.message


def test_extra_param_values_are_never_echoed_in_errors() -> None:
    secretish = "do-not-echo-" + "v" * 20
    with pytest.raises(ConfigInvalid) as caught:
        config_with(extra_params={"nonce": secretish})

    assert secretish not in str(caught.value)
