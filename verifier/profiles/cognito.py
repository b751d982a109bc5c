"""``cognito``: Amazon Cognito user pool access and ID tokens.

Sources:

- Access token: https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html
  (no ``aud``; ``client_id`` is the app client; ``token_use: "access"``;
  ``cognito:groups``; ``scope``; ``username``; ``sub``)
- ID token: https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-id-token.html
  (``aud`` = the app client id; ``token_use: "id"``; ``email``, ``cognito:username``)
- Verifying: https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html
  and awslabs/aws-jwt-verify (``CognitoJwtVerifier`` checks ``token_use`` and
  the client id: ``client_id`` for access tokens, ``aud`` for ID tokens).

Mapping: the audience claim is ``client_id`` (``auth.audience`` lists the
app client ids); an access token must say ``token_use: "access"``, and
``token_use`` tells every Cognito token apart. Subject ``sub``. No
organizations; roles are ``cognito:groups``; scopes ``scope``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import TokenTypeInvalid
from .base import Profile, ProfileContext, SessionParts, TokenKind, string_list

__all__ = ["PROFILE", "CognitoProfile"]

_KINDS: Mapping[str, TokenKind] = {"access": "access", "id": "id"}


class CognitoProfile(Profile):
    name = "cognito"
    docs = (
        "https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html",
        "https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-id-token.html",
        "https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html",
    )
    audience_claim = "client_id"
    tells_tokens_apart = True

    def map_claims(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        context: ProfileContext,
    ) -> SessionParts:
        return SessionParts(
            scopes=string_list(access.get("scope"), "scope", split=True),
            roles=string_list(access.get("cognito:groups"), "cognito:groups"),
        )

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        token_use = claims.get("token_use")
        return _KINDS.get(token_use) if isinstance(token_use, str) else None

    def check_access(self, claims: Mapping[str, Any], context: ProfileContext) -> None:
        # An ID token is refused by token_kind; this refuses tokens that say nothing.
        if claims.get("token_use") != "access":
            raise TokenTypeInvalid('Cognito access tokens carry "token_use": "access"')


PROFILE = CognitoProfile()
