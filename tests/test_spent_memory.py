"""Spent refresh tokens across a restart: Redis remembers them, a process does not.

A request with cookies from before a rotation (in flight during it, or whose
response was lost) may reach a freshly restarted app. Replaying that spent
refresh token makes issuers without a reuse interval (oidc-provider) revoke
the whole grant, the user's current session included. The Redis refresher
keeps spent markers in Redis (24 h at most), so a restarted process refuses
the replay itself; the in-process refresher's memory dies with the process.
Both are shown here against a real redis-server and a DevIssuer that, like
oidc-provider, revokes the family on reuse.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest

from tests.redis_server import RedisServer, require_redis_package, running_redis
from verifier.config import AppConfig
from verifier.errors import RefreshFailed
from verifier.jwks import parse_jwks
from verifier.refresh import InProcessRefresher, token_key
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

require_redis_package()

from redis.asyncio import Redis  # noqa: E402

from verifier.redis_refresher import RedisRefresher  # noqa: E402

ISSUER = "http://127.0.0.1:9000"
STORE_KEY = secrets.token_urlsafe(32)
RESOURCE = "https://api.example.test/"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def issuer() -> DevIssuer:
    """Replaying a spent refresh token revokes its family (reuse_grace 0), as oidc-provider does."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=False)
    yield client
    await client.aclose()


def config_for(issuer: DevIssuer, redis_server: RedisServer, **refresh: Any) -> AppConfig:
    return AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        keys={"remote": "never"},
        endpoints={"token": f"{issuer.issuer}/token"},
        refresh={"redis_url": redis_server.url, "store_key": STORE_KEY, **refresh},
        login={"resource": [RESOURCE]},
    )


class Recording(httpx2.AsyncBaseTransport):
    def __init__(self, issuer: DevIssuer) -> None:
        self.inner = httpx2.ASGITransport(app=issuer.app)
        self.forms: list[list[tuple[str, str]]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.forms.append(parse_qsl(request.content.decode()))
        return await self.inner.handle_async_request(request)


def process(issuer: DevIssuer, config: AppConfig) -> RedisRefresher:
    """One app process's refresher: its own memory, the shared Redis."""
    verifier = TokenVerifier.from_config(config)
    refresher = RedisRefresher.from_config(
        config, verifier, transport=httpx2.ASGITransport(app=issuer.app)
    )
    assert isinstance(refresher, RedisRefresher)
    return refresher


async def wait_for_result_to_expire(raw: Redis, refresh_token: str) -> None:
    key = f"jwtedge:refresh:{{{token_key(refresh_token)}}}:result".encode()
    deadline = time.monotonic() + 30  # the grace is milliseconds: a hang guard only
    while await raw.exists(key):
        assert time.monotonic() < deadline, "the grace result never expired"
        await asyncio.sleep(0.01)


async def test_after_a_restart_the_redis_refresher_refuses_a_spent_token_without_calling(
    issuer: DevIssuer, redis_server: RedisServer, raw: Redis
) -> None:
    config = config_for(issuer, redis_server, grace="10ms")
    tokens = issuer.login("u1")
    proof = TokenVerifier.from_config(config).verify_access(tokens["access_token"])
    before = process(issuer, config)
    try:
        await before.refresh(tokens["refresh_token"], proof=proof)
    finally:
        await before.aclose()  # the process exits
    assert issuer.stats.refresh_grants == 1
    await wait_for_result_to_expire(raw, tokens["refresh_token"])

    after = process(issuer, config)  # a new process: empty memory, the same Redis
    try:
        with pytest.raises(RefreshFailed) as caught:
            await after.refresh(tokens["refresh_token"], proof=proof)
    finally:
        await after.aclose()

    assert caught.value.context["reason"] == "spent"
    assert issuer.stats.refresh_grants == 1  # never replayed
    assert issuer.stats.reuse_detected == 0
    assert issuer.stats.revoked_families == 0
    spent = f"jwtedge:refresh:{{{token_key(tokens['refresh_token'])}}}:spent".encode()
    assert 0 < await raw.pttl(spent) <= 24 * 3600 * 1000


async def test_a_request_replayed_during_the_grace_after_a_restart_gets_the_new_tokens(
    issuer: DevIssuer, redis_server: RedisServer
) -> None:
    config = config_for(issuer, redis_server, grace="10s")
    tokens = issuer.login("u1")
    proof = TokenVerifier.from_config(config).verify_access(tokens["access_token"])
    before = process(issuer, config)
    try:
        first = await before.refresh(tokens["refresh_token"], proof=proof)
    finally:
        await before.aclose()

    after = process(issuer, config)
    try:
        again = await after.refresh(tokens["refresh_token"], proof=proof)
    finally:
        await after.aclose()

    assert again.tokens == first.tokens
    assert issuer.stats.refresh_grants == 1
    assert issuer.stats.revoked_families == 0


async def test_after_a_restart_the_in_process_refresher_replays_and_the_issuer_revokes_the_grant(
    issuer: DevIssuer,
) -> None:
    """The documented limit without Redis: the spent memory dies with the process."""
    config = AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        keys={"remote": "never"},
        endpoints={"token": f"{issuer.issuer}/token"},
    )
    verifier = TokenVerifier.from_config(config)
    tokens = issuer.login("u1")
    proof = TokenVerifier.from_config(config).verify_access(tokens["access_token"])
    refreshers = [
        InProcessRefresher.from_config(
            config, verifier, transport=httpx2.ASGITransport(app=issuer.app)
        )
        for _ in range(2)
    ]
    before, after = refreshers
    assert before is not None
    assert after is not None
    try:
        result = await before.refresh(tokens["refresh_token"], proof=proof)
        with pytest.raises(RefreshFailed) as caught:
            await after.refresh(tokens["refresh_token"], proof=proof)
        assert caught.value.context["reason"] == "invalid_grant"
        # The replay cost the user the session the first refresh gave them.
        assert result.tokens.refresh is not None
        with pytest.raises(RefreshFailed):
            await after.refresh(result.tokens.refresh, proof=proof)
    finally:
        await before.aclose()
        await after.aclose()

    assert issuer.stats.reuse_detected == 1
    assert issuer.stats.revoked_families == 1


async def test_the_redis_refresher_sends_the_resource_on_every_refresh_grant(
    issuer: DevIssuer, redis_server: RedisServer
) -> None:
    config = config_for(issuer, redis_server)
    recording = Recording(issuer)
    refresher = RedisRefresher.from_config(
        config, TokenVerifier.from_config(config), transport=recording
    )
    assert isinstance(refresher, RedisRefresher)
    tokens = issuer.login("u1")
    proof = TokenVerifier.from_config(config).verify_access(tokens["access_token"])
    try:
        result = await refresher.refresh(tokens["refresh_token"], proof=proof)
        assert result.tokens.refresh is not None
        await refresher.refresh(result.tokens.refresh, proof=proof)
    finally:
        await refresher.aclose()

    assert len(recording.forms) == 2
    for form in recording.forms:
        assert ("grant_type", "refresh_token") in form
        assert [value for name, value in form if name == "resource"] == [RESOURCE]
