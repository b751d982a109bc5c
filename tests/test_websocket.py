"""WebSocket upgrades through JWTSessionMiddleware, and CloseAtExpiry.

Upgrades go through Starlette's TestClient (which offers the
``websocket.http.response`` extension, so refusals arrive as denial
responses) or, where a test needs a server without that extension or must
control time, through the middleware called as a plain ASGI app.

The TestClient always connects to ``ws://testserver``: the same origin is
``http://testserver`` and, since ``testserver`` is not a loopback host, the
token cookies carry the ``__Host-`` prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import ASGIApp, Message, Scope
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.conftest import make_config
from verifier.config import AppConfig
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier
from verifier.websocket import CloseAtExpiry

ORIGIN = "http://testserver"
COOKIE = {
    "access": "__Host-jwtedge_access",
    "id": "__Host-jwtedge_id",
    "refresh": "__Host-jwtedge_refresh",
}
ORGS = [
    {"id": "org_1", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
    {"id": "org_2", "slug": "globex", "name": "Globex Corporation", "role": "member"},
]
SPOOFED = {
    "X-Auth-User": "admin",
    "X-User-Id": "admin",
    "X-Forwarded-User": "admin",
    "X-Auth-Email": "admin@example.com",
}
BAD_TOKEN_CODES = {
    "malformed": "token_malformed",
    "bad_signature": "signature_invalid",
    "wrong_audience": "audience_mismatch",
}
#: Far enough in the future that any session minted today has expired.
AFTER_EXPIRY = 4_000_000_000.0


# -- the inner app ----------------------------------------------------------------


async def ws_session(websocket: WebSocket) -> None:
    """Accept, then tell the client who the middleware said it is."""
    await websocket.accept()
    session = get_session(websocket)
    await websocket.send_json(
        {
            "authenticated": websocket.user.is_authenticated,
            "user": session.user.id if session is not None else None,
            "organizations": [org.name for org in session.organizations] if session else [],
            "cookie": websocket.headers.get("cookie"),
            "spoofed": [name for name in SPOOFED if name in websocket.headers],
        }
    )
    await websocket.close()


async def ws_echo(websocket: WebSocket) -> None:
    """Accept and echo text until the client (or CloseAtExpiry) ends the socket."""
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


async def page(request: Request) -> JSONResponse:
    return JSONResponse({"authenticated": request.user.is_authenticated})


def ws_config(
    issuer: DevIssuer,
    *,
    websocket: Mapping[str, Any] | None = None,
    endpoints: Mapping[str, Any] | None = None,
) -> AppConfig:
    """``make_config`` plus the websocket and endpoints sections."""
    base = make_config(issuer)
    return AppConfig(
        auth=base.auth,
        keys=base.keys,
        websocket=dict(websocket or {}),
        endpoints=dict(endpoints or {}),
    )


def middleware_for(
    config: AppConfig, endpoint: Any = ws_session, **options: Any
) -> JWTSessionMiddleware:
    routes: list[BaseRoute] = [WebSocketRoute("/ws", endpoint), Route("/", page)]
    return JWTSessionMiddleware(Starlette(routes=routes), config, **options)


@pytest.fixture
def config(issuer: DevIssuer) -> AppConfig:
    return ws_config(issuer)


@pytest.fixture
def middleware(config: AppConfig) -> JWTSessionMiddleware:
    return middleware_for(config)


@pytest.fixture
def client(middleware: JWTSessionMiddleware) -> TestClient:
    return TestClient(middleware)


def cookie_header(access: str | None = None, id_token: str | None = None, **extra: str) -> str:
    pairs = {COOKIE["access"]: access, COOKIE["id"]: id_token, **extra}
    return "; ".join(f"{name}={value}" for name, value in pairs.items() if value is not None)


def cookie_headers(
    access: str, id_token: str | None = None, *, origin: str | None = ORIGIN
) -> dict[str, str]:
    headers = {"Cookie": cookie_header(access, id_token)}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expired_token(issuer: DevIssuer) -> str:
    # Well past the 30 s leeway.
    return issuer.access_token("u1", iat=int(time.time()) - 600, ttl=60)


def bad_token(issuer: DevIssuer, kind: str) -> str:
    if kind == "malformed":
        return "not-a.jwt"
    if kind == "bad_signature":
        head, payload, signature = issuer.access_token("u1").split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        return f"{head}.{payload}.{flipped}"
    assert kind == "wrong_audience"
    return issuer.access_token("u1", audience="another-api")


def denied(client: TestClient, path: str, headers: Mapping[str, str]) -> WebSocketDenialResponse:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect(path, headers=dict(headers)),
    ):
        pytest.fail("the upgrade was accepted")
    return refused.value


# -- accepted upgrades ------------------------------------------------------------


def test_cookie_upgrade_with_same_origin_gets_the_session(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware
) -> None:
    access = issuer.access_token("u1", organizations=ORGS)
    headers = cookie_headers(access, issuer.id_token("u1"))

    with client.websocket_connect("/ws", headers=headers) as websocket:
        message = websocket.receive_json()

    assert message["authenticated"] is True
    assert message["user"] == "u1"
    assert message["organizations"] == ["Acme Inc.", "Globex Corporation"]
    assert middleware.stats.websocket_authenticated == 1


def test_bearer_upgrade_without_origin_gets_the_session(
    client: TestClient, issuer: DevIssuer
) -> None:
    access = issuer.access_token("u1", organizations=ORGS)

    with client.websocket_connect("/ws", headers=bearer(access)) as websocket:
        message = websocket.receive_json()

    assert (message["authenticated"], message["user"]) == (True, "u1")
    assert message["organizations"] == ["Acme Inc.", "Globex Corporation"]


def test_upgrade_without_credentials_passes_through_anonymous(
    client: TestClient, middleware: JWTSessionMiddleware
) -> None:
    with client.websocket_connect("/ws", headers={"Cookie": "theme=dark"}) as websocket:
        message = websocket.receive_json()

    assert message["authenticated"] is False
    assert message["user"] is None
    assert middleware.stats.websocket_anonymous == 1
    assert middleware.stats.websocket_authenticated == 0


def test_token_cookies_are_removed_from_the_upgrade_the_app_sees(
    client: TestClient, issuer: DevIssuer
) -> None:
    cookie = cookie_header(issuer.access_token("u1"), issuer.id_token("u1"), theme="dark")

    with client.websocket_connect("/ws", headers={"Cookie": cookie, "Origin": ORIGIN}) as ws:
        message = ws.receive_json()

    assert message["authenticated"] is True
    assert message["cookie"] == "theme=dark"


@pytest.mark.parametrize("authenticated", [True, False], ids=["bearer", "anonymous"])
def test_spoofed_identity_headers_are_stripped_on_upgrades(
    client: TestClient,
    issuer: DevIssuer,
    middleware: JWTSessionMiddleware,
    authenticated: bool,
) -> None:
    headers = dict(SPOOFED)
    if authenticated:
        headers.update(bearer(issuer.access_token("u1")))

    with client.websocket_connect("/ws", headers=headers) as websocket:
        message = websocket.receive_json()

    assert message["authenticated"] is authenticated
    assert message["spoofed"] == []
    assert middleware.stats.headers_stripped == len(SPOOFED)


# -- refused upgrades: tokens -------------------------------------------------------


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
def test_expired_token_upgrade_is_refused_with_a_401_denial_response(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware, credential: str
) -> None:
    token = expired_token(issuer)
    headers = cookie_headers(token) if credential == "cookie" else bearer(token)

    refusal = denied(client, "/ws", headers)

    assert refusal.status_code == 401
    assert refusal.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert refusal.headers["cache-control"] == "no-store"
    assert refusal.json()["code"] == "token_expired"
    assert middleware.stats.websocket_refused == {"token_expired": 1}
    assert middleware.stats.websocket_authenticated == 0


@pytest.mark.parametrize("kind", list(BAD_TOKEN_CODES))
def test_bad_token_upgrade_is_refused_with_a_401_denial_response(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware, kind: str
) -> None:
    refusal = denied(client, "/ws", bearer(bad_token(issuer, kind)))

    assert refusal.status_code == 401
    assert refusal.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert refusal.json()["code"] == BAD_TOKEN_CODES[kind]
    assert middleware.stats.websocket_refused == {BAD_TOKEN_CODES[kind]: 1}


@pytest.mark.parametrize("kind", list(BAD_TOKEN_CODES))
def test_bad_token_cookie_upgrade_with_same_origin_is_refused_with_401(
    client: TestClient, issuer: DevIssuer, kind: str
) -> None:
    refusal = denied(client, "/ws", cookie_headers(bad_token(issuer, kind)))

    assert refusal.status_code == 401
    assert refusal.json()["code"] == BAD_TOKEN_CODES[kind]


@pytest.mark.parametrize("name", ["access_token", "token", "ACCESS_TOKEN", "id_token", "jwt"])
def test_query_string_token_is_refused_even_with_a_valid_bearer(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware, name: str
) -> None:
    access = issuer.access_token("u1")

    refusal = denied(client, f"/ws?{name}={access}", bearer(access))

    assert refusal.status_code == 401
    assert refusal.headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert refusal.json()["code"] == "token_missing"
    assert middleware.stats.websocket_refused == {"query_token": 1}
    assert middleware.stats.websocket_authenticated == 0


def test_other_query_parameters_do_not_refuse_the_upgrade(
    client: TestClient, issuer: DevIssuer
) -> None:
    with client.websocket_connect(
        "/ws?room=lobby&tokens=3", headers=bearer(issuer.access_token("u1"))
    ) as websocket:
        assert websocket.receive_json()["user"] == "u1"


def refreshing_middleware(issuer: DevIssuer) -> tuple[JWTSessionMiddleware, InProcessRefresher]:
    """A middleware whose refresher reaches the DevIssuer's token endpoint in process."""
    config = ws_config(issuer, endpoints={"token": f"{issuer.issuer}/token"})
    refresher = InProcessRefresher.from_config(
        config,
        TokenVerifier.from_config(config),
        transport=httpx2.ASGITransport(app=issuer.app),
    )
    assert refresher is not None
    return middleware_for(config, refresher=refresher), refresher


