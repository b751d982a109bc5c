"""The fault matrix: every way an issuer can misbehave, against every caller.

Rows are faults (:data:`ROWS`); the three columns are the callers that talk
to the issuer:

- **bake**: ``jwtedge bake`` through Typer's ``CliRunner`` (discovery answers,
  the JWKS misbehaves; ``--timeout 0.5 --deadline 1``, a sleep seam that does
  not wait);
- **remote keys**: :class:`~verifier.remote.RemoteKeys` built by
  ``from_config`` over its :class:`~verifier.fetch.Fetcher` (``keys.timeout``
  0.5 s, so one retry and a 1 s deadline), inside ``create_app``, asked for a
  kid the bake lacks (the issuer rotated);
- **refresh**: the :class:`~verifier.refresh.InProcessRefresher` that
  ``create_app`` builds (``refresh.timeout`` 0.5 s), driven by page loads and
  API calls whose access token is expired or about to be.

The issuer is a real :class:`~tests.faults.servers.FaultServer` on
127.0.0.1 (a bound, non-listening port for "connection refused"); the app
runs in process (``httpx2.ASGITransport``), so a request that waits on the
faulty issuer and a page load that must not wait share one event loop.

Each row asserts what the user sees, that a genuine token on a **baked** kid
keeps getting 200 authenticated while the fault is in progress, that nothing
is written half-way (env and JSON files byte-identical, the key store
unchanged, no cookie touched), that the failure is bounded by the timeout or
deadline it names (attempts counted on the server, never a stopwatch), and
that the counters and ``/metrics`` record it. For the slow rows two more
tests (:func:`test_baked_requests_answer_while_a_key_fetch_is_held_open`,
:func:`test_fresh_sessions_answer_while_a_refresh_is_held_open`) hold the
faulty call open, with a timeout far past anything they wait for, until the
baked page loads have answered: proof that they never wait on the issuer,
however slow the machine. docs/reliability.md has the matrix as a table.

No assertion here depends on the machine's speed: every wait is on an event
or a count, under a generous :data:`BOUND` that only turns a hang into a
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from click.testing import Result
from starlette.testclient import TestClient
from typer.testing import CliRunner

from deploy.bake import JWKS_VAR
from deploy.cli import Seams
from deploy.cli import app as cli
from tests.faults.servers import (
    Fault,
    FaultServer,
    drip,
    hang,
    huge,
    json_body,
    redirect_loop,
    refused_url,
    reset_mid_body,
    respond,
)
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.errors import JWKSFetchFailed, RefreshFailed
from verifier.fetch import Fetcher
from verifier.jwks import JWKSet, parse_jwks
from verifier.refresh import InProcessRefresher
from verifier.remote import RemoteKeys
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

APP = "http://127.0.0.1"
DISCOVERY = "/.well-known/openid-configuration"
HUGE = 50 * 1024 * 1024
MiB = 1024 * 1024
#: Per-attempt timeouts: short, so the slow rows cost about a second each.
TIMEOUT = 0.5
#: Every wait on a request, a command or a server is bounded by this: a deadline
#: that turns a hang into a failure, never a figure a test asserts.
BOUND = 30.0
#: The timeout of a call held open on purpose: far past BOUND, so the call is
#: still pending whatever the test waits for, until the test cuts it.
HELD = 10 * BOUND
CLIENT_SECRET = "fault-matrix-client-secret-0123456789"
STATE_KEY = "fault-matrix-state-key-" + "s" * 32

runner = CliRunner()


# -- the world: one issuer behind one fault server ------------------------------------------


@dataclass
class World:
    server: FaultServer
    issuer: DevIssuer
    impostor: DevIssuer
    #: The bake every app starts from: the issuer's keys before it rotated.
    baked: JWKSet
    baked_kid: str
    rotated_kid: str
    #: An env file holding a good bake plus the app's other settings.
    good_env: bytes

    def wrong_jwks(self) -> dict[str, Any]:
        """A valid-looking JWKS: the issuer's kids, the impostor's key material."""
        keys = []
        for real, fake in zip(
            self.issuer.jwks()["keys"], self.impostor.jwks()["keys"], strict=True
        ):
            assert real["alg"] == fake["alg"]
            keys.append({**fake, "kid": real["kid"]})
        return {"keys": keys}

    def wrong_token_response(self) -> bytes:
        """A 200 token response whose tokens name a baked kid but the impostor signed."""
        now = int(time.time())
        rs_kid = self.impostor.kids("RS256")[0]
        header = {"alg": "RS256", "kid": self.baked_kid}
        access = self.impostor.sign(
            {"iss": self.issuer.issuer, "sub": "ada", "aud": "api", "iat": now, "exp": now + 300},
            header={**header, "typ": "at+jwt"},
            kid=rs_kid,
        )
        id_token = self.impostor.sign(
            {"iss": self.issuer.issuer, "sub": "ada", "aud": "web", "iat": now, "exp": now + 300},
            header={**header, "typ": "JWT"},
            kid=rs_kid,
        )
        return orjson.dumps(
            {
                "access_token": access,
                "id_token": id_token,
                "refresh_token": "rt-from-the-impostor",
                "token_type": "Bearer",
                "expires_in": 300,
            }
        )

    def config(self, **sections: Any) -> AppConfig:
        values: dict[str, Any] = {
            "auth": {
                "issuer": self.issuer.issuer,
                "audience": "api",
                "client_id": "web",
                "jwks": self.baked,
            },
            "keys": {"remote": "never"},
        }
        for name, section in sections.items():
            values[name] = {**values.get(name, {}), **section}
        return AppConfig(_env_file=None, **values)

    def healthy(self) -> None:
        self.server.route(DISCOVERY, json_body(self.issuer.discovery))
        self.server.route("/jwks", json_body(self.issuer.jwks))
        self.server.route("/token", respond(400, b'{"error":"invalid_request"}'))
        self.server.clear()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_") or name == "GITHUB_ENV":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with FaultServer() as server:
        issuer = DevIssuer(issuer=server.url, audience="api", client_id="web")
        impostor = DevIssuer(issuer=server.url, audience="api", client_id="web")
        impostor.rotate()
        server.route(DISCOVERY, json_body(issuer.discovery))
        server.route("/jwks", json_body(issuer.jwks))

        # The deployed app's env file: its settings and a good bake, made by the CLI.
        env = tmp_path_factory.mktemp("good") / "app.env"
        env.write_text(
            f"APP_CONFIG_AUTH__ISSUER={server.url}\n"
            "APP_CONFIG_AUTH__AUDIENCE=api\n"
            "APP_CONFIG_AUTH__CLIENT_ID=web\n"
            f"APP_CONFIG_AUTH__CLIENT_SECRET={CLIENT_SECRET}\n"
            "APP_CONFIG_KEYS__REMOTE=never\n"
            f"APP_CONFIG_LOGIN__STATE_KEY={STATE_KEY}\n"
        )
        result = runner.invoke(
            cli, ["bake", "--allow-loopback", "--env-file", str(env)], obj=Seams()
        )
        assert result.exit_code == 0, result.stderr
        baked = parse_jwks(issuer.jwks())
        rotated = issuer.rotate()
        yield World(
            server=server,
            issuer=issuer,
            impostor=impostor,
            baked=baked,
            baked_kid=issuer.kids("RS256")[0],
            rotated_kid=rotated,
            good_env=env.read_bytes(),
        )


@pytest.fixture
def healthy(world: World) -> World:
    world.healthy()
    return world


# -- the rows ---------------------------------------------------------------------------------

FaultFor = Callable[[World, str], Fault]


def same(fault: Fault) -> FaultFor:
    return lambda _world, _path: fault


def wrong_keys(world: World, path: str) -> Fault:
    if path == "/token":
        return respond(200, world.wrong_token_response())
    return json_body(world.wrong_jwks)


@dataclass(frozen=True)
class Row:
    id: str
    #: The fault for a path (``/jwks`` or ``/token``); None: nothing listens at all.
    fault: FaultFor | None
    #: Words of the failure's cause: the bake's stderr and ``last_fetch_error``.
    why: str
    #: JWKS requests the server reads from the bake (retries 3) and the remote layer
    #: (retries 1); None where the deadline decides (timeouts).
    bake_hits: int | None
    remote_hits: int | None
    bake_exit: int = 3
    #: The fault holds the request open: baked page loads must finish before it does.
    slow: bool = False
    #: The fault streams a huge body: the client must stop reading at its cap.
    streamed: bool = False
    #: What the API says for a token signed with the rotated key.
    remote_code: str = "key_not_found"
    #: Sleeps the bake asks for between attempts (Retry-After honoured).
    bake_sleeps: tuple[float, ...] | None = None
    marks: tuple[Any, ...] = field(default=())


ROWS = [
    Row("connection-refused", None, "connection refused", 0, 0),
    Row("reset-mid-body", same(reset_mid_body()), "connection failed reading the body", 4, 2),
    Row("timeout-no-answer", same(hang()), "timed out", None, None, slow=True),
    Row("slow-drip-1-byte-per-s", same(drip(1.0)), "timed out", None, None, slow=True),
    # One byte every 0.1 s: each read returns well within httpx2's per-read
    # timeout; only the bound on the whole response stops it.
    Row("slow-drip-under-read-timeout", same(drip(0.1)), "timed out", None, None, slow=True),
    Row("http-500", same(respond(500, b"{}")), "HTTP 500", 4, 2),
    Row("http-502", same(respond(502, b"", content_type=None)), "HTTP 502", 4, 2),
    Row("http-503", same(respond(503, b"{}")), "HTTP 503", 4, 2),
    Row(
        "http-429-retry-after",
        same(respond(429, b"{}", headers={"Retry-After": "1"})),
        "HTTP 429",
        4,
        1,
        bake_sleeps=(1.0, 1.0, 1.0),
    ),
    Row("invalid-json", same(respond(200, b'{"keys": [{"kty": ')), "not valid JSON", 1, 1),
    Row(
        "html-page",
        same(respond(200, b"<html><h1>Sign in</h1></html>", content_type="text/html")),
        "not JSON (Content-Type text/html)",
        1,
        1,
    ),
    Row("huge-body-50mb", same(huge(HUGE)), "larger than 1 MiB", 1, 1, streamed=True),
    Row("redirect-loop", same(redirect_loop()), "more than 3 redirects", 4, 4),
    Row(
        "wrong-keys",
        wrong_keys,
        "",
        1,
        1,
        bake_exit=0,
        remote_code="signature_invalid",
    ),
]
ROW_PARAMS = [pytest.param(row, id=row.id) for row in ROWS]
SLOW_PARAMS = [pytest.param(row, id=row.id) for row in ROWS if row.slow]


@contextlib.contextmanager
def issuer_at(world: World, row: Row, path: str) -> Iterator[str]:
    """The issuer URL for this row, with the fault installed on ``path``."""
    if row.fault is None:
        with refused_url() as url:
            yield url
        return
    world.server.route(path, row.fault(world, path))
    yield world.server.url


# -- helpers ------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookies(access: str, id_token: str, refresh: str | None = None) -> dict[str, str]:
    pairs = {"jwtedge_access": access, "jwtedge_id": id_token}
    if refresh is not None:
        pairs["jwtedge_refresh"] = refresh
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in pairs.items())}


def tokens(issuer: DevIssuer, kid: str, **access: Any) -> tuple[str, str]:
    """An access and an ID token for Ada, signed with ``kid``."""
    return (
        issuer.access_token("ada", kid=kid, **access),
        issuer.id_token("ada", email="ada@example.com", kid=kid),
    )


def signed_in(page: httpx2.Response) -> bool:
    assert page.status_code == 200, page.text
    if "Signed in as" in page.text:
        return True
    assert "You are not signed in" in page.text
    return False


def assert_metric(text: str, line: str) -> None:
    assert line in text.splitlines(), f"{line!r} not in /metrics:\n{text}"


async def until(condition: Callable[[], bool], timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def names_its_bound(message: str, *, timeout: float, deadline: float) -> bool:
    """The failure names the per-attempt timeout or the total deadline that stopped it."""
    return f"{timeout:g} s timeout" in message or f"{deadline:g} s deadline" in message


def assert_stopped_reading(world: World, path: str) -> None:
    """The client hung up on the 50 MB stream long before its end."""
    sent = [s for s in world.server.wait_for_sent(1, BOUND) if s.path == path]
    assert sent, "the huge response never finished"
    assert sent[-1].client_went_away
    # What left the server is the client's 1 MiB plus the kernel's socket buffers.
    assert sent[-1].body_bytes < HUGE // 4, sent[-1]


# -- column 1: jwtedge bake ---------------------------------------------------------------------

#: ``--deadline`` of the bakes under fault: their retries stop there.
BAKE_DEADLINE = 1.5


def invoke_bounded(args: list[str], seams: Seams) -> Result:
    """``runner.invoke`` on a thread, waited on for at most :data:`BOUND` (a hang fails)."""
    results: list[Result] = []
    thread = threading.Thread(
        target=lambda: results.append(runner.invoke(cli, args, obj=seams)), daemon=True
    )
    thread.start()
    thread.join(BOUND)
    assert results, f"jwtedge {args[0]} still running after {BOUND:g} s"
    return results[0]


def baked_app_answers(env: Path, world: World) -> tuple[httpx2.Response, httpx2.Response]:
    """An app deployed from ``env``: a genuine baked-kid token on the API and a page."""
    access, id_token = tokens(world.issuer, world.baked_kid)
    app = create_app(AppConfig(_env_file=env))
    with TestClient(app, base_url=APP) as client:
        return (
            client.get("/api/session", headers=bearer(access)),
            client.get("/", headers=cookies(access, id_token)),
        )


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_bake_under_fault(row: Row, healthy: World, tmp_path: Path) -> None:
    world = healthy
    env = tmp_path / "app.env"
    env.write_bytes(world.good_env)
    json_file = tmp_path / "bake.json"
    json_file.write_bytes(b'{"jwks": "the previous bake"}\n')
    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    seams = Seams(sleep=no_wait, jitter=lambda: 0.0)
    with issuer_at(world, row, "/jwks") as url:
        if row.id == "wrong-keys":
            # The bake cannot tell wrong keys from new ones; `check` shows the change.
            check = runner.invoke(
                cli, ["check", "--env-file", str(env), "--allow-loopback"], obj=seams
            )
            assert check.exit_code == 1, check.stderr
            for key in world.baked.keys:
                assert key.kid is not None
                assert key.kid in check.stdout
            world.server.clear()
        args = ["bake", "--issuer", url, "--allow-loopback", "--env-file", str(env)]
        args += ["--json-file", str(json_file), "--timeout", str(TIMEOUT)]
        args += ["--deadline", str(BAKE_DEADLINE)]
        result = invoke_bounded(args, seams)

    assert result.exit_code == row.bake_exit, result.stderr
    if row.bake_hits is not None:
        assert world.server.hits("/jwks") == row.bake_hits
    else:
        # The timeout or the deadline stopped it: at most the 1 + 3 retries, each bounded.
        assert 1 <= world.server.hits("/jwks") <= 4
        assert names_its_bound(result.stderr, timeout=TIMEOUT, deadline=BAKE_DEADLINE)
    if row.bake_sleeps is not None:
        assert tuple(sleeps) == row.bake_sleeps
    if row.streamed:
        assert_stopped_reading(world, "/jwks")

    if row.bake_exit == 3:
        # One line naming the URL and the cause; nothing written, no temp file left.
        assert row.why in result.stderr
        assert "cannot bake keys" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        assert env.read_bytes() == world.good_env
        assert json_file.read_bytes() == b'{"jwks": "the previous bake"}\n'
        assert sorted(p.name for p in tmp_path.iterdir()) == ["app.env", "bake.json"]
        # The app deployed from the untouched file keeps serving its baked keys.
        api, page = baked_app_answers(env, world)
        assert api.status_code == 200
        assert api.json()["user"]["id"] == "ada"
        assert signed_in(page)
    else:
        # Wrong keys look valid: the bake writes them and the app fails closed.
        assert env.read_bytes() != world.good_env
        assert CLIENT_SECRET in env.read_text()  # the other lines are kept
        api, page = baked_app_answers(env, world)
        assert api.status_code == 401
        assert api.json()["code"] == "signature_invalid"
        assert not signed_in(page)


def test_a_bake_that_works_again_after_the_fault_rewrites_only_its_two_lines(
    healthy: World, tmp_path: Path
) -> None:
    world = healthy
    env = tmp_path / "app.env"
    env.write_bytes(world.good_env)
    world.server.route("/jwks", respond(503, b"{}"))
    failed = runner.invoke(
        cli, ["bake", "--allow-loopback", "--env-file", str(env), "--deadline", "1"], obj=Seams()
    )
    assert failed.exit_code == 3
    assert env.read_bytes() == world.good_env

    world.healthy()
    fixed = runner.invoke(cli, ["bake", "--allow-loopback", "--env-file", str(env)], obj=Seams())

    assert fixed.exit_code == 0, fixed.stderr
    before = world.good_env.decode().splitlines()
    after = env.read_text().splitlines()
    changed = {line.split("=", 1)[0] for line in set(before) ^ set(after)}
    assert changed <= {JWKS_VAR, "APP_CONFIG_AUTH__JWKS_META"}
    assert world.rotated_kid in env.read_text()


# -- column 2: the remote key layer ------------------------------------------------------------


class Clock:
    """A monotonic clock for cooldown and staleness that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("row", ROW_PARAMS)
