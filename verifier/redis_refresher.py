"""Refresh coordination across workers and replicas on Redis.

:class:`RedisRefresher` runs the same contract as
:class:`~verifier.refresh.InProcessRefresher` (one issuer call per refresh
token, a bounded grace for parallel tabs, the same proof rule, never a
replay) for every process that shares one Redis. Per refresh token, keyed by
its SHA-256 (never the token) under a hash tag so a cluster keeps them in one
slot::

    jwtedge:refresh:{<sha256>}:lease    owner of the issuer call (SET NX PX)
    jwtedge:refresh:{<sha256>}:result   the new token set, AES-GCM sealed, PX = grace
    jwtedge:refresh:{<sha256>}:spent    "1", PX = spent_ttl: never replay this token
    jwtedge:refresh:{<sha256>}:failed   "1", PX = failed_ttl: the issuer refused it
    jwtedge:refresh:{<sha256>}:done     pub/sub channel: "done" or "failed:<reason>"
    jwtedge:refresh:proof:{<sha256>}    the proof token's hold: the refresh-token key
                                        its call is for, or "cooldown" after a failure

Refused tokens (``invalid_grant``) are remembered under their own key with a
shorter life than spent ones, so failures never replace a spent marker and,
under a ``volatile-ttl`` eviction policy, go first. The proof hold is the
in-process cooldown shared: one issuer call per proof token at a time across
every replica, and none for ``cooldown`` seconds after it failed.

A flight (one per token per process: requests in one worker join it) tries
to take the lease with one script that also says whether the token is
already settled. The owner calls the issuer while a background task renews
the lease (compare-and-pexpire) every third of its life, so a slow issuer
cannot let a second replica in the way a fixed lease does (oauth2-proxy's
2 s lock). The owner then, atomically, stores the sealed result, marks the
token spent, drops the lease and publishes. Other replicas subscribe and
re-check with backoff (a dead owner's lease expires and a waiter takes over),
bounded by ``refresh.timeout`` plus a lease and a second.

When Redis fails (connection errors, timeouts) or a lease is lost, the flight
degrades to the in-process coordinator: it calls the issuer itself, logs a
warning (never a token or the URL) and counts it; Redis is skipped for
``retry_after`` seconds before it is tried again. Page loads never fail
because of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
from cryptography.exceptions import InvalidTag
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry

from .config import AppConfig
from .errors import ConfigInvalid, RefreshFailed, VerifierError
from .inprocess_refresher import (
    ClientAuth,
    InProcessRefresher,
    Kept,
    RefreshResult,
    RefreshStats,
    mark_retrieved,
    token_key,
)
from .redis_store import (
    ACQUIRE,
    CLAIM_PROOF,
    FAILED_TTL,
    MIN_STORE_KEY_BYTES,
    NO_BACKOFF,
    OURS,
    REDIS_ERRORS,
    RELEASE_PROOF,
    RENEW,
    SETTLE,
    SETTLED,
    SPENT_TTL_CAP,
    STORE_KEY_SETTING,
    Sealer,
    StoreKeys,
    encode_result,
    ms,
    store_key_bytes,
)
from .tokens import TokenVerifier

__all__ = ["FAILED_TTL", "MIN_STORE_KEY_BYTES", "RedisRefreshStats", "RedisRefresher"]

logger = logging.getLogger("jwtedge.refresh.redis")

#: Failures after which the token must never reach the issuer again because it
#: is spent: the issuer answered 200 (so rotated it) with tokens that do not
#: verify, or another process spent it.
_SPENT_REASONS = frozenset({"bad_tokens", "spent"})
#: The issuer refused the token: remembered apart, for ``failed_ttl``.
_FAILED_REASONS = frozenset({"invalid_grant"})


@dataclass
class RedisRefreshStats(RefreshStats):
    """:class:`RefreshStats` plus the shared store's outcomes; never tokens."""

    #: Leases won: issuer calls coordinated through Redis.
    leases: int = 0
    lease_renewals: int = 0
    #: Leases that expired or changed owner while their issuer call ran.
    lease_lost: int = 0
    #: Flights that waited for another process's issuer call.
    waited: int = 0
    #: Token sets read from Redis (refreshed by another process).
    store_hits: int = 0
    redis_errors: int = 0
    #: Flights that ran in process because Redis failed or a lease was lost.
    degraded: int = 0


