"""Typed app config: one ``AppConfig`` root read from ``APP_CONFIG_*``.

Sections are plain pydantic models; nested names use ``__``
(``APP_CONFIG_AUTH__ISSUER``). Values come from init arguments, then the
environment, then an env file (``APP_CONFIG_ENV_FILE``, default ``.env``).
Everything is validated at start-up: a bad value raises
:class:`~verifier.errors.ConfigInvalid` naming the setting, and never echoes
the value (secrets are ``SecretStr`` and pydantic is told to hide inputs).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from .errors import ConfigInvalid, JWKSInvalid
from .jwks import JWKSet, parse_jwks

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "AppConfig",
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
    "parse_duration",
]

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "Ed25519",
    "EdDSA",
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_HS_SECRET_BYTES = 32

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30"``, ``"30s"``, ``"5m"``, ``"12h"``, ``"7d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 12h, 7d")
    if seconds < 0 or seconds != seconds:
        raise ValueError("a duration must not be negative")
    return seconds


def _split_list(value: object) -> object:
    """Accept a JSON list or a comma-separated string from the environment."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _digits_as_text(value: object) -> object:
    """Audiences, client ids and tenant ids are strings however they look.

    An all-digit id (a Zitadel project id such as ``284719360215432711``)
    arrives as a JSON number from a JSON section or list; an integer is
    turned back into its text. Floats and booleans are refused by the type.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return [_digits_as_text(item) for item in value]
    return value


def _id_list(value: object) -> object:
    return _digits_as_text(_split_list(value))


def _load_jwks(value: object) -> object:
    if value is None or value == "" or isinstance(value, JWKSet):
        return value or None
    try:
        return parse_jwks(value)
    except JWKSInvalid as exc:
        # The message names the problem, never key material.
        raise ValueError(exc.message) from None


Seconds = Annotated[float, BeforeValidator(parse_duration)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
IdList = Annotated[list[str], NoDecode, BeforeValidator(_id_list)]
Id = Annotated[str, BeforeValidator(_digits_as_text)]
Jwks = Annotated[
    JWKSet | None,
    BeforeValidator(_load_jwks),
    PlainSerializer(lambda jwks: jwks.to_dict() if jwks is not None else None),
]


#: The one issuer that is not a URL: Stytch's default ``stytch.com/<project id>``.
STYTCH_ISSUER = re.compile(
    r"^stytch\.com/project-(?:test|live)-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class BakeMeta(_Section):
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


class AuthSettings(_Section):
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
            value = _split_list(value)
        value = _digits_as_text(value)
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


def _check_url(value: str | None) -> str | None:
    """An absolute http(s) URL with a host and a valid port, or ``None``."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


class EndpointsSettings(_Section):
    """Explicit endpoints; each wins over the one in ``auth.jwks_meta``."""

    token: str | None = None
    authorization: str | None = None
    end_session: str | None = None
    revocation: str | None = None
    jwks_uri: str | None = None

    _urls = field_validator("token", "authorization", "end_session", "revocation", "jwks_uri")(
        _check_url
    )


class KeysSettings(_Section):
    remote: Literal["unknown-kid", "never", "always"] = "unknown-kid"
    cooldown: Seconds = 30.0
    timeout: Seconds = 5.0
    stale_if_error: Seconds = 24 * 3600.0


class CookiesSettings(_Section):
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


class RefreshSettings(_Section):
    enabled: bool = True
    skew: Seconds = 30.0
    grace: Seconds = 10.0
    timeout: Seconds = 10.0
    redis_url: SecretStr | None = None
    store_key: SecretStr | None = None


class CacheSettings(_Section):
    size: int = Field(default=10_000, ge=0)


class HttpSettings(_Section):
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


class LoginSettings(_Section):
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

    _urls = field_validator("redirect_uri", "post_logout_redirect")(_check_url)

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


class WebSocketSettings(_Section):
    #: Origins allowed on cookie-authenticated upgrades; empty means same origin.
    allowed_origins: StrList = Field(default_factory=list)
    close_code: int = Field(default=4401, ge=4000, le=4999)


class ClaimsSettings(_Section):
    """Where the session's parts are read (``claims.*``).

    ``profile`` names the issuer profile (:mod:`verifier.profiles`). ``roles``
    and ``permissions``, when set, replace the profile's own sources: a claim
    name (namespaced URLs allowed) or an RFC 6901 JSON Pointer
    (``/realm_access/roles``). ``role_ranks`` (role -> rank) replaces the
    profile's ranking; unknown roles rank 0.
    """

    profile: str = "jwtedge"
    organizations: str = "organizations"
    projects: str = "projects"
    scope: str = "scope"
    active_org: str = "active_org"
    roles: str | None = None
    permissions: str | None = None
    role_ranks: dict[str, int] | None = None

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        from .profiles import get_profile  # the profiles import this module

        try:
            get_profile(value)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        return value

    @field_validator("roles", "permissions")
    @classmethod
    def _claim_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from .profiles import parse_claim_path

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


