"""AppConfig (verifier/config.py): sources, nested names, defaults, validation, secrets.

Every test runs with no APP_CONFIG_* variable from the real environment and
in an empty working directory, so a developer's .env never leaks in.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from verifier.config import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    AppConfig,
    BakeMeta,
    parse_duration,
)
from verifier.errors import ConfigInvalid
from verifier.jwks import JWKSet, parse_jwks
from verifier.testing import DevIssuer

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "app.env.example"
ISSUER = "https://id.example.com"

# Distinctive values, so a leak anywhere is found by a substring search.
SECRETS = {
    "APP_CONFIG_AUTH__HS_SECRET": "hs-SECRET-value-0123456789abcdef-0123456789",
    "APP_CONFIG_AUTH__CLIENT_SECRET": "client-SECRET-value-7f3a",
    "APP_CONFIG_REFRESH__REDIS_URL": "redis://:redis-SECRET-pw@cache.internal:6379/0",
    "APP_CONFIG_REFRESH__STORE_KEY": "store-SECRET-key-91b2",
    "APP_CONFIG_LOGIN__STATE_KEY": "state-SECRET-key-c0de",
}
SECRET_FIELDS = (
    ("auth", "hs_secret"),
    ("auth", "client_secret"),
    ("refresh", "redis_url"),
    ("refresh", "store_key"),
    ("login", "state_key"),
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("APP_CONFIG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment with the two required settings present."""
    monkeypatch.setenv("APP_CONFIG_AUTH__ISSUER", ISSUER)
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "api")
    return monkeypatch


def invalid(**values: Any) -> ConfigInvalid:
    with pytest.raises(ConfigInvalid) as info:
        AppConfig(**values)
    return info.value


def problems_of(exc: ConfigInvalid) -> list[str]:
    problems: list[str] = exc.context["problems"]
    return problems


def everything_printed(exc: BaseException) -> str:
    """Everything an operator could see of an error: str, repr, context, traceback."""
    parts = [str(exc), repr(exc), *traceback.format_exception(exc)]
    if isinstance(exc, ConfigInvalid):
        parts += [exc.message, *problems_of(exc), json.dumps(exc.to_dict())]
    return "\n".join(parts)


# -- sources -------------------------------------------------------------------


