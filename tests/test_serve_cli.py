"""``jwtedge serve`` and ``jwtedge demo`` through CliRunner (no server is started).

``serve`` validates before it calls uvicorn; the ``run_server`` seam of
:class:`~deploy.cli.Seams` captures what uvicorn would have been given.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from typer.testing import CliRunner, Result

from deploy.cli import Seams, app
from deploy.run import APP_FACTORY, RedactQuery, log_config, serve_problem
from verifier.app import app_from_env
from verifier.config import AppConfig
from verifier.testing import DevIssuer

runner = CliRunner()
ISSUER = "https://issuer.test"
SECRET = "client-secret-that-must-never-be-printed"
STATE_KEY = "state-key-that-must-never-be-printed-0123456789"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class Captured:
    """Stands in for uvicorn.run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, target: Any, **options: Any) -> None:
        self.calls.append((target, options))


def env_file(tmp_path: Path, issuer: DevIssuer | None, **settings: str) -> Path:
    """A dotenv file: the issuer's bake (when given) plus ``settings``."""
    lines = [f"APP_CONFIG_AUTH__ISSUER={ISSUER}", "APP_CONFIG_AUTH__AUDIENCE=api"]
    if issuer is not None:
        lines.append(f"APP_CONFIG_AUTH__JWKS='{json.dumps(issuer.jwks())}'")
    lines += [f"APP_CONFIG_{name.upper()}={value}" for name, value in settings.items()]
    path = tmp_path / "app.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(*args: str, capture: Captured | None = None) -> Result:
    return runner.invoke(app, ["serve", *args], obj=Seams(run_server=capture or Captured()))


@pytest.fixture(scope="module")
def dev() -> DevIssuer:
    return DevIssuer(issuer=ISSUER)


# -- refusals --------------------------------------------------------------------------


def test_serve_refuses_an_invalid_config_naming_the_setting_without_secrets(
    tmp_path: Path, dev: DevIssuer
) -> None:
    path = env_file(
        tmp_path, dev, auth__leeway="forever", auth__client_secret=SECRET, auth__client_id="web"
    )
    capture = Captured()

    result = serve("--env-file", str(path), capture=capture)

    assert result.exit_code == 2
    assert "APP_CONFIG_AUTH__LEEWAY" in result.stderr
    assert SECRET not in result.output
    assert "forever" not in result.output
    assert not capture.calls


def test_serve_refuses_without_a_key_source(tmp_path: Path) -> None:
    path = env_file(tmp_path, None, keys__remote="never")
    capture = Captured()

    result = serve("--env-file", str(path), capture=capture)

    assert result.exit_code == 2
    assert "no key source" in result.stderr
    assert "jwtedge bake" in result.stderr
    assert not capture.calls


def test_serve_refuses_several_workers_with_refresh_and_no_shared_store(
    tmp_path: Path, dev: DevIssuer
) -> None:
    path = env_file(
        tmp_path,
        dev,
        auth__client_id="web",
        auth__client_secret=SECRET,
        endpoints__token=f"{ISSUER}/token",
    )
    capture = Captured()

    result = serve("--env-file", str(path), "--workers", "2", capture=capture)

    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "--workers 2" in message
    assert "APP_CONFIG_REFRESH__REDIS_URL" in message
    assert "same rotating refresh token" in message
    assert SECRET not in result.output
    assert not capture.calls


def test_serve_refuses_a_redis_url_without_a_store_key(tmp_path: Path, dev: DevIssuer) -> None:
    redis = "redis://:hunter2-password@cache:6379/0"
    path = env_file(
        tmp_path,
        dev,
        auth__client_id="web",
        endpoints__token=f"{ISSUER}/token",
        refresh__redis_url=redis,
    )
    capture = Captured()

    result = serve("--env-file", str(path), "--workers", "3", capture=capture)

    assert result.exit_code == 2
    assert "APP_CONFIG_REFRESH__STORE_KEY" in result.stderr
    assert "hunter2" not in result.output
    assert not capture.calls


def test_serve_runs_several_workers_on_a_shared_refresh_store(
    tmp_path: Path, dev: DevIssuer
) -> None:
    path = env_file(
        tmp_path,
        dev,
        auth__client_id="web",
        endpoints__token=f"{ISSUER}/token",
        refresh__redis_url="redis://:hunter2-password@cache:6379/0",
        refresh__store_key="s" * 40,
    )
    capture = Captured()

    result = serve("--env-file", str(path), "--workers", "3", capture=capture)

    assert result.exit_code == 0, result.output
    ((target, options),) = capture.calls
    assert (target, options["workers"], options["factory"]) == (APP_FACTORY, 3, True)
    assert "hunter2" not in result.output


def test_serve_refuses_login_without_a_state_key(tmp_path: Path, dev: DevIssuer) -> None:
    path = env_file(
        tmp_path,
        dev,
        auth__client_id="web",
        auth__client_secret=SECRET,
        endpoints__authorization=f"{ISSUER}/authorize",
        endpoints__token=f"{ISSUER}/token",
    )

    result = serve("--env-file", str(path))

    assert result.exit_code == 2
    assert "APP_CONFIG_LOGIN__STATE_KEY" in result.stderr
    assert SECRET not in result.output


