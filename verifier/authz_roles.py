"""Roles, permissions and scopes: whether the caller holds what an endpoint needs.

Organization roles are ranked (the session's ``role_ranks``: the issuer
profile's, or ``claims.role_ranks``); global roles, permissions and token
scopes are held or not. Re-exported by :mod:`verifier.authz`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import RoleInsufficient, ScopeInsufficient
from .session import ROLE_RANK, Organization, Session, role_rank

__all__ = [
    "require_permissions",
    "require_role",
    "require_roles",
    "require_scopes",
    "validate_names",
    "validate_role",
    "validate_scopes",
]


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
