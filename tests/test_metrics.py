"""EdgeCollector: the counters the layers keep, as Prometheus metric families."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore
from verifier.login import LoginStats
from verifier.metrics import CONTENT_TYPE, EdgeCollector, create_registry, render
from verifier.refresh import RefreshStats
from verifier.remote import RemoteKeys
from verifier.stats import MiddlewareStats
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier


class FakeRefresher:
    def __init__(self) -> None:
        self.stats = RefreshStats(
            calls=5, ok=4, failed=1, joined=2, grace_reused=3, reuse_refused=1
        )


def collect(collector: EdgeCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), through the text exposition."""
    text = render(create_registry(collector).registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def verifier(issuer: DevIssuer) -> TokenVerifier:
    config = AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        keys={"remote": "never"},
    )
    return TokenVerifier.from_config(config)


def test_request_outcomes_are_labelled_by_code(verifier: TokenVerifier) -> None:
    stats = MiddlewareStats(authenticated=7, anonymous=3, csrf_rejected=2, headers_stripped=4)
    stats.rejected = Counter({"token_expired": 2, "signature_invalid": 1})
    verifier.cache_stats.hits, verifier.cache_stats.misses = 11, 5

    samples = collect(EdgeCollector(stats=stats, verifier=verifier))

    requests = "jwtedge_requests_total"
    assert samples[(requests, (("code", ""), ("outcome", "authenticated")))] == 7
    assert samples[(requests, (("code", ""), ("outcome", "anonymous")))] == 3
    assert samples[(requests, (("code", "token_expired"), ("outcome", "rejected")))] == 2
    assert samples[(requests, (("code", "signature_invalid"), ("outcome", "rejected")))] == 1
    assert samples[("jwtedge_csrf_rejected_total", ())] == 2
    assert samples[("jwtedge_identity_headers_stripped_total", ())] == 4
    assert samples[("jwtedge_cache_hits_total", ())] == 11
    assert samples[("jwtedge_cache_misses_total", ())] == 5


def test_without_a_remote_layer_the_key_metrics_are_zero(verifier: TokenVerifier) -> None:
    samples = collect(EdgeCollector(stats=MiddlewareStats(), verifier=verifier))

    assert samples[("jwtedge_key_fetches_total", (("result", "ok"),))] == 0
    assert samples[("jwtedge_key_fetches_total", (("result", "failed"),))] == 0
    assert samples[("jwtedge_keys_stale", ())] == 0
    assert samples[("jwtedge_keys_loaded", ())] == 3
    assert not any(name == "jwtedge_bake_age_seconds" for name, _ in samples)


def test_the_key_layer_counters_and_the_bake_age(verifier: TokenVerifier) -> None:
    baked_at = datetime(2030, 1, 1, tzinfo=UTC)
    remote = RemoteKeys(
        verifier.keys,
        None,
        issuer="https://issuer.test",
        mode="never",
        baked_at=baked_at,
        wall=lambda: baked_at.timestamp() + 90,
    )
    remote.stats.fetches_ok, remote.stats.fetches_failed = 3, 2
    remote.stats.refetch_suppressed, remote.stats.stale_served = 9, 4

    samples = collect(EdgeCollector(stats=MiddlewareStats(), verifier=verifier, remote=remote))

    assert samples[("jwtedge_key_fetches_total", (("result", "ok"),))] == 3
    assert samples[("jwtedge_key_fetches_total", (("result", "failed"),))] == 2
    assert samples[("jwtedge_key_refetch_suppressed_total", ())] == 9
    assert samples[("jwtedge_keys_stale_served_total", ())] == 4
    assert samples[("jwtedge_bake_age_seconds", ())] == 90


def test_refresh_results_and_failures(verifier: TokenVerifier) -> None:
    stats = MiddlewareStats(refreshed=6, refresh_failed=Counter({"refresh_failed": 2}))

    samples = collect(EdgeCollector(stats=stats, verifier=verifier, refresher=FakeRefresher()))

    expected = {"ok": 4, "failed": 1, "joined": 2, "grace_reused": 3, "reuse_refused": 1}
    for result, value in expected.items():
        assert samples[("jwtedge_refresh_total", (("result", result),))] == value
    assert samples[("jwtedge_refresh_failures_total", (("code", "refresh_failed"),))] == 2
    assert samples[("jwtedge_sessions_refreshed_total", ())] == 6


def test_websocket_upgrades_by_outcome_and_reason(verifier: TokenVerifier) -> None:
    stats = MiddlewareStats(websocket_authenticated=4, websocket_anonymous=1)
    stats.websocket_refused = Counter({"origin": 2, "token_expired": 1})

    samples = collect(EdgeCollector(stats=stats, verifier=verifier))

    name = "jwtedge_websocket_upgrades_total"
    assert samples[(name, (("outcome", "authenticated"), ("reason", "")))] == 4
    assert samples[(name, (("outcome", "anonymous"), ("reason", "")))] == 1
    assert samples[(name, (("outcome", "refused"), ("reason", "origin")))] == 2
    assert samples[(name, (("outcome", "refused"), ("reason", "token_expired")))] == 1


def test_login_counters(verifier: TokenVerifier) -> None:
    login = LoginStats(started=5, completed=3, logouts=2, revocations_ok=2, revocations_failed=1)
    login.failed["state_invalid"] = 2

    samples = collect(EdgeCollector(stats=MiddlewareStats(), verifier=verifier, login=login))

    assert samples[("jwtedge_logins_total", (("code", ""), ("result", "started")))] == 5
    assert samples[("jwtedge_logins_total", (("code", ""), ("result", "completed")))] == 3
    assert samples[("jwtedge_logins_total", (("code", "state_invalid"), ("result", "failed")))] == 2
    assert samples[("jwtedge_logouts_total", ())] == 2
    assert samples[("jwtedge_revocations_total", (("result", "failed"),))] == 1


def test_counters_are_read_at_scrape_time(verifier: TokenVerifier) -> None:
    stats = MiddlewareStats()
    metrics = create_registry(EdgeCollector(stats=stats, verifier=verifier))
    before = render(metrics.registry).decode()
    stats.authenticated = 42

    after = render(metrics.registry).decode()

    assert 'jwtedge_requests_total{code="",outcome="authenticated"} 0.0' in before
    assert 'jwtedge_requests_total{code="",outcome="authenticated"} 42.0' in after


def test_registries_are_independent(verifier: TokenVerifier) -> None:
    one = create_registry(EdgeCollector(stats=MiddlewareStats(), verifier=verifier))
    two = create_registry(EdgeCollector(stats=MiddlewareStats(), verifier=verifier))

    one.request_duration.labels(route="/", method="GET").observe(0.01)

    assert b'route="/"' in render(one.registry)
    assert b'route="/"' not in render(two.registry)


def test_the_content_type_is_the_prometheus_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain")


def test_metrics_hold_no_token_material(verifier: TokenVerifier, issuer: DevIssuer) -> None:
    token = issuer.access_token("u1")
    verifier.session(token)
    stats: dict[str, Any] = {"rejected": Counter({"token_expired": 1})}

    text = render(
        create_registry(EdgeCollector(stats=MiddlewareStats(**stats), verifier=verifier)).registry
    ).decode()

    assert token not in text
    assert token.split(".")[1] not in text


def test_a_key_store_without_keys_reports_zero_loaded() -> None:
    empty = TokenVerifier(KeyStore(), issuer="https://issuer.test", audiences=("api",))

    samples = collect(EdgeCollector(stats=MiddlewareStats(), verifier=empty))

    assert samples[("jwtedge_keys_loaded", ())] == 0
