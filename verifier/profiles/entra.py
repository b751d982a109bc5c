"""``entra``: Microsoft Entra ID (Azure AD) v1.0 and v2.0 tokens.

Sources:

- Access token claims: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
  (``aud``: the API's client id, or in v1.0 its App ID URI; ``iss``:
  ``https://sts.windows.net/<tid>/`` for v1.0, ``https://login.microsoftonline.com/<tid>/v2.0``
  for v2.0; ``ver`` ``"1.0"``/``"2.0"``; ``oid`` and ``tid``; ``scp`` (space
  separated, user tokens only); ``roles`` (app roles); ``groups`` (object ids;
  over 200 the token carries an overage claim instead); ``appid`` (v1.0) /
  ``azp`` (v2.0): the client, in every access token)
- ID token claims: https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference
  (``aud`` = the client id; ``sub`` is pairwise per application; no ``scp``,
  ``appid`` or ``azp``; "use ``oid`` and ``tid``" to identify a user across
  applications)
- Multi-tenant issuer validation: https://learn.microsoft.com/entra/identity-platform/howto-convert-app-to-be-multi-tenant
  (the common discovery document's issuer is
  ``https://login.microsoftonline.com/{tenantid}/v2.0``; substitute ``tid``)
- Microsoft Graph tokens are for Graph only: https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-tokens
  (their audience is ``00000003-0000-0000-c000-000000000000`` or
  ``https://graph.microsoft.com``; they are signed in a way apps cannot
  verify, so they fail the signature check)

Mapping: audience ``aud``. The subject is ``oid`` with ``tid``: the user id
is ``oid``, and the access token binds to its ID token (and a refresh to its
proof) on both, since ``sub`` differs between the API's token and the
client's ID token. ``tid`` must be one of ``auth.tenants`` when set, and
``iss`` must be that tenant's; both issuer forms of an accepted tenant pass.
``auth.issuer`` may hold ``{tenantid}`` (multi-tenant apps; ``auth.tenants``
is then required). The one organization is the tenant (``tid``), active.
Roles are ``roles`` + ``groups``; scopes ``scp``. ``scp``, ``appid``,
``azp`` or ``idtyp`` mark an access token; any other token with ``ver`` is
an ID token. A token for Microsoft Graph is refused with ``audience_mismatch``
before its signature is checked, saying what it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import AudienceMismatch, ClaimsInvalid, IssuerMismatch
from .base import (
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    TokenKind,
    merge,
    string_list,
)

__all__ = ["GRAPH_AUDIENCES", "PROFILE", "EntraProfile"]

#: Microsoft Graph's audiences (its app id, and its resource URI).
GRAPH_AUDIENCES = frozenset(
    {
        "00000003-0000-0000-c000-000000000000",
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/",
    }
)
TEMPLATE = "{tenantid}"
_V1 = "https://sts.windows.net/{}/"
_V2 = "https://login.microsoftonline.com/{}/v2.0"
_FIXED_TENANT = re.compile(
    r"^(?:https://login\.microsoftonline\.com/([^/{}]+)/v2\.0|https://sts\.windows\.net/([^/{}]+)/)$"
)
_PUBLIC_HOSTS = ("https://login.microsoftonline.com/", "https://sts.windows.net/")
# Not tenants: the issuer of a token always names the tenant itself.
_ALIASES = ("common", "organizations", "consumers")
_ACCESS_MARKERS = ("scp", "appid", "azp", "idtyp")


def _tenant_of(issuer: str) -> str | None:
    match = _FIXED_TENANT.match(issuer)
    return (match.group(1) or match.group(2)) if match else None


class EntraProfile(Profile):
    name = "entra"
    docs = (
        "https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference",
        "https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference",
        "https://learn.microsoft.com/entra/identity-platform/howto-convert-app-to-be-multi-tenant",
    )
    tells_tokens_apart = True

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        tenant = Organization(access["tid"], None, None)
        return SessionParts(
            organizations=(tenant,),
            scopes=string_list(access.get("scp"), "scp", split=True),
            roles=merge(
                string_list(access.get("roles"), "roles"),
                string_list(access.get("groups"), "groups"),
            ),
            active_organization=tenant,
        )

    def subject(self, claims: Mapping[str, Any]) -> str:
        oid = claims.get("oid")
        if type(oid) is not str or not oid:
            raise ClaimsInvalid(
                'Entra tokens identify the user by "oid" (with the profile scope); this one has '
                "none",
                claim="oid",
            )
        return oid

    def subject_key(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        oid, tid = claims.get("oid"), claims.get("tid")
        return (tid, oid) if type(oid) is str and type(tid) is str else ()

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        if any(name in claims for name in _ACCESS_MARKERS):
            return "access"
        return "id" if "ver" in claims else None

    def check_unverified(
        self, header: Mapping[str, Any], claims: Mapping[str, Any], context: ProfileContext
    ) -> None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if any(isinstance(value, str) and value in GRAPH_AUDIENCES for value in audiences):
            raise AudienceMismatch(
                "this is a Microsoft Graph token: it is for Graph, not for this app; request a "
                "token for this API's own scope (api://<client id>/...)"
            )

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        tid = claims.get("tid")
        if type(tid) is not str or not tid:
            raise ClaimsInvalid('Entra tokens carry the tenant in "tid"', claim="tid")
        fixed = _tenant_of(context.issuer)
        if fixed is not None and tid != fixed:
            raise IssuerMismatch("the token's tenant (tid) is not the issuer's tenant")
        if context.tenants and tid not in context.tenants:
            raise IssuerMismatch("the token's tenant (tid) is not one of auth.tenants")
        if claims.get("iss") not in self.issuers(context.issuer, frozenset({tid})):
            raise IssuerMismatch("the token's issuer is not its tenant's (tid)")

    def issuers(self, issuer: str, tenants: frozenset[str]) -> frozenset[str]:
        fixed = _tenant_of(issuer)
        if fixed is not None:
            return frozenset({issuer, _V1.format(fixed), _V2.format(fixed)})
        if TEMPLATE not in issuer:
            return frozenset({issuer})
        accepted = set()
        for tenant in tenants:
            accepted.add(issuer.replace(TEMPLATE, tenant))
            if issuer.startswith(_PUBLIC_HOSTS):
                accepted.update((_V1.format(tenant), _V2.format(tenant)))
        return frozenset(accepted)

    def check_config(
        self, *, issuer: str, tenants: frozenset[str], client_id: str | None
    ) -> list[tuple[str, str]]:
        problems = []
        if TEMPLATE in issuer and not tenants:
            problems.append(
                (
                    "auth.tenants",
                    "required when auth.issuer holds {tenantid} (a multi-tenant app): list the "
                    "tenant ids (tid) this app accepts",
                )
            )
        if any(f"/{alias}/" in issuer for alias in _ALIASES):
            problems.append(
                (
                    "auth.issuer",
                    "tokens never carry a common/organizations/consumers issuer: use "
                    "https://login.microsoftonline.com/{tenantid}/v2.0 with auth.tenants, or "
                    "your tenant's issuer",
                )
            )
        fixed = _tenant_of(issuer)
        if fixed is not None and tenants and fixed not in tenants:
            problems.append(("auth.tenants", "does not hold the tenant auth.issuer names"))
        return problems


PROFILE = EntraProfile()
