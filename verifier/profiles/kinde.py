"""``kinde``: Kinde access tokens.

A Kinde access token is issued for one organization, the one the user signed
in to: ``org_code`` (its id) and ``org_name`` (when "include organization
name" is on). ``roles`` is that organization's roles as
``[{id, key, name}]`` (when roles are added to the token), ``permissions``
its permissions, ``scp`` the granted scopes (a list). ``aud`` is a list of
the API audiences the token was requested for (empty when none was).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimsInvalid
from ._single import active_organization_parts
from .base import Organization, Profile, ProfileContext, SessionParts, optional_string, string_list

__all__ = ["PROFILE", "KindeProfile"]


def _role_keys(value: object) -> tuple[str, ...]:
    """``[r["key"] for r in roles]``; ``claims_invalid`` for any other shape."""
    if value is None:
        return ()
    if type(value) is list and all(
        isinstance(role, Mapping) and type(role.get("key")) is str and role["key"] for role in value
    ):
        return tuple(dict.fromkeys(role["key"] for role in value))
    raise ClaimsInvalid("claim 'roles' is not a list of {id, key, name} objects", claim="roles")


class KindeProfile(Profile):
    name = "kinde"
    docs = (
        "https://docs.kinde.com/build/tokens/about-access-tokens/",
        "https://docs.kinde.com/build/tokens/token-customization/",
    )

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        scopes = string_list(access.get("scp"), "scp", split=True)
        org_code = optional_string(access.get("org_code"), "org_code")
        if not org_code:
            return SessionParts(scopes=scopes)
        roles = _role_keys(access.get("roles"))
        org = Organization(
            id=org_code,
            slug=None,
            name=optional_string(access.get("org_name"), "org_name"),
            role=roles[0] if roles else None,
            roles=roles,
            permissions=string_list(access.get("permissions"), "permissions"),
        )
        return active_organization_parts(org, scopes=scopes)


PROFILE = KindeProfile()