def test_settings_are_read_from_environment_variables(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__CLIENT_ID", "web")
    env.setenv("APP_CONFIG_CACHE__SIZE", "0")

    config = AppConfig()

    assert config.auth.issuer == ISSUER
    assert config.auth.audience == "api"
    assert config.auth.client_id == "web"
    assert config.cache.size == 0


def test_env_file_named_by_app_config_env_file_is_read(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    env_file = isolated / "conf" / "app.env"
    env_file.parent.mkdir()
    env_file.write_text(
        f"APP_CONFIG_AUTH__ISSUER={ISSUER}\n"
        "APP_CONFIG_AUTH__AUDIENCE=api\n"
        "APP_CONFIG_KEYS__REMOTE=never\n"
    )
    monkeypatch.setenv("APP_CONFIG_ENV_FILE", str(env_file))

    config = AppConfig()

    assert config.auth.issuer == ISSUER
    assert config.keys.remote == "never"


def test_dot_env_in_the_working_directory_is_read_by_default(isolated: Path) -> None:
    (isolated / ".env").write_text(
        f"APP_CONFIG_AUTH__ISSUER={ISSUER}\nAPP_CONFIG_AUTH__AUDIENCE=dotenv-api\n"
    )

    assert AppConfig().auth.audience == "dotenv-api"


def test_env_file_named_by_app_config_env_file_replaces_dot_env(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    (isolated / ".env").write_text(f"APP_CONFIG_AUTH__ISSUER={ISSUER}\n")
    other = isolated / "other.env"
    other.write_text("APP_CONFIG_AUTH__AUDIENCE=api\n")
    monkeypatch.setenv("APP_CONFIG_ENV_FILE", str(other))

    exc = invalid()

    assert "APP_CONFIG_AUTH__ISSUER" in str(exc)


def test_environment_wins_over_the_env_file(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    (isolated / ".env").write_text(
        f"APP_CONFIG_AUTH__ISSUER={ISSUER}\n"
        "APP_CONFIG_AUTH__AUDIENCE=from-file\n"
        "APP_CONFIG_AUTH__LEEWAY=5\n"
    )
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "from-env")

    config = AppConfig()

    assert config.auth.audience == "from-env"
    assert config.auth.leeway == 5.0


def test_init_arguments_win_over_the_environment(env: pytest.MonkeyPatch) -> None:
    config = AppConfig(auth={"issuer": "https://other.example", "audience": "x"})

    assert config.auth.issuer == "https://other.example"


def test_unknown_top_level_variables_are_ignored(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_SOMETHING_ELSE", "1")

    AppConfig()


# -- nested names and value shapes ---------------------------------------------


def test_nested_duration_with_a_unit(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_KEYS__COOLDOWN", "45s")
    env.setenv("APP_CONFIG_KEYS__STALE_IF_ERROR", "12h")
    env.setenv("APP_CONFIG_COOKIES__REFRESH_MAX_AGE", "7d")
    env.setenv("APP_CONFIG_AUTH__LEEWAY", "90")

    config = AppConfig()

    assert config.keys.cooldown == 45.0
    assert config.keys.stale_if_error == 12 * 3600.0
    assert config.cookies.refresh_max_age == 7 * 86400.0
    assert config.auth.leeway == 90.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_durations_take_seconds_or_a_unit(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["/healthz,/internal/", '["/healthz", "/internal/"]'])
def test_exclude_paths_take_a_json_list_or_a_comma_list(
    env: pytest.MonkeyPatch, value: str
) -> None:
    env.setenv("APP_CONFIG_HTTP__EXCLUDE_PATHS", value)

    assert AppConfig().http.exclude_paths == ["/healthz", "/internal"]


def test_api_prefixes_and_allowed_origins_take_comma_lists(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_HTTP__API_PREFIXES", "/api, /v2")
    env.setenv("APP_CONFIG_WEBSOCKET__ALLOWED_ORIGINS", "https://a.example,https://b.example")

    config = AppConfig()

    assert config.http.api_prefixes == ["/api", "/v2"]
    assert config.websocket.allowed_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("value", "audience", "audiences"),
    [
        ("api", "api", ("api",)),
        (
            '["api", "https://api.example"]',
            ["api", "https://api.example"],
            ("api", "https://api.example"),
        ),
    ],
)
def test_audience_is_a_string_or_a_json_list(
    env: pytest.MonkeyPatch, value: str, audience: object, audiences: tuple[str, ...]
) -> None:
    env.setenv("APP_CONFIG_AUTH__AUDIENCE", value)

    config = AppConfig()

    assert config.auth.audience == audience
    assert config.auth.audiences == audiences


@pytest.mark.parametrize("value", ["RS256,ES256", '["RS256", "ES256"]'])
def test_algorithms_take_a_json_list_or_a_comma_list(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("APP_CONFIG_AUTH__ALGORITHMS", value)

    config = AppConfig()

    assert config.auth.algorithms == ["RS256", "ES256"]
    assert config.auth.allowed_algorithms == frozenset({"RS256", "ES256"})


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False)])
def test_booleans_are_read_from_strings(
    env: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    env.setenv("APP_CONFIG_AUTH__REQUIRE_AT_JWT", value)
    env.setenv("APP_CONFIG_COOKIES__FORWARD", value)

    config = AppConfig()

    assert config.auth.require_at_jwt is expected
    assert config.cookies.forward is expected


# -- defaults (DESIGN.md, Config) ------------------------------------------------


def test_every_default_matches_the_design_table(env: pytest.MonkeyPatch) -> None:
    config = AppConfig()
    auth = config.auth

    assert (auth.client_id, auth.client_secret, auth.jwks, auth.jwks_meta) == (None,) * 4
    assert auth.algorithms is None
    assert auth.allowed_algorithms == frozenset(ASYMMETRIC_ALGORITHMS)
    assert {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"} <= auth.allowed_algorithms
    assert {"ES256", "ES384", "ES512", "Ed25519", "EdDSA"} <= auth.allowed_algorithms
    assert auth.leeway == 30.0
    assert auth.max_token_bytes == 8 * 1024
    assert auth.require_at_jwt is False
    assert auth.access_claim is None
    assert auth.rsa_alg == "RS256"
    assert auth.hs_secret is None
    assert (auth.audience_claim, auth.tenants) == (None, None)

    assert config.endpoints.model_dump() == {
        "token": None,
        "authorization": None,
        "end_session": None,
        "revocation": None,
        "jwks_uri": None,
    }
    assert config.keys.model_dump() == {
        "remote": "unknown-kid",
        "cooldown": 30.0,
        "timeout": 5.0,
        "stale_if_error": 24 * 3600.0,
    }
    assert config.cookies.model_dump() == {
        "access": "jwtedge_access",
        "id": "jwtedge_id",
        "refresh": "jwtedge_refresh",
        "secure": "auto",
        "same_site": "lax",
        "domain": None,
        "path": "/",
        "refresh_max_age": 30 * 86400.0,
        "max_chunks": 4,
        "forward": False,
        "host_prefix": "auto",
    }
    assert config.refresh.model_dump() == {
        "enabled": True,
        "skew": 30.0,
        "grace": 10.0,
        "timeout": 10.0,
        "redis_url": None,
        "store_key": None,
    }
    assert config.cache.size == 10_000
    assert config.http.model_dump() == {
        "exclude_paths": ["/healthz", "/readyz", "/metrics", "/static", "/assets"],
        "api_prefixes": ["/api"],
        "login_path": "/auth/login",
        "forward_auth_path": "/auth/verify",
        "strip_headers": [],
    }
    assert config.login.model_dump() == {
        "redirect_uri": None,
        "scopes": "openid profile email offline_access",
        "post_logout_redirect": None,
        "state_key": None,
        "prompt": None,
        "resource": [],
        "extra_params": {},
    }
    # Empty means same origin (scheme, host and port).
    assert config.websocket.model_dump() == {"allowed_origins": [], "close_code": 4401}
    assert config.claims.model_dump() == {
        "profile": "jwtedge",
        "organizations": "organizations",
        "projects": "projects",
        "scope": "scope",
        "active_org": "active_org",
        "roles": None,
        "permissions": None,
        "role_ranks": None,
    }
    assert config.endpoint("token") is None
    assert config.jwks_uri is None


# -- invalid values name the setting ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_CONFIG_AUTH__LEEWAY", "soon"),
        ("APP_CONFIG_AUTH__LEEWAY", "-5s"),
        ("APP_CONFIG_AUTH__LEEWAY", "nan"),
        ("APP_CONFIG_KEYS__REMOTE", "sometimes"),
        ("APP_CONFIG_KEYS__COOLDOWN", "a while"),
        ("APP_CONFIG_COOKIES__SAME_SITE", "sideways"),
        ("APP_CONFIG_COOKIES__SECURE", "yes"),
        ("APP_CONFIG_COOKIES__ACCESS", "bad name;"),
        ("APP_CONFIG_COOKIES__MAX_CHUNKS", "0"),
        ("APP_CONFIG_AUTH__HS_SECRET", "too-short"),
        ("APP_CONFIG_AUTH__JWKS", "not json"),
        ("APP_CONFIG_AUTH__JWKS", '{"keys": []}'),
        ("APP_CONFIG_AUTH__JWKS", '{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}'),
        ("APP_CONFIG_AUTH__JWKS_META", "not json"),
        ("APP_CONFIG_AUTH__JWKS_META", '{"jwks_uri": "https://id.example.com/jwks"}'),
        ("APP_CONFIG_AUTH__ISSUER", "not-a-url"),
        ("APP_CONFIG_AUTH__ISSUER", "ftp://id.example.com"),
        ("APP_CONFIG_AUTH__AUDIENCE", "[]"),
        ("APP_CONFIG_AUTH__AUDIENCE", '["api", ""]'),
        ("APP_CONFIG_AUTH__ALGORITHMS", "none"),
        ("APP_CONFIG_AUTH__ALGORITHMS", "RS256,none"),
        ("APP_CONFIG_AUTH__ALGORITHMS", '["RS256", "none"]'),
        ("APP_CONFIG_AUTH__ALGORITHMS", "ES256K"),
        ("APP_CONFIG_AUTH__RSA_ALG", "ES256"),
        ("APP_CONFIG_AUTH__MAX_TOKEN_BYTES", "10"),
        ("APP_CONFIG_AUTH__REQUIRE_AT_JWT", "maybe"),
        ("APP_CONFIG_HTTP__EXCLUDE_PATHS", "healthz"),
        ("APP_CONFIG_HTTP__EXCLUDE_PATHS", '["/a"'),
        ("APP_CONFIG_CACHE__SIZE", "-1"),
        ("APP_CONFIG_WEBSOCKET__CLOSE_CODE", "1000"),
        ("APP_CONFIG_AUTH__ISSUR", "typo"),
    ],
)
def test_invalid_value_is_refused_naming_the_setting(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv(name, value)

    exc = invalid()

    assert exc.code == "config_invalid"
    assert name in str(exc)
    # The setting itself, or a member inside it (APP_CONFIG_AUTH__JWKS_META__ISSUER).
    named = re.compile(rf"^{name}(__[A-Z0-9_]+)?: ")
    assert any(named.match(problem) for problem in problems_of(exc))


def test_missing_issuer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "api")

    assert "APP_CONFIG_AUTH__ISSUER" in str(invalid())


def test_missing_audience_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CONFIG_AUTH__ISSUER", ISSUER)

    assert "APP_CONFIG_AUTH__AUDIENCE" in str(invalid())


def test_missing_auth_section_is_named() -> None:
    assert "APP_CONFIG_AUTH" in str(invalid())


def test_every_problem_is_reported_at_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__LEEWAY", "soon")
    env.setenv("APP_CONFIG_KEYS__REMOTE", "sometimes")

    exc = invalid()

    assert len(problems_of(exc)) == 2


def test_hs_algorithms_without_hs_secret_are_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__ALGORITHMS", "RS256,HS256")

    exc = invalid()

    assert "APP_CONFIG_AUTH" in str(exc)
    assert "hs_secret" in str(exc)


@pytest.mark.parametrize("name", ["APP_CONFIG_KEYS", "APP_CONFIG_AUTH"])
def test_malformed_section_value_is_config_invalid(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "nope")

    assert name in str(invalid())


def test_problems_name_only_real_settings(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__AUDIENCE", "[5.5]")

    exc = invalid()

    named = {problem.split(":", 1)[0] for problem in problems_of(exc)}
    assert named == {"APP_CONFIG_AUTH__AUDIENCE"}


# -- secrets never printed -------------------------------------------------------


def test_secrets_are_secret_str_and_never_printed(env: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        env.setenv(name, value)

    config = AppConfig()
    printed = "\n".join(
        [
            repr(config),
            str(config),
            config.model_dump_json(),
            str(config.model_dump()),
            repr(config.auth),
            repr(config.refresh),
            repr(config.login),
        ]
    )

    for section, field in SECRET_FIELDS:
        assert isinstance(getattr(getattr(config, section), field), SecretStr)
    for value in SECRETS.values():
        assert value not in printed
    assert "redis-SECRET-pw" not in printed
    # The values are still there for the code that needs them.
    assert config.auth.hs_secret is not None
    assert config.auth.hs_secret.get_secret_value() == SECRETS["APP_CONFIG_AUTH__HS_SECRET"]


def test_secrets_are_not_echoed_when_another_setting_is_invalid(
    env: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        env.setenv(name, value)
    env.setenv("APP_CONFIG_AUTH__LEEWAY", "soon")

    exc = invalid()

    printed = everything_printed(exc)
    assert "APP_CONFIG_AUTH__LEEWAY" in printed
    for value in SECRETS.values():
        assert value not in printed


def test_secret_that_is_itself_invalid_is_not_echoed(env: pytest.MonkeyPatch) -> None:
    short = "tiny-SECRET-31bytes-xxxxxxxxxxx"
    assert len(short.encode()) == 31
    env.setenv("APP_CONFIG_AUTH__HS_SECRET", short)

    exc = invalid()

    printed = everything_printed(exc)
    assert "APP_CONFIG_AUTH__HS_SECRET" in printed
    assert "32 bytes" in printed
    assert short not in printed


def test_hs_secret_of_exactly_32_bytes_is_accepted(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__HS_SECRET", "s" * 32)

    assert AppConfig().auth.hs_secret is not None


def test_private_key_in_jwks_is_refused_without_echoing_it(
    env: pytest.MonkeyPatch, issuer: DevIssuer
) -> None:
    public = issuer.jwks()["keys"][0]
    leaked = {**public, "d": "private-SECRET-exponent"}
    env.setenv("APP_CONFIG_AUTH__JWKS", json.dumps({"keys": [leaked]}))

    exc = invalid()

    printed = everything_printed(exc)
    assert "APP_CONFIG_AUTH__JWKS" in printed
    assert "private-SECRET-exponent" not in printed


# -- audience separation ----------------------------------------------------------


@pytest.mark.parametrize("audience", ["web", '["api", "web"]'])
def test_audience_containing_client_id_is_refused(env: pytest.MonkeyPatch, audience: str) -> None:
    env.setenv("APP_CONFIG_AUTH__AUDIENCE", audience)
    env.setenv("APP_CONFIG_AUTH__CLIENT_ID", "web")

    exc = invalid()

    assert "APP_CONFIG_AUTH" in str(exc)
    assert "client_id" in str(exc)


@pytest.mark.parametrize(
    ("name", "value"),
    [("APP_CONFIG_AUTH__REQUIRE_AT_JWT", "true"), ("APP_CONFIG_AUTH__ACCESS_CLAIM", "scp")],
)
def test_audience_containing_client_id_is_allowed_with_access_token_separation(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv("APP_CONFIG_AUTH__AUDIENCE", '["api", "web"]')
    env.setenv("APP_CONFIG_AUTH__CLIENT_ID", "web")
    env.setenv(name, value)

    assert AppConfig().auth.client_id == "web"


def test_client_id_outside_the_audience_is_fine(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__CLIENT_ID", "web")

    assert AppConfig().auth.audiences == ("api",)


# -- the bake: jwks and jwks_meta --------------------------------------------------


def test_jwks_json_string_parses_into_a_jwkset(env: pytest.MonkeyPatch, issuer: DevIssuer) -> None:
    baked = parse_jwks(issuer.jwks())
    env.setenv("APP_CONFIG_AUTH__JWKS", baked.canonical_json())

    jwks = AppConfig().auth.jwks

    assert isinstance(jwks, JWKSet)
    assert jwks.canonical_json() == baked.canonical_json()
    assert jwks.kids == baked.kids


def test_empty_jwks_means_nothing_baked(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__JWKS", "")
    env.setenv("APP_CONFIG_AUTH__JWKS_META", "")

    config = AppConfig()

    assert config.auth.jwks is None
    assert config.auth.jwks_meta is None


def test_jwks_meta_json_parses_into_bake_meta(env: pytest.MonkeyPatch) -> None:
    meta = {
        "issuer": ISSUER,
        "jwks_uri": f"{ISSUER}/jwks",
        "token_endpoint": f"{ISSUER}/token",
        "authorization_endpoint": f"{ISSUER}/authorize",
        "end_session_endpoint": f"{ISSUER}/logout",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "baked_at": "2025-01-02T03:04:05Z",
        "sha256": "ab" * 32,
        "kids": ["k1", "k2"],
        "future_member": "ignored",
    }
    env.setenv("APP_CONFIG_AUTH__JWKS_META", json.dumps(meta))

    parsed = AppConfig().auth.jwks_meta

    assert isinstance(parsed, BakeMeta)
    assert parsed.token_endpoint == f"{ISSUER}/token"
    assert parsed.baked_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.kids == ["k1", "k2"]
    assert parsed.sha256 == "ab" * 32


def test_endpoint_prefers_the_explicit_setting_over_the_bake(env: pytest.MonkeyPatch) -> None:
    meta = {
        "issuer": ISSUER,
        "jwks_uri": f"{ISSUER}/baked-jwks",
        "token_endpoint": f"{ISSUER}/baked-token",
        "authorization_endpoint": f"{ISSUER}/baked-authorize",
    }
    env.setenv("APP_CONFIG_AUTH__JWKS_META", json.dumps(meta))
    env.setenv("APP_CONFIG_ENDPOINTS__TOKEN", f"{ISSUER}/explicit-token")
    env.setenv("APP_CONFIG_ENDPOINTS__JWKS_URI", f"{ISSUER}/explicit-jwks")

    config = AppConfig()

    assert config.endpoint("token") == f"{ISSUER}/explicit-token"
    assert config.endpoint("authorization") == f"{ISSUER}/baked-authorize"
    assert config.endpoint("end_session") is None
    assert config.jwks_uri == f"{ISSUER}/explicit-jwks"


def test_jwks_uri_falls_back_to_the_bake(env: pytest.MonkeyPatch) -> None:
    env.setenv(
        "APP_CONFIG_AUTH__JWKS_META", json.dumps({"issuer": ISSUER, "jwks_uri": "https://j"})
    )

    assert AppConfig().jwks_uri == "https://j"


def test_config_with_a_bake_serializes_to_json(env: pytest.MonkeyPatch, issuer: DevIssuer) -> None:
    env.setenv("APP_CONFIG_AUTH__JWKS", json.dumps(issuer.jwks()))

    dumped = json.loads(AppConfig().model_dump_json())

    assert dumped["auth"]["jwks"]["keys"]


# -- algorithms --------------------------------------------------------------------


def test_allowed_algorithms_exclude_hs_by_default(env: pytest.MonkeyPatch) -> None:
    allowed = AppConfig().auth.allowed_algorithms

    assert not allowed & set(HMAC_ALGORITHMS)
    assert "none" not in allowed


def test_allowed_algorithms_include_hs_when_hs_secret_is_set(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__HS_SECRET", "s" * 32)

    allowed = AppConfig().auth.allowed_algorithms

    assert allowed == frozenset(ASYMMETRIC_ALGORITHMS) | frozenset(HMAC_ALGORITHMS)


def test_explicit_algorithms_win_over_the_default(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_CONFIG_AUTH__HS_SECRET", "s" * 32)
    env.setenv("APP_CONFIG_AUTH__ALGORITHMS", "HS256")

    assert AppConfig().auth.allowed_algorithms == frozenset({"HS256"})


# -- config/app.env.example cannot drift ---------------------------------------------

_SETTING_LINE = re.compile(r"^(#\s*)?(APP_CONFIG_[A-Z0-9_]+)=(.*)$")


def _section_fields() -> set[str]:
    names = set()
    for section, field in AppConfig.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel), section
        for name in model.model_fields:
            names.add(f"APP_CONFIG_{section.upper()}__{name.upper()}")
    return names


def _example_settings() -> dict[str, tuple[bool, str]]:
    """name -> (active, value) for every setting line of the example."""
    settings: dict[str, tuple[bool, str]] = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _SETTING_LINE.match(line)
        if match:
            assert match.group(2) not in settings, f"{match.group(2)} appears twice"
            settings[match.group(2)] = (match.group(1) is None, match.group(3))
    return settings


def test_example_env_file_lists_every_setting_of_every_section() -> None:
    listed = set(_example_settings())

    assert _section_fields() - listed == set()
    assert listed - _section_fields() == set(), "the example names settings that do not exist"


def test_example_env_file_explains_each_setting_on_the_line_above() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()

    for index, line in enumerate(lines):
        if _SETTING_LINE.match(line):
            above = lines[index - 1]
            assert above.startswith("# ")
            assert not _SETTING_LINE.match(above), f"no meaning above {line!r}"


def test_example_env_file_leaves_required_and_secret_settings_commented_out() -> None:
    settings = _example_settings()
    required = {"APP_CONFIG_AUTH__ISSUER", "APP_CONFIG_AUTH__AUDIENCE"}
    secrets = {f"APP_CONFIG_{section.upper()}__{field.upper()}" for section, field in SECRET_FIELDS}

    for name in required | secrets:
        active, _ = settings[name]
        assert not active, name
    for name in secrets:
        assert settings[name][1] == "", f"{name} must not carry an example secret"


def test_example_env_file_values_are_the_defaults(env: pytest.MonkeyPatch) -> None:
    from_example = AppConfig(_env_file=str(EXAMPLE))
    defaults = AppConfig(_env_file=None)

    assert from_example == defaults
