"""The reference edge app: what a jwtedge deployment looks like end to end.

``create_app(config)`` wires :class:`~verifier.middleware.JWTSessionMiddleware`
in front of a small Starlette app that shows every part of the design:

- ``/`` (a page with the user, their organizations, projects, token expiry
  and a live WebSocket panel), ``/account`` (a page that needs sign-in and
  sends anonymous browsers to the login), ``/api/session``,
  ``/api/orgs/{slug}/projects`` (an authorization example) and ``/ws``;
- ``/auth/verify``, the forward-auth endpoint for nginx ``auth_request`` (and
  Traefik's forwardAuth): it answers 200 with ``X-Auth-*`` headers, 401 or
  403 from claims alone, and never refreshes;
- ``/auth/login``, the callback and ``/auth/logout`` (:mod:`verifier.login`),
  and ``POST /auth/refresh`` to pick up changed claims at once;
- ``/healthz`` (no I/O), ``/readyz`` (the key layer's state) and ``/metrics``
  (:mod:`verifier.metrics`, one registry per app).

The callback and logout paths are added to ``http.exclude_paths`` for the
middleware: both write the token cookies themselves, and a refresh there
would append cookies that undo theirs (the CSRF rule still applies, it runs
on every path). Pages carry ``Cache-Control: no-store`` and a nonce-based
Content-Security-Policy; every value is escaped with :func:`html.escape`, and
no response other than a ``Set-Cookie`` ever holds a token.
"""

from __future__ import annotations

import contextlib
import html
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .authz import (
    ORG_ID_HEADER,
    ORG_SLUG_HEADER,
    require_role,
    requires_org,
    resolve_org,
    status_for,
    unauthenticated_response,
    validate_role,
)
from .clock import wall_clock
from .config import AppConfig
from .cookies import CookieJar, request_host
from .errors import AuthzError, ConfigInvalid, CSRFRejected, JWKSError, RefreshFailed
from .login import LOGOUT_PATH, LoginFlow, LogoutTokens
from .metrics import CONTENT_TYPE, EdgeCollector, EdgeMetrics, create_registry, render
from .middleware import JWTSessionMiddleware, error_response, get_session, refresh_now
from .refresh import InProcessRefresher, Refresher, refresher_from_config
from .remote import RemoteKeys
from .request_rules import (
    COOKIE_AUTH_KEY,
    header_field,
    is_websocket_handshake,
    origin_of,
    original_methods,
    refusal,
)
from .session import Organization, Session
from .stats import MiddlewareStats
from .tokens import TokenVerifier
from .websocket import CloseAtExpiry

__all__ = ["EdgeState", "app_from_env", "create_app"]

_NO_STORE = {"Cache-Control": "no-store"}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Characters kept as they are in X-Auth-* values; the rest is percent-encoded,
#: so a claim can never smuggle a comma into a list or a newline into a header.
_HEADER_SAFE = "@._-~+:/=!$&'()*;"
_NETLOC = re.compile(r"[A-Za-z0-9.\-:\[\]]+")


@dataclass
class EdgeState:
    """What one app holds (``app.state.edge``): for routes, metrics and tests."""

    config: AppConfig
    verifier: TokenVerifier
    remote: RemoteKeys
    refresher: Refresher | None
    stats: MiddlewareStats
    login: LoginFlow
    metrics: EdgeMetrics


# -- request timing ---------------------------------------------------------------------


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
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.histogram.labels(route=self._template(scope), method=method).observe(
                time.perf_counter() - start
            )


