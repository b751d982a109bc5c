"""Prometheus metrics for the edge: read from the counters the layers already keep.

The middleware, the key layer, the refresher and the login flow count what
they do in plain integers (incrementing costs nothing on the hot path). This
module does not count anything itself: :class:`EdgeCollector` is a
prometheus-client custom collector that turns those counters into metric
families when ``/metrics`` is scraped. The one live instrument is the request
latency histogram, observed by the app's timing wrapper per route template
(never per raw path, so a scan of random URLs cannot grow the series).

Every app gets its own ``CollectorRegistry`` (:func:`create_registry`): no
global state, so tests and several apps in one process never collide.

Names (all prefixed ``jwtedge_``; counters end in ``_total``)::

    jwtedge_requests_total{outcome="authenticated|anonymous|rejected",code}
    jwtedge_csrf_rejected_total
    jwtedge_identity_headers_stripped_total
    jwtedge_duplicate_token_cookies_total
    jwtedge_cache_hits_total, jwtedge_cache_misses_total
    jwtedge_key_fetches_total{result="ok|failed"}
    jwtedge_key_refetch_suppressed_total
    jwtedge_keys_stale_served_total
    jwtedge_keys_loaded                 gauge: keys the store holds
    jwtedge_keys_stale                  gauge 0/1 (/readyz answers 503 at 1)
    jwtedge_bake_age_seconds            gauge, absent when the bake has no baked_at
    jwtedge_refresh_total{result="ok|failed|joined|grace_reused|reuse_refused"}
    jwtedge_refresh_store_events_total{event}   only with a shared store (Redis)
    jwtedge_refresh_failures_total{code}
    jwtedge_refresh_refused_total{reason="no_proof|proof_invalid|proof_unverifiable|cooldown"}
    jwtedge_sessions_refreshed_total
    jwtedge_websocket_upgrades_total{outcome="authenticated|anonymous|refused",reason}
    jwtedge_logins_total{result="started|completed|failed",code}
    jwtedge_logouts_total
    jwtedge_revocations_total{result="ok|failed"}
    jwtedge_login_refresh_token_missing_total   logins that asked for offline_access in vain
    jwtedge_request_duration_seconds{route,method}   histogram

``jwtedge_requests_total{outcome="rejected"}`` counts refused credentials by
error code; on a page such a request then continues anonymously and is
counted as ``anonymous`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from .login import LoginStats
from .refresh import Refresher, RefreshStats
from .remote import RemoteKeys
from .stats import MiddlewareStats
from .tokens import TokenVerifier

__all__ = [
    "CONTENT_TYPE",
    "REQUEST_DURATION",
    "EdgeCollector",
    "EdgeMetrics",
    "create_registry",
    "render",
]

REQUEST_DURATION = "jwtedge_request_duration_seconds"
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Seconds; a cached verify is microseconds, a refresh waits on the issuer.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REFRESH_RESULTS = ("ok", "failed", "joined", "grace_reused", "reuse_refused")
#: Every reason a refresh is refused before a token-endpoint call (all exported, zeros too).
_REFUSAL_REASONS = ("no_proof", "proof_invalid", "proof_unverifiable", "cooldown")


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _by_code(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items())


_BASE_REFRESH_FIELDS = frozenset(f.name for f in fields(RefreshStats))


def _extra_counters(stats: RefreshStats | None) -> list[tuple[str, int]]:
    """Integer counters a refresher's stats add to :class:`RefreshStats`."""
    if stats is None or not is_dataclass(stats):
        return []
    return [
        (f.name, value)
        for f in fields(stats)
        if f.name not in _BASE_REFRESH_FIELDS
        and isinstance(value := getattr(stats, f.name), int)
        and not isinstance(value, bool)
    ]


