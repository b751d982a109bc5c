"""Shared helpers for the benches: a realistic token, configs, interleaved timing, tables.

Benches are not tests: they print figures and ratios measured in the same run
and never assert timings. Machines are small and noisy, so every bench
interleaves its cases round by round and reports medians.
"""

from __future__ import annotations

import base64
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.testing import DevIssuer

ISSUER = "http://127.0.0.1:9000"
AUDIENCE = "api"
CLIENT_ID = "web"

#: The payload the issue asks for: 3 organizations with names and roles, 5 projects, a scope.
ORGANIZATIONS: list[dict[str, str]] = [
    {"id": "org_7fQk2Lm9", "slug": "acme", "name": "Acme Corporation", "role": "owner"},
    {"id": "org_P3xw81Za", "slug": "globex", "name": "Globex Industries", "role": "admin"},
    {"id": "org_Vn0c55Rt", "slug": "initech", "name": "Initech Software", "role": "member"},
]
PROJECTS: list[dict[str, str]] = [
    {"id": "prj_a1", "slug": "website", "organizationId": "org_7fQk2Lm9"},
    {"id": "prj_a2", "slug": "mobile-app", "organizationId": "org_7fQk2Lm9"},
    {"id": "prj_b1", "slug": "billing", "organizationId": "org_P3xw81Za"},
    {"id": "prj_b2", "slug": "data-platform", "organizationId": "org_P3xw81Za"},
    {"id": "prj_c1", "slug": "tps-reports", "organizationId": "org_Vn0c55Rt"},
]
SCOPE = "openid profile email read:projects write:projects read:organizations"

#: Algorithms the verify bench covers, with the label printed for each.
ALGORITHMS = ("RS256", "PS256", "ES256", "Ed25519")


def make_issuer() -> DevIssuer:
    """One DevIssuer holding RS256, ES256, Ed25519 and PS256 keys."""
    return DevIssuer(issuer=ISSUER, audience=AUDIENCE, client_id=CLIENT_ID, alg="PS256")


def make_config(issuer: DevIssuer, *, cache_size: int = 10_000, **sections: Any) -> AppConfig:
    """An AppConfig baked from ``issuer`` with the remote key layer off (no I/O)."""
    values: dict[str, Any] = {
        "auth": {
            "issuer": issuer.issuer,
            "audience": AUDIENCE,
            "client_id": CLIENT_ID,
            "jwks": parse_jwks(issuer.jwks()),
        },
        "keys": {"remote": "never"},
        "cache": {"size": cache_size},
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return AppConfig(_env_file=None, **values)


def baked_env(issuer: DevIssuer, **extra: str) -> dict[str, str]:
    """``APP_CONFIG_*`` variables that describe the same bake (for subprocesses)."""
    import json

    env = {
        "APP_CONFIG_AUTH__ISSUER": issuer.issuer,
        "APP_CONFIG_AUTH__AUDIENCE": AUDIENCE,
        "APP_CONFIG_AUTH__CLIENT_ID": CLIENT_ID,
        "APP_CONFIG_AUTH__JWKS": json.dumps(issuer.jwks(), separators=(",", ":")),
        "APP_CONFIG_KEYS__REMOTE": "never",
    }
    env.update(extra)
    return env


def access_token(issuer: DevIssuer, index: int, alg: str, *, ttl: int = 3600) -> str:
    """A realistic access token; ``index`` makes ``sub`` and ``sid`` distinct."""
    return issuer.access_token(
        sub=f"user_{index:07d}",
        organizations=ORGANIZATIONS,
        projects=PROJECTS,
        scope=SCOPE,
        sid=f"sid_{index:07d}",
        ttl=ttl,
        alg=alg,
    )


def mint(issuer: DevIssuer, count: int, alg: str, *, ttl: int = 3600) -> list[str]:
    return [access_token(issuer, index, alg, ttl=ttl) for index in range(count)]


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# -- timing -----------------------------------------------------------------------


def time_batch(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Microseconds per call of ``fn(item)`` over ``items`` (GC paused, as timeit does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for item in items:
            fn(item)
        elapsed = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / len(items) * 1e6


def interleaved(
    cases: Mapping[str, tuple[Callable[[Any], object], Sequence[Any]]],
    *,
    rounds: int,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Run every case once per round, rotating the order; µs/op samples per case.

    Interleaving spreads a noisy neighbour or a frequency change over all
    cases instead of penalising whichever one ran at that moment.
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            fn, items = cases[name]
            value = time_batch(fn, items)
            if round_index >= warmup:
                samples[name].append(value)
        gc.collect()
    return samples


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of per-round ratios: both sides of each pair ran in the same round,
    so drift between rounds (a neighbour's load, CPU frequency) cancels out."""
    pairs = [a / b for a, b in zip(numerators, denominators, strict=True) if b]
    return statistics.median(pairs) if pairs else float("nan")


def spread(values: Sequence[float]) -> float:
    """Half the inter-quartile range relative to the median, in percent (noise hint)."""
    if len(values) < 4:
        return float("nan")
    q1, _, q3 = statistics.quantiles(values, n=4)
    mid = statistics.median(values)
    return (q3 - q1) / 2 / mid * 100 if mid else float("nan")


# -- output -----------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table, right-aligned numbers, left-aligned first column."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for index, value in enumerate(row):
            widths[index] = max(widths[index], len(value))

    def line(values: Sequence[str]) -> str:
        parts = [
            value.ljust(widths[i]) if i == 0 else value.rjust(widths[i])
            for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(value: float, target: float) -> str:
    if value != value:
        return "-"
    return "ok" if value <= target else "MISSED"


def banner(title: str) -> None:
    print(f"\n== {title} ==")
    print(
        f"python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs, pid {os.getpid()}"
    )


def rss_mb() -> float:
    """This process's resident set size in MB (VmRSS from /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


# -- issue 24's summary -------------------------------------------------------------

#: ``run_all.sh`` points this at a file: each bench appends its figures there,
#: and ``bench.summary`` prints them as one table at the end.
RESULTS_ENV = "BENCH_RESULTS"


def record(row: str, value: float, **details: object) -> None:
    """Append one figure of issue 24's table to ``$BENCH_RESULTS`` (nothing when unset)."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    import json

    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"row": row, "value": value, **details}) + "\n")
