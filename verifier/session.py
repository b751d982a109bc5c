"""The session, built from signed claims only.

Follows Starlette's authentication contracts so ``@requires`` works
unchanged: :class:`Session` is an ``AuthCredentials`` (``request.auth``)
whose scopes are ``"authenticated"`` plus the token's scopes, and
:class:`User` is a ``BaseUser`` (``request.user``). Everything is immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from starlette.authentication import AuthCredentials, BaseUser

from .config import ClaimsSettings
from .errors import ClaimsInvalid

__all__ = ["ROLE_RANK", "Organization", "Project", "Session", "User", "role_rank"]

#: Known roles, lowest first. Unknown roles rank below ``member``.
ROLE_RANK: Mapping[str, int] = MappingProxyType({"member": 1, "admin": 2, "owner": 3})


def role_rank(role: str | None) -> int:
    """Rank of a role; 0 for unknown or missing roles."""
    return ROLE_RANK.get(role or "", 0)


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
    building it is on the uncached hot path)."""

    id: str
    slug: str
    name: str
    role: str | None = None

    @property
    def rank(self) -> int:
        return role_rank(self.role)


class Project(NamedTuple):
    """A project the token grants (immutable)."""

    id: str
    slug: str | None = None
    organization_id: str | None = None


class Session(AuthCredentials):
    """An authenticated session (``request.auth``), immutable.

    ``scopes`` holds ``"authenticated"`` and the token's scopes, so
    ``@requires("authenticated")`` and ``@requires("read:projects")`` work.
    """

    __slots__ = (
        "_frozen",
        "claims",
        "expires_at",
        "id_claims",
        "organizations",
        "projects",
        "session_id",
        "token_scopes",
        "user",
    )

    user: User
    organizations: tuple[Organization, ...]
    projects: tuple[Project, ...]
    token_scopes: tuple[str, ...]
    session_id: str | None
    expires_at: float
    claims: Mapping[str, Any]
    id_claims: Mapping[str, Any] | None

    def __init__(
        self,
        *,
        user: User,
        organizations: tuple[Organization, ...] = (),
        projects: tuple[Project, ...] = (),
        token_scopes: tuple[str, ...] = (),
        session_id: str | None = None,
        expires_at: float,
        claims: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None = None,
    ) -> None:
        # Starlette's AuthCredentials keeps a list; a tuple keeps it immutable.
        values = {
            "scopes": ("authenticated", *token_scopes),
            "user": user,
            "organizations": organizations,
            "projects": projects,
            "token_scopes": token_scopes,
            "session_id": session_id,
            "expires_at": expires_at,
            "claims": MappingProxyType(dict(claims)),
            "id_claims": MappingProxyType(dict(id_claims)) if id_claims is not None else None,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Session is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Session is immutable")

    def __repr__(self) -> str:
        return f"Session(user={self.user.id!r})"

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.token_scopes)

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
                {"id": o.id, "slug": o.slug, "name": o.name, "role": o.role}
                for o in self.organizations
            ],
            "projects": [
                {"id": p.id, "slug": p.slug, "organization_id": p.organization_id}
                for p in self.projects
            ],
            "scopes": list(self.token_scopes),
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
        """Build a session from verified access (and ID) token claims.

        Profile fields come from the ID token, falling back to the access
        token. Malformed ``organizations``/``projects`` raise ``claims_invalid``.
        """
        names = names or _DEFAULT_NAMES
        profile = id_claims or {}
        sub = access["sub"]

        def pick(name: str, kind: type) -> Any:
            value = profile.get(name, access.get(name))
            if value is not None and not isinstance(value, kind):
                raise ClaimsInvalid(f"claim {name!r} has the wrong type", claim=name)
            return value

        user = User(
            id=sub,
            email=pick("email", str),
            name=pick("name", str),
            picture=pick("picture", str),
            email_verified=pick("email_verified", bool) is True,
        )
        sid = access.get("sid", profile.get("sid"))
        return cls(
            user=user,
            organizations=_organizations(access.get(names.organizations), names.organizations),
            projects=_projects(access.get(names.projects), names.projects),
            token_scopes=_scopes(access, names.scope),
            session_id=sid if isinstance(sid, str) else None,
            expires_at=float(access["exp"]),
            claims=access,
            id_claims=id_claims,
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
        orgs.append(Organization(id_, slug, name, _str_or_none(entry.get("role"), claim)))
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
