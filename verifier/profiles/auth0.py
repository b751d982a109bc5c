"""``auth0``: Auth0 (Okta Customer Identity Cloud) access and ID tokens.

Sources:

- Organizations in tokens: https://auth0.com/docs/manage-users/organizations/using-tokens
  (``org_id`` always; ``org_name`` too when the tenant allows organization
  names in the Authentication API:
  https://auth0.com/docs/manage-users/organizations/configure-organizations/use-org-name-authentication-api)
- Access token profiles: https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles
  (the default Auth0 profile, ``typ: JWT`` with ``azp``; the RFC 9068 profile,
  ``typ: at+jwt`` with ``client_id`` and ``jti``)
- RBAC permissions: https://auth0.com/docs/get-started/apis/enable-role-based-access-control-for-apis
  (``permissions``, a list, with "Add Permissions in the Access Token")
- Roles are not a standard claim: teams add them with an Action under a
  namespaced name (https://auth0.com/docs/secure/tokens/json-web-tokens/create-custom-claims),
  e.g. ``https://example.com/roles``; ``claims.roles`` names it.

Mapping: the audience is ``aud`` (a string or a list that often adds
``https://<tenant>/userinfo``); the subject is ``sub`` (``auth0|…``, or
``<client id>@clients`` for client credentials). A token issued through an
organization carries one organization, which is the active one: ``org_id``
is its id and ``org_name`` (when present) its slug and name; the roles from
``claims.roles`` and the ``permissions`` are that membership's too, as Auth0
scopes them to the organization the user logged in to. Scopes come from
``scope``. Tokens of the RFC 9068 profile (``typ: at+jwt``) are access tokens;
otherwise the generic rules tell them from ID tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    TokenKind,
    claim_at,
    optional_string,
    string_list,
)

__all__ = ["PROFILE", "Auth0Profile"]


def _is_at_jwt(typ: object) -> bool:
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == "at+jwt"


class Auth0Profile(Profile):
    name = "auth0"
    docs = (
        "https://auth0.com/docs/manage-users/organizations/using-tokens",
        "https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles",
        "https://auth0.com/docs/get-started/apis/enable-role-based-access-control-for-apis",
    )

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        roles: tuple[str, ...] = ()
        if context.roles_path is not None:
            roles = string_list(claim_at(access, context.roles_path), context.roles_path)
        permissions = string_list(access.get("permissions"), "permissions")
        org_id = optional_string(access.get("org_id"), "org_id")
        org_name = optional_string(access.get("org_name"), "org_name")
        organizations: tuple[Organization, ...] = ()
        active = None
        if org_id:
            active = Organization(
                org_id,
                org_name or None,
                org_name or None,
                roles[0] if roles else None,
                roles,
                permissions,
            )
            organizations = (active,)
        return SessionParts(
            organizations=organizations,
            scopes=string_list(access.get("scope"), "scope", split=True),
            roles=roles,
            permissions=permissions,
            active_organization=active,
        )

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        # RFC 9068 profile; the default profile's "typ: JWT" says nothing.
        return "access" if _is_at_jwt(header.get("typ")) else None


PROFILE = Auth0Profile()
