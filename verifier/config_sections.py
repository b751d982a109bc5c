"""The sections of :class:`~verifier.config.AppConfig`, one model each.

``auth``, ``endpoints``, ``keys``, ``cookies``, ``refresh``, ``cache``,
``http``, ``login``, ``websocket`` and ``claims``: the names and defaults are
DESIGN.md's contract. Each validates what it can alone; the rules that need
two sections, or the issuer profiles, are :class:`~verifier.config.AppConfig`'s.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from .claim_paths import parse_claim_path
from .config_types import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    MIN_HS_SECRET_BYTES,
    STYTCH_ISSUER,
    Id,
    IdList,
    Jwks,
    Seconds,
    Section,
    StrList,
    check_url,
    digits_as_text,
    split_list,
)

__all__ = [
    "RESERVED_LOGIN_PARAMS",
    "AuthSettings",
    "BakeMeta",
    "CacheSettings",
    "ClaimsSettings",
    "CookiesSettings",
    "EndpointsSettings",
    "HttpSettings",
    "KeysSettings",
    "LoginSettings",
    "RefreshSettings",
    "WebSocketSettings",
]


class BakeMeta(Section):
    """What ``jwtedge bake`` learned besides the keys (``auth.jwks_meta``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    issuer: str
    jwks_uri: str | None = None
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    baked_at: datetime | None = None
    sha256: str | None = None
    kids: list[str] = Field(default_factory=list)


class AuthSettings(Section):
    issuer: str
    #: Accepted audiences; optional only with ``audience_claim="none"``.
    #: NoDecode: an all-digit value must stay text, not become a JSON number.
    audience: Annotated[str | list[str] | None, NoDecode] = None
    client_id: Id | None = None
    client_secret: SecretStr | None = None
    jwks: Jwks = None
    jwks_meta: BakeMeta | None = None
    #: Allowed algorithms; ``None`` means every asymmetric one (plus HS* when
    #: ``hs_secret`` is set).
    algorithms: StrList | None = None
    leeway: Seconds = 30.0
    max_token_bytes: int = Field(default=8192, ge=256, le=1024 * 1024)
    require_at_jwt: bool = False
    access_claim: str | None = None
    rsa_alg: Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] = "RS256"
    hs_secret: SecretStr | None = None
    #: The claim ``audience`` is compared with; ``None`` means the profile's
    #: (``aud``; ``client_id`` for Cognito). ``"none"`` is the explicit opt-in
    #: for issuers whose tokens carry no audience: tokens are then bound by
    #: issuer and keys only.
    audience_claim: str | None = None
    #: Entra: the accepted ``tid`` values (required when ``issuer`` holds ``{tenantid}``).
    tenants: IdList | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        # Stytch's session JWTs carry "iss": "stytch.com/<project id>", no scheme.
        if not re.match(r"^https?://[^\s/?#]+", value) and not STYTCH_ISSUER.match(value):
            raise ValueError("the issuer must be an http(s) URL")
        return value

    @field_validator("audience", mode="before")
    @classmethod
    def _audience(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().startswith("["):
            value = split_list(value)
        value = digits_as_text(value)
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ValueError("every audience must be a non-empty string")
        if not value:
            raise ValueError("at least one audience is required")
        return value

    @field_validator("audience_claim")
    @classmethod
    def _audience_claim(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name a claim, or 'none' to check no audience")
        return value

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(value):
            raise ValueError("a tenant id must not be empty")
        return value

    @field_validator("jwks_meta", mode="before")
    @classmethod
    def _meta(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        known = set(ASYMMETRIC_ALGORITHMS) | set(HMAC_ALGORITHMS)
        unknown = [alg for alg in value if alg not in known]
        if unknown:
            raise ValueError(
                f"unsupported algorithms: {', '.join(unknown)} ('none' is never allowed)"
            )
        if not value:
            raise ValueError("at least one algorithm is required")
        return value

    @field_validator("hs_secret")
    @classmethod
    def _hs_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_HS_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_HS_SECRET_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _algorithms_and_secret(self) -> AuthSettings:
        if self.algorithms and set(self.algorithms) & set(HMAC_ALGORITHMS) and not self.hs_secret:
            raise ValueError("HS* algorithms need auth.hs_secret")
        return self

    @property
    def audiences(self) -> tuple[str, ...]:
        if self.audience is None:
            return ()
        return (self.audience,) if isinstance(self.audience, str) else tuple(self.audience)

    @property
    def allowed_algorithms(self) -> frozenset[str]:
        if self.algorithms is not None:
            return frozenset(self.algorithms)
        extra = HMAC_ALGORITHMS if self.hs_secret is not None else ()
        return frozenset(ASYMMETRIC_ALGORITHMS + extra)


class EndpointsSettings(Section):
    """Explicit endpoints; each wins over the one in ``auth.jwks_meta``."""

    token: str | None = None
    authorization: str | None = None
    end_session: str | None = None
    revocation: str | None = None
    jwks_uri: str | None = None

    _urls = field_validator("token", "authorization", "end_session", "revocation", "jwks_uri")(
        check_url
    )


class KeysSettings(Section):
    remote: Literal["unknown-kid", "never", "always"] = "unknown-kid"
    cooldown: Seconds = 30.0
    timeout: Seconds = 5.0
    stale_if_error: Seconds = 24 * 3600.0


class CookiesSettings(Section):
    access: str = "jwtedge_access"
    id: str = "jwtedge_id"
    refresh: str = "jwtedge_refresh"
    secure: Literal["auto", "always", "never"] = "auto"
    same_site: Literal["lax", "strict", "none"] = "lax"
    domain: str | None = None
    path: str = "/"
    refresh_max_age: Seconds = 30 * 86400.0
    max_chunks: int = Field(default=4, ge=1, le=16)
    forward: bool = False
    host_prefix: Literal["auto", "never"] = "auto"

    @field_validator("access", "id", "refresh")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", value):
            raise ValueError("a cookie name may hold letters, digits, '_' and '-' only")
        return value


class RefreshSettings(Section):
    enabled: bool = True
    skew: Seconds = 30.0
    grace: Seconds = 10.0
    timeout: Seconds = 10.0
    redis_url: SecretStr | None = None
    store_key: SecretStr | None = None


class CacheSettings(Section):
    size: int = Field(default=10_000, ge=0)


class HttpSettings(Section):
    exclude_paths: StrList = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics", "/static", "/assets"]
    )
    api_prefixes: StrList = Field(default_factory=lambda: ["/api"])
    login_path: str = "/auth/login"
    forward_auth_path: str = "/auth/verify"
    #: Identity headers to remove, added to the built-in list
    #: (:mod:`verifier.identity_headers`); a name ending in ``*`` is a prefix.
    strip_headers: StrList = Field(default_factory=list)

    @field_validator("strip_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        for name in value:
            # RFC 9110 token characters; anything else could never be a header.
            if not name.rstrip("*") or not all(
                c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name
            ):
                raise ValueError(f"not a header name: {name[:64]!r}")
        return value

    @field_validator("exclude_paths", "api_prefixes")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"paths start with '/': {path!r}")
        return [path.rstrip("/") or "/" for path in value]


#: Authorization parameters ``login.extra_params`` may not set: the ones jwtedge
#: sends itself (the callback checks what it sent; ``login.prompt``,
#: ``login.resource`` and ``login.scopes`` have their own settings) and secrets.
RESERVED_LOGIN_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "prompt",
        "resource",
        "response_mode",
        "request",
        "request_uri",
        # Token-endpoint secrets have no place in a browser-visible URL.
        "client_secret",
        "code_verifier",
    }
)
_MAX_EXTRA_PARAMS = 16