def test_expired_access_with_refresh_cookie_is_refused_and_never_refreshed(
    issuer: DevIssuer,
) -> None:
    middleware, refresher = refreshing_middleware(issuer)
    login = issuer.login("u1", sid="sid-ws")
    access = issuer.access_token("u1", sid="sid-ws", iat=int(time.time()) - 600, ttl=60)
    cookie = cookie_header(access, **{COOKIE["refresh"]: login["refresh_token"]})
    token_requests = issuer.stats.token_requests

    with TestClient(middleware) as client:
        refusal = denied(client, "/ws", {"Cookie": cookie, "Origin": ORIGIN})

        assert refusal.status_code == 401
        assert refusal.json()["code"] == "token_expired"
        assert "set-cookie" not in refusal.headers
        assert refresher.stats.calls == 0
        assert issuer.stats.token_requests == token_requests
        assert middleware.stats.refreshed == 0

        # The same cookies on a page request do refresh: the refresher is wired.
        response = client.get("/", headers={"Cookie": cookie})
        assert response.json() == {"authenticated": True}
        assert refresher.stats.calls == 1
        assert issuer.stats.token_requests == token_requests + 1


def test_refresh_cookie_alone_passes_through_anonymous_and_is_never_refreshed(
    issuer: DevIssuer,
) -> None:
    middleware, refresher = refreshing_middleware(issuer)
    cookie = cookie_header(**{COOKIE["refresh"]: issuer.login("u1")["refresh_token"]})
    token_requests = issuer.stats.token_requests

    with (
        TestClient(middleware) as client,
        client.websocket_connect("/ws", headers={"Cookie": cookie, "Origin": ORIGIN}) as ws,
    ):
        message = ws.receive_json()

    assert message["authenticated"] is False
    assert refresher.stats.calls == 0
    assert issuer.stats.token_requests == token_requests
    assert middleware.stats.websocket_anonymous == 1


