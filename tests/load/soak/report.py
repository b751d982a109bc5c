"""The verdict and the table: the invariants a soak must keep, and the summary as Markdown.

:func:`failures` turns a summary into one sentence per broken invariant (the
same checks ``tests/load/test_soak.py`` asserts one by one); :func:`format_table`
renders the summary as the two-column table docs/load.md shows.
"""

from __future__ import annotations

from typing import Any

from .profile import FD_TOLERANCE, RSS_BOUND_MB

__all__ = ["failures", "format_table"]


def failures(summary: dict[str, Any]) -> list[str]:
    """The invariants a soak must keep; each broken one as a sentence."""
    found = []
    requests, steady = summary["requests"], summary["refresh"]["steady"]
    resources = summary["resources"]
    checks = [
        (requests["5xx"] == 0, f"{requests['5xx']} responses were 5xx"),
        (not requests["unexpected"], f"unexpected answers: {requests['unexpected']}"),
        (not requests["client_errors"], f"client errors: {requests['client_errors']}"),
        (
            not any(key.startswith("steady") for key in requests["valid_denied"]),
            f"valid sessions denied while the issuer was up: {requests['valid_denied']}",
        ),
        (steady["reuse_detected"] == 0, f"issuer saw {steady['reuse_detected']} reuses while up"),
        (
            steady["revoked_families"] == 0,
            f"issuer revoked {steady['revoked_families']} families while up",
        ),
        (
            steady["duplicate_calls"] == 0,
            f"{steady['duplicate_calls']} refresh tokens sent twice while up",
        ),
        (not steady["non_200"], f"refresh calls failed while up: {steady['non_200']}"),
        (
            steady["undelivered_grants"] == 0,
            f"{steady['undelivered_grants']} rotations never reached a client",
        ),
        (steady["grants"] > 0, "no refresh happened while up"),
        (
            # A steady phase as long as a token's life leaves no family unrefreshed.
            steady["grants_per_busy_family"]["min"] >= 1
            or summary["profile"]["duration"] * summary["profile"]["steady_fraction"]
            < summary["profile"]["access_ttl"],
            f"a family was never refreshed while up: {steady['grants_per_busy_family']}",
        ),
        (
            abs(steady["issuer_grants"] - steady["grants"]) <= steady["calls_spanning_boundary"],
            f"issuer counted {steady['issuer_grants']} grants, the wire {steady['grants']}",
        ),
        (
            resources["fds"]["after_stop"] <= resources["fds"]["before_start"] + FD_TOLERANCE,
            f"file descriptors: {resources['fds']}",
        ),
        (
            resources["server_tasks"]["after_load"] <= resources["server_tasks"]["before_load"],
            f"server tasks: {resources['server_tasks']}",
        ),
        (
            resources["rss_mb"]["growth"] < RSS_BOUND_MB,
            f"RSS grew {resources['rss_mb']['growth']} MiB",
        ),
        (
            summary["logs"]["server_errors"] == 0,
            f"server logged errors: {summary['logs']['samples']}",
        ),
        (
            # Each denied upgrade may log uvicorn's line once; more would be the app's own.
            sum(summary["logs"]["known_upstream"].values())
            <= summary["requests"]["websocket_refused"],
            f"more incomplete-handshake errors than refused upgrades: {summary['logs']}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            found.append(message)
    return found


def _pairs(mapping: dict[str, Any], sep: str = ": ") -> str:
    return ", ".join(f"{key}{sep}{value}" for key, value in mapping.items()) or "none"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a two-column Markdown table."""
    p, r, logs = summary["profile"], summary["requests"], summary["logs"]
    steady, flap = summary["refresh"]["steady"], summary["refresh"]["flapping"]
    res, ref = summary["resources"], summary["refresher"]
    busy, idle = steady["grants_per_busy_family"], steady["grants_per_idle_family"]
    fds, rss, tasks = res["fds"], res["rss_mb"], res["server_tasks"]
    rows = {
        "duration, concurrency": f"{p['duration']:g} s ({summary['wall_seconds']} s wall, "
        f"{summary['steady_seconds']} s steady), "
        f"{p['concurrency']} connections, {p['users']} token families "
        f"({p['idle_users']} visited only once expired)",
        "requests": f"{r['total']} ({r['http']} HTTP, {r['websocket']} WebSocket upgrades), "
        f"{r['per_second']}/s",
        "status counts": _pairs(r["by_status"]),
        "5xx": r["5xx"],
        "latency (HTTP)": _pairs(r["latency_ms"], " ") + " ms",
        "unexpected answers, client errors": f"{sum(r['unexpected'].values())}, "
        f"{sum(r['client_errors'].values())}",
        "WebSocket": _pairs(dict(sorted(summary["websocket"].items()))),
        "valid sessions denied": _pairs(r["valid_denied"]),
        "expired access tokens refreshed": r["expired_refreshed"],
        "JWKS fetches": f"{summary['issuer']['jwks_requests']} for "
        f"{r['by_action'].get('unknown_kid', 0)} unknown-kid requests (keys.cooldown)",
        "refresh while up": f"{steady['issuer_calls']} issuer calls, {steady['grants']} grants: "
        f"{steady['calls_per_rotation']} call per rotation, {steady['duplicate_calls']} "
        f"duplicate, {steady['undelivered_grants']} undelivered; slowest call "
        f"{steady['slowest_call_seconds']} s (refresh.timeout {p['refresh_timeout']:g} s)",
        "refresh calls per family while up": f"busy {busy['min']}/{busy['median']}/{busy['max']}"
        f", idle {idle['min']}/{idle['median']}/{idle['max']} (min/median/max); "
        f"{steady['families_refreshed']}/{steady['families']} families; closest two "
        f"refreshes of a family {steady['min_seconds_between_refreshes']} s apart",
        "issuer while up": f"reuse_detected {steady['reuse_detected']}, revoked_families "
        f"{steady['revoked_families']}, grants {steady['issuer_grants']}",
        "single flight (whole run)": f"{ref.get('calls', 0)} issuer calls, "
        f"{ref.get('joined', 0)} joined a flight, {ref.get('grace_reused', 0)} reused a "
        f"result in the grace, {ref.get('reuse_refused', 0)} refused without an issuer call "
        "(a spent token, or an old one without proof)",
        "flapping": f"{_pairs(flap['flaps'], ' x')}; {flap['issuer_calls']} issuer calls: "
        + _pairs(dict(sorted(flap["outcomes"].items()))),
        "during flaps (reported)": f"lost grants {flap['lost_grants']}, replays after a "
        f"timed-out call {flap['replays_after_timeout']} ({flap['replays_refused_as_reuse']} "
        f"refused as reuse), reuse_detected {flap['reuse_detected']}, revoked_families "
        f"{flap['revoked_families']}, re-logins {flap['relogins']}",
        "RSS": f"{rss['before_load']} -> {rss['after_load']} MiB (growth {rss['growth']:+} "
        f"MiB, peak {rss['peak']} MiB)",
        "file descriptors": f"before start {fds['before_start']}, idle before load "
        f"{fds['idle_before_load']}, idle after load {fds['idle_after_load']}, after stop "
        f"{fds['after_stop']}",
        "server asyncio tasks": f"{tasks['before_load']} before, {tasks['after_load']} after",
        "threads": f"{res['threads']['before_start']} before start, "
        f"{res['threads']['after_stop']} after stop",
        "server log": f"{logs['server_errors']} ERROR, {logs['server_warnings']} WARNING; "
        f"upstream, not counted: {_pairs(logs['known_upstream'], ' x')}",
        "verdict": "; ".join(summary["failures"]) or "PASS",
    }
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)
