"""The client side of a soak: what the workers send, and what they count.

:class:`Load` signs the token families in, and each ``act_*`` method is one
kind of request in the mix (:data:`WEIGHTS`): page and API loads with a
family's cookies, refused credentials, anonymous requests, WebSocket upgrades
good and bad. Every answer is checked against what that request must get;
anything else is counted in ``unexpected``, and a valid session refused in
``denied`` (by phase).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable

import httpx2
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from verifier.testing import DevIssuer

from .profile import Profile
from .wire import ACCESS, ID, REFRESH, Family, Ledger

__all__ = ["WEIGHTS", "Load"]

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
    """The client side of one run: token families, the requests and upgrades, the counters.

    :mod:`.run` drives it: the workers call the ``act_*`` methods, the flapper
    thread sets :attr:`boundary` (the end of the steady phase), :attr:`flaps` and,
    at the end, :attr:`finished`.
    """

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
        self.start = 0.0
        #: When the steady phase ended (monotonic); infinite until the flapper says.
        self.boundary = math.inf
        self.boundary_stats: dict[str, int] = {}
        #: Set by the flapper when the run is over: the workers stop.
        self.finished = threading.Event()
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

    def busy_refreshed(self) -> bool:
        """Every busy family (the ones visited all the time) has rotated at least once."""
        return all(family.rotations > 0 for family in self.families[self.profile.idle_users :])

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
    ) -> tuple[str, int | None, str | None]:
        """Open /ws: ``("accepted", close code when held, None)``, ``("refused", HTTP
        status, the answer's error code)`` or ``("error", None, None)``."""
        timeout = self.profile.client_timeout
        headers = {"Cookie": cookie} if cookie else {}
        self.by_action[action] += 1
        try:
            async with connect(
                self.ws_url + query,
                origin=Origin(origin) if origin else None,
                additional_headers=headers,
                proxy=None,
                open_timeout=timeout,
                close_timeout=timeout,
                ping_interval=None,
                compression=None,
            ) as websocket:
                self.status[101] += 1
                first = json.loads(await asyncio.wait_for(websocket.recv(), timeout))
                if first.get("type") != "session":
                    self.unexpected[f"{action}: first message {first.get('type')!r}"] += 1
                if hold_until is None:
                    return "accepted", None, None
                try:
                    await asyncio.wait_for(websocket.recv(), max(0.1, hold_until - time.time()))
                except ConnectionClosed as closed:
                    return "accepted", closed.rcvd.code if closed.rcvd else None, None
                except TimeoutError:
                    return "accepted", None, None
                return "accepted", None, None
        except InvalidStatus as refused:
            status = refused.response.status_code
            self.status[status] += 1
            return "refused", status, _error_code(refused.response.body)
        except (InvalidHandshake, ConnectionClosed, OSError, TimeoutError) as exc:
            self.client_errors[f"{action}: {type(exc).__name__}"] += 1
            return "error", None, None

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
        outcome, code, error = await self.upgrade(
            action,
            cookie=family.cookie_header(ACCESS, ID, REFRESH),
            origin=self.base_url,
            # CloseAtExpiry closes at exp; waiting past it is only a deadline.
            hold_until=exp + self.profile.client_timeout if hold else None,
        )
        if outcome == "accepted":
            self.ws["accepted"] += 1
            if hold:
                self.ws[f"held, closed {code}"] += 1
                if code != 4401:
                    self.unexpected[f"ws_hold closed with {code}"] += 1
        elif outcome == "refused":
            if code == 401 and error == "token_expired" and time.time() >= exp:
                # Upgrades are never refreshed: this token expired between the page
                # load and the server's check of the upgrade (a gap only a slow machine
                # makes), so it was no valid session by then. Reported, not denied.
                self.ws["valid refused 401 expired in transit"] += 1
            else:
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
        outcome, status, _ = await self.upgrade("ws_bad", cookie=cookie, origin=origin, query=query)
        if outcome == "refused":
            self.ws[f"refused {status}"] += 1
            if status != expected:
                self.unexpected[f"ws_bad #{choice} -> {status}"] += 1
        elif outcome == "accepted":
            self.ws["bad accepted"] += 1
            self.unexpected[f"ws_bad #{choice} accepted"] += 1


def _flip_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    flipped = bytes(byte ^ 0x5A for byte in raw)
    return head + "." + base64.urlsafe_b64encode(flipped).rstrip(b"=").decode()


def _error_code(body: bytes | None) -> str | None:
    """The ``code`` of a refused upgrade's JSON answer, if it has one."""
    try:
        answer = json.loads(body or b"")
    except ValueError:
        return None
    code = answer.get("code") if isinstance(answer, dict) else None
    return code if isinstance(code, str) else None
