"""JWTSessionMiddleware: authenticate every request from signed claims.

A pure ASGI middleware. Per request it

1. cleans the request (on every path): identity headers a client could
   spoof are removed (:mod:`verifier.identity_headers`: any case, ``_`` or
   ``-``), token cookies are removed from the ``Cookie`` header the inner app
   sees (unless ``cookies.forward``), a token cookie sent twice makes the
   request carry no cookie credentials (and the response deletes every
   variant of it), query-string tokens are never read;
2. refuses cookie-authenticated unsafe methods that are not same-origin
   (403 ``csrf_rejected``);
3. outside ``http.exclude_paths``, verifies the access token (Bearer header
   first, else cookies) and the ID token against the baked keys and puts the
   :class:`~verifier.session.Session` in ``scope["auth"]`` and its user in
   ``scope["user"]``; anonymous callers get Starlette's placeholders.

Bad credentials make a page request anonymous; under ``http.api_prefixes``,
or whenever a Bearer header was used, they answer 401 (503 for
``keys_stale``) with RFC 6750 ``WWW-Authenticate``. ``on_error`` replaces that
response. Nothing here calls the issuer, unless a token names a kid the bake
lacks and the remote key layer is enabled, or a refresh is due: then the
request must first prove who it is with an access or ID token of this issuer
whose signature verifies (expiry ignored). Without that proof no
token-endpoint call is made; the refusal is counted by reason
(``refresh_refused``) and, when the proof can never pass (absent, malformed,
badly signed, another issuer or audience), the token cookies are cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, Protocol

from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import AppConfig
from .cookies import (
    CookieJar,
    TokenSet,
    request_host,
    request_is_secure,
)
from .errors import (
    IssuedInFuture,
    KeyNotFound,
    KeysStale,
    RefreshFailed,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    VerifierError,
)
from .identity_headers import IdentityHeaders
from .keys import VerificationKey
from .profiles import ClaimsMapper
from .refresh import Refresher, refresher_from_config, token_key
from .remote import RemoteKeys
from .request_rules import (
    COOKIE_AUTH_KEY,
    bearer_token,
    join_field,
    origin_of,
    refusal,
    uses_cookie_credentials,
)
from .session import Session
from .stats import MiddlewareStats
from .tokens import TokenVerifier, check_size, unverified_header
from .websocket import deny, query_has_token, refusal_for_query_token

__all__ = [
    "COOKIES_PRESENT_KEY",
    "JWTSessionMiddleware",
    "OnError",
    "error_response",
    "get_session",
    "refresh_now",
]

logger = logging.getLogger("jwtedge")

OnError = Callable[[HTTPConnection, VerifierError], Response]

_HEADER_KINDS = {
    b"cookie": "cookie",
    b"authorization": "authorization",
    b"origin": "origin",
    b"sec-fetch-site": "sec-fetch-site",
}
_ANONYMOUS = UnauthenticatedUser()  # stateless, so one instance serves every request
#: Scope key holding the token cookie names (chunks included) the request
#: carried, as a tuple: the middleware strips those cookies before the app
#: runs, so an app that sets or clears token cookies (the login callback,
#: logout) reads here which ones exist, and clears only those.
COOKIES_PRESENT_KEY = "jwtedge.cookies_present"
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
_IDENTITY_HEADERS = IdentityHeaders()  # the built-in list, for callers without a config


class RemoteKeyLayer(Protocol):
    """The remote layer's async lookup (see :mod:`verifier.remote`)."""

    def is_baked_kid(self, kid: str | None) -> bool: ...

    async def key_for(self, kid: str | None, alg: str) -> VerificationKey: ...


def error_response(exc: VerifierError) -> Response:
    """The API answer for a refused credential: JSON plus RFC 6750 header."""
    headers = {}
    if exc.status == 401 or exc.error == "insufficient_scope":
        headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    headers["Cache-Control"] = "no-store"
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def get_session(conn: HTTPConnection) -> Session | None:
    """The request's session, or ``None`` when anonymous.

    Raises ``RuntimeError`` when ``JWTSessionMiddleware`` is not installed.
    """
    if "auth" not in conn.scope:
        raise RuntimeError("JWTSessionMiddleware must be installed to read the session")
    auth = conn.scope["auth"]
    return auth if isinstance(auth, Session) else None


