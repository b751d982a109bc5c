"""What an unauthenticated request can cost: hostile tokens through the middleware.

Run ``python -m bench.hostile`` (``--quick`` for a smoke run). The ASGI app is
called directly (as ``bench.middleware`` does), with the default remote key
layer (``keys.remote=unknown-kid``; its fetches go to an in-process
``MockTransport`` serving the issuer's JWKS, never to the network) or with
``keys.remote=never``. Every figure is a ratio to a valid RS256 Bearer request
whose token is verified in full (``cache.size=0``, distinct tokens), measured
in the same rounds; cases are interleaved round by round. Nothing is asserted.

The hostile tokens are the ones of issue 17, forged (random signature), each
one distinct so no cache can help:

- 64,000 characters whose header has ~5,000 members, as a Bearer header and as
  the access cookie (over ``auth.max_token_bytes``: refused unread);
- ~700 header members under the 8 KiB cap (parsed, then refused);
- RSS growth after 1,024 distinct ~700-member tokens under the cap, in a fresh
  subprocess for each remote mode;
- with ``auth.max_token_bytes`` at its maximum (1 MiB), one request per
  hostile header shape, timed alone (a request still running after
  ``--limit`` seconds is stopped and reported as more than that).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import httpx2
import orjson

from bench.common import (
    access_token,
    banner,
    interleaved,
    make_config,
    make_issuer,
    median,
    paired_ratio,
    rss_mb,
    spread,
    table,
    verdict,
)
from bench.middleware import _batch, _receive, _scope, _send, hello_app
from verifier import jws as jws_module
from verifier import limits
from verifier.middleware import JWTSessionMiddleware
from verifier.remote import RemoteKeys
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

#: Targets from issue 17: times a valid uncached RS256 request; MiB; seconds.
RATIO_TARGET = 3.0
RSS_TARGET_MIB = 30.0
MAX_BYTES_TARGET_S = 1.0
MAX_TOKEN_BYTES = 1024 * 1024

_NAME_CHARS = string.ascii_letters + string.digits
_JOSE_NAMES = frozenset({"alg", "kid", "typ", "cty", "jku", "jwk", "x5u", "x5c", "b64", "zip"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _names(count: int, seed: int) -> list[str]:
    """``count`` distinct 3-character member names (another set per ``seed``)."""
    base = len(_NAME_CHARS)
    names: list[str] = []
    index = (seed * 7919) % base**3
    while len(names) < count:
        at = index % base**3
        name = _NAME_CHARS[at // base**2] + _NAME_CHARS[at // base % base] + _NAME_CHARS[at % base]
        # Real JOSE names would make the header refused for what it says, not its size.
        if name not in _JOSE_NAMES:
            names.append(name)
        index += 1
    return names


def forged(header_json: str, total: int) -> str:
    """A token of exactly ``total`` characters (or the smallest above it) with this header.

    The payload is padded to reach ``total``; the signature is random bytes of
    an RS256 signature's length, so the token is a forgery that only parsing
    and the signature check can refuse.
    """
    header = _b64(header_json.encode("utf-8"))
    claims: dict[str, Any] = {"iss": "http://127.0.0.1:9000", "sub": "attacker", "exp": 2**31}
    base = len(json.dumps({**claims, "pad": ""}))
    # Unpadded base64url never has a length of 4k+1: pick the signature length
    # (around an RS256 signature's 256 bytes) that lets the payload fill the rest.
    for signature_bytes in (256, 257, 255):
        signature = _b64(os.urandom(signature_bytes))
        wanted = total - len(header) - len(signature) - 2
        if wanted % 4 != 1 and wanted * 3 // 4 >= base:
            claims["pad"] = "x" * (wanted * 3 // 4 - base)
            return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(os.urandom(256))}"


def many_members(members: int, seed: int, *, kid: str | None = None) -> str:
    """A header JSON with ``members`` distinct members after ``alg`` and ``kid``."""
    kid = kid if kid is not None else f"hostile-{seed:07d}"
    body = ",".join(f'"{name}":0' for name in _names(members, seed))
    return f'{{"alg":"RS256","kid":"{kid}",{body}}}'


def header_shapes(size: int, seed: int) -> dict[str, str]:
    """Hostile headers that fill a token of ``size`` characters, one per shape."""
    json_room = size * 3 // 4 - 400  # what fits in the header segment, leaving the rest
    members = json_room // 8  # '"abc":0,' per member
    kid = f"hostile-{seed:07d}"
    return {
        "distinct members": many_members(members, seed, kid=kid),
        "one member repeated": f'{{"alg":"RS256","kid":"{kid}",'
        + ",".join(['"a":0'] * (json_room // 6))
        + "}",
        "colons in one value": f'{{"alg":"RS256","kid":"{kid}","x":"{":" * json_room}"}}',
        "nested 1,000 deep": f'{{"alg":"RS256","kid":"{kid}","x":{"[" * 1000}0{"]" * 1000},'
        + f'"y":"{"y" * (json_room - 2100)}"}}',
        # Many strings, two members: the member count reads every string.
        "many strings, 2 members": f'{{"alg":"RS256","kid":"{kid}","x":['
        + ",".join(['"a:"'] * (json_room // 5))
        + "]}",
        # A string that never ends, full of escaped quotes and colons.
        "unterminated string": f'{{"alg":"RS256","kid":"{kid}","x":"' + '\\":' * (json_room // 3),
    }


# -- the apps ---------------------------------------------------------------------


def _jwks_transport(issuer: DevIssuer) -> httpx2.MockTransport:
    body = orjson.dumps(issuer.jwks())

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/openid-configuration"):
            document = {"issuer": issuer.issuer, "jwks_uri": f"{issuer.issuer}/jwks"}
            return httpx2.Response(200, json=document)
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return httpx2.MockTransport(answer)


def make_app(issuer: DevIssuer, remote: str, **auth: Any) -> JWTSessionMiddleware:
    """The middleware over a hello app, cache off; ``remote`` is ``keys.remote``."""
    config = make_config(issuer, cache_size=0, keys={"remote": remote}, auth=auth)
    verifier = TokenVerifier.from_config(config)
    layer = None
    if remote != "never":
        layer = RemoteKeys.from_config(config, verifier.keys, transport=_jwks_transport(issuer))
    return JWTSessionMiddleware(hello_app(), config=config, verifier=verifier, remote=layer)


def bearer(token: str) -> dict[str, Any]:
    return _scope([(b"authorization", f"Bearer {token}".encode())])


def cookie(token: str) -> dict[str, Any]:
    return _scope([(b"cookie", f"theme=dark; jwtedge_access={token}".encode())])


# -- timing -------------------------------------------------------------------------


Scopes = Callable[[int], list[dict[str, Any]]]


def build_cases(
    issuer: DevIssuer, count: int
) -> tuple[dict[str, tuple[JWTSessionMiddleware, Scopes]], list[str]]:
    """Each case: an app and the scopes of one round (hostile tokens are new every round)."""
    default, never = make_app(issuer, "unknown-kid"), make_app(issuer, "never")
    valid = [bearer(access_token(issuer, i, "RS256")) for i in range(count)]

    def hostile(
        members: int, size: int, wrap: Callable[[str], dict[str, Any]], base: int
    ) -> Scopes:
        def scopes(round_index: int) -> list[dict[str, Any]]:
            first = base + round_index * count
            tokens = [forged(many_members(members, first + i), size) for i in range(count)]
            assert all(len(token) == size for token in tokens), (size, len(tokens[0]))
            return [wrap(token) for token in tokens]

        return scopes

    cases = {
        "valid RS256 Bearer, verified": (default, lambda _round: valid),
        "64 KB, 5,000 members, Bearer": (default, hostile(5000, 64_000, bearer, 1_000_000)),
        "64 KB, 5,000 members, cookie": (default, hostile(5000, 64_000, cookie, 2_000_000)),
        "64 KB, Bearer, remote=never": (never, hostile(5000, 64_000, bearer, 3_000_000)),
        "64 KB, cookie, remote=never": (never, hostile(5000, 64_000, cookie, 4_000_000)),
        "700 members < 8 KiB, Bearer": (default, hostile(700, 8_000, bearer, 5_000_000)),
        "700 members < 8 KiB, cookie": (default, hostile(700, 8_000, cookie, 6_000_000)),
        "700 members, Bearer, remote=never": (never, hostile(700, 8_000, bearer, 7_000_000)),
    }
    notes = [
        "hostile tokens: 64,000 characters (5,000 header members) and 8,000 characters "
        "(700 header members, under the 8,192-byte cap); new ones every round",
    ]
    return cases, notes


async def run_rounds(
    cases: dict[str, tuple[JWTSessionMiddleware, Scopes]], rounds: int
) -> dict[str, list[float]]:
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds + 1):  # round 0 warms up (and does the one key fetch)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            app, make_scopes = cases[name]
            scopes = make_scopes(round_index)
            value = await _batch(app, scopes)
            if round_index:
                samples[name].append(value)
            del scopes
        gc.collect()
    return samples


class _Stopped(Exception):
    pass


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stopped


async def one_request(app: JWTSessionMiddleware, scope: dict[str, Any], limit: float) -> float:
    """Seconds for one request; ``inf`` when it was stopped after ``limit`` seconds."""
    previous = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.perf_counter()
    try:
        await app(dict(scope), _receive, _send)
    except _Stopped:
        return float("inf")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return time.perf_counter() - start


async def max_bytes_run(issuer: DevIssuer, limit: float) -> list[tuple[str, str, float]]:
    rows = []
    apps = {
        remote: make_app(issuer, remote, max_token_bytes=MAX_TOKEN_BYTES)
        for remote in ("unknown-kid", "never")
    }
    # One fetch happens on the first unknown kid (then the cooldown holds): do it first.
    await apps["unknown-kid"](bearer(forged(many_members(3, 1), 400)), _receive, _send)
    for seed, remote in enumerate(apps):
        for shape, header_json in header_shapes(MAX_TOKEN_BYTES, 20_000 + seed).items():
            # One token per app: the first request must not warm anything for the second.
            token = forged(header_json, MAX_TOKEN_BYTES)
            assert len(token) <= MAX_TOKEN_BYTES, (shape, len(token))
            rows.append((shape, remote, await one_request(apps[remote], bearer(token), limit)))
    return rows


# -- the claims nesting check on the verify path ---------------------------------------


def nesting_rows(rounds: int) -> list[list[object]]:
    """What the nesting-depth check adds to parsing a payload, by payload size."""
    sizes = [(3, 5), (10, 20), (30, 60), (100, 300)]
    payloads = {}
    for orgs, projects in sizes:
        claims = {
            "iss": "http://127.0.0.1:9000",
            "sub": "user_0000001",
            "organizations": [
                {"id": f"org_{i}", "slug": f"o{i}", "name": f"Org {i}", "role": "member"}
                for i in range(orgs)
            ],
            "projects": [
                {"id": f"prj_{i}", "slug": f"p{i}", "organizationId": "org_0"}
                for i in range(projects)
            ],
        }
        payloads[f"{orgs} orgs, {projects} projects"] = orjson.dumps(claims)
    cases: dict[str, tuple[Callable[[Any], object], Sequence[Any]]] = {}
    for name, raw in payloads.items():
        parsed = orjson.loads(raw)
        cases[f"{name} parse"] = (orjson.loads, [raw] * 2000)
        cases[f"{name} check"] = (
            lambda pair: limits._shallow(pair[0]) or limits._too_deep(pair[1]),
            [(raw, parsed)] * 2000,
        )
    samples = interleaved(cases, rounds=rounds)
    rows: list[list[object]] = []
    for name, raw in payloads.items():
        parse, check = samples[f"{name} parse"], samples[f"{name} check"]
        skipped = limits._shallow(raw)
        rows.append(
            [name, len(raw), median(parse), median(check), paired_ratio(check, parse), skipped]
        )
    return rows


# -- memory (in a fresh subprocess per mode) -----------------------------------------


async def _memory_child(remote: str, count: int) -> dict[str, Any]:
    issuer = make_issuer()
    app = make_app(issuer, remote)
    hostile = [forged(many_members(700, 60_000 + i), 8_000) for i in range(count)]
    # First-use allocations are not growth: one valid request, and the one key
    # fetch the first unknown kid would make.
    await app(bearer(access_token(issuer, 0, "RS256")), _receive, _send)
    if isinstance(app.remote, RemoteKeys):
        await app.remote.refresh_now()
    gc.collect()
    before = rss_mb()
    for token in hostile:
        await app(bearer(token), _receive, _send)
    gc.collect()
    after = rss_mb()
    cache = jws_module._HEADERS
    entries = getattr(cache, "entries", cache)  # a plain dict before issue 17
    return {
        "remote": remote,
        "before": before,
        "after": after,
        "cached_headers": len(entries),
        "rejected": dict(app.stats.rejected),
    }


def memory_run(count: int) -> list[dict[str, Any]]:
    results = []
    for remote in ("unknown-kid", "never"):
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.hostile",
                "--memory-child",
                remote,
                "--count",
                str(count),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if child.returncode != 0:
            raise RuntimeError(f"the memory child failed:\n{child.stderr[-2000:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    return results


# -- report ---------------------------------------------------------------------------


def report(
    samples: dict[str, list[float]],
    notes: list[str],
    max_rows: list[tuple[str, str, float]],
    memory: list[dict[str, Any]],
    nesting: list[list[object]],
    *,
    count: int,
    rounds: int,
    limit: float,
    memory_count: int,
) -> None:
    banner("hostile: what an unauthenticated request costs (median of rounds)")
    print(
        f"{rounds} interleaved rounds of {count} distinct tokens per case; ASGI called "
        "directly (Starlette hello inner app); default keys.remote=unknown-kid unless noted."
    )
    for note in notes:
        print(note)
    valid = samples["valid RS256 Bearer, verified"]
    rows = []
    for name, values in samples.items():
        ratio = paired_ratio(values, valid)
        hostile = values is not valid
        rows.append(
            [
                name,
                f"{median(values):10.2f} ±{spread(values):4.1f}%",
                ratio,
                f"≤ {RATIO_TARGET:g}x" if hostile else "-",
                verdict(ratio, RATIO_TARGET) if hostile else "-",
            ]
        )
    print(table(["case", "µs/request", "x valid uncached", "target", ""], rows))

    print("\nclaims nesting-depth check (after the signature, before claims), per payload:")
    print(
        table(
            ["payload", "bytes", "orjson µs", "check µs", "check / parse", "counts only"],
            nesting,
        )
    )
    print(f"\nauth.max_token_bytes = {MAX_TOKEN_BYTES:,} (its maximum), one request each:")
    max_table = []
    for shape, remote, seconds in max_rows:
        shown = f"> {limit:g} (stopped)" if seconds == float("inf") else f"{seconds:.4f}"
        max_table.append(
            [
                f"{shape}, remote={remote}",
                shown,
                f"≤ {MAX_BYTES_TARGET_S:g} s",
                verdict(seconds, MAX_BYTES_TARGET_S),
            ]
        )
    print(table(["1 MiB hostile token", "seconds", "target", ""], max_table))

    print(f"\nRSS after {memory_count:,} distinct hostile tokens under the cap (fresh process):")
    memory_rows = []
    for result in memory:
        growth = result["after"] - result["before"]
        memory_rows.append(
            [
                f"keys.remote={result['remote']}",
                result["before"],
                result["after"],
                growth,
                result["cached_headers"],
                f"≤ {RSS_TARGET_MIB:g} MiB",
                verdict(growth, RSS_TARGET_MIB),
            ]
        )
    print(
        table(
            ["mode", "RSS before MiB", "after MiB", "growth MiB", "cached headers", "target", ""],
            memory_rows,
        )
    )
    print("refusals:", {result["remote"]: result["rejected"] for result in memory})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50, help="distinct tokens per case per round")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (9)")
    parser.add_argument("--count", type=int, default=1024, help="hostile tokens for RSS (1024)")
    parser.add_argument("--limit", type=float, default=30.0, help="stop a 1 MiB request after")
    parser.add_argument("--quick", action="store_true", help="tiny run: --n 10 --rounds 2")
    parser.add_argument("--memory-child", metavar="REMOTE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(asyncio.run(_memory_child(args.memory_child, args.count))))
        return 0
    if args.quick:
        args.n, args.rounds, args.count = 10, 2, 64
    issuer = make_issuer()
    cases, notes = build_cases(issuer, args.n)
    samples = asyncio.run(run_rounds(cases, args.rounds))
    max_rows = asyncio.run(max_bytes_run(issuer, args.limit))
    memory = memory_run(args.count)
    nesting = nesting_rows(args.rounds)
    report(
        samples,
        notes,
        max_rows,
        memory,
        nesting,
        count=args.n,
        rounds=args.rounds,
        limit=args.limit,
        memory_count=args.count,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