def _load_json_object(value: object) -> object:
    """A JSON object from the environment (``{"audience": "https://api"}``)."""
    if isinstance(value, str):
        import json

        text = value.strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError('must be a JSON object, e.g. {"audience": "https://api"}') from None
    return value


def _resource_uri(value: str) -> str:
    """RFC 8707 §2: an absolute URI without a fragment."""
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"not a valid URI: {value!r}") from None
    if not parts.scheme or not (parts.netloc or parts.path):
        raise ValueError(f"a resource must be an absolute URI: {value!r}")
    if "#" in value:
        raise ValueError(f"a resource must not have a fragment: {value!r}")
    return value


class LoginSettings(Section):
    redirect_uri: str | None = None
    scopes: str = "openid profile email offline_access"
    post_logout_redirect: str | None = None
    state_key: SecretStr | None = None
    #: Sent as is on the authorization request (``consent`` makes OIDC
    #: providers honour ``offline_access``, OIDC Core §11).
    prompt: str | None = None
    #: RFC 8707 resource indicators, sent on the authorization request and on
    #: every token request (code exchange and each refresh).
    resource: StrList = Field(default_factory=list)
    #: Issuer-specific authorization parameters (``{"audience": ...}`` for Auth0).
    extra_params: Annotated[dict[str, str], NoDecode, BeforeValidator(_load_json_object)] = Field(
        default_factory=dict
    )

    _urls = field_validator("redirect_uri", "post_logout_redirect")(check_url)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # OIDC Core §3.1.2.1: space-delimited ASCII values.
        if not re.fullmatch(r"[a-z_]+( [a-z_]+)*", value.strip()):
            raise ValueError("space-separated lower-case values such as 'consent' or 'login'")
        return value.strip()

    @field_validator("resource")
    @classmethod
    def _resources(cls, value: list[str]) -> list[str]:
        return [_resource_uri(item) for item in value]

    @field_validator("extra_params")
    @classmethod
    def _extra_params(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > _MAX_EXTRA_PARAMS:
            raise ValueError(f"at most {_MAX_EXTRA_PARAMS} parameters")
        reserved = sorted(name for name in value if name in RESERVED_LOGIN_PARAMS)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set here: jwtedge sends these itself or "
                "never puts them in a URL (use login.scopes, login.prompt or login.resource)"
            )
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
                raise ValueError(f"a parameter name holds letters, digits, '_', '.', '-': {name!r}")
        return value


