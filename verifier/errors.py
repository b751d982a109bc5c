"""One error tree with stable codes.

Every failure jwtedge reports is a :class:`VerifierError` with a stable
``code`` (the contract other code and operators rely on), an HTTP ``status``,
the RFC 6750 ``error`` value for ``WWW-Authenticate`` and a default message.
Context travels as keyword attributes (``kid``, ``alg``, ``setting`` …); the
cause is kept with ``raise … from exc``. Messages and context never hold a
token, a refresh token or a secret: callers pass names and short facts only.

::

    VerifierError
    ├── TokenError                       401 / anonymous page
    │   ├── TokenMissing                 token_missing
    │   ├── TokenTooLarge                token_too_large
    │   ├── TokenMalformed               token_malformed
    │   ├── HeaderInvalid                header_invalid
    │   ├── AlgorithmNotAllowed          algorithm_not_allowed
    │   ├── TokenTypeInvalid             token_type_invalid
    │   ├── KeyNotFound                  key_not_found
    │   ├── SignatureInvalid             signature_invalid
    │   ├── TokenExpired                 token_expired
    │   ├── TokenNotYetValid             token_not_yet_valid
    │   ├── IssuedInFuture               issued_in_future
    │   ├── IssuerMismatch               issuer_mismatch
    │   ├── AudienceMismatch             audience_mismatch
    │   ├── ClaimsInvalid                claims_invalid
    │   ├── IdTokenMismatch              id_token_mismatch
    │   └── KeysStale                    keys_stale (503)
    ├── JWKSError
    │   ├── JWKSInvalid                  jwks_invalid
    │   └── JWKSFetchFailed              jwks_fetch_failed
    ├── RefreshFailed                    refresh_failed
    ├── CSRFRejected                     csrf_rejected (403)
    ├── ConfigInvalid                    config_invalid
    └── AuthzError                       403 unless noted
        ├── OrgForbidden                 org_forbidden
        ├── OrgRequired                  org_required (400)
        ├── OrgMembershipRequired        org_membership_required
        ├── ProjectForbidden             project_forbidden
        ├── RoleInsufficient             role_insufficient
        └── ScopeInsufficient            scope_insufficient
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERROR_CODES",
    "AlgorithmNotAllowed",
    "AudienceMismatch",
    "AuthzError",
    "CSRFRejected",
    "ClaimsInvalid",
    "ConfigInvalid",
    "HeaderInvalid",
    "IdTokenMismatch",
    "IssuedInFuture",
    "IssuerMismatch",
    "JWKSError",
    "JWKSFetchFailed",
    "JWKSInvalid",
    "KeyNotFound",
    "KeysStale",
    "OrgForbidden",
    "OrgMembershipRequired",
    "OrgRequired",
    "ProjectForbidden",
    "RefreshFailed",
    "RoleInsufficient",
    "ScopeInsufficient",
    "SignatureInvalid",
    "TokenError",
    "TokenExpired",
    "TokenMalformed",
    "TokenMissing",
    "TokenNotYetValid",
    "TokenTooLarge",
    "TokenTypeInvalid",
    "VerifierError",
]


class VerifierError(Exception):
    """Base of every jwtedge error.

    ``code`` is stable and documented; ``message`` is for humans and may
    change. Keyword arguments become attributes and appear in ``context``;
    pass only non-secret facts (a kid, an algorithm name, a setting name).
    """

    code: ClassVar[str] = "verifier_error"
    status: ClassVar[int] = 401
    #: The RFC 6750 ``error`` value used in ``WWW-Authenticate`` and JSON bodies.
    error: ClassVar[str] = "invalid_token"
    default_message: ClassVar[str] = "verification failed"

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or self.default_message
        self.context: dict[str, Any] = context
        for name, value in context.items():
            setattr(self, name, value)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def to_dict(self) -> dict[str, str]:
        """The JSON body an API answers with."""
        return {"error": self.error, "code": self.code, "message": self.message}


# -- tokens -----------------------------------------------------------------


class TokenError(VerifierError):
    """A presented token was refused. 401 on APIs, anonymous on pages."""

    code = "token_invalid"
    default_message = "the token was refused"


class TokenMissing(TokenError):
    code = "token_missing"
    error = "invalid_request"
    default_message = "no token was presented"


class TokenTooLarge(TokenError):
    code = "token_too_large"
    default_message = "the token is larger than auth.max_token_bytes"


class TokenMalformed(TokenError):
    code = "token_malformed"
    default_message = "the token is not a well-formed compact JWS"


class HeaderInvalid(TokenError):
    code = "header_invalid"
    default_message = "the token header carries a parameter that is refused"


class AlgorithmNotAllowed(TokenError):
    code = "algorithm_not_allowed"
    default_message = "the token's algorithm is not allowed for its key"


class TokenTypeInvalid(TokenError):
    code = "token_type_invalid"
    default_message = "the token is not of the expected type"


class KeyNotFound(TokenError):
    code = "key_not_found"
    default_message = "no usable key matches the token"


class SignatureInvalid(TokenError):
    code = "signature_invalid"
    default_message = "the token signature does not verify"


class TokenExpired(TokenError):
    code = "token_expired"
    default_message = "the token has expired"


class TokenNotYetValid(TokenError):
    code = "token_not_yet_valid"
    default_message = "the token is not valid yet"


class IssuedInFuture(TokenError):
    code = "issued_in_future"
    default_message = "the token was issued in the future"


class IssuerMismatch(TokenError):
    code = "issuer_mismatch"
    default_message = "the token was issued by another issuer"


class AudienceMismatch(TokenError):
    code = "audience_mismatch"
    default_message = "the token is not meant for this audience"


class ClaimsInvalid(TokenError):
    code = "claims_invalid"
    default_message = "the token's claims are invalid"


class IdTokenMismatch(TokenError):
    code = "id_token_mismatch"
    default_message = "the ID token does not belong with the access token"


class KeysStale(TokenError):
    """The keys this token needs could not be refreshed for too long.

    The user did nothing wrong, so this answers 503, not 401.
    """

    code = "keys_stale"
    status = 503
    error = "temporarily_unavailable"
    default_message = "signing keys are stale; the issuer could not be reached"


# -- key sets ---------------------------------------------------------------


class JWKSError(VerifierError):
    code = "jwks_error"
    status = 503
    error = "server_error"
    default_message = "the key set could not be used"


class JWKSInvalid(JWKSError):
    code = "jwks_invalid"
    default_message = "the key set is invalid"


class JWKSFetchFailed(JWKSError):
    code = "jwks_fetch_failed"
    default_message = "the key set could not be fetched"


# -- the rest ---------------------------------------------------------------


class RefreshFailed(VerifierError):
    code = "refresh_failed"
    default_message = "the token could not be refreshed"


class CSRFRejected(VerifierError):
    code = "csrf_rejected"
    status = 403
    error = "invalid_request"
    default_message = "cross-site request with cookie credentials refused"


class ConfigInvalid(VerifierError):
    code = "config_invalid"
    status = 500
    error = "server_error"
    default_message = "the configuration is invalid"


# -- authorization ----------------------------------------------------------


class AuthzError(VerifierError):
    """The caller is known but may not do this (403 unless noted)."""

    code = "forbidden"
    status = 403
    error = "forbidden"
    default_message = "not allowed"


class OrgForbidden(AuthzError):
    code = "org_forbidden"
    default_message = "you are not a member of that organization"


class OrgRequired(AuthzError):
    code = "org_required"
    status = 400
    error = "invalid_request"
    default_message = "choose an organization for this request"


class OrgMembershipRequired(AuthzError):
    code = "org_membership_required"
    default_message = "you are not a member of any organization"


class ProjectForbidden(AuthzError):
    code = "project_forbidden"
    default_message = "you may not access that project"


class RoleInsufficient(AuthzError):
    code = "role_insufficient"
    default_message = "your role in this organization is not high enough"


class ScopeInsufficient(AuthzError):
    code = "scope_insufficient"
    error = "insufficient_scope"
    default_message = "the token lacks a required scope"


def _leaf_codes() -> dict[str, type[VerifierError]]:
    codes: dict[str, type[VerifierError]] = {}
    pending: list[type[VerifierError]] = [VerifierError]
    while pending:
        cls = pending.pop()
        subclasses = cls.__subclasses__()
        if not subclasses:
            codes[cls.code] = cls
        pending.extend(subclasses)
    return codes


#: Every documented code, mapped to its class (the leaves of the tree).
ERROR_CODES: dict[str, type[VerifierError]] = _leaf_codes()
