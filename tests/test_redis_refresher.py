"""RedisRefresher against a real redis-server: two instances in one event loop
stand for two replicas (separate in-process state, one shared Redis); the
issuer is a DevIssuer reached through ``httpx2.ASGITransport``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import pytest

from tests.redis_server import RedisServer, require_redis_package, running_redis, skip_or_fail
from verifier.config import AppConfig
from verifier.errors import ConfigInvalid, RefreshFailed
from verifier.jwks import parse_jwks
from verifier.refresh import InProcessRefresher, RefreshResult, token_key
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

require_redis_package()

from redis.asyncio import Redis  # noqa: E402

from verifier.redis_refresher import RedisRefresher  # noqa: E402

ISSUER = "http://127.0.0.1:9000"
STORE_KEY = secrets.token_urlsafe(32)
NAMESPACE = "jwtedge:refresh"

Replica = Callable[..., RedisRefresher]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def dev_issuer() -> DevIssuer:
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


@pytest.fixture(scope="module")
def token_verifier(dev_issuer: DevIssuer) -> TokenVerifier:
    return TokenVerifier.from_config(_config(dev_issuer))


@pytest.fixture(autouse=True)
def _issuer_defaults(dev_issuer: DevIssuer) -> Iterator[None]:
    yield
    dev_issuer.token_delay = 0
    dev_issuer.fail_mode, dev_issuer.fail_count, dev_issuer.fail_delay = None, None, 30


@pytest.fixture
async def replica(
    redis_server: RedisServer, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> AsyncIterator[Replica]:
    """Makes RedisRefreshers (replicas) on the shared server; closes them after the test."""
    made: list[RedisRefresher] = []

    def make(url: str | None = None, **options: Any) -> RedisRefresher:
        options.setdefault("store_key", STORE_KEY)
        refresher = RedisRefresher(
            redis=url or redis_server.url,
            token_endpoint=f"{ISSUER}/token",
            client_id="web",
            verifier=token_verifier,
            transport=httpx2.ASGITransport(app=dev_issuer.app),
            **options,
        )
        made.append(refresher)
        return refresher

    yield make
    for refresher in made:
        await refresher.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client, to look at what Redis holds the way an operator would."""
    client = Redis.from_url(redis_server.url, decode_responses=False)
    yield client
    await client.aclose()


def _config(issuer: DevIssuer, **refresh: Any) -> AppConfig:
    return AppConfig(
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        keys={"remote": "never"},
        endpoints={"token": f"{issuer.issuer}/token"},
        refresh=refresh,
    )


def _expired_login(issuer: DevIssuer, verifier: TokenVerifier) -> tuple[str, dict[str, Any]]:
    """A fresh refresh token and the proof a browser with an expired access token gives."""
    tokens = issuer.login("u1")
    sid = verifier.verify_access(tokens["access_token"])["sid"]
    expired = issuer.access_token(sub="u1", sid=sid, iat=int(time.time()) - 600, ttl=60)
    return tokens["refresh_token"], verifier.verify_access(expired, check_expiry=False)


def _same_set(results: list[RefreshResult]) -> bool:
    return len({(r.tokens.access, r.tokens.id, r.tokens.refresh) for r in results}) == 1


