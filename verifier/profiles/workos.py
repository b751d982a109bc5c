"""``workos``: WorkOS AuthKit access tokens.

The access token AuthKit returns (``iss`` ``https://api.workos.com`` or
``https://api.workos.com/user_management/<client_id>``, keys at
``https://api.workos.com/sso/jwks/<client_id>``) carries the organization the
session is scoped to, and only that one: ``org_id``, the membership's
``role``, its ``roles`` (multiple roles per membership) and the role's
``permissions``. ``sid`` is the session id; ``act`` marks impersonation.

AuthKit session tokens carry no ``aud`` unless a JWT template adds one: then
``auth.audience`` lists it; otherwise ``auth.audience_claim=none`` is the
explicit opt-in to tokens bound by issuer and keys only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ._single import active_organization_parts
from .base import (
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    merge,
    optional_string,
    string_list,
)

__all__ = ["PROFILE", "WorkOSProfile"]


class WorkOSProfile(Profile):
    name = "workos"
    docs = (
        "https://workos.com/docs/reference/authkit/session-tokens",
        "https://workos.com/docs/authkit/sessions/integrating-sessions/access-token",
    )
    #: WorkOS's default role slug is ``member``; ``admin`` is the usual second.
    role_ranks = MappingProxyType({"member": 1, "admin": 2})

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        org_id = optional_string(access.get("org_id"), "org_id")
        if not org_id:
            return SessionParts()
        role = optional_string(access.get("role"), "role")
        roles = merge((role,) if role else (), string_list(access.get("roles"), "roles"))
        org = Organization(
            id=org_id,
            slug=None,
            name=None,
            role=role or (roles[0] if roles else None),
            roles=roles,
            permissions=string_list(access.get("permissions"), "permissions"),
        )
        return active_organization_parts(org)


PROFILE = WorkOSProfile()
