"""RemoteKeys: baked keys first; the issuer's JWKS on demand, single-flight, with cooldown.

Time is an injected clock the tests move; the issuer is a DevIssuer's ASGI app
(or a MockTransport), so nothing touches the network and nothing waits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest

from verifier.config import AppConfig
from verifier.errors import AlgorithmNotAllowed, ConfigInvalid, KeyNotFound, KeysStale
from verifier.fetch import Fetcher
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore, RemoteKeys, VerificationKey
from verifier.testing import DevIssuer

COOLDOWN = 30.0
STALE_IF_ERROR = 3600.0


class Clock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Switch(httpx2.AsyncBaseTransport):
    """The issuer's app behind a switch: down means connection refused. Counts requests."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx2.ASGITransport(app=app)
        self.up = True
        self.requests = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        if not self.up:
            raise httpx2.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


class Forbidden(httpx2.AsyncBaseTransport):
    """A transport no test may reach."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        pytest.fail(f"unexpected network call: GET {request.url}")


def header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


def verifies(key: VerificationKey, token: str) -> bool:
    head, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return key.verify(f"{head}.{payload}".encode(), raw)


async def lookup(remote: RemoteKeys, token: str) -> VerificationKey:
    head = header(token)
    return await remote.key_for(head.get("kid"), head["alg"])


def make_remote(
    store: KeyStore,
    transport: httpx2.AsyncBaseTransport,
    clock: Clock,
    *,
    issuer: str = "http://127.0.0.1:9000",
    jwks_uri: str | None = "http://127.0.0.1:9000/jwks",
    **options: Any,
) -> RemoteKeys:
    # retries=0: the remote layer's own cooldown is what these tests exercise.
    fetcher = Fetcher(transport=transport, retries=0, clock=clock, sleep=_no_sleep)
    options.setdefault("cooldown", COOLDOWN)
    options.setdefault("stale_if_error", STALE_IF_ERROR)
    return RemoteKeys(store, fetcher, issuer=issuer, jwks_uri=jwks_uri, now=clock, **options)


async def _no_sleep(seconds: float) -> None:
    pytest.fail(f"unexpected sleep of {seconds} s")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dev() -> DevIssuer:
    """A DevIssuer of this test's own (tests here rotate it)."""
    return DevIssuer(issuer="http://127.0.0.1:9000")


def baked_store(issuer: DevIssuer) -> KeyStore:
    return KeyStore(parse_jwks(issuer.jwks()))


# -- unknown kids -------------------------------------------------------------------


async def test_unknown_kid_with_nothing_baked_fetches_once_then_verifies(
    dev: DevIssuer, clock: Clock
) -> None:
    remote = make_remote(KeyStore(), httpx2.ASGITransport(app=dev.app), clock)
    # str(): mypy would otherwise keep the property narrowed to "none" across the await.
    assert str(remote.keys_source) == "none"
    token = dev.access_token()

    key = await lookup(remote, token)

    assert verifies(key, token)
    assert dev.stats.jwks_requests == 1
    assert remote.stats.fetches_ok == 1
    assert remote.keys_source == "remote"
    # The key is now local: the next token costs nothing.
    assert verifies(await lookup(remote, dev.access_token()), token)
    assert dev.stats.jwks_requests == 1


async def test_discovery_is_used_once_when_no_jwks_uri_is_known(
    dev: DevIssuer, clock: Clock
) -> None:
    remote = make_remote(KeyStore(), httpx2.ASGITransport(app=dev.app), clock, jwks_uri=None)
    await lookup(remote, dev.access_token())
    dev.rotate("ES256")
    clock.advance(COOLDOWN)
    await lookup(remote, dev.access_token())
    assert remote.jwks_uri == "http://127.0.0.1:9000/jwks"
    assert dev.stats.discovery_requests == 1
    assert dev.stats.jwks_requests == 2