@dataclass(frozen=True, slots=True)
class _Landed:
    """What a flight produced: the result, whether this process's issuer call
    made it (for the initiator's own proof), and how long to keep it."""

    result: RefreshResult
    called: bool
    keep: float


class RedisRefresher(InProcessRefresher):
    """Single-flight refresh shared by every process on one Redis; see the module doc.

    ``redis`` is a URL (a client is made with short timeouts and one retry) or
    a ready ``redis.asyncio.Redis`` with ``decode_responses=False``.
    ``store_key`` (>= 32 bytes, the same on every replica) seals stored token
    sets. ``lease`` is the lease's life between renewals, ``spent_ttl`` how
    long a spent token is remembered, ``failed_ttl`` how long a token the issuer
    refused is, ``cooldown`` how long a proof token is refused after a failed
    flight (``timeout`` by default), ``redis_timeout`` the per-command socket
    timeout and ``retry_after`` how long Redis is skipped after it failed.
    """

    def __init__(
        self,
        *,
        redis: Redis | str,
        store_key: str | bytes,
        token_endpoint: str,
        client_id: str,
        verifier: TokenVerifier,
        client_secret: str | None = None,
        client_auth: ClientAuth | None = None,
        grace: float = 10.0,
        timeout: float = 10.0,
        cooldown: float | None = None,
        lease: float = 5.0,
        spent_ttl: float = SPENT_TTL_CAP,
        failed_ttl: float = FAILED_TTL,
        redis_timeout: float = 1.0,
        retry_after: float = 5.0,
        namespace: str = "jwtedge:refresh",
        transport: httpx2.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.monotonic,
        resource: Sequence[str] = (),
    ) -> None:
        super().__init__(
            token_endpoint=token_endpoint,
            client_id=client_id,
            verifier=verifier,
            client_secret=client_secret,
            client_auth=client_auth,
            grace=grace,
            timeout=timeout,
            cooldown=cooldown,
            transport=transport,
            now=now,
            resource=resource,
        )
        # ``stats`` keeps the Refresher protocol's type; ``redis_stats`` is the
        # same object with the Redis counters typed.
        self._counters = RedisRefreshStats()
        self.stats = self._counters
        self._sealer = Sealer(store_key_bytes(store_key))
        self._owns_redis = isinstance(redis, str)
        client: Redis = (
            Redis.from_url(
                redis,
                socket_timeout=redis_timeout,
                socket_connect_timeout=redis_timeout,
                retry=Retry(NO_BACKOFF(), 1),
                decode_responses=False,
            )
            if isinstance(redis, str)
            else redis
        )
        self._redis = client
        self.lease = lease
        self.spent_ttl = spent_ttl
        self.failed_ttl = min(failed_ttl, spent_ttl)
        self.retry_after = retry_after
        self.namespace = namespace
        self._acquire = client.register_script(ACQUIRE)
        self._renew_lease = client.register_script(RENEW)
        self._settle_script = client.register_script(SETTLE)
        self._claim_proof_script = client.register_script(CLAIM_PROOF)
        self._release_proof_script = client.register_script(RELEASE_PROOF)
        self._shared: dict[str, asyncio.Future[_Landed]] = {}
        self._skip_redis_until: float | None = None

    @classmethod
    def from_config(
        cls,
        config: AppConfig,
        verifier: TokenVerifier,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> InProcessRefresher | None:
        """A :class:`RedisRefresher` when ``refresh.redis_url`` is set, else the
        in-process one; ``None`` when refresh is off or there is no token endpoint.

        Raises :class:`~verifier.errors.ConfigInvalid` naming
        ``APP_CONFIG_REFRESH__STORE_KEY`` when Redis is set without a store key.
        """
        settings = config.refresh
        if not settings.enabled or settings.redis_url is None:
            return InProcessRefresher.from_config(config, verifier, transport=transport, now=now)
        if settings.store_key is None:
            raise ConfigInvalid(
                f"invalid configuration: {STORE_KEY_SETTING} is required when "
                "APP_CONFIG_REFRESH__REDIS_URL is set (it encrypts the token sets kept in Redis)",
                problems=[STORE_KEY_SETTING],
            )
        endpoint = config.endpoint("token")
        if endpoint is None or config.auth.client_id is None:
            return None
        secret = config.auth.client_secret
        return cls(
            redis=settings.redis_url.get_secret_value(),
            store_key=settings.store_key.get_secret_value(),
            token_endpoint=endpoint,
            client_id=config.auth.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            verifier=verifier,
            grace=settings.grace,
            timeout=settings.timeout,
            cooldown=settings.timeout,
            spent_ttl=min(config.cookies.refresh_max_age, SPENT_TTL_CAP),
            transport=transport,
            now=now,
            resource=config.login.resource,
        )

    @property
    def redis_stats(self) -> RedisRefreshStats:
        """``stats`` (the same object: do not replace it) with the Redis counters typed."""
        return self._counters

    def __repr__(self) -> str:
        return (
            f"RedisRefresher(token_endpoint={self.token_endpoint!r}, namespace={self.namespace!r})"
        )

    async def aclose(self) -> None:
        """Close the HTTP client, and the Redis client when this refresher made it."""
        await super().aclose()
        if self._owns_redis:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.aclose()

    async def refresh(
        self,
        refresh_token: str,
        *,
        proof: Mapping[str, Any] | None,
        proof_key: str | None = None,
    ) -> RefreshResult:
        """New tokens for ``refresh_token`` (see :class:`~verifier.refresh.Refresher`)."""
        key = token_key(refresh_token)
        remembered = self._from_memory(key, proof)
        if remembered is not None:
            return remembered
        flight = self._shared.get(key)
        joined = flight is not None
        if flight is None:
            self._claim_proof(proof_key, key)
            # Its own task: a disconnecting client must not cancel the others' refresh.
            flight = asyncio.ensure_future(self._fly_shared(key, refresh_token, proof, proof_key))
            flight.add_done_callback(mark_retrieved)
            self._shared[key] = flight
        else:
            self.stats.joined += 1
        landed = await asyncio.shield(flight)
        if landed.called and not joined:
            return landed.result  # verified against this caller's own proof
        return self._hand_out(landed.result, proof, joined=joined)

    async def _fly_shared(
        self,
        key: str,
        refresh_token: str,
        proof: Mapping[str, Any] | None,
        proof_key: str | None,
    ) -> _Landed:
        try:
            landed = await self._coordinate(key, refresh_token, proof, proof_key)
        except RefreshFailed as exc:
            self._remember_failure(key, exc)
            # A cooldown Redis reported is not a new failure: it must not prolong itself.
            failed = exc.context.get("reason") != "cooldown"
            self._release_proof(proof_key, key, failed=failed)
            raise
        else:
            self._kept[key] = Kept(landed.result, self.now() + landed.keep)
            self._remember_spent(key)
            self._release_proof(proof_key, key, failed=False)
            return landed
        finally:
            self._shared.pop(key, None)

    async def _coordinate(
        self,
        key: str,
        refresh_token: str,
        proof: Mapping[str, Any] | None,
        proof_key: str | None,
    ) -> _Landed:
        """Through Redis; in process while Redis is known to be down or fails
        before this flight called the issuer."""
        if self._skip_redis_until is not None and self.now() < self._skip_redis_until:
            return await self._in_process(refresh_token, proof)
        hold = f"{self.namespace}:proof:{{{proof_key}}}" if proof_key is not None else None
        try:
            if hold is not None:
                await self._claim_shared_proof(hold, key)
            try:
                landed = await self._through_redis(
                    StoreKeys.of(self.namespace, key), refresh_token, proof
                )
            except RefreshFailed as exc:
                if hold is not None and exc.context.get("reason") != "cooldown":
                    await self._settle_shared_proof(hold, key, failed=True)
                raise
            if hold is not None:
                await self._settle_shared_proof(hold, key, failed=False)
            return landed
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return await self._in_process(refresh_token, proof)

    async def _claim_shared_proof(self, hold: str, key: str) -> None:
        """The proof's hold on Redis, for this token; :class:`RefreshFailed` (cooldown)
        while another replica's call with it runs or it cools down."""
        held = await self._claim_proof_script(
            keys=[hold], args=[key, ms(self.timeout + self.lease + 1.0)]
        )
        if held != 1:
            raise RefreshFailed(
                "a refresh with this token failed or is under way elsewhere", reason="cooldown"
            )

    async def _settle_shared_proof(self, hold: str, key: str, *, failed: bool) -> None:
        """Start the shared cooldown, or drop the hold; runs after the issuer may
        have answered, so a Redis failure here is logged, never retried in process."""
        try:
            if failed:
                await self._redis.set(hold, b"cooldown", px=ms(self.cooldown))
            else:
                await self._release_proof_script(keys=[hold], args=[key])
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)

    async def _through_redis(
        self, keys: StoreKeys, refresh_token: str, proof: Mapping[str, Any] | None
    ) -> _Landed:
        owner = secrets.token_hex(16)
        deadline = self.now() + self.timeout + self.lease + 1.0
        pubsub = None
        step = 0.01
        # Once this flight holds the lease, or another process is known to hold
        # or have spent this token, a Redis failure must not send the token to
        # the issuer (again): a replay makes issuers revoke the whole family.
        # This refresh fails instead; the page is served as without a refresh.
        involved = False
        try:
            while True:
                outcome = await self._acquire(keys=keys.settled, args=[owner, ms(self.lease)])
                self._redis_ok()
                involved = True
                if outcome == OURS:
                    return await self._own(keys, owner, refresh_token, proof)
                if outcome == SETTLED:
                    landed = await self._read_settled(keys)
                    if landed is not None:
                        return landed
                    continue  # the result expired between the two calls: look again
                if pubsub is None:
                    self._counters.waited += 1
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(keys.channel)
                    continue  # the owner may have published before we subscribed
                await self._wait(pubsub, min(step, deadline - self.now()))
                step = min(step * 2, 0.2)
        except REDIS_ERRORS as exc:
            if not involved:
                raise
            self._redis_failed(exc)
            self.stats.failed += 1
            raise RefreshFailed(
                "Redis failed during a refresh already under way", reason="unavailable"
            ) from None
        finally:
            if pubsub is not None:
                # redis-py leaves PubSub.aclose unannotated.
                close: Callable[[], Awaitable[None]] = pubsub.aclose
                with contextlib.suppress(*REDIS_ERRORS):
                    await close()

    async def _wait(self, pubsub: PubSub, timeout: float) -> None:
        """Until the owner publishes or ``timeout``; a published failure is raised."""
        if timeout <= 0:
            self.stats.failed += 1
            raise RefreshFailed(
                "timed out waiting for another process's refresh", reason="unavailable"
            )
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        data = message.get("data") if isinstance(message, dict) else None
        if isinstance(data, bytes) and data.startswith(b"failed:"):
            reason = data.removeprefix(b"failed:").decode("ascii", "replace")
            raise RefreshFailed(f"the refresh failed in another process ({reason})", reason=reason)

    async def _own(
        self, keys: StoreKeys, owner: str, refresh_token: str, proof: Mapping[str, Any] | None
    ) -> _Landed:
        """Hold the lease (renewed) while this process calls the issuer, then settle."""
        self._counters.leases += 1
        renewer = asyncio.ensure_future(self._renew(keys.lease, owner))
        try:
            result = await self._bounded_call(refresh_token, proof)
        except RefreshFailed as exc:
            reason = str(exc.context.get("reason") or "issuer_error")
            await self._settle(
                keys,
                owner,
                None,
                spent=reason in _SPENT_REASONS,
                failed=reason in _FAILED_REASONS,
                message=f"failed:{reason}",
            )
            raise
        finally:
            # Not awaited: swallowing its CancelledError could swallow ours.
            renewer.cancel()
        sealed = self._sealer.seal(keys.result, encode_result(result))
        await self._settle(keys, owner, sealed, spent=True, message="done")
        return _Landed(result, called=True, keep=self.grace)

    async def _renew(self, lease_key: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                renewed = await self._renew_lease(keys=[lease_key], args=[owner, ms(self.lease)])
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)
                return
            if not renewed:
                return  # lost: settling reports it
            self._counters.lease_renewals += 1

    async def _settle(
        self,
        keys: StoreKeys,
        owner: str,
        sealed: bytes | None,
        *,
        spent: bool,
        message: str,
        failed: bool = False,
    ) -> None:
        """Store the outcome, drop the lease and tell the waiters, in one step.

        Runs after the issuer answered, so a failure here degrades (the caller
        keeps its result in process) instead of ever calling the issuer again.
        """
        try:
            owned = await self._settle_script(
                keys=keys.settled,
                args=[
                    owner,
                    sealed or b"",
                    ms(self.grace),
                    ms(self.spent_ttl) if spent else "",
                    keys.channel,
                    message,
                    ms(self.failed_ttl) if failed else "",
                ],
            )
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            self._counters.degraded += 1
            return
        if not owned:
            self._counters.lease_lost += 1
            self._counters.degraded += 1
            logger.warning(
                "refresh lease lost while the issuer answered (Redis too slow or evicting?); "
                "the result is kept in process"
            )

    async def _read_settled(self, keys: StoreKeys) -> _Landed | None:
        """The stored result, or :class:`RefreshFailed` when only the spent or
        refused marker is left."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.result)
            pipe.pttl(keys.result)
            pipe.exists(keys.spent)
            pipe.exists(keys.failed)
            sealed, pttl, spent, failed = await pipe.execute()
        if sealed is not None:
            result = self._unseal(keys.result, sealed)
            self._counters.store_hits += 1
            return _Landed(result, called=False, keep=max(int(pttl), 0) / 1000)
        if spent:
            self.stats.reuse_refused += 1
            raise RefreshFailed("this refresh token was already spent", reason="spent")
        if failed:
            self.stats.reuse_refused += 1
            raise RefreshFailed(
                "the issuer already refused this refresh token",
                reason="invalid_grant",
                remembered=True,
            )
        return None

    def _unseal(self, name: str, sealed: bytes) -> RefreshResult:
        try:
            body = orjson.loads(self._sealer.open(name, sealed))
        except (InvalidTag, orjson.JSONDecodeError):
            logger.warning(
                "a stored token set does not open: is refresh.store_key the same on every replica?"
            )
            self.stats.failed += 1
            raise RefreshFailed(
                "the shared token set could not be read", reason="store_unreadable"
            ) from None
        try:
            # Verified again here: a store that lies cannot hand out foreign tokens.
            return self._verify(body, None)
        except VerifierError as exc:
            self.stats.failed += 1
            raise RefreshFailed(
                f"the shared token set does not verify ({exc.code})", reason="bad_tokens"
            ) from None

    async def _in_process(self, refresh_token: str, proof: Mapping[str, Any] | None) -> _Landed:
        self._counters.degraded += 1
        result = await self._bounded_call(refresh_token, proof)
        return _Landed(result, called=True, keep=self.grace)

    async def _bounded_call(
        self, refresh_token: str, proof: Mapping[str, Any] | None
    ) -> RefreshResult:
        """The issuer call, bounded in total so waiters elsewhere can bound theirs."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._call_issuer(refresh_token, proof)
        except TimeoutError:
            self.stats.failed += 1
            raise RefreshFailed(
                "token endpoint did not answer in time", reason="unavailable"
            ) from None

    def _redis_failed(self, exc: BaseException) -> None:
        self._counters.redis_errors += 1
        if self._skip_redis_until is None:
            # Class name only: redis-py messages can name hosts; tokens never reach here.
            logger.warning(
                "Redis unavailable for refresh coordination (%s): refreshing in process, "
                "retrying Redis in %.0f s",
                type(exc).__name__,
                self.retry_after,
            )
        self._skip_redis_until = self.now() + self.retry_after

    def _redis_ok(self) -> None:
        if self._skip_redis_until is not None:
            self._skip_redis_until = None
            logger.info("Redis is back: refreshes are coordinated across processes again")
