"""The remote key layer: baked keys first, the issuer's JWKS only when needed.

Modelled on panva/jose's ``jwks/remote.ts`` over the local :class:`KeyStore`:

- the local store is always asked first, with no I/O; a kid the bake holds
  never causes a fetch, and baked keys never go stale;
- otherwise, by ``keys.remote``: ``never`` makes no call, ever;
  ``unknown-kid`` fetches when nothing is baked or a token names a kid the
  store lacks; ``always`` does the same and also fetches at start-up
  (:meth:`RemoteKeys.start`);
- one fetch in flight at a time: concurrent callers await the same task;
- ``cooldown`` seconds after any fetch attempt no new fetch starts, so a flood
  of random kids cannot make it fetch (``refetch_suppressed`` counts them);
- a sequence number per fetch, so an older response never overwrites a newer
  one (two fetches overlap only when :meth:`RemoteKeys.refresh_now` forces one);
- a failed fetch keeps the last good set, for at most ``stale_if_error``
  seconds since the last successful fetch; past that a token whose key must
  come from the issuer gets :class:`~verifier.errors.KeysStale` (503).

Merging: the store holds the baked keys plus the latest fetched set. **Baked
keys win**: a fetched key whose kid is baked is dropped, and when its
thumbprint differs a warning names the kid (never key material). The bake is
what the operator reviewed and deployed; a changed key under an old kid is
either a mistake or an attack, and neither should silently replace it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from .clock import monotonic_clock, wall_clock
from .errors import ConfigInvalid, JWKSError, KeyNotFound, KeysStale
from .fetch import Fetcher, is_loopback_url
from .jwks import JWKSet, PublicJWK

if TYPE_CHECKING:
    import httpx2

    from .config import AppConfig
    from .keys import KeyStore, VerificationKey

__all__ = ["RemoteKeys", "RemoteKeysStats", "RemoteMode"]

logger = logging.getLogger("jwtedge.keys")

RemoteMode = Literal["unknown-kid", "never", "always"]
KeysSource = Literal["baked", "remote", "baked+remote", "none"]


@dataclass(slots=True)
class RemoteKeysStats:
    """Counters for metrics and ``/readyz``: every fetch is counted."""

    fetches_ok: int = 0
    fetches_failed: int = 0
    #: Lookups that wanted a fetch but were inside the cooldown.
    refetch_suppressed: int = 0
    #: Lookups served from the last good fetched set while the issuer was failing.
    stale_served: int = 0
    #: Fetch results dropped because a newer one had already been applied.
    outdated_discarded: int = 0


class RemoteKeys:
    """A :class:`~verifier.keys.KeyStore` with an optional fetch-on-demand layer.

    ``jwks_uri`` is fetched directly when known; otherwise the issuer's
    discovery document names it (and the answer is remembered). ``now`` is a
    monotonic clock for cooldown and staleness; ``wall`` (epoch seconds) only
    dates things for humans (``last_fetch_at``, the bake age).
    """

    def __init__(
        self,
        store: KeyStore,
        fetcher: Fetcher | None,
        *,
        issuer: str,
        jwks_uri: str | None = None,
        mode: RemoteMode = "unknown-kid",
        cooldown: float = 30.0,
        stale_if_error: float = 24 * 3600.0,
        baked_at: datetime | None = None,
        now: Callable[[], float] = monotonic_clock,
        wall: Callable[[], float] = wall_clock,
    ) -> None:
        if mode != "never" and fetcher is None:
            raise ValueError(f"keys.remote={mode!r} needs a Fetcher")
        self.store = store
        self.mode: RemoteMode = mode
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.cooldown = cooldown
        self.stale_if_error = stale_if_error
        self.baked_at = baked_at
        self.stats = RemoteKeysStats()
        #: The last fetch failure, one line, no secrets; None once a fetch succeeds.
        self.last_fetch_error: str | None = None
        #: Epoch seconds of the last completed fetch attempt (success or failure).
        self.last_fetch_at: float | None = None
        self._fetcher = fetcher if mode != "never" else None
        self._now = now
        self._wall = wall
        self._baked: JWKSet | None = store.jwks
        baked_keys = store.jwks.keys if store.jwks is not None else ()
        self._baked_by_kid = {key.kid: key for key in baked_keys if key.kid is not None}
        self._baked_thumbprints = frozenset(key.thumbprint for key in baked_keys)
        self._remote: JWKSet | None = None
        # The bake is the last good set we know of: an unknown kid while the
        # issuer is down is key_not_found, until stale_if_error has passed.
        self._last_ok: float | None = self._now() if baked_keys else None
        self._last_attempt: float | None = None
        self._task: asyncio.Task[JWKSError | None] | None = None
        self._seq = 0
        self._data_seq = 0
        self._outcome_seq = 0
        self._warned: set[tuple[str, str]] = set()

    @classmethod
    def from_config(
        cls,
        config: AppConfig,
        key_store: KeyStore,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        now: Callable[[], float] = monotonic_clock,
        wall: Callable[[], float] = wall_clock,
    ) -> RemoteKeys:
        """The remote layer ``config.keys`` asks for, over ``key_store`` (no I/O here).

        A request may wait on a fetch, so the run-time budget is tighter than
        the bake's: ``keys.timeout`` per attempt, one retry, twice
        ``keys.timeout`` in total.
        """
        keys = config.keys
        jwks_uri = config.jwks_uri
        # Checked here so a bad URL fails at start-up, not on the first unknown kid.
        if (
            keys.remote != "never"
            and jwks_uri is not None
            and not (
                jwks_uri.startswith("https://")
                or (jwks_uri.startswith("http://") and is_loopback_url(jwks_uri))
            )
        ):
            raise ConfigInvalid(
                "APP_CONFIG_ENDPOINTS__JWKS_URI: must be https (http only for loopback hosts)",
                setting="APP_CONFIG_ENDPOINTS__JWKS_URI",
            )
        fetcher = None
        if keys.remote != "never":
            fetcher = Fetcher(
                transport=transport, timeout=keys.timeout, deadline=2 * keys.timeout, retries=1
            )
        meta = config.auth.jwks_meta
        return cls(
            key_store,
            fetcher,
            issuer=config.auth.issuer,
            jwks_uri=jwks_uri,
            mode=keys.remote,
            cooldown=keys.cooldown,
            stale_if_error=keys.stale_if_error,
            baked_at=meta.baked_at if meta is not None else None,
            now=now,
            wall=wall,
        )

    # -- lookups ----------------------------------------------------------------

    async def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        """The key for a token, as :meth:`KeyStore.key_for`, fetching only when allowed.

        Raises ``KeyNotFound``, ``AlgorithmNotAllowed``, or ``KeysStale`` when
        the key must come from an issuer that has been failing too long.
        """
        try:
            key = self.store.key_for(kid, alg)
        except KeyNotFound:
            if self._fetcher is None:
                raise
        else:
            if self._usable(key):
                return key
        # An unknown kid, or a fetched key past stale_if_error: ask the issuer.
        await self._fetch_if_allowed()
        try:
            key = self.store.key_for(kid, alg)
        except KeyNotFound:
            if self._failing_too_long():
                raise KeysStale(issuer=self.issuer) from None
            raise
        if self._usable(key):
            return key
        raise KeysStale(issuer=self.issuer)

    def is_baked_kid(self, kid: str | None) -> bool:
        """Whether a token with this kid is served from the bake (no check needed)."""
        return kid is not None and kid in self._baked_by_kid

    def _usable(self, key: VerificationKey) -> bool:
        """Baked keys always are; fetched ones until stale_if_error after the last success."""
        if self._is_baked(key):
            return True
        if not self._fresh():
            return False
        if self.last_fetch_error is not None:
            self.stats.stale_served += 1
        return True

    def _is_baked(self, key: VerificationKey) -> bool:
        if key.jwk is None:  # HS* keys come from config, not from any key set
            return True
        if key.kid is not None:
            return key.kid in self._baked_by_kid
        return key.jwk.thumbprint in self._baked_thumbprints

    def _fresh(self) -> bool:
        return self._last_ok is not None and self._now() - self._last_ok <= self.stale_if_error

    def _failing_too_long(self) -> bool:
        return self.last_fetch_error is not None and not self._fresh()

    # -- fetching ---------------------------------------------------------------

    async def refresh_now(self, *, force: bool = False) -> None:
        """Fetch now (joining a fetch in flight), ignoring the cooldown.

        ``force`` starts a new fetch even while one is in flight; the sequence
        number makes sure the older one's answer cannot win. No-op in
        ``never`` mode. Raises the fetch's ``JWKSError`` when it fails (the
        last good keys stay in place either way).
        """
        if self._fetcher is None:
            return
        task = self._current_task()
        if task is None or force:
            task = self._start_fetch()
        error = await asyncio.shield(task)
        if error is not None:
            raise error

    async def revalidate(self) -> None:
        """When keys are stale, try the issuer again (cooldown applies; never raises).

        ``/readyz`` calls it, so an instance its own 503 took out of rotation
        recovers when the issuer does, without waiting for user traffic.
        """
        if self.stale and self._fetcher is not None:
            await self._fetch_if_allowed()

    async def start(self) -> None:
        """Start-up hook: in ``always`` mode fetch once; a failure is logged and counted."""
        if self.mode != "always":
            return
        try:
            await self.refresh_now()
        except JWKSError:
            # Already recorded and logged; baked keys (if any) keep serving.
            return

    async def _fetch_if_allowed(self) -> None:
        task = self._current_task()
        if task is None:
            if self._cooling_down():
                self.stats.refetch_suppressed += 1
                return
            task = self._start_fetch()
        # shield: a cancelled request must not cancel the fetch others wait on.
        await asyncio.shield(task)

    def _cooling_down(self) -> bool:
        return self._last_attempt is not None and self._now() - self._last_attempt < self.cooldown

    def _current_task(self) -> asyncio.Task[JWKSError | None] | None:
        task = self._task
        if task is None or task.done():
            return None
        # A task from another event loop (a test client's portal) cannot be awaited here.
        if task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _start_fetch(self) -> asyncio.Task[JWKSError | None]:
        self._seq += 1
        task = asyncio.get_running_loop().create_task(
            self._fetch(self._seq), name=f"jwtedge-jwks-fetch-{self._seq}"
        )
        self._task = task
        return task

    async def _fetch(self, seq: int) -> JWKSError | None:
        assert self._fetcher is not None
        try:
            if self.jwks_uri is None:
                result = await self._fetcher.fetch(self.issuer)
                # Discovery is only needed once; the key set moves, the URI rarely does.
                self.jwks_uri = result.metadata.jwks_uri
                jwks = result.jwks
            else:
                jwks, _size = await self._fetcher.fetch_jwks(self.jwks_uri)
        except JWKSError as exc:
            self._failed(seq, exc)
            return exc
        finally:
            self._last_attempt = self._now()
            self.last_fetch_at = self._wall()
            if self._task is asyncio.current_task():
                self._task = None
        self._succeeded(seq, jwks)
        return None

    def _succeeded(self, seq: int, jwks: JWKSet) -> None:
        self.stats.fetches_ok += 1
        if seq > self._outcome_seq:
            self._outcome_seq = seq
            self.last_fetch_error = None
        if seq <= self._data_seq:
            self.stats.outdated_discarded += 1
            logger.info("discarded an outdated JWKS response (fetch %d)", seq)
            return
        self._data_seq = seq
        self._remote = jwks
        self._last_ok = self._now()
        self.store.load(self._merge(jwks))
        logger.info("loaded %d keys from %s", len(jwks), self.jwks_uri)

    def _failed(self, seq: int, exc: JWKSError) -> None:
        self.stats.fetches_failed += 1
        # JWKSError messages name the URL and cause only, never keys or tokens.
        logger.warning("JWKS fetch failed: %s", exc.message)
        if seq > self._outcome_seq:
            self._outcome_seq = seq
            self.last_fetch_error = exc.message

    def _merge(self, fetched: JWKSet) -> JWKSet:
        """Baked keys plus fetched ones; a baked kid is never replaced."""
        keys: list[PublicJWK] = list(self._baked.keys) if self._baked is not None else []
        for key in fetched.keys:
            if key.kid is not None and key.kid in self._baked_by_kid:
                if self._baked_by_kid[key.kid].thumbprint != key.thumbprint:
                    self._warn_conflict(key)
                continue
            if key.kid is None and key.thumbprint in self._baked_thumbprints:
                continue
            keys.append(key)
        keys.sort(key=lambda key: (key.kid or "", key.thumbprint))
        return JWKSet(keys=tuple(keys), skipped=fetched.skipped)

    def _warn_conflict(self, key: PublicJWK) -> None:
        assert key.kid is not None
        marker = (key.kid, key.thumbprint)
        if marker in self._warned:  # once per key, not once per fetch
            return
        self._warned.add(marker)
        logger.warning(
            "the issuer publishes a different key under baked kid %r; keeping the baked key "
            "(re-bake if the issuer really replaced it)",
            key.kid[:64],
        )

    # -- status -----------------------------------------------------------------

    @property
    def keys_source(self) -> KeysSource:
        """Where the store's keys came from."""
        baked = self._baked is not None and len(self._baked) > 0
        remote = self._remote is not None
        if baked and remote:
            return "baked+remote"
        if baked:
            return "baked"
        return "remote" if remote else "none"

    @property
    def stale(self) -> bool:
        """True when keys that must come from the issuer are past ``stale_if_error``.

        Baked-only deployments are never stale; ``/readyz`` answers 503 when this is true.
        """
        if self._fetcher is None or self.last_fetch_error is None or self._fresh():
            return False
        # Tokens need the issuer: keys were fetched before, or nothing was baked.
        return self._remote is not None or self.keys_source == "none"

    @property
    def bake_age(self) -> float | None:
        """Seconds since the bake, when the bake metadata says when."""
        if self.baked_at is None:
            return None
        return max(0.0, self._wall() - self.baked_at.timestamp())

    async def aclose(self) -> None:
        """Close the fetcher's HTTP client."""
        task = self._current_task()
        if task is not None:
            task.cancel()
        if self._fetcher is not None:
            await self._fetcher.aclose()
