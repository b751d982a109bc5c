"""Authorization from the session: organizations, projects, roles, scopes.

The middleware answers "who is this" (401); this module answers "may they"
(403, or 400 when the request must choose an organization). Everything here
reads the signed claims in :class:`~verifier.session.Session` and never calls
the issuer.

Organization context (:func:`resolve_org`), first match wins:

1. an organization the request names explicitly (``X-Org-Id``, matched by id;
   ``X-Org-Slug``, matched by slug; a path parameter the app names, matched
   by id, then slug). It must be one of the caller's memberships, else
   ``org_forbidden``; selectors naming different organizations are a bad
   request (``org_required``);
2. the session's ``active_organization``: the membership the token says is
   current (by the issuer profile; for ``jwtedge`` the ``active_org`` claim,
   whose name is configurable, by id then slug). A claim naming an
   organization the caller is not a member of is ignored, not refused: it is
   the issuer's hint about the last selection, can only go stale, and
   ignoring it can never grant more than the memberships the same token lists;
3. the only organization, when there is exactly one;
4. otherwise ``org_required`` (400, its message lists the slugs) when there
   are several, or ``org_membership_required`` (403) when there are none.

Project access (:func:`check_project`, :func:`acheck_project`) never lets the
request say which organization a project belongs to: a project is allowed
when the token lists it, or when the app's own ``lookup`` names an
organization the caller is a member of. Once the request names an
organization (``X-Org-Id``, ``X-Org-Slug``, or the organization path
parameter of a :func:`requires_org` on the same endpoint: see
:func:`named_org`), only that organization's projects are allowed: listed in
the token with its ``organizationId``, or placed in it by ``lookup``. This
holds whatever order the decorators (or FastAPI dependencies) come in. The
``active_org`` claim alone does not narrow project access: a caller who names
no organization keeps the projects of all their organizations.

The decorators follow ``starlette.authentication.requires``: they find the
``request`` or ``websocket`` argument by name, answer anonymous callers with
401 and authorization failures with the error's JSON and status, and leave
the resolved organization in ``request.state.org``. FastAPI dependencies live
in :mod:`verifier.fastapi`; this module never imports FastAPI.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from .authz_orgs import (
    DEFAULT_ACTIVE_ORG_CLAIM,
    ORG_ID_HEADER,
    ORG_SLUG_HEADER,
    SIGN_IN,
    ProjectLookup,
    acheck_project,
    check_project,
    named_org,
    org_from_request,
    path_value,
    require_session,
    resolve_org,
)
from .authz_roles import (
    require_permissions,
    require_role,
    require_roles,
    require_scopes,
    validate_names,
    validate_role,
    validate_scopes,
)
from .errors import AuthzError, OrgRequired, TokenMissing, VerifierError
from .middleware import error_response

# The checks live in authz_orgs.py (organizations, projects) and
# authz_roles.py (roles, permissions, scopes); this module adds the responses
# and the Starlette decorators, and is where every name is imported from.
__all__ = [
    "DEFAULT_ACTIVE_ORG_CLAIM",
    "ORG_ID_HEADER",
    "ORG_REQUIRED_FORWARD_AUTH_STATUS",
    "ORG_SLUG_HEADER",
    "ProjectLookup",
    "acheck_project",
    "check_project",
    "error_body",
    "named_org",
    "org_from_request",
    "require_permissions",
    "require_role",
    "require_roles",
    "require_scopes",
    "require_session",
    "requires_org",
    "requires_permissions",
    "requires_project",
    "requires_roles",
    "requires_scopes",
    "resolve_org",
    "response_for",
    "status_for",
    "unauthenticated_response",
    "validate_names",
    "validate_role",
    "validate_scopes",
]

_P = ParamSpec("_P")

#: ``org_required`` on the forward-auth endpoint: nginx ``auth_request`` only
#: accepts 2xx, 401 and 403 from it (anything else becomes a 500).
ORG_REQUIRED_FORWARD_AUTH_STATUS = 403

# RFC 6750 §3.1: a request without credentials gets a bare challenge.
_CHALLENGE = "Bearer"
# Refusing an upgrade where the denial-response extension is missing:
# before accept the client sees 403 whatever the code; 1008 is "policy".
_WS_POLICY_VIOLATION = 1008


# -- responses ------------------------------------------------------------------------


def status_for(exc: VerifierError, *, forward_auth: bool) -> int:
    """The HTTP status to answer ``exc`` with.

    On the forward-auth endpoint nginx accepts only 2xx, 401 and 403, so a
    4xx other than 401 (``org_required``) becomes 403; server errors keep
    their status. Elsewhere it is ``exc.status``.
    """
    if forward_auth and isinstance(exc, OrgRequired):
        return ORG_REQUIRED_FORWARD_AUTH_STATUS
    if forward_auth and 400 <= exc.status < 500 and exc.status != 401:
        return 403
    return exc.status


def error_body(exc: VerifierError) -> dict[str, str]:
    """The JSON body for ``exc``; an anonymous caller's ``error`` is ``invalid_token``."""
    if isinstance(exc, TokenMissing):
        return {"error": "invalid_token", "code": exc.code, "message": exc.message}
    return exc.to_dict()


