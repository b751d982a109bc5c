"""The Dockerfile's own commands, run for real: the bake of the build stage, the runtime CMD.

Images cannot be built or pulled here, so this test reads the Dockerfile and
runs the same commands in the same order against a real DevIssuer on
127.0.0.1: the build stage's ``jwtedge bake --issuer ... --env-file ...``,
then the runtime stage's ``jwtedge serve ... --proxy-headers`` reading that
file through ``APP_CONFIG_ENV_FILE`` with the deployment settings from the
environment (as ``docker run -e`` passes them), polled with the HEALTHCHECK's
own command. The Dockerfile is parsed, not copied: a change to one of these
commands fails here until this test runs the new one.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.e2e.servers import STATE_KEY, dev_issuer
from verifier.testing import DevIssuer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
#: The venv's bin: what /opt/jwtedge/bin is in the image (jwtedge and python).
BIN = Path(sys.executable).parent
DOCKER_PORT = 8000


# -- reading the Dockerfile ---------------------------------------------------------------


def instructions(path: Path | None = None) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (path or DOCKERFILE).read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def bake_command() -> list[str]:
    """The build stage's bake, as an argv list (the part of its RUN after the last ``&&``)."""
    runs = [args for keyword, args in instructions() if keyword == "RUN" and "jwtedge bake" in args]
    assert len(runs) == 1, runs
    return shlex.split(runs[0].split("&&")[-1])


def env_values(*, stage: str | None = None) -> dict[str, str]:
    """The ``ENV`` values of the whole Dockerfile, or of the stage named ``stage``."""
    values: dict[str, str] = {}
    current = None
    for keyword, args in instructions():
        if keyword == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else None
        elif keyword == "ENV" and stage in (None, current):
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def exec_form(keyword: str) -> list[str]:
    """The JSON array of the (last) ``CMD`` or of the ``HEALTHCHECK``'s ``CMD``."""
    found = [args for kw, args in instructions() if kw == keyword]
    assert found, f"no {keyword} in the Dockerfile"
    args = found[-1]
    if keyword == "HEALTHCHECK":
        args = args[args.index(" CMD ") + len(" CMD ") :]
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


# -- running its commands -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: What the Dockerfile's header says ``docker run -e`` passes: deployment settings.
DOCKER_RUN_ENV = {
    "APP_CONFIG_AUTH__AUDIENCE": "api",
    "APP_CONFIG_AUTH__CLIENT_ID": "web",
    "APP_CONFIG_LOGIN__STATE_KEY": STATE_KEY,
}


def runtime_env(env_file: Path, *, issuer: str) -> dict[str, str]:
    """The runtime stage's ENV lines (paths mapped to here), plus ``docker run -e``'s settings."""
    paths = {
        "/opt/jwtedge/bin": str(BIN),  # the image's venv: here, this venv
        "${PATH}": os.environ.get("PATH", ""),
        "${ISSUER}": issuer,  # the build argument, should the stage use it
    }
    env: dict[str, str] = {}
    for name, value in env_values(stage="runtime").items():
        for old, new in paths.items():
            value = value.replace(old, new)
        env[name] = value
    assert env.pop("APP_CONFIG_ENV_FILE") == "/etc/jwtedge/app.env"
    env["APP_CONFIG_ENV_FILE"] = str(env_file)
    return {**env, **DOCKER_RUN_ENV}


def bake_argv(issuer_url: str, env_file: Path) -> list[str]:
    """The build stage's bake with the image's paths mapped to here."""
    mapping = {
        "/opt/jwtedge/bin/jwtedge": str(BIN / "jwtedge"),
        "${ISSUER}": issuer_url,
        "/opt/jwtedge/app.env": str(env_file),
    }
    # The one addition: the test issuer is on 127.0.0.1, which a bake skips
    # unless told otherwise (so a dev issuer never lands in a release image).
    return [mapping.get(arg, arg) for arg in bake_command()] + ["--allow-loopback"]


def bake(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd)}  # no APP_CONFIG_* leaks in
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def healthy(command: list[str], env: dict[str, str]) -> bool:
    done = subprocess.run(command, env=env, capture_output=True, timeout=10)
    return done.returncode == 0


@contextmanager
def serving(env: dict[str, str], cwd: Path, *, timeout: float = 20.0) -> Iterator[str]:
    """The runtime CMD on a free 127.0.0.1 port until the HEALTHCHECK passes; its base URL.

    ``--host 0.0.0.0`` becomes 127.0.0.1 (the only network here) and the
    port a free one, in the CMD and the HEALTHCHECK alike. The server is
    terminated (then killed) on exit, whatever happened.
    """
    port = free_port()
    cmd = exec_form("CMD")
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(port)
    healthcheck = [
        arg.replace(f"127.0.0.1:{DOCKER_PORT}", f"127.0.0.1:{port}")
        for arg in exec_form("HEALTHCHECK")
    ]
    log = cwd / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + timeout
        while not healthy(healthcheck, env):
            assert server.poll() is None, f"jwtedge serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"never healthy: {log.read_text()}"
            time.sleep(0.1)  # the HEALTHCHECK's start period, in small steps
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.fixture
def issuer() -> Iterator[DevIssuer]:
    with dev_issuer() as issuer:
        yield issuer


