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

Like Starlette's ``AuthenticationMiddleware``, it writes into the scope it is
given; the header list is replaced by a new one only when something was
removed, and never edited (:mod:`verifier.request_scan`). The refresh
decisions and the per-request refresh state live in
:mod:`verifier.refresh_context`; the cache behind a cached request, in
:mod:`verifier.session_cache`.

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

from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import AppConfig
from .cookies import CookieJar, TokenSet, request_host, request_is_secure
from .errors import TokenMalformed, VerifierError
from .identity_headers import IdentityHeaders
from .profiles import ClaimsMapper
from .refresh import Refresher, refresher_from_config
from .refresh_context import (
    CONTEXT_KEY,
    RefreshContext,
    RefreshDecisions,
    RemoteKeyLayer,
    refresh_now,
)
from .remote import RemoteKeys
from .request_rules import COOKIE_AUTH_KEY, origin_of, refusal, uses_cookie_credentials
from .request_scan import HeaderScanner, Paths, Scanned
from .session import Session
from .stats import MiddlewareStats
from .tokens import TokenVerifier, check_size, unverified_header
from .websocket import deny, query_has_token, refusal_for_query_token

__all__ = [
    "COOKIES_PRESENT_KEY",
    "JWTSessionMiddleware",
    "OnError",
    "RemoteKeyLayer",
    "error_response",
    "get_session",
    "refresh_now",
]

logger = logging.getLogger("jwtedge")

OnError = Callable[[HTTPConnection, VerifierError], Response]

#: Scope key holding the token cookie names (chunks included) the request
#: carried, as a tuple: the middleware strips those cookies before the app
#: runs, so an app that sets or clears token cookies (the login callback,
#: logout) reads here which ones exist, and clears only those.
COOKIES_PRESENT_KEY = "jwtedge.cookies_present"
_NO_TOKENS = TokenSet()
_NO_COOKIE_TOKENS = (False, _NO_TOKENS)


class _NoCredentials(AuthCredentials):
    """An anonymous caller's ``scope["auth"]``: no scopes. Immutable, so one
    instance serves every request (Starlette builds one per request)."""

    def __init__(self) -> None:
        object.__setattr__(self, "scopes", ())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("the anonymous credentials are immutable")


# Both stateless: one instance each serves every anonymous request.
_ANONYMOUS_AUTH = _NoCredentials()
_ANONYMOUS = UnauthenticatedUser()


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


