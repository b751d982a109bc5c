"""FastAPI dependencies over :mod:`verifier.authz` (needs FastAPI installed).

The session still comes from ``JWTSessionMiddleware`` (``request.auth``), so
cookie and Bearer callers both work. Every dependency also pulls in
:data:`bearer_scheme`, FastAPI's ``HTTPBearer(auto_error=False)``, only so the
OpenAPI document declares the Bearer scheme and each protected operation lists
it under ``security``; its own parsing is not used to authenticate.

Failures raise :class:`VerifierHTTPException` (an ``HTTPException``), so
FastAPI's default handler answers ``{"detail": {"error", "code", "message"}}``
with the right status and headers; :func:`install_error_handler` makes the
body the flat ``{"error", "code", "message"}`` the Starlette helpers answer.

::

    app = FastAPI()
    app.add_middleware(JWTSessionMiddleware, config=config)
    install_error_handler(app)

    @app.get("/api/orgs/current")
    async def current(org: Annotated[Organization, Depends(org_context("admin"))]):
        return {"slug": org.slug}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from .authz import (
    DEFAULT_ACTIVE_ORG_CLAIM,
    ProjectLookup,
    acheck_project,
    error_body,
    named_org,
    org_from_request,
    require_role,
    require_session,
    response_for,
    validate_names,
    validate_role,
    validate_scopes,
)
from .authz import require_permissions as _require_permissions
from .authz import require_roles as _require_roles
from .authz import require_scopes as _require_scopes
from .errors import AuthzError, TokenMissing, VerifierError
from .session import Organization, Session

__all__ = [
    "VerifierHTTPException",
    "bearer_scheme",
    "current_session",
    "install_error_handler",
    "org_context",
    "project_access",
    "require_permissions",
    "require_roles",
    "require_scopes",
]

#: Declares the scheme in OpenAPI; authentication itself is the middleware's.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    scheme_name="bearerAuth",
    description="Access token; browser sessions send the same token in cookies.",
)


class VerifierHTTPException(HTTPException):
    """An ``HTTPException`` carrying the jwtedge error it reports (``.error``)."""

    def __init__(self, error: VerifierError) -> None:
        response = response_for(error)
        self.error = error
        self.response = response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name in ("www-authenticate", "cache-control")
        }
        super().__init__(
            status_code=response.status_code, detail=error_body(error), headers=headers
        )


async def _error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VerifierHTTPException)
    return response_for(exc.error)


def install_error_handler(app: FastAPI) -> None:
    """Answer :class:`VerifierHTTPException` with the flat jwtedge JSON body."""
    app.add_exception_handler(VerifierHTTPException, _error_handler)


async def current_session(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Session:
    """The caller's session; 401 with ``WWW-Authenticate: Bearer`` when anonymous."""
    try:
        return require_session(request)
    except TokenMissing as exc:
        raise VerifierHTTPException(exc) from exc


CurrentSession = Annotated[Session, Depends(current_session)]


#: Marks an :func:`org_context` dependency with its organization path
#: parameter, so :func:`project_access` finds it on the route whatever the
#: order in which FastAPI resolves the two.
_ORG_PARAMS_ATTR = "__jwtedge_org_params__"


def _route_org_params(request: Request) -> tuple[str, ...]:
    """The path parameters the route's :func:`org_context` dependencies read."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    found: list[str] = []
    pending: list[Any] = [dependant] if dependant is not None else []
    while pending:
        node = pending.pop()
        for param in getattr(node.call, _ORG_PARAMS_ATTR, ()):
            if param not in found:
                found.append(param)
        pending.extend(node.dependencies)
    return tuple(found)


def org_context(
    role: str | None = None,
    *,
    path_param: str | None = None,
    active_claim: str = DEFAULT_ACTIVE_ORG_CLAIM,
) -> Callable[..., Awaitable[Organization]]:
    """A dependency returning the request's organization (also ``request.state.org``).

    Resolution as in :func:`verifier.authz.resolve_org`; ``role`` is the
    least role required, by the session's ranking (the issuer profile's or
    ``claims.role_ranks``; a malformed name raises ``ValueError`` here).
    ``org_required`` answers 400.
    """
    if role is not None:
        validate_role(role, None)

    # ``session`` pulls in the 401 and the OpenAPI scheme; the org reads it again.
    async def dependency(request: Request, session: CurrentSession) -> Organization:
        try:
            org = org_from_request(request, path_param=path_param, active_claim=active_claim)
            if role is not None:
                require_role(org, role, session.role_ranks)
        except (TokenMissing, AuthzError) as exc:
            raise VerifierHTTPException(exc) from exc
        request.state.org = org
        return org

    setattr(dependency, _ORG_PARAMS_ATTR, (path_param,) if path_param is not None else ())
    return dependency


def project_access(
    param: str = "project_id", *, lookup: ProjectLookup | None = None
) -> Callable[..., Awaitable[str]]:
    """A dependency returning the path's project id once access is allowed.

    As :func:`verifier.authz.acheck_project`: the token lists the project, or
    the app's ``lookup`` (sync or async) puts it in one of the caller's
    organizations; the request never says which organization that is. When
    the request names an organization (``X-Org-Id``, ``X-Org-Slug``, or the
    path parameter of an :func:`org_context` on the same route, resolved
    before or after this dependency), the project must belong to it.
    """

    async def dependency(request: Request, session: CurrentSession) -> str:
        if param not in request.path_params:
            raise RuntimeError(f"the route has no path parameter {param!r}")
        project_id = str(request.path_params[param])
        try:
            org = named_org(request, org_params=_route_org_params(request))
            await acheck_project(session, project_id, lookup=lookup, org=org)
        except AuthzError as exc:
            raise VerifierHTTPException(exc) from exc
        request.state.project_id = project_id
        return project_id

    return dependency


def require_scopes(*scopes: str) -> Callable[..., Awaitable[Session]]:
    """A dependency returning the session when it has every scope.

    A missing scope answers 403 ``insufficient_scope`` with its ``WWW-Authenticate``.
    """
    if not scopes:
        raise ValueError("require_scopes needs at least one scope")
    validate_scopes(scopes)

    async def dependency(session: CurrentSession) -> Session:
        try:
            _require_scopes(session, *scopes)
        except AuthzError as exc:
            raise VerifierHTTPException(exc) from exc
        return session

    return dependency


def require_roles(*roles: str) -> Callable[..., Awaitable[Session]]:
    """A dependency returning the session when it holds every global role in ``roles``.

    A missing role answers 403 ``role_insufficient``.
    """
    if not roles:
        raise ValueError("require_roles needs at least one role")
    validate_names(roles, "role")

    async def dependency(session: CurrentSession) -> Session:
        try:
            _require_roles(session, *roles)
        except AuthzError as exc:
            raise VerifierHTTPException(exc) from exc
        return session

    return dependency


def require_permissions(*permissions: str) -> Callable[..., Awaitable[Session]]:
    """A dependency returning the session when it holds every global permission.

    A missing permission answers 403 ``insufficient_scope`` with its ``WWW-Authenticate``.
    """
    if not permissions:
        raise ValueError("require_permissions needs at least one permission")
    validate_names(permissions, "permission")

    async def dependency(session: CurrentSession) -> Session:
        try:
            _require_permissions(session, *permissions)
        except AuthzError as exc:
            raise VerifierHTTPException(exc) from exc
        return session

    return dependency
