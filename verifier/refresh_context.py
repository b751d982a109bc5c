"""Refresh inside a request: when it is due, what proves it, and the cookies it sets.

:class:`RefreshDecisions` is the middleware's part that decides: a refresh
is due when the access token is missing, expired or expiring within the
effective skew (:meth:`~RefreshDecisions.effective_skew`); before any
token-endpoint call the request must prove who it is with an access or ID
token of this issuer whose signature verifies, expiry ignored
(:meth:`~RefreshDecisions.proof_for`). The access token that just failed on
its expiry alone is that proof without a second verify: the verifier kept
its claims (:class:`~verifier.session_cache.ExpiredProofs`).

:class:`RefreshContext` is one request's state: only requests that carry a
refresh cookie (and no Bearer header) get one, with a ``send`` that adds the
new cookies to the response. :func:`refresh_now` lets the app refresh at
once through it. Refusals are counted by reason (``refresh_refused``) and,
when the proof can never pass (absent, malformed, badly signed, another
issuer or audience), the token cookies are cleared.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Protocol

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import Message, Send

from .cookies import TokenSet
from .errors import (
    IssuedInFuture,
    KeyNotFound,
    KeysStale,
    RefreshFailed,
    TokenExpired,
    TokenMissing,
    TokenNotYetValid,
    VerifierError,
)
from .keys import VerificationKey
from .refresh import token_key
from .session import Session
from .tokens import unverified_header

if TYPE_CHECKING:
    from .config import AppConfig
    from .middleware import JWTSessionMiddleware
    from .tokens import TokenVerifier

__all__ = [
    "CONTEXT_KEY",
    "RefreshContext",
    "RefreshDecisions",
    "RefusalReason",
    "RemoteKeyLayer",
    "refresh_now",
]

logger = logging.getLogger("jwtedge")

#: Scope key of the request's :class:`RefreshContext` (requests that may refresh).
CONTEXT_KEY = "jwtedge.context"
#: The effective refresh skew is at most this fraction of the access token's
#: lifetime, so a token living no longer than refresh.skew is refreshed once
#: per lifetime, not on every request.
_SKEW_LIFETIME_FRACTION = 1 / 3

#: Why a refresh was refused before any token-endpoint call.
RefusalReason = Literal["no_proof", "proof_invalid", "proof_unverifiable", "cooldown"]
#: Refusals after which the proof can never pass: the token cookies are cleared.
_PERMANENT_REFUSALS = frozenset({"no_proof", "proof_invalid"})
#: Proof failures that may pass on their own: keys the issuer still has to
#: serve, or a clock that disagrees with the issuer's on a genuine token.
_TRANSIENT_PROOF_ERRORS = (KeysStale, TokenNotYetValid, IssuedInFuture)


class RemoteKeyLayer(Protocol):
    """The remote layer's async lookup (see :mod:`verifier.remote`)."""

    def is_baked_kid(self, kid: str | None) -> bool: ...

    async def key_for(self, kid: str | None, alg: str) -> VerificationKey: ...


