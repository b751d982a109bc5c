"""In-process ASGI cost per request: a Starlette hello app alone and behind JWTSessionMiddleware.

Run ``python -m bench.middleware`` (``--quick`` for a smoke run, ``--profile``
for where the cached paths' time goes). The ASGI app is called directly with
a prebuilt scope and minimal receive/send (no HTTP, no server), so the
figures are the middleware's own cost. Cases are interleaved round by round;
the overhead is the median of per-round differences to hello, the ratio the
median of per-round ratios. Nothing is asserted.

``--profile`` times every step of the cached Bearer and cached cookie paths
alone, over the same requests, with the functions the middleware calls (so
the split is the code's, not an estimate), then runs cProfile. It is where
README's "cost split" comes from.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.common import (
    ISSUER,
    access_token,
    banner,
    make_config,
    make_issuer,
    median,
    paired_ratio,
    record,
    spread,
    table,
)
from verifier.middleware import JWTSessionMiddleware

#: Targets from issue 24: the middleware's own cost over hello, as a fraction of hello.
TARGETS = {"cached Bearer": 0.2, "cached cookies": 0.5}

_BROWSER_HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"connection", b"keep-alive"),
]
#: The names of the rows the issue's table asks for.
HELLO, BEARER, COOKIES = "hello (no middleware)", "cached Bearer", "cached cookies"
#: Distinct users in turn for the "digest not remembered" case (over DIGEST_MEMO).
USERS = 1000
ROTATING = f"cached Bearer, {USERS:,} users in turn"


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def hello_app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


class PassThrough:
    """A middleware that only awaits the app: what any ASGI middleware costs at least."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


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


class Requests:
    """The middlewares and the requests every case and profile stage uses."""

    def __init__(self, count: int) -> None:
        issuer = make_issuer()
        self.inner = hello_app()
        self.cached = JWTSessionMiddleware(self.inner, config=make_config(issuer))
        # Refresh enabled, as it is wherever a refresh cookie is set (no call is
        # made: the token is fresh).
        self.refreshing = JWTSessionMiddleware(
            self.inner, config=make_config(issuer, endpoints={"token": f"{ISSUER}/token"})
        )
        self.uncached = JWTSessionMiddleware(self.inner, config=make_config(issuer, cache_size=0))
        self.access = access_token(issuer, 0, "RS256")
        self.id_token = issuer.id_token(
            sub="user_0000000",
            sid="sid_0000000",
            email="ada.lovelace@example.com",
            name="Ada Lovelace",
            picture="https://example.com/avatars/ada-lovelace.png",
        )
        # Opaque, as Okta's and Auth0's are (and DevIssuer's: 43 characters).
        self.refresh = secrets.token_urlsafe(32)
        self.cookie_header = (
            f"theme=dark; _ga=GA1.1.1234567890.1700000000; jwtedge_access={self.access}; "
            f"jwtedge_id={self.id_token}; jwtedge_refresh={self.refresh}"
        )
        self.bearer = _scope([(b"authorization", f"Bearer {self.access}".encode())])
        self.cookies = _scope([(b"cookie", self.cookie_header.encode())])
        self.distinct = {
            alg: [
                _scope([(b"authorization", f"Bearer {access_token(issuer, i, alg)}".encode())])
                for i in range(count)
            ]
            for alg in ("RS256", "ES256")
        }
        # More users than the digest memo remembers, all in the session cache:
        # every request is a cache hit that pays the SHA-256 of its token.
        self.users = [
            _scope([(b"authorization", f"Bearer {access_token(issuer, i, 'ES256')}".encode())])
            for i in range(USERS)
        ]


