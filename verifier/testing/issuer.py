"""DevIssuer: keys, token minting, discovery and JWKS, and a real server on 127.0.0.1.

The façade of :mod:`verifier.testing` (see there for what it offers); the
OAuth endpoints live in :mod:`verifier.testing.oauth`, the keys in
:mod:`verifier.testing.signing_keys`. Never use it in production.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from joserfc.jws import JWSRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from ..clock import wall_clock
from .oauth import DEFAULT_SCOPE, FAIL_MODES, OAuthProvider
from .signing_keys import INITIAL_ALGS, KEY_ALGORITHMS, SigningKey, generate_key

__all__ = ["DevIssuer", "IssuerStats"]

Claims = Mapping[str, Any] | bytes | str
Header = Mapping[str, Any] | bytes | str


@dataclass
class IssuerStats:
    """Requests the issuer's app has served, so tests can count network calls."""

    discovery_requests: int = 0
    jwks_requests: int = 0
    #: Every POST /token, failed or simulated-failing ones included.
    token_requests: int = 0
    #: Successful refresh_token grants (a replay within ``reuse_grace`` included).
    refresh_grants: int = 0
    #: Successful authorization_code grants.
    code_grants: int = 0
    #: Refresh-token families revoked: reuse, /revoke, a reused code, logout.
    revoked_families: int = 0
    #: Spent refresh tokens presented again outside the grace.
    reuse_detected: int = 0
    authorize_requests: int = 0
    #: POST /revoke requests answered 200.
    revocations: int = 0
    logout_requests: int = 0


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _json_bytes(value: Mapping[str, Any] | bytes | str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    # stdlib json on purpose: it writes NaN/Infinity, which hostile-token tests want.
    return json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _audience(value: str | Sequence[str]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


class DevIssuer:
    """A local OIDC issuer: keys, token minting, discovery and JWKS.

    Args:
        issuer: the ``iss`` of every token and the base of every endpoint URL.
        audience: the access tokens' ``aud`` (a string or a list).
        client_id: the ID tokens' default ``aud``; the one client the endpoints know.
        client_secret: when set, the client is confidential and /token and /revoke
            require ``client_secret_basic`` or ``client_secret_post``; when None it
            is public and sends ``client_id`` alone.
        alg: algorithm of the active signing key (``RS256``, ``ES256``,
            ``Ed25519``; any of ``KEY_ALGORITHMS`` adds a key of that kind).
        clock: seconds since the epoch, used for ``iat`` / ``exp``, code expiry and
            the reuse grace.

    Settings the endpoints read on every request (plain attributes, safe to change
    while :meth:`serve` runs):

    - ``default_user`` (``"u1"``): the sub /authorize approves without a page.
    - ``access_ttl`` (300): lifetime of the endpoints' access and ID tokens, seconds.
    - ``reuse_grace`` (0 = off): seconds during which a spent refresh token may
      come back and get the same answer again instead of revoking its family.
    - ``token_delay`` (0): seconds /token waits before a successful answer.
    - ``fail_mode`` (None): make /token fail, one of ``FAIL_MODES``: ``"500"``,
      ``"timeout"`` (waits ``fail_delay``, default 30 s, then 500),
      ``"invalid_grant"``, ``"other_sub"`` (valid tokens for ``sub + "-other"``),
      ``"bad_signature"`` (tokens whose signature bytes are flipped).
    - ``fail_count`` (None = every request): how many more /token requests fail;
      after the last one both switches reset to None.
    """

    def __init__(
        self,
        issuer: str = "http://127.0.0.1:9000",
        audience: str | Sequence[str] = "api",
        client_id: str = "web",
        *,
        client_secret: str | None = None,
        alg: str = "RS256",
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        if alg not in KEY_ALGORITHMS:
            raise ValueError(f"unsupported key algorithm {alg!r}; expected one of {KEY_ALGORITHMS}")
        self.issuer = issuer
        self.audience: str | list[str] = _audience(audience)
        self.client_id = client_id
        self.client_secret = client_secret
        self.clock = clock
        self.stats = IssuerStats()
        self.default_user = "u1"
        self.access_ttl = 300
        self.reuse_grace: float = 0
        self.token_delay: float = 0
        self.fail_delay: float = 30
        self.fail_count: int | None = None
        self._fail_mode: str | None = None
        self._oauth = OAuthProvider(self)
        # Rotation replaces the whole tuple, so a server thread reading it never
        # sees a half-updated list.
        self._keys: tuple[SigningKey, ...] = ()
        for initial in INITIAL_ALGS:
            self._add_key(initial)
        self._active: SigningKey = (
            self._newest_of(alg) if alg in INITIAL_ALGS else self._add_key(alg)
        )
        self.app: Starlette = Starlette(routes=self.routes())

    # -- keys -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The issuer URL (the same as ``issuer``)."""
        return self.issuer

    @property
    def kid(self) -> str:
        """The kid of the active signing key."""
        return self._active.kid

    @property
    def alg(self) -> str:
        """The algorithm of the active signing key."""
        return self._active.alg

    @property
    def fail_mode(self) -> str | None:
        """How /token fails (one of ``FAIL_MODES``), or None for normal answers."""
        return self._fail_mode

    @fail_mode.setter
    def fail_mode(self, mode: str | None) -> None:
        if mode is not None and mode not in FAIL_MODES:
            raise ValueError(f"unknown fail_mode {mode!r}; expected one of {sorted(FAIL_MODES)}")
        self._fail_mode = mode

    def kids(self, alg: str | None = None) -> list[str]:
        """Kids of every published key, oldest first; only those of ``alg`` when given."""
        return [k.kid for k in self._keys if alg is None or k.alg == alg]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: every key ever created, with ``kid``, ``alg`` and ``use``."""
        return {"keys": [k.jwk(private=False) for k in self._keys]}

    def private_jwk(self, kid: str) -> dict[str, Any]:
        """The private JWK of ``kid`` (for tests that sign on their own)."""
        return self._by_kid(kid).jwk(private=True)

    def rotate(self, alg: str | None = None) -> str:
        """Create a new signing key (the active key's algorithm unless given) and make it
        active. Old keys stay published. Returns the new kid."""
        self._active = self._add_key(alg or self._active.alg)
        return self._active.kid

    def _add_key(self, alg: str) -> SigningKey:
        key = generate_key(alg, len(self._keys) + 1)
        self._keys = (*self._keys, key)
        return key

    def _by_kid(self, kid: str) -> SigningKey:
        for key in self._keys:
            if key.kid == kid:
                return key
        raise ValueError(f"unknown kid {kid!r}")

    def _newest_of(self, alg: str) -> SigningKey:
        """The newest key published for ``alg``, else the newest one able to sign it."""
        for matches in (lambda k: k.alg == alg, lambda k: alg in k.signing_algs):
            for key in reversed(self._keys):
                if matches(key):
                    return key
        raise ValueError(f"no key can sign {alg!r}")

    def _resolve(self, kid: str | None, alg: str | None) -> tuple[SigningKey, str]:
        if kid is not None:
            key = self._by_kid(kid)
        elif alg is not None and alg != "none":
            key = self._newest_of(alg)
        else:
            key = self._active
        alg = alg or key.alg
        if alg != "none" and alg not in key.signing_algs:
            raise ValueError(f"key {key.kid} ({key.alg}) cannot sign with {alg!r}")
        return key, alg

    # -- signing ----------------------------------------------------------------

    def sign_raw(
        self, signing_input: bytes, *, kid: str | None = None, alg: str | None = None
    ) -> bytes:
        """Raw signature bytes over ``signing_input`` (empty for ``alg="none"``).

        ``kid`` names the key (default: the active one, or the newest able to sign
        ``alg``); ``alg`` defaults to that key's algorithm. ECDSA signatures are the
        fixed-width ``r || s`` of RFC 7518. Raises ``ValueError`` for a key that
        cannot sign with ``alg`` (ES384 with the P-256 key, HS256 with any key).
        """
        key, alg = self._resolve(kid, alg)
        return self._signature(key, alg, signing_input)

    def sign(
        self,
        claims: Claims,
        header: Header | None = None,
        *,
        kid: str | None = None,
        alg: str | None = None,
    ) -> str:
        """Sign an arbitrary, possibly hostile, compact JWS.

        ``claims`` as a mapping is JSON-encoded; bytes or str are the raw payload
        (duplicate members, arrays, invalid JSON). ``header`` defaults to
        ``{"alg", "kid", "typ": "JWT"}`` for the signing key; when given it is used
        exactly as given, never merged, so it may say ``alg: none``, carry ``crit``
        or ``jku``, or disagree with the key that actually signs. The signature
        always comes from ``kid`` / ``alg`` as in :meth:`sign_raw`.
        """
        key, alg = self._resolve(kid, alg)
        if header is None:
            header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
        signing_input = _b64(_json_bytes(header)) + b"." + _b64(_json_bytes(claims))
        signature = self._signature(key, alg, signing_input)
        return (signing_input + b"." + _b64(signature)).decode("ascii")

    @staticmethod
    def _signature(key: SigningKey, alg: str, signing_input: bytes) -> bytes:
        if alg == "none":
            return b""
        return JWSRegistry.algorithms[alg].sign(signing_input, key.key)

    def _mint(
        self,
        claims: dict[str, Any],
        extra: Mapping[str, Any] | None,
        *,
        typ: str | None,
        kid: str | None,
        alg: str | None,
    ) -> str:
        for name, value in (extra or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key, alg = self._resolve(kid, alg)
        header = {"alg": alg, "kid": key.kid}
        if typ is not None:
            header["typ"] = typ
        return self.sign(claims, header, kid=key.kid, alg=alg)

    def _iat(self, iat: int | None) -> int:
        return int(self.clock()) if iat is None else iat

    # -- tokens -----------------------------------------------------------------

    def access_token(
        self,
        sub: str = "u1",
        *,
        organizations: Sequence[Mapping[str, Any]] | None = None,
        projects: Sequence[Mapping[str, Any]] | None = None,
        scope: str | None = "openid profile",
        sid: str | None = None,
        ttl: int = 300,
        iat: int | None = None,
        extra: Mapping[str, Any] | None = None,
        alg: str | None = None,
        kid: str | None = None,
        audience: str | Sequence[str] | None = None,
        typ: str | None = "at+jwt",
    ) -> str:
        """Mint an access token.

        Claims: ``iss``, ``sub``, ``aud``, ``iat`` (the clock unless given),
        ``exp = iat + ttl``, a random ``jti``, ``sid`` when given, ``scope`` unless
        None, ``organizations`` ``[{id, slug, name, role}]`` and ``projects``
        ``[{id, slug, organizationId}]`` (both default ``[]``). ``extra`` is merged
        last; a None value removes that claim. ``kid`` / ``alg`` pick the key and
        algorithm as in :meth:`sign_raw`; ``typ=None`` leaves ``typ`` out of the header.
        """
        now = self._iat(iat)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": _audience(self.audience if audience is None else audience),
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
        }
        if sid is not None:
            claims["sid"] = sid
        if scope is not None:
            claims["scope"] = scope
        claims["organizations"] = [dict(org) for org in organizations or ()]
        claims["projects"] = [dict(project) for project in projects or ()]
        return self._mint(claims, extra, typ=typ, kid=kid, alg=alg)

    def id_token(
        self,
        sub: str = "u1",
        *,
        email: str | None = "a@example.com",
        email_verified: bool | None = True,
        name: str | None = "Ada Lovelace",
        picture: str | None = None,
        nonce: str | None = None,
        sid: str | None = None,
        ttl: int = 300,
        iat: int | None = None,
        audience: str | Sequence[str] | None = None,
        azp: str | None = None,
        extra: Mapping[str, Any] | None = None,
        alg: str | None = None,
        kid: str | None = None,
        typ: str | None = "JWT",
    ) -> str:
        """Mint an ID token (header ``typ: JWT``).

        Claims: ``iss``, ``sub``, ``aud`` (default ``client_id``; may be a list),
        ``iat``, ``exp``, and ``email``, ``email_verified``, ``name``, ``picture``,
        ``nonce``, ``sid``, ``azp`` when not None. ``extra``, ``kid`` and ``alg`` as
        in :meth:`access_token`.
        """
        now = self._iat(iat)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": _audience(self.client_id if audience is None else audience),
            "iat": now,
            "exp": now + ttl,
        }
        optional = {
            "email": email,
            "email_verified": email_verified,
            "name": name,
            "picture": picture,
            "nonce": nonce,
            "sid": sid,
            "azp": azp,
        }
        claims.update({k: v for k, v in optional.items() if v is not None})
        return self._mint(claims, extra, typ=typ, kid=kid, alg=alg)

    # -- users and logins ---------------------------------------------------------

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
        """Register (or replace) a user the endpoints and :meth:`login` mint tokens for.

        ``email`` defaults to ``{sub}@example.com`` and ``name`` to ``sub``;
        ``organizations`` are ``{id, slug, name, role}``, ``projects``
        ``{id, slug, organizationId}``. The default user exists without this call,
        with demo data (Ada Lovelace, two organizations, a project in each).
        """
        self._oauth.add_user(
            sub,
            email=email,
            name=name,
            email_verified=email_verified,
            picture=picture,
            organizations=organizations,
            projects=projects,
        )

    def user(self, sub: str) -> dict[str, Any]:
        """A copy of the user's current profile; ``KeyError`` for an unknown sub."""
        return self._oauth.user(sub)

    def add_project(self, sub: str, project: Mapping[str, Any]) -> None:
        """Add a project (replacing one with the same ``id``); the next tokens carry it."""
        self._oauth.add_membership(sub, "projects", project)

    def add_organization(self, sub: str, org: Mapping[str, Any]) -> None:
        """Add an organization (replacing one with the same ``id``); the next tokens carry it."""
        self._oauth.add_membership(sub, "organizations", org)

    def login(
        self,
        sub: str | None = None,
        *,
        sid: str | None = None,
        scope: str = DEFAULT_SCOPE,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """The token response a code exchange would give, without HTTP (nothing counted).

        Starts a new refresh-token family for ``sub`` (default ``default_user``;
        ``KeyError`` for a user never added) whose ``sid`` (random unless given)
        every token of the family carries. Returns ``access_token``, ``token_type``
        (``Bearer``), ``expires_in`` (``access_ttl``), ``scope``, ``id_token`` when
        the scope has ``openid`` and ``refresh_token`` when it has ``offline_access``.
        """
        return self._oauth.login(sub, sid=sid, scope=scope, nonce=nonce)

    # -- HTTP -------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata served at ``/.well-known/openid-configuration``."""
        base = self.issuer.rstrip("/")
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{base}/jwks",
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "revocation_endpoint": f"{base}/revoke",
            "end_session_endpoint": f"{base}/logout",
            "id_token_signing_alg_values_supported": list(dict.fromkeys(k.alg for k in self._keys)),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "scopes_supported": DEFAULT_SCOPE.split(),
            "token_endpoint_auth_methods_supported": (
                ["none"]
                if self.client_secret is None
                else ["client_secret_basic", "client_secret_post"]
            ),
            "authorization_response_iss_parameter_supported": True,
        }

    def routes(self) -> list[BaseRoute]:
        """The app's routes; extend this list to serve more endpoints."""
        return [
            Route("/.well-known/openid-configuration", self._discovery_endpoint, methods=["GET"]),
            Route("/jwks", self._jwks_endpoint, methods=["GET"]),
            *self._oauth.routes(),
        ]

    async def _discovery_endpoint(self, request: Request) -> JSONResponse:
        self.stats.discovery_requests += 1
        return JSONResponse(self.discovery())

    async def _jwks_endpoint(self, request: Request) -> JSONResponse:
        self.stats.jwks_requests += 1
        return JSONResponse(self.jwks())

    @classmethod
    @contextmanager
    def serve(
        cls,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> Iterator[DevIssuer]:
        """Run a DevIssuer on a real uvicorn server in a background thread.

        The socket is bound first (``port=0`` picks any free port), so the issuer
        URL is known before the issuer exists: ``http://{host}:{port}``. ``kwargs``
        go to the constructor (everything but ``issuer``). Waits up to ``timeout``
        seconds for start-up and again for shutdown on exit.
        """
        if "issuer" in kwargs:
            raise TypeError("serve() derives the issuer URL from the bound socket")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            issuer = cls(issuer=f"http://{host}:{sock.getsockname()[1]}", **kwargs)
            # No access log: /logout's id_token_hint travels in the query string.
            config = uvicorn.Config(
                issuer.app, log_level="warning", access_log=False, lifespan="off"
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(
                target=server.run, kwargs={"sockets": [sock]}, name="dev-issuer", daemon=True
            )
            thread.start()
            try:
                deadline = time.monotonic() + timeout
                while not server.started:
                    if not thread.is_alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"DevIssuer server did not start on {issuer.url}")
                    time.sleep(0.01)
                yield issuer
            finally:
                server.should_exit = True
                # Requests parked in token_delay or fail_mode="timeout" would hold the
                # graceful shutdown for their whole sleep: wake them until it is over.
                deadline = time.monotonic() + timeout
                while thread.is_alive() and time.monotonic() < deadline:
                    issuer._oauth.wake_sleepers()
                    thread.join(0.05)
                if thread.is_alive():
                    server.force_exit = True
                    thread.join(timeout)
        finally:
            sock.close()