async def test_remote_keys_under_fault(
    row: Row, healthy: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = healthy
    caplog.set_level(logging.INFO, logger="jwtedge")
    genuine, genuine_id = tokens(world.issuer, world.baked_kid)
    rotated, rotated_id = tokens(world.issuer, world.rotated_kid)
    baked_kids = [key.kid for key in world.baked.keys]

    with issuer_at(world, row, "/jwks") as url:
        config = world.config(
            keys={"remote": "unknown-kid", "timeout": TIMEOUT, "cooldown": 30},
            endpoints={"jwks_uri": f"{url}/jwks"},
        )
        verifier = TokenVerifier.from_config(config)
        remote = RemoteKeys.from_config(config, verifier.keys, now=Clock())
        app = create_app(config, verifier=verifier, remote=remote)
        transport = httpx2.ASGITransport(app=app)
        try:
            async with httpx2.AsyncClient(transport=transport, base_url=APP) as client:
                faulted = asyncio.create_task(client.get("/api/session", headers=bearer(rotated)))
                if row.fault is not None:
                    await until(lambda: world.server.hits("/jwks") > 0 or faulted.done())
                # During the fault: baked tokens are served (that they never wait for
                # the issuer is test_baked_requests_answer_while_a_key_fetch_is_held_open).
                during_api = await client.get("/api/session", headers=bearer(genuine))
                during_page = await client.get("/", headers=cookies(genuine, genuine_id))
                refused = await asyncio.wait_for(faulted, BOUND)

                page = await client.get("/", headers=cookies(rotated, rotated_id))
                after_api = await client.get("/api/session", headers=bearer(genuine))
                ready = await client.get("/readyz")
                metrics = (await client.get("/metrics")).text
        finally:
            await remote.aclose()

    # What the user sees: 401 on the API, anonymous on the page, baked tokens fine.
    assert during_api.status_code == 200
    assert during_api.json()["user"]["id"] == "ada"
    assert signed_in(during_page)
    assert after_api.status_code == 200
    assert refused.status_code == 401
    assert refused.json()["code"] == row.remote_code
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert refused.headers["cache-control"] == "no-store"
    assert not signed_in(page)

    # Nothing half-way: the store still holds the bake (and, for wrong keys, baked kids won).
    ready_body = ready.json()
    assert ready.status_code == 200, ready_body
    assert ready_body["keys"]["stale"] is False
    if row.remote_code == "key_not_found":
        assert verifier.keys.kids == tuple(sorted(k for k in baked_kids if k))
        assert remote.keys_source == "baked"
        assert row.why in (remote.last_fetch_error or "")
        if row.remote_hits is None:
            # keys.timeout bounds the wait: one attempt and one retry at most.
            assert 1 <= world.server.hits("/jwks") <= 2
            assert names_its_bound(
                remote.last_fetch_error or "", timeout=TIMEOUT, deadline=2 * TIMEOUT
            )
        assert ready_body["remote"]["last_fetch_error"] == remote.last_fetch_error
        assert (remote.stats.fetches_ok, remote.stats.fetches_failed) == (0, 1)
        # The page load came inside the cooldown: no second fetch.
        assert remote.stats.refetch_suppressed == 1
        assert_metric(metrics, 'jwtedge_key_fetches_total{result="failed"} 1.0')
        assert_metric(metrics, 'jwtedge_key_fetches_total{result="ok"} 0.0')
        assert_metric(metrics, "jwtedge_key_refetch_suppressed_total 1.0")
        assert "JWKS fetch failed" in caplog.text
    else:
        for key in world.baked.keys:
            assert verifier.keys.key_for(key.kid, key.alg or "RS256").jwk == key
        assert remote.keys_source == "baked+remote"
        assert remote.last_fetch_error is None
        assert (remote.stats.fetches_ok, remote.stats.fetches_failed) == (1, 0)
        assert_metric(metrics, 'jwtedge_key_fetches_total{result="ok"} 1.0')
        assert "different key under baked kid" in caplog.text
    assert_metric(metrics, "jwtedge_keys_stale 0.0")
    assert_metric(
        metrics, f'jwtedge_requests_total{{code="{row.remote_code}",outcome="rejected"}} 2.0'
    )
    if row.remote_hits is not None:
        assert world.server.hits("/jwks") == row.remote_hits
    if row.streamed:
        assert_stopped_reading(world, "/jwks")


# -- column 3: refresh through the middleware --------------------------------------------------


@pytest.mark.parametrize("row", ROW_PARAMS)
async def test_refresh_under_fault(row: Row, healthy: World) -> None:
    world = healthy
    issuer, kid = world.issuer, world.baked_kid
    now = int(time.time())
    fresh, fresh_id = tokens(issuer, kid)
    expired, expired_id = tokens(issuer, kid, iat=now - 1000)
    # Another browser's expired session: one proof token drives one refresh at a time.
    other, other_id = tokens(issuer, kid, iat=now - 1000)
    # Valid, but within the effective skew (a third of its 10 s lifetime).
    due, due_id = tokens(issuer, kid, iat=now - 8, ttl=10)

    with issuer_at(world, row, "/token") as url:
        config = world.config(endpoints={"token": f"{url}/token"}, refresh={"timeout": TIMEOUT})
        app = create_app(config)
        refresher = app.state.edge.refresher
        assert isinstance(refresher, InProcessRefresher)
        try:
            async with httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url=APP
            ) as client:
                faulted = [
                    asyncio.create_task(
                        client.get("/", headers=cookies(expired, expired_id, "rt-b"))
                    ),
                    asyncio.create_task(
                        client.get("/api/session", headers=cookies(due, due_id, "rt-c"))
                    ),
                    asyncio.create_task(
                        client.get("/api/session", headers=cookies(other, other_id, "rt-d"))
                    ),
                ]
                if row.fault is not None:
                    await until(
                        lambda: world.server.hits("/token") >= 3 or all(t.done() for t in faulted)
                    )
                # During the fault: a session that needs no refresh is served (that it
                # never waits is test_fresh_sessions_answer_while_a_refresh_is_held_open).
                during_page = await client.get("/", headers=cookies(fresh, fresh_id, "rt-a"))
                during_api = await client.get("/api/session", headers=bearer(fresh))
                expired_page, due_api, expired_api = await asyncio.wait_for(
                    asyncio.gather(*faulted), BOUND
                )
                metrics = (await client.get("/metrics")).text
        finally:
            await refresher.aclose()

    assert signed_in(during_page)
    assert during_api.status_code == 200
    # Expired and not refreshed: anonymous page, 401 token_expired on the API...
    assert not signed_in(expired_page)
    assert expired_api.status_code == 401
    assert expired_api.json()["code"] == "token_expired"
    # ...still valid: served with the current session.
    assert due_api.status_code == 200
    assert due_api.json()["user"]["id"] == "ada"
    # No cookie written or cleared (only invalid_grant clears): the next request retries.
    for response in (during_page, expired_page, due_api, expired_api):
        assert "set-cookie" not in response.headers

    stats = refresher.stats
    assert (stats.calls, stats.ok, stats.failed) == (3, 0, 3)
    assert dict(app.state.edge.stats.refresh_failed) == {"refresh_failed": 3}
    assert app.state.edge.stats.refreshed == 0
    assert_metric(metrics, 'jwtedge_refresh_total{result="failed"} 3.0')
    assert_metric(metrics, 'jwtedge_refresh_total{result="ok"} 0.0')
    assert_metric(metrics, 'jwtedge_refresh_failures_total{code="refresh_failed"} 3.0')
    assert_metric(metrics, "jwtedge_sessions_refreshed_total 0.0")
    # The request path never retries, never follows a redirect, never waits on Retry-After.
    if row.fault is not None:
        assert world.server.hits("/token") == 3


