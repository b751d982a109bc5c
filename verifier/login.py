"""Sign-in for the reference app: authorization code + PKCE, callback, logout.

Why it looks the way it does:

- **No server-side state.** jwtedge is stateless, so what the callback must
  check (``state``, ``nonce``, the PKCE verifier, the return path and the
  redirect URI) travels in a short-lived cookie, sealed with AES-GCM under a
  key derived (HKDF-SHA256) from ``login.state_key``. Every worker derives the
  same key, so any worker can finish a login another one started. The cookie
  is HttpOnly, SameSite=Lax (the callback is a top-level cross-site GET) and
  lives 10 minutes.
- **One cookie per pending login.** Its name carries a hash of the ``state``,
  so two tabs signing in at once do not overwrite each other's cookie. The
  AEAD's associated data is that name, so a sealed value cannot be replayed
  under another login's name.
- **The return path is local or refused.** ``next`` must be a path on this
  site (:func:`safe_return_path`); anything that a browser could read as
  another origin (``//host``, ``/\\host``, percent-encoded forms of either,
  control characters) gets a 400, never a silent fallback, so a bad link is
  noticed instead of quietly landing the user on ``/``.
- **Tokens are verified before they become cookies**, the ID token's
  ``nonce`` included, and nothing a page, a redirect or a log line says ever
  holds a token: failures name a stable code (:class:`LoginError`).
- **Logout** clears the cookies, revokes the refresh token where the issuer
  has a revocation endpoint (best effort, bounded by a timeout) and, where it
  has an end-session endpoint, sends the browser there with the configured
  ``login.post_logout_redirect`` only. The refresh token is read by the
  :class:`LogoutTokens` wrapper before the middleware strips token cookies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import logging
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote, urlencode, urlsplit, urlunsplit

import httpx2
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .clock import wall_clock
from .config import AppConfig
from .cookies import CookieJar, TokenSet, request_is_secure
from .errors import ConfigInvalid, VerifierError
from .middleware import COOKIES_PRESENT_KEY, get_session
from .oauth import TokenEndpointUnavailable, oauth_error, post_form
from .remote import RemoteKeys
from .tokens import TokenVerifier, check_size, unverified_header

__all__ = [
    "CALLBACK_PATH",
    "LOGOUT_PATH",
    "LOGOUT_TOKENS_KEY",
    "MIN_STATE_KEY_BYTES",
    "OFFLINE_ACCESS_WARNING",
    "STATE_COOKIE_PREFIX",
    "STATE_TTL",
    "LoginError",
    "LoginFlow",
    "LoginStats",
    "LogoutTokens",
    "StateCipher",
    "callback_path",
    "error_page",
    "login_enabled",
    "safe_return_path",
]

logger = logging.getLogger("jwtedge.login")

CALLBACK_PATH = "/auth/callback"
LOGOUT_PATH = "/auth/logout"
#: Seconds a started login may take before its state cookie is refused.
STATE_TTL = 600
STATE_COOKIE_PREFIX = "jwtedge_login_"
#: ``login.state_key`` must be at least this long: HKDF stretches, it adds no entropy.
MIN_STATE_KEY_BYTES = 32
#: Where :class:`LogoutTokens` leaves the tokens for the logout endpoint.
LOGOUT_TOKENS_KEY = "jwtedge.logout_tokens"
STATE_KEY_SETTING = "APP_CONFIG_LOGIN__STATE_KEY"

_HKDF_INFO = b"jwtedge login state v1"
_AAD_PREFIX = b"jwtedge-login-v1|"
#: More pending logins than this in one browser: the older ones are cleared.
_MAX_PENDING = 4
_MAX_NEXT = 2048
_MAX_STATE = 512
_REVOKE_TIMEOUT = 5.0
_ISSUER_ERROR = re.compile(r"[a-z_]{1,64}")
_NO_STORE = {"Cache-Control": "no-store"}


class LoginError(Exception):
    """A refused sign-in step: a stable ``code`` and a message without secrets."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class LoginStats:
    """Counters for metrics: outcomes and codes only."""

    started: int = 0
    completed: int = 0
    #: Refused logins and callbacks, by :class:`LoginError` code.
    failed: Counter[str] = field(default_factory=Counter)
    logouts: int = 0
    revocations_ok: int = 0
    revocations_failed: int = 0
    #: Logins that asked for ``offline_access`` and got no refresh token.
    refresh_token_missing: int = 0


