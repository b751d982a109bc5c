"""``clerk``: Clerk session tokens, version 2 (``v: 2``) and the deprecated version 1.

Clerk's session token (the ``__session`` cookie, or a Bearer token from
``getToken()``) carries the active organization only:

- v2: ``o: {id, slg, rol, per, fpm}`` and ``fea``. The role comes without
  Clerk's ``org:`` prefix (``admin``). Permissions are packed: ``fea`` lists
  features with their scope (``o:`` organization, ``u:`` user, ``uo:`` both),
  ``o.per`` the permission names, and ``o.fpm`` one decimal bitmask per
  organization feature, lowest bit for the first permission. Feature
  ``f`` with bit ``i`` set grants ``org:f:<per[i]>``; this is how Clerk's own
  SDK decodes it (``@clerk/shared`` ``jwtPayloadParser``).
- v1: ``org_id``, ``org_slug``, ``org_role`` (``org:admin``) and
  ``org_permissions``.

Tokens carry no organization name. The audience is ``azp``, the origin that
asked for the token: ``auth.audience`` lists the app's origins. Clerk
documents that ``azp`` may be absent (no ``Origin`` on the request: native
apps, tokens minted on a top-level navigation) and its SDK accepted such
tokens, so an absent ``azp`` is accepted and a present one must be listed.
A ``pending`` session (``sts``) is refused: Clerk's SDK treats it as signed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import ClaimsInvalid
from ._single import active_organization_parts, mapping_claim, required_string
from .base import Organization, Profile, ProfileContext, SessionParts, optional_string, string_list

__all__ = ["PROFILE", "ClerkProfile", "org_permissions"]

_ORG_PREFIX = "org:"


def _strip_org(role: str | None) -> str | None:
    return role.removeprefix(_ORG_PREFIX) if role else role


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _org_features(fea: object) -> list[str]:
    """The organization-scoped features of ``fea`` (``o:x``, ``uo:x``, ``ou:x``), in order."""
    text = optional_string(fea, "fea")
    features = []
    for part in _split(text or ""):
        scope, colon, feature = part.partition(":")
        if not colon or not feature:
            raise ClaimsInvalid(
                "claim 'fea' has an element without a scope (o:, u: or uo:)", claim="fea"
            )
        if "o" in scope:
            features.append(feature)
    return features


def org_permissions(fea: object, per: object, fpm: object) -> tuple[str, ...]:
    """``org:<feature>:<permission>`` for every bit set in ``fpm``, as Clerk decodes them.

    ``fpm``'s n-th mask belongs to the n-th organization feature of ``fea``;
    bit i (lowest first) grants ``per``'s i-th permission. Masks past the
    features and bits past the permissions grant nothing.
    """
    permissions = _split(optional_string(per, "o.per") or "")
    masks = _split(optional_string(fpm, "o.fpm") or "")
    if not permissions or not masks:
        return ()
    granted: list[str] = []
    for feature, mask in zip(_org_features(fea), masks, strict=False):
        if not mask.isdecimal() or not mask.isascii():
            raise ClaimsInvalid("claim 'o.fpm' is not a list of decimal bitmasks", claim="o.fpm")
        # Bounded by the token size cap; Python's int() caps digit strings too.
        bits = int(mask)
        granted.extend(
            f"org:{feature}:{name}" for i, name in enumerate(permissions) if bits >> i & 1
        )
    return tuple(dict.fromkeys(granted))


def _v2(access: Mapping[str, Any]) -> Organization | None:
    o = mapping_claim(access.get("o"), "o")
    if o is None:
        return None
    org_id = required_string(o.get("id"), "o.id")
    role = _strip_org(optional_string(o.get("rol"), "o.rol"))
    return Organization(
        id=org_id,
        slug=optional_string(o.get("slg"), "o.slg"),
        name=None,
        role=role,
        roles=(role,) if role else (),
        permissions=org_permissions(access.get("fea"), o.get("per"), o.get("fpm")),
    )


def _v1(access: Mapping[str, Any]) -> Organization | None:
    org_id = optional_string(access.get("org_id"), "org_id")
    if not org_id:
        return None
    role = _strip_org(optional_string(access.get("org_role"), "org_role"))
    return Organization(
        id=org_id,
        slug=optional_string(access.get("org_slug"), "org_slug"),
        name=None,
        role=role,
        roles=(role,) if role else (),
        permissions=string_list(access.get("org_permissions"), "org_permissions"),
    )


class ClerkProfile(Profile):
    name = "clerk"
    docs = (
        "https://clerk.com/docs/guides/sessions/session-tokens",
        "https://clerk.com/docs/guides/sessions/manual-jwt-verification",
        "https://github.com/clerk/javascript/blob/main/packages/shared/src/jwtPayloadParser.ts",
    )
    audience_claim = "azp"
    audience_optional = True
    #: Clerk's two default roles; custom roles rank through ``claims.role_ranks``.
    role_ranks = MappingProxyType({"member": 1, "admin": 2})

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        version = access.get("v")
        org = _v2(access) if version == 2 and type(version) is int else _v1(access)
        return active_organization_parts(org)

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        # An authorized party is one origin (OIDC Core 2): never a list.
        optional_string(claims.get("azp"), "azp")
        status = optional_string(claims.get("sts"), "sts")
        if status == "pending":
            raise ClaimsInvalid(
                "the Clerk session is pending (sts): Clerk treats it as signed out", claim="sts"
            )


PROFILE = ClerkProfile()
