"""``okta``: Okta (Workforce Identity) access and ID tokens.

Sources:

- Token claims: https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/
  and https://developer.okta.com/docs/guides/validate-access-tokens/ (access
  tokens: ``ver``, ``jti`` = ``AT.…``, ``iss``, ``aud``, ``sub``, ``cid``
  (the client id), ``uid`` (the user id), ``scp`` (a list of scopes);
  ID tokens: ``sub`` = the user id, ``jti`` = ``ID.…``, ``aud`` = the client
  id, no ``cid``).
- Validating an ID token: https://developer.okta.com/docs/guides/validate-id-tokens/
- Groups claim: https://developer.okta.com/docs/guides/customize-tokens-groups-claim/
  (a list, usually named ``groups``, added to the access token by a custom
  authorization server or to the ID token by the org server).

The pair binds on the user id: an access token's ``sub`` is the user's login
(an email address, which can change) while its ``uid`` is the id the ID
token calls ``sub``, so the subject is ``uid`` (``sub`` for client
credentials tokens, which have no user). Audience ``aud`` (``api://default``
on the default authorization server). Roles are ``groups`` (from the access
token, else the ID token; ``claims.roles`` overrides); scopes are ``scp``.
``cid`` or a ``jti`` of ``AT.…`` marks an access token, a ``jti`` of ``ID.…``
an ID token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimsInvalid
from .base import Profile, ProfileContext, SessionParts, TokenKind, string_list

__all__ = ["PROFILE", "OktaProfile"]


class OktaProfile(Profile):
    name = "okta"
    docs = (
        "https://developer.okta.com/docs/guides/validate-access-tokens/",
        "https://developer.okta.com/docs/guides/validate-id-tokens/",
        "https://developer.okta.com/docs/guides/customize-tokens-groups-claim/",
    )
    tells_tokens_apart = True

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        groups = access.get("groups")
        if groups is None and id_claims is not None:
            groups = id_claims.get("groups")
        return SessionParts(
            scopes=string_list(access.get("scp"), "scp", split=True),
            roles=string_list(groups, "groups"),
        )

    def subject(self, claims: Mapping[str, Any]) -> str:
        uid = claims.get("uid")
        if uid is None:
            return super().subject(claims)
        if type(uid) is not str or not uid:
            raise ClaimsInvalid('the "uid" claim must be a non-empty string', claim="uid")
        return uid

    def subject_key(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        # Access tokens name the user in uid, ID tokens in sub.
        uid = claims.get("uid")
        if uid is not None:
            return (uid,) if type(uid) is str else ()
        return super().subject_key(claims)

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        if "cid" in claims:
            return "access"
        jti = claims.get("jti")
        if isinstance(jti, str):
            if jti.startswith("AT."):
                return "access"
            if jti.startswith("ID."):
                return "id"
        return None


PROFILE = OktaProfile()