class RefreshContext:
    """One request's refresh state: the cookies to set on the response."""

    __slots__ = (
        "attempted",
        "error",
        "middleware",
        "present",
        "refreshed",
        "refusal",
        "secure",
        "set_cookies",
        "tokens",
    )

    def __init__(
        self,
        middleware: JWTSessionMiddleware,
        tokens: TokenSet,
        *,
        secure: bool,
        present: list[str],
    ) -> None:
        self.middleware = middleware
        self.tokens = tokens
        self.secure = secure
        self.present = present
        self.set_cookies: list[str] = []
        self.refreshed = False
        self.attempted = False
        #: Why the last refresh did not happen or failed (for the API's answer).
        self.error: VerifierError | None = None
        #: Set when it was refused before any token-endpoint call.
        self.refusal: RefusalReason | None = None

    def wrap(self, send: Send) -> Send:
        async def send_with_cookies(message: Message) -> None:
            # set_cookies first: empty on nearly every request, and cheaper to test.
            if self.set_cookies and message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if self._app_set_token_cookies(headers):
                    # The app logged in or out on this request: its cookies win.
                    await send(message)
                    return
                for value in self.set_cookies:
                    headers.append("set-cookie", value)
                # A response that rotates credentials must never be cached.
                headers["cache-control"] = "no-store"
            await send(message)

        return send_with_cookies

    def _app_set_token_cookies(self, headers: MutableHeaders) -> bool:
        jar = self.middleware.jar
        return any(
            jar.is_token_cookie(value.partition("=")[0].strip())
            for value in headers.getlist("set-cookie")
        )

    async def refresh(self, session: Session | None) -> Session | None:
        """Refresh now; the new session, or ``session`` when it fails.

        No proof, no call: the request must carry an access or ID token of
        this issuer whose signature verifies (expiry ignored).
        """
        middleware = self.middleware
        refresher = middleware.refresher
        assert refresher is not None
        assert self.tokens.refresh is not None
        self.attempted = True
        try:
            proof, proof_key = await middleware.proof_for(self.tokens)
        except VerifierError as exc:
            return self._refuse(session, middleware.proof_refusal(exc), exc)
        try:
            result = await refresher.refresh(self.tokens.refresh, proof=proof, proof_key=proof_key)
            new = TokenSet(
                access=result.tokens.access,
                id=result.tokens.id or self.tokens.id,
                refresh=result.tokens.refresh or self.tokens.refresh,
            )
            assert new.access is not None
            fresh = middleware.verifier.session(new.access, new.id)
            self.set_cookies = middleware.jar.set_cookies(
                new, secure=self.secure, present=self.present
            )
        except (VerifierError, ValueError) as exc:
            reason = exc.context.get("reason") if isinstance(exc, VerifierError) else None
            if reason == "cooldown" and isinstance(exc, VerifierError):
                return self._refuse(session, "cooldown", exc)
            code = exc.code if isinstance(exc, VerifierError) else "refresh_failed"
            middleware.stats.refresh_failed[code] += 1
            logger.info("refresh failed: %s", code)
            self.error = exc if isinstance(exc, VerifierError) else RefreshFailed()
            if session is None and reason == "invalid_grant":
                self.set_cookies = middleware.jar.clear_cookies(
                    secure=self.secure, present=self.present
                )
            return session
        self.tokens = new
        self.refreshed = True
        middleware.stats.refreshed += 1
        return fresh

    def _refuse(
        self, session: Session | None, reason: RefusalReason, exc: VerifierError
    ) -> Session | None:
        """No token-endpoint call: count why, and clear the cookies only when
        the proof can never pass (a cooldown or a transient failure keeps them)."""
        middleware = self.middleware
        middleware.stats.refresh_refused[reason] += 1
        # Debug, not info: strangers choose how often this happens (the metric counts it).
        logger.debug("refresh refused: %s (%s)", reason, exc.code)
        self.error, self.refusal = exc, reason
        if session is None and reason in _PERMANENT_REFUSALS:
            self.set_cookies = middleware.jar.clear_cookies(
                secure=self.secure, present=self.present
            )
        return session


async def refresh_now(conn: HTTPConnection) -> Session:
    """Refresh the caller's tokens at once (after a change to their claims).

    Goes through the same single flight as automatic refreshes; the response
    carries the new cookies and ``conn.auth`` becomes the new session. Raises
    :class:`~verifier.errors.RefreshFailed` when the request has no refresh
    cookie (Bearer callers, excluded paths) or the refresh fails.
    """
    ctx = conn.scope.get(CONTEXT_KEY)
    if not isinstance(ctx, RefreshContext):
        if "auth" not in conn.scope:
            raise RuntimeError("JWTSessionMiddleware must be installed to refresh")
        raise RefreshFailed("this request carries no refresh cookie")
    current = conn.scope.get("auth")
    current = current if isinstance(current, Session) else None
    if ctx.refreshed and current is not None:
        return current  # this request already refreshed: its claims are fresh
    if not ctx.attempted:
        # Passing the current session keeps the cookies of a still-valid session
        # when the issuer refuses (invalid_grant clears them only without one).
        session = await ctx.refresh(current)
        if session is not None and session is not current:
            conn.scope["auth"], conn.scope["user"] = session, session.user
            return session
    # Refused or failed (now, or already by the middleware for this request:
    # asking again would only be a second call or a second refusal).
    error = ctx.error
    code = error.code if error is not None else "refresh_failed"
    reason = ctx.refusal or (error.context.get("reason", code) if error is not None else code)
    raise RefreshFailed("the issuer did not refresh the session", reason=reason, cause=code)