def build_cases(requests: Requests, repeat: int) -> dict[str, tuple[ASGIApp, list[dict[str, Any]]]]:
    return {
        HELLO: (requests.inner, [_scope()] * repeat),
        "pass-through middleware": (PassThrough(requests.inner), [_scope()] * repeat),
        "anonymous": (requests.cached, [_scope()] * repeat),
        BEARER: (requests.cached, [requests.bearer] * repeat),
        COOKIES: (requests.refreshing, [requests.cookies] * repeat),
        ROTATING: (requests.cached, (requests.users * -(-repeat // USERS))[:repeat]),
        "uncached RS256 Bearer": (requests.uncached, requests.distinct["RS256"]),
        "uncached ES256 Bearer": (requests.uncached, requests.distinct["ES256"]),
    }


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


def overheads(samples: dict[str, list[float]]) -> dict[str, tuple[float, float, float]]:
    """Per case: (µs over hello, its spread in µs, x hello), medians of per-round pairs."""
    hello = samples[HELLO]
    result = {}
    for name, values in samples.items():
        diffs = [value - base for value, base in zip(values, hello, strict=True)]
        q = spread(diffs) if len(diffs) >= 4 else float("nan")
        result[name] = (median(diffs), abs(q * median(diffs) / 100), paired_ratio(values, hello))
    return result


def report(samples: dict[str, list[float]], requests: Requests, repeat: int, rounds: int) -> None:
    banner("middleware: in-process ASGI cost per request (median of rounds)")
    print(
        f"{rounds} interleaved rounds; {repeat} requests per round for the cached cases, "
        f"{len(requests.distinct['RS256'])} distinct tokens for uncached (cache.size=0). Inner "
        "app: Starlette hello world; 6 browser-like headers; GET / (a page path). Cookies: "
        f"access ({len(requests.access)} chars) + ID ({len(requests.id_token)}) + refresh "
        f"({len(requests.refresh)}) + 2 others, refresh enabled."
    )
    rows = []
    for name, values in samples.items():
        own, own_spread, ratio = overheads(samples)[name]
        target = TARGETS.get(name)
        hello_us = median(samples[HELLO])
        if target:
            row = "inproc_bearer" if name == BEARER else "inproc_cookies"
            record(row, own, spread=own_spread, ratio=own / hello_us)
        rows.append(
            [
                name,
                f"{median(values):7.2f} ±{spread(values):4.1f}%",
                "-" if name == HELLO else f"{own:+6.2f} ±{own_spread:4.2f}",
                ratio,
                "-" if name == HELLO else f"{own / hello_us:.2f}",
                f"≤ {target:.1f}" if target else "-",
                ("ok" if own / hello_us <= target else "MISSED") if target else "-",
            ]
        )
    print(
        table(
            ["case", "µs/request", "own µs", "x hello", "own/hello", "target", ""],
            rows,
        )
    )
    print(
        "own µs: median of per-round (case - hello) in µs, ± half its inter-quartile range; "
        "own/hello: that over hello's median."
    )
    for label, middleware in (
        ("cached", requests.cached),
        ("cookies", requests.refreshing),
        ("uncached", requests.uncached),
    ):
        stats = middleware.stats
        rejected = dict(stats.rejected)
        note = "" if not rejected else "  <- UNEXPECTED: the bench's tokens were refused"
        print(
            f"{label} middleware: authenticated={stats.authenticated} "
            f"anonymous={stats.anonymous} rejected={rejected}{note}"
        )


# -- --profile: where the cached paths' microseconds go ---------------------------------

SCOPE_COPY, STRING_COPY = "copying the scope (bench)", "copying the token strings (bench)"
#: Batches per figure, and calls per batch: the profile takes the fastest batch
#: (least disturbed by a neighbour), where the table above takes the median.
PROFILE_BATCHES, PROFILE_CALLS = 150, 200


def _fresh(text: str) -> str:
    """An equal str that is another object (``text[:]`` is ``text`` itself)."""
    return (text + " ")[:-1]


def _fastest(fn: Callable[[], object], batches: int, calls: int) -> float:
    best = float("inf")
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best / calls * 1e6


def stages(requests: Requests) -> dict[str, dict[str, Callable[[], object]]]:
    """For each cached path, its steps as the middleware runs them, each callable alone.

    Uses middleware internals, so it may need updating when they change; the
    total it is compared with uses only the public ASGI call.
    """
    from verifier.refresh_context import RefreshContext
    from verifier.session_cache import cache_key

    paths: dict[str, dict[str, Callable[[], object]]] = {}
    for name, middleware, scope in (
        (BEARER, requests.cached, requests.bearer),
        (COOKIES, requests.refreshing, requests.cookies),
    ):
        request = middleware.scanner.scan(dict(scope))
        secure, tokens = middleware._read_tokens(scope, request)
        access = request.bearer or tokens.access
        assert access is not None
        id_token = None if request.bearer is not None else tokens.id
        session = middleware.verifier.session(access, id_token)
        verifier = middleware.verifier
        cache = verifier._cache
        assert cache is not None
        # Fresh strings, as every request brings: a str's hash is computed once.
        exact: Callable[[], object] = (
            (lambda a=access: _fresh(a))
            if id_token is None
            else (lambda a=access, i=id_token: (_fresh(a), _fresh(i)))
        )
        steps: dict[str, Callable[[], object]] = {
            "scan headers (Bearer, cookies, spoofable names)": (
                lambda m=middleware, s=scope: m.scanner.scan(s)
            ),
            "scope bookkeeping around the scan (auth, user, counters)": (
                lambda m=middleware, s=scope: m._clean(dict(s))
            ),
            "read token cookies + Secure decision": (
                lambda m=middleware, s=scope, r=request: m._read_tokens(s, r)
            ),
        }
        if tokens.access is not None:
            steps["browser rules (CSRF) for cookie credentials"] = (
                lambda m=middleware, s=scope, r=request: m._refusal(s, r, methods=("GET",))
            )
        if tokens.refresh is not None:
            steps["refresh context + send wrapper"] = (
                lambda m=middleware, t=tokens, sec=secure, r=request: RefreshContext(
                    m, t, secure=sec, present=list(r.cookie_names)
                ).wrap(_send)
            )
            steps["refresh due? (clock, skew)"] = lambda m=middleware, a=access, ss=session: (
                m.refresh_due(a, ss, None)
            )
        steps["cache hit: verifier.session() (digest remembered)"] = (
            lambda v=verifier, a=access, i=id_token: v.session(_fresh(a), i and _fresh(i))
        )
        steps["  of which the digest memo: a str hash of the token(s)"] = lambda c=cache, e=exact: (
            c.digests.get(e())
        )
        steps["SHA-256 of the token(s), when not remembered (not in this total)"] = (
            lambda a=access, i=id_token: cache_key(a, i)
        )
        steps[SCOPE_COPY] = lambda s=scope: dict(s)
        steps[STRING_COPY] = exact
        paths[name] = steps
    return paths


def _totals(requests: Requests, batches: int) -> dict[str, float]:
    """The fastest batch of each case, interleaved: µs per request."""
    cases = build_cases(requests, PROFILE_CALLS)
    names = (HELLO, "pass-through middleware", BEARER, COOKIES)
    best = dict.fromkeys(names, float("inf"))

    async def go() -> None:
        gc.disable()
        try:
            for batch in range(batches):
                for name in names[batch % 4 :] + names[: batch % 4]:
                    app, scopes = cases[name]
                    start = time.perf_counter()
                    for scope in scopes:
                        await app(dict(scope), _receive, _send)
                    best[name] = min(best[name], (time.perf_counter() - start) / len(scopes))
        finally:
            gc.enable()

    asyncio.run(go())
    return {name: value * 1e6 for name, value in best.items()}


class _Scanned:
    """A scanner that answers one request's scan without reading it (in_situ only)."""

    def __init__(self, scanned: Any) -> None:
        self.scanned = scanned

    def scan(self, scope: Scope) -> Any:
        if self.scanned.headers is not None:
            scope["headers"] = self.scanned.headers
        return self.scanned


def in_situ(requests: Requests, batches: int) -> None:
    """Each step's cost inside real requests: take the steps out one after the
    other (each replaced by its answer, precomputed) and time what is left.

    Steps timed alone run hot in the CPU caches; inside a request, between
    Starlette's own work, they run colder. This table is the in-request split.
    """
    issuer_config = {BEARER: requests.cached.config, COOKIES: requests.refreshing.config}
    for name, scope in ((BEARER, requests.bearer), (COOKIES, requests.cookies)):
        middleware = JWTSessionMiddleware(requests.inner, config=issuer_config[name])
        request = middleware.scanner.scan(dict(scope))
        answer = middleware._read_tokens(scope, request)
        tokens = answer[1]
        access = request.bearer or tokens.access
        id_token = None if request.bearer is not None else tokens.id
        session = middleware.verifier.session(access, id_token)

        def constant_session(m: Any = middleware, s: Any = session) -> None:
            m.verifier.session = lambda a, i=None: s

        removals: list[tuple[str, Callable[[], None]]] = [
            ("cache hit: verifier.session()", constant_session)
        ]
        if tokens.refresh is not None:
            removals.append(
                (
                    "refresh due? (clock, skew)",
                    lambda m=middleware: setattr(m, "refresh_due", lambda a, s, e: False),
                )
            )
            removals.append(
                (
                    "refresh context + send wrapper",
                    lambda m=middleware: setattr(m, "refresher", None),
                )
            )
        if tokens.access is not None:
            removals.append(
                (
                    "browser rules (CSRF)",
                    lambda m=middleware: setattr(m, "_refusal", lambda *a, **k: None),
                )
            )
        removals.append(
            (
                "read token cookies + Secure decision",
                lambda m=middleware, t=answer: setattr(m, "_read_tokens", lambda s, r: t),
            )
        )
        removals.append(
            ("scan headers", lambda m=middleware, r=request: setattr(m, "scanner", _Scanned(r)))
        )

        def fastest_request(m: JWTSessionMiddleware = middleware, s: Any = scope) -> float:
            """µs over hello: the fastest batch of each, interleaved."""

            async def go() -> float:
                best = [float("inf"), float("inf")]
                gc.disable()
                try:
                    for _ in range(batches):
                        for index, app in enumerate((requests.inner, m)):
                            start = time.perf_counter()
                            for _ in range(PROFILE_CALLS):
                                await app(dict(s), _receive, _send)
                            best[index] = min(best[index], time.perf_counter() - start)
                finally:
                    gc.enable()
                return (best[1] - best[0]) / PROFILE_CALLS * 1e6

            return asyncio.run(go())

        before = fastest_request()
        rows: list[list[object]] = []
        total = before
        for label, remove in removals:
            remove()
            after = fastest_request()
            rows.append([label, before - after, (before - after) / total * 100])
            before = after
        rows.append(
            ["what is left: the call, branches, counters, scope keys", before, before / total * 100]
        )
        rows.append(["TOTAL measured: middleware - hello", total, 100.0])
        print(f"\n{name}, inside requests (each step taken out in turn, fastest batch):")
        print(table(["step", "µs", "% of total"], [[r[0], r[1], f"{r[2]:.0f} %"] for r in rows]))


def profile(requests: Requests, batches: int = PROFILE_BATCHES) -> None:
    banner("middleware --profile: where a cached request's own microseconds go")
    print(
        f"Every figure is the fastest of {batches} batches of {PROFILE_CALLS} "
        "(requests or calls), interleaved: the least disturbed run. Steps are the "
        "functions the middleware calls, each timed alone on the same request."
    )
    totals = _totals(requests, batches)
    hello_us = totals[HELLO]
    floor = totals["pass-through middleware"] - hello_us
    for name, steps in stages(requests).items():
        values = {
            label: _fastest(fn, PROFILE_BATCHES, PROFILE_CALLS) for label, fn in steps.items()
        }
        # What the bench adds to two steps (a scope copy, fresh token strings) is not theirs.
        scope_copy, string_copy = values.pop(SCOPE_COPY), values.pop(STRING_COPY)
        scan = values["scan headers (Bearer, cookies, spoofable names)"]
        values["scope bookkeeping around the scan (auth, user, counters)"] -= scan + scope_copy
        values["cache hit: verifier.session() (digest remembered)"] -= string_copy
        values["  of which the digest memo: a str hash of the token(s)"] -= string_copy
        total = totals[name] - hello_us
        counted = [
            value
            for label, value in values.items()
            if not label.startswith("  ") and "not in this total" not in label
        ]
        rows: list[list[object]] = [
            ["an ASGI middleware at all (await, one frame)", floor, floor / total * 100]
        ]
        rows += [[label, value, value / total * 100] for label, value in values.items()]
        rows.append(
            [
                "the rest: branches and locals, and every step running colder "
                "inside a request than alone",
                total - floor - sum(counted),
                None,
            ]
        )
        rows.append(["TOTAL measured: middleware - hello", total, 100.0])
        print(
            f"\n{name}: {total:.2f} µs over hello's {hello_us:.2f} µs "
            f"({total / hello_us:.2f} of hello)"
        )
        print(
            table(
                ["step", "µs", "% of total"],
                [[r[0], r[1], "-" if r[2] is None else f"{r[2]:.0f} %"] for r in rows],
            )
        )
    in_situ(requests, batches)
    cases = build_cases(requests, 10 * batches)
    for name in (BEARER, COOKIES):
        app, scopes = cases[name]
        profiler = cProfile.Profile()

        async def go(app: ASGIApp = app, scopes: list[dict[str, Any]] = scopes) -> None:
            for scope in scopes:
                await app(dict(scope), _receive, _send)

        profiler.enable()
        asyncio.run(go())
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        print(f"\ncProfile, {name}, {len(scopes)} requests, by own time (cProfile inflates calls):")
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="distinct tokens per uncached case")
    parser.add_argument("--repeat", type=int, default=3000, help="requests per cached case")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (9; at least 5)")
    parser.add_argument("--quick", action="store_true", help="tiny run: --n 20 --repeat 200")
    parser.add_argument("--profile", action="store_true", help="where the cached paths' time goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeat, args.rounds = 20, 200, 2
    requests = Requests(args.n)
    if args.profile:
        profile(requests, 5 if args.quick else PROFILE_BATCHES)
        return 0
    samples = asyncio.run(run(build_cases(requests, args.repeat), args.rounds))
    report(samples, requests, args.repeat, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
