"""``jwtedge serve`` and ``jwtedge demo``: run the reference edge app.

``serve`` is for deployments: it validates everything it can *before*
uvicorn starts (the config, a key source, a refresh setup that is safe for
the worker count), so a bad deploy fails with one line and exit 2 instead of
a crash loop. uvicorn is reached through the ``run_server`` seam of
:class:`~deploy.cli.Seams`, so tests check the arguments without a server.

``demo`` is the embedded default: a DevIssuer, a bake of its keys over real
HTTP, and the app, all on 127.0.0.1 in one process (two server threads, no
child process). It installs its own SIGINT/SIGTERM handlers: uvicorn re-raises
a captured signal after shutdown, which would turn Ctrl-C into a traceback or
a non-zero exit; here the servers stop in order and the command exits 0.

Registered on the Typer app by :mod:`deploy.cli`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer
import uvicorn
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from starlette.types import ASGIApp

from verifier.app import create_app
from verifier.config import AppConfig
from verifier.errors import ConfigInvalid, JWKSError
from verifier.fetch import Fetcher
from verifier.testing import DevIssuer

from .bake import BakeResult
from .bake import bake as run_bake
from .console import ISSUER, USAGE, exit_with, say
from .seams import seams_of

__all__ = [
    "APP_FACTORY",
    "DEMO_USER",
    "RedactQuery",
    "RunningServer",
    "demo",
    "demo_config",
    "log_config",
    "serve",
    "serve_in_thread",
    "serve_problem",
]

#: The import string uvicorn's workers build the app from (``factory=True``).
APP_FACTORY = "verifier.app:app_from_env"
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0

#: The demo user: two organizations with names and roles, a project in each.
DEMO_USER: dict[str, Any] = {
    "sub": "demo",
    "email": "demo@example.com",
    "name": "Demo User",
    "organizations": [
        {"id": "org_acme", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
        {"id": "org_globex", "slug": "globex", "name": "Globex Corporation", "role": "member"},
    ],
    "projects": [
        {"id": "prj_website", "slug": "website", "organizationId": "org_acme"},
        {"id": "prj_billing", "slug": "billing", "organizationId": "org_globex"},
    ],
}


# -- logging -------------------------------------------------------------------------


class RedactQuery(logging.Filter):
    """Drop query strings from uvicorn's access log.

    The callback's query carries the authorization code and the state, and a
    misbehaving client may put a token in any query string: none of it belongs
    in a log. The path stays, with ``?[redacted]`` when there was a query.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, mark, _query = args[2].partition("?")
            if mark:
                record.args = (*args[:2], f"{path}?[redacted]", *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config plus :class:`RedactQuery` on the access log."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": f"{__name__}.RedactQuery"}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config


# -- serve ---------------------------------------------------------------------------


def _refresh_active(config: AppConfig) -> bool:
    """Whether the app would refresh tokens (enabled, with a token endpoint and a client)."""
    return (
        config.refresh.enabled
        and config.endpoint("token") is not None
        and config.auth.client_id is not None
    )


def serve_problem(config: AppConfig, *, workers: int) -> str | None:
    """Why ``serve`` must not start with ``config`` and ``workers``, or ``None``."""
    jwks = config.auth.jwks
    baked = (jwks is not None and len(jwks) > 0) or config.auth.hs_secret is not None
    if not baked and config.keys.remote == "never":
        return (
            "no key source: nothing is baked (APP_CONFIG_AUTH__JWKS) and "
            "APP_CONFIG_KEYS__REMOTE=never forbids fetching keys: run jwtedge bake, "
            "or allow the remote key layer"
        )
    if workers > 1 and _refresh_active(config) and config.refresh.redis_url is None:
        return (
            f"refusing --workers {workers}: refresh is enabled and there is no shared "
            "store (APP_CONFIG_REFRESH__REDIS_URL is unset), so each worker would spend "
            "the same rotating refresh token and the issuer would revoke the session; "
            "set APP_CONFIG_REFRESH__REDIS_URL (and APP_CONFIG_REFRESH__STORE_KEY), run one "
            "worker per process, or set APP_CONFIG_REFRESH__ENABLED=false"
        )
    return None


#: uvicorn's WebSocket protocol. Its default (websockets-sansio) logs an ERROR
#: after every refused upgrade (Kludex/uvicorn#3138), which would let any client
#: write ERROR lines at will; wsproto completes the denial cleanly.
WS_PROTOCOL = "wsproto"