class _Paths:
    """Prefix match on whole segments: ``/static`` covers ``/static/x``, not ``/static-x``."""

    __slots__ = ("everything", "exact", "prefixes")

    def __init__(self, paths: list[str]) -> None:
        self.everything = "/" in paths
        self.exact = frozenset(paths)
        self.prefixes = tuple(path + "/" for path in paths)

    def __contains__(self, path: str) -> bool:
        return self.everything or path in self.exact or path.startswith(self.prefixes)


def _origin_of(scope: Scope) -> str:
    return origin_of(str(scope.get("scheme", "http")), request_host(scope))


class _Request:
    """What the middleware extracts from one request's headers."""

    __slots__ = (
        "bearer",
        "cookie_names",
        "cookies",
        "duplicate_cookies",
        "headers",
        "origin",
        "sec_fetch_site",
        "stripped",
    )

    def __init__(
        self,
        scope: Scope,
        jar: CookieJar,
        *,
        forward_cookies: bool,
        identity: IdentityHeaders = _IDENTITY_HEADERS,
    ) -> None:
        self.bearer: str | None = None
        self.origin: str | None = None
        self.sec_fetch_site: str | None = None
        self.cookies: dict[str, str] = {}
        self.cookie_names: list[str] = []
        self.duplicate_cookies = False
        headers: list[tuple[bytes, bytes]] = []
        stripped = 0
        # Two dict lookups per header: its kind, then the remembered verdict on
        # identity headers (only a name never seen before is folded and compared).
        known = identity.known
        for item in scope["headers"]:
            name = item[0]
            kind = _HEADER_KINDS.get(name)
            if kind is None:
                spoofed = known.get(name)
                if spoofed is None:
                    spoofed = identity.matches(name)
                if spoofed:
                    stripped += 1
                    continue
            elif kind == "cookie":
                kept = self._take_cookies(item[1].decode("latin-1"), jar, forward_cookies)
                if kept:
                    headers.append((name, kept.encode("latin-1")))
                continue
            elif kind == "authorization":
                if self.bearer is None:
                    self.bearer = bearer_token(item[1].decode("latin-1"))
            elif kind == "origin":
                self.origin = join_field(self.origin, item[1].decode("latin-1"))
            else:
                self.sec_fetch_site = join_field(self.sec_fetch_site, item[1].decode("latin-1"))
            headers.append(item)
        self.headers = headers
        self.stripped = stripped
        if self.duplicate_cookies:
            # Which copy is the user's cannot be told: a sibling host may have
            # planted one (cookie tossing). None of them is a credential.
            self.cookies = {}

    def _take_cookies(self, header: str, jar: CookieJar, forward: bool) -> str:
        """Collect token cookies (a name seen twice is noted); return the rest verbatim."""
        kept = []
        for part in header.split(";"):
            name, sep, value = part.partition("=")
            name = name.strip()
            if sep and jar.is_token_cookie(name):
                if name in self.cookies:
                    self.duplicate_cookies = True
                else:
                    self.cookies[name] = value.strip()
                    self.cookie_names.append(name)
                if not forward:
                    continue
            kept.append(part)
        return ";".join(kept).strip()


_CONTEXT_KEY = "jwtedge.context"
_NO_TOKENS = TokenSet()


class _Context:
    """Per-request refresh state: the cookies to set on the response."""

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
            if message["type"] == "http.response.start" and self.set_cookies:
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
    ctx = conn.scope.get(_CONTEXT_KEY)
    if not isinstance(ctx, _Context):
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


