"""``logto``: Logto access tokens for API resources and organizations.

``aud`` is the API resource indicator the token was requested for, or
``urn:logto:organization:<id>`` for an organization token. A token for an
organization-level API resource names the organization in
``organization_id``; an organization token names it in its audience. Either
way that organization is the one, active one. ``scope`` holds the granted
scopes (for organization tokens, the organization permissions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._single import active_organization_parts
from .base import Organization, Profile, ProfileContext, SessionParts, optional_string, string_list

__all__ = ["ORGANIZATION_AUDIENCE", "PROFILE", "LogtoProfile"]

#: The audience prefix of Logto organization tokens.
ORGANIZATION_AUDIENCE = "urn:logto:organization:"


def _organization_id(access: Mapping[str, Any]) -> str | None:
    org_id = optional_string(access.get("organization_id"), "organization_id")
    if org_id:
        return org_id
    aud = access.get("aud")
    for value in [aud] if type(aud) is str else aud if type(aud) is list else []:
        if type(value) is str and value.startswith(ORGANIZATION_AUDIENCE):
            return value.removeprefix(ORGANIZATION_AUDIENCE) or None
    return None


class LogtoProfile(Profile):
    name = "logto"
    docs = (
        "https://docs.logto.io/authorization/validate-access-tokens",
        "https://docs.logto.io/authorization/organization-template/protect-organization-level-api-resources",
    )

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        org_id = _organization_id(access)
        org = Organization(id=org_id, slug=None, name=None) if org_id else None
        return active_organization_parts(
            org, scopes=string_list(access.get("scope"), "scope", split=True)
        )


PROFILE = LogtoProfile()
