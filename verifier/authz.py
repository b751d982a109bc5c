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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec

from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from .errors import (
    AuthzError,
    OrgForbidden,
    OrgMembershipRequired,
    OrgRequired,
    ProjectForbidden,
    RoleInsufficient,
    ScopeInsufficient,
    TokenMissing,
    VerifierError,
)
from .middleware import error_response, get_session
from .session import ROLE_RANK, Organization, Session, role_rank

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

ORG_ID_HEADER = "x-org-id"
ORG_SLUG_HEADER = "x-org-slug"
DEFAULT_ACTIVE_ORG_CLAIM = "active_org"

#: ``org_required`` on the forward-auth endpoint: nginx ``auth_request`` only
#: accepts 2xx, 401 and 403 from it (anything else becomes a 500).
ORG_REQUIRED_FORWARD_AUTH_STATUS = 403

#: The app's answer to "which organization owns this project?": an
#: organization id, or ``None`` when the project does not exist. Sync or async.
ProjectLookup = Callable[[str], str | Awaitable[str | None] | None]

# RFC 6750 §3.1: a request without credentials gets a bare challenge.
_CHALLENGE = "Bearer"
# Refusing an upgrade where the denial-response extension is missing:
# before accept the client sees 403 whatever the code; 1008 is "policy".
_WS_POLICY_VIOLATION = 1008
_SIGN_IN = "this endpoint needs a signed-in caller"


# -- organizations -------------------------------------------------------------


def _by_id(session: Session, org_id: str) -> Organization | None:
    return next((org for org in session.organizations if org.id == org_id), None)


def _by_slug(session: Session, slug: str) -> Organization | None:
    return next((org for org in session.organizations if org.slug == slug), None)


def _by_ref(session: Session, ref: str) -> Organization | None:
    """Id first, so a slug that happens to equal another org's id cannot win."""
    return _by_id(session, ref) or _by_slug(session, ref)


