"""The sign-in flow: ``/auth/login``, the callback and ``/auth/logout`` (:class:`LoginFlow`).

Authorization code with PKCE, the state carried in a sealed cookie
(:mod:`verifier.login.state`), tokens verified before they become cookies,
logout that revokes and ends the issuer session where it can. The reasons
are set out in :mod:`verifier.login`.
"""

from __future__ import annotations

import base64
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
from urllib.parse import quote_plus, urlencode, urlsplit, urlunsplit

import httpx2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..clock import wall_clock
from ..config import AppConfig
from ..cookies import CookieJar, TokenSet, request_is_secure
from ..errors import ConfigInvalid, VerifierError
from ..middleware import COOKIES_PRESENT_KEY, get_session
from ..oauth import TokenEndpointUnavailable, oauth_error, post_form
from ..remote import RemoteKeys
from ..tokens import TokenVerifier, check_size, unverified_header
from .logout import LOGOUT_TOKENS_KEY
from .state import (
    MIN_STATE_KEY_BYTES,
    STATE_COOKIE_PREFIX,
    STATE_TTL,
    LoginError,
    Pending,
    StateCipher,
    safe_return_path,
)

__all__ = [
    "CALLBACK_PATH",
    "OFFLINE_ACCESS_WARNING",
    "LoginFlow",
    "LoginStats",
    "callback_path",
    "error_page",
    "login_enabled",
]

logger = logging.getLogger("jwtedge.login")

CALLBACK_PATH = "/auth/callback"
STATE_KEY_SETTING = "APP_CONFIG_LOGIN__STATE_KEY"

#: More pending logins than this in one browser: the older ones are cleared.
_MAX_PENDING = 4
_MAX_STATE = 512
_REVOKE_TIMEOUT = 5.0
_ISSUER_ERROR = re.compile(r"[a-z_]{1,64}")
_NO_STORE = {"Cache-Control": "no-store"}


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
        pending = Pending(
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

    def _pending(self, request: Request, cookie_name: str, state: str) -> Pending:
        assert self._cipher is not None
        sealed = request.cookies.get(cookie_name)
        if not sealed:
            raise LoginError("state_missing", "no login was started in this browser for this state")
        pending = Pending.from_payload(self._cipher.open(sealed, aad=cookie_name.encode()))
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

    async def _exchange(self, code: str, pending: Pending) -> TokenSet:
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

    async def _verify(self, tokens: TokenSet, pending: Pending) -> None:
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
