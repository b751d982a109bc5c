"""The session, built from signed claims only.

Follows Starlette's authentication contracts so ``@requires`` works
unchanged: :class:`Session` is an ``AuthCredentials`` (``request.auth``)
whose scopes are ``"authenticated"`` plus the token's scopes, and
:class:`User` is a ``BaseUser`` (``request.user``). Everything is immutable.

An issuer profile (:mod:`verifier.profiles`) maps verified claims to
:class:`SessionParts`; :meth:`Session.from_parts` assembles the session.
:meth:`Session.from_claims` is the ``jwtedge`` profile's shape
(``organizations: [{id, slug, name, role}]``, ``projects``, ``scope``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

from starlette.authentication import AuthCredentials, BaseUser

from .config_sections import ClaimsSettings
from .errors import ClaimsInvalid
from .limits import load_claims

__all__ = [
    "ROLE_RANK",
    "Organization",
    "Project",
    "Session",
    "SessionParts",
    "User",
    "role_rank",
    "shared_parts",
]

_T = TypeVar("_T")

#: Known roles, lowest first. Unknown roles rank below ``member``.
ROLE_RANK: Mapping[str, int] = MappingProxyType({"member": 1, "admin": 2, "owner": 3})


def role_rank(role: str | None, ranks: Mapping[str, int] = ROLE_RANK) -> int:
    """Rank of a role in ``ranks`` (the default ranking unless given); 0 when unknown or missing."""
    return ranks.get(role or "", 0)


@dataclass(frozen=True, slots=True)
class User(BaseUser):
    """The signed-in user (``request.user``)."""

    id: str
    email: str | None = None
    name: str | None = None
    picture: str | None = None
    email_verified: bool = False

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name or self.email or self.id

    @property
    def identity(self) -> str:
        return self.id


class Organization(NamedTuple):
    """A membership from the token's claims (immutable; a NamedTuple because
    building it is on the uncached hot path).

    ``id`` is always a string (an issuer that gives only an alias has the
    alias as id); ``slug`` and ``name`` are ``None`` when the issuer does not
    say. ``role`` is the primary role; ``roles`` every role the membership
    holds (the primary one included) and ``permissions`` its permissions.
    """

    id: str
    slug: str | None
    name: str | None
    role: str | None = None
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """What to show or send for this organization: its slug, else its id."""
        return self.slug or self.id

    @property
    def rank(self) -> int:
        """The highest rank among its roles in the default ranking."""
        return self.rank_in(ROLE_RANK)

    def rank_in(self, ranks: Mapping[str, int]) -> int:
        """The highest rank among ``role`` and ``roles`` in ``ranks``; 0 for none known."""
        best = ranks.get(self.role or "", 0)
        for role in self.roles:
            best = max(best, ranks.get(role, 0))
        return best


class Project(NamedTuple):
    """A project the token grants (immutable)."""

    id: str
    slug: str | None = None
    organization_id: str | None = None


class SessionParts(NamedTuple):
    """What an issuer profile reads from verified claims (see :mod:`verifier.profiles`).

    Immutable (a NamedTuple: it is built on every uncached request).

    ``user`` is ``None`` to let the session build it the common way: the
    profile's subject as id; email, name, picture and ``email_verified`` from
    the ID token when present, else the access token. ``active_organization``
    is the organization the token says is current (one of ``organizations``),
    else ``None``.
    """

    organizations: tuple[Organization, ...] = ()
    projects: tuple[Project, ...] = ()
    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    active_organization: Organization | None = None
    user: User | None = None
    #: The issuer's own session id claim (Supabase ``session_id``); ``None``: ``sid``.
    session_id: str | None = None


class Session(AuthCredentials):
    """An authenticated session (``request.auth``), immutable.

    ``scopes`` holds ``"authenticated"`` and the token's scopes, so
    ``@requires("authenticated")`` and ``@requires("read:projects")`` work.
    ``roles`` and ``permissions`` are global (not per organization);
    ``active_organization`` is the membership the token says is current;
    ``role_ranks`` is the ranking ``requires_org(role=...)`` applies (the
    profile's, or ``claims.role_ranks``); ``issued_at`` is the access token's
    ``iat`` (``None`` without one).

    ``claims`` and ``id_claims`` may be given as the JSON payload bytes they
    were read from: a cached session then keeps those bytes (a third of the
    parsed claims' memory) and parses them when they are first read.
    """

    __slots__ = (
        "_claims",
        "_id_claims",
        "_id_payload",
        "_payload",
        "active_organization",
        "expires_at",
        "issued_at",
        "organizations",
        "permissions",
        "projects",
        "role_ranks",
        "roles",
        "scopes",
        "session_id",
        "token_scopes",
        "user",
    )

    user: User
    organizations: tuple[Organization, ...]
    projects: tuple[Project, ...]
    token_scopes: tuple[str, ...]
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    active_organization: Organization | None
    role_ranks: Mapping[str, int]
    session_id: str | None
    expires_at: float
    issued_at: float | None
    _claims: Mapping[str, Any] | None
    _payload: bytes | None
    _id_claims: Mapping[str, Any] | None
    _id_payload: bytes | None

    def __init__(
        self,
        *,
        user: User,
        organizations: tuple[Organization, ...] = (),
        projects: tuple[Project, ...] = (),
        token_scopes: tuple[str, ...] = (),
        roles: tuple[str, ...] = (),
        permissions: tuple[str, ...] = (),
        active_organization: Organization | None = None,
        role_ranks: Mapping[str, int] = ROLE_RANK,
        session_id: str | None = None,
        expires_at: float,
        claims: Mapping[str, Any] | bytes,
        id_claims: Mapping[str, Any] | bytes | None = None,
        issued_at: float | None = None,
    ) -> None:
        # Starlette's AuthCredentials keeps a list; a tuple keeps it immutable.
        # One plain call per slot: this runs on every uncached request.
        set_ = object.__setattr__
        set_(self, "scopes", _scopes_with_authenticated(token_scopes))
        set_(self, "user", user)
        set_(self, "organizations", organizations)
        set_(self, "projects", projects)
        set_(self, "token_scopes", token_scopes)
        set_(self, "roles", roles)
        set_(self, "permissions", permissions)
        set_(self, "active_organization", active_organization)
        set_(self, "role_ranks", role_ranks)
        set_(self, "session_id", session_id)
        set_(self, "expires_at", expires_at)
        if isinstance(claims, bytes):
            set_(self, "_claims", None)
            set_(self, "_payload", claims)
        else:
            set_(self, "_claims", MappingProxyType(dict(claims)))
            set_(self, "_payload", None)
            if issued_at is None:
                issued_at = numeric_date(claims.get("iat"))
        set_(self, "issued_at", issued_at)
        if isinstance(id_claims, bytes):
            set_(self, "_id_claims", None)
            set_(self, "_id_payload", id_claims)
        else:
            proxy = MappingProxyType(dict(id_claims)) if id_claims is not None else None
            set_(self, "_id_claims", proxy)
            set_(self, "_id_payload", None)

    @property
    def claims(self) -> Mapping[str, Any]:
        """The access token's verified claims (read-only)."""
        claims = self._claims
        if claims is None:
            claims = _parsed(self._payload)
            # Parsed once: from now on the claims, not the bytes, are kept.
            object.__setattr__(self, "_claims", claims)
            object.__setattr__(self, "_payload", None)
        return claims

    @property
    def id_claims(self) -> Mapping[str, Any] | None:
        """The ID token's verified claims (read-only), or ``None`` without one."""
        claims = self._id_claims
        if claims is None and self._id_payload is not None:
            claims = _parsed(self._id_payload)
            object.__setattr__(self, "_id_claims", claims)
            object.__setattr__(self, "_id_payload", None)
        return claims

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Session is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Session is immutable")

    def __repr__(self) -> str:
        return f"Session(user={self.user.id!r})"

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.token_scopes)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles)

    @property
    def permission_set(self) -> frozenset[str]:
        return frozenset(self.permissions)

    def organization(self, id_or_slug: str) -> Organization | None:
        """The membership with this id or slug, if any."""
        for org in self.organizations:
            if id_or_slug in (org.id, org.slug):
                return org
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (no tokens: claims are data, not credentials)."""
        return {
            "user": {
                "id": self.user.id,
                "email": self.user.email,
                "name": self.user.name,
                "picture": self.user.picture,
                "email_verified": self.user.email_verified,
            },
            "organizations": [
                {
                    "id": o.id,
                    "slug": o.slug,
                    "name": o.name,
                    "role": o.role,
                    "roles": list(o.roles),
                    "permissions": list(o.permissions),
                }
                for o in self.organizations
            ],
            "active_organization": (
                self.active_organization.id if self.active_organization is not None else None
            ),
            "projects": [
                {"id": p.id, "slug": p.slug, "organization_id": p.organization_id}
                for p in self.projects
            ],
            "scopes": list(self.token_scopes),
            "roles": list(self.roles),
            "permissions": list(self.permissions),
            "session_id": self.session_id,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_claims(
        cls,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None = None,
        *,
        names: ClaimsSettings | None = None,
    ) -> Session:
        """Build a session from verified claims in the ``jwtedge`` shape.

        Profile fields come from the ID token, falling back to the access
        token. Malformed ``organizations``/``projects`` raise ``claims_invalid``.
        Other issuers' shapes go through :mod:`verifier.profiles`.
        """
        return cls.from_parts(access, id_claims, jwtedge_parts(access, names or _DEFAULT_NAMES))

    @classmethod
    def from_parts(
        cls,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        parts: SessionParts,
        *,
        user_id: str | None = None,
        role_ranks: Mapping[str, int] = ROLE_RANK,
        access_payload: bytes | None = None,
        id_payload: bytes | None = None,
    ) -> Session:
        """Assemble a session from what a profile read (``parts``).

        ``user_id`` is the profile's subject (``access["sub"]`` when omitted);
        it is used only when ``parts.user`` is ``None``. ``access_payload``
        and ``id_payload`` are the JSON the claims were read from: given, the
        session keeps them instead of the claims (see the class doc).
        """
        user = parts.user
        if user is None:
            user = build_user(access, id_claims, access["sub"] if user_id is None else user_id)
        sid = parts.session_id
        if sid is None:
            sid = access.get("sid", (id_claims or {}).get("sid"))
        return cls(
            user=user,
            organizations=parts.organizations,
            projects=parts.projects,
            token_scopes=parts.scopes,
            roles=parts.roles,
            permissions=parts.permissions,
            active_organization=parts.active_organization,
            role_ranks=role_ranks,
            session_id=sid if isinstance(sid, str) else None,
            expires_at=float(access["exp"]),
            claims=access if access_payload is None else access_payload,
            id_claims=id_claims if id_claims is None or id_payload is None else id_payload,
            issued_at=numeric_date(access.get("iat")),
        )


def shared_parts(parts: SessionParts) -> SessionParts:
    """``parts`` with memberships, projects, scopes, roles and permissions equal
    to another cached session's replaced by that session's own objects (many
    users hold the same ones: kept once, not once per session)."""
    active = parts.active_organization
    return parts._replace(
        organizations=_share_all(parts.organizations),
        projects=_share_all(parts.projects),
        scopes=_share(parts.scopes),
        roles=_share(parts.roles),
        permissions=_share(parts.permissions),
        active_organization=_share(active) if active is not None else None,
    )


def numeric_date(value: object) -> float | None:
    """``value`` as seconds when it is a number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _parsed(payload: bytes | None) -> Mapping[str, Any]:
    # The payload of a token that verified: its bounds were checked then.
    return MappingProxyType(load_claims(payload or b"{}"))


