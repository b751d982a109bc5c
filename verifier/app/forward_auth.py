"""The forward-auth endpoint (``/auth/verify``) for nginx ``auth_request`` and Traefik.

It answers 200 with ``X-Auth-*`` headers, 401 or 403, from the claims the
middleware verified, and never refreshes (a ``Set-Cookie`` on an
``auth_request`` subrequest never reaches the browser). The browser rules
(CSRF, cross-origin WebSocket handshakes) are the middleware's own, applied
to the original request the proxy describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..authz import (
    ORG_ID_HEADER,
    ORG_SLUG_HEADER,
    require_role,
    resolve_org,
    status_for,
    unauthenticated_response,
    validate_role,
)
from ..cookies import request_host
from ..errors import AuthzError, ConfigInvalid, CSRFRejected
from ..middleware import get_session
from ..request_rules import (
    COOKIE_AUTH_KEY,
    header_field,
    is_websocket_handshake,
    origin_of,
    original_methods,
    refusal,
)
from ..session import Organization
from .state import NO_STORE, EdgeState

__all__ = ["LIST_HEADER_CAP", "forward_auth_response"]

#: Characters kept as they are in X-Auth-* values; the rest is percent-encoded,
#: so a claim can never smuggle a comma into a list or a newline into a header.
_HEADER_SAFE = "@._-~+:/=!$&'()*;"


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
    return JSONResponse(exc.to_dict(), status_code=status, headers=NO_STORE)


def forward_auth_response(request: Request, edge: EdgeState) -> Response:
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
    headers = {**NO_STORE, "X-Auth-User": _header_value(session.user.id)}
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