class WebSocketSettings(Section):
    #: Origins allowed on cookie-authenticated upgrades; empty means same origin.
    allowed_origins: StrList = Field(default_factory=list)
    close_code: int = Field(default=4401, ge=4000, le=4999)


class ClaimsSettings(Section):
    """Where the session's parts are read (``claims.*``).

    ``profile`` names the issuer profile (:mod:`verifier.profiles`). ``roles``
    and ``permissions``, when set, replace the profile's own sources: a claim
    name (namespaced URLs allowed) or an RFC 6901 JSON Pointer
    (``/realm_access/roles``). ``role_ranks`` (role -> rank) replaces the
    profile's ranking; unknown roles rank 0. The profile name is checked by
    :class:`~verifier.config.AppConfig`, which reads the profiles: this
    module does not, so the session can import it.
    """

    profile: str = "jwtedge"
    organizations: str = "organizations"
    projects: str = "projects"
    scope: str = "scope"
    active_org: str = "active_org"
    roles: str | None = None
    permissions: str | None = None
    role_ranks: dict[str, int] | None = None

    @field_validator("roles", "permissions")
    @classmethod
    def _claim_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_claim_path(value)  # ValueError names the problem
        return value

    @field_validator("role_ranks", mode="before")
    @classmethod
    def _role_ranks(cls, value: object) -> object:
        if isinstance(value, dict):
            for role, rank in value.items():
                if not isinstance(role, str) or not role:
                    raise ValueError("role names must be non-empty strings")
                if isinstance(rank, bool) or not isinstance(rank, int):
                    raise ValueError(  # noqa: TRY004 - pydantic reports ValueErrors
                        "ranks are integers (a JSON map role -> rank)"
                    )
        return value
