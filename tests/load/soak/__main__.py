"""``python -m tests.load.soak``: one soak from the command line; exit 1 on a broken invariant.

The defaults are the long profile (60 s, 200 connections); ``--json`` also
writes the whole summary. Runs shorter than 30 s flap on the short profile's
rhythm.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import LONG, SHORT, Profile, format_table, run_soak

DESCRIPTION = "Load and soak driver: the reference app under real uvicorn, a DevIssuer that flaps."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.load.soak", description=DESCRIPTION)
    default = LONG
    parser.add_argument("--duration", type=float, default=default.duration, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=default.concurrency)
    parser.add_argument("--users", type=int, default=default.users, help="token families")
    parser.add_argument("--steady-fraction", type=float, default=default.steady_fraction)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument(
        "--reuse-grace",
        type=float,
        default=default.reuse_grace,
        help="the issuer's reuse interval in seconds (0: a replayed refresh token revokes)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    short_flaps = args.duration < 30
    profile = Profile(
        duration=args.duration,
        concurrency=args.concurrency,
        users=args.users,
        idle_users=max(1, args.users // 5),
        steady_fraction=args.steady_fraction,
        seed=args.seed,
        reuse_grace=args.reuse_grace,
        flap_up=SHORT.flap_up if short_flaps else default.flap_up,
        flap_down=SHORT.flap_down if short_flaps else default.flap_down,
    )
    summary = run_soak(profile)
    print(format_table(summary))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2, default=str)
    for failure in summary["failures"]:
        print(f"soak: FAIL: {failure}", file=sys.stderr)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