# -- slow rows: the faulty call held open -----------------------------------------------------
#
# The matrix above proves what the user sees once the timeout fires. That baked
# requests never *wait* for the faulty call needs the call to be pending while
# they run, whatever the machine's speed: here its timeout is HELD (far past any
# wait of the test), the baked requests must answer within BOUND, and only then
# does the test cut the held connection.


async def answered_while_held(
    world: World, held: asyncio.Task[Any], *requests: Any, then: tuple[str, Fault] | None = None
) -> list[httpx2.Response]:
    """Await ``requests`` (within BOUND) while ``held`` waits on the issuer; then cut it.

    ``then`` (a path and a fault) is how the issuer answers from the cut on.
    """
    try:
        answers = await asyncio.wait_for(asyncio.gather(*requests), BOUND)
    except TimeoutError:
        pytest.fail(f"requests that need no issuer call waited {BOUND:g} s on the held one")
    still_pending = not held.done() and world.server.open_connections() > 0
    if then is not None:
        world.server.route(*then)
    world.server.cut()
    await asyncio.wait_for(held, BOUND)
    assert still_pending, "the held issuer call ended before the test cut it"
    return list(answers)


@pytest.mark.parametrize("row", SLOW_PARAMS)
async def test_baked_requests_answer_while_a_key_fetch_is_held_open(
    row: Row, healthy: World
) -> None:
    world = healthy
    genuine, genuine_id = tokens(world.issuer, world.baked_kid)
    rotated, _ = tokens(world.issuer, world.rotated_kid)

    with issuer_at(world, row, "/jwks") as url:
        config = world.config(
            keys={"remote": "unknown-kid", "timeout": HELD, "cooldown": 30},
            endpoints={"jwks_uri": f"{url}/jwks"},
        )
        verifier = TokenVerifier.from_config(config)
        remote = RemoteKeys.from_config(config, verifier.keys, now=Clock())
        app = create_app(config, verifier=verifier, remote=remote)
        try:
            async with httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url=APP
            ) as client:
                fetching = asyncio.create_task(client.get("/api/session", headers=bearer(rotated)))
                await until(lambda: world.server.hits("/jwks") > 0)
                api, page = await answered_while_held(
                    world,
                    fetching,
                    client.get("/api/session", headers=bearer(genuine)),
                    client.get("/", headers=cookies(genuine, genuine_id)),
                    # The cut attempt's one retry finds the issuer answering again.
                    then=("/jwks", json_body(world.issuer.jwks)),
                )
                late = fetching.result()
        finally:
            await remote.aclose()

    assert api.status_code == 200
    assert api.json()["user"]["id"] == "ada"
    assert signed_in(page)
    # The request that waited gets the rotated key from the retry.
    assert late.status_code == 200
    assert late.json()["user"]["id"] == "ada"
    assert remote.keys_source == "baked+remote"
    assert world.server.hits("/jwks") == 2


