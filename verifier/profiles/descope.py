"""``descope``: Descope session JWTs.

``tenants`` maps each tenant id the user belongs to to its ``roles`` and
``permissions``: the organizations. ``dct`` is the current tenant, when the
user selected one. Top-level ``roles`` and ``permissions`` are the
project-level ones. ``aud`` is the project id when Descope adds it; tokens
without one need ``auth.audience_claim=none``. Descope signs its refresh
token (``drn: "DSR"``) with the same keys as its session token (``drn:
"DS"``), so a refresh token is refused explicitly: it is never an access
token.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import ClaimsInvalid, TokenTypeInvalid
from ._single import key_label, mapping_claim
from .base import (
    DEFAULT_ROLE_RANKS,
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    optional_string,
    string_list,
)

__all__ = ["PROFILE", "REFRESH_TOKEN_DRN", "DescopeProfile"]

#: ``drn`` of a Descope refresh token (a session token's is ``DS``).
REFRESH_TOKEN_DRN = "DSR"  # noqa: S105 - a token kind, not a secret


def _tenant(tenant_id: str, value: object) -> Organization:
    claim = f"tenants.{key_label(tenant_id)}"
    grants = mapping_claim(value, claim)
    if grants is None:
        raise ClaimsInvalid(f"claim {claim!r} is not an object", claim=claim)
    roles = string_list(grants.get("roles"), f"{claim}.roles")
    return Organization(
        id=tenant_id,
        slug=None,
        name=None,
        role=roles[0] if roles else None,
        roles=roles,
        permissions=string_list(grants.get("permissions"), f"{claim}.permissions"),
    )


class DescopeProfile(Profile):
    name = "descope"
    docs = (
        "https://docs.descope.com/session-management/jwt-templates/default-jwt-claims",
        "https://docs.descope.com/management/tenant-management/tenants",
        "https://github.com/descope/node-sdk/blob/main/lib/constants.ts",
    )

    #: The default ranking plus Descope's built-in tenant role.
    role_ranks = MappingProxyType({**DEFAULT_ROLE_RANKS, "Tenant Admin": 2})

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        tenants = mapping_claim(access.get("tenants"), "tenants") or {}
        orgs = tuple(_tenant(tenant_id, value) for tenant_id, value in tenants.items())
        current = optional_string(access.get("dct"), "dct")
        return SessionParts(
            organizations=orgs,
            active_organization=next((org for org in orgs if org.id == current), None),
            roles=string_list(access.get("roles"), "roles"),
            permissions=string_list(access.get("permissions"), "permissions"),
        )

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        if claims.get("drn") == REFRESH_TOKEN_DRN:
            raise TokenTypeInvalid("a Descope refresh token (drn DSR) is not an access token")


PROFILE = DescopeProfile()
