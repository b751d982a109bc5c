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
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .config_sections import (
    AuthSettings,
    BakeMeta,
    CacheSettings,
    ClaimsSettings,
    CookiesSettings,
    EndpointsSettings,
    HttpSettings,
    KeysSettings,
    LoginSettings,
    RefreshSettings,
    WebSocketSettings,
)
from .config_types import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    MIN_HS_SECRET_BYTES,
    STYTCH_ISSUER,
    parse_duration,
)
from .errors import ConfigInvalid

# The sections and value types live in config_sections.py and config_types.py;
# they are re-exported so every config name imports from here.
__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "MIN_HS_SECRET_BYTES",
    "STYTCH_ISSUER",
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
        """Rules that need the issuer profiles: its name, and ``auth`` against it."""
        # Imported here: the profiles import the session, which imports the sections.
        from .profiles import get_profile

        try:
            profile = get_profile(self.claims.profile)
        except KeyError as exc:
            return [f"APP_CONFIG_CLAIMS__PROFILE: {exc.args[0]}"]
        auth = self.auth
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
