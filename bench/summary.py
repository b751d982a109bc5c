"""Issue 24's table from one ``run_all.sh`` run: every row, beside its previous figure.

``python -m bench.summary FILE`` reads the figures the benches appended to
``FILE`` (``$BENCH_RESULTS``, see :func:`bench.common.record`) and prints them
with the figures before issue 24 (the issue's "now" column) and the targets.
A row no bench recorded says so. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import banner, table

#: (row, what it is, the figure before issue 24 (the issue's table), target)
ROWS: list[tuple[str, str, str, str]] = [
    (
        "inproc_bearer",
        "in process, cached Bearer, over hello",
        "2-6 µs (1.24-1.65x in all)",
        "≤ 0.2x",
    ),
    (
        "inproc_cookies",
        "in process, cached cookies, over hello",
        "11-13 µs (2.0-2.3x in all)",
        "≤ 0.5x",
    ),
    ("http_bearer", "HTTP (uvicorn, wrk), cached Bearer / hello", "0.86x", "≥ 0.95x"),
    ("http_cookies", "HTTP, cached cookies / hello", "-", "≥ 0.9x"),
    ("memory_10000", "memory per cached session, 10,000 sessions", "6.0-7.9 KB", "≤ 4 KB"),
    ("memory_200000", "memory per cached session, 200,000 sessions", "6.0-7.9 KB", "≤ 4 KB"),
    ("storm", "refresh storm: verifies of the expired token per request", "2", "1"),
]


def _now(row: str, found: dict[str, Any]) -> tuple[str, str]:
    """The figure as printed, and ok/MISSED."""
    value = found["value"]
    if row.startswith("inproc_"):
        target = 0.2 if row == "inproc_bearer" else 0.5
        ratio = found["ratio"]
        text = (
            f"+{value:.2f} µs ±{found['spread']:.2f} = {ratio:.2f}x hello ({1 + ratio:.2f}x in all)"
        )
        return text, "ok" if found["ratio"] <= target else "MISSED"
    if row.startswith("http_"):
        target = 0.95 if row == "http_bearer" else 0.9
        return (
            f"{value:.2f}x (±{found['spread']:.1f}% req/s)",
            "ok" if value >= target else "MISSED",
        )
    if row.startswith("memory_"):
        flat = found["after_full_mb"]
        text = f"{value:.2f} KB; after full {flat:+.1f} MB over {found['more']:,} more"
        return text, "ok" if value <= 4.0 else "MISSED"
    return f"{value:.2f} ({found['verifies']} for {found['requests']} requests)", (
        "ok" if value <= 1.0 else "MISSED"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the file the benches appended to")
    args = parser.parse_args(argv)
    lines = args.results.read_text("utf-8").splitlines() if args.results.exists() else []
    found = {item["row"]: item for item in map(json.loads, lines)}
    banner("issue 24: the middleware's own cost and memory, this run")
    rows = []
    for row, label, before, target in ROWS:
        now, verdict = _now(row, found[row]) if row in found else ("NOT MEASURED", "-")
        rows.append([label, before, now, target, verdict])
    print(table(["figure", "before", "now", "target", ""], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