class AppConfig(BaseSettings):
    """The app's whole configuration (``APP_CONFIG_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="APP_CONFIG_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        arbitrary_types_allowed=True,
    )

    auth: AuthSettings
    endpoints: EndpointsSettings = Field(default_factory=EndpointsSettings)
    keys: KeysSettings = Field(default_factory=KeysSettings)
    cookies: CookiesSettings = Field(default_factory=CookiesSettings)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    claims: ClaimsSettings = Field(default_factory=ClaimsSettings)

    def __init__(self, **values: Any) -> None:
        if "_env_file" not in values:
            values["_env_file"] = os.environ.get("APP_CONFIG_ENV_FILE", ".env")
        try:
            super().__init__(**values)
        except SettingsError as exc:
            # e.g. APP_CONFIG_KEYS=nope: a section given as a non-JSON string.
            raise ConfigInvalid(
                f"invalid configuration: {_settings_error_name(exc)}: a section must be a "
                "JSON object (or use nested names like APP_CONFIG_AUTH__ISSUER)",
                problems=[_settings_error_name(exc)],
            ) from None
        except ValidationError as exc:
            problems = [_describe(error) for error in exc.errors(include_input=False)]
            # `from None`: the pydantic error may still reference raw input.
            raise ConfigInvalid(
                "invalid configuration: " + "; ".join(problems), problems=problems
            ) from None
        problems = self._profile_problems()
        if problems:
            raise ConfigInvalid("invalid configuration: " + "; ".join(problems), problems=problems)

    def _profile_problems(self) -> list[str]:
        """Rules that need both ``auth`` and the profile in ``claims``."""
        from .profiles import get_profile  # the profiles import this module

        auth = self.auth
        profile = get_profile(self.claims.profile)
        tenants = frozenset(auth.tenants or ())
        # Never silently unbound: "none" is the only way to check no audience,
        # and an audience given with it would be ignored, so both is an error.
        if auth.audience_claim == "none" and auth.audience is not None:
            return [
                "APP_CONFIG_AUTH__AUDIENCE: auth.audience is set but auth.audience_claim=none "
                "checks no audience: remove one of them"
            ]
        if auth.audience_claim != "none" and auth.audience is None:
            return [
                "APP_CONFIG_AUTH__AUDIENCE: Field required (or auth.audience_claim=none for an "
                "issuer whose tokens carry no audience)"
            ]
        problems = [
            f"APP_CONFIG_{setting.upper().replace('.', '__')}: {message}"
            for setting, message in profile.check_config(
                issuer=auth.issuer, tenants=tenants, client_id=auth.client_id
            )
        ]
        if "{tenantid}" in auth.issuer and not problems and profile.name != "entra":
            problems.append(
                "APP_CONFIG_AUTH__ISSUER: only the entra profile accepts a {tenantid} issuer"
            )
        if auth.tenants is not None and profile.name != "entra":
            problems.append(
                "APP_CONFIG_AUTH__TENANTS: only the entra profile reads tenants (the tid claim)"
            )
        audience_claim = auth.audience_claim or profile.audience_claim
        if (
            audience_claim == "aud"
            and auth.client_id is not None
            and auth.client_id in auth.audiences
            and not auth.require_at_jwt
            and not auth.access_claim
            and not profile.tells_tokens_apart
        ):
            problems.append(
                "APP_CONFIG_AUTH__AUDIENCE: auth.audience contains auth.client_id, so an ID "
                "token would pass as an access token: set auth.require_at_jwt or "
                "auth.access_claim"
            )
        return problems

    def endpoint(
        self, name: Literal["token", "authorization", "end_session", "revocation"]
    ) -> str | None:
        """An issuer endpoint: the explicit setting, else the bake metadata."""
        explicit: str | None = getattr(self.endpoints, name)
        if explicit:
            return explicit
        meta = self.auth.jwks_meta
        if meta is None:
            return None
        value: str | None = getattr(meta, f"{name}_endpoint")
        return value

    @property
    def jwks_uri(self) -> str | None:
        """Where the remote key layer fetches keys (explicit, then baked)."""
        if self.endpoints.jwks_uri:
            return self.endpoints.jwks_uri
        return self.auth.jwks_meta.jwks_uri if self.auth.jwks_meta else None


def _settings_error_name(exc: SettingsError) -> str:
    match = re.search(r'field "([a-z_]+)"', str(exc))
    return f"APP_CONFIG_{match.group(1).upper()}" if match else "APP_CONFIG"


def _describe(error: Any) -> str:
    """``APP_CONFIG_AUTH__LEEWAY: <message>`` with no input value."""
    # Walk the models along the error's location: pydantic adds union branch
    # names ("str", "list[str]") and validator names that are not settings.
    names: list[str] = []
    model: Any = AppConfig
    for part in error.get("loc", ()):
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            if error.get("type") == "extra_forbidden" and isinstance(part, str):
                names.append(part)  # a misspelt setting: name what was given
            continue
        names.append(part)
        model = fields[part].annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = None
    setting = "APP_CONFIG_" + "__".join(name.upper() for name in names) if names else "APP_CONFIG"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return f"{setting}: {message}"