@dataclass(eq=False)  # registries key collectors by identity: keep the default hash
class EdgeCollector:
    """A prometheus-client collector over one app's counters (read at scrape time)."""

    stats: MiddlewareStats
    verifier: TokenVerifier
    remote: RemoteKeys | None = None
    refresher: Refresher | None = None
    login: LoginStats | None = None

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family; label values are codes and outcomes only."""
        yield from self._requests()
        yield from self._keys()
        yield from self._refresh()
        yield from self._websocket()
        yield from self._login()

    def _requests(self) -> Iterator[Metric]:
        stats = self.stats
        samples: list[tuple[list[str], float]] = [
            (["authenticated", ""], stats.authenticated),
            (["anonymous", ""], stats.anonymous),
        ]
        samples += [(["rejected", code], n) for code, n in _by_code(stats.rejected)]
        yield _labelled(
            "jwtedge_requests",
            "HTTP requests by authentication outcome (rejected: by error code).",
            ["outcome", "code"],
            samples,
        )
        yield _counter(
            "jwtedge_csrf_rejected",
            "Cookie-authenticated unsafe requests refused as cross-site.",
            stats.csrf_rejected,
        )
        yield _counter(
            "jwtedge_identity_headers_stripped",
            "Spoofable identity headers removed from requests.",
            stats.headers_stripped,
        )
        yield _counter(
            "jwtedge_duplicate_token_cookies",
            "Requests naming a token cookie more than once, served without cookie credentials.",
            stats.duplicate_cookies,
        )
        cache = self.verifier.cache_stats
        yield _counter("jwtedge_cache_hits", "Verified-token cache hits.", cache.hits)
        yield _counter("jwtedge_cache_misses", "Verified-token cache misses.", cache.misses)

    def _keys(self) -> Iterator[Metric]:
        remote = self.remote
        fetches_ok = remote.stats.fetches_ok if remote else 0
        fetches_failed = remote.stats.fetches_failed if remote else 0
        yield _labelled(
            "jwtedge_key_fetches",
            "JWKS fetches at run time by result (zero calls is the goal).",
            ["result"],
            [(["ok"], fetches_ok), (["failed"], fetches_failed)],
        )
        yield _counter(
            "jwtedge_key_refetch_suppressed",
            "Lookups that wanted a JWKS fetch inside the cooldown.",
            remote.stats.refetch_suppressed if remote else 0,
        )
        yield _counter(
            "jwtedge_keys_stale_served",
            "Lookups served from the last good fetched keys while the issuer was failing.",
            remote.stats.stale_served if remote else 0,
        )
        jwks = self.verifier.keys.jwks
        yield GaugeMetricFamily(
            "jwtedge_keys_loaded",
            "Verification keys the key store holds.",
            value=len(jwks) if jwks is not None else 0,
        )
        yield GaugeMetricFamily(
            "jwtedge_keys_stale",
            "1 when keys that must come from the issuer are past keys.stale_if_error.",
            value=1 if remote is not None and remote.stale else 0,
        )
        age = remote.bake_age if remote is not None else None
        if age is not None:
            yield GaugeMetricFamily(
                "jwtedge_bake_age_seconds", "Seconds since the JWKS bake.", value=age
            )

    def _refresh(self) -> Iterator[Metric]:
        refresh: RefreshStats | None = self.refresher.stats if self.refresher else None
        yield _labelled(
            "jwtedge_refresh",
            "Refresh attempts by result (ok/failed: issuer calls; joined: waited on a flight; "
            "grace_reused / reuse_refused: a recently spent refresh token).",
            ["result"],
            [([name], getattr(refresh, name) if refresh else 0) for name in _REFRESH_RESULTS],
        )
        extra = _extra_counters(refresh)
        if extra:
            # A shared-store refresher (Redis) counts leases, waits, degraded flights...
            yield _labelled(
                "jwtedge_refresh_store_events",
                "Shared refresh store events (leases, waits, store hits, errors, degraded).",
                ["event"],
                [([name], value) for name, value in extra],
            )
        yield _labelled(
            "jwtedge_refresh_failures",
            "Requests whose refresh failed, by error code.",
            ["code"],
            [([code], n) for code, n in _by_code(self.stats.refresh_failed)],
        )
        refused = self.stats.refresh_refused
        yield _labelled(
            "jwtedge_refresh_refused",
            "Refreshes refused without a token-endpoint call, by reason (no_proof, "
            "proof_invalid, proof_unverifiable: may pass later, cooldown after a failure).",
            ["reason"],
            [([reason], refused.get(reason, 0)) for reason in _REFUSAL_REASONS],
        )
        yield _counter(
            "jwtedge_sessions_refreshed",
            "Requests that got new token cookies from a refresh.",
            self.stats.refreshed,
        )

    def _websocket(self) -> Iterator[Metric]:
        stats = self.stats
        samples: list[tuple[list[str], float]] = [
            (["authenticated", ""], stats.websocket_authenticated),
            (["anonymous", ""], stats.websocket_anonymous),
        ]
        samples += [(["refused", code], n) for code, n in _by_code(stats.websocket_refused)]
        yield _labelled(
            "jwtedge_websocket_upgrades",
            "WebSocket upgrades by outcome (refused: by reason).",
            ["outcome", "reason"],
            samples,
        )

    def _login(self) -> Iterator[Metric]:
        login = self.login or LoginStats()
        samples: list[tuple[list[str], float]] = [
            (["started", ""], login.started),
            (["completed", ""], login.completed),
        ]
        samples += [(["failed", code], n) for code, n in _by_code(login.failed)]
        yield _labelled(
            "jwtedge_logins",
            "Sign-in steps by result (failed: by code).",
            ["result", "code"],
            samples,
        )
        yield _counter("jwtedge_logouts", "Logouts.", login.logouts)
        yield _labelled(
            "jwtedge_revocations",
            "Refresh-token revocations at logout by result.",
            ["result"],
            [(["ok"], login.revocations_ok), (["failed"], login.revocations_failed)],
        )
        yield _counter(
            "jwtedge_login_refresh_token_missing",
            "Logins that asked for offline_access and got no refresh token (see login.prompt).",
            login.refresh_token_missing,
        )


@dataclass(frozen=True, slots=True)
class EdgeMetrics:
    """One app's registry and its request latency histogram."""

    registry: CollectorRegistry
    request_duration: Histogram


def create_registry(collector: EdgeCollector) -> EdgeMetrics:
    """A dedicated registry holding ``collector`` and the latency histogram."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    histogram = Histogram(
        REQUEST_DURATION,
        "HTTP request duration by route template and method.",
        labelnames=("route", "method"),
        buckets=_BUCKETS,
        registry=registry,
    )
    return EdgeMetrics(registry=registry, request_duration=histogram)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
    return generate_latest(registry)
