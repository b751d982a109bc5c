"""``firebase``: Firebase Authentication ID tokens (the bearer token Firebase apps send).

Issuer ``https://securetoken.google.com/<project id>``, ``aud`` the project
id, keys at Google's ``securetoken@system.gserviceaccount.com`` set. Firebase
has one kind of token, so its ID token is the access token: a token with the
``firebase`` claim is never taken for an OIDC ID token. With Identity
Platform multi-tenancy, ``firebase.tenant`` is the tenant, the one
organization. Roles are custom claims the app sets itself, so they come from
``claims.roles`` (e.g. ``roles`` or ``/app/roles``) when set. Firebase tokens
carry no session id. The user's email, name and picture are top-level claims.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimsInvalid
from ._single import mapping_claim
from .base import Organization, Profile, ProfileContext, SessionParts, TokenKind, optional_string

__all__ = ["PROFILE", "FirebaseProfile"]

#: Firebase's own limit on ``sub`` (the uid), which its Admin SDK checks.
MAX_UID_LENGTH = 128


class FirebaseProfile(Profile):
    name = "firebase"
    docs = (
        "https://firebase.google.com/docs/auth/admin/verify-id-tokens#verify_id_tokens_using_a_third-party_jwt_library",
        "https://cloud.google.com/identity-platform/docs/multi-tenancy-authentication",
    )

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        firebase = mapping_claim(access.get("firebase"), "firebase") or {}
        tenant = optional_string(firebase.get("tenant"), "firebase.tenant")
        if not tenant:
            return SessionParts()
        org = Organization(id=tenant, slug=None, name=None)
        return SessionParts(organizations=(org,), active_organization=org)

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        return "access" if isinstance(claims.get("firebase"), Mapping) else None

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        sub = claims.get("sub")
        if type(sub) is str and len(sub) > MAX_UID_LENGTH:
            raise ClaimsInvalid(
                f'the "sub" claim is longer than Firebase\'s {MAX_UID_LENGTH} characters',
                claim="sub",
            )


PROFILE = FirebaseProfile()