@pytest.mark.parametrize("row", SLOW_PARAMS)
async def test_fresh_sessions_answer_while_a_refresh_is_held_open(row: Row, healthy: World) -> None:
    world = healthy
    fresh, fresh_id = tokens(world.issuer, world.baked_kid)
    expired, expired_id = tokens(world.issuer, world.baked_kid, iat=int(time.time()) - 1000)

    with issuer_at(world, row, "/token") as url:
        config = world.config(endpoints={"token": f"{url}/token"}, refresh={"timeout": HELD})
        app = create_app(config)
        refresher = app.state.edge.refresher
        assert isinstance(refresher, InProcessRefresher)
        try:
            async with httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url=APP
            ) as client:
                refreshing = asyncio.create_task(
                    client.get("/api/session", headers=cookies(expired, expired_id, "rt-held"))
                )
                await until(lambda: world.server.hits("/token") > 0)
                page, api = await answered_while_held(
                    world,
                    refreshing,
                    client.get("/", headers=cookies(fresh, fresh_id, "rt-fresh")),
                    client.get("/api/session", headers=bearer(fresh)),
                )
                refused = refreshing.result()
        finally:
            await refresher.aclose()

    assert signed_in(page)
    assert api.status_code == 200
    assert api.json()["user"]["id"] == "ada"
    # The cut refresh fails like any other: expired stays expired, no cookie touched.
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_expired"
    assert "set-cookie" not in refused.headers
    assert (refresher.stats.calls, refresher.stats.failed) == (1, 1)
    assert world.server.hits("/token") == 1


