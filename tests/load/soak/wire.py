"""Token families and the wire: who holds which refresh token, and every app -> issuer call.

A :class:`Family` is one login: its refresh-token family and the cookie jar a
browser would keep for it, updated from ``Set-Cookie``. :class:`CountingTransport`
is the app's ``issuer_transport``: real HTTP to the DevIssuer, with every
``/token`` call recorded in the :class:`Ledger` (which family the refresh token
belongs to, the answer, the new refresh token), so refreshes are counted on the
wire rather than trusted from either side's counters.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import httpx2

from verifier.refresh import token_key

__all__ = ["ACCESS", "ID", "REFRESH", "CountingTransport", "Family", "Ledger", "WireCall"]

ACCESS, ID, REFRESH = "jwtedge_access", "jwtedge_id", "jwtedge_refresh"


@dataclass
class Family:
    """One login: its refresh-token family and the browser's cookie jar for it."""

    sub: str
    idle: bool
    jar: dict[str, str]
    #: Digests of every refresh token this jar has held.
    seen: set[str] = field(default_factory=set)
    rotations: int = 0
    #: The issuer refused one of its refresh tokens (invalid_grant): sign in again.
    revoked: bool = False
    #: time.time() after which an idle family's access token has expired.
    ready_at: float = 0.0
    in_use: bool = False
    created: float = field(default_factory=time.monotonic)

    def cookie_header(self, *kinds: str) -> str:
        names = kinds or tuple(self.jar)
        return "; ".join(f"{name}={self.jar[name]}" for name in names if name in self.jar)

    def apply(self, set_cookies: Iterable[str]) -> bool:
        """Apply ``Set-Cookie`` values as a browser would; True when the refresh token rotated."""
        rotated = False
        for header in set_cookies:
            pair, *attributes = header.split(";")
            name, _, value = pair.strip().partition("=")
            expired = any(attribute.strip().lower() == "max-age=0" for attribute in attributes)
            if expired or not value:
                self.jar.pop(name, None)
                continue
            self.jar[name] = value
            if name == REFRESH:
                digest = token_key(value)
                if digest not in self.seen:
                    self.seen.add(digest)
                    self.rotations += 1
                    rotated = True
        return rotated

    def access_exp(self) -> float:
        token = self.jar.get(ACCESS)
        if token is None:
            return 0.0
        payload = token.split(".")[1]
        return float(
            json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        )


@dataclass
class WireCall:
    """One call from the app to the issuer, as its transport saw it."""

    path: str
    started: float
    ended: float = 0.0
    family: Family | None = None
    old: str | None = None
    new: str | None = None
    #: ``200``, ``400:invalid_grant``, ``500``, ``cancelled`` (the app's timeout), ``error:...``
    outcome: str = ""


class Ledger:
    """Who owns which refresh token (by digest), and every wire call."""

    def __init__(self) -> None:
        self.owner: dict[str, Family] = {}
        self.calls: list[WireCall] = []

    def register(self, family: Family) -> None:
        digest = token_key(family.jar[REFRESH])
        family.seen.add(digest)
        self.owner[digest] = family

    def in_flight(self) -> int:
        """Calls to the issuer not answered (or given up on) yet."""
        return sum(1 for call in list(self.calls) if not call.ended)


class CountingTransport(httpx2.AsyncBaseTransport):
    """The app's ``issuer_transport``: real HTTP, with every /token call recorded."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._inner: httpx2.AsyncHTTPTransport | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._inner is None:
            # Built on the server's loop, where the app's clients use it.
            self._inner = httpx2.AsyncHTTPTransport()
        call = WireCall(path=request.url.path, started=time.monotonic())
        if call.path.endswith("/token"):
            form = dict(parse_qsl((await request.aread()).decode()))
            if "refresh_token" in form:
                call.old = token_key(form["refresh_token"])
                call.family = self.ledger.owner.get(call.old)
        self.ledger.calls.append(call)
        try:
            response = await self._inner.handle_async_request(request)
            content = await response.aread()
        except BaseException as exc:  # the app's asyncio.timeout cancels us: record, re-raise
            call.ended = time.monotonic()
            cancelled = isinstance(exc, asyncio.CancelledError)
            call.outcome = "cancelled" if cancelled else f"error:{type(exc).__name__}"
            raise
        call.ended = time.monotonic()
        call.outcome = str(response.status_code)
        if call.old is not None:
            self._account(call, response.status_code, content)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            content=content,
            extensions=response.extensions,
            request=request,
        )

    def _account(self, call: WireCall, status: int, content: bytes) -> None:
        try:
            body = json.loads(content)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if status == 200 and isinstance(body.get("refresh_token"), str):
            call.new = token_key(body["refresh_token"])
            if call.family is not None:
                self.ledger.owner[call.new] = call.family
        elif status == 400 and body.get("error") == "invalid_grant":
            call.outcome = "400:invalid_grant"
            if call.family is not None:
                call.family.revoked = True

    async def aclose(self) -> None:
        # The app's refresher, login and key clients all share this transport.
        if self._inner is not None and not self._closed:
            self._closed = True
            await self._inner.aclose()