# -- the return path -------------------------------------------------------------


def _unsafe_path(value: str) -> bool:
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return True
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme or parts.netloc)


def safe_return_path(value: str | None) -> str:
    """``value`` when it is a path on this site; ``/`` when absent.

    A local path starts with exactly one ``/``, has no scheme or host, no
    backslash and no control character, both as given and after
    percent-decoding (repeated, so ``%252F`` counts too). Anything else raises
    :class:`LoginError` ``next_invalid`` (400).
    """
    if value is None or value == "":
        return "/"
    if len(value) > _MAX_NEXT:
        raise LoginError("next_invalid", "the return path is too long")
    decoded = value
    for _ in range(4):
        if _unsafe_path(decoded):
            raise LoginError("next_invalid", "the return path must be a path on this site")
        once = unquote(decoded)
        if once == decoded:
            return value
        decoded = once
    raise LoginError("next_invalid", "the return path is encoded too many times")


# -- the state cookie ----------------------------------------------------------------


class StateCipher:
    """AES-256-GCM under a key derived from ``login.state_key`` (HKDF-SHA256)."""

    def __init__(self, state_key: bytes) -> None:
        if len(state_key) < MIN_STATE_KEY_BYTES:
            raise ValueError(f"the state key must be at least {MIN_STATE_KEY_BYTES} bytes")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
        self._aead = AESGCM(hkdf.derive(state_key))

    def __repr__(self) -> str:
        return "StateCipher(key=<hidden>)"

    def seal(self, payload: dict[str, Any], *, aad: bytes) -> str:
        """The payload encrypted and authenticated, as base64url text."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, orjson.dumps(payload), _AAD_PREFIX + aad)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, value: str, *, aad: bytes) -> dict[str, Any]:
        """The payload, or :class:`LoginError` ``state_invalid`` for anything tampered."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], _AAD_PREFIX + aad)
            payload = orjson.loads(plain)
        except (binascii.Error, ValueError, InvalidTag, orjson.JSONDecodeError):
            raise LoginError("state_invalid", "the login state cookie is not valid") from None
        if not isinstance(payload, dict):
            raise LoginError("state_invalid", "the login state cookie is not valid")
        return payload


