"""Load and soak driver: the reference app under real uvicorn, a real DevIssuer that flaps.

Everything runs in this process on 127.0.0.1: the DevIssuer (``DevIssuer.serve``)
and the app (``create_app`` through :func:`tests.e2e.servers.serve_app`) each
on their own uvicorn thread, and ``concurrency`` client workers on the main
thread's event loop sharing one ``httpx2.AsyncClient`` pool. Workers mix

- page and API loads for ``users`` token families (one ``login()`` each, its own
  refresh-token family and cookie jar, updated from ``Set-Cookie`` as a browser
  does), the issuer's ``access_ttl`` short and the app's ``refresh.skew`` close
  to it, so refreshes happen all the time; some families are left alone until
  their access token has expired (the expired-then-refresh path);
- refused credentials: garbage cookies and Bearer headers, flipped signatures,
  unknown kids, expired tokens without a refresh cookie, forged refresh cookies;
- anonymous requests, health probes;
- WebSocket upgrades (the ``websockets`` client) with fresh cookies (some held
  open until the app closes them with 4401 at expiry) and with bad ones
  (garbage, cross-site Origin, no cookie, a token in the query string).

The run has two phases. **Steady** (the first ``steady_fraction``): the issuer
is up; every refresh must be exactly one issuer call per rotation, and the
issuer must see no reuse and revoke no family. **Flapping**: the issuer cycles
up (``flap_up`` s) and down (``flap_down`` s), down being in turn ``slow`` (the
issuer rotates, then answers after the app's ``refresh.timeout``: the answer is
lost and the app's retry replays a spent token), ``timeout`` and ``500``
(``fail_mode``; it never rotates). Reuse and revoked families there are what
DESIGN's Refresh section predicts: they are reported, not asserted.

Refresh accounting is on the wire: the app's ``issuer_transport`` is a
counting wrapper over a real ``httpx2.AsyncHTTPTransport`` that maps every
refresh token to its family (login tokens, then each 200 answer's new token).

Resources: file descriptors (``/proc/self/fd``) before the servers start and
after they stop, and idle before/after the load; VmRSS before/after the load;
asyncio tasks on the app server's loop before/after; log records of level
WARNING and above from the server threads.

Run ``python -m tests.load.soak --duration 60 --concurrency 200``; exit status
1 when an invariant fails. :func:`run_soak` returns the summary dict.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import logging
import os
import random
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx2
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from tests.e2e.servers import app_config, serve_app
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.refresh import token_key
from verifier.testing import DevIssuer

__all__ = ["LONG", "SHORT", "Profile", "failures", "format_table", "profile_from_env", "run_soak"]

ACCESS, ID, REFRESH = "jwtedge_access", "jwtedge_id", "jwtedge_refresh"
#: Down states of the flapping phase, in order (see the module doc).
DOWN_MODES = ("slow", "timeout", "500")
#: File descriptors a run may leave open after its servers stopped.
FD_TOLERANCE = 8
#: Growth of VmRSS over the load the checks accept.
RSS_BOUND_MB = 150.0
#: Server log lines that are not jwtedge's doing, and the upstream report for each.
#: uvicorn's websockets-sansio protocol (``ws="auto"`` when ``websockets`` is
#: installed) never marks the handshake complete after a ``websocket.http.response``
#: denial, so every refused upgrade logs this at ERROR although the client got
#: its 401/403 (wsproto does not): https://github.com/Kludex/uvicorn/pull/3138
KNOWN_UPSTREAM = {
    "ASGI callable returned without completing handshake.": "Kludex/uvicorn#3138",
}


@dataclass(frozen=True)
class Profile:
    """One soak run's shape (times in seconds)."""

    duration: float = 60.0
    concurrency: int = 200
    users: int = 50
    #: Of ``users``: families only visited once their access token has expired.
    idle_users: int = 10
    access_ttl: int = 5
    skew: float = 2.0
    leeway: float = 0.0
    refresh_timeout: float = 2.0
    grace: float = 10.0
    steady_fraction: float = 0.5
    flap_up: float = 3.0
    flap_down: float = 1.0
    #: How long ``timeout`` and ``slow`` hold a /token answer (past ``refresh_timeout``).
    fail_delay: float = 3.0
    #: The issuer's reuse interval (Auth0's, Okta's grace): 0 revokes on any replay.
    reuse_grace: float = 0.0
    seed: int = 1
    #: Client operations at most (a count bound beside the time bound); 0: 2000 per second.
    max_operations: int = 0
    #: How long the end of the run waits for connections and tasks to wind down.
    settle: float = 8.0

    @property
    def operation_cap(self) -> int:
        return self.max_operations or int(self.duration * 2000) + 1000


#: The CI profile: 12 s of load (6 s steady, 6 s flapping).
SHORT = Profile(duration=12.0, concurrency=100, flap_up=1.0, flap_down=0.6)
#: ``JWTEDGE_SOAK=long``: a minute at 200 connections.
LONG = Profile(duration=60.0, concurrency=200)


