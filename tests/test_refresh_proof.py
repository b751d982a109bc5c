"""No token-endpoint call without proof (issue 18), against real servers.

Every test runs a real DevIssuer on uvicorn (``DevIssuer.serve(port=0)``) and
counts what reaches its ``/token`` endpoint over loopback HTTP; the app is
either the reference app (``create_app``, as an attacker finds it) or
``JWTSessionMiddleware`` over a small inner app whose clocks the test moves
(for expiry and the key cooldown). A refresh happens only when the request
carries an access or ID token of this issuer whose signature verifies,
expiry ignored.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.e2e.servers import app_config, dev_issuer, serve_app
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.errors import RefreshFailed
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware, get_session, refresh_now
from verifier.refresh import InProcessRefresher
from verifier.remote import RemoteKeys
from verifier.stats import MiddlewareStats
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

pytestmark = pytest.mark.e2e

ACCESS, ID, REFRESH = "jwtedge_access", "jwtedge_id", "jwtedge_refresh"
TOKEN_COOKIES = {ACCESS, ID, REFRESH}


def random_refresh() -> str:
    return secrets.token_urlsafe(32)


def names_in(cookie: str) -> set[str]:
    """The cookie names a ``Cookie`` header carries: the only ones a response clears."""
    return {part.partition("=")[0].strip() for part in cookie.split(";")}


def cleared(response: httpx2.Response) -> set[str]:
    """The token cookies the response deletes (``Max-Age=0``)."""
    names = set()
    for header in response.headers.get_list("set-cookie"):
        name = header.partition("=")[0].strip()
        if "Max-Age=0" in header:
            names.add(name)
    return names


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = (
        rf"^{re.escape(name)}{{{re.escape(selector)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    )
    match = re.search(pattern, text, re.M)
    assert match is not None, f"{name} {labels} not exported"
    return float(match.group(1))


def server_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What jwtedge and the servers logged (the test's own HTTP client is left out:
    httpcore logs the headers it receives, which is the browser's side)."""
    main = threading.main_thread().name
    return "\n".join(
        f"{record.name} {record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
        if record.threadName != main or record.name.startswith("jwtedge")
    )


async def send_all(
    url: str, path: str, cookies: list[str], *, method: str = "GET"
) -> list[httpx2.Response]:
    """One request per ``Cookie`` header, all at once (an attacker does not wait)."""
    async with httpx2.AsyncClient(base_url=url, timeout=30.0) as client:
        return await asyncio.gather(
            *(
                client.request(method, path, headers={"Cookie": cookie, "Origin": url})
                for cookie in cookies
            )
        )


# -- the reference app, as an attacker finds it -----------------------------------


@dataclass
class Running:
    issuer: DevIssuer
    url: str
    stats: MiddlewareStats


@pytest.fixture
def running() -> Iterator[Running]:
    with dev_issuer() as issuer:
        config = app_config(issuer)
        # The proof cooldown is refresh.timeout: long enough that a slow machine
        # cannot see one expire in the middle of a test.
        refresh = config.refresh.model_copy(update={"timeout": 60.0})
        app = create_app(config.model_copy(update={"refresh": refresh}))
        with serve_app(app) as url:
            yield Running(issuer, url, app.state.edge.stats)