# -- refused upgrades: Origin -------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://testserver",
        "http://testserver:8080",
        "http://testserver.evil.example",
        "null",
    ],
)
def test_cookie_upgrade_from_another_origin_is_refused_with_403(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware, origin: str
) -> None:
    refusal = denied(client, "/ws", cookie_headers(issuer.access_token("u1"), origin=origin))

    assert refusal.status_code == 403
    assert "www-authenticate" not in refusal.headers
    assert refusal.json()["code"] == "csrf_rejected"
    assert middleware.stats.websocket_refused == {"origin": 1}


def test_cookie_upgrade_without_origin_is_refused_with_403(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware
) -> None:
    refusal = denied(client, "/ws", cookie_headers(issuer.access_token("u1"), origin=None))

    assert refusal.status_code == 403
    assert refusal.json()["code"] == "csrf_rejected"
    assert middleware.stats.websocket_refused == {"origin": 1}


def test_refresh_cookie_alone_without_origin_is_refused_with_403(
    client: TestClient,
) -> None:
    headers = {"Cookie": f"{COOKIE['refresh']}=opaque-refresh-token"}

    assert denied(client, "/ws", headers).status_code == 403


def test_cookie_upgrade_origin_check_ignores_case_and_a_trailing_slash(
    client: TestClient, issuer: DevIssuer
) -> None:
    headers = cookie_headers(issuer.access_token("u1"), origin="HTTP://TestServer/")

    with client.websocket_connect("/ws", headers=headers) as websocket:
        assert websocket.receive_json()["user"] == "u1"