@dataclass(frozen=True, slots=True)
class _Pending:
    """What a started login left for its callback (never shown or logged)."""

    state: str
    nonce: str
    verifier: str
    next: str
    redirect_uri: str
    expires: float

    def __repr__(self) -> str:
        return f"_Pending(next={self.next!r})"

    def to_payload(self) -> dict[str, Any]:
        return {
            "s": self.state,
            "n": self.nonce,
            "v": self.verifier,
            "r": self.next,
            "u": self.redirect_uri,
            "e": self.expires,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> _Pending:
        try:
            values = (payload["s"], payload["n"], payload["v"], payload["r"], payload["u"])
            expires = float(payload["e"])
        except (KeyError, TypeError, ValueError):
            raise LoginError("state_invalid", "the login state cookie is not valid") from None
        if not all(isinstance(value, str) for value in values):
            raise LoginError("state_invalid", "the login state cookie is not valid")
        return cls(*values, expires=expires)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: dict[str, str] | Sequence[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


#: Logged once per process, and shown on /readyz, when a login asked for
#: ``offline_access`` and the token response had no refresh token.
OFFLINE_ACCESS_WARNING = (
    "the login asked for offline_access but the issuer returned no refresh token, so sessions "
    "end when the access token expires: providers that follow OIDC Core §11 (oidc-provider, "
    "for one) ignore offline_access unless the login sends prompt=consent (set login.prompt, "
    "APP_CONFIG_LOGIN__PROMPT=consent); Auth0 grants it only for APIs with Allow Offline Access"
)


def login_enabled(config: AppConfig) -> bool:
    """Login routes are served when the issuer has an authorization endpoint and a client id."""
    return config.endpoint("authorization") is not None and config.auth.client_id is not None


def callback_path(config: AppConfig) -> str:
    """The callback route: the path of ``login.redirect_uri``, else ``/auth/callback``."""
    if config.login.redirect_uri:
        return urlsplit(config.login.redirect_uri).path or CALLBACK_PATH
    return CALLBACK_PATH


def error_page(exc: LoginError) -> HTMLResponse:
    """The page for a refused sign-in: the stable code and message, escaped."""
    code, message = html.escape(exc.code), html.escape(exc.message)
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>Sign-in failed</title><h1>Sign-in failed</h1><p>{message}</p>"
        f"<p>Code: <code>{code}</code></p><p><a href='/'>Back to the start page</a></p>\n"
    )
    return HTMLResponse(body, status_code=exc.status, headers=_NO_STORE)


# -- the flow ------------------------------------------------------------------------


class LoginFlow:
    """The ``/auth/login``, callback and ``/auth/logout`` endpoints.

    ``transport`` routes the token and revocation calls (tests pass an ASGI
    transport to a DevIssuer); ``now`` is the wall clock for the state
    cookie's expiry.
    """

    def __init__(
        self,
        config: AppConfig,
        verifier: TokenVerifier,
        *,
        remote: RemoteKeys | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        now: Callable[[], float] = wall_clock,
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.remote = remote
        self.jar = CookieJar(config.cookies)
        self.stats = LoginStats()
        self.now = now
        self.enabled = login_enabled(config)
        self.callback_path = callback_path(config)
        self._cipher: StateCipher | None = None
        if self.enabled:
            key = config.login.state_key
            if key is None or not key.get_secret_value():
                raise ConfigInvalid(
                    f"{STATE_KEY_SETTING} is required when login is served (the issuer has an "
                    "authorization endpoint and auth.client_id is set); use the same random "
                    "value of at least 32 characters in every worker",
                    setting=STATE_KEY_SETTING,
                )
            try:
                self._cipher = StateCipher(key.get_secret_value().encode("utf-8"))
            except ValueError:
                raise ConfigInvalid(
                    f"{STATE_KEY_SETTING}: must be at least {MIN_STATE_KEY_BYTES} bytes",
                    setting=STATE_KEY_SETTING,
                ) from None
            if config.endpoint("token") is None:
                raise ConfigInvalid(
                    "APP_CONFIG_ENDPOINTS__TOKEN is required when login is served "
                    "(the callback exchanges the code there)",
                    setting="APP_CONFIG_ENDPOINTS__TOKEN",
                )
        self._transport = transport
        self._timeout = config.refresh.timeout
        self._http: httpx2.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"LoginFlow(enabled={self.enabled!r})"

    @property
    def _client(self) -> httpx2.AsyncClient:
        # Built on first use: its TLS context costs ~30 ms at start-up.
        if self._http is None:
            self._http = httpx2.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()

    # -- helpers ---------------------------------------------------------------

    def _secure(self, request: Request) -> bool:
        return request_is_secure(request.scope, self.config.cookies.secure)

    @staticmethod
    def _cookie_name(state: str, *, secure: bool) -> str:
        digest = hashlib.sha256(state.encode("utf-8")).hexdigest()[:16]
        return ("__Host-" if secure else "") + STATE_COOKIE_PREFIX + digest

    def _set_state_cookie(
        self, response: Response, name: str, value: str, *, secure: bool, max_age: int
    ) -> None:
        # Path=/ and no Domain: with Secure the name gets __Host-, so no sibling
        # subdomain can plant a login state (login CSRF by cookie tossing).
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="lax"
        )

    def _all_token_cookie_names(self, secure: bool) -> list[str]:
        """Every token cookie and chunk name, for when the middleware did not say which exist."""
        names = self.jar.names(secure=secure).values()
        chunks = range(self.config.cookies.max_chunks)
        return [n for name in names for n in (name, *(f"{name}.{i}" for i in chunks))]

    @staticmethod
    def _present(request: Request) -> list[str] | None:
        """The token cookies the request carried, as the middleware saw them (it strips
        them before the app); ``None`` without the middleware's note."""
        names = request.scope.get(COOKIES_PRESENT_KEY)
        return list(names) if isinstance(names, tuple | list) else None

    def _resource_form(self, form: dict[str, Any]) -> None:
        """RFC 8707 ``resource``, one value or several, on a token request."""
        resources = self.config.login.resource
        if resources:
            form["resource"] = resources[0] if len(resources) == 1 else list(resources)

    def warnings(self) -> list[str]:
        """Setup problems seen at run time, for /readyz (no secrets, no per-user data)."""
        return [OFFLINE_ACCESS_WARNING] if self.stats.refresh_token_missing else []

    def _client_auth(self, form: dict[str, Any]) -> dict[str, str]:
        """Client authentication as the refresher does it: Basic with a secret, else client_id."""
        client_id = self.config.auth.client_id
        assert client_id is not None
        secret = self.config.auth.client_secret
        headers = {"Accept": "application/json"}
        if secret is not None and secret.get_secret_value():
            # RFC 6749 §2.3.1: form-encode both parts before Basic.
            pair = f"{quote_plus(client_id)}:{quote_plus(secret.get_secret_value())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = client_id
        return headers

    def _fail(self, exc: LoginError) -> HTMLResponse:
        self.stats.failed[exc.code] += 1
        if exc.code == "token_invalid":
            # The issuer's tokens do not verify: a setup problem the operator must see.
            # The message names codes, algorithms and settings, never a token.
            logger.warning("sign-in refused: %s", exc.message)
        else:
            logger.info("sign-in refused: %s", exc.code)
        return error_page(exc)

    # -- /auth/login -----------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """Redirect a signed-in visitor to ``next``; otherwise start a login at the issuer."""
        try:
            target = safe_return_path(request.query_params.get("next"))
        except LoginError as exc:
            return self._fail(exc)
        if get_session(request) is not None:
            # The middleware refreshed an expired access token on this path if it
            # could: the session survives expiry without a trip to the issuer.
            return RedirectResponse(target, status_code=302, headers=_NO_STORE)
        assert self._cipher is not None
        endpoint = self.config.endpoint("authorization")
        client_id = self.config.auth.client_id
        assert endpoint is not None
        assert client_id is not None
        redirect_uri = self.config.login.redirect_uri or (
            f"{request.url.scheme}://{request.url.netloc}{self.callback_path}"
        )
        pending = _Pending(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next=target,
            redirect_uri=redirect_uri,
            expires=self.now() + STATE_TTL,
        )
        settings = self.config.login
        params = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", settings.scopes),
            ("state", pending.state),
            ("nonce", pending.nonce),
            ("code_challenge", _s256(pending.verifier)),
            ("code_challenge_method", "S256"),
        ]
        if settings.prompt:
            params.append(("prompt", settings.prompt))
        params += [("resource", resource) for resource in settings.resource]
        # Validated at start-up: extra parameters never replace one of ours.
        params += list(settings.extra_params.items())
        location = _with_query(endpoint, params)
        secure = self._secure(request)
        name = self._cookie_name(pending.state, secure=secure)
        sealed = self._cipher.seal(pending.to_payload(), aad=name.encode())
        response = RedirectResponse(location, status_code=302, headers=_NO_STORE)
        stale = [n for n in request.cookies if STATE_COOKIE_PREFIX in n]
        if len(stale) >= _MAX_PENDING:
            for old in stale:
                self._set_state_cookie(response, old, "", secure=secure, max_age=0)
        self._set_state_cookie(response, name, sealed, secure=secure, max_age=STATE_TTL)
        self.stats.started += 1
        return response

    # -- the callback ----------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        """Check state and ``iss``, exchange the code, verify, set the cookies, redirect."""
        secure = self._secure(request)
        state = request.query_params.get("state")
        cookie_name = None
        if state and len(state) <= _MAX_STATE:
            cookie_name = self._cookie_name(state, secure=secure)
        try:
            target, set_cookies = await self._complete(request, cookie_name, secure=secure)
        except LoginError as exc:
            response: Response = self._fail(exc)
        else:
            response = RedirectResponse(target, status_code=303, headers=_NO_STORE)
            for value in set_cookies:
                response.headers.append("set-cookie", value)
            self.stats.completed += 1
        if cookie_name is not None:
            # One attempt per login: success or not, the state is spent.
            self._set_state_cookie(response, cookie_name, "", secure=secure, max_age=0)
        return response

    async def _complete(
        self, request: Request, cookie_name: str | None, *, secure: bool
    ) -> tuple[str, list[str]]:
        """The return path and the token ``Set-Cookie`` values, or :class:`LoginError`."""
        params = self._callback_params(request)
        state = params.get("state")
        if state is None or cookie_name is None:
            raise LoginError("state_missing", "the callback carries no usable login state")
        pending = self._pending(request, cookie_name, state)
        iss = params.get("iss")
        if iss is not None and iss != self.config.auth.issuer:
            # RFC 9207: a response from another issuer (mix-up attack).
            raise LoginError("issuer_mismatch", "the response comes from another issuer")
        if "error" in params:
            error = params["error"]
            shown = error if _ISSUER_ERROR.fullmatch(error) else "error"
            raise LoginError("authorization_failed", f"the issuer answered {shown}")
        code = params.get("code")
        if not code:
            raise LoginError("code_missing", "the callback carries no authorization code")
        tokens = await self._exchange(code, pending)
        await self._verify(tokens, pending)
        self._check_refresh_token(tokens)
        try:
            set_cookies = self.jar.set_cookies(
                tokens, secure=secure, present=self._present(request)
            )
        except ValueError:
            raise LoginError(
                "cookies_too_large", "the tokens do not fit in cookies.max_chunks cookies"
            ) from None
        return pending.next, set_cookies

    @staticmethod
    def _callback_params(request: Request) -> dict[str, str]:
        params: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name in params and name in ("state", "code", "iss", "error"):
                raise LoginError("callback_invalid", f"the callback repeats {name!r}")
            params[name] = value
        return params

    def _pending(self, request: Request, cookie_name: str, state: str) -> _Pending:
        assert self._cipher is not None
        sealed = request.cookies.get(cookie_name)
        if not sealed:
            raise LoginError("state_missing", "no login was started in this browser for this state")
        pending = _Pending.from_payload(self._cipher.open(sealed, aad=cookie_name.encode()))
        if not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise LoginError("state_invalid", "the login state does not match")
        if pending.expires < self.now():
            raise LoginError("state_invalid", "the login took too long; please sign in again")
        return pending

    def _check_refresh_token(self, tokens: TokenSet) -> None:
        """Count (and warn once about) a login that asked for offline_access in vain."""
        if tokens.refresh is not None or "offline_access" not in self.config.login.scopes.split():
            return
        self.stats.refresh_token_missing += 1
        if self.stats.refresh_token_missing == 1:
            logger.warning(OFFLINE_ACCESS_WARNING)

    async def _exchange(self, code: str, pending: _Pending) -> TokenSet:
        endpoint = self.config.endpoint("token")
        assert endpoint is not None
        form: dict[str, Any] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        self._resource_form(form)
        headers = self._client_auth(form)
        try:
            status, body = await post_form(
                self._client, endpoint, form, headers, timeout=self._timeout
            )
        except TokenEndpointUnavailable as exc:
            raise LoginError(
                "token_exchange_failed",
                f"the token endpoint could not be reached ({exc.cause})",
                status=502,
            ) from None
        if status != 200 or not isinstance(body, dict):
            error = oauth_error(body)
            said = f" ({error})" if error else ""
            raise LoginError(
                "token_exchange_failed",
                f"the token endpoint answered HTTP {status}{said}",
            )
        access, id_token = body.get("access_token"), body.get("id_token")
        refresh = body.get("refresh_token")
        if not isinstance(access, str) or not access:
            raise LoginError("token_invalid", "the token response has no access token")
        if not isinstance(id_token, str) or not id_token:
            raise LoginError("id_token_missing", "the token response has no ID token")
        if refresh is not None and not isinstance(refresh, str):
            raise LoginError("token_invalid", "the token response's refresh token is not a string")
        return TokenSet(access=access, id=id_token, refresh=refresh or None)

    async def _ensure_keys(self, token: str) -> None:
        """Let the remote key layer fetch a kid the bake lacks, as the middleware does."""
        remote = self.remote
        if remote is None:
            return
        try:
            header = unverified_header(token, max_bytes=self.verifier.max_token_bytes)
            if not remote.is_baked_kid(header.get("kid")):
                await remote.key_for(header.get("kid"), header["alg"])
        except VerifierError:
            return  # verifying reports it

    async def _verify(self, tokens: TokenSet, pending: _Pending) -> None:
        assert tokens.access is not None
        assert tokens.id is not None
        try:
            # The size cap before anything reads them, the remote key step included.
            check_size(tokens.access, self.verifier.max_token_bytes)
            check_size(tokens.id, self.verifier.max_token_bytes)
        except VerifierError as exc:
            raise LoginError(
                "token_invalid", f"the issuer's tokens do not verify ({exc.code})"
            ) from None
        await self._ensure_keys(tokens.access)
        await self._ensure_keys(tokens.id)
        try:
            # Also warms the verified-token cache for the first page load.
            session = self.verifier.session(tokens.access, tokens.id)
        except VerifierError as exc:
            # The message says which token and which setting (an algorithm the key
            # does not have, an audience…); jwtedge messages never hold a token.
            raise LoginError(
                "token_invalid", f"the issuer's tokens do not verify ({exc.code}): {exc.message}"
            ) from None
        try:
            self.verifier.verify_id(tokens.id, access_claims=session.claims, nonce=pending.nonce)
        except VerifierError:
            raise LoginError(
                "nonce_mismatch", "the ID token was not issued for this login"
            ) from None

    # -- /auth/logout ----------------------------------------------------------

    async def logout(self, request: Request) -> Response:
        """Clear the cookies, revoke the refresh token, end the issuer session if it can."""
        tokens = request.scope.get(LOGOUT_TOKENS_KEY)
        if isinstance(tokens, TokenSet) and tokens.refresh:
            await self._revoke(tokens.refresh)
        end_session = self.config.endpoint("end_session")
        client_id = self.config.auth.client_id
        target = "/"
        if end_session is not None and client_id is not None:
            params = {"client_id": client_id}
            # Only the configured URL: never one the request names (open redirect).
            if self.config.login.post_logout_redirect:
                params["post_logout_redirect_uri"] = self.config.login.post_logout_redirect
            target = _with_query(end_session, params)
        response = RedirectResponse(target, status_code=303, headers=_NO_STORE)
        secure = self._secure(request)
        # Every variant (host-only and with cookies.domain, at cookies.path and
        # /) of each token cookie the request carried: one left behind after a
        # settings change would outlive the logout.
        present = self._present(request)
        names = present if present is not None else self._all_token_cookie_names(secure)
        for value in self.jar.clear_everywhere(names, secure=secure):
            response.headers.append("set-cookie", value)
        self.stats.logouts += 1
        return response

    async def _revoke(self, refresh_token: str) -> None:
        """RFC 7009, best effort: a failure is counted and logged, never shown."""
        endpoint = self.config.endpoint("revocation")
        if endpoint is None or self.config.auth.client_id is None:
            return
        form: dict[str, Any] = {"token": refresh_token, "token_type_hint": "refresh_token"}
        headers = self._client_auth(form)
        timeout = min(self.config.refresh.timeout, _REVOKE_TIMEOUT)
        try:
            status, _ = await post_form(self._client, endpoint, form, headers, timeout=timeout)
        except TokenEndpointUnavailable as exc:
            self.stats.revocations_failed += 1
            logger.warning("token revocation failed (%s)", exc.cause)
            return
        if status == 200:
            self.stats.revocations_ok += 1
        else:
            self.stats.revocations_failed += 1
            logger.warning("token revocation answered HTTP %d", status)


class LogoutTokens:
    """Read the token cookies of logout requests before the middleware strips them.

    Install outside :class:`~verifier.middleware.JWTSessionMiddleware`. Only
    requests to ``path`` are touched; the tokens go to a scope key the client
    cannot set, never to a header.
    """

    def __init__(self, app: ASGIApp, *, path: str, jar: CookieJar, secure_mode: str) -> None:
        self.app = app
        self.path = path
        self.jar = jar
        self.secure_mode = secure_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        cookies: dict[str, str] = {}
        duplicated = False
        for name, value in scope["headers"]:
            if name == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, sep, item = part.partition("=")
                    key = key.strip()
                    if not sep or not self.jar.is_token_cookie(key):
                        continue
                    duplicated = duplicated or key in cookies
                    cookies.setdefault(key, item.strip())
        secure = request_is_secure(scope, self.secure_mode)
        # As in the middleware: a token cookie sent twice may be a planted one,
        # so none is trusted (its refresh token is not revoked on our word).
        tokens = TokenSet() if duplicated else self.jar.read(cookies, secure=secure)
        await self.app({**scope, LOGOUT_TOKENS_KEY: tokens}, receive, send)