#: Equal immutable values of different sessions, kept once. Bounded: past
#: SHARED_LIMIT values it starts over (only verified claims ever reach it).
_SHARED: dict[Any, Any] = {}
SHARED_LIMIT = 4096
_AUTHENTICATED: dict[tuple[str, ...], tuple[str, ...]] = {}


def _share(value: _T) -> _T:
    shared = _SHARED
    if len(shared) >= SHARED_LIMIT:
        shared.clear()
    try:
        return cast(_T, shared.setdefault(value, value))
    except TypeError:  # a profile put something unhashable in: keep it as it is
        return value


def _share_all(values: tuple[_T, ...]) -> tuple[_T, ...]:
    if not values:
        return ()
    return _share(tuple([_share(value) for value in values]))


def _scopes_with_authenticated(token_scopes: tuple[str, ...]) -> tuple[str, ...]:
    try:
        scopes = _AUTHENTICATED.get(token_scopes)
    except TypeError:  # not a tuple after all: nothing to share
        return ("authenticated", *token_scopes)
    if scopes is None:
        scopes = ("authenticated", *token_scopes)
        if len(_AUTHENTICATED) >= SHARED_LIMIT:
            _AUTHENTICATED.clear()
        _AUTHENTICATED[token_scopes] = scopes
    return scopes