def test_serve_refuses_a_missing_env_file(tmp_path: Path) -> None:
    result = serve("--env-file", str(tmp_path / "nope.env"))

    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_serve_refuses_an_unknown_log_level(tmp_path: Path, dev: DevIssuer) -> None:
    result = serve("--env-file", str(env_file(tmp_path, dev)), "--log-level", "loud")

    assert result.exit_code == 2


def test_serve_refuses_an_out_of_range_port() -> None:
    assert serve("--port", "70000").exit_code == 2


# -- starting -----------------------------------------------------------------------------


def test_serve_passes_the_app_and_options_to_uvicorn(tmp_path: Path, dev: DevIssuer) -> None:
    path = env_file(
        tmp_path,
        dev,
        auth__client_id="web",
        endpoints__authorization=f"{ISSUER}/authorize",
        endpoints__token=f"{ISSUER}/token",
        login__state_key=STATE_KEY,
    )
    capture = Captured()

    result = serve(
        "--env-file",
        str(path),
        "--host",
        "0.0.0.0",
        "--port",
        "9001",
        "--no-proxy-headers",
        "--forwarded-allow-ips",
        "10.0.0.1,10.0.0.2",
        "--log-level",
        "debug",
        capture=capture,
    )

    assert result.exit_code == 0, result.output
    ((target, options),) = capture.calls
    assert isinstance(target, Starlette)
    assert target.state.edge.login.enabled
    assert options["host"] == "0.0.0.0"
    assert options["port"] == 9001
    assert options["workers"] == 1
    assert options["proxy_headers"] is False
    assert options["forwarded_allow_ips"] == "10.0.0.1,10.0.0.2"
    assert options["log_level"] == "debug"
    assert "redact_query" in options["log_config"]["filters"]
    assert "factory" not in options
    assert STATE_KEY not in result.output


def test_serve_defaults(tmp_path: Path, dev: DevIssuer) -> None:
    capture = Captured()

    result = serve("--env-file", str(env_file(tmp_path, dev)), capture=capture)

    assert result.exit_code == 0, result.output
    ((_target, options),) = capture.calls
    assert (options["host"], options["port"], options["workers"]) == ("127.0.0.1", 8000, 1)
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] is None
    assert options["log_level"] == "info"


def test_serve_with_several_workers_uses_the_factory(tmp_path: Path, dev: DevIssuer) -> None:
    path = env_file(tmp_path, dev, auth__client_id="web", refresh__enabled="false")
    capture = Captured()

    result = serve("--env-file", str(path), "--workers", "4", capture=capture)

    assert result.exit_code == 0, result.output
    ((target, options),) = capture.calls
    assert target == APP_FACTORY == "verifier.app:app_from_env"
    assert options["factory"] is True
    assert options["workers"] == 4
    assert options["env_file"] == str(path)


def test_the_factory_builds_the_app_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, dev: DevIssuer
) -> None:
    monkeypatch.setenv("APP_CONFIG_AUTH__ISSUER", ISSUER)
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "api")
    monkeypatch.setenv("APP_CONFIG_AUTH__JWKS", json.dumps(dev.jwks()))

    built = app_from_env()

    assert isinstance(built, Starlette)
    assert built.state.edge.config.auth.issuer == ISSUER


def test_serve_help_lists_the_options() -> None:
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--workers",
        "--proxy-headers",
        "--no-proxy-headers",
        "--forwarded-allow-ips",
        "--log-level",
        "--env-file",
    ):
        assert option in result.output


def test_demo_help_lists_the_options() -> None:
    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    for option in ("--port", "--issuer-port", "--log-level"):
        assert option in result.output


# -- the pieces -----------------------------------------------------------------------------


def test_serve_problem_accepts_an_hs_secret_as_a_key_source() -> None:
    config = AppConfig(
        _env_file=None,
        auth={"issuer": ISSUER, "audience": "api", "hs_secret": "h" * 40},
        keys={"remote": "never"},
    )

    assert serve_problem(config, workers=1) is None


def test_serve_problem_accepts_runtime_keys_with_nothing_baked() -> None:
    config = AppConfig(_env_file=None, auth={"issuer": ISSUER, "audience": "api"})

    assert serve_problem(config, workers=1) is None


def test_the_access_log_drops_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/auth/callback?code=SECRET&state=S", "1.1", 303),
        None,
    )

    assert RedactQuery().filter(record)

    assert "SECRET" not in record.getMessage()
    assert "/auth/callback?[redacted]" in record.getMessage()


def test_the_log_config_filters_the_access_handler() -> None:
    config = log_config()

    assert config["handlers"]["access"]["filters"] == ["redact_query"]
    module, _, name = config["filters"]["redact_query"]["()"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is RedactQuery