def test_bearer_upgrade_from_another_origin_is_accepted(
    client: TestClient, issuer: DevIssuer
) -> None:
    headers = {**bearer(issuer.access_token("u1")), "Origin": "https://evil.example"}

    with client.websocket_connect("/ws", headers=headers) as websocket:
        assert websocket.receive_json()["user"] == "u1"


def test_allowed_origins_list_accepts_a_listed_origin(issuer: DevIssuer) -> None:
    allowed = ["https://app.example", "https://admin.example"]
    config = ws_config(issuer, websocket={"allowed_origins": allowed})
    headers = cookie_headers(issuer.access_token("u1"), origin="https://admin.example")

    with (
        TestClient(middleware_for(config)) as client,
        client.websocket_connect("/ws", headers=headers) as websocket,
    ):
        assert websocket.receive_json()["user"] == "u1"


def test_allowed_origins_list_refuses_the_same_origin_when_not_listed(
    issuer: DevIssuer,
) -> None:
    config = ws_config(issuer, websocket={"allowed_origins": ["https://app.example"]})
    middleware = middleware_for(config)

    with TestClient(middleware) as client:
        refusal = denied(client, "/ws", cookie_headers(issuer.access_token("u1")))

    assert refusal.status_code == 403
    assert middleware.stats.websocket_refused == {"origin": 1}


# -- stats ---------------------------------------------------------------------------


def test_websocket_stats_count_authenticated_anonymous_and_refusals_by_reason(
    client: TestClient, issuer: DevIssuer, middleware: JWTSessionMiddleware
) -> None:
    access = issuer.access_token("u1")
    with client.websocket_connect("/ws", headers=cookie_headers(access)) as websocket:
        websocket.receive_json()
    with client.websocket_connect("/ws", headers=bearer(access)) as websocket:
        websocket.receive_json()
    with client.websocket_connect("/ws") as websocket:
        websocket.receive_json()
    denied(client, "/ws", cookie_headers(access, origin="https://evil.example"))
    denied(client, f"/ws?access_token={access}", {})
    denied(client, "/ws", bearer(expired_token(issuer)))
    denied(client, "/ws", bearer(expired_token(issuer)))

    snapshot = middleware.stats.snapshot()
    assert snapshot["websocket_authenticated"] == 2
    assert snapshot["websocket_anonymous"] == 1
    assert snapshot["websocket_refused"] == {"origin": 1, "query_token": 1, "token_expired": 2}
    # Upgrades are not counted as HTTP requests.
    assert (snapshot["authenticated"], snapshot["anonymous"], snapshot["rejected"]) == (0, 0, {})


