"""``zitadel``: Zitadel JWT access tokens.

Zitadel asserts project roles as ``role -> {orgId: orgDomain}`` under
``urn:zitadel:iam:org:project:roles`` (the roles of the project the client
belongs to) and ``urn:zitadel:iam:org:project:<projectId>:roles`` (one claim
per requested project). jwtedge inverts them into organizations: id the
organization id, slug its primary domain, and the roles the user holds in
it. The session's roles are every role key. ``aud`` holds the project id and
the client ids; ``scope``, when present, the granted scopes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ClaimsInvalid
from ._single import key_label
from .base import Organization, Profile, ProfileContext, SessionParts, string_list

__all__ = ["PROFILE", "ROLES_CLAIM", "ZitadelProfile"]

ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
_PROJECT_ROLES = re.compile(r"^urn:zitadel:iam:org:project:[^:]+:roles$")


def _roles_claims(access: Mapping[str, Any]) -> list[str]:
    names = [ROLES_CLAIM] if ROLES_CLAIM in access else []
    names.extend(sorted(name for name in access if _PROJECT_ROLES.match(name)))
    return names


def _invert(access: Mapping[str, Any]) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    """``org id -> (domain, roles)`` and every role key, in first-seen order."""
    orgs: dict[str, tuple[str, list[str]]] = {}
    keys: list[str] = []
    for name in _roles_claims(access):
        grants = access[name]
        claim = key_label(name)
        if not isinstance(grants, Mapping):
            raise ClaimsInvalid(f"claim {claim!r} is not an object", claim=claim)
        for role, members in grants.items():
            if not isinstance(members, Mapping) or not all(
                type(org_id) is str and org_id and type(domain) is str
                for org_id, domain in members.items()
            ):
                raise ClaimsInvalid(
                    f"claim {claim!r} does not map roles to {{orgId: orgDomain}}", claim=claim
                )
            if role not in keys:
                keys.append(role)
            for org_id, domain in members.items():
                _, roles = orgs.setdefault(org_id, (domain, []))
                if role not in roles:
                    roles.append(role)
    return orgs, keys


class ZitadelProfile(Profile):
    name = "zitadel"
    docs = (
        "https://zitadel.com/docs/apis/openidoauth/claims",
        "https://zitadel.com/docs/guides/integrate/retrieve-user-roles",
    )

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        orgs, keys = _invert(access)
        return SessionParts(
            organizations=tuple(
                Organization(
                    id=org_id,
                    slug=domain or None,
                    name=None,
                    role=roles[0],
                    roles=tuple(roles),
                )
                for org_id, (domain, roles) in orgs.items()
            ),
            roles=tuple(keys),
            scopes=string_list(access.get("scope"), "scope", split=True),
        )


PROFILE = ZitadelProfile()
