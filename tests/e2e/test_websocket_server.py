"""WebSocket upgrades end to end: a real uvicorn on 127.0.0.1, a real `websockets` client.

uvicorn offers the ``websocket.http.response`` extension, so refused
handshakes arrive as real HTTP answers. The server is plain ``ws`` on a
loopback host, so the token cookies carry their plain names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import make_config
from tests.e2e.servers import serve_app
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.testing import DevIssuer
from verifier.websocket import CloseAtExpiry

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


@contextmanager
def running(app: ASGIApp) -> Iterator[int]:
    """Serve ``app`` as ``jwtedge serve`` does, on a free port of 127.0.0.1; yield the port."""
    with serve_app(app, host=HOST) as url:
        yield int(url.rsplit(":", 1)[1])


async def send_user_id(websocket: WebSocket) -> None:
    """Accept, send the user id, then wait until the socket ends."""
    await websocket.accept()
    session = get_session(websocket)
    await websocket.send_text(session.user.id if session is not None else "anonymous")
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass


@pytest.fixture(scope="module")
def port(issuer: DevIssuer) -> Iterator[int]:
    config = make_config(issuer)
    endpoint = CloseAtExpiry.endpoint(send_user_id, close_code=config.websocket.close_code)
    inner = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    with running(JWTSessionMiddleware(inner, config=config)) as bound:
        yield bound


def open_socket(port: int, *, cookie: str, origin: str | None = None) -> ClientConnection:
    headers = {"Cookie": cookie}
    if origin is not None:
        headers["Origin"] = origin
    return connect(
        f"ws://{HOST}:{port}/ws",
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
        close_timeout=5,
        legacy=True,
    )


def refused_status(port: int, *, cookie: str, origin: str | None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(port, cookie=cookie, origin=origin).close()
    return refused.value.response.status_code


def test_cookie_upgrade_from_the_same_origin_is_accepted_and_gets_the_user_id(
    port: int, issuer: DevIssuer
) -> None:
    cookie = f"jwtedge_access={issuer.access_token('u1')}; jwtedge_id={issuer.id_token('u1')}"

    with open_socket(port, cookie=cookie, origin=f"http://{HOST}:{port}") as websocket:
        assert websocket.recv(timeout=10) == "u1"


def test_expired_cookie_upgrade_gets_http_401_on_the_handshake(
    port: int, issuer: DevIssuer
) -> None:
    access = issuer.access_token("u1", iat=int(time.time()) - 600, ttl=60)

    with pytest.raises(InvalidStatus) as refused:
        open_socket(port, cookie=f"jwtedge_access={access}", origin=f"http://{HOST}:{port}")

    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_cross_site_cookie_upgrade_gets_http_403_on_the_handshake(
    port: int, issuer: DevIssuer
) -> None:
    cookie = f"jwtedge_access={issuer.access_token('u1')}"

    assert refused_status(port, cookie=cookie, origin="https://evil.example") == 403


def test_accepted_socket_is_closed_with_4401_when_the_token_expires(
    port: int, issuer: DevIssuer
) -> None:
    cookie = f"jwtedge_access={issuer.access_token('u1', ttl=2)}"

    with open_socket(port, cookie=cookie, origin=f"http://{HOST}:{port}") as websocket:
        assert websocket.recv(timeout=10) == "u1"
        # A real wait of about 2 s: the app's CloseAtExpiry runs on the wall clock
        # (recv's 10 s is only the deadline for a close that never comes).
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason == "expired"