def _given(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _explicit_org(
    session: Session,
    explicit_id: str | None,
    explicit_slug: str | None,
    explicit: Sequence[str | None],
) -> Organization | None:
    """The organization the selectors name, ``None`` when they name none."""
    selectors = [
        ("id", _given(explicit_id), _by_id),
        ("slug", _given(explicit_slug), _by_slug),
        *(("reference", _given(ref), _by_ref) for ref in explicit),
    ]
    chosen: Organization | None = None
    for kind, value, find in selectors:
        if value is None:
            continue
        org = find(session, value)
        if org is None:
            raise OrgForbidden(selector=kind)
        if chosen is not None and org != chosen:
            raise OrgRequired(
                "the request names different organizations; name one",
                organizations=[o.slug or o.id for o in session.organizations],
            )
        chosen = org
    return chosen


def resolve_org(
    session: Session,
    *,
    explicit_id: str | None = None,
    explicit_slug: str | None = None,
    explicit: str | None = None,
    active_claim: str = DEFAULT_ACTIVE_ORG_CLAIM,
) -> Organization:
    """The organization this request acts in (see the module doc for the order).

    ``explicit_id`` matches ids only, ``explicit_slug`` slugs only, and
    ``explicit`` (a path parameter) an id, then a slug; empty values count as
    absent. Raises ``OrgForbidden`` when an explicit selector is not a
    membership, ``OrgRequired`` (400) when selectors disagree or when several
    memberships leave the choice open, ``OrgMembershipRequired`` when there
    are none.
    """
    chosen = _explicit_org(session, explicit_id, explicit_slug, (explicit,))
    if chosen is not None:
        return chosen

    if session.active_organization is not None:
        return session.active_organization
    # Sessions built elsewhere, or an app naming another claim than the config.
    active = session.claims.get(active_claim)
    if isinstance(active, str) and (org := _by_ref(session, active)) is not None:
        return org

    if len(session.organizations) == 1:
        return session.organizations[0]
    if not session.organizations:
        raise OrgMembershipRequired()
    slugs = [org.slug or org.id for org in session.organizations]
    raise OrgRequired(
        "choose an organization for this request (X-Org-Slug or X-Org-Id): one of "
        + ", ".join(slugs),
        organizations=slugs,
    )


def require_session(conn: HTTPConnection) -> Session:
    """The request's session; ``TokenMissing`` (401) when anonymous.

    Raises ``RuntimeError`` when ``JWTSessionMiddleware`` is not installed.
    """
    session = get_session(conn)
    if session is None:
        raise TokenMissing(_SIGN_IN)
    return session


def org_from_request(
    conn: HTTPConnection,
    *,
    path_param: str | None = None,
    active_claim: str = DEFAULT_ACTIVE_ORG_CLAIM,
) -> Organization:
    """:func:`resolve_org` fed from ``X-Org-Id``, ``X-Org-Slug`` and ``path_param``.

    Raises ``TokenMissing`` for anonymous callers, and ``RuntimeError`` when
    ``path_param`` is not a parameter of the matched route (a wiring mistake).
    """
    session = require_session(conn)
    explicit = None
    if path_param is not None:
        explicit = _path_value(conn, path_param)
        _record_org_params(conn, (path_param,))
    return resolve_org(
        session,
        explicit_id=conn.headers.get(ORG_ID_HEADER),
        explicit_slug=conn.headers.get(ORG_SLUG_HEADER),
        explicit=explicit,
        active_claim=active_claim,
    )


#: Where an organization check leaves the names of its organization path
#: parameters, so a project check on the same endpoint that runs after it
#: (the other decorator order) narrows to the same organization.
_ORG_PARAMS_KEY = "jwtedge.org_params"


def _path_value(conn: HTTPConnection, name: str) -> str:
    if name not in conn.path_params:
        raise RuntimeError(f"the route has no path parameter {name!r}")
    return str(conn.path_params[name])


def _record_org_params(conn: HTTPConnection, params: Sequence[str]) -> None:
    recorded = conn.scope.get(_ORG_PARAMS_KEY, ())
    conn.scope[_ORG_PARAMS_KEY] = (*recorded, *(p for p in params if p not in recorded))


def named_org(conn: HTTPConnection, *, org_params: Sequence[str] = ()) -> Organization | None:
    """The organization the request names explicitly, or ``None`` when it names none.

    Read from ``X-Org-Id``, ``X-Org-Slug``, the path parameters in
    ``org_params`` and those an organization check on this endpoint already
    recorded; never from the ``active_org`` claim. Raises ``OrgForbidden``
    when a selector names an organization the caller is not a member of, and
    ``OrgRequired`` when selectors disagree.
    """
    session = require_session(conn)
    params = (*org_params, *conn.scope.get(_ORG_PARAMS_KEY, ()))
    return _explicit_org(
        session,
        conn.headers.get(ORG_ID_HEADER),
        conn.headers.get(ORG_SLUG_HEADER),
        [_path_value(conn, name) for name in dict.fromkeys(params)],
    )


# -- projects --------------------------------------------------------------------


def _listed(session: Session, project_id: str, org: Organization | None) -> bool:
    return any(
        project.id == project_id and (org is None or project.organization_id == org.id)
        for project in session.projects
    )


def _owned(session: Session, owner: object, org: Organization | None) -> bool:
    """Whether the lookup's answer allows the project (in ``org`` once one is named)."""
    if org is not None:
        return isinstance(owner, str) and owner == org.id
    return isinstance(owner, str) and _by_id(session, owner) is not None


def check_project(
    session: Session,
    project_id: str,
    *,
    lookup: ProjectLookup | None = None,
    org: Organization | None = None,
) -> None:
    """Allow ``project_id`` when the token lists it, or ``lookup`` puts it in a membership.

    ``org`` is the organization the request named (:func:`named_org`): then
    the project must belong to it, listed in the token with its
    ``organizationId`` or placed in it by ``lookup``. ``lookup(project_id)``
    is the app's answer (an organization id, or None); it must be
    synchronous here (use :func:`acheck_project` for async ones). Raises
    ``ProjectForbidden`` otherwise.
    """
    if _listed(session, project_id, org):
        return
    if lookup is not None:
        owner = lookup(project_id)
        if inspect.isawaitable(owner):
            if inspect.iscoroutine(owner):
                owner.close()  # never awaited: close it to avoid a warning
            raise TypeError("lookup is asynchronous; use acheck_project")
        if _owned(session, owner, org):
            return
    raise ProjectForbidden()


async def acheck_project(
    session: Session,
    project_id: str,
    *,
    lookup: ProjectLookup | None = None,
    org: Organization | None = None,
) -> None:
    """:func:`check_project` for a sync or async ``lookup``."""
    if _listed(session, project_id, org):
        return
    if lookup is not None:
        owner = lookup(project_id)
        if inspect.isawaitable(owner):
            owner = await owner
        if _owned(session, owner, org):
            return
    raise ProjectForbidden()


# -- roles and scopes --------------------------------------------------------------


def validate_role(role: str, ranks: Mapping[str, int] | None = ROLE_RANK) -> str:
    """``role`` when ``ranks`` ranks it (the default ranking unless given), else ``ValueError``.

    ``ranks=None`` checks only that it is a usable name (decorators, which
    learn the issuer profile's ranking from the session at request time).
    """
    validate_names((role,), "role")
    if ranks is not None and role not in ranks:
        known = ", ".join(ranks)
        raise ValueError(f"unknown role {role!r}; known roles: {known}")
    return role


def require_role(org: Organization, role: str, ranks: Mapping[str, int] = ROLE_RANK) -> None:
    """``RoleInsufficient`` unless one of the caller's roles in ``org`` ranks at least ``role``.

    ``ranks`` is the ranking (the session's ``role_ranks``, i.e. the issuer
    profile's or ``claims.role_ranks``; member < admin < owner by default);
    unknown or missing roles rank 0. Requiring a role ``ranks`` does not know
    raises ``ValueError`` (a wiring mistake: add it to ``claims.role_ranks``).
    """
    if org.rank_in(ranks) < role_rank(validate_role(role, ranks), ranks):
        raise RoleInsufficient(
            f"this needs the {role} role in {org.slug or org.id}", required=role, role=org.role
        )


def validate_names(names: Sequence[str], kind: str = "name") -> tuple[str, ...]:
    """``names`` as a tuple; ``ValueError`` for an empty one or one holding whitespace."""
    for name in names:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"invalid {kind} {name!r}")
    return tuple(names)