class JWTSessionMiddleware:
    """Authenticate ``http`` requests from signed claims; see the module doc.

    ``config`` is required unless a ready ``verifier`` is passed.
    ``on_error(conn, exc)`` replaces the 401/503 API response.
    ``claims_mapper`` maps verified claims to the session for an issuer no
    profile covers (see :mod:`verifier.profiles`).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: AppConfig | None = None,
        *,
        verifier: TokenVerifier | None = None,
        remote: RemoteKeyLayer | None = None,
        refresher: Refresher | None = None,
        on_error: OnError | None = None,
        stats: MiddlewareStats | None = None,
        claims_mapper: ClaimsMapper | None = None,
    ) -> None:
        if config is None:
            config = AppConfig()
        if verifier is not None and claims_mapper is not None:
            raise ValueError("pass claims_mapper to the TokenVerifier you pass")
        self.app = app
        self.config = config
        self.verifier = verifier or TokenVerifier.from_config(config, claims_mapper=claims_mapper)
        if remote is None and config.keys.remote != "never":
            # DESIGN's default: fetch only for an unknown kid (or with nothing baked).
            remote = RemoteKeys.from_config(config, self.verifier.keys)
        self.remote = remote
        self.refresher: Refresher | None = refresher or refresher_from_config(config, self.verifier)
        self.on_error: OnError = on_error or (lambda _conn, exc: error_response(exc))
        self.stats = stats or MiddlewareStats()
        self.jar = CookieJar(config.cookies)
        self.identity_headers = IdentityHeaders(config.http.strip_headers)
        self.excluded = _Paths(config.http.exclude_paths)
        self.api_paths = _Paths(config.http.api_prefixes)
        # Warn once per middleware (not per request) about too-short tokens.
        self._warned_short_lifetime = False
        if config.cookies.domain:
            logger.warning(
                "cookies.domain is set (%s): any host under that domain can overwrite the "
                "token cookies (cookie tossing); without a Domain, Secure cookies get "
                "__Host- names, which no other host can set",
                config.cookies.domain,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan" and isinstance(self.remote, RemoteKeys):
                receive = self._on_startup(receive, self.remote)
            await self.app(scope, receive, send)
            return

        http = self.config.http
        request = _Request(
            scope,
            self.jar,
            forward_cookies=self.config.cookies.forward,
            identity=self.identity_headers,
        )
        self.stats.headers_stripped += request.stripped
        scope = {**scope, "headers": request.headers}
        scope["auth"], scope["user"] = AuthCredentials(), _ANONYMOUS
        scope[COOKIES_PRESENT_KEY] = tuple(request.cookie_names)

        if request.duplicate_cookies:
            self.stats.duplicate_cookies += 1
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, request)
            return
        if request.duplicate_cookies:
            send = self._clearing_duplicates(scope, request, send)

        secure, tokens = self._read_tokens(scope, request)
        refused = self._refusal(scope, request, tokens, methods=(scope["method"],))
        if refused is not None:
            self.stats.csrf_rejected += 1
            await self._reject(scope, receive, send, refused, force=True)
            return

        path = scope["path"]
        if path in self.excluded:
            await self.app(scope, receive, send)
            return
        if request.duplicate_cookies and request.bearer is None and path in self.api_paths:
            refused = TokenMalformed("a token cookie was sent more than once")
            self.stats.rejected[refused.code] += 1
            await self._reject(scope, receive, send, refused)
            return

        ctx: _Context | None = None
        if (
            self.refresher is not None
            and request.bearer is None
            and tokens.refresh is not None
            and path != http.forward_auth_path
        ):
            # Only requests that could refresh pay for the context and send wrapper.
            ctx = _Context(self, tokens, secure=secure, present=request.cookie_names)
            scope[_CONTEXT_KEY] = ctx
            send = ctx.wrap(send)

        access: str | None = request.bearer or tokens.access
        id_token = None if request.bearer is not None else tokens.id
        session: Session | None = None
        error: VerifierError | None = None
        if access is not None:
            try:
                if self.remote is None:
                    # No remote layer: a plain call, no coroutine on the hot path.
                    session = self.verifier.session(access, id_token)
                else:
                    session = await self._session(access, id_token)
            except VerifierError as exc:
                error = exc
        if ctx is not None and self._refresh_due(access, session, error):
            session = await ctx.refresh(session)
            if session is not None:
                error = None
            elif error is None:
                # No access token to blame: the refusal or failure answers the API.
                error = ctx.error

        if error is not None:
            self.stats.rejected[error.code] += 1
            logger.debug("credentials refused: %s", error.code)
            # keys_stale is not the user's fault and anonymity would hide the
            # outage (forward-auth would send them to sign in): 503 everywhere.
            if request.bearer is not None or path in self.api_paths or error.status == 503:
                await self._reject(scope, receive, send, error)
                return
        if session is None:
            self.stats.anonymous += 1
        else:
            self.stats.authenticated += 1
            scope["auth"], scope["user"] = session, session.user
        await self.app(scope, receive, send)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, request: _Request
    ) -> None:
        """Claims only: never refreshed; bad credentials refuse the upgrade."""
        stats = self.stats
        if query_has_token(scope):
            stats.websocket_refused["query_token"] += 1
            await deny(scope, receive, send, refusal_for_query_token())
            return
        _, tokens = self._read_tokens(scope, request)
        refused = self._refusal(scope, request, tokens, methods=())
        if refused is not None:
            stats.websocket_refused["origin"] += 1
            await deny(scope, receive, send, refused)
            return
        access = request.bearer or tokens.access
        if access is None or scope["path"] in self.excluded:
            stats.websocket_anonymous += 1
            await self.app(scope, receive, send)
            return
        id_token = None if request.bearer is not None else tokens.id
        try:
            session = await self._session(access, id_token)
        except VerifierError as exc:
            stats.websocket_refused[exc.code] += 1
            await deny(scope, receive, send, exc)
            return
        stats.websocket_authenticated += 1
        scope["auth"], scope["user"] = session, session.user
        await self.app(scope, receive, send)

    def _clearing_duplicates(self, scope: Scope, request: _Request, send: Send) -> Send:
        """Add ``Set-Cookie`` values that delete every variant of the duplicated cookies.

        Clearing one variant would leave the other in the browser, and every
        later request would be ambiguous again: the user could never sign in.
        """
        secure = request_is_secure(scope, self.config.cookies.secure)
        names = request.cookie_names

        async def send_clearing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                # A login on this very request sets fresh cookies: keep those.
                fresh = {value.partition("=")[0].strip() for value in headers.getlist("set-cookie")}
                for value in self.jar.clear_everywhere(names, secure=secure, keep=fresh):
                    headers.append("set-cookie", value)
                headers["cache-control"] = "no-store"
            await send(message)

        return send_clearing

    def _read_tokens(self, scope: Scope, request: _Request) -> tuple[bool, TokenSet]:
        if not request.cookies:
            # No token cookie at all (Bearer and anonymous callers): skip the
            # Secure decision and name lookups, nothing will be read or written.
            return False, _NO_TOKENS
        secure = request_is_secure(scope, self.config.cookies.secure)
        return secure, self.jar.read(request.cookies, secure=secure)

    @staticmethod
    def _on_startup(receive: Receive, remote: RemoteKeys) -> Receive:
        """``keys.remote=always`` fetches once at start-up (a failure is recorded)."""

        async def receive_and_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and remote.mode == "always":
                await remote.start()
            return message

        return receive_and_start

    def _refresh_due(
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
        iat = session.claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            return skew
        lifetime = session.expires_at - float(iat)
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

    async def _session(self, access: str, id_token: str | None) -> Session:
        """Verify the pair; keys the bake lacks go through the remote layer."""
        remote = self.remote
        if remote is not None:
            max_bytes = self.verifier.max_token_bytes
            # Before any header is read: a huge header must cost nothing.
            check_size(access, max_bytes)
            check_size(id_token or "", max_bytes)
            for token in (access, id_token):
                if token is None:
                    continue
                try:
                    header = unverified_header(token, max_bytes=max_bytes)
                except VerifierError:
                    if token is access:
                        # Verifying would refuse it the same way, after decoding it again.
                        raise
                    continue  # verifying the access token first decides what is reported
                kid, alg = header.get("kid"), header["alg"]
                if not remote.is_baked_kid(kid):
                    # Fetches only when allowed (cooldown); KeysStale past stale_if_error.
                    await remote.key_for(kid, alg)
        return self.verifier.session(access, id_token)

    def _refusal(
        self, scope: Scope, request: _Request, tokens: TokenSet, *, methods: tuple[str, ...]
    ) -> VerifierError | None:
        """The browser rules (:func:`verifier.request_rules.refusal`), as forward auth applies them.

        Records in the scope whether cookies authenticate the request: the
        forward-auth endpoint judges with the same answer, since the token
        cookies are gone from the headers it sees.
        """
        cookie_auth = uses_cookie_credentials(request.bearer, tokens)
        scope[COOKIE_AUTH_KEY] = cookie_auth
        return refusal(
            cookie_auth=cookie_auth,
            methods=methods,
            websocket=scope["type"] == "websocket",
            origin=request.origin,
            sec_fetch_site=request.sec_fetch_site,
            own_origin=lambda: _origin_of(scope),
            allowed_origins=self.config.websocket.allowed_origins,
        )

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, exc: VerifierError, *, force: bool = False
    ) -> None:
        response = self.on_error(HTTPConnection(scope), exc) if not force else error_response(exc)
        await response(scope, receive, send)