# -- pages --------------------------------------------------------------------------------

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse}th,td{padding:.25rem .75rem;text-align:left;"
    "border-bottom:1px solid #ddd}code,pre{font:13px ui-monospace,monospace}"
    "pre{background:#f5f5f5;padding:.75rem;overflow:auto;max-height:48rem}"
    "form.inline{display:inline}.muted{color:#666}button{font:inherit}"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _page(
    request: Request, title: str, body: str, *, script: str = "", status: int = 200
) -> Response:
    """An HTML page with a per-response CSP nonce; never cached (it may show a session)."""
    nonce = secrets.token_urlsafe(16)
    edge: EdgeState = request.app.state.edge
    netloc = request.url.netloc
    connect = "'self'"
    if _NETLOC.fullmatch(netloc):
        connect += f" {'wss' if request.url.scheme == 'https' else 'ws'}://{netloc}"
    form_action = "'self'"
    end_session = edge.config.endpoint("end_session")
    if (
        end_session
        and (origin := _origin(end_session))
        and _NETLOC.fullmatch(origin.split("//")[1])
    ):
        form_action += f" {origin}"
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"connect-src {connect}; form-action {form_action}; img-src 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    scripts = f"<script nonce='{nonce}'>{script}</script>" if script else ""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{_e(title)}</title><style nonce='{nonce}'>{_STYLE}</style></head>"
        f"<body>{body}{scripts}</body></html>\n"
    )
    headers = {
        **_NO_STORE,
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(document, status_code=status, headers=headers)


def _expiry(session: Session) -> str:
    moment = datetime.fromtimestamp(session.expires_at, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _orgs_table(session: Session) -> str:
    if not session.organizations:
        return "<p class=muted>No organizations.</p>"
    rows = "".join(
        f"<tr><td>{_e(org.name or org.label)}</td><td><code>{_e(org.label)}</code></td>"
        f"<td>{_e(org.role or 'no role')}</td></tr>"
        for org in session.organizations
    )
    return f"<table><tr><th>Organization</th><th>Slug</th><th>Role</th></tr>{rows}</table>"


def _projects_list(session: Session) -> str:
    if not session.projects:
        return "<p class=muted>No projects.</p>"
    names = {org.id: org.name or org.label for org in session.organizations}
    items = "".join(
        f"<li><code>{_e(project.slug or project.id)}</code>"
        + (
            f" in {_e(names.get(project.organization_id, project.organization_id))}"
            if project.organization_id
            else ""
        )
        + f" <span class=muted>({_e(project.id)})</span></li>"
        for project in session.projects
    )
    return f"<ul>{items}</ul>"


def _login_link(config: AppConfig, target: str) -> str:
    return f"{config.http.login_path}?next={quote(target, safe='/')}"


_HOME_SCRIPT = """
const expEl = document.getElementById("exp"), left = document.getElementById("left");
let exp = Number(expEl.dataset.exp);
function tick() {
  const s = Math.round(exp - Date.now() / 1000);
  left.textContent = s > 0 ? "in " + s + " s" : "expired: the next page load refreshes it";
}
tick(); setInterval(tick, 1000);
const note = document.getElementById("refresh-status");
async function refresh() {
  const r = await fetch("/auth/refresh", {method: "POST", credentials: "same-origin"});
  note.textContent = r.ok ? "refreshed" : "refresh failed (HTTP " + r.status + ")";
  return r.ok;
}
document.getElementById("refresh").addEventListener("click", async () => {
  if (await refresh()) location.reload();
});
const wsStatus = document.getElementById("ws-status"), wsLog = document.getElementById("ws-log");
function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  ws.onopen = () => { wsStatus.textContent = "connected"; };
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.session) { exp = data.session.expires_at; tick(); }
    wsLog.textContent = JSON.stringify(data, null, 2);
  };
  ws.onclose = async (event) => {
    wsStatus.textContent = "closed (" + event.code + ")";
    if (event.code === CLOSE_CODE) {
      wsStatus.textContent += ": the session expired; refreshing over HTTP and reconnecting";
      if (await refresh()) connect();
    }
  };
}
connect();
"""


def _home(request: Request, session: Session | None, edge: EdgeState) -> Response:
    config = edge.config
    if session is None:
        if edge.login.enabled:
            sign_in = f"<p><a href='{_e(_login_link(config, '/'))}'>Sign in</a></p>"
        else:
            sign_in = (
                "<p class=muted>Sign-in is not configured: the issuer has no authorization "
                "endpoint or auth.client_id is unset.</p>"
            )
        body = f"<h1>jwtedge</h1><p>You are not signed in.</p>{sign_in}"
        return _page(request, "jwtedge", body)
    user = session.user
    email = ""
    if user.email:
        verified = "verified" if user.email_verified else "not verified"
        email = f"<p>{_e(user.email)} <span class=muted>({verified})</span></p>"
    body = (
        f"<h1>Signed in as {_e(user.display_name)}</h1>{email}"
        f"<h2>Organizations</h2>{_orgs_table(session)}"
        f"<h2>Projects</h2>{_projects_list(session)}"
        "<h2>Session</h2>"
        f"<p>The access token expires <time id=exp datetime='{_e(_expiry(session))}' "
        f"data-exp='{_e(session.expires_at)}'>{_e(_expiry(session))}</time> "
        "(<span id=left></span>).</p>"
        "<div><button id=refresh type=button>Refresh now</button> "
        f"<form class=inline method=post action='{_e(LOGOUT_PATH)}'>"
        "<button type=submit>Sign out</button></form> <span id=refresh-status></span></div>"
        "<p><a href='/account'>Account</a> · <a href='/api/session'>/api/session</a></p>"
        "<h2>Live (WebSocket)</h2><p id=ws-status class=muted>connecting…</p>"
        "<pre id=ws-log></pre>"
    )
    script = _HOME_SCRIPT.replace("CLOSE_CODE", str(int(config.websocket.close_code)))
    return _page(request, f"jwtedge: {user.display_name}", body, script=script)


def _account(request: Request, session: Session) -> Response:
    user = session.user
    rows = [
        ("User id", user.id),
        ("Name", user.name or ""),
        ("Email", user.email or ""),
        ("Email verified", "yes" if user.email_verified else "no"),
        ("Session id", session.session_id or ""),
        ("Scopes", " ".join(session.token_scopes)),
        ("Organizations", ", ".join(org.name or org.label for org in session.organizations)),
        ("Access token expires", _expiry(session)),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    body = f"<h1>Account</h1><table>{table}</table><p><a href='/'>Back</a></p>"
    return _page(request, "Account", body)


# -- forward auth ----------------------------------------------------------------------------


def _header_value(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


#: Largest X-Auth-Roles / X-Auth-Permissions value, in bytes. nginx reads an
#: auth_request answer's headers into one buffer (proxy_buffer_size, 4 KiB or
#: 8 KiB by default); two capped lists plus the other X-Auth-* headers fit.
#: A longer list is cut at a whole entry and X-Auth-Truncated names it.
LIST_HEADER_CAP = 1024


def _header_list(values: Sequence[str], cap: int = LIST_HEADER_CAP) -> tuple[str, bool]:
    """Comma-joined percent-encoded ``values`` within ``cap`` bytes; and whether any were cut."""
    kept: list[str] = []
    size = 0
    for value in values:
        encoded = _header_value(value)
        size += len(encoded) + (1 if kept else 0)
        if size > cap:
            return ",".join(kept), True
        kept.append(encoded)
    return ",".join(kept), False


def _own_origin(request: Request) -> str:
    """The origin the browser used. On this endpoint the request comes from the
    proxy: Traefik names the browser's host in X-Forwarded-Host (and scheme in
    X-Forwarded-Proto), and it sets them itself from what the browser sent, so a
    browser cannot forge them; the shipped nginx config sets both as well."""
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme)
    host = request.headers.get("x-forwarded-host", "") or request_host(request.scope)
    return origin_of(scheme, host)


def _forward_rules(request: Request, edge: EdgeState, *, websocket: bool) -> CSRFRejected | None:
    """The middleware's browser rules (:func:`verifier.request_rules.refusal`) applied
    to the request the proxy is about to pass on: its method, its Origin, whether
    it is a WebSocket handshake. Whether cookies authenticate it is the
    middleware's own answer for this request (the token cookies are gone from
    the headers here)."""
    headers = request.scope["headers"]
    return refusal(
        cookie_auth=bool(request.scope.get(COOKIE_AUTH_KEY)),
        methods=original_methods(headers),
        websocket=websocket,
        origin=header_field(headers, b"origin"),
        sec_fetch_site=header_field(headers, b"sec-fetch-site"),
        own_origin=lambda: _own_origin(request),
        allowed_origins=edge.config.websocket.allowed_origins,
    )


def _forward_refusal(exc: AuthzError | CSRFRejected | ConfigInvalid) -> Response:
    status = status_for(exc, forward_auth=True)
    return JSONResponse(exc.to_dict(), status_code=status, headers=_NO_STORE)


def _forward_auth(request: Request, edge: EdgeState) -> Response:
    session = get_session(request)
    # Before the session, as in the middleware: a cross-site request with a bad
    # cookie is refused for its origin, not sent to sign in.
    websocket = is_websocket_handshake(request.scope["headers"])
    refused = _forward_rules(request, edge, websocket=websocket)
    if refused is not None:
        if websocket:
            edge.stats.websocket_refused["origin"] += 1
        else:
            edge.stats.csrf_rejected += 1
        return _forward_refusal(refused)
    if session is None:
        return unauthenticated_response()
    org_param = request.query_params.get("org") or None
    role = request.query_params.get("role") or None
    if role is not None:
        try:
            validate_role(role, session.role_ranks)
        except ValueError:
            # A misconfigured proxy rule: fail loudly (nginx turns it into a 500).
            return _forward_refusal(ConfigInvalid("the role query parameter names an unknown role"))
    explicit_id = request.headers.get(ORG_ID_HEADER)
    explicit_slug = request.headers.get(ORG_SLUG_HEADER)
    org: Organization | None = None
    try:
        org = resolve_org(
            session,
            explicit_id=explicit_id,
            explicit_slug=explicit_slug,
            explicit=org_param,
            active_claim=edge.config.claims.active_org,
        )
    except AuthzError as exc:
        # Nothing asked for an organization: just leave X-Auth-Org out.
        if org_param or role or (explicit_id or "").strip() or (explicit_slug or "").strip():
            return _forward_refusal(exc)
    if role is not None:
        assert org is not None
        try:
            require_role(org, role, session.role_ranks)
        except AuthzError as exc:
            return _forward_refusal(exc)
    headers = {**_NO_STORE, "X-Auth-User": _header_value(session.user.id)}
    if session.user.email and session.user.email_verified:
        headers["X-Auth-Email"] = _header_value(session.user.email)
    if org is not None:
        headers["X-Auth-Org"] = _header_value(org.slug or org.id)
        if org.role:
            headers["X-Auth-Role"] = _header_value(org.role)
    headers["X-Auth-Orgs"] = ",".join(_header_value(o.slug or o.id) for o in session.organizations)
    headers["X-Auth-Projects"] = ",".join(_header_value(p.id) for p in session.projects)
    truncated = []
    for name, values in (("Roles", session.roles), ("Permissions", session.permissions)):
        headers[f"X-Auth-{name}"], cut = _header_list(values)
        if cut:
            truncated.append(name.lower())
    if truncated:
        headers["X-Auth-Truncated"] = ",".join(truncated)
    return Response(status_code=200, headers=headers)


# -- health -----------------------------------------------------------------------------------


def _readiness(edge: EdgeState) -> tuple[bool, dict[str, Any]]:
    remote, config = edge.remote, edge.config
    jwks = edge.verifier.keys.jwks
    kids = [kid for kid in (jwks.kids if jwks is not None else ()) if kid is not None]
    count = len(jwks) if jwks is not None else 0
    usable = count > 0 or config.auth.hs_secret is not None
    stale = remote.stale
    reasons = []
    if not usable:
        reasons.append("no verification key: nothing baked and nothing fetched yet")
    if stale:
        reasons.append("the fetched keys are older than keys.stale_if_error")
    meta = config.auth.jwks_meta
    baked_at = meta.baked_at if meta is not None else None
    last_fetch_at = remote.last_fetch_at
    body = {
        "status": "ready" if not reasons else "unready",
        "reasons": reasons,
        "keys": {"source": remote.keys_source, "count": count, "kids": kids, "stale": stale},
        "bake": {
            "baked_at": baked_at.isoformat() if baked_at is not None else None,
            "age_seconds": remote.bake_age,
        },
        # Setup problems seen at run time; they do not make the app unready.
        "warnings": edge.login.warnings(),
        "remote": {
            "mode": remote.mode,
            "last_fetch_error": remote.last_fetch_error,
            "last_fetch_at": (
                datetime.fromtimestamp(last_fetch_at, UTC).isoformat()
                if last_fetch_at is not None
                else None
            ),
        },
    }
    return not reasons, body


# -- the app ------------------------------------------------------------------------------------


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
    """The reference edge app for ``config`` (see the module doc for the routes).

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
    routes = _routes(edge)

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


def _routes(edge: EdgeState) -> list[BaseRoute]:
    config = edge.config

    async def home(request: Request) -> Response:
        return _home(request, get_session(request), edge)

    async def account(request: Request) -> Response:
        session = get_session(request)
        if session is None:
            if not edge.login.enabled:
                body = "<h1>Sign-in required</h1><p>Sign-in is not configured here.</p>"
                return _page(request, "Sign-in required", body, status=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            location = _login_link(config, target)
            return Response(status_code=302, headers={**_NO_STORE, "Location": location})
        return _account(request, session)

    async def api_session(request: Request) -> Response:
        session = get_session(request)
        if session is None:
            return unauthenticated_response()
        return JSONResponse(session.to_dict(), headers=_NO_STORE)

    @requires_org(path_param="slug", active_claim=config.claims.active_org)
    async def org_projects(request: Request) -> Response:
        session = get_session(request)
        assert session is not None
        org: Organization = request.state.org
        projects = [
            {"id": p.id, "slug": p.slug, "organization_id": p.organization_id}
            for p in session.projects
            if p.organization_id == org.id
        ]
        body = {
            "organization": {"id": org.id, "slug": org.slug, "name": org.name, "role": org.role},
            "projects": projects,
        }
        return JSONResponse(body, headers=_NO_STORE)

    async def ws_session(websocket: WebSocket) -> None:
        session = get_session(websocket)
        if session is None:
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(unauthenticated_response())
            else:
                await websocket.close(code=1008)
            return
        await websocket.accept()
        message = {"type": "session", "session": session.to_dict()}
        await websocket.send_text(orjson.dumps(message).decode("utf-8"))
        while True:
            incoming = await websocket.receive()
            if incoming["type"] == "websocket.disconnect":
                return
            if incoming.get("text") == "session":
                await websocket.send_text(orjson.dumps(message).decode("utf-8"))

    async def forward_auth(request: Request) -> Response:
        return _forward_auth(request, edge)

    async def auth_refresh(request: Request) -> Response:
        try:
            session = await refresh_now(request)
        except RefreshFailed as exc:
            return error_response(exc)
        return JSONResponse(session.to_dict(), headers=_NO_STORE)

    async def favicon(request: Request) -> Response:
        # Browsers ask on every page load; an empty answer keeps consoles clean.
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok", headers=_NO_STORE)

    async def readyz(request: Request) -> Response:
        await edge.remote.revalidate()
        ready, body = _readiness(edge)
        return JSONResponse(body, status_code=200 if ready else 503, headers=_NO_STORE)

    async def metrics(request: Request) -> Response:
        return Response(render(edge.metrics.registry), media_type=CONTENT_TYPE, headers=_NO_STORE)

    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/account", account, methods=["GET"]),
        Route("/api/session", api_session, methods=["GET"]),
        Route("/api/orgs/{slug}/projects", org_projects, methods=["GET"]),
        WebSocketRoute(
            "/ws", CloseAtExpiry.endpoint(ws_session, close_code=config.websocket.close_code)
        ),
        Route(config.http.forward_auth_path, forward_auth, methods=sorted(_METHODS)),
        Route("/auth/refresh", auth_refresh, methods=["POST"]),
        Route(LOGOUT_PATH, edge.login.logout, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if edge.login.enabled:
        routes += [
            Route(config.http.login_path, edge.login.login, methods=["GET"]),
            Route(edge.login.callback_path, edge.login.callback, methods=["GET"]),
        ]
    return routes


def app_from_env() -> Starlette:
    """The app for ``APP_CONFIG_*`` (uvicorn factory: ``verifier.app:app_from_env``)."""
    return create_app(AppConfig())
