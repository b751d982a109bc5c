"""The OAuth 2.0 / OIDC side of DevIssuer: users, /authorize, /token, /revoke, /logout.

It behaves like the issuers jwtedge meets (Auth0, Okta, Keycloak, better-auth)
where a relying party can tell the difference:

- the authorization code flow with PKCE ``S256`` only; a code lives 60 s and is
  single-use: any redemption attempt spends it, and presenting it again revokes
  what it issued (RFC 6749 §4.1.2);
- refresh-token rotation with reuse detection: a spent refresh token presented
  again revokes its whole family, unless it comes back within the optional
  ``reuse_grace``, which replays the same answer (Auth0's reuse interval, Okta's
  grace period);
- client authentication by ``client_secret_basic`` or ``client_secret_post`` for
  a confidential client, ``client_id`` alone for a public one;
- claims follow the granted scopes (``profile``: name and picture, ``email``:
  email and email_verified) and the user's profile *now*, so a project added
  after login shows up at the next refresh;
- switches that make the token endpoint fail or stall, for tests.

Tokens are never logged, and codes and refresh tokens are kept only as SHA-256
digests. Everything here is for demos and tests, never production.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .protocol import (
    NO_STORE,
    PKCE,
    OAuthError,
    basic_credentials,
    corrupt_signature,
    digest,
    equal,
    http_url,
    narrow_scope,
    new_sid,
    read_form,
    required,
    s256,
    single_params,
    with_query,
)

if TYPE_CHECKING:
    from .issuer import DevIssuer

__all__ = ["CODE_TTL", "DEFAULT_SCOPE", "FAIL_MODES", "OAuthProvider", "demo_profile"]

#: The scopes ``login()`` grants unless told otherwise.
DEFAULT_SCOPE = "openid profile email offline_access"
#: Seconds an authorization code can be redeemed after /authorize issued it.
CODE_TTL = 60
#: The values ``DevIssuer.fail_mode`` accepts (besides None).
FAIL_MODES = frozenset({"500", "timeout", "invalid_grant", "other_sub", "bad_signature"})
_SIGNED_OUT = "<!doctype html><title>Signed out</title><p>You are signed out.</p>\n"

Kind = Literal["organizations", "projects"]


@dataclass
class _Family:
    """One login: every refresh token rotated from it shares its fate."""

    sub: str
    sid: str
    scope: str
    client_id: str
    auth_time: int
    revoked: bool = False


@dataclass
class _RefreshToken:
    family: _Family
    used_at: float | None = None
    #: What its one use returned: replayed to a retry within the reuse grace.
    answer: dict[str, Any] | None = None


@dataclass
class _Code:
    sub: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    challenge: str
    sid: str
    issued_at: float
    redeemed: bool = False
    family: _Family | None = None


def demo_profile(sub: str) -> dict[str, Any]:
    """The default user's profile when nobody added it: two organizations, a project in each."""
    return {
        "sub": sub,
        "email": "a@example.com",
        "email_verified": True,
        "name": "Ada Lovelace",
        "picture": None,
        "organizations": [
            {"id": "org_acme", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
            {"id": "org_globex", "slug": "globex", "name": "Globex", "role": "member"},
        ],
        "projects": [
            {"id": "prj_web", "slug": "web", "organizationId": "org_acme"},
            {"id": "prj_api", "slug": "api", "organizationId": "org_globex"},
        ],
    }


class OAuthProvider:
    """Users, authorization codes, refresh-token families and the OAuth endpoints.

    ``DevIssuer`` is the façade: it owns the keys, the clock and the settings
    (``client_secret``, ``access_ttl``, ``reuse_grace``, ``fail_mode``, …), which
    this class reads on every request, so tests may change them while a server
    runs. State shared with the server thread is guarded by one lock.
    """

    def __init__(self, issuer: DevIssuer) -> None:
        self._issuer = issuer
        self._lock = threading.RLock()
        self._users: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._families: list[_Family] = []
        self._sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    # -- users ------------------------------------------------------------------

    def add_user(
        self,
        sub: str,
        *,
        email: str | None = None,
        name: str | None = None,
        email_verified: bool = True,
        picture: str | None = None,
        organizations: Sequence[Mapping[str, Any]] = (),
        projects: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        profile = {
            "sub": sub,
            "email": email or f"{sub}@example.com",
            "email_verified": email_verified,
            "name": name or sub,
            "picture": picture,
            "organizations": [dict(org) for org in organizations],
            "projects": [dict(project) for project in projects],
        }
        with self._lock:
            self._users[sub] = profile

    def user(self, sub: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._profile(sub))

    def add_membership(self, sub: str, kind: Kind, item: Mapping[str, Any]) -> None:
        if "id" not in item:
            raise ValueError(f"a member of {kind} needs an 'id'")
        with self._lock:
            items: list[dict[str, Any]] = self._profile(sub)[kind]
            kept = [existing for existing in items if existing.get("id") != item["id"]]
            items[:] = [*kept, dict(item)]

    def _profile(self, sub: str) -> dict[str, Any]:
        with self._lock:
            profile = self._users.get(sub)
            if profile is None:
                if sub != self._issuer.default_user:
                    raise KeyError(f"unknown user {sub!r}; add it with add_user()")
                profile = self._users[sub] = demo_profile(sub)
            return profile

    # -- token sets -------------------------------------------------------------

    def login(
        self, sub: str | None, *, sid: str | None, scope: str, nonce: str | None
    ) -> dict[str, Any]:
        sub = self._issuer.default_user if sub is None else sub
        with self._lock:
            self._profile(sub)
            family = self._new_family(sub, sid or new_sid(), scope, self._issuer.client_id)
            return self._token_set(family, nonce=nonce)

    def _new_family(
        self, sub: str, sid: str, scope: str, client_id: str, auth_time: float | None = None
    ) -> _Family:
        when = self._issuer.clock() if auth_time is None else auth_time
        family = _Family(sub, sid, scope, client_id, auth_time=int(when))
        with self._lock:
            self._families.append(family)
        return family

    def _token_set(
        self,
        family: _Family,
        *,
        scope: str | None = None,
        nonce: str | None = None,
        failure: str | None = None,
    ) -> dict[str, Any]:
        """Access token, ID token (``openid``) and a new refresh token (``offline_access``)."""
        issuer = self._issuer
        scope = scope or family.scope
        scopes = scope.split()
        profile = self.user(family.sub)
        sub = f"{family.sub}-other" if failure == "other_sub" else family.sub
        ttl = issuer.access_ttl
        answer: dict[str, Any] = {
            "access_token": issuer.access_token(
                sub,
                organizations=profile["organizations"],
                projects=profile["projects"],
                scope=scope,
                sid=family.sid,
                ttl=ttl,
                extra={"client_id": family.client_id},  # RFC 9068 §2.2
            ),
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }
        if "openid" in scopes:
            email = "email" in scopes
            named = "profile" in scopes
            answer["id_token"] = issuer.id_token(
                sub,
                email=profile["email"] if email else None,
                email_verified=profile["email_verified"] if email else None,
                name=profile["name"] if named else None,
                picture=profile["picture"] if named else None,
                nonce=nonce,
                sid=family.sid,
                ttl=ttl,
                extra={"auth_time": family.auth_time},
            )
        # Rotation follows the grant, not a narrowed request scope.
        if "offline_access" in family.scope.split():
            refresh_token = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh[digest(refresh_token)] = _RefreshToken(family)
            answer["refresh_token"] = refresh_token
        if failure == "bad_signature":
            for name in ("access_token", "id_token"):
                if name in answer:
                    answer[name] = corrupt_signature(answer[name])
        return answer

    def _revoke(self, family: _Family) -> None:
        with self._lock:
            if not family.revoked:
                family.revoked = True
                self._issuer.stats.revoked_families += 1

    # -- endpoints --------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/authorize", self.authorize_endpoint, methods=["GET"]),
            Route("/token", self.token_endpoint, methods=["POST"]),
            Route("/revoke", self.revoke_endpoint, methods=["POST"]),
            Route("/logout", self.logout_endpoint, methods=["GET", "POST"]),
        ]

    async def authorize_endpoint(self, request: Request) -> Response:
        """Auto-approve ``default_user``: 302 to ``redirect_uri`` with code, state and iss.

        Every invalid request gets a 400 JSON answer, never a redirect: this
        issuer accepts any http(s) ``redirect_uri``, so none is trusted enough
        to carry an error back.
        """
        with self._lock:
            self._issuer.stats.authorize_requests += 1
        try:
            location = self._authorize(single_params(request.query_params.multi_items()))
        except OAuthError as exc:
            return exc.response()
        return RedirectResponse(location, status_code=302, headers=NO_STORE)

    def _authorize(self, params: dict[str, str]) -> str:
        issuer = self._issuer
        if params.get("client_id") != issuer.client_id:
            raise OAuthError("invalid_client", "unknown client_id")
        redirect_uri = http_url(params.get("redirect_uri"), "redirect_uri")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code is supported")
        if params.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method=S256 is required")
        challenge = params.get("code_challenge")
        if challenge is None or not PKCE.fullmatch(challenge):
            raise OAuthError("invalid_request", "a code_challenge (RFC 7636) is required")
        sub = issuer.default_user
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._profile(sub)
            self._codes[digest(code)] = _Code(
                sub=sub,
                client_id=issuer.client_id,
                redirect_uri=redirect_uri,
                scope=params.get("scope", "openid"),
                nonce=params.get("nonce"),
                challenge=challenge,
                sid=new_sid(),
                issued_at=issuer.clock(),
            )
        query = {"code": code}
        if "state" in params:
            query["state"] = params["state"]
        query["iss"] = issuer.issuer  # RFC 9207
        return with_query(redirect_uri, query)

    async def token_endpoint(self, request: Request) -> Response:
        """RFC 6749 token endpoint: authorization_code and refresh_token grants."""
        issuer = self._issuer
        with self._lock:
            issuer.stats.token_requests += 1
        failure = self._take_failure()
        if failure in ("500", "timeout"):
            if failure == "timeout":
                await self.sleep(issuer.fail_delay)
            body = {"error": "server_error", "error_description": f"fail_mode={failure}"}
            return JSONResponse(body, 500, NO_STORE)
        try:
            answer = await self._grant(request, failure)
        except OAuthError as exc:
            return exc.response()
        await self.sleep(issuer.token_delay)
        return JSONResponse(answer, headers=NO_STORE)

    async def _grant(self, request: Request, failure: str | None) -> dict[str, Any]:
        if failure == "invalid_grant":
            raise OAuthError("invalid_grant", "fail_mode=invalid_grant")
        form = await read_form(request)
        client_id = self._authenticate_client(request, form)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._code_grant(form, client_id, failure)
        if grant_type == "refresh_token":
            return self._refresh_grant(form, client_id, failure)
        if grant_type is None:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", "grant_type is not supported")

    def _take_failure(self) -> str | None:
        """The failure this request simulates, spending one of ``fail_count``."""
        issuer = self._issuer
        with self._lock:
            mode, count = issuer.fail_mode, issuer.fail_count
            if mode is None or count is None:
                return mode
            if count > 1:
                issuer.fail_count = count - 1
            else:
                # The last planned failure (or none left): back to normal for good.
                issuer.fail_mode, issuer.fail_count = None, None
            return mode if count > 0 else None

    def _code_grant(
        self, form: dict[str, str], client_id: str, failure: str | None
    ) -> dict[str, Any]:
        code = required(form, "code")
        redirect_uri = required(form, "redirect_uri")
        with self._lock:
            record = self._codes.get(digest(code))
            if record is None or record.client_id != client_id:
                raise OAuthError("invalid_grant", "unknown authorization code")
            if record.redeemed:
                if record.family is not None:
                    self._revoke(record.family)
                raise OAuthError("invalid_grant", "authorization code was already used")
            record.redeemed = True  # spent by any attempt, like Keycloak
            if self._issuer.clock() - record.issued_at > CODE_TTL:
                raise OAuthError("invalid_grant", "authorization code expired")
            if redirect_uri != record.redirect_uri:
                raise OAuthError(
                    "invalid_grant", "redirect_uri differs from the authorization request"
                )
            verifier = form.get("code_verifier", "")
            if not PKCE.fullmatch(verifier) or not equal(s256(verifier), record.challenge):
                raise OAuthError("invalid_grant", "PKCE verification failed")
            family = record.family = self._new_family(
                record.sub, record.sid, record.scope, client_id, record.issued_at
            )
            answer = self._token_set(family, nonce=record.nonce, failure=failure)
            self._issuer.stats.code_grants += 1
            return answer

    def _refresh_grant(
        self, form: dict[str, str], client_id: str, failure: str | None
    ) -> dict[str, Any]:
        token = required(form, "refresh_token")
        issuer = self._issuer
        with self._lock:
            record = self._refresh.get(digest(token))
            if record is None or record.family.revoked:
                raise OAuthError("invalid_grant", "refresh token is invalid or revoked")
            family = record.family
            if family.client_id != client_id:
                raise OAuthError("invalid_grant", "refresh token was issued to another client")
            now = issuer.clock()
            if record.used_at is not None:
                grace = issuer.reuse_grace
                if grace > 0 and record.answer is not None and now - record.used_at <= grace:
                    issuer.stats.refresh_grants += 1
                    return record.answer
                self._revoke(family)
                issuer.stats.reuse_detected += 1
                raise OAuthError("invalid_grant", "refresh token reused; its family is revoked")
            scope = narrow_scope(family.scope, form.get("scope"))
            answer = self._token_set(family, scope=scope, failure=failure)
            record.used_at, record.answer = now, answer
            issuer.stats.refresh_grants += 1
            return answer

    async def revoke_endpoint(self, request: Request) -> Response:
        """RFC 7009: revoke a refresh token's family; 200 for tokens it does not know."""
        try:
            form = await read_form(request)
            client_id = self._authenticate_client(request, form)
            token = required(form, "token")
        except OAuthError as exc:
            return exc.response()
        with self._lock:
            record = self._refresh.get(digest(token))
            if record is not None and record.family.client_id == client_id:
                self._revoke(record.family)
            self._issuer.stats.revocations += 1
        return Response(status_code=200, headers=NO_STORE)

    async def logout_endpoint(self, request: Request) -> Response:
        """OIDC RP-initiated logout: end the hinted session, then redirect or say so."""
        with self._lock:
            self._issuer.stats.logout_requests += 1
        try:
            pairs = list(request.query_params.multi_items())
            if request.method == "POST":
                pairs += (await read_form(request)).items()
            params = single_params(pairs)
            redirect = params.get("post_logout_redirect_uri")
            if redirect is not None:
                redirect = http_url(redirect, "post_logout_redirect_uri")
        except OAuthError as exc:
            return exc.response()
        if "id_token_hint" in params:
            self._end_session(params["id_token_hint"])
        if redirect is None:
            return HTMLResponse(_SIGNED_OUT, headers=NO_STORE)
        state = {"state": params["state"]} if "state" in params else {}
        return RedirectResponse(with_query(redirect, state), status_code=302)

    def _end_session(self, id_token_hint: str) -> None:
        """Revoke the refresh tokens of the hinted session (Keycloak does); bad hints do nothing."""
        jwks: Any = self._issuer.jwks()
        algorithms = list(dict.fromkeys(key["alg"] for key in jwks["keys"]))
        try:
            claims = jwt.decode(id_token_hint, KeySet.import_key_set(jwks), algorithms).claims
        except (JoseError, ValueError):
            return
        if claims.get("iss") != self._issuer.issuer or not isinstance(claims.get("sid"), str):
            return
        with self._lock:
            for family in self._families:
                if family.sid == claims["sid"]:
                    self._revoke(family)

    # -- client authentication ---------------------------------------------------

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> str:
        """client_secret_basic or client_secret_post; client_id alone for a public client."""
        issuer = self._issuer
        header = request.headers.get("authorization")
        client_id: str | None
        secret: str | None
        if header is not None:
            if "client_secret" in form:
                raise OAuthError("invalid_request", "use one client authentication method")
            client_id, secret = basic_credentials(header)
            if form.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
        else:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        if not equal(client_id, issuer.client_id):
            raise OAuthError("invalid_client", "unknown client", 401)
        expected = issuer.client_secret
        if expected is not None and (secret is None or not equal(secret, expected)):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client_id

    # -- sleeping -----------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds``, or less when :meth:`wake_sleepers` is called.

        Cancellation propagates as usual; the sleeper is forgotten either way.
        """
        if seconds <= 0:
            return
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._sleepers.add(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry[1].wait(), seconds)
        finally:
            with self._lock:
                self._sleepers.discard(entry)

    def wake_sleepers(self) -> None:
        """End every pending :meth:`sleep` now (thread-safe), so a server can stop promptly."""
        with self._lock:
            sleepers = list(self._sleepers)
        for loop, event in sleepers:
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(event.set)