async def test_refresh_stops_reading_a_huge_token_response_at_1_mib(healthy: World) -> None:
    world = healthy
    world.server.route("/token", huge(HUGE))
    refresher = InProcessRefresher(
        token_endpoint=f"{world.server.url}/token",
        client_id="web",
        verifier=TokenVerifier.from_config(world.config()),
        timeout=5.0,
    )
    try:
        with pytest.raises(RefreshFailed):
            await refresher.refresh("rt-huge", proof=None)
    finally:
        await refresher.aclose()
    assert_stopped_reading(world, "/token")


async def test_a_remote_fetch_timeout_names_the_timeout_or_the_deadline(healthy: World) -> None:
    world = healthy
    world.server.route("/jwks", hang())
    # The remote layer's budget (RemoteKeys.from_config), with the jitter pinned.
    fetcher = Fetcher(timeout=TIMEOUT, deadline=2 * TIMEOUT, retries=1, jitter=lambda: 0.0)
    try:
        with pytest.raises(JWKSFetchFailed) as failure:
            await fetcher.fetch_jwks(f"{world.server.url}/jwks")
    finally:
        await fetcher.aclose()

    message = failure.value.message
    assert f"after {TIMEOUT:g} s" in message or f"the {2 * TIMEOUT:g} s deadline" in message