def build_user(
    access: Mapping[str, Any], id_claims: Mapping[str, Any] | None, user_id: str
) -> User:
    """The user: ``user_id``, and email, name, picture, ``email_verified`` from
    the ID token when it has them, else from the access token.

    A field of the wrong type raises ``claims_invalid``.
    """
    profile = id_claims or {}

    def pick(name: str, kind: type) -> Any:
        value = profile.get(name, access.get(name))
        if value is not None and not isinstance(value, kind):
            raise ClaimsInvalid(f"claim {name!r} has the wrong type", claim=name)
        return value

    return User(
        id=user_id,
        email=pick("email", str),
        name=pick("name", str),
        picture=pick("picture", str),
        email_verified=pick("email_verified", bool) is True,
    )


def jwtedge_parts(access: Mapping[str, Any], names: ClaimsSettings) -> SessionParts:
    """The ``jwtedge`` shape: ``organizations``, ``projects``, ``scope``, ``active_org``.

    The active organization is the membership ``active_org`` names, by id then
    slug; a value that is not a string, or names no membership, is ignored
    (it is the issuer's hint about the last selection and can only go stale).
    """
    orgs = _organizations(access.get(names.organizations), names.organizations)
    active = None
    hint = access.get(names.active_org)
    if type(hint) is str and orgs:
        active = next((o for o in orgs if o.id == hint), None) or next(
            (o for o in orgs if o.slug == hint), None
        )
    return SessionParts(
        organizations=orgs,
        projects=_projects(access.get(names.projects), names.projects),
        scopes=_scopes(access, names.scope),
        active_organization=active,
    )


