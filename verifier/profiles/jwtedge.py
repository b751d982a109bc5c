"""``jwtedge``: the default profile, jwtedge's own claim shape (DESIGN "Tokens and claims").

Access tokens carry ``organizations: [{id, slug, name, role}]``,
``projects: [{id, slug, organizationId}]``, ``scope`` (space separated) or
``scopes`` / ``scp`` (lists), and optionally ``active_org`` (an organization
id or slug); the names are ``claims.organizations``, ``claims.projects``,
``claims.scope`` and ``claims.active_org``. A missing slug falls back to the
id, a missing name to the slug. The subject is ``sub``; the audience ``aud``.
Tokens of this shape carry no marker telling access and ID tokens apart, so
the generic rules decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..session import jwtedge_parts
from .base import Profile, ProfileContext, SessionParts

__all__ = ["PROFILE", "JwtedgeProfile"]


class JwtedgeProfile(Profile):
    name = "jwtedge"
    docs = ("https://github.com/jwtedge/jwtedge/blob/main/README.md",)

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        return jwtedge_parts(access, context.settings)


PROFILE = JwtedgeProfile()