def _uvicorn_run(app: ASGIApp | str, **options: Any) -> None:
    uvicorn.run(app, **options)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to bind (0: any free port).")
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes. More than one needs a shared refresh store "
            "(APP_CONFIG_REFRESH__REDIS_URL) or refresh disabled.",
        ),
    ] = 1,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            help="Trust X-Forwarded-Proto/For from --forwarded-allow-ips (the scheme decides "
            "Secure cookies).",
        ),
    ] = True,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Comma-separated proxy addresses whose forwarded headers are trusted "
            "(uvicorn's default: $FORWARDED_ALLOW_IPS or 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option("--log-level", help=f"One of {', '.join(_LOG_LEVELS)}."),
    ] = "info",
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Read APP_CONFIG_* from this dotenv file (default: $APP_CONFIG_ENV_FILE or .env).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the reference edge app under uvicorn.

    The config (APP_CONFIG_* from the environment and the env file), the key
    source and the worker setup are checked first: any problem is one line on
    stderr and exit 2, with the setting named and no secret echoed.
    """
    seams = seams_of(ctx)
    if log_level not in _LOG_LEVELS:
        exit_with(USAGE, f"--log-level must be one of {', '.join(_LOG_LEVELS)}")
    if env_file is not None and not env_file.is_file():
        exit_with(USAGE, f"--env-file {env_file}: no such file")
    try:
        config = AppConfig() if env_file is None else AppConfig(_env_file=env_file)
    except ConfigInvalid as exc:
        exit_with(USAGE, exc.message)
    problem = serve_problem(config, workers=workers)
    if problem is not None:
        exit_with(USAGE, problem)
    try:
        application = create_app(config)  # validates the login settings too; no I/O
    except ConfigInvalid as exc:
        exit_with(USAGE, exc.message)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips,
        "log_level": log_level,
        "log_config": log_config(),
        "server_header": False,
        "lifespan": "on",
        "ws": WS_PROTOCOL,
    }
    target: ASGIApp | str = application
    if workers > 1:
        # Each worker process builds its own app from the environment.
        target = APP_FACTORY
        options["factory"] = True
        if env_file is not None:
            options["env_file"] = str(env_file)
    say(f"jwtedge: serving on http://{host}:{port} ({workers} worker(s))", "dim")
    runner: Callable[..., None] = seams.run_server or _uvicorn_run
    runner(target, **options)


# -- demo ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A uvicorn server running in a thread (see :func:`serve_in_thread`)."""

    server: uvicorn.Server
    thread: threading.Thread

    @property
    def alive(self) -> bool:
        """Whether the server thread still runs."""
        return self.thread.is_alive()


@contextmanager
def serve_in_thread(
    asgi_app: ASGIApp,
    sock: socket.socket,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    configure_logging: bool = False,
) -> Iterator[RunningServer]:
    """Run ``asgi_app`` on uvicorn over a bound socket in a thread; stop it on exit.

    The socket is bound by the caller, so its URL is known before the server
    starts. A thread (not a process) means nothing can outlive the caller, and
    uvicorn leaves signal handling to the main thread.
    """
    config = uvicorn.Config(
        asgi_app,
        log_level=log_level,
        access_log=access_log,
        log_config=log_config() if configure_logging else None,
        lifespan="on",
        server_header=False,
        ws=WS_PROTOCOL,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="jwtedge-app", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.01)
        yield RunningServer(server, thread)
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT)


class _IsolatedConfig(AppConfig):
    """An AppConfig from init values only: the demo ignores APP_CONFIG_* and .env."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def demo_config(result: BakeResult, *, client_id: str, audience: str, app_url: str) -> AppConfig:
    """The demo app's config: the bake, a random state key, Secure cookies on auto."""
    return _IsolatedConfig(
        auth={
            "issuer": result.meta["issuer"],
            "audience": audience,
            "client_id": client_id,
            "jwks": result.jwks_json,
            "jwks_meta": result.meta,
        },
        login={
            "state_key": secrets.token_urlsafe(32),
            "post_logout_redirect": f"{app_url}/",
        },
        cookies={"secure": "auto"},
    )


async def _bake_from(issuer_url: str) -> BakeResult:
    async with Fetcher(timeout=5.0, deadline=15.0) as fetcher:
        return await run_bake(issuer_url, fetcher=fetcher)


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        exit_with(USAGE, f"cannot listen on 127.0.0.1:{port} ({exc.strerror or 'in use'})")
    return sock


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def demo(
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="App port on 127.0.0.1 (0: any).")
    ] = 8000,
    issuer_port: Annotated[
        int,
        typer.Option(
            "--issuer-port", min=0, max=65535, help="Dev issuer port on 127.0.0.1 (0: any)."
        ),
    ] = 0,
    log_level: Annotated[
        str, typer.Option("--log-level", help=f"One of {', '.join(_LOG_LEVELS)}.")
    ] = "warning",
) -> None:
    """Run a dev issuer, bake its keys and serve the app, all on 127.0.0.1.

    Prints the app URL and a sign-in link. The dev issuer signs in a demo
    user (two organizations, a project in each) without asking. Works
    offline. Stop with Ctrl-C: both servers shut down and the exit code is 0.
    """
    if log_level not in _LOG_LEVELS:
        exit_with(USAGE, f"--log-level must be one of {', '.join(_LOG_LEVELS)}")
    access_log = log_level in ("info", "debug", "trace")
    with _stop_on_signals() as stop, DevIssuer.serve(port=issuer_port) as issuer:
        issuer.add_user(
            DEMO_USER["sub"],
            email=DEMO_USER["email"],
            name=DEMO_USER["name"],
            organizations=DEMO_USER["organizations"],
            projects=DEMO_USER["projects"],
        )
        issuer.default_user = DEMO_USER["sub"]
        try:
            result = asyncio.run(_bake_from(issuer.url))
        except JWKSError as exc:
            exit_with(ISSUER, f"cannot bake the dev issuer's keys: {exc.message}")
        sock = _bind(port)
        with sock:
            app_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            config = demo_config(
                result, client_id=issuer.client_id, audience="api", app_url=app_url
            )
            application = create_app(config)
            with serve_in_thread(
                application,
                sock,
                log_level=log_level,
                access_log=access_log,
                configure_logging=True,
            ) as running:
                typer.echo(f"jwtedge demo: app {app_url}")
                typer.echo(f"jwtedge demo: sign in at {app_url}/auth/login?next=/")
                typer.echo(f"jwtedge demo: dev issuer {issuer.url} (user {DEMO_USER['email']})")
                typer.echo("jwtedge demo: press Ctrl-C to stop")
                sys.stdout.flush()
                while not stop.wait(0.2):
                    if not running.alive:
                        break
        say("jwtedge demo: stopped", "dim")