def require_roles(session: Session, *roles: str) -> None:
    """``RoleInsufficient`` unless the session holds every global role in ``roles``."""
    held = session.roles
    missing = [role for role in validate_names(roles, "role") if role not in held]
    if missing:
        raise RoleInsufficient(
            "this needs the role: " + " ".join(missing), missing=missing, required=list(roles)
        )


def require_permissions(session: Session, *permissions: str) -> None:
    """``ScopeInsufficient`` (403, ``insufficient_scope``) unless the session holds every
    global permission in ``permissions``."""
    held = session.permissions
    wanted = validate_names(permissions, "permission")
    missing = [permission for permission in wanted if permission not in held]
    if missing:
        raise ScopeInsufficient(
            "the token lacks a required permission: " + " ".join(missing),
            missing=missing,
            required=list(permissions),
        )


def validate_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """``scopes`` as a tuple; ``ValueError`` for an empty or whitespace-holding scope."""
    for scope in scopes:
        if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
            raise ValueError(f"invalid scope {scope!r}")
    return tuple(scopes)


def require_scopes(session: Session, *scopes: str) -> None:
    """``ScopeInsufficient`` (403, ``insufficient_scope``) unless the session has every scope."""
    missing = [scope for scope in validate_scopes(scopes) if scope not in session.scopes]
    if missing:
        raise ScopeInsufficient(
            "the token lacks a required scope: " + " ".join(missing),
            missing=missing,
            required=list(scopes),
        )


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
    body = error_body(exc or TokenMissing(_SIGN_IN))
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
        project_id = _path_value(conn, param)
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