# -- a server without the denial extension -------------------------------------------


class AsgiWebSocket:
    """Drive an ASGI app with one hand-built websocket scope and record what it sends."""

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        path: str = "/ws",
        query: str = "",
        denial_extension: bool = False,
    ) -> None:
        self.scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("testserver", 80),
            "client": ("203.0.113.7", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"testserver")]
            + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "subprotocols": [],
            "state": {},
        }
        if denial_extension:
            self.scope["extensions"] = {"websocket.http.response": {}}
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        await self.outbox.put(message)

    def start(self, app: ASGIApp) -> asyncio.Task[None]:
        async def run() -> None:
            await app(self.scope, self.inbox.get, self._send)

        return asyncio.create_task(run())

    async def next_sent(self) -> Message:
        return await asyncio.wait_for(self.outbox.get(), timeout=5)


class CountingApp:
    """An inner app that records whether it was ever reached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


def refusal_headers(issuer: DevIssuer, refusal: str) -> tuple[dict[str, str], str]:
    """Request headers and query string for each kind of refused upgrade."""
    if refusal == "token_expired":
        return bearer(expired_token(issuer)), ""
    if refusal == "origin":
        return cookie_headers(issuer.access_token("u1"), origin="https://evil.example"), ""
    assert refusal == "query_token"
    return {}, f"access_token={issuer.access_token('u1')}"


@pytest.mark.parametrize("refusal", ["token_expired", "origin", "query_token"])
async def test_refused_upgrade_is_closed_before_accept_without_the_denial_extension(
    issuer: DevIssuer, config: AppConfig, refusal: str
) -> None:
    inner = CountingApp(Starlette(routes=[WebSocketRoute("/ws", ws_session)]))
    middleware = JWTSessionMiddleware(inner, config)
    headers, query = refusal_headers(issuer, refusal)
    socket = AsgiWebSocket(headers, query=query)

    await asyncio.wait_for(socket.start(middleware), timeout=5)

    assert socket.sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.calls == 0
    assert middleware.stats.websocket_refused == {refusal: 1}


async def test_refused_upgrade_sends_the_denial_response_when_the_extension_is_offered(
    issuer: DevIssuer, config: AppConfig
) -> None:
    middleware = middleware_for(config)
    socket = AsgiWebSocket(bearer(expired_token(issuer)), denial_extension=True)

    await asyncio.wait_for(socket.start(middleware), timeout=5)

    types = [message["type"] for message in socket.sent]
    assert types == ["websocket.http.response.start", "websocket.http.response.body"]
    assert socket.sent[0]["status"] == 401


# -- CloseAtExpiry -------------------------------------------------------------------


def expiring(
    func: Callable[[WebSocket], Awaitable[None]] = ws_echo,
    *,
    now: Callable[[], float] = time.time,
    **options: Any,
) -> CloseAtExpiry:
    return CloseAtExpiry.endpoint(func, now=now, **options)


def test_close_at_expiry_closes_an_already_expired_session_at_once_with_4401(
    issuer: DevIssuer, config: AppConfig
) -> None:
    middleware = middleware_for(config, expiring(now=lambda: AFTER_EXPIRY))

    with (
        TestClient(middleware) as client,
        client.websocket_connect("/ws", headers=bearer(issuer.access_token("u1"))) as websocket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        websocket.receive_text()

    assert closed.value.code == 4401
    assert closed.value.reason == "expired"


def test_close_at_expiry_honours_the_configured_close_code(issuer: DevIssuer) -> None:
    config = ws_config(issuer, websocket={"close_code": 4499})
    endpoint = expiring(now=lambda: AFTER_EXPIRY, close_code=config.websocket.close_code)

    with (
        TestClient(middleware_for(config, endpoint)) as client,
        client.websocket_connect("/ws", headers=bearer(issuer.access_token("u1"))) as websocket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        websocket.receive_text()

    assert closed.value.code == 4499


def test_close_at_expiry_closes_a_token_accepted_within_the_leeway_at_once(
    issuer: DevIssuer, config: AppConfig
) -> None:
    # auth.leeway (30 s) lets the handshake through; the session is still over.
    access = issuer.access_token("u1", iat=int(time.time()) - 70, ttl=60)

    with (
        TestClient(middleware_for(config, expiring())) as client,
        client.websocket_connect("/ws", headers=bearer(access)) as websocket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        websocket.receive_text()

    assert closed.value.code == 4401


def test_close_at_expiry_leaves_anonymous_sockets_open(config: AppConfig) -> None:
    endpoint = expiring(now=lambda: AFTER_EXPIRY)

    with (
        TestClient(middleware_for(config, endpoint)) as client,
        client.websocket_connect("/ws") as websocket,
    ):
        websocket.send_text("ping")
        assert websocket.receive_text() == "ping"


class ControlledSleep:
    """An injected ``sleep`` that returns only when the test says time has passed."""

    def __init__(self) -> None:
        self.passed = asyncio.Event()
        self.started = asyncio.Event()
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.started.set()
        await self.passed.wait()


async def test_close_at_expiry_keeps_the_socket_open_until_expiry_then_closes_with_4401(
    issuer: DevIssuer, config: AppConfig
) -> None:
    access = issuer.access_token("u1", ttl=300)
    session = TokenVerifier.from_config(config).session(access, None)
    now = session.expires_at - 120
    sleep = ControlledSleep()
    middleware = middleware_for(config, expiring(now=lambda: now, sleep=sleep))
    socket = AsgiWebSocket(bearer(access))
    task = socket.start(middleware)

    assert (await socket.next_sent())["type"] == "websocket.accept"
    await asyncio.wait_for(sleep.started.wait(), timeout=5)
    assert sleep.delays == [pytest.approx(120)]
    # Before expiry the socket works both ways.
    for text in ("ping", "pong"):
        await socket.inbox.put({"type": "websocket.receive", "text": text})
        assert await socket.next_sent() == {"type": "websocket.send", "text": text}
    assert not task.done()

    sleep.passed.set()

    assert await socket.next_sent() == {
        "type": "websocket.close",
        "code": 4401,
        "reason": "expired",
    }
    await asyncio.wait_for(task, timeout=5)
    # The app saw a disconnect and stopped; nothing was sent after the close.
    assert socket.sent[-1]["type"] == "websocket.close"


class LingeringApp:
    """Ends the socket (its own close, or the client's disconnect), then keeps running
    until the test releases it, as an app doing cleanup after the socket would."""

    def __init__(self, *, close_itself: bool) -> None:
        self.close_itself = close_itself
        self.socket_over = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, websocket: WebSocket) -> None:
        await websocket.accept()
        if self.close_itself:
            await websocket.close()
        else:
            with pytest.raises(WebSocketDisconnect):
                await websocket.receive_text()
        self.socket_over.set()
        await self.release.wait()


@pytest.mark.parametrize("close_itself", [True, False], ids=["app_closed", "client_left"])
async def test_close_at_expiry_sends_nothing_once_the_socket_has_ended(
    issuer: DevIssuer, config: AppConfig, close_itself: bool
) -> None:
    access = issuer.access_token("u1", ttl=300)
    expires_at = TokenVerifier.from_config(config).session(access, None).expires_at
    sleep = ControlledSleep()
    app = LingeringApp(close_itself=close_itself)
    middleware = middleware_for(config, expiring(app, now=lambda: expires_at - 60, sleep=sleep))
    socket = AsgiWebSocket(bearer(access))
    task = socket.start(middleware)
    assert (await socket.next_sent())["type"] == "websocket.accept"
    if not close_itself:
        await socket.inbox.put({"type": "websocket.disconnect", "code": 1001})
    await asyncio.wait_for(app.socket_over.wait(), timeout=5)

    # The session expires while the app is still cleaning up, then the app returns.
    sleep.passed.set()
    app.release.set()
    await asyncio.wait_for(task, timeout=5)

    expected = ["websocket.accept", "websocket.close"] if close_itself else ["websocket.accept"]
    assert [message["type"] for message in socket.sent] == expected
