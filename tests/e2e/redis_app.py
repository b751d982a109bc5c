"""App factory for the multi-replica e2e test, one per uvicorn process::

    python -m uvicorn tests.e2e.redis_app:create_app --factory --port N

Everything comes from ``APP_CONFIG_*`` (the baked JWKS included); the
refresher is the one the config asks for, which must be a
:class:`~verifier.redis_refresher.RedisRefresher`. ``/whoami`` answers with
the session's subject and this process's pid; ``/healthz/refresh`` (an
excluded path: no authentication) with the refresher's counters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from verifier.config import AppConfig
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.redis_refresher import RedisRefresher
from verifier.tokens import TokenVerifier


def create_app() -> ASGIApp:
    """The inner app behind JWTSessionMiddleware with a Redis-backed refresher."""
    config = AppConfig()
    verifier = TokenVerifier.from_config(config)
    refresher = RedisRefresher.from_config(config, verifier)
    if not isinstance(refresher, RedisRefresher):
        raise TypeError("APP_CONFIG_REFRESH__REDIS_URL must be set for this app")

    async def whoami(request: Request) -> JSONResponse:
        session = get_session(request)
        return JSONResponse(
            {"sub": session.user.id if session else None, "pid": os.getpid()},
            headers={"cache-control": "no-store"},
        )

    async def refresh_stats(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid(), **dataclasses.asdict(refresher.stats)})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await refresher.aclose()

    inner = Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/healthz", healthz),
            Route("/healthz/refresh", refresh_stats),
        ],
        lifespan=lifespan,
    )
    return JWTSessionMiddleware(inner, config=config, verifier=verifier, refresher=refresher)
