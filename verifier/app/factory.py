"""``create_app``: the reference app for a config, its middleware stack and lifespan."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ..clock import wall_clock
from ..config import AppConfig
from ..cookies import CookieJar
from ..errors import JWKSError
from ..login import LOGOUT_PATH, LoginFlow, LogoutTokens
from ..metrics import EdgeCollector, EdgeMetrics, create_registry
from ..middleware import JWTSessionMiddleware
from ..refresh import InProcessRefresher, Refresher, refresher_from_config
from ..remote import RemoteKeys
from ..stats import MiddlewareStats
from ..tokens import TokenVerifier
from .routes import edge_routes
from .state import METHODS, EdgeState

__all__ = ["app_from_env", "create_app"]


class _Timing:
    """Observe each HTTP request's duration under its route template."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute], metrics: EdgeMetrics) -> None:
        self.app = app
        self.routes = routes
        self.histogram = metrics.request_duration

    def _template(self, scope: Scope) -> str:
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", "other")
            if match is Match.PARTIAL and partial is None:
                partial = getattr(route, "path", "other")
        return partial or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.histogram.labels(route=self._template(scope), method=method).observe(
                time.perf_counter() - start
            )


def _middleware_config(config: AppConfig, login: LoginFlow) -> AppConfig:
    """``config`` with the callback and logout paths excluded from authentication and refresh."""
    extra = [
        path for path in (login.callback_path, LOGOUT_PATH) if path not in config.http.exclude_paths
    ]
    if not extra:
        return config
    http = config.http.model_copy(update={"exclude_paths": [*config.http.exclude_paths, *extra]})
    return config.model_copy(update={"http": http})


def create_app(
    config: AppConfig,
    *,
    issuer_transport: httpx2.AsyncBaseTransport | None = None,
    verifier: TokenVerifier | None = None,
    remote: RemoteKeys | None = None,
    refresher: Refresher | None = None,
    now: Callable[[], float] = wall_clock,
) -> Starlette:
    """The reference edge app for ``config`` (:mod:`verifier.app` lists the routes).

    ``issuer_transport`` carries every call to the issuer (token exchange,
    refresh, revocation, run-time JWKS fetches): tests route it to a
    DevIssuer's ASGI app. With ``refresh.redis_url`` set, refreshes are
    coordinated on Redis (:mod:`verifier.redis_refresher`) so several workers
    or replicas never spend one refresh token twice. ``verifier``, ``remote``
    and ``refresher`` replace the ones built from ``config``; ``now`` is the
    wall clock of the login state cookie. Raises :class:`~verifier.errors.ConfigInvalid` when login
    would be served without ``login.state_key`` (no I/O happens here).
    """
    verifier = verifier or TokenVerifier.from_config(config)
    owned_remote = remote is None
    remote = remote or RemoteKeys.from_config(config, verifier.keys, transport=issuer_transport)
    owned_refresher = refresher is None
    if refresher is None:
        refresher = refresher_from_config(config, verifier, transport=issuer_transport)
    login = LoginFlow(config, verifier, remote=remote, transport=issuer_transport, now=now)
    stats = MiddlewareStats()
    collector = EdgeCollector(
        stats=stats, verifier=verifier, remote=remote, refresher=refresher, login=login.stats
    )
    edge = EdgeState(
        config=config,
        verifier=verifier,
        remote=remote,
        refresher=refresher,
        stats=stats,
        login=login,
        metrics=create_registry(collector),
    )
    routes = edge_routes(edge)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        jwks = verifier.keys.jwks
        if remote.mode == "unknown-kid" and (jwks is None or len(jwks) == 0):
            # Nothing baked: fetch once now, so /readyz can turn ready before any token.
            with contextlib.suppress(JWKSError):
                await remote.refresh_now()
        try:
            yield
        finally:
            await login.aclose()
            if owned_refresher and isinstance(refresher, InProcessRefresher):
                await refresher.aclose()
            if owned_remote:
                await remote.aclose()

    middleware = [
        Middleware(_Timing, routes=routes, metrics=edge.metrics),
        Middleware(
            LogoutTokens,
            path=LOGOUT_PATH,
            jar=CookieJar(config.cookies),
            secure_mode=config.cookies.secure,
        ),
        Middleware(
            JWTSessionMiddleware,
            config=_middleware_config(config, login),
            verifier=verifier,
            remote=remote,
            refresher=refresher,
            stats=stats,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.edge = edge
    return app


def app_from_env() -> Starlette:
    """The app for ``APP_CONFIG_*`` (uvicorn factory: ``verifier.app:app_from_env``)."""
    return create_app(AppConfig())
