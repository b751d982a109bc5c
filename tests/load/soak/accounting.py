"""The summary of a run: requests by status and action, refresh on the wire, resources, logs.

:func:`refresh_accounting` splits the app's ``/token`` calls at the phase
boundary and counts, per rotation and per family, what the steady phase must
show (one call per rotation, no duplicate, every grant delivered) and what the
flapping phase reports (lost grants, replays after a timed-out call).
:func:`summarize` assembles the whole summary dict.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from dataclasses import asdict
from typing import Any

from .client import Load
from .profile import Profile
from .resources import KNOWN_UPSTREAM, LogCapture

__all__ = ["refresh_accounting", "summarize"]


def summarize(
    profile: Profile,
    load: Load,
    timing: dict[str, Any],
    servers: dict[str, Any],
    capture: LogCapture,
) -> dict[str, Any]:
    """The run's summary dict, without its ``failures`` (see :func:`.report.failures`).

    ``timing`` is what :func:`.run.drive` returned; ``servers`` holds what was
    read once the servers stopped: the issuer's, refresher's and middleware's
    counters, file descriptors and threads before the start and after the stop.
    """
    before, after = timing["idle_before"], timing["idle_after"]
    http_requests = sum(n for status, n in load.status.items() if status != 101)
    upgrades = load.status[101] + sum(
        n for key, n in load.ws.items() if key.startswith(("refused", "valid refused"))
    )
    total = sum(load.status.values())
    summary: dict[str, Any] = {
        "profile": asdict(profile),
        "wall_seconds": round(timing["wall"], 2),
        # The steady phase outlasts its share of the duration on a slow machine.
        "steady_seconds": round(min(load.boundary - load.start, timing["wall"]), 2),
        "requests": {
            "total": total,
            "http": http_requests,
            "websocket": upgrades,
            "websocket_refused": upgrades - load.status[101],
            "per_second": round(total / timing["wall"], 1),
            "by_status": {str(k): v for k, v in sorted(load.status.items())},
            "5xx": sum(n for status, n in load.status.items() if status >= 500),
            "by_action": dict(load.by_action),
            "unexpected": dict(load.unexpected),
            "client_errors": dict(load.client_errors),
            "valid_denied": dict(load.denied),
            "expired_refreshed": load.expired_refreshed,
            "latency_ms": _percentiles(load.latencies),
        },
        "websocket": dict(load.ws),
        "refresh": refresh_accounting(load, servers["issuer"]),
        "refresher": servers["refresher"],
        "middleware": servers["middleware"],
        "issuer": servers["issuer"],
        "resources": {
            "fds": {
                "before_start": servers["fds_before_start"],
                "idle_before_load": before["fds"],
                "idle_after_load": after["fds"],
                "after_stop": servers["fds_after_stop"],
            },
            "rss_mb": {
                "before_load": round(before["VmRSS"], 1),
                "after_load": round(after["VmRSS"], 1),
                "growth": round(after["VmRSS"] - before["VmRSS"], 1),
                "peak": round(after["VmHWM"], 1),
            },
            "server_tasks": {
                "before_load": before["server_tasks"],
                "after_load": after["server_tasks"],
            },
            "threads": {
                "before_start": servers["threads_before"],
                "after_stop": servers["threads_after"],
            },
        },
        "logs": {
            "server_errors": capture.counts[("server", "ERROR")]
            + capture.counts[("server", "CRITICAL")],
            "server_warnings": capture.counts[("server", "WARNING")],
            "client_records": sum(n for (side, _), n in capture.counts.items() if side == "client"),
            "known_upstream": {KNOWN_UPSTREAM[m]: n for m, n in capture.known.items()},
            "samples": capture.samples,
        },
    }
    return summary


def refresh_accounting(load: Load, issuer_end: dict[str, int]) -> dict[str, Any]:
    boundary = load.boundary
    calls = [call for call in load.ledger.calls if call.path.endswith("/token")]
    steady = [c for c in calls if c.started < boundary and c.family is not None]
    flapping = [c for c in calls if c.started >= boundary and c.family is not None]
    forged = [c for c in calls if c.old is not None and c.family is None]
    spanning = sum(1 for c in calls if c.started < boundary <= (c.ended or boundary))

    per_token = Counter(c.old for c in steady)
    grants_by_family = Counter(id(c.family) for c in steady if c.outcome == "200")
    # Families signed in again during the flaps had no steady phase.
    families = [f for f in (*load.families, *load.retired) if f.created < boundary]
    per_family = [grants_by_family.get(id(f), 0) for f in families if not f.idle]
    idle_family = [grants_by_family.get(id(f), 0) for f in families if f.idle]
    delivered = {digest for f in families for digest in f.seen}
    undelivered = sum(1 for c in steady if c.outcome == "200" and c.new not in delivered)
    gaps: list[float] = []
    for family in families:
        times = sorted(c.started for c in steady if c.family is family and c.outcome == "200")
        gaps += [b - a for a, b in itertools.pairwise(times)]
    at_boundary = load.boundary_stats or issuer_end
    steady_grants = sum(grants_by_family.values())

    timed_out: set[str | None] = set()
    replays: Counter[str] = Counter()
    for call in sorted(flapping, key=lambda c: c.started):
        if call.old in timed_out:
            replays[call.outcome] += 1
        if call.outcome == "cancelled" or call.outcome.startswith("error"):
            timed_out.add(call.old)
    flap_grants = sum(1 for c in flapping if c.outcome == "200")
    issuer_flap_grants = issuer_end["refresh_grants"] - at_boundary["refresh_grants"]
    return {
        "steady": {
            "issuer_calls": len(steady),
            "grants": steady_grants,
            "non_200": dict(Counter(c.outcome for c in steady if c.outcome != "200")),
            "calls_per_rotation": round(len(steady) / steady_grants, 3) if steady_grants else None,
            "duplicate_calls": sum(n - 1 for n in per_token.values() if n > 1),
            "undelivered_grants": undelivered,
            "families_refreshed": sum(1 for n in per_family + idle_family if n),
            "families": len(per_family) + len(idle_family),
            "grants_per_busy_family": _spread(per_family),
            "grants_per_idle_family": _spread(idle_family),
            "min_seconds_between_refreshes": round(min(gaps), 2) if gaps else None,
            "issuer_grants": at_boundary["refresh_grants"],
            "calls_spanning_boundary": spanning,
            # How close the slowest call came to refresh.timeout (a margin, not a check).
            "slowest_call_seconds": round(
                max((c.ended - c.started for c in steady if c.ended), default=0.0), 2
            ),
            "reuse_detected": at_boundary["reuse_detected"],
            "revoked_families": at_boundary["revoked_families"],
            "relogins": load.relogins["steady"],
        },
        "flapping": {
            "issuer_calls": len(flapping),
            "outcomes": dict(Counter(c.outcome for c in flapping)),
            "grants_received": flap_grants,
            "issuer_grants": issuer_flap_grants,
            "lost_grants": max(0, issuer_flap_grants - flap_grants),
            # A token presented again after the app gave up on its call: harmless when
            # the issuer had not rotated it ("timeout", "500"), a reuse when it had ("slow").
            "replays_after_timeout": sum(replays.values()),
            "replays_refused_as_reuse": replays["400:invalid_grant"],
            "replays_by_outcome": dict(replays),
            "reuse_detected": issuer_end["reuse_detected"] - at_boundary["reuse_detected"],
            "revoked_families": issuer_end["revoked_families"] - at_boundary["revoked_families"],
            "relogins": load.relogins["flapping"],
            "flaps": dict(load.flaps),
        },
        "forged_refresh_calls": len(forged),
    }


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {}
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50": round(cuts[49] * 1000, 1),
        "p95": round(cuts[94] * 1000, 1),
        "p99": round(cuts[98] * 1000, 1),
        "max": round(max(latencies) * 1000, 1),
    }
