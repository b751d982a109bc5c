"""The shared base of issuer profiles: what a profile declares, and helpers.

A profile is one small module per issuer (``verifier/profiles/<name>.py``)
holding a :class:`Profile` subclass and its ``PROFILE`` instance. It declares,
as data and pure functions:

- how verified claims map to the session's parts (:meth:`Profile.map_claims`);
- which claim carries the audience (:attr:`Profile.audience_claim`);
- which claims are the subject: the user id (:meth:`Profile.subject`) and
  what must be equal between the ID and the access token and across a
  refresh (:meth:`Profile.subject_key`);
- how its access tokens are told apart from its ID tokens
  (:meth:`Profile.token_kind`), consulted before the generic rules;
- its role ranking (:attr:`Profile.role_ranks`);
- issuer-specific checks: extra claims on access tokens
  (:meth:`Profile.check_access`), refusals decided before the signature
  check (:meth:`Profile.check_unverified`), the issuers it accepts
  (:meth:`Profile.issuers`) and its config rules (:meth:`Profile.check_config`).

Everything runs on the uncached path only: a session served from the
verified-token cache is a dict lookup whatever the profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..claim_paths import claim_at, parse_claim_path
from ..errors import ClaimsInvalid
from ..session import ROLE_RANK, Organization, Project, SessionParts, User

if TYPE_CHECKING:
    from ..config_sections import ClaimsSettings

__all__ = [
    "DEFAULT_ROLE_RANKS",
    "ClaimsMapper",
    "Organization",
    "Profile",
    "ProfileContext",
    "Project",
    "SessionParts",
    "TokenKind",
    "User",
    "apply_overrides",
    "claim_at",
    "merge",
    "optional_string",
    "parse_claim_path",
    "string_list",
]

#: ``member`` < ``admin`` < ``owner``; unknown roles rank 0, below ``member``.
DEFAULT_ROLE_RANKS: Mapping[str, int] = ROLE_RANK

#: What a profile's access-token markers say about a token; ``None`` when they
#: cannot tell (the generic rules decide).
TokenKind = Literal["access", "id"]


def _label(path: tuple[str, ...] | str) -> str:
    if isinstance(path, str):
        return path
    return path[0] if len(path) == 1 else "/" + "/".join(path)


def string_list(
    value: object, claim: tuple[str, ...] | str, *, split: bool = False
) -> tuple[str, ...]:
    """A list of strings as a tuple; ``()`` when absent.

    ``split=True`` also accepts one space-separated string (OAuth ``scope``).
    Any other type raises ``claims_invalid``: never a crash, never a silent
    empty list.
    """
    if value is None:
        return ()
    if type(value) is str and split:
        return tuple(value.split())
    if type(value) is list and all(type(item) is str for item in value):
        return tuple(value)
    name = _label(claim)
    kind = "a string or a list of strings" if split else "a list of strings"
    raise ClaimsInvalid(f"claim {name!r} is not {kind}", claim=name)


def optional_string(value: object, claim: tuple[str, ...] | str) -> str | None:
    """``value`` when it is a string, ``None`` when absent; ``claims_invalid`` otherwise."""
    if value is None or type(value) is str:
        return value
    name = _label(claim)
    raise ClaimsInvalid(f"claim {name!r} is not a string", claim=name)


def merge(*groups: Iterable[str]) -> tuple[str, ...]:
    """The union of ``groups`` in first-seen order (roles from several claims)."""
    return tuple(dict.fromkeys(item for group in groups for item in group))


@dataclass(frozen=True, slots=True)
class ProfileContext:
    """What a mapper may read besides the claims: the app's settings.

    ``settings`` is the ``claims`` config section, ``client_id`` the app's
    OAuth client id (``auth.client_id``), ``tenants`` the accepted tenants
    (``auth.tenants``), ``issuer`` the configured ``auth.issuer`` (Entra's may
    hold ``{tenantid}``). ``roles_path`` and ``permissions_path`` are
    ``claims.roles`` / ``claims.permissions`` parsed once.
    """

    settings: ClaimsSettings
    client_id: str | None = None
    tenants: frozenset[str] = frozenset()
    issuer: str = ""
    roles_path: tuple[str, ...] | None = field(init=False)
    permissions_path: tuple[str, ...] | None = field(init=False)

    def __post_init__(self) -> None:
        roles, permissions = self.settings.roles, self.settings.permissions
        object.__setattr__(self, "roles_path", parse_claim_path(roles) if roles else None)
        object.__setattr__(
            self, "permissions_path", parse_claim_path(permissions) if permissions else None
        )


#: A profile's mapping function, and the signature of ``claims_mapper=``:
#: verified access claims, verified ID claims (or ``None``), the context.
ClaimsMapper = Callable[[Mapping[str, Any], Mapping[str, Any] | None, ProfileContext], SessionParts]


def apply_overrides(
    parts: SessionParts, access: Mapping[str, Any], context: ProfileContext
) -> SessionParts:
    """``claims.roles`` / ``claims.permissions``, when set, replace the profile's own sources."""
    roles_path, permissions_path = context.roles_path, context.permissions_path
    if roles_path is None and permissions_path is None:
        return parts
    roles, permissions = parts.roles, parts.permissions
    if roles_path is not None:
        roles = string_list(claim_at(access, roles_path), roles_path)
    if permissions_path is not None:
        permissions = string_list(claim_at(access, permissions_path), permissions_path)
    return parts._replace(roles=roles, permissions=permissions)