def genuine_chunk_half(issuer: DevIssuer) -> str:
    token = issuer.access_token("ada", iat=int(time.time()) - 1000)
    return token[: len(token) // 2]


async def test_a_hundred_requests_with_only_a_random_refresh_cookie_make_no_call(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = [random_refresh() for _ in range(100)]
    cookies = [f"{REFRESH}={token}" for token in sent]

    pages = await send_all(running.url, "/", cookies[:50])
    apis = await send_all(running.url, "/api/session", cookies[50:])

    assert running.issuer.stats.token_requests == 0
    assert all(response.status_code == 200 for response in pages)
    assert all(response.status_code == 401 for response in apis)
    assert {response.json()["code"] for response in apis} == {"token_missing"}
    for response in pages + apis:
        assert cleared(response) == {REFRESH}
        assert response.headers["cache-control"] == "no-store"
    assert running.stats.refresh_refused == {"no_proof": 100}
    async with httpx2.AsyncClient(base_url=running.url) as client:
        text = (await client.get("/metrics")).text
    assert metric(text, "jwtedge_refresh_refused_total", reason="no_proof") == 100
    assert metric(text, "jwtedge_refresh_refused_total", reason="cooldown") == 0
    assert metric(text, "jwtedge_refresh_total", result="failed") == 0
    logged = server_logs(caplog)
    assert "refresh refused: no_proof" in logged
    assert not any(token in logged for token in sent)


async def test_post_auth_refresh_with_only_a_random_refresh_cookie_makes_no_call(
    running: Running,
) -> None:
    cookies = [f"{REFRESH}={random_refresh()}" for _ in range(20)]

    responses = await send_all(running.url, "/auth/refresh", cookies, method="POST")

    assert running.issuer.stats.token_requests == 0
    assert {response.status_code for response in responses} == {401}
    assert {response.json()["code"] for response in responses} == {"refresh_failed"}
    assert all(cleared(response) == {REFRESH} for response in responses)
    # Counted once per request: refresh_now does not ask again after the middleware refused.
    assert running.stats.refresh_refused == {"no_proof": 20}


@pytest.mark.parametrize(
    ("access_cookies", "carried"),
    [
        pytest.param(lambda issuer: f"{ACCESS}=", ACCESS, id="empty-access-cookie"),
        pytest.param(lambda issuer: f"{ACCESS}=; {ID}=", ACCESS, id="empty-access-and-id-cookies"),
        pytest.param(
            lambda issuer: f"{ACCESS}.1={genuine_chunk_half(issuer)}",
            f"{ACCESS}.1",
            id="torn-chunked-access",
        ),
    ],
)
async def test_an_empty_or_torn_access_cookie_next_to_a_random_refresh_cookie_makes_no_call(
    running: Running, access_cookies: Any, carried: str
) -> None:
    cookies = [
        f"{access_cookies(running.issuer)}; {REFRESH}={random_refresh()}" for _ in range(100)
    ]

    responses = await send_all(running.url, "/", cookies)

    assert running.issuer.stats.token_requests == 0
    assert all(response.status_code == 200 for response in responses)
    for cookie, response in zip(cookies, responses, strict=True):
        assert carried in cleared(response)
        assert cleared(response) == names_in(cookie)
    assert running.stats.refresh_refused == {"no_proof": 100}


def forged_with_a_real_kid(issuer: DevIssuer) -> str:
    """The issuer's kid in the header, another key's signature."""
    forger = DevIssuer(issuer=issuer.issuer, client_id=issuer.client_id)
    claims = {"iss": issuer.issuer, "sub": "ada", "aud": issuer.client_id, "iat": int(time.time())}
    return forger.sign(claims, {"alg": issuer.alg, "kid": issuer.kid, "typ": "JWT"})


def forged_with_its_own_kid(issuer: DevIssuer) -> str:
    return DevIssuer(issuer=issuer.issuer, client_id=issuer.client_id).id_token("ada")


def tampered_genuine(issuer: DevIssuer) -> str:
    token = issuer.id_token("ada")
    head, _, signature = token.rpartition(".")
    return head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]


def for_another_client(issuer: DevIssuer) -> str:
    return issuer.id_token("ada", audience="another-client")


@pytest.mark.parametrize(
    ("forge", "reason", "clears"),
    [
        pytest.param(forged_with_a_real_kid, "proof_invalid", True, id="real-kid-wrong-key"),
        pytest.param(tampered_genuine, "proof_invalid", True, id="tampered-genuine"),
        pytest.param(for_another_client, "proof_invalid", True, id="another-audience"),
        # A kid the bake lacks may be a key the issuer has just rotated in: the
        # remote layer may still learn it, so nothing is cleared (nothing is called).
        pytest.param(forged_with_its_own_kid, "proof_unverifiable", False, id="unknown-kid"),
    ],
)
async def test_a_hundred_requests_with_a_forged_id_cookie_make_no_call(
    running: Running, forge: Any, reason: str, clears: bool
) -> None:
    forged = forge(running.issuer)
    cookies = [f"{ID}={forged}; {REFRESH}={random_refresh()}" for _ in range(100)]

    responses = await send_all(running.url, "/", cookies)

    assert running.issuer.stats.token_requests == 0
    assert all(response.status_code == 200 for response in responses)
    for response in responses:
        assert cleared(response) == ({ID, REFRESH} if clears else set())
    assert running.stats.refresh_refused == {reason: 100}
    # The unknown kid cost one JWKS fetch at most (the key layer's cooldown).
    assert running.issuer.stats.jwks_requests <= 1


async def test_a_genuine_id_token_without_an_access_cookie_is_a_proof_and_refreshes(
    running: Running,
) -> None:
    tokens = running.issuer.login("ada")
    cookie = f"{ID}={tokens['id_token']}; {REFRESH}={tokens['refresh_token']}"

    async with httpx2.AsyncClient(base_url=running.url) as client:
        response = await client.get("/api/session", headers={"Cookie": cookie})

    assert response.status_code == 200
    assert response.json()["user"]["id"] == "ada"
    written = {h.partition("=")[0] for h in response.headers.get_list("set-cookie")}
    assert written == TOKEN_COOKIES
    assert running.issuer.stats.token_requests == 1
    assert running.issuer.stats.refresh_grants == 1
    assert running.stats.refresh_refused == {}


async def test_fifty_random_refresh_cookies_with_one_genuine_expired_token_make_one_call(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = running.issuer
    # A genuine access token (anyone's old one, say), long expired.
    expired = issuer.access_token("ada", sid="s-old", iat=int(time.time()) - 1000)
    sent = [random_refresh() for _ in range(50)]
    cookies = [f"{ACCESS}={expired}; {REFRESH}={token}" for token in sent]

    responses = await send_all(running.url, "/", cookies)

    # The acceptance bound is 3; one proof drives one call at a time and then
    # cools down for refresh.timeout, so exactly one reaches the issuer.
    assert issuer.stats.token_requests <= 3
    assert issuer.stats.token_requests == 1
    assert all(response.status_code == 200 for response in responses)
    assert running.stats.refresh_failed == {"refresh_failed": 1}
    assert running.stats.refresh_refused == {"cooldown": 49}
    # The issuer's invalid_grant clears that one request's cookies; the refused ones keep theirs.
    assert sum(1 for response in responses if cleared(response)) == 1
    logged = server_logs(caplog)
    assert "refresh refused: cooldown" in logged
    assert not any(token in logged for token in [expired, *sent])


# -- the middleware with clocks the test moves -------------------------------------


class Clock:
    """``start + offset``: the offset is what the test advances."""

    def __init__(self) -> None:
        self.start = float(int(time.time()))
        self.offset = 0.0

    def __call__(self) -> float:
        return self.start + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


ACCESS_TTL = 60
#: Longer than an access token lives, so a session can expire inside it.
KEY_COOLDOWN = 120


async def whoami(request: Request) -> JSONResponse:
    session = get_session(request)
    if session is None:
        return JSONResponse({"authenticated": False})
    return JSONResponse({"authenticated": True, "sub": session.user.id})


async def refresh_route(request: Request) -> JSONResponse:
    try:
        session = await refresh_now(request)
    except RefreshFailed as exc:
        return JSONResponse({"code": exc.code, **exc.context}, status_code=409)
    return JSONResponse({"authenticated": True, "sub": session.user.id})


@dataclass
class Stack:
    issuer: DevIssuer
    clock: Clock
    middleware: JWTSessionMiddleware
    remote: RemoteKeys
    url: str


@contextmanager
def running_stack() -> Iterator[Stack]:
    """A served DevIssuer; the middleware with remote keys (unknown kids) and refresh."""
    clock = Clock()
    with DevIssuer.serve(port=0, clock=clock) as issuer:
        issuer.access_ttl = ACCESS_TTL
        config = AppConfig(
            _env_file=None,
            auth={
                "issuer": issuer.url,
                "audience": "api",
                "client_id": issuer.client_id,
                "jwks": parse_jwks(issuer.jwks()),
                "leeway": 0,
            },
            endpoints={"token": issuer.url + "/token", "jwks_uri": issuer.url + "/jwks"},
            keys={"remote": "unknown-kid", "cooldown": KEY_COOLDOWN},
            refresh={"skew": 1},
        )
        verifier = TokenVerifier.from_config(config, now=clock)
        remote = RemoteKeys.from_config(config, verifier.keys, now=clock, wall=clock)
        refresher = InProcessRefresher.from_config(config, verifier, now=clock)
        assert refresher is not None

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            # Their HTTP clients live on the server's loop: close them there.
            await refresher.aclose()
            await remote.aclose()

        inner = Starlette(
            routes=[Route("/", whoami), Route("/refresh", refresh_route, methods=["POST"])],
            lifespan=lifespan,
        )
        middleware = JWTSessionMiddleware(
            inner, config, verifier=verifier, remote=remote, refresher=refresher
        )
        with serve_app(middleware) as url:
            yield Stack(issuer, clock, middleware, remote, url)


def cookie_of(tokens: dict[str, Any], *kinds: str) -> str:
    names = {"access": ACCESS, "id": ID, "refresh": REFRESH}
    return "; ".join(f"{names[kind]}={tokens[f'{kind}_token']}" for kind in kinds)


def test_during_the_key_cooldown_after_a_rotation_a_real_session_keeps_its_cookies() -> None:
    with running_stack() as stack, httpx2.Client(base_url=stack.url) as client:
        issuer, stats = stack.issuer, stack.middleware.stats
        # A token naming a kid nobody publishes makes the key layer fetch once:
        # its cooldown starts now.
        stranger = DevIssuer(issuer=issuer.url, client_id=issuer.client_id)
        client.get("/", headers={"Cookie": f"{ACCESS}={stranger.access_token('x')}"})
        assert issuer.stats.jwks_requests == 1
        # The issuer rotates; sessions from now on are signed with a key the
        # app has neither baked nor fetched, and the fetch is cooling down.
        issuer.rotate()
        full = issuer.login("u1")
        id_only = issuer.login("u1")
        stack.clock.advance(ACCESS_TTL + 1)

        during = [
            client.get("/", headers={"Cookie": cookie_of(full, "access", "id", "refresh")}),
            client.get("/", headers={"Cookie": cookie_of(id_only, "id", "refresh")}),
            client.post(
                "/refresh",
                headers={"Cookie": cookie_of(id_only, "id", "refresh"), "Origin": stack.url},
            ),
        ]

        assert issuer.stats.token_requests == 0
        assert issuer.stats.jwks_requests == 1
        for response in during[:2]:
            assert response.json() == {"authenticated": False}
        assert during[2].status_code == 409
        assert during[2].json()["reason"] == "proof_unverifiable"
        for response in during:
            assert "set-cookie" not in response.headers
        # Where the ID token was the only proof, its kid is unknown inside the cooldown
        # (the full session's access token names it too: that request was not due).
        assert stats.refresh_refused == {"proof_unverifiable": 2}

        stack.clock.advance(KEY_COOLDOWN)
        after = [
            client.get("/", headers={"Cookie": cookie_of(full, "access", "id", "refresh")}),
            client.get("/", headers={"Cookie": cookie_of(id_only, "id", "refresh")}),
        ]

        assert issuer.stats.jwks_requests == 2
        for response in after:
            assert response.json() == {"authenticated": True, "sub": "u1"}
            written = {h.partition("=")[0] for h in response.headers.get_list("set-cookie")}
            assert written == TOKEN_COOKIES
        assert issuer.stats.token_requests == 2
        assert issuer.stats.refresh_grants == 2
        assert issuer.stats.reuse_detected == 0


async def test_the_refresh_storm_of_one_real_expired_session_makes_exactly_one_call() -> None:
    with running_stack() as stack:
        issuer = stack.issuer
        tokens = issuer.login("u1")
        stack.clock.advance(ACCESS_TTL + 1)
        cookie = cookie_of(tokens, "access", "id", "refresh")

        async with httpx2.AsyncClient(base_url=stack.url, timeout=30.0) as client:
            responses = await asyncio.gather(
                *(client.get("/", headers={"Cookie": cookie}) for _ in range(100))
            )

        assert issuer.stats.token_requests == 1
        assert issuer.stats.refresh_grants == 1
        assert issuer.stats.reuse_detected == 0
        assert all(
            response.json() == {"authenticated": True, "sub": "u1"} for response in responses
        )
        assert stack.middleware.stats.refresh_refused == {}
        assert stack.middleware.stats.refreshed == 100
