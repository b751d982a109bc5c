"""Memory of the verified-token cache, and cold start with zero network calls.

Run ``python -m bench.memory`` (``--n 200000`` tokens, ``--large 100000``;
``--quick`` for a smoke run). Each cache size runs in a fresh subprocess so
one phase's freed memory cannot hide the next one's growth. Tokens are ES256
(fast to sign) with the realistic payload, minted one at a time and dropped
after verifying, so the only copy of a token that stays alive is the cache's
own key: RSS growth is the cache's cost. RSS is VmRSS from
/proc/self/status. Nothing is asserted.

Cold start runs ``import verifier``, ``AppConfig()`` from the environment with
a baked JWKS, ``TokenVerifier.from_config``, ``JWTSessionMiddleware`` and the
first verify in a fresh interpreter whose sockets refuse to connect, and
counts every attempt (there must be none).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey

from bench.common import (
    AUDIENCE,
    ORGANIZATIONS,
    PROJECTS,
    SCOPE,
    access_token,
    baked_env,
    banner,
    make_config,
    make_issuer,
    rss_mb,
    table,
)
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

BATCH = 10_000


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fast_minter(issuer: DevIssuer) -> Callable[[int], str]:
    """ES256 tokens signed straight with cryptography (DevIssuer's path is slower)."""
    kid = issuer.kids("ES256")[-1]
    private = ECKey.import_key(issuer.private_jwk(kid)).get_op_key("sign")
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    header = _b64(orjson.dumps({"alg": "ES256", "kid": kid, "typ": "at+jwt"}))
    ecdsa = ec.ECDSA(hashes.SHA256())
    now = int(time.time())

    def mint(index: int) -> str:
        claims = {
            "iss": issuer.issuer,
            "sub": f"user_{index:07d}",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 3600,
            "jti": f"jti_{index:016x}",
            "sid": f"sid_{index:07d}",
            "scope": SCOPE,
            "organizations": ORGANIZATIONS,
            "projects": PROJECTS,
        }
        signing_input = f"{header}.{_b64(orjson.dumps(claims))}"
        r, s = decode_dss_signature(private.sign(signing_input.encode("ascii"), ecdsa))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    return mint


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """Bytes reachable from ``obj`` (getsizeof summed; shared objects counted once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, bool | type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(deep_size(item, seen) for item in obj)
    elif hasattr(obj, "items") and callable(obj.items):  # MappingProxyType
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    for name in getattr(type(obj), "__slots__", ()):
        size += deep_size(getattr(obj, name, None), seen)
    if hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    return size


# -- one cache phase (runs in its own subprocess) -------------------------------------


def phase(size: int, count: int) -> None:
    """Verify ``count`` distinct tokens through ``session()``; print JSON lines."""
    issuer = make_issuer()
    mint = fast_minter(issuer)
    verifier = TokenVerifier.from_config(make_config(issuer, cache_size=size))
    session = verifier.session
    session(mint(-1))
    verifier.clear_cache()
    sample = mint(0)
    entry = session(sample)
    seen: set[int] = set()
    claims_bytes = deep_size(entry.claims, seen)
    session_bytes = deep_size(entry, seen)
    every = max(100, min(BATCH, size // 5))
    print(
        json.dumps(
            {
                "kind": "start",
                "rss": rss_mb(),
                "token_chars": len(sample),
                "token_bytes": sys.getsizeof(sample),
                "claims_bytes": claims_bytes,
                "session_bytes": session_bytes,
            }
        ),
        flush=True,
    )
    start = time.perf_counter()
    for index in range(1, count):
        session(mint(index))
        if (index + 1) % every == 0 or index + 1 == count:
            cached = verifier._cache
            print(
                json.dumps(
                    {
                        "kind": "sample",
                        "verified": index + 1,
                        "cached": len(cached) if cached is not None else 0,
                        "rss": rss_mb(),
                        "seconds": time.perf_counter() - start,
                    }
                ),
                flush=True,
            )


def run_phase(size: int, count: int) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "bench.memory", "--phase", str(size), "--n", str(count)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def report_phase(size: int, lines: list[dict[str, Any]]) -> dict[str, float]:
    start = lines[0]
    samples = lines[1:]
    base = start["rss"]
    full = next((s for s in samples if s["cached"] >= size), samples[-1])
    # The next sample taken after the cache filled up: growth from there on is a leak.
    end = samples[-1]
    per_10k = (full["rss"] - base) / max(full["cached"], 1) * BATCH
    entry_bytes = start["token_bytes"] + start["claims_bytes"] + start["session_bytes"]
    banner(f"memory: cache.size={size:,}, {end['verified']:,} distinct ES256 tokens")
    print(
        f"one entry by getsizeof, deep: {entry_bytes:,} B = key (the token, "
        f"{start['token_chars']} chars) {start['token_bytes']:,} B + Session.claims "
        f"{start['claims_bytes']:,} B + the Session's own objects {start['session_bytes']:,} B "
        "(+ dict/LRU slots, not counted)"
    )
    step = -(-len(samples) // 10)
    picked = {*range(0, len(samples), step), samples.index(full), len(samples) - 1}
    shown = [samples[i] for i in sorted(picked)]
    rows = [
        [f"{s['verified']:,}", f"{s['cached']:,}", s["rss"], s["rss"] - base, s["seconds"]]
        for s in shown
    ]
    print(table(["verified", "in cache", "RSS MB", "growth MB", "s"], rows))
    after_full = end["rss"] - full["rss"]
    print(
        f"baseline {base:.1f} MB; full at {full['verified']:,} tokens: +{full['rss'] - base:.1f} MB"
        f" = {per_10k:.1f} MB per 10,000 entries; after full: {after_full:+.1f} MB over "
        f"{end['verified'] - full['verified']:,} more tokens"
        + ("" if abs(after_full) < max(2.0, 0.05 * (full["rss"] - base)) else "  <- GROWTH")
    )
    return {"per_10k": per_10k, "after_full": after_full, "entry_kb": entry_bytes / 1024}


# -- cold start (a fresh interpreter; no bench imports in it) --------------------------

_COLD_CHILD = r"""
import json, os, socket, time
t0 = time.perf_counter()
attempts = []
def _refuse(name):
    def refuse(*args, **kwargs):
        attempts.append(name)
        raise OSError(f"bench socket guard: {name} refused")
    return refuse
for name in ("connect", "connect_ex", "sendto", "sendmsg"):
    setattr(socket.socket, name, _refuse("socket." + name))
socket.create_connection = _refuse("create_connection")
socket.getaddrinfo = _refuse("getaddrinfo")
socket.gethostbyname = _refuse("gethostbyname")

marks = {}
t = time.perf_counter()
import verifier
marks["import verifier"] = time.perf_counter() - t
t = time.perf_counter()
config = verifier.AppConfig()
marks["AppConfig() from env (baked JWKS)"] = time.perf_counter() - t
t = time.perf_counter()
tv = verifier.TokenVerifier.from_config(config)
marks["TokenVerifier.from_config"] = time.perf_counter() - t
async def app(scope, receive, send):
    pass
t = time.perf_counter()
mw = verifier.JWTSessionMiddleware(app, config=config, verifier=tv)
marks["JWTSessionMiddleware(...)"] = time.perf_counter() - t
t = time.perf_counter()
session = tv.session(os.environ["BENCH_TOKEN"])
marks["first session() (RS256, uncached)"] = time.perf_counter() - t
t = time.perf_counter()
tv.session(os.environ["BENCH_TOKEN_2"])
marks["second session() (another token)"] = time.perf_counter() - t
marks["total in process"] = time.perf_counter() - t0
print(json.dumps({"marks": marks, "attempts": attempts, "user": session.user.id,
                  "remote": config.keys.remote}))
"""


def cold_start(issuer: DevIssuer, repeats: int) -> None:
    env = {**os.environ, **baked_env(issuer)}
    # The default key mode (unknown-kid) must not fetch either when the bake has the kid.
    env.pop("APP_CONFIG_KEYS__REMOTE")
    env["BENCH_TOKEN"] = access_token(issuer, 1, "RS256")
    env["BENCH_TOKEN_2"] = access_token(issuer, 2, "RS256")
    runs: list[dict[str, Any]] = []
    walls: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="jwtedge-cold-") as tmp:
        env["APP_CONFIG_ENV_FILE"] = os.path.join(tmp, "none.env")
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], cwd=tmp, check=True, timeout=60)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", _COLD_CHILD],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            walls.append(time.perf_counter() - start)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    banner(f"cold start: fresh interpreter, median of {repeats}, sockets guarded")
    rows = [
        [name, statistics.median(run["marks"][name] for run in runs) * 1e3]
        for name in runs[0]["marks"]
    ]
    rows.append(["process wall time (parent's clock)", statistics.median(walls) * 1e3])
    rows.append(["  of which bare `python -c pass`", statistics.median(bare) * 1e3])
    print(table(["step", "ms"], rows))
    attempts = sorted({a for run in runs for a in run["attempts"]})
    total = sum(len(run["attempts"]) for run in runs)
    print(
        f"network calls attempted: {total}"
        + (f" ({', '.join(attempts)})  <- UNEXPECTED" if total else " (socket guard armed)")
        + f"; keys.remote={runs[0]['remote']}; session user {runs[0]['user']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="distinct tokens (200000)")
    parser.add_argument("--large", type=int, default=100_000, help="the larger bound (100000)")
    parser.add_argument("--cold", type=int, default=3, help="cold-start repeats (3)")
    parser.add_argument("--quick", action="store_true", help="tiny run: 3,000 tokens, size 1,000")
    parser.add_argument("--phase", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:
        phase(args.phase, args.n)
        return 0
    sizes = [10_000, args.large]
    if args.quick:
        args.n, sizes, args.cold = 3_000, [1_000], 1
    summary = []
    for size in sizes:
        result = report_phase(size, run_phase(size, args.n))
        summary.append([f"{size:,}", result["per_10k"], result["entry_kb"], result["after_full"]])
    banner("memory summary")
    print(table(["cache.size", "MB / 10k entries", "entry KB (deep)", "MB after full"], summary))
    cold_start(make_issuer(), args.cold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