class Profile:
    """The base every issuer profile subclasses (the ``jwtedge`` defaults).

    Subclasses set the class attributes and override the methods that differ;
    instances are stateless, so one instance per issuer serves every app.
    """

    #: The ``claims.profile`` value that selects it (the module's name).
    name: ClassVar[str] = ""
    #: The issuer's documentation this profile follows.
    docs: ClassVar[tuple[str, ...]] = ()
    #: The claim holding the audience ``auth.audience`` lists.
    audience_claim: ClassVar[str] = "aud"
    #: True when the issuer documents that its audience claim may be absent
    #: (Clerk's ``azp``): a token without it passes, one with it must match.
    audience_optional: ClassVar[bool] = False
    #: Role -> rank for ``requires_org(role=...)``; ``claims.role_ranks`` overrides.
    role_ranks: ClassVar[Mapping[str, int]] = DEFAULT_ROLE_RANKS
    #: True when :meth:`token_kind` recognises every token this issuer signs, so
    #: ``auth.audience`` may contain ``auth.client_id`` without
    #: ``auth.require_at_jwt`` or ``auth.access_claim``.
    tells_tokens_apart: ClassVar[bool] = False

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        """The session's parts from verified claims. Wrong types raise ``claims_invalid``."""
        raise NotImplementedError

    def subject(self, claims: Mapping[str, Any]) -> str:
        """The user id in an access token (``sub`` by default)."""
        sub = claims.get("sub")
        if type(sub) is not str or not sub:
            raise ClaimsInvalid('the "sub" claim must be a non-empty string', claim="sub")
        return sub

    def subject_key(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """What must be equal between an access token and its ID token, and across
        a refresh; works on either kind of token. ``(sub,)`` by default."""
        sub = claims.get("sub")
        return (sub,) if type(sub) is str else ()

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        """``"access"`` or ``"id"`` when this issuer's markers say so, else ``None``."""
        return None

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        """Issuer-specific checks on an access token, after the generic ones."""

    def check_unverified(
        self, header: Mapping[str, Any], claims: Mapping[str, Any], context: ProfileContext
    ) -> None:
        """Refusals decided from the unverified token, before its signature is checked.

        Only for tokens that would fail the signature check anyway and
        deserve a clearer error; never to accept anything.
        """

    def issuers(self, issuer: str, tenants: frozenset[str]) -> frozenset[str]:
        """Every ``iss`` value accepted for the configured ``auth.issuer``."""
        return frozenset({issuer})

    def check_config(
        self, *, issuer: str, tenants: frozenset[str], client_id: str | None
    ) -> list[tuple[str, str]]:
        """Config problems for this issuer, as ``(setting, message)`` pairs."""
        return []

    def __repr__(self) -> str:
        return f"<profile {self.name}>"


def frozen_ranks(ranks: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only copy of a ranking."""
    return MappingProxyType(dict(ranks))
