"""Issuer profiles: sessions from any issuer's claims.

``claims.profile`` selects one (``jwtedge`` by default). Each profile is one
small module per issuer over :class:`Profile` (see :mod:`.base` for what a
profile declares). Apps with an issuer not listed pass their own
:data:`ClaimsMapper` as ``claims_mapper=`` to ``TokenVerifier`` or
``JWTSessionMiddleware``.
"""

from __future__ import annotations

from .base import (
    DEFAULT_ROLE_RANKS,
    ClaimsMapper,
    Organization,
    Profile,
    ProfileContext,
    Project,
    SessionParts,
    TokenKind,
    User,
    apply_overrides,
    claim_at,
    merge,
    optional_string,
    parse_claim_path,
    string_list,
)
from .registry import get_profile, profile_names, register_profile

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
    "get_profile",
    "merge",
    "optional_string",
    "parse_claim_path",
    "profile_names",
    "register_profile",
    "string_list",
]