async def test_rotation_costs_one_fetch_and_random_kids_cannot_force_more(
    dev: DevIssuer, clock: Clock
) -> None:
    store = baked_store(dev)
    remote = make_remote(store, httpx2.ASGITransport(app=dev.app), clock)
    dev.rotate()
    token = dev.access_token()

    key = await lookup(remote, token)

    assert verifies(key, token)
    assert dev.stats.jwks_requests == 1
    assert remote.keys_source == "baked+remote"
    assert store.has_kid(dev.kid)

    for _ in range(1000):
        with pytest.raises(KeyNotFound):
            await remote.key_for(secrets.token_hex(8), "RS256")
    assert dev.stats.jwks_requests == 1
    assert remote.stats.refetch_suppressed == 1000
    assert remote.stats.fetches_ok == 1

    # Once the cooldown has passed, an unknown kid may ask again (once).
    clock.advance(COOLDOWN)
    with pytest.raises(KeyNotFound):
        await remote.key_for("still-unknown", "RS256")
    assert dev.stats.jwks_requests == 2


async def test_concurrent_lookups_of_an_unknown_kid_share_one_fetch(
    dev: DevIssuer, clock: Clock
) -> None:
    app = httpx2.ASGITransport(app=dev.app)
    requests = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal requests
        requests += 1
        for _ in range(10):  # stay in flight while the other callers arrive
            await asyncio.sleep(0)
        return await app.handle_async_request(request)

    remote = make_remote(baked_store(dev), httpx2.MockTransport(handler), clock)
    dev.rotate("ES256")
    token = dev.access_token()

    keys = await asyncio.gather(*(lookup(remote, token) for _ in range(50)))

    assert requests == 1
    assert dev.stats.jwks_requests == 1
    assert all(verifies(key, token) for key in keys)
    assert remote.stats.refetch_suppressed == 0


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    dev: DevIssuer, clock: Clock
) -> None:
    release = asyncio.Event()
    app = httpx2.ASGITransport(app=dev.app)

    async def handler(request: httpx2.Request) -> httpx2.Response:
        await release.wait()
        return await app.handle_async_request(request)

    remote = make_remote(KeyStore(), httpx2.MockTransport(handler), clock)
    token = dev.access_token()
    first = asyncio.create_task(lookup(remote, token))
    second = asyncio.create_task(lookup(remote, token))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert verifies(await second, token)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert remote.stats.fetches_ok == 1


# -- baked keys -----------------------------------------------------------------------


async def test_a_baked_kid_never_triggers_a_fetch(dev: DevIssuer, clock: Clock) -> None:
    remote = make_remote(baked_store(dev), Forbidden(), clock)
    token = dev.access_token()
    assert verifies(await lookup(remote, token), token)
    # Not even long after the fact: baked keys never go stale.
    clock.advance(10 * STALE_IF_ERROR)
    assert verifies(await lookup(remote, token), token)
    assert remote.keys_source == "baked"
    assert remote.stats.fetches_ok == remote.stats.fetches_failed == 0


async def test_a_baked_kid_with_the_wrong_alg_is_refused_without_a_fetch(
    dev: DevIssuer, clock: Clock
) -> None:
    remote = make_remote(baked_store(dev), Forbidden(), clock)
    with pytest.raises(AlgorithmNotAllowed):
        await remote.key_for(dev.kid, "PS256")


async def test_a_fetched_key_never_replaces_a_baked_kid(
    dev: DevIssuer, issuer: DevIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = baked_store(dev)
    baked_kid = dev.kids("ES256")[0]
    baked_thumbprint = store.key_for(baked_kid, "ES256").jwk.thumbprint  # type: ignore[union-attr]
    # The issuer now publishes another P-256 key under the baked kid, plus a new kid.
    impostor = next(key for key in issuer.jwks()["keys"] if key["alg"] == "ES256")
    new = next(key for key in issuer.jwks()["keys"] if key["alg"] == "Ed25519")
    published = {"keys": [{**impostor, "kid": baked_kid}, new]}

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=published)

    remote = make_remote(store, httpx2.MockTransport(handler), clock)
    with caplog.at_level(logging.WARNING, logger="jwtedge.keys"):
        await remote.key_for(new["kid"], "Ed25519")
        clock.advance(COOLDOWN)
        await remote.refresh_now()

    kept = store.key_for(baked_kid, "ES256")
    assert kept.jwk is not None
    assert kept.jwk.thumbprint == baked_thumbprint
    token = dev.access_token(kid=baked_kid)
    assert verifies(await lookup(remote, token), token)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per conflicting key, not once per fetch
    assert baked_kid in warnings[0]
    assert impostor["x"] not in warnings[0]
    assert impostor["y"] not in warnings[0]


# -- failures and staleness -------------------------------------------------------------


