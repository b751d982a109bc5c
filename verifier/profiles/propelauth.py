"""``propelauth``: PropelAuth access tokens.

The user is ``user_id``. ``org_id_to_org_member_info`` maps each organization
id to the membership: ``org_id``, ``org_name``, ``url_safe_org_name`` (the
slug), ``user_role`` (the primary role), ``inherited_user_roles_plus_current_role``
(every role the primary one implies in a role hierarchy), ``additional_roles``
(multi-role organizations) and ``user_permissions``. A token created for one
organization (PropelAuth's "active organization" mode) carries
``org_member_info`` instead: that membership is the only and the active one.
Access tokens carry no ``aud``: ``auth.audience_claim=none`` is the explicit
opt-in, the token bound by issuer and keys. ``first_name`` / ``last_name``
make the user's name when no ``name`` claim is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ..errors import ClaimsInvalid
from ..session import build_user
from ._single import key_label, mapping_claim, required_string
from .base import (
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    merge,
    optional_string,
    string_list,
)

__all__ = ["PROFILE", "PropelAuthProfile"]

_ORGS = "org_id_to_org_member_info"
_ACTIVE = "org_member_info"


def _membership(info: object, claim: str) -> Organization:
    member = mapping_claim(info, claim)
    if member is None:
        raise ClaimsInvalid(f"claim {claim!r} is not an object", claim=claim)
    role = optional_string(member.get("user_role"), f"{claim}.user_role")
    roles = merge(
        (role,) if role else (),
        string_list(
            member.get("inherited_user_roles_plus_current_role"),
            f"{claim}.inherited_user_roles_plus_current_role",
        ),
        string_list(member.get("additional_roles"), f"{claim}.additional_roles"),
    )
    return Organization(
        id=required_string(member.get("org_id"), f"{claim}.org_id"),
        slug=optional_string(member.get("url_safe_org_name"), f"{claim}.url_safe_org_name"),
        name=optional_string(member.get("org_name"), f"{claim}.org_name"),
        role=role,
        roles=roles,
        permissions=string_list(member.get("user_permissions"), f"{claim}.user_permissions"),
    )


class PropelAuthProfile(Profile):
    name = "propelauth"
    docs = (
        "https://docs.propelauth.com/reference/backend-apis/python",
        "https://github.com/PropelAuth/propelauth-py/blob/main/propelauth_py/user.py",
    )
    #: PropelAuth's default role hierarchy.
    role_ranks = MappingProxyType({"Member": 1, "Admin": 2, "Owner": 3})

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        user = build_user(access, id_claims, self.subject(access))
        if user.name is None:
            first = optional_string(access.get("first_name"), "first_name")
            last = optional_string(access.get("last_name"), "last_name")
            name = " ".join(part for part in (first, last) if part)
            user = replace(user, name=name or None)
        if access.get(_ACTIVE) is not None:
            org = _membership(access[_ACTIVE], _ACTIVE)
            return SessionParts(organizations=(org,), active_organization=org, user=user)
        orgs = mapping_claim(access.get(_ORGS), _ORGS) or {}
        return SessionParts(
            organizations=tuple(
                _membership(info, f"{_ORGS}.{key_label(org_id)}") for org_id, info in orgs.items()
            ),
            user=user,
        )

    def subject(self, claims: Mapping[str, Any]) -> str:
        return required_string(claims.get("user_id"), "user_id")

    def subject_key(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        user_id = claims.get("user_id", claims.get("sub"))
        return (user_id,) if type(user_id) is str else ()


PROFILE = PropelAuthProfile()