class RefreshDecisions:
    """The refresh decisions of :class:`~verifier.middleware.JWTSessionMiddleware`
    (it inherits them): when a refresh is due, and what proves it."""

    config: AppConfig
    verifier: TokenVerifier
    remote: RemoteKeyLayer | None
    _warned_short_lifetime: bool

    def refresh_due(
        self, access: str | None, session: Session | None, error: VerifierError | None
    ) -> bool:
        """Missing, expired, or expiring within the effective skew (no leeway)."""
        if access is None or isinstance(error, TokenExpired):
            return True
        if session is None:
            return False
        return session.expires_at - self.verifier.now() < self.effective_skew(session)

    def effective_skew(self, session: Session) -> float:
        """``min(refresh.skew, lifetime / 3)``, the lifetime being ``exp - iat``.

        Without ``iat`` (or with a nonsensical one) the configured skew. A
        token that lives no longer than ``refresh.skew`` would otherwise be
        due from the moment it is issued, and every request would spend a
        token-endpoint call and a rotation.
        """
        skew = self.config.refresh.skew
        # issued_at, not claims["iat"]: a cached session parses no claims for this.
        iat = session.issued_at
        if iat is None:
            return skew
        lifetime = session.expires_at - iat
        if lifetime <= 0:
            return skew
        if lifetime <= skew and not self._warned_short_lifetime:
            self._warned_short_lifetime = True
            logger.warning(
                "access tokens live %.0f s, no longer than refresh.skew (%.0f s): refreshing "
                "%.1f s before expiry (a third of their lifetime) instead of on every request; "
                "lower APP_CONFIG_REFRESH__SKEW or lengthen the issuer's access-token lifetime",
                lifetime,
                skew,
                lifetime * _SKEW_LIFETIME_FRACTION,
            )
        return min(skew, lifetime * _SKEW_LIFETIME_FRACTION)

    async def proof_for(self, tokens: TokenSet) -> tuple[dict[str, Any], str]:
        """The proof a refresh needs: the claims of the caller's own access token
        (else ID token) whose signature verifies, expiry ignored, and that
        token's :func:`~verifier.refresh.token_key` (the cooldown's key).

        Keys the bake lacks come through the remote layer, as for any token.
        Raises :class:`~verifier.errors.TokenMissing` when the request carries
        neither token, else the failure that may still pass
        (:meth:`proof_refusal` says ``proof_unverifiable``), else the access
        token's error.
        """
        errors: list[VerifierError] = []
        for token, kind in ((tokens.access, "access"), (tokens.id, "id")):
            if not token:
                continue
            try:
                await self._fetch_key_for(token)
                if kind == "access":
                    claims = self.verifier.verify_access(token, check_expiry=False)
                else:
                    claims = self.verifier.verify_id(token)
            except VerifierError as exc:
                errors.append(exc)
                continue
            return claims, token_key(token)
        if not errors:
            raise TokenMissing("no access or ID token to prove the refresh with")
        transient = [exc for exc in errors if self.proof_refusal(exc) == "proof_unverifiable"]
        raise (transient or errors)[0]

    def proof_refusal(self, exc: VerifierError) -> RefusalReason:
        """Why a proof failed: ``no_proof`` and ``proof_invalid`` never pass
        (absent, malformed, badly signed, another issuer or audience);
        ``proof_unverifiable`` may (keys not served yet or stale, clocks)."""
        if isinstance(exc, TokenMissing):
            return "no_proof"
        if isinstance(exc, _TRANSIENT_PROOF_ERRORS):
            return "proof_unverifiable"
        # An unknown kid is a key the remote layer may still learn (a rotation
        # inside its cooldown, a failed fetch); with no remote layer it never will.
        if isinstance(exc, KeyNotFound) and self.remote is not None:
            return "proof_unverifiable"
        return "proof_invalid"

    async def _fetch_key_for(self, token: str) -> None:
        """Let the remote layer learn a kid the bake lacks (its cooldown applies)."""
        remote = self.remote
        if remote is None:
            return
        try:
            # The size cap before the header is read, as on every token path.
            header = unverified_header(token, max_bytes=self.verifier.max_token_bytes)
        except VerifierError:
            return  # verifying reports it
        kid = header.get("kid")
        if not remote.is_baked_kid(kid):
            await remote.key_for(kid, header["alg"])