@pytest.fixture
def baked(issuer: DevIssuer, tmp_path: Path) -> Path:
    """The build stage's bake, run for real: the env file it wrote."""
    env_file = tmp_path / "app.env"
    done = bake(bake_argv(issuer.url, env_file), tmp_path)
    assert done.returncode == 0, done.stderr
    return env_file


def test_the_dockerfile_runs_the_commands_this_test_runs() -> None:
    assert bake_command() == [
        "/opt/jwtedge/bin/jwtedge",
        "bake",
        "--issuer",
        "${ISSUER}",
        "--env-file",
        "/opt/jwtedge/app.env",
    ]
    assert exec_form("CMD") == [
        "jwtedge",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(DOCKER_PORT),
        "--proxy-headers",
    ]
    healthcheck = exec_form("HEALTHCHECK")
    assert healthcheck[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{DOCKER_PORT}/healthz" in healthcheck[2]
    # The runtime reads the file the build stage baked, copied to APP_CONFIG_ENV_FILE.
    env_file = env_values()["APP_CONFIG_ENV_FILE"]
    copies = [args.split() for keyword, args in instructions() if keyword == "COPY"]
    assert any(
        parts[-2:] == ["/opt/jwtedge/app.env", env_file] and "--from=build" in parts
        for parts in copies
    ), copies


def test_the_baked_env_file_serves_tokens_behind_a_tls_proxy_and_a_dead_issuer_fails_the_build(
    issuer: DevIssuer, baked: Path, tmp_path: Path
) -> None:
    assert stat.S_IMODE(baked.stat().st_mode) == 0o600
    names = {line.split("=", 1)[0] for line in baked.read_text().splitlines()}
    assert {"APP_CONFIG_AUTH__JWKS", "APP_CONFIG_AUTH__JWKS_META"} <= names
    env = runtime_env(baked, issuer=issuer.url)
    before = (issuer.stats.jwks_requests, issuer.stats.discovery_requests)

    with serving(env, tmp_path) as base, httpx2.Client(base_url=base, timeout=10.0) as client:
        ready = client.get("/readyz")
        token = issuer.login("ada")["access_token"]
        session = client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
        anonymous = client.get("/api/session")
        # --proxy-headers: a TLS-terminating proxy on 127.0.0.1 says https, so
        # the sign-in's cookie is Secure (and __Host-) and the callback https.
        proxied = client.get("/auth/login?next=/", headers={"X-Forwarded-Proto": "https"})
        plain = client.get("/auth/login?next=/")

    assert ready.status_code == 200, ready.text
    assert ready.json()["keys"]["source"] == "baked"
    assert session.status_code == 200, session.text
    assert session.json()["user"]["id"] == "ada"
    assert anonymous.status_code == 401
    assert proxied.status_code == 302
    (cookie,) = proxied.headers.get_list("set-cookie")
    assert cookie.startswith("__Host-jwtedge_login_")
    assert "; secure" in cookie.lower()
    redirect = httpx2.URL(proxied.headers["location"]).params["redirect_uri"]
    assert redirect == f"{base.replace('http://', 'https://')}/auth/callback"
    (plain_cookie,) = plain.headers.get_list("set-cookie")
    assert plain_cookie.startswith("jwtedge_login_")
    assert "secure" not in plain_cookie.lower()
    # Zero calls to the issuer at run time: the bake was enough.
    assert (issuer.stats.jwks_requests, issuer.stats.discovery_requests) == before

    # Fail closed: the issuer is gone, the bake exits 3 and the file stays as it was.
    kept = baked.read_bytes()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    failed = bake(bake_argv(dead, baked), tmp_path)

    assert failed.returncode == 3, (failed.stdout, failed.stderr)
    assert baked.read_bytes() == kept
    assert stat.S_IMODE(baked.stat().st_mode) == 0o600


def test_the_image_starts_with_only_the_settings_its_docker_run_example_passes(
    issuer: DevIssuer, baked: Path, tmp_path: Path
) -> None:
    env = runtime_env(baked, issuer=issuer.url)
    assert "APP_CONFIG_AUTH__ISSUER" not in DOCKER_RUN_ENV

    with serving(env, tmp_path, timeout=10.0) as base:
        assert httpx2.get(f"{base}/readyz", timeout=10.0).status_code == 200
