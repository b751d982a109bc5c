"""Default clocks read the time when called, so a user's freezegun moves them.

A default bound at import (``now: Clock = time.time``) is the real function
object, which ``freeze_time`` never replaces: a token captured yesterday could
not be checked at its own time. Every default clock is now looked up at call
time (:mod:`verifier.clock`). ``real_asyncio=True`` keeps the event loop on
real monotonic time, so the middleware still serves requests while frozen.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx2
import pytest
from freezegun import freeze_time
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from verifier.app import create_app
from verifier.clock import monotonic_clock, wall_clock
from verifier.config import AppConfig
from verifier.errors import TokenExpired
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.remote import RemoteKeys
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier
from verifier.websocket import CloseAtExpiry

ISSUER = "http://127.0.0.1:9000"
#: When the token was minted: long ago, so only a moved clock accepts it.
MINTED = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
T0 = int(MINTED.timestamp())
TTL = 300


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=lambda: T0)


@pytest.fixture(scope="module")
def config(issuer: DevIssuer) -> AppConfig:
    meta = {"issuer": ISSUER, "baked_at": "2024-01-01T00:00:00Z"}
    return AppConfig(
        _env_file=None,
        auth={
            "issuer": ISSUER,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
            "jwks_meta": meta,
            "leeway": 0,
        },
        keys={"remote": "never"},
        refresh={"enabled": False},
    )


@pytest.fixture(scope="module")
def token(issuer: DevIssuer) -> str:
    return issuer.access_token("u1", ttl=TTL)


def test_the_clock_helpers_follow_freezegun() -> None:
    with freeze_time(MINTED):
        assert wall_clock() == T0
        frozen = monotonic_clock()
        assert monotonic_clock() == frozen


def test_freeze_time_moves_token_verifier_from_config_without_passing_a_clock(
    config: AppConfig, token: str
) -> None:
    verifier = TokenVerifier.from_config(config)  # built outside: the clock is read later
    with pytest.raises(TokenExpired):
        verifier.verify_access(token)  # real time: long expired

    with freeze_time("2024-01-01 12:02:00"):
        assert verifier.verify_access(token)["sub"] == "u1"
    with freeze_time("2024-01-01 12:06:00"), pytest.raises(TokenExpired):
        verifier.verify_access(token)


async def whoami(request: Request) -> JSONResponse:
    await asyncio.sleep(0.01)  # the event loop still runs under the frozen clock
    session = get_session(request)
    return JSONResponse({"user": session.user.id if session else None})


async def test_freeze_time_moves_the_middlewares_clock_while_the_event_loop_runs(
    config: AppConfig, token: str
) -> None:
    app = JWTSessionMiddleware(Starlette(routes=[Route("/api/me", whoami)]), config)
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx2.ASGITransport(app=app)

    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        with freeze_time("2024-01-01 12:01:00", real_asyncio=True):
            inside = await asyncio.wait_for(client.get("/api/me", headers=headers), 10)
        with freeze_time("2024-01-01 12:10:00", real_asyncio=True):
            after = await asyncio.wait_for(client.get("/api/me", headers=headers), 10)
        now = await client.get("/api/me", headers=headers)

    assert inside.status_code == 200
    assert inside.json() == {"user": "u1"}
    assert after.status_code == 401
    assert after.json()["code"] == "token_expired"
    assert now.status_code == 401


def test_the_other_default_clocks_follow_freezegun(config: AppConfig) -> None:
    with freeze_time(MINTED):
        issuer = DevIssuer(issuer=ISSUER, audience="api", client_id="web")
        assert issuer.clock() == T0
        edge = create_app(config).state.edge
        assert edge.login.now() == T0
        assert CloseAtExpiry(Starlette()).now() == T0
        remote = RemoteKeys.from_config(config, TokenVerifier.from_config(config).keys)
        # baked_at is midnight; frozen at noon the bake is twelve hours old.
        assert remote.bake_age == 12 * 3600
