"""Refresh over real HTTP: a served DevIssuer, and the app behind JWTSessionMiddleware on uvicorn.

The app's middleware builds its own refresher from the config (the default
one: httpx2 over the network to the issuer's /token). The issuer and the
app's verifier share a clock that only moves when the test advances it, so
access tokens expire at once instead of after a sleep; a frozen base keeps
``iat`` truncation from making a fresh 2 s token look due for refresh.
"""

from __future__ import annotations

import asyncio
import logging
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

from tests.e2e.servers import serve_app
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

pytestmark = pytest.mark.e2e

ACCESS_TTL = 2
SKEW = 1
#: Past a token's exp: with leeway 0 it no longer verifies.
EXPIRE = ACCESS_TTL + 1
PLAIN = {"access": "jwtedge_access", "id": "jwtedge_id", "refresh": "jwtedge_refresh"}


class Clock:
    """``start + offset``: the offset is what the test advances."""

    def __init__(self) -> None:
        self.start = float(int(time.time()))
        self.offset = 0.0

    def __call__(self) -> float:
        return self.start + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def page(request: Request) -> JSONResponse:
    session = get_session(request)
    if session is None:
        return JSONResponse({"authenticated": False})
    return JSONResponse(
        {
            "authenticated": True,
            "sub": session.user.id,
            "jti": session.claims["jti"],
            "email": session.user.email,
        }
    )


@dataclass
class Stack:
    issuer: DevIssuer
    clock: Clock
    middleware: JWTSessionMiddleware
    base_url: str


@contextmanager
def running_stack() -> Iterator[Stack]:
    """A served DevIssuer and the app pointed at its real token endpoint."""
    clock = Clock()
    with DevIssuer.serve(port=0, clock=clock) as issuer:
        issuer.access_ttl = ACCESS_TTL
        config = AppConfig(
            auth={
                "issuer": issuer.url,
                "audience": "api",
                "client_id": "web",
                "jwks": parse_jwks(issuer.jwks()),
                "leeway": 0,
            },
            endpoints={"token": issuer.url + "/token"},
            keys={"remote": "never"},
            refresh={"skew": SKEW},
        )
        verifier = TokenVerifier.from_config(config, now=clock)
        holder: dict[str, JWTSessionMiddleware] = {}

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            # The refresher's HTTP client lives on the server's loop: close it there.
            refresher: Any = holder["middleware"].refresher
            await refresher.aclose()

        inner = Starlette(routes=[Route("/", page)], lifespan=lifespan)
        middleware = JWTSessionMiddleware(inner, config, verifier=verifier)
        holder["middleware"] = middleware
        with serve_app(middleware) as base_url:
            yield Stack(issuer, clock, middleware, base_url)


def log_in(client: httpx2.Client | httpx2.AsyncClient, tokens: dict[str, Any]) -> None:
    for kind, name in PLAIN.items():
        client.cookies.set(name, tokens[f"{kind}_token"], domain="127.0.0.1", path="/")


def server_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the servers and jwtedge logged.

    The test's own client is left out: httpcore logs the response headers it
    receives at DEBUG, Set-Cookie included, which is the browser's side.
    """
    main = threading.main_thread().name
    return "\n".join(
        f"{record.name} {record.getMessage()} {record.args!r}"
        for record in caplog.records
        if record.threadName != main or record.name.startswith("jwtedge")
    )


def assert_loopback_cookie(header: str) -> None:
    """Plain http to 127.0.0.1 with ``cookies.secure=auto``: no Secure, no ``__Host-``."""
    name, *attributes = [part.strip() for part in header.split(";")]
    assert name.split("=", 1)[0] in PLAIN.values()
    assert {"HttpOnly", "Path=/", "SameSite=Lax", f"Max-Age={30 * 86400}"} <= set(attributes)
    assert "Secure" not in attributes


def assert_no_token_in(text: str, *tokens: str) -> None:
    for token in tokens:
        assert token not in text


def test_page_loads_keep_working_across_expiries_with_one_refresh_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with running_stack() as stack, httpx2.Client(base_url=stack.base_url) as client:
        issuer = stack.issuer
        tokens = issuer.login("u1")
        seen += [tokens["access_token"], tokens["id_token"], tokens["refresh_token"]]
        log_in(client, tokens)

        first = client.get("/")
        assert first.json()["authenticated"] is True
        assert "set-cookie" not in first.headers
        jtis = [first.json()["jti"]]

        for expiry in range(1, 5):
            stack.clock.advance(EXPIRE)
            refreshed = client.get("/")
            assert refreshed.status_code == 200
            assert refreshed.json()["authenticated"] is True
            assert refreshed.json()["jti"] not in jtis
            assert refreshed.headers["cache-control"] == "no-store"
            for header in refreshed.headers.get_list("set-cookie"):
                assert_loopback_cookie(header)
            assert issuer.stats.refresh_grants == expiry
            jtis.append(refreshed.json()["jti"])
            seen += [cookie.value for cookie in client.cookies.jar if cookie.value]

            for _ in range(3):
                again = client.get("/")
                assert again.json()["jti"] == jtis[-1]
                assert "set-cookie" not in again.headers
            assert issuer.stats.refresh_grants == expiry

        assert issuer.stats.token_requests == 4
        assert issuer.stats.reuse_detected == 0
        assert issuer.stats.revoked_families == 0
        stats = stack.middleware.stats
        assert stats.refreshed == 4
        assert stats.refresh_failed == {}
        shown = repr(stats.snapshot()) + repr(stack.middleware.refresher)

    assert any(record.threadName == "jwtedge-app" for record in caplog.records)
    assert_no_token_in(server_logs(caplog) + shown, *seen)


async def test_parallel_page_loads_at_expiry_share_one_refresh_over_real_http(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_stack() as stack:
        issuer = stack.issuer
        tokens = issuer.login("u1")
        stack.clock.advance(EXPIRE)
        cookie = "; ".join(f"{name}={tokens[f'{kind}_token']}" for kind, name in PLAIN.items())

        async with httpx2.AsyncClient(base_url=stack.base_url) as client:
            responses = await asyncio.gather(
                *(client.get("/", headers={"Cookie": cookie}) for _ in range(20))
            )

        assert issuer.stats.refresh_grants == 1
        assert issuer.stats.token_requests == 1
        assert issuer.stats.revoked_families == 0
        assert all(response.json()["authenticated"] for response in responses)
        assert len({response.json()["jti"] for response in responses}) == 1
        set_cookies = {tuple(response.headers.get_list("set-cookie")) for response in responses}
        assert len(set_cookies) == 1
        (values,) = set_cookies
        assert {value.split("=", 1)[0] for value in values} == set(PLAIN.values())

    assert_no_token_in(server_logs(caplog), tokens["refresh_token"], tokens["access_token"])


def test_an_issuer_that_refuses_the_refresh_token_signs_the_browser_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_stack() as stack, httpx2.Client(base_url=stack.base_url) as client:
        tokens = stack.issuer.login("u1")
        log_in(client, tokens)
        stack.clock.advance(EXPIRE)
        stack.issuer.fail_mode = "invalid_grant"

        response = client.get("/")

        assert response.json()["authenticated"] is False
        assert all("Max-Age=0" in value for value in response.headers.get_list("set-cookie"))
        assert {cookie.name for cookie in client.cookies.jar} == set()
        assert stack.issuer.stats.token_requests == 1

    assert_no_token_in(server_logs(caplog), tokens["refresh_token"])
