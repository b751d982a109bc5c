"""``supabase``: Supabase Auth access tokens.

Issuer ``https://<project>.supabase.co/auth/v1`` (exactly), ``aud``
``authenticated``. Only a signed-in user's token is a session: ``role`` must
be ``authenticated``. The project's ``anon`` and ``service_role`` tokens (API
keys, not users) are refused even though they are signed by the same
project. ``session_id`` is Supabase's session id; ``user_role`` is the claim
Supabase's RBAC guide adds with a custom access token hook. Anonymous
sign-ins are users too (``role: authenticated``, ``is_anonymous: true``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import TokenTypeInvalid
from .base import Profile, ProfileContext, SessionParts, optional_string

__all__ = ["PROFILE", "SupabaseProfile"]


class SupabaseProfile(Profile):
    name = "supabase"
    docs = (
        "https://supabase.com/docs/guides/auth/jwt-fields",
        "https://supabase.com/docs/guides/database/postgres/custom-claims-and-role-based-access-control-rbac",
    )

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        user_role = optional_string(access.get("user_role"), "user_role")
        return SessionParts(
            roles=(user_role,) if user_role else (),
            session_id=optional_string(access.get("session_id"), "session_id"),
        )

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        role = claims.get("role")
        if role != "authenticated":
            kind = f"{role} " if role in ("anon", "service_role") else ""
            raise TokenTypeInvalid(
                f"a Supabase {kind}token is not a signed-in user's access token "
                "(role must be authenticated)"
            )


PROFILE = SupabaseProfile()
