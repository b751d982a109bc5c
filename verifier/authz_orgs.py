"""Which organization a request acts in, and which projects it may touch.

The organization order (an explicit selector, the token's active
organization, the only one, else a choice is required) and the project rule
(listed in the token or placed in a membership by the app's ``lookup``;
narrowed to the named organization once the request names one) are set out
in :mod:`verifier.authz`, which re-exports everything here.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import HTTPConnection

from .errors import (
    OrgForbidden,
    OrgMembershipRequired,
    OrgRequired,
    ProjectForbidden,
    TokenMissing,
)
from .middleware import get_session
from .session import Organization, Session

__all__ = [
    "DEFAULT_ACTIVE_ORG_CLAIM",
    "ORG_ID_HEADER",
    "ORG_SLUG_HEADER",
    "SIGN_IN",
    "ProjectLookup",
    "acheck_project",
    "check_project",
    "named_org",
    "org_from_request",
    "path_value",
    "require_session",
    "resolve_org",
]

ORG_ID_HEADER = "x-org-id"
ORG_SLUG_HEADER = "x-org-slug"
DEFAULT_ACTIVE_ORG_CLAIM = "active_org"

#: The app's answer to "which organization owns this project?": an
#: organization id, or ``None`` when the project does not exist. Sync or async.
ProjectLookup = Callable[[str], str | Awaitable[str | None] | None]

#: What an anonymous caller is told.
SIGN_IN = "this endpoint needs a signed-in caller"


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
    """The organization this request acts in (:mod:`verifier.authz` sets out the order).

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
        raise TokenMissing(SIGN_IN)
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
        explicit = path_value(conn, path_param)
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


def path_value(conn: HTTPConnection, name: str) -> str:
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
        [path_value(conn, name) for name in dict.fromkeys(params)],
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