def unauthenticated_response(exc: TokenMissing | None = None) -> Response:
    """401 for a caller without credentials: ``token_missing`` and a bare ``Bearer`` challenge."""
    body = error_body(exc or TokenMissing(SIGN_IN))
    headers = {"WWW-Authenticate": _CHALLENGE, "Cache-Control": "no-store"}
    return JSONResponse(body, status_code=401, headers=headers)


def response_for(exc: VerifierError) -> Response:
    """The JSON answer for an authorization failure (401 for anonymous callers)."""
    if isinstance(exc, TokenMissing):
        return unauthenticated_response(exc)
    return error_response(exc)


# -- Starlette decorators ------------------------------------------------------------

#: A check gets the connection and the organization path parameters known
#: for the endpoint (its own and those of the jwtedge decorators it wraps).
_Check = Callable[[HTTPConnection, tuple[str, ...]], Awaitable[None]]
#: Attribute naming the organization path parameters of the jwtedge checks on
#: a function. ``functools.wraps`` copies it outward, so an outer project
#: check knows the parameter an inner organization check reads.
_ORG_PARAMS_ATTR = "__jwtedge_org_params__"


def _connection_argument(func: Callable[..., Any]) -> tuple[int, str]:
    """Position and name of the ``request`` / ``websocket`` parameter, as Starlette finds it."""
    for idx, parameter in enumerate(inspect.signature(func).parameters.values()):
        if parameter.name in ("request", "websocket"):
            return idx, parameter.name
    raise TypeError(f'No "request" or "websocket" argument on function "{func}"')