class JWTSessionMiddleware(RefreshDecisions):
    """Authenticate ``http`` requests from signed claims; see the module doc.

    ``config`` is required unless a ready ``verifier`` is passed.
    ``on_error(conn, exc)`` replaces the 401/503 API response.
    ``claims_mapper`` maps verified claims to the session for an issuer no
    profile covers (see :mod:`verifier.profiles`). The refresh decisions
    (:meth:`proof_for`, :meth:`effective_skew`) come from
    :class:`~verifier.refresh_context.RefreshDecisions`.
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
        self.scanner = HeaderScanner(
            self.identity_headers, self.jar, forward_cookies=config.cookies.forward
        )
        self.excluded = Paths(config.http.exclude_paths)
        self.api_paths = Paths(config.http.api_prefixes)
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
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
                return
            if kind == "lifespan" and isinstance(self.remote, RemoteKeys):
                receive = self._on_startup(receive, self.remote)
            await self.app(scope, receive, send)
            return

        request = self._clean(scope)
        if request.duplicate_cookies:
            send = self._clearing_duplicates(scope, request, send)
        secure, tokens = self._read_tokens(scope, request)
        bearer = request.bearer
        if uses_cookie_credentials(bearer, tokens):
            scope[COOKIE_AUTH_KEY] = True
            refused = self._refusal(scope, request, methods=(scope["method"],))
            if refused is not None:
                self.stats.csrf_rejected += 1
                await self._reject(scope, receive, send, refused, force=True)
                return
        else:
            scope[COOKIE_AUTH_KEY] = False

        path = scope["path"]
        if path in self.excluded:
            await self.app(scope, receive, send)
            return
        if request.duplicate_cookies and bearer is None and path in self.api_paths:
            refused = TokenMalformed("a token cookie was sent more than once")
            self.stats.rejected[refused.code] += 1
            await self._reject(scope, receive, send, refused)
            return

        ctx: RefreshContext | None = None
        if (
            tokens.refresh is not None
            and bearer is None
            and self.refresher is not None
            and path != self.config.http.forward_auth_path
        ):
            # Only requests that could refresh pay for the context and send wrapper.
            ctx = RefreshContext(self, tokens, secure=secure, present=list(request.cookie_names))
            scope[CONTEXT_KEY] = ctx
            send = ctx.wrap(send)

        access = bearer or tokens.access
        session: Session | None = None
        error: VerifierError | None = None
        if access is not None:
            id_token = None if bearer is not None else tokens.id
            try:
                if self.remote is None:
                    # No remote layer: a plain call, no coroutine on the hot path.
                    session = self.verifier.session(access, id_token)
                else:
                    session = await self._session(access, id_token)
            except VerifierError as exc:
                error = exc
        if ctx is not None and self.refresh_due(access, session, error):
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
            if bearer is not None or path in self.api_paths or error.status == 503:
                await self._reject(scope, receive, send, error)
                return
        if session is None:
            self.stats.anonymous += 1
        else:
            self.stats.authenticated += 1
            scope["auth"] = session
            scope["user"] = session.user
        await self.app(scope, receive, send)

    def _clean(self, scope: Scope) -> Scanned:
        """Scan the headers and set what every http and websocket scope gets.

        Like Starlette's ``AuthenticationMiddleware``, the scope is written in
        place; its header list is replaced (never edited) only when a header
        or a token cookie was removed.
        """
        request = self.scanner.scan(scope)
        if request.headers is not None:
            scope["headers"] = request.headers
            if request.stripped:
                self.stats.headers_stripped += request.stripped
        if request.duplicate_cookies:
            self.stats.duplicate_cookies += 1
        scope["auth"] = _ANONYMOUS_AUTH
        scope["user"] = _ANONYMOUS
        scope[COOKIES_PRESENT_KEY] = request.cookie_names
        return request

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Claims only: never refreshed; bad credentials refuse the upgrade."""
        request = self._clean(scope)
        stats = self.stats
        if query_has_token(scope):
            stats.websocket_refused["query_token"] += 1
            await deny(scope, receive, send, refusal_for_query_token())
            return
        _, tokens = self._read_tokens(scope, request)
        cookie_auth = uses_cookie_credentials(request.bearer, tokens)
        scope[COOKIE_AUTH_KEY] = cookie_auth
        refused = self._refusal(scope, request, methods=()) if cookie_auth else None
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

    def _clearing_duplicates(self, scope: Scope, request: Scanned, send: Send) -> Send:
        """Add ``Set-Cookie`` values that delete every variant of the duplicated cookies.

        Clearing one variant would leave the other in the browser, and every
        later request would be ambiguous again: the user could never sign in.
        """
        secure = self._secure(scope, request)
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

    def _secure(self, scope: Scope, request: Scanned) -> bool:
        """Whether this request's cookies are ``Secure`` ones (the Host header read once)."""
        host = request.host
        return request_is_secure(
            scope,
            self.config.cookies.secure,
            host=None if host is None else host.decode("latin-1").strip().lower(),
        )

    def _read_tokens(self, scope: Scope, request: Scanned) -> tuple[bool, TokenSet]:
        if not request.cookies:
            # No token cookie at all (Bearer and anonymous callers): skip the
            # Secure decision and name lookups, nothing will be read or written.
            return _NO_COOKIE_TOKENS
        secure = self._secure(scope, request)
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
        self, scope: Scope, request: Scanned, *, methods: tuple[str, ...]
    ) -> VerifierError | None:
        """The browser rules (:func:`verifier.request_rules.refusal`) for a request
        that cookies authenticate, as forward auth applies them.

        The caller records that answer under ``COOKIE_AUTH_KEY``: the
        forward-auth endpoint judges with it, since the token cookies are gone
        from the headers it sees.
        """
        host = request.host
        return refusal(
            cookie_auth=True,
            methods=methods,
            websocket=scope["type"] == "websocket",
            origin=request.origin,
            sec_fetch_site=request.sec_fetch_site,
            own_origin=lambda: origin_of(
                str(scope.get("scheme", "http")),
                request_host(scope) if host is None else host.decode("latin-1"),
            ),
            allowed_origins=self.config.websocket.allowed_origins,
        )

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, exc: VerifierError, *, force: bool = False
    ) -> None:
        response = self.on_error(HTTPConnection(scope), exc) if not force else error_response(exc)
        await response(scope, receive, send)