async def test_failure_keeps_the_last_good_keys_then_stale_then_recovery(
    dev: DevIssuer, clock: Clock
) -> None:
    switch = Switch(dev.app)
    remote = make_remote(baked_store(dev), switch, clock)
    baked_token = dev.access_token()
    dev.rotate("ES256")
    token = dev.access_token()
    assert verifies(await lookup(remote, token), token)

    # The issuer goes down; a new unknown kid makes it try (after the cooldown) and fail.
    switch.up = False
    clock.advance(COOLDOWN)
    with pytest.raises(KeyNotFound):
        await remote.key_for("rotated-elsewhere", "ES256")
    assert remote.stats.fetches_failed == 1
    assert remote.last_fetch_error is not None
    assert "http://127.0.0.1:9000/jwks" in remote.last_fetch_error
    assert "connection" in remote.last_fetch_error

    # The last good set still serves, and says so.
    assert verifies(await lookup(remote, token), token)
    assert remote.stats.stale_served == 1
    assert remote.stale is False

    # Past stale_if_error since the last success, a fetched key is refused with 503...
    clock.advance(STALE_IF_ERROR)
    with pytest.raises(KeysStale) as info:
        await lookup(remote, token)
    assert info.value.status == 503
    assert info.value.code == "keys_stale"
    assert remote.stale is True
    assert remote.stats.fetches_failed == 2
    # ...while baked keys still serve.
    assert verifies(await lookup(remote, baked_token), baked_token)

    # Within the cooldown a flood cannot make it retry.
    requests = switch.requests
    for _ in range(100):
        with pytest.raises(KeysStale):
            await lookup(remote, token)
    assert switch.requests == requests

    # The issuer comes back: the next lookup after the cooldown fetches and recovers.
    switch.up = True
    clock.advance(COOLDOWN)
    assert verifies(await lookup(remote, token), token)
    assert remote.last_fetch_error is None
    assert remote.stale is False
    assert remote.stats.fetches_ok == 2


async def test_a_fetched_set_older_than_stale_if_error_is_refreshed_before_use(
    dev: DevIssuer, clock: Clock
) -> None:
    remote = make_remote(KeyStore(), httpx2.ASGITransport(app=dev.app), clock)
    token = dev.access_token()
    await lookup(remote, token)
    clock.advance(STALE_IF_ERROR + 1)
    assert verifies(await lookup(remote, token), token)
    assert dev.stats.jwks_requests == 2


async def test_nothing_baked_and_issuer_down_is_keys_stale(dev: DevIssuer, clock: Clock) -> None:
    switch = Switch(dev.app)
    switch.up = False
    remote = make_remote(KeyStore(), switch, clock)
    with pytest.raises(KeysStale):
        await lookup(remote, dev.access_token())
    assert remote.stale is True
    assert remote.keys_source == "none"
    assert remote.stats.fetches_failed == 1


async def test_an_invalid_set_counts_as_a_failed_fetch(clock: Clock, issuer: DevIssuer) -> None:
    leaked = {"keys": [issuer.private_jwk(issuer.kid)]}
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=leaked))
    remote = make_remote(KeyStore(), transport, clock)
    with pytest.raises(KeysStale):
        await remote.key_for("anything", "RS256")
    assert remote.stats.fetches_failed == 1
    assert remote.last_fetch_error is not None
    assert "private" in remote.last_fetch_error


# -- modes ------------------------------------------------------------------------------


async def test_never_mode_makes_no_call_ever(dev: DevIssuer, clock: Clock) -> None:
    remote = make_remote(KeyStore(), Forbidden(), clock, mode="never")
    with pytest.raises(KeyNotFound):
        await lookup(remote, dev.access_token())
    await remote.refresh_now()
    await remote.start()
    assert remote.stats.fetches_ok == remote.stats.fetches_failed == 0


async def test_never_mode_from_config_has_no_fetcher(dev: DevIssuer) -> None:
    config = AppConfig(
        auth={"issuer": dev.issuer, "audience": "api", "jwks": parse_jwks(dev.jwks())},
        keys={"remote": "never"},
    )
    remote = RemoteKeys.from_config(config, KeyStore.from_config(config), transport=Forbidden())
    dev.rotate("ES256")
    with pytest.raises(KeyNotFound):
        await lookup(remote, dev.access_token())
    await remote.aclose()