def _guard(
    check: _Check, *, org_params: tuple[str, ...] = ()
) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Wrap an endpoint like ``starlette.authentication.requires`` does."""

    def decorator(func: Callable[_P, Any]) -> Callable[_P, Any]:
        idx, kind = _connection_argument(func)
        inner: tuple[str, ...] = getattr(func, _ORG_PARAMS_ATTR, ())
        known = (*inner, *(p for p in org_params if p not in inner))

        if kind == "websocket":

            @functools.wraps(func)
            async def websocket_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
                websocket = kwargs.get("websocket", args[idx] if idx < len(args) else None)
                assert isinstance(websocket, WebSocket), (
                    "Parameter with name 'websocket' is required to be of type 'WebSocket'"
                    f" not '{type(websocket).__name__}'"
                )
                try:
                    await check(websocket, known)
                except (TokenMissing, AuthzError) as exc:
                    await _deny(websocket, exc)
                    return
                await func(*args, **kwargs)

            setattr(websocket_wrapper, _ORG_PARAMS_ATTR, known)
            return websocket_wrapper

        # Sync endpoints get an async wrapper too (the check may await an
        # async lookup); the endpoint itself still runs in the threadpool.
        @functools.wraps(func)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            request = kwargs.get("request", args[idx] if idx < len(args) else None)
            assert isinstance(request, Request), (
                "Parameter with name 'request' is required to be of type 'Request'"
                f" not '{type(request).__name__}'"
            )
            try:
                await check(request, known)
            except (TokenMissing, AuthzError) as exc:
                return response_for(exc)
            if is_async_callable(func):
                return await func(*args, **kwargs)
            return await run_in_threadpool(func, *args, **kwargs)

        setattr(wrapper, _ORG_PARAMS_ATTR, known)
        return wrapper

    return decorator


async def _deny(websocket: WebSocket, exc: VerifierError) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response_for(exc))
    else:
        await websocket.close(code=_WS_POLICY_VIOLATION)


def requires_org(
    role: str | None = None,
    *,
    path_param: str | None = None,
    active_claim: str = DEFAULT_ACTIVE_ORG_CLAIM,
) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Resolve the organization (``request.state.org``), optionally at least ``role``.

    ``path_param`` names a route parameter holding the organization's id or
    slug. ``role`` passes when any of the caller's roles in the organization
    ranks at least as high, by the session's ranking (the issuer profile's,
    or ``claims.role_ranks``). A malformed ``role`` raises ``ValueError``
    here, at decoration time; one the ranking does not know, at request time.
    """
    if role is not None:
        validate_role(role, None)

    async def check(conn: HTTPConnection, _known: tuple[str, ...]) -> None:
        org = org_from_request(conn, path_param=path_param, active_claim=active_claim)
        if role is not None:
            require_role(org, role, require_session(conn).role_ranks)
        conn.state.org = org

    return _guard(check, org_params=(path_param,) if path_param is not None else ())


def requires_project(
    param: str = "project_id", *, lookup: ProjectLookup | None = None
) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Allow the project named by path parameter ``param`` (``request.state.project_id``).

    ``lookup(project_id) -> organization id | None`` (sync or async) is the
    app's source of truth for projects the token does not list. When the
    request names an organization (``X-Org-Id``, ``X-Org-Slug``, or the path
    parameter of a :func:`requires_org` on the same endpoint, stacked above
    or below this one), the project must belong to that organization.
    """

    async def check(conn: HTTPConnection, known: tuple[str, ...]) -> None:
        session = require_session(conn)
        project_id = path_value(conn, param)
        org = named_org(conn, org_params=known)
        await acheck_project(session, project_id, lookup=lookup, org=org)
        conn.state.project_id = project_id

    return _guard(check)


def requires_scopes(*scopes: str) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Require every token scope in ``scopes`` (403 ``insufficient_scope`` otherwise)."""
    if not scopes:
        raise ValueError("requires_scopes needs at least one scope")
    validate_scopes(scopes)

    async def check(conn: HTTPConnection, _known: tuple[str, ...]) -> None:
        require_scopes(require_session(conn), *scopes)

    return _guard(check)


def requires_roles(*roles: str) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Require every global role in ``roles`` (``Session.roles``; 403 ``role_insufficient``)."""
    if not roles:
        raise ValueError("requires_roles needs at least one role")
    validate_names(roles, "role")

    async def check(conn: HTTPConnection, _known: tuple[str, ...]) -> None:
        require_roles(require_session(conn), *roles)

    return _guard(check)


def requires_permissions(*permissions: str) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Require every global permission in ``permissions`` (``Session.permissions``;
    403 ``insufficient_scope``)."""
    if not permissions:
        raise ValueError("requires_permissions needs at least one permission")
    validate_names(permissions, "permission")

    async def check(conn: HTTPConnection, _known: tuple[str, ...]) -> None:
        require_permissions(require_session(conn), *permissions)

    return _guard(check)
