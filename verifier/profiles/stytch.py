"""``stytch``: Stytch session JWTs (B2B and consumer).

``aud`` is the project id (``project-live-…``); ``iss`` is
``stytch.com/<project id>``, or the project's custom domain. A B2B session
names its organization under ``https://stytch.com/organization``
(``organization_id``, ``slug``): the one, active organization. The session
itself is ``https://stytch.com/session``: its ``id`` is the session id and
its ``roles`` the member's RBAC roles (``stytch_member``, ``stytch_admin``
and the project's own), which are the organization's roles too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ._single import mapping_claim, required_string
from .base import Organization, Profile, ProfileContext, SessionParts, optional_string, string_list

__all__ = ["ORGANIZATION_CLAIM", "PROFILE", "SESSION_CLAIM", "StytchProfile"]

ORGANIZATION_CLAIM = "https://stytch.com/organization"
SESSION_CLAIM = "https://stytch.com/session"


class StytchProfile(Profile):
    name = "stytch"
    docs = (
        "https://stytch.com/docs/b2b/guides/sessions/resources/jwt-claims",
        "https://stytch.com/docs/b2b/guides/rbac/overview",
        "https://github.com/stytchauth/stytch-python/blob/main/stytch/shared/jwt_helpers.py",
    )
    #: Stytch's two built-in roles, which every project has.
    role_ranks = MappingProxyType({"stytch_member": 1, "stytch_admin": 2})

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        session = mapping_claim(access.get(SESSION_CLAIM), SESSION_CLAIM) or {}
        roles = string_list(session.get("roles"), f"{SESSION_CLAIM}.roles")
        session_id = optional_string(session.get("id"), f"{SESSION_CLAIM}.id")
        claim = mapping_claim(access.get(ORGANIZATION_CLAIM), ORGANIZATION_CLAIM)
        if claim is None:
            return SessionParts(roles=roles, session_id=session_id)
        org = Organization(
            id=required_string(
                claim.get("organization_id"), f"{ORGANIZATION_CLAIM}.organization_id"
            ),
            slug=optional_string(claim.get("slug"), f"{ORGANIZATION_CLAIM}.slug"),
            name=None,
            role=roles[0] if roles else None,
            roles=roles,
        )
        return SessionParts(
            organizations=(org,), active_organization=org, roles=roles, session_id=session_id
        )


PROFILE = StytchProfile()
