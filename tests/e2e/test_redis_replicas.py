"""Several real uvicorn processes share one Redis: one expired token, one refresh.

Each replica is its own ``python -m uvicorn tests.e2e.redis_app:create_app``
process configured only through ``APP_CONFIG_*`` (the baked JWKS, the token
endpoint of a served DevIssuer, the shared redis-server). A burst of
concurrent requests carrying the same cookies, spread round-robin over the
replicas, must cost the issuer exactly one token request, authenticate every
request and make every replica hand out the same new token set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.redis_server import RedisServer, running_redis
from verifier.testing import DevIssuer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 200
START_TIMEOUT = 30.0
COOKIES = ("jwtedge_access", "jwtedge_id", "jwtedge_refresh")


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def live_issuer() -> Iterator[DevIssuer]:
    with DevIssuer.serve(port=0, audience="api", client_id="web") as issuer:
        yield issuer


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(issuer: DevIssuer, redis_url: str, workdir: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("APP_CONFIG")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            # No stray .env from the checkout: the test says everything.
            "APP_CONFIG_ENV_FILE": str(Path(workdir) / "absent.env"),
            "APP_CONFIG_AUTH__ISSUER": issuer.url,
            "APP_CONFIG_AUTH__AUDIENCE": "api",
            "APP_CONFIG_AUTH__CLIENT_ID": "web",
            "APP_CONFIG_AUTH__JWKS": json.dumps(issuer.jwks()),
            "APP_CONFIG_ENDPOINTS__TOKEN": f"{issuer.url}/token",
            "APP_CONFIG_KEYS__REMOTE": "never",
            "APP_CONFIG_REFRESH__REDIS_URL": redis_url,
            "APP_CONFIG_REFRESH__STORE_KEY": secrets.token_urlsafe(32),
            "APP_CONFIG_REFRESH__GRACE": "30s",
        }
    )
    return env


@contextmanager
def running_replicas(count: int, env: dict[str, str], workdir: str) -> Iterator[list[Replica]]:
    """``count`` uvicorn processes, ready when ``/healthz`` answers; all killed on exit."""
    replicas: list[Replica] = []
    try:
        for index in range(count):
            port = _free_port()
            log = Path(workdir) / f"replica-{index}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "tests.e2e.redis_app:create_app",
                        "--factory",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            replicas.append(Replica(f"http://127.0.0.1:{port}", process, log))
        deadline = time.monotonic() + START_TIMEOUT
        for replica in replicas:
            _wait_ready(replica, deadline)
        yield replicas
    finally:
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in replicas:
            try:
                replica.process.wait(10)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(10)


def _wait_ready(replica: Replica, deadline: float) -> None:
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            break
        try:
            if httpx2.get(f"{replica.url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)  # polling a starting process, not waiting for time to pass
    output = replica.log.read_text(errors="replace")[-2000:]
    pytest.fail(f"replica {replica.url} did not start:\n{output}")


def _expired_session(issuer: DevIssuer) -> dict[str, str]:
    """Cookies of a browser whose access token expired: same sub and sid as its ID token."""
    tokens = issuer.login("u1")
    id_token = tokens["id_token"]
    payload = id_token.split(".")[1]
    sid = json.loads(_b64decode(payload))["sid"]
    expired = issuer.access_token(sub="u1", sid=sid, iat=int(time.time()) - 900, ttl=60)
    return {
        "jwtedge_access": expired,
        "jwtedge_id": id_token,
        "jwtedge_refresh": tokens["refresh_token"],
    }


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _token_cookies(response: httpx2.Response) -> tuple[str, ...]:
    values: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, value = header.split(";", 1)[0].partition("=")
        if name in COOKIES:
            values[name] = value
    return tuple(values.get(name, "") for name in COOKIES)


async def _burst(replicas: list[Replica], cookies: dict[str, str]) -> list[httpx2.Response]:
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    limits = httpx2.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    # An explicit Cookie header on every request: the client keeps no jar between them,
    # so every request carries the same (old) cookies.
    async with httpx2.AsyncClient(limits=limits, timeout=30.0, trust_env=False) as client:
        requests = [
            client.get(f"{replicas[i % len(replicas)].url}/whoami", headers={"cookie": header})
            for i in range(REQUESTS)
        ]
        return await asyncio.wait_for(asyncio.gather(*requests), timeout=60.0)


@pytest.mark.parametrize("count", [2, 4])
async def test_replicas_sharing_redis_refresh_one_expired_token_with_exactly_one_issuer_call(
    count: int, redis_server: RedisServer, live_issuer: DevIssuer
) -> None:
    with tempfile.TemporaryDirectory(prefix="jwtedge-replicas-") as workdir:
        env = _environment(live_issuer, redis_server.url, workdir)
        with running_replicas(count, env, workdir) as replicas:
            cookies = _expired_session(live_issuer)
            before = replace(live_issuer.stats)
            live_issuer.token_delay = 0.5  # the whole burst arrives while the call is in flight
            try:
                responses = await _burst(replicas, cookies)
            finally:
                live_issuer.token_delay = 0
            stats = [_stats(replica) for replica in replicas]

    assert live_issuer.stats.token_requests - before.token_requests == 1
    assert live_issuer.stats.refresh_grants - before.refresh_grants == 1
    assert live_issuer.stats.reuse_detected == before.reuse_detected
    assert live_issuer.stats.revoked_families == before.revoked_families

    assert all(response.status_code == 200 for response in responses)
    bodies = [response.json() for response in responses]
    assert all(body["sub"] == "u1" for body in bodies), "every request is authenticated"

    served: dict[int, set[tuple[str, ...]]] = {}
    for body, response in zip(bodies, responses, strict=True):
        served.setdefault(body["pid"], set()).add(_token_cookies(response))
    assert len(served) == count, "every process served requests"
    new_sets = set().union(*served.values())
    assert len(new_sets) == 1, "every process served the same new token set"
    (new,) = new_sets
    assert all(new), "access, ID and refresh cookies are all set"
    assert new[0] != cookies["jwtedge_access"]
    assert new[2] != cookies["jwtedge_refresh"]

    assert sum(s["calls"] for s in stats) == 1
    assert sum(s["leases"] for s in stats) == 1
    assert sum(s["degraded"] for s in stats) == 0
    assert sum(s["redis_errors"] for s in stats) == 0


def _stats(replica: Replica) -> dict[str, Any]:
    response = httpx2.get(f"{replica.url}/healthz/refresh", timeout=5.0)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body