def profile_from_env() -> Profile:
    """:data:`LONG` when ``JWTEDGE_SOAK=long``, else :data:`SHORT`."""
    return LONG if os.environ.get("JWTEDGE_SOAK", "").lower() == "long" else SHORT


# -- wire accounting: every app -> issuer call ---------------------------------------------


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


# -- the server side: its loop, its logs, this process's resources --------------------------


class ServerProbe:
    """Pass-through ASGI wrapper that remembers the server's event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def task_count(self) -> int:
        """Tasks alive on the server's loop (the probe's own excluded)."""
        assert self.loop is not None, "the server has not started"

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=5)


class LogCapture(logging.Handler):
    """WARNING and above, from every logger and thread (uvicorn's error log included).

    Attach it to the root logger and to ``uvicorn`` (whose default logging
    config does not propagate) once the servers have configured logging.
    Messages in :data:`KNOWN_UPSTREAM` are counted apart, by message.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.known: Counter[str] = Counter()
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_soak_seen", False):  # reached through two loggers
            return
        record._soak_seen = True
        side = "client" if record.threadName == threading.main_thread().name else "server"
        message = record.getMessage()
        if side == "server" and message in KNOWN_UPSTREAM:
            self.known[message] += 1
            return
        self.counts[(side, record.levelname)] += 1
        if len(self.samples) < 20:
            self.samples.append(
                f"[{record.threadName}] {record.name} {record.levelname}: {message}"
            )

    @contextmanager
    def attached(self, *names: str) -> Iterator[None]:
        loggers = [logging.getLogger(name) for name in names]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeHandler(self)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def memory_mb() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process, in MiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


# -- the client side ---------------------------------------------------------------------------

WEIGHTS = {
    "page": 30,
    "api": 15,
    "expired": 5,
    "garbage": 8,
    "bad_signature": 5,
    "unknown_kid": 2,
    "expired_no_refresh": 3,
    "forged_refresh": 1,
    "anonymous": 12,
    "ws_valid": 10,
    "ws_hold": 1,
    "ws_bad": 8,
}


class Load:
    """The workers, the flapping issuer and the client-side counters of one run."""

    def __init__(self, profile: Profile, issuer: DevIssuer, ledger: Ledger, base_url: str) -> None:
        self.profile = profile
        self.issuer = issuer
        self.ledger = ledger
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://", 1) + "/ws"
        self.families: list[Family] = []
        self.retired: list[Family] = []
        self.relogins: Counter[str] = Counter()
        self.operations = 0
        self.status: Counter[int] = Counter()
        self.by_action: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.client_errors: Counter[str] = Counter()
        self.denied: Counter[str] = Counter()
        self.ws: Counter[str] = Counter()
        self.expired_refreshed = 0
        self.latencies: list[float] = []
        self.flaps: Counter[str] = Counter()
        self.start = self.boundary = self.deadline = 0.0
        self.boundary_stats: dict[str, int] = {}
        self.client: httpx2.AsyncClient | None = None
        self._bad_tokens: dict[str, list[str]] = {}

    # -- set-up ----------------------------------------------------------------

    def sign_in(self, sub: str, *, idle: bool, stagger: random.Random | None = None) -> Family:
        issuer = self.issuer
        sid = secrets.token_hex(8)
        tokens = issuer.login(sub, sid=sid)
        access = tokens["access_token"]
        if stagger is not None:
            # Logins made in the same second would refresh in lockstep for the whole
            # run: start each family at a random point of its access token's life.
            profile = issuer.user(sub)
            access = issuer.access_token(
                sub,
                organizations=profile["organizations"],
                projects=profile["projects"],
                scope=tokens["scope"],
                sid=sid,
                ttl=issuer.access_ttl,
                iat=int(time.time()) - stagger.randrange(issuer.access_ttl),
                extra={"client_id": issuer.client_id},
            )
        jar = {ACCESS: access, ID: tokens["id_token"], REFRESH: tokens["refresh_token"]}
        family = Family(sub=sub, idle=idle, jar=jar)
        self.ledger.register(family)
        family.ready_at = family.access_exp() + 0.2
        return family

    def prepare(self) -> None:
        profile, issuer = self.profile, self.issuer
        rng = random.Random(profile.seed)
        for index in range(profile.users):
            sub = f"soak-{index:03d}"
            issuer.add_user(
                sub,
                organizations=[
                    {
                        "id": f"org_{index}",
                        "slug": f"org-{index}",
                        "name": f"Org {index}",
                        "role": "member",
                    }
                ],
            )
            self.families.append(self.sign_in(sub, idle=index < profile.idle_users, stagger=rng))
        now = int(time.time())
        rs256 = issuer.kids("RS256")[0]
        self._bad_tokens = {
            "bad_signature": [_flip_signature(issuer.access_token("soak-000")) for _ in range(8)],
            "unknown_kid": [
                issuer.sign(
                    {
                        "iss": issuer.issuer,
                        "sub": "soak-000",
                        "aud": "api",
                        "iat": now,
                        "exp": now + 3600,
                    },
                    {"alg": "RS256", "kid": f"soak-unknown-{n}", "typ": "at+jwt"},
                    kid=rs256,
                )
                for n in range(4)
            ],
            "expired": [issuer.access_token("soak-000", iat=now - 600, ttl=60) for _ in range(4)],
        }

    def phase(self) -> str:
        return "steady" if time.monotonic() < self.boundary else "flapping"

    # -- one HTTP request / one upgrade ------------------------------------------

    async def get(
        self,
        action: str,
        path: str,
        allowed: Iterable[int],
        *,
        cookie: str = "",
        headers: dict[str, str] | None = None,
        family: Family | None = None,
    ) -> httpx2.Response | None:
        assert self.client is not None
        sent = dict(headers or {})
        if cookie:
            sent["Cookie"] = cookie
        began = time.monotonic()
        try:
            response = await self.client.get(self.base_url + path, headers=sent)
        except httpx2.HTTPError as exc:
            self.client_errors[f"{action}: {type(exc).__name__}"] += 1
            return None
        self.latencies.append(time.monotonic() - began)
        self.status[response.status_code] += 1
        self.by_action[action] += 1
        if response.status_code not in set(allowed):
            self.unexpected[f"{action} {path} -> {response.status_code}"] += 1
        if family is not None:
            family.apply(response.headers.get_list("set-cookie"))
        return response

    async def upgrade(
        self,
        action: str,
        *,
        cookie: str = "",
        origin: str | None = None,
        query: str = "",
        hold_until: float | None = None,
    ) -> tuple[str, int | None]:
        """Open /ws; ``("accepted", close code when held)`` or ``("refused", HTTP status)``."""
        headers = {"Cookie": cookie} if cookie else {}
        self.by_action[action] += 1
        try:
            async with connect(
                self.ws_url + query,
                origin=Origin(origin) if origin else None,
                additional_headers=headers,
                proxy=None,
                open_timeout=10,
                close_timeout=5,
                ping_interval=None,
                compression=None,
            ) as websocket:
                self.status[101] += 1
                first = json.loads(await asyncio.wait_for(websocket.recv(), 10))
                if first.get("type") != "session":
                    self.unexpected[f"{action}: first message {first.get('type')!r}"] += 1
                if hold_until is None:
                    return "accepted", None
                try:
                    await asyncio.wait_for(websocket.recv(), max(0.1, hold_until - time.time()))
                except ConnectionClosed as closed:
                    return "accepted", closed.rcvd.code if closed.rcvd else None
                except TimeoutError:
                    return "accepted", None
                return "accepted", None
        except InvalidStatus as refused:
            status = refused.response.status_code
            self.status[status] += 1
            return "refused", status
        except (InvalidHandshake, ConnectionClosed, OSError, TimeoutError) as exc:
            self.client_errors[f"{action}: {type(exc).__name__}"] += 1
            return "error", None

    # -- actions -----------------------------------------------------------------

    def busy_family(self, rng: random.Random) -> Family:
        index = rng.randrange(self.profile.idle_users, len(self.families))
        return self.fresh(index)

    def fresh(self, index: int) -> Family:
        """The family in slot ``index``, signed in again if the issuer revoked it."""
        family = self.families[index]
        if family.revoked or REFRESH not in family.jar:
            self.relogins[self.phase()] += 1
            self.retired.append(family)
            family = self.families[index] = self.sign_in(family.sub, idle=family.idle)
        return family

    def note_denied(self, action: str, authenticated: bool) -> None:
        if not authenticated:
            self.denied[f"{self.phase()} {action}"] += 1

    async def act_page(self, rng: random.Random) -> None:
        family = self.busy_family(rng)
        page = await self.get("page", "/", {200}, cookie=family.cookie_header(), family=family)
        if page is not None:
            self.note_denied("page", "Signed in as" in page.text)

    async def act_api(self, rng: random.Random) -> None:
        family = self.busy_family(rng)
        api = await self.get(
            "api", "/api/session", {200, 401}, cookie=family.cookie_header(), family=family
        )
        if api is not None:
            self.note_denied("api", api.status_code == 200)

    async def act_expired(self, rng: random.Random) -> None:
        now = time.time()
        for index in range(self.profile.idle_users):
            family = self.families[index]
            if not family.in_use and family.ready_at <= now:
                break
        else:
            await self.act_page(rng)  # every idle family is still fresh
            return
        family.in_use = True
        try:
            family = self.fresh(index)
            family.in_use = True
            rotations = family.rotations
            api = await self.get(
                "expired", "/api/session", {200, 401}, cookie=family.cookie_header(), family=family
            )
            if api is not None:
                self.note_denied("expired", api.status_code == 200)
                self.expired_refreshed += family.rotations > rotations
            family.ready_at = family.access_exp() + rng.uniform(0.1, 1.0)
        finally:
            family.in_use = False

    async def act_garbage(self, rng: random.Random) -> None:
        junk = ".".join(
            secrets.token_urlsafe(rng.randint(4, 60)) for _ in range(rng.choice((1, 3)))
        )
        choice = rng.randrange(3)
        if choice == 0:
            await self.get("garbage", "/", {200}, cookie=f"{ACCESS}={junk}; {ID}={junk}")
        elif choice == 1:
            await self.get("garbage", "/api/session", {401}, cookie=f"{ACCESS}={junk}")
        else:
            await self.get("garbage", "/", {401}, headers={"Authorization": f"Bearer {junk}"})

    async def act_refused_token(self, action: str, rng: random.Random) -> None:
        token = rng.choice(
            self._bad_tokens["expired" if action == "expired_no_refresh" else action]
        )
        if rng.random() < 0.5:
            await self.get(action, "/", {200}, cookie=f"{ACCESS}={token}")
        else:
            await self.get(action, "/api/session", {401}, cookie=f"{ACCESS}={token}")

    async def act_forged_refresh(self, rng: random.Random) -> None:
        await self.get(
            "forged_refresh", "/api/session", {401}, cookie=f"{REFRESH}={secrets.token_urlsafe(32)}"
        )

    async def act_anonymous(self, rng: random.Random) -> None:
        path, allowed = rng.choice(
            (("/", {200}), ("/healthz", {200}), ("/readyz", {200}), ("/api/session", {401}))
        )
        await self.get("anonymous", path, allowed)

    async def act_ws_valid(self, rng: random.Random, *, hold: bool = False) -> None:
        action = "ws_hold" if hold else "ws_valid"
        family = self.busy_family(rng)
        # A browser loads the page (which refreshes when due), then opens the socket.
        api = await self.get(
            action, "/api/session", {200, 401}, cookie=family.cookie_header(), family=family
        )
        if api is None or api.status_code != 200:
            if api is not None:
                self.note_denied(action, False)
            return
        exp = family.access_exp()
        outcome, code = await self.upgrade(
            action,
            cookie=family.cookie_header(ACCESS, ID, REFRESH),
            origin=self.base_url,
            hold_until=exp + 5.0 if hold else None,
        )
        if outcome == "accepted":
            self.ws["accepted"] += 1
            if hold:
                self.ws[f"held, closed {code}"] += 1
                if code != 4401:  # CloseAtExpiry closes at exp: well before exp + 5 s
                    self.unexpected[f"ws_hold closed with {code}"] += 1
        elif outcome == "refused":
            self.ws[f"valid refused {code}"] += 1
            self.denied[f"{self.phase()} {action}"] += 1

    async def act_ws_bad(self, rng: random.Random) -> None:
        choice = rng.randrange(5)
        origin: str | None = self.base_url
        query = ""
        if choice == 0:
            cookie, expected = f"{ACCESS}={secrets.token_urlsafe(40)}", 401
        elif choice == 1:
            cookie, expected = f"{ACCESS}={rng.choice(self._bad_tokens['bad_signature'])}", 401
        elif choice == 2:
            family = self.busy_family(rng)
            cookie, origin, expected = family.cookie_header(ACCESS, ID), "https://evil.example", 403
        elif choice == 3:
            cookie, expected = "", 401
        else:
            cookie, query, expected = "", "?access_token=x", 401
        outcome, status = await self.upgrade("ws_bad", cookie=cookie, origin=origin, query=query)
        if outcome == "refused":
            self.ws[f"refused {status}"] += 1
            if status != expected:
                self.unexpected[f"ws_bad #{choice} -> {status}"] += 1
        elif outcome == "accepted":
            self.ws["bad accepted"] += 1
            self.unexpected[f"ws_bad #{choice} accepted"] += 1

    # -- the run -------------------------------------------------------------------

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        names, weights = list(WEIGHTS), list(WEIGHTS.values())
        actions: dict[str, Callable[[random.Random], Any]] = {
            "page": self.act_page,
            "api": self.act_api,
            "expired": self.act_expired,
            "garbage": self.act_garbage,
            "bad_signature": lambda r: self.act_refused_token("bad_signature", r),
            "unknown_kid": lambda r: self.act_refused_token("unknown_kid", r),
            "expired_no_refresh": lambda r: self.act_refused_token("expired_no_refresh", r),
            "forged_refresh": self.act_forged_refresh,
            "anonymous": self.act_anonymous,
            "ws_valid": self.act_ws_valid,
            "ws_hold": lambda r: self.act_ws_valid(r, hold=True),
            "ws_bad": self.act_ws_bad,
        }
        cap = self.profile.operation_cap
        while time.monotonic() < self.deadline and self.operations < cap:
            self.operations += 1
            await actions[rng.choices(names, weights)[0]](rng)

    def set_issuer(self, state: str) -> None:
        issuer = self.issuer
        issuer.token_delay = self.profile.fail_delay if state == "slow" else 0
        issuer.fail_delay = self.profile.fail_delay
        issuer.fail_mode = state if state in ("500", "timeout") else None

    def flap(self, stop: threading.Event) -> None:
        """From the boundary on: up for flap_up, down for flap_down (DOWN_MODES in turn).

        A thread, not a task: the workers keep the client loop busy, and a late
        switch would blur the line between the phases.
        """
        profile = self.profile
        if stop.wait(max(0.0, self.boundary - time.monotonic())):
            return
        self.boundary = time.monotonic()
        self.boundary_stats = asdict(self.issuer.stats)
        modes = itertools.cycle(DOWN_MODES)
        cycles = int(profile.duration / (profile.flap_up + profile.flap_down)) + 2
        try:
            for _ in range(cycles):
                # The run ends up for at least flap_up: replays after a loss show.
                if stop.wait(profile.flap_up) or (
                    self.deadline - time.monotonic() < profile.flap_down + profile.flap_up
                ):
                    break
                mode = next(modes)
                self.set_issuer(mode)
                self.flaps[mode] += 1
                if stop.wait(profile.flap_down):
                    break
                self.set_issuer("up")
        finally:
            self.set_issuer("up")

    async def run(self, probe: ServerProbe) -> dict[str, Any]:
        profile = self.profile
        self.prepare()
        limits = httpx2.Limits(
            max_connections=profile.concurrency, max_keepalive_connections=profile.concurrency
        )
        # A cookie jar that keeps nothing: each family's cookies travel in its own header.
        blocking = _blocking_jar()
        warm = httpx2.AsyncClient(timeout=10.0, trust_env=False, cookies=blocking)
        async with warm:
            self.client = warm
            self.start = self.boundary = self.deadline = time.monotonic() + 3600
            await self.act_page(random.Random(0))
            await self.act_ws_valid(random.Random(0))
        baseline = await self.idle_snapshot(probe, None)
        self.status.clear()
        self.by_action.clear()
        self.ws.clear()
        self.latencies.clear()
        self.unexpected.clear()
        self.denied.clear()

        async with httpx2.AsyncClient(
            timeout=10.0, limits=limits, trust_env=False, cookies=blocking
        ) as client:
            self.client = client
            self.start = time.monotonic()
            self.boundary = self.start + profile.duration * profile.steady_fraction
            self.deadline = self.start + profile.duration
            stop = threading.Event()
            flapper = threading.Thread(target=self.flap, args=(stop,), name="soak-flapper")
            flapper.start()
            try:
                async with asyncio.timeout(profile.duration + 60):
                    await asyncio.gather(
                        *(
                            self.worker(profile.seed * 100_003 + n)
                            for n in range(profile.concurrency)
                        )
                    )
            finally:
                stop.set()
                flapper.join(10)
            wall = time.monotonic() - self.start
        after = await self.idle_snapshot(probe, baseline)
        return {"wall": wall, "idle_before": baseline, "idle_after": after}

    async def idle_snapshot(
        self, probe: ServerProbe, baseline: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Server tasks, fds and memory once the server has wound down (bounded wait).

        Before the load: until the task count holds for three readings. After:
        until it is back to the baseline, or ``settle`` seconds have passed.
        """
        readings = [probe.task_count()]
        deadline = time.monotonic() + self.profile.settle
        while time.monotonic() < deadline:
            if baseline is None and readings[-3:] == [readings[-1]] * 3:
                break
            if baseline is not None and readings[-1] <= baseline["server_tasks"]:
                break
            await asyncio.sleep(0.1)
            readings.append(probe.task_count())
        return {
            "server_tasks": readings[-1],
            "fds": open_fds(),
            "threads": threading.active_count(),
            **memory_mb(),
        }


def _blocking_jar() -> Any:
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _flip_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    flipped = bytes(byte ^ 0x5A for byte in raw)
    return head + "." + base64.urlsafe_b64encode(flipped).rstrip(b"=").decode()


# -- accounting ----------------------------------------------------------------------------------


def _refresh_accounting(load: Load, issuer_end: dict[str, int]) -> dict[str, Any]:
    boundary = load.boundary
    calls = [call for call in load.ledger.calls if call.path.endswith("/token")]
    steady = [c for c in calls if c.started < boundary and c.family is not None]
    flapping = [c for c in calls if c.started >= boundary and c.family is not None]
    forged = [c for c in calls if c.old is not None and c.family is None]
    spanning = sum(1 for c in calls if c.started < boundary <= (c.ended or boundary))

    per_token = Counter(c.old for c in steady)
    grants_by_family = Counter(id(c.family) for c in steady if c.outcome == "200")
    # Families signed in again during the flaps had no steady phase.
    families = [f for f in (*load.families, *load.retired) if f.created < boundary]
    per_family = [grants_by_family.get(id(f), 0) for f in families if not f.idle]
    idle_family = [grants_by_family.get(id(f), 0) for f in families if f.idle]
    delivered = {digest for f in families for digest in f.seen}
    undelivered = sum(1 for c in steady if c.outcome == "200" and c.new not in delivered)
    gaps: list[float] = []
    for family in families:
        times = sorted(c.started for c in steady if c.family is family and c.outcome == "200")
        gaps += [b - a for a, b in itertools.pairwise(times)]
    at_boundary = load.boundary_stats or issuer_end
    steady_grants = sum(grants_by_family.values())

    timed_out: set[str | None] = set()
    replays: Counter[str] = Counter()
    for call in sorted(flapping, key=lambda c: c.started):
        if call.old in timed_out:
            replays[call.outcome] += 1
        if call.outcome == "cancelled" or call.outcome.startswith("error"):
            timed_out.add(call.old)
    flap_grants = sum(1 for c in flapping if c.outcome == "200")
    issuer_flap_grants = issuer_end["refresh_grants"] - at_boundary["refresh_grants"]
    return {
        "steady": {
            "issuer_calls": len(steady),
            "grants": steady_grants,
            "non_200": dict(Counter(c.outcome for c in steady if c.outcome != "200")),
            "calls_per_rotation": round(len(steady) / steady_grants, 3) if steady_grants else None,
            "duplicate_calls": sum(n - 1 for n in per_token.values() if n > 1),
            "undelivered_grants": undelivered,
            "families_refreshed": sum(1 for n in per_family + idle_family if n),
            "families": len(per_family) + len(idle_family),
            "grants_per_busy_family": _spread(per_family),
            "grants_per_idle_family": _spread(idle_family),
            "min_seconds_between_refreshes": round(min(gaps), 2) if gaps else None,
            "issuer_grants": at_boundary["refresh_grants"],
            "calls_spanning_boundary": spanning,
            "reuse_detected": at_boundary["reuse_detected"],
            "revoked_families": at_boundary["revoked_families"],
            "relogins": load.relogins["steady"],
        },
        "flapping": {
            "issuer_calls": len(flapping),
            "outcomes": dict(Counter(c.outcome for c in flapping)),
            "grants_received": flap_grants,
            "issuer_grants": issuer_flap_grants,
            "lost_grants": max(0, issuer_flap_grants - flap_grants),
            # A token presented again after the app gave up on its call: harmless when
            # the issuer had not rotated it ("timeout", "500"), a reuse when it had ("slow").
            "replays_after_timeout": sum(replays.values()),
            "replays_refused_as_reuse": replays["400:invalid_grant"],
            "replays_by_outcome": dict(replays),
            "reuse_detected": issuer_end["reuse_detected"] - at_boundary["reuse_detected"],
            "revoked_families": issuer_end["revoked_families"] - at_boundary["revoked_families"],
            "relogins": load.relogins["flapping"],
            "flaps": dict(load.flaps),
        },
        "forged_refresh_calls": len(forged),
    }


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {}
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50": round(cuts[49] * 1000, 1),
        "p95": round(cuts[94] * 1000, 1),
        "p99": round(cuts[98] * 1000, 1),
        "max": round(max(latencies) * 1000, 1),
    }


def run_soak(profile: Profile | None = None) -> dict[str, Any]:
    """Run one soak; the summary dict (``summary["failures"]`` lists broken invariants)."""
    profile = profile or profile_from_env()
    capture = LogCapture()
    fds_before_start = open_fds()
    threads_before = threading.active_count()
    with DevIssuer.serve(port=0) as issuer:
        issuer.access_ttl = profile.access_ttl
        issuer.reuse_grace = profile.reuse_grace
        config = _config(issuer, profile)
        ledger = Ledger()
        app = create_app(config, issuer_transport=CountingTransport(ledger))
        probe = ServerProbe(app)
        # After DevIssuer.serve: uvicorn's dictConfig replaces the "uvicorn" handlers.
        with capture.attached("", "uvicorn"), serve_app(probe) as base_url:
            load = Load(profile, issuer, ledger, base_url)
            timing = asyncio.run(load.run(probe))
            edge = app.state.edge
            middleware = edge.stats.snapshot()
            refresher = asdict(edge.refresher.stats) if edge.refresher is not None else {}
        issuer_end = asdict(issuer.stats)
    fds_after_stop = open_fds()
    for _ in range(50):  # sockets of just-stopped threads close asynchronously
        if fds_after_stop <= fds_before_start + FD_TOLERANCE:
            break
        time.sleep(0.1)
        fds_after_stop = open_fds()
    threads_after = threading.active_count()

    before, after = timing["idle_before"], timing["idle_after"]
    http_requests = sum(n for status, n in load.status.items() if status != 101)
    upgrades = load.status[101] + sum(
        n for key, n in load.ws.items() if key.startswith(("refused", "valid refused"))
    )
    total = sum(load.status.values())
    summary: dict[str, Any] = {
        "profile": asdict(profile),
        "wall_seconds": round(timing["wall"], 2),
        "requests": {
            "total": total,
            "http": http_requests,
            "websocket": upgrades,
            "websocket_refused": upgrades - load.status[101],
            "per_second": round(total / timing["wall"], 1),
            "by_status": {str(k): v for k, v in sorted(load.status.items())},
            "5xx": sum(n for status, n in load.status.items() if status >= 500),
            "by_action": dict(load.by_action),
            "unexpected": dict(load.unexpected),
            "client_errors": dict(load.client_errors),
            "valid_denied": dict(load.denied),
            "expired_refreshed": load.expired_refreshed,
            "latency_ms": _percentiles(load.latencies),
        },
        "websocket": dict(load.ws),
        "refresh": _refresh_accounting(load, issuer_end),
        "refresher": refresher,
        "middleware": middleware,
        "issuer": issuer_end,
        "resources": {
            "fds": {
                "before_start": fds_before_start,
                "idle_before_load": before["fds"],
                "idle_after_load": after["fds"],
                "after_stop": fds_after_stop,
            },
            "rss_mb": {
                "before_load": round(before["VmRSS"], 1),
                "after_load": round(after["VmRSS"], 1),
                "growth": round(after["VmRSS"] - before["VmRSS"], 1),
                "peak": round(after["VmHWM"], 1),
            },
            "server_tasks": {
                "before_load": before["server_tasks"],
                "after_load": after["server_tasks"],
            },
            "threads": {"before_start": threads_before, "after_stop": threads_after},
        },
        "logs": {
            "server_errors": capture.counts[("server", "ERROR")]
            + capture.counts[("server", "CRITICAL")],
            "server_warnings": capture.counts[("server", "WARNING")],
            "client_records": sum(n for (side, _), n in capture.counts.items() if side == "client"),
            "known_upstream": {KNOWN_UPSTREAM[m]: n for m, n in capture.known.items()},
            "samples": capture.samples,
        },
    }
    summary["failures"] = failures(summary)
    return summary


def _config(issuer: DevIssuer, profile: Profile) -> AppConfig:
    """The e2e config (keys baked, endpoints from discovery) with the soak's timings."""
    base = app_config(issuer)
    return base.model_copy(
        update={
            "auth": base.auth.model_copy(update={"leeway": profile.leeway}),
            "refresh": base.refresh.model_copy(
                update={
                    "skew": profile.skew,
                    "timeout": profile.refresh_timeout,
                    "grace": profile.grace,
                }
            ),
        }
    )


# -- verdict and table --------------------------------------------------------------------------


def failures(summary: dict[str, Any]) -> list[str]:
    """The invariants a soak must keep; each broken one as a sentence."""
    found = []
    requests, steady = summary["requests"], summary["refresh"]["steady"]
    resources = summary["resources"]
    checks = [
        (requests["5xx"] == 0, f"{requests['5xx']} responses were 5xx"),
        (not requests["unexpected"], f"unexpected answers: {requests['unexpected']}"),
        (not requests["client_errors"], f"client errors: {requests['client_errors']}"),
        (
            not any(key.startswith("steady") for key in requests["valid_denied"]),
            f"valid sessions denied while the issuer was up: {requests['valid_denied']}",
        ),
        (steady["reuse_detected"] == 0, f"issuer saw {steady['reuse_detected']} reuses while up"),
        (
            steady["revoked_families"] == 0,
            f"issuer revoked {steady['revoked_families']} families while up",
        ),
        (
            steady["duplicate_calls"] == 0,
            f"{steady['duplicate_calls']} refresh tokens sent twice while up",
        ),
        (not steady["non_200"], f"refresh calls failed while up: {steady['non_200']}"),
        (
            steady["undelivered_grants"] == 0,
            f"{steady['undelivered_grants']} rotations never reached a client",
        ),
        (steady["grants"] > 0, "no refresh happened while up"),
        (
            # A steady phase as long as a token's life leaves no family unrefreshed.
            steady["grants_per_busy_family"]["min"] >= 1
            or summary["profile"]["duration"] * summary["profile"]["steady_fraction"]
            < summary["profile"]["access_ttl"],
            f"a family was never refreshed while up: {steady['grants_per_busy_family']}",
        ),
        (
            abs(steady["issuer_grants"] - steady["grants"]) <= steady["calls_spanning_boundary"],
            f"issuer counted {steady['issuer_grants']} grants, the wire {steady['grants']}",
        ),
        (
            resources["fds"]["after_stop"] <= resources["fds"]["before_start"] + FD_TOLERANCE,
            f"file descriptors: {resources['fds']}",
        ),
        (
            resources["server_tasks"]["after_load"] <= resources["server_tasks"]["before_load"],
            f"server tasks: {resources['server_tasks']}",
        ),
        (
            resources["rss_mb"]["growth"] < RSS_BOUND_MB,
            f"RSS grew {resources['rss_mb']['growth']} MiB",
        ),
        (
            summary["logs"]["server_errors"] == 0,
            f"server logged errors: {summary['logs']['samples']}",
        ),
        (
            # Each denied upgrade may log uvicorn's line once; more would be the app's own.
            sum(summary["logs"]["known_upstream"].values())
            <= summary["requests"]["websocket_refused"],
            f"more incomplete-handshake errors than refused upgrades: {summary['logs']}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            found.append(message)
    return found


def _pairs(mapping: dict[str, Any], sep: str = ": ") -> str:
    return ", ".join(f"{key}{sep}{value}" for key, value in mapping.items()) or "none"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a two-column Markdown table."""
    p, r, logs = summary["profile"], summary["requests"], summary["logs"]
    steady, flap = summary["refresh"]["steady"], summary["refresh"]["flapping"]
    res, ref = summary["resources"], summary["refresher"]
    busy, idle = steady["grants_per_busy_family"], steady["grants_per_idle_family"]
    fds, rss, tasks = res["fds"], res["rss_mb"], res["server_tasks"]
    rows = {
        "duration, concurrency": f"{p['duration']:g} s ({summary['wall_seconds']} s wall), "
        f"{p['concurrency']} connections, {p['users']} token families "
        f"({p['idle_users']} visited only once expired)",
        "requests": f"{r['total']} ({r['http']} HTTP, {r['websocket']} WebSocket upgrades), "
        f"{r['per_second']}/s",
        "status counts": _pairs(r["by_status"]),
        "5xx": r["5xx"],
        "latency (HTTP)": _pairs(r["latency_ms"], " ") + " ms",
        "unexpected answers, client errors": f"{sum(r['unexpected'].values())}, "
        f"{sum(r['client_errors'].values())}",
        "WebSocket": _pairs(dict(sorted(summary["websocket"].items()))),
        "valid sessions denied": _pairs(r["valid_denied"]),
        "expired access tokens refreshed": r["expired_refreshed"],
        "JWKS fetches": f"{summary['issuer']['jwks_requests']} for "
        f"{r['by_action'].get('unknown_kid', 0)} unknown-kid requests (keys.cooldown)",
        "refresh while up": f"{steady['issuer_calls']} issuer calls, {steady['grants']} grants: "
        f"{steady['calls_per_rotation']} call per rotation, {steady['duplicate_calls']} "
        f"duplicate, {steady['undelivered_grants']} undelivered",
        "refresh calls per family while up": f"busy {busy['min']}/{busy['median']}/{busy['max']}"
        f", idle {idle['min']}/{idle['median']}/{idle['max']} (min/median/max); "
        f"{steady['families_refreshed']}/{steady['families']} families; closest two "
        f"refreshes of a family {steady['min_seconds_between_refreshes']} s apart",
        "issuer while up": f"reuse_detected {steady['reuse_detected']}, revoked_families "
        f"{steady['revoked_families']}, grants {steady['issuer_grants']}",
        "single flight (whole run)": f"{ref.get('calls', 0)} issuer calls, "
        f"{ref.get('joined', 0)} joined a flight, {ref.get('grace_reused', 0)} reused a "
        f"result in the grace, {ref.get('reuse_refused', 0)} refused without an issuer call "
        "(a spent token, or an old one without proof)",
        "flapping": f"{_pairs(flap['flaps'], ' x')}; {flap['issuer_calls']} issuer calls: "
        + _pairs(dict(sorted(flap["outcomes"].items()))),
        "during flaps (reported)": f"lost grants {flap['lost_grants']}, replays after a "
        f"timed-out call {flap['replays_after_timeout']} ({flap['replays_refused_as_reuse']} "
        f"refused as reuse), reuse_detected {flap['reuse_detected']}, revoked_families "
        f"{flap['revoked_families']}, re-logins {flap['relogins']}",
        "RSS": f"{rss['before_load']} -> {rss['after_load']} MiB (growth {rss['growth']:+} "
        f"MiB, peak {rss['peak']} MiB)",
        "file descriptors": f"before start {fds['before_start']}, idle before load "
        f"{fds['idle_before_load']}, idle after load {fds['idle_after_load']}, after stop "
        f"{fds['after_stop']}",
        "server asyncio tasks": f"{tasks['before_load']} before, {tasks['after_load']} after",
        "threads": f"{res['threads']['before_start']} before start, "
        f"{res['threads']['after_stop']} after stop",
        "server log": f"{logs['server_errors']} ERROR, {logs['server_warnings']} WARNING; "
        f"upstream, not counted: {_pairs(logs['known_upstream'], ' x')}",
        "verdict": "; ".join(summary["failures"]) or "PASS",
    }
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.load.soak", description=__doc__.split("\n\n")[0]
    )
    default = LONG
    parser.add_argument("--duration", type=float, default=default.duration, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=default.concurrency)
    parser.add_argument("--users", type=int, default=default.users, help="token families")
    parser.add_argument("--steady-fraction", type=float, default=default.steady_fraction)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument(
        "--reuse-grace",
        type=float,
        default=default.reuse_grace,
        help="the issuer's reuse interval in seconds (0: a replayed refresh token revokes)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    short_flaps = args.duration < 30
    profile = Profile(
        duration=args.duration,
        concurrency=args.concurrency,
        users=args.users,
        idle_users=max(1, args.users // 5),
        steady_fraction=args.steady_fraction,
        seed=args.seed,
        reuse_grace=args.reuse_grace,
        flap_up=SHORT.flap_up if short_flaps else default.flap_up,
        flap_down=SHORT.flap_down if short_flaps else default.flap_down,
    )
    summary = run_soak(profile)
    print(format_table(summary))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2, default=str)
    for failure in summary["failures"]:
        print(f"soak: FAIL: {failure}", file=sys.stderr)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
