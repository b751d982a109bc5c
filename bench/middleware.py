"""In-process ASGI cost per request: a Starlette hello app alone and behind JWTSessionMiddleware.

Run ``python -m bench.middleware`` (``--quick`` for a smoke run). The ASGI
app is called directly with a prebuilt scope and minimal receive/send (no
HTTP, no server), so the figures are the middleware's own cost. Cases are
interleaved round by round; overheads are medians of per-round ratios to
hello. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from bench.common import (
    access_token,
    banner,
    make_config,
    make_issuer,
    median,
    paired_ratio,
    spread,
    table,
    verdict,
)
from verifier.middleware import JWTSessionMiddleware

#: Targets from the "Performance" issue: overhead over hello, in percent.
TARGETS = {"cached Bearer": 25.0, "cached cookies": 50.0}

_BROWSER_HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"connection", b"keep-alive"),
]


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def hello_app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


def _scope(extra: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [*_BROWSER_HEADERS, *extra],
        "client": ("127.0.0.1", 51000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


async def _batch(app: ASGIApp, scopes: Sequence[dict[str, Any]]) -> float:
    """µs per request over ``scopes`` (each copied: Starlette writes into the scope)."""
    gc.disable()
    try:
        start = time.perf_counter()
        for scope in scopes:
            await app(dict(scope), _receive, _send)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed / len(scopes) * 1e6


def build_cases(
    count: int, repeat: int
) -> tuple[dict[str, tuple[ASGIApp, list[dict[str, Any]]]], list[JWTSessionMiddleware]]:
    issuer = make_issuer()
    inner = hello_app()
    cached = JWTSessionMiddleware(inner, config=make_config(issuer))
    uncached = JWTSessionMiddleware(inner, config=make_config(issuer, cache_size=0))

    access = access_token(issuer, 0, "RS256")
    id_token = issuer.id_token(sub="user_0000000", sid="sid_0000000")
    bearer = _scope([(b"authorization", f"Bearer {access}".encode())])
    cookies = _scope(
        [(b"cookie", f"theme=dark; jwtedge_access={access}; jwtedge_id={id_token}".encode())]
    )

    def distinct(alg: str) -> list[dict[str, Any]]:
        return [
            _scope([(b"authorization", f"Bearer {access_token(issuer, i, alg)}".encode())])
            for i in range(count)
        ]

    cases: dict[str, tuple[ASGIApp, list[dict[str, Any]]]] = {
        "hello (no middleware)": (inner, [_scope()] * repeat),
        "anonymous": (cached, [_scope()] * repeat),
        "cached Bearer": (cached, [bearer] * repeat),
        "cached cookies": (cached, [cookies] * repeat),
        "uncached RS256 Bearer": (uncached, distinct("RS256")),
        "uncached ES256 Bearer": (uncached, distinct("ES256")),
    }
    return cases, [cached, uncached]


async def run(
    cases: dict[str, tuple[ASGIApp, list[dict[str, Any]]]], rounds: int
) -> dict[str, list[float]]:
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds + 1):  # the first round warms up (and fills the cache)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            app, scopes = cases[name]
            value = await _batch(app, scopes)
            if round_index:
                samples[name].append(value)
        gc.collect()
    return samples


def report(
    samples: dict[str, list[float]],
    middlewares: list[JWTSessionMiddleware],
    count: int,
    repeat: int,
    rounds: int,
) -> None:
    banner("middleware: in-process ASGI cost per request (median of rounds)")
    print(
        f"{rounds} interleaved rounds; {repeat} requests per round for hello/anonymous/cached, "
        f"{count} distinct tokens per round for uncached (cache.size=0).\n"
        "Inner app: Starlette hello world; 6 browser-like headers; GET / (a page path)."
    )
    hello = samples["hello (no middleware)"]
    rows = []
    for name, values in samples.items():
        target = TARGETS.get(name)
        overhead = (paired_ratio(values, hello) - 1) * 100
        rows.append(
            [
                name,
                f"{median(values):8.2f} ±{spread(values):4.1f}%",
                "-" if values is hello else f"{overhead:+8.1f} %",
                paired_ratio(values, hello),
                f"≤ +{target:.0f} %" if target else "-",
                verdict(overhead, target) if target else "-",
            ]
        )
    print(table(["case", "µs/request", "overhead", "x hello", "target", ""], rows))
    for label, middleware in zip(("cached", "uncached"), middlewares, strict=True):
        stats = middleware.stats
        rejected = dict(stats.rejected)
        note = "" if not rejected else "  <- UNEXPECTED: the bench's tokens were refused"
        print(
            f"{label} middleware: authenticated={stats.authenticated} "
            f"anonymous={stats.anonymous} rejected={rejected}{note}"
        )
    cache_stats = middlewares[0].verifier.cache_stats
    print(f"cache: hits={cache_stats.hits} misses={cache_stats.misses}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="distinct tokens per uncached case")
    parser.add_argument("--repeat", type=int, default=2000, help="requests per cached case")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (15)")
    parser.add_argument("--quick", action="store_true", help="tiny run: --n 20 --repeat 200")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeat, args.rounds = 20, 200, 2
    cases, middlewares = build_cases(args.n, args.repeat)
    samples = asyncio.run(run(cases, args.rounds))
    report(samples, middlewares, args.n, args.repeat, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
