"""``keycloak``: Keycloak access and ID tokens.

Sources:

- Role mappings in tokens (``realm_access.roles``, ``resource_access.<client>.roles``):
  https://www.keycloak.org/docs/latest/server_admin/#_role_mappings and the
  ``AccessToken`` representation (org.keycloak.representations.AccessToken:
  ``realm_access`` / ``resource_access`` are ``{"roles": [...]}``).
- Group membership mapper (``groups``, a list of names or full paths):
  https://www.keycloak.org/docs/latest/server_admin/#_protocol-mappers
- Organizations (Keycloak 26+): https://www.keycloak.org/docs/latest/server_admin/#_managing_organizations
  and ``OrganizationMembershipMapper`` (keycloak/keycloak,
  services/.../organization/protocol/mappers/oidc/OrganizationMembershipMapper.java):
  the ``organization`` claim is a list of aliases (multivalued, the default),
  one alias string (single-valued), or, as JSON, a map alias -> ``{}``,
  holding ``id`` with "Add organization id" and the organization's attributes
  (name -> list of strings) with "Add organization attributes". A custom
  mapper may add ``roles`` to an entry; they are read when present.
- Token types: the payload's ``typ`` is ``Bearer`` for access tokens and
  ``ID`` for ID tokens (org.keycloak.util.TokenUtil TOKEN_TYPE_BEARER /
  TOKEN_TYPE_ID). Keycloak before 25 also put ``nonce`` in access tokens
  (keycloak/keycloak#26893, fixed in 25.0.0), so the payload ``typ`` is
  consulted before the generic "a token with a nonce is an ID token" rule;
  any other payload ``typ`` (``ID``, ``Refresh``, ``Logout``) is not an
  access token.

Mapping: audience ``aud``, subject ``sub``. Organizations from
``organization`` in each shape: the id from the map entry when present, else
the alias; the slug is the alias; the name is unknown (``None``). The active
organization is the one the token holds alone when it was asked for by name
(``organization:<alias>`` in ``scope``) or given as a single string. Roles are
``realm_access.roles`` + ``resource_access[auth.client_id].roles`` +
``groups``; scopes come from ``scope``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimsInvalid
from .base import (
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    TokenKind,
    merge,
    string_list,
)

__all__ = ["PROFILE", "KeycloakProfile"]


def _object(value: object, claim: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ClaimsInvalid(f"claim {claim!r} is not an object", claim=claim)
    return value


def _roles_of(holder: object, claim: str) -> tuple[str, ...]:
    entry = _object(holder, claim)
    return string_list(entry.get("roles"), f"{claim}/roles") if entry else ()


def _organizations(value: object) -> tuple[Organization, ...]:
    claim = "organization"
    if value is None:
        return ()
    if type(value) is str:
        return (Organization(value, value, None),) if value else ()
    if type(value) is list:
        return tuple(
            Organization(alias, alias, None) for alias in string_list(value, claim) if alias
        )
    if type(value) is dict:
        orgs = []
        for alias, entry in value.items():
            details = _object(entry, f"{claim}/{alias}") or {}
            org_id = details.get("id", alias)
            if type(org_id) is not str or not org_id:
                raise ClaimsInvalid(
                    f"claim {claim!r} holds an id that is not a string", claim=claim
                )
            roles = string_list(details.get("roles"), f"{claim}/{alias}/roles")
            orgs.append(Organization(org_id, alias, None, roles[0] if roles else None, roles))
        return tuple(orgs)
    raise ClaimsInvalid(
        f"claim {claim!r} is neither an alias, a list of aliases nor a map", claim=claim
    )


class KeycloakProfile(Profile):
    name = "keycloak"
    docs = (
        "https://www.keycloak.org/docs/latest/server_admin/#_managing_organizations",
        "https://www.keycloak.org/docs/latest/server_admin/#_role_mappings",
        "https://www.keycloak.org/docs/latest/upgrading/#nonce-claim-is-only-added-to-the-id-token",
    )
    tells_tokens_apart = True

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        raw_orgs = access.get("organization")
        organizations = _organizations(raw_orgs)
        scopes = string_list(access.get("scope"), "scope", split=True)
        active = None
        if len(organizations) == 1:
            only = organizations[0]
            if type(raw_orgs) is str or f"organization:{only.slug}" in scopes:
                active = only
        client_roles: tuple[str, ...] = ()
        resource_access = _object(access.get("resource_access"), "resource_access")
        if resource_access is not None and context.client_id is not None:
            client = context.client_id
            client_roles = _roles_of(resource_access.get(client), f"resource_access/{client}")
        roles = merge(
            _roles_of(access.get("realm_access"), "realm_access"),
            client_roles,
            string_list(access.get("groups"), "groups"),
        )
        return SessionParts(
            organizations=organizations,
            scopes=scopes,
            roles=roles,
            active_organization=active,
        )

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        # Only "Bearer" is an access token; "ID", "Refresh", "Offline", "Logout"
        # are not. Tokens without a payload typ fall to the generic rules.
        typ = claims.get("typ")
        if not isinstance(typ, str):
            return None
        return "access" if typ.lower() == "bearer" else "id"


PROFILE = KeycloakProfile()