async def test_two_replicas_make_exactly_one_issuer_call_for_one_expired_token(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(), replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    before = dataclasses.replace(dev_issuer.stats)
    dev_issuer.token_delay = 0.2  # both replicas are in flight at once

    results = await asyncio.gather(
        *[r.refresh(old, proof=proof) for _ in range(50) for r in (a, b)]
    )

    assert dev_issuer.stats.token_requests - before.token_requests == 1
    assert dev_issuer.stats.reuse_detected == before.reuse_detected
    assert _same_set(results)
    assert results[0].tokens.refresh not in (None, old)
    assert a.redis_stats.calls + b.redis_stats.calls == 1
    assert a.redis_stats.leases + b.redis_stats.leases == 1
    waiter = b if a.redis_stats.leases else a
    assert waiter.redis_stats.waited == 1
    assert waiter.redis_stats.store_hits == 1


async def test_one_worker_makes_one_lease_attempt_for_a_hundred_concurrent_requests(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a = replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    before = dev_issuer.stats.token_requests

    results = await asyncio.gather(*[a.refresh(old, proof=proof) for _ in range(100)])

    assert _same_set(results)
    assert dev_issuer.stats.token_requests - before == 1
    assert a.redis_stats.joined == 99
    assert a.redis_stats.leases == 1
    assert a.redis_stats.waited == a.redis_stats.degraded == 0


async def test_other_replica_hands_the_new_set_to_a_same_sid_proof_within_grace(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(), replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    first = await a.refresh(old, proof=proof)
    before = dev_issuer.stats.token_requests

    again = await b.refresh(old, proof=proof)

    assert again.tokens == first.tokens
    assert dev_issuer.stats.token_requests == before
    assert b.redis_stats.calls == 0
    assert b.redis_stats.store_hits == 1
    assert b.redis_stats.grace_reused == 1


async def test_old_refresh_token_alone_or_with_another_sid_gets_nothing_and_is_not_replayed(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(), replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    await a.refresh(old, proof=proof)
    before = dataclasses.replace(dev_issuer.stats)

    with pytest.raises(RefreshFailed):
        await b.refresh(old, proof=None)
    with pytest.raises(RefreshFailed):
        await b.refresh(old, proof={**proof, "sid": "another-session"})
    with pytest.raises(RefreshFailed):
        await a.refresh(old, proof={**proof, "sub": "someone-else"})

    assert dev_issuer.stats.token_requests == before.token_requests
    assert dev_issuer.stats.reuse_detected == before.reuse_detected
    assert b.redis_stats.reuse_refused == 2


async def test_old_refresh_token_after_the_grace_window_is_refused_without_replay(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(grace=0.3), replica(grace=0.3)
    old, proof = _expired_login(dev_issuer, token_verifier)
    await a.refresh(old, proof=proof)
    before = dataclasses.replace(dev_issuer.stats)
    await asyncio.sleep(0.5)

    for refresher in (b, a):
        with pytest.raises(RefreshFailed) as caught:
            await refresher.refresh(old, proof=proof)
        assert caught.value.context.get("reason") == "spent"

    assert dev_issuer.stats.token_requests == before.token_requests
    assert dev_issuer.stats.reuse_detected == before.reuse_detected


async def test_issuer_slower_than_the_lease_still_gets_exactly_one_call(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(lease=0.3), replica(lease=0.3)
    old, proof = _expired_login(dev_issuer, token_verifier)
    before = dataclasses.replace(dev_issuer.stats)
    dev_issuer.token_delay = 1.0

    first = asyncio.ensure_future(a.refresh(old, proof=proof))
    await asyncio.sleep(0.05)  # a holds the lease; b arrives during the slow call
    results = await asyncio.gather(first, *[b.refresh(old, proof=proof) for _ in range(5)])

    assert dev_issuer.stats.token_requests - before.token_requests == 1
    assert dev_issuer.stats.reuse_detected == before.reuse_detected
    assert _same_set(list(results))
    owner, waiter = (a, b) if a.redis_stats.leases else (b, a)
    assert owner.redis_stats.leases == 1
    assert owner.redis_stats.lease_renewals >= 2  # 1 s call, 0.3 s lease renewed every 0.1 s
    assert owner.redis_stats.lease_lost == 0
    assert waiter.redis_stats.calls == 0
    assert waiter.redis_stats.waited == 1


async def test_a_crashed_owners_lease_expires_and_a_waiter_takes_over(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier, raw: Redis
) -> None:
    b = replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    lease = f"{NAMESPACE}:{{{token_key(old)}}}:lease"
    await raw.set(lease, b"a-process-that-died", px=300)
    before = dev_issuer.stats.token_requests

    result = await b.refresh(old, proof=proof)

    assert result.tokens.access is not None
    assert dev_issuer.stats.token_requests - before == 1
    assert b.redis_stats.waited == 1
    assert b.redis_stats.leases == 1


async def test_an_owners_issuer_failure_reaches_waiters_without_a_second_call(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(), replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    before = dev_issuer.stats.token_requests
    dev_issuer.fail_mode, dev_issuer.fail_delay, dev_issuer.fail_count = "timeout", 0.3, 1

    first = asyncio.ensure_future(a.refresh(old, proof=proof))
    await asyncio.sleep(0.05)
    outcomes = await asyncio.gather(
        first, *[b.refresh(old, proof=proof) for _ in range(3)], return_exceptions=True
    )

    assert dev_issuer.stats.token_requests - before == 1
    assert all(isinstance(o, RefreshFailed) for o in outcomes)
    assert {o.context.get("reason") for o in outcomes if isinstance(o, RefreshFailed)} == {
        "issuer_error"
    }
    # An issuer error does not spend the token: a later request may try again.
    assert (await b.refresh(old, proof=proof)).tokens.access is not None
    assert dev_issuer.stats.token_requests - before == 2


@pytest.mark.parametrize("mode", ["bad_signature", "other_sub"])
async def test_an_issuer_answer_that_does_not_verify_spends_the_token_on_every_replica(
    mode: str, replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, b = replica(), replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    before = dataclasses.replace(dev_issuer.stats)
    dev_issuer.fail_mode, dev_issuer.fail_count = mode, 1

    with pytest.raises(RefreshFailed) as first:
        await a.refresh(old, proof=proof)
    for refresher in (a, b):
        with pytest.raises(RefreshFailed) as again:
            await refresher.refresh(old, proof=proof)
        assert again.value.context.get("reason") == "spent"

    assert first.value.context.get("reason") == "bad_tokens"
    assert dev_issuer.stats.token_requests - before.token_requests == 1
    assert dev_issuer.stats.reuse_detected == before.reuse_detected


def _proof_key() -> str:
    """A proof token's key (its SHA-256): fresh per test, so no cooldown carries over."""
    return token_key("proof-" + secrets.token_urlsafe(16))


def _random_refresh_token() -> str:
    return "rt-" + secrets.token_urlsafe(24)


async def test_a_failed_proof_cools_down_on_every_replica_then_refreshes(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier, raw: Redis
) -> None:
    a, b = replica(cooldown=0.5), replica(cooldown=0.5)
    old, proof = _expired_login(dev_issuer, token_verifier)
    proof_key = _proof_key()
    before = dev_issuer.stats.token_requests

    with pytest.raises(RefreshFailed) as first:
        await a.refresh(_random_refresh_token(), proof=proof, proof_key=proof_key)
    refusals = []
    for refresher in (b, b, a):
        with pytest.raises(RefreshFailed) as caught:
            await refresher.refresh(_random_refresh_token(), proof=proof, proof_key=proof_key)
        refusals.append(caught.value)
    with pytest.raises(RefreshFailed) as real:
        await b.refresh(old, proof=proof, proof_key=proof_key)

    assert first.value.context["reason"] == "invalid_grant"
    assert {exc.context["reason"] for exc in [*refusals, real.value]} == {"cooldown"}
    assert dev_issuer.stats.token_requests - before == 1
    hold = f"{NAMESPACE}:proof:{{{proof_key}}}"
    assert await raw.get(hold) == b"cooldown"
    assert 0 < await raw.pttl(hold) <= 500

    await asyncio.sleep(0.7)
    result = await b.refresh(old, proof=proof, proof_key=proof_key)

    assert result.tokens.access is not None
    assert dev_issuer.stats.token_requests - before == 2
    assert not await raw.exists(hold)  # a success leaves no hold behind


async def test_one_proof_drives_one_issuer_call_at_a_time_across_replicas(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier, raw: Redis
) -> None:
    a, b = replica(), replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    proof_key = _proof_key()
    before = dataclasses.replace(dev_issuer.stats)
    dev_issuer.token_delay = 0.3

    owner = asyncio.ensure_future(a.refresh(old, proof=proof, proof_key=proof_key))
    hold = f"{NAMESPACE}:proof:{{{proof_key}}}"
    for _ in range(100):
        if await raw.exists(hold):
            break
        await asyncio.sleep(0.01)
    outcomes = await asyncio.gather(
        # The same refresh token on the other replica waits for the owner's result...
        b.refresh(old, proof=proof, proof_key=proof_key),
        # ...while other refresh tokens with this proof get no call of their own.
        *(b.refresh(_random_refresh_token(), proof=proof, proof_key=proof_key) for _ in range(5)),
        return_exceptions=True,
    )
    result = await owner

    same, *others = outcomes
    assert isinstance(same, RefreshResult)
    assert same.tokens == result.tokens
    assert all(isinstance(o, RefreshFailed) for o in others)
    assert {o.context["reason"] for o in others if isinstance(o, RefreshFailed)} == {"cooldown"}
    assert dev_issuer.stats.token_requests - before.token_requests == 1
    assert dev_issuer.stats.reuse_detected == before.reuse_detected
    assert not await raw.exists(hold)


async def test_refused_tokens_are_remembered_apart_from_spent_ones_and_expire_sooner(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier, raw: Redis
) -> None:
    a, b = replica(failed_ttl=60, grace=0.2), replica(failed_ttl=60, grace=0.2)
    old, proof = _expired_login(dev_issuer, token_verifier)
    await a.refresh(old, proof=proof)
    spent = f"{NAMESPACE}:{{{token_key(old)}}}:spent"
    spent_ttl = await raw.pttl(spent)
    before = dev_issuer.stats.token_requests

    refused = [_random_refresh_token() for _ in range(30)]
    for token in refused:
        with pytest.raises(RefreshFailed):
            await a.refresh(token, proof=proof)
    assert dev_issuer.stats.token_requests - before == 30

    # The other replica refuses them from Redis, without a call, as the issuer did.
    with pytest.raises(RefreshFailed) as again:
        await b.refresh(refused[0], proof=proof)
    assert again.value.context == {"reason": "invalid_grant", "remembered": True}
    assert dev_issuer.stats.token_requests - before == 30
    for token in refused:
        prefix = f"{NAMESPACE}:{{{token_key(token)}}}"
        assert not await raw.exists(f"{prefix}:spent")
        assert 0 < await raw.pttl(f"{prefix}:failed") <= 60_000
    # The spent marker is untouched, and outlives every refusal marker.
    assert await raw.pttl(spent) > 60_000
    assert spent_ttl - await raw.pttl(spent) < 10_000
    await asyncio.sleep(0.3)  # past the grace: the old token is only spent now
    with pytest.raises(RefreshFailed) as replayed:
        await b.refresh(old, proof=proof)
    assert replayed.value.context.get("reason") == "spent"
    assert dev_issuer.stats.token_requests - before == 30


async def test_redis_outage_degrades_to_in_process_refresh_with_a_warning_and_no_token_in_logs(
    replica: Replica,
    dev_issuer: DevIssuer,
    token_verifier: TokenVerifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_redis() as own:  # this test kills its server; the others keep theirs
        a = replica(own.url)
        first_old, first_proof = _expired_login(dev_issuer, token_verifier)
        first = await a.refresh(first_old, proof=first_proof)
        assert a.redis_stats.leases == 1

        own.stop()  # Redis dies mid-test
        old, proof = _expired_login(dev_issuer, token_verifier)
        before = dataclasses.replace(dev_issuer.stats)
        with caplog.at_level(logging.DEBUG):
            results = await asyncio.gather(*[a.refresh(old, proof=proof) for _ in range(20)])
            later_old, later_proof = _expired_login(dev_issuer, token_verifier)
            later = await a.refresh(later_old, proof=later_proof)
            reused = await a.refresh(first_old, proof=first_proof)

    assert _same_set(results)
    assert later.tokens.access is not None
    assert reused.tokens == first.tokens  # kept in process: no replay of a spent token
    assert dev_issuer.stats.token_requests - before.token_requests == 2
    assert dev_issuer.stats.reuse_detected == before.reuse_detected
    assert a.redis_stats.redis_errors >= 1
    assert a.redis_stats.degraded == 2  # one flight per token, not one per request
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(r.name == "jwtedge.refresh.redis" for r in warnings)
    secrets_seen = [first_old, old, later_old, *_tokens(first, later, *results)]
    assert not any(token in caplog.text for token in secrets_seen)
    assert own.url not in caplog.text


async def test_redis_holds_only_expiring_ciphertext_never_a_readable_token_set(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier, raw: Redis
) -> None:
    a = replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    result = await a.refresh(old, proof=proof)
    prefix = f"{NAMESPACE}:{{{token_key(old)}}}"

    names = sorted([name async for name in raw.scan_iter(match=f"{prefix}:*")])

    assert names == [f"{prefix}:result".encode(), f"{prefix}:spent".encode()]  # lease released
    tokens = [old, *_tokens(result)]
    for name in names:
        value = await raw.get(name)
        assert value is not None
        assert b"eyJ" not in value
        assert not any(token.encode() in value or token.encode() in name for token in tokens)
        ttl = await raw.pttl(name)
        assert ttl > 0
    assert await raw.pttl(f"{prefix}:result") <= 10_000
    sealed = await raw.get(f"{prefix}:result")
    assert sealed is not None
    assert len(sealed) > 12 + 16  # version, nonce, ciphertext and tag


async def test_a_replica_with_another_store_key_cannot_read_the_stored_set_and_does_not_call(
    replica: Replica, dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    a, stranger = replica(), replica(store_key=secrets.token_urlsafe(32))
    old, proof = _expired_login(dev_issuer, token_verifier)
    await a.refresh(old, proof=proof)
    before = dev_issuer.stats.token_requests

    with pytest.raises(RefreshFailed) as caught:
        await stranger.refresh(old, proof=proof)

    assert caught.value.context.get("reason") == "store_unreadable"
    assert dev_issuer.stats.token_requests == before


async def test_a_lost_lease_keeps_the_result_in_process_and_is_counted_and_logged(
    replica: Replica,
    dev_issuer: DevIssuer,
    token_verifier: TokenVerifier,
    raw: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = replica()
    old, proof = _expired_login(dev_issuer, token_verifier)
    lease = f"{NAMESPACE}:{{{token_key(old)}}}:lease"
    dev_issuer.token_delay = 0.5

    with caplog.at_level(logging.WARNING):
        flight = asyncio.ensure_future(a.refresh(old, proof=proof))
        for _ in range(100):
            if await raw.exists(lease):
                break
            await asyncio.sleep(0.01)
        await raw.delete(lease)  # evicted, or expired under a stalled Redis
        result = await flight

    assert result.tokens.access is not None
    assert a.redis_stats.lease_lost == 1
    assert a.redis_stats.degraded == 1
    assert any(r.name == "jwtedge.refresh.redis" for r in caplog.records)
    assert not any(token in caplog.text for token in [old, *_tokens(result)])


def test_from_config_picks_redis_only_with_a_redis_url_and_requires_the_store_key(
    dev_issuer: DevIssuer, token_verifier: TokenVerifier, redis_server: RedisServer
) -> None:
    plain = InProcessRefresher.from_config(_config(dev_issuer), token_verifier)
    assert type(RedisRefresher.from_config(_config(dev_issuer), token_verifier)) is type(plain)

    with pytest.raises(ConfigInvalid) as caught:
        RedisRefresher.from_config(_config(dev_issuer, redis_url=redis_server.url), token_verifier)
    assert "APP_CONFIG_REFRESH__STORE_KEY" in str(caught.value)

    with pytest.raises(ConfigInvalid) as short:
        RedisRefresher.from_config(
            _config(dev_issuer, redis_url=redis_server.url, store_key="short"), token_verifier
        )
    assert "APP_CONFIG_REFRESH__STORE_KEY" in str(short.value)

    made = RedisRefresher.from_config(
        _config(dev_issuer, redis_url=redis_server.url, store_key=STORE_KEY, grace="3s"),
        token_verifier,
    )
    assert isinstance(made, RedisRefresher)
    assert made.grace == 3.0
    assert made.spent_ttl == 86400.0


def test_repr_and_stats_hold_no_secrets(
    dev_issuer: DevIssuer, token_verifier: TokenVerifier
) -> None:
    url = "redis://:redis-SECRET-pw@127.0.0.1:1/0"
    made = RedisRefresher.from_config(
        _config(dev_issuer, redis_url=url, store_key=STORE_KEY), token_verifier
    )
    assert isinstance(made, RedisRefresher)
    shown = repr(made) + repr(made.redis_stats) + str(dataclasses.asdict(made.redis_stats))
    assert "redis-SECRET-pw" not in shown
    assert STORE_KEY not in shown
    assert all(isinstance(v, int) for v in dataclasses.asdict(made.redis_stats).values())


def test_a_missing_redis_fails_the_run_under_ci_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        skip_or_fail("redis-server is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("redis-server is not installed")


def _tokens(*results: RefreshResult) -> list[str]:
    return [t for r in results for t in (r.tokens.access, r.tokens.id, r.tokens.refresh) if t]
