"""Shared by the profiles whose tokens carry one organization: the active one.

Clerk, WorkOS, Kinde, Stytch and Logto put the organization the user is
working in (and only that one) in the token. Its roles and permissions are
the session's too, so ``requires_roles`` / ``requires_permissions`` read them
without the app knowing which organization is current.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimsInvalid
from .base import Organization, SessionParts

__all__ = ["active_organization_parts", "key_label", "mapping_claim", "required_string"]

_MAX_KEY_LABEL = 64


def key_label(key: str) -> str:
    """A map key from a token, as errors may name it: short and printable, or ``<key>``.

    Keys (tenant ids, org ids, project ids) come from the token: an error
    message must not carry an arbitrarily long or control-character key.
    """
    return key if len(key) <= _MAX_KEY_LABEL and key.isprintable() else "<key>"


def active_organization_parts(
    org: Organization | None, *, scopes: tuple[str, ...] = ()
) -> SessionParts:
    """Parts for a token holding at most one organization, which is the active one."""
    if org is None:
        return SessionParts(scopes=scopes)
    return SessionParts(
        organizations=(org,),
        active_organization=org,
        roles=org.roles,
        permissions=org.permissions,
        scopes=scopes,
    )


def mapping_claim(value: object, claim: str) -> Mapping[str, Any] | None:
    """A JSON object claim; ``None`` when absent, ``claims_invalid`` for any other type."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    raise ClaimsInvalid(f"claim {claim!r} is not an object", claim=claim)


def required_string(value: object, claim: str) -> str:
    """A non-empty string; ``claims_invalid`` otherwise (missing included)."""
    if type(value) is str and value:
        return value
    raise ClaimsInvalid(f"claim {claim!r} must be a non-empty string", claim=claim)