async def test_always_mode_fetches_at_start_and_baked_keys_serve_before(
    dev: DevIssuer, clock: Clock
) -> None:
    remote = make_remote(baked_store(dev), httpx2.ASGITransport(app=dev.app), clock, mode="always")
    baked_token = dev.access_token()
    assert verifies(await lookup(remote, baked_token), baked_token)
    assert dev.stats.jwks_requests == 0

    dev.rotate("ES256")
    await remote.start()
    assert dev.stats.jwks_requests == 1
    assert remote.keys_source == "baked+remote"
    token = dev.access_token()
    assert verifies(await lookup(remote, token), token)
    assert dev.stats.jwks_requests == 1


async def test_always_mode_start_survives_a_down_issuer(dev: DevIssuer, clock: Clock) -> None:
    switch = Switch(dev.app)
    switch.up = False
    remote = make_remote(baked_store(dev), switch, clock, mode="always")
    await remote.start()
    assert remote.stats.fetches_failed == 1
    assert remote.stale is False  # baked keys serve
    token = dev.access_token()
    assert verifies(await lookup(remote, token), token)


# -- ordering -----------------------------------------------------------------------------


async def test_an_older_response_never_overwrites_a_newer_one(dev: DevIssuer, clock: Clock) -> None:
    old_doc = dev.jwks()
    dev.rotate("ES256")
    new_doc = dev.jwks()
    first_in_flight = asyncio.Event()
    release_first = asyncio.Event()
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_in_flight.set()
            await release_first.wait()
            return httpx2.Response(200, json=old_doc)
        return httpx2.Response(200, json=new_doc)

    store = KeyStore()
    remote = make_remote(store, httpx2.MockTransport(handler), clock)
    token = dev.access_token()
    waiting = asyncio.create_task(lookup(remote, token))
    await first_in_flight.wait()

    await remote.refresh_now(force=True)  # the second fetch completes first
    assert store.has_kid(dev.kid)
    release_first.set()  # now the first, older one answers
    key = await waiting

    assert verifies(key, token)
    assert store.has_kid(dev.kid)
    assert set(store.kids) == {k["kid"] for k in new_doc["keys"]}
    assert remote.stats.fetches_ok == 2
    assert remote.stats.outdated_discarded == 1


# -- config and status ------------------------------------------------------------------


async def test_from_config_uses_the_baked_jwks_uri_and_reports_bake_age(dev: DevIssuer) -> None:
    baked_at = datetime(2025, 1, 1, tzinfo=UTC)
    config = AppConfig(
        auth={
            "issuer": dev.issuer,
            "audience": "api",
            "jwks": parse_jwks(dev.jwks()),
            "jwks_meta": {
                "issuer": dev.issuer,
                "jwks_uri": f"{dev.issuer}/jwks",
                "baked_at": baked_at.isoformat(),
            },
        },
        keys={"cooldown": "1m", "timeout": "2s", "stale_if_error": "1h"},
    )
    clock = Clock()
    remote = RemoteKeys.from_config(
        config,
        KeyStore.from_config(config),
        transport=httpx2.ASGITransport(app=dev.app),
        now=clock,
        wall=lambda: baked_at.timestamp() + 90.0,
    )
    assert remote.mode == "unknown-kid"
    assert remote.cooldown == 60.0
    assert remote.stale_if_error == 3600.0
    assert remote.jwks_uri == f"{dev.issuer}/jwks"
    assert remote.bake_age == 90.0
    assert remote.keys_source == "baked"

    dev.rotate("ES256")
    token = dev.access_token()
    assert verifies(await lookup(remote, token), token)
    assert dev.stats.jwks_requests == 1
    assert dev.stats.discovery_requests == 0
    assert remote.last_fetch_at == baked_at.timestamp() + 90.0
    await remote.aclose()


def test_from_config_refuses_a_plain_http_jwks_uri_to_a_public_host(dev: DevIssuer) -> None:
    config = AppConfig(
        auth={"issuer": dev.issuer, "audience": "api"},
        endpoints={"jwks_uri": "http://auth.example.com/jwks"},
    )
    with pytest.raises(ConfigInvalid, match="APP_CONFIG_ENDPOINTS__JWKS_URI"):
        RemoteKeys.from_config(config, KeyStore.from_config(config))
