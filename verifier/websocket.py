"""WebSocket upgrades: claims-only authentication, Origin check, close at expiry.

An upgrade is authenticated from the token it presents and nothing else: it
is never refreshed (a 101 response cannot carry ``Set-Cookie``), an expired or
bad token is refused with an HTTP 401 denial response where the server offers
the ``websocket.http.response`` extension (uvicorn does), else by closing
before accept (clients see 403). A cookie-authenticated upgrade must carry an
``Origin`` in ``websocket.allowed_origins`` (same origin when empty): browsers
always send it, and without the check any site could open a socket with the
user's cookies (cross-site WebSocket hijacking). Bearer upgrades come from
non-browser clients and need no Origin. Tokens in the query string are
refused: they end up in access logs.

:class:`CloseAtExpiry` is the opt-in wrapper that closes an accepted socket
with ``websocket.close_code`` (4401) when the session expires, so the client
refreshes over HTTP and reconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.routing import websocket_session
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from .clock import wall_clock
from .errors import CSRFRejected, TokenError, TokenMissing, VerifierError
from .request_rules import cross_origin_upgrade, origin_allowed
from .session import Session

__all__ = ["CloseAtExpiry", "deny", "query_has_token", "websocket_origin_allowed"]

_QUERY_TOKEN_PARAMS = frozenset({"access_token", "id_token", "token", "jwt"})


def query_has_token(scope: Scope) -> bool:
    """Whether the query string tries to carry a token (RFC 6750 §2.3)."""
    query = scope.get("query_string", b"").decode("latin-1")
    return any(name.lower() in _QUERY_TOKEN_PARAMS for name, _ in parse_qsl(query))


def websocket_origin_allowed(origin: str | None, own_origin: str, allowed: list[str]) -> bool:
    """Exact match against the allowlist, or the request's own origin when empty.

    The rule itself lives in :func:`verifier.request_rules.origin_allowed`,
    shared with the forward-auth endpoint.
    """
    return origin_allowed(origin, own_origin, allowed)


async def deny(scope: Scope, receive: Receive, send: Send, exc: VerifierError) -> None:
    """Refuse an upgrade: an HTTP denial response if possible, else close."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = {"Cache-Control": "no-store"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
        response = JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)
        await response(scope, receive, send)
    else:
        # Close before accept: the server answers 403.
        await send({"type": "websocket.close", "code": 1008})


def refusal_for_query_token() -> TokenError:
    return TokenMissing("tokens in the query string are not accepted")


def refusal_for_origin() -> CSRFRejected:
    return cross_origin_upgrade()


class CloseAtExpiry:
    """Close an accepted, authenticated socket when its session expires.

    Wrap a WebSocket endpoint or app: ``CloseAtExpiry(app, close_code=4401)``.
    ``now`` and ``sleep`` are injectable so tests need not wait. After the
    close, the app's ``receive`` yields ``websocket.disconnect`` and its
    further sends are dropped.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        close_code: int = 4401,
        now: Callable[[], float] = wall_clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.app = app
        self.close_code = close_code
        self.now = now
        self.sleep = sleep

    @classmethod
    def endpoint(
        cls, func: Callable[[WebSocket], Awaitable[None]], **options: Any
    ) -> CloseAtExpiry:
        """Wrap a ``WebSocketRoute`` endpoint function: ``async def ws(websocket)``."""
        return cls(websocket_session(func), **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("auth")
        if scope["type"] != "websocket" or not isinstance(session, Session):
            await self.app(scope, receive, send)
            return

        expired = asyncio.Event()
        closing = False
        timer: asyncio.Task[None] | None = None

        async def close_when_expired() -> None:
            nonlocal closing
            delay = session.expires_at - self.now()
            if delay > 0:
                await self.sleep(delay)
            closing = True
            try:
                await send(
                    {"type": "websocket.close", "code": self.close_code, "reason": "expired"}
                )
            finally:
                expired.set()

        def stop_timer() -> None:
            # The socket ended another way: the expiry close must not follow it.
            if timer is not None and not closing:
                timer.cancel()

        async def guarded_send(message: Message) -> None:
            nonlocal timer
            if closing:
                return
            if message["type"] == "websocket.close":
                stop_timer()
            await send(message)
            if message["type"] == "websocket.accept" and timer is None:
                timer = asyncio.create_task(close_when_expired())

        async def guarded_receive() -> Message:
            disconnect = {"type": "websocket.disconnect", "code": self.close_code}
            if expired.is_set():
                return disconnect
            incoming = asyncio.ensure_future(receive())
            expiry = asyncio.ensure_future(expired.wait())
            done, _ = await asyncio.wait({incoming, expiry}, return_when=asyncio.FIRST_COMPLETED)
            if incoming in done:
                expiry.cancel()
                message = incoming.result()
                if message["type"] == "websocket.disconnect":
                    stop_timer()
                return message
            incoming.cancel()
            return disconnect

        try:
            await self.app(scope, guarded_receive, guarded_send)
        finally:
            if timer is not None:
                if closing:
                    # The close is under way: let it reach the client.
                    await asyncio.shield(timer)
                else:
                    timer.cancel()