_DEFAULT_NAMES = ClaimsSettings()


def _entries(value: object, claim: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        raise ClaimsInvalid(f"claim {claim!r} is not a list", claim=claim)
    for entry in value:
        if type(entry) is not dict:
            raise ClaimsInvalid(
                f"claim {claim!r} holds an entry that is not an object", claim=claim
            )
        id_ = entry.get("id")
        if type(id_) is not str or not id_:
            raise ClaimsInvalid(f"claim {claim!r} holds an entry without a string id", claim=claim)
    return value


def _str_or_none(value: object, claim: str) -> Any:
    if value is None or type(value) is str:
        return value
    raise ClaimsInvalid(f"claim {claim!r} holds a field that is not a string", claim=claim)


# The two builders below run on every uncached request: plain loops, no helpers
# per field beyond the type check.


def _organizations(value: object, claim: str) -> tuple[Organization, ...]:
    orgs = []
    for entry in _entries(value, claim):
        id_ = entry["id"]
        slug = _str_or_none(entry.get("slug"), claim) or id_
        name = _str_or_none(entry.get("name"), claim) or slug
        role = _str_or_none(entry.get("role"), claim)
        orgs.append(Organization(id_, slug, name, role, (role,) if role else ()))
    return tuple(orgs)


def _projects(value: object, claim: str) -> tuple[Project, ...]:
    return tuple(
        Project(
            entry["id"],
            _str_or_none(entry.get("slug"), claim),
            _str_or_none(entry.get("organizationId"), claim),
        )
        for entry in _entries(value, claim)
    )


def _scopes(access: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    # `scope` (RFC 8693/9068, space separated), `scopes` and `scp` (lists or
    # strings, Okta and Entra) are all common.
    for name in (claim, "scopes", "scp"):
        value = access.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ClaimsInvalid(f"claim {name!r} is neither a string nor a list of strings", claim=name)
    return ()
