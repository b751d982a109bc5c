"""Memory of the verified-session cache, and cold start with zero network calls.

Run ``python -m bench.memory`` (cache sizes 10,000 and 200,000; ``--quick``
for a smoke run). Each cache size runs in a fresh subprocess so one phase's
freed memory cannot hide the next one's growth. Each session is a distinct
user's access token (3 organizations of a pool of 30, each with the user's
role, 5 of their projects, scope, sid, jti: ~0.9 KB of claims) and ID token
(e-mail, name, picture), HS256 unless ``--alg ES256`` (the cache keeps the
same whatever the algorithm), minted one at a time and dropped after
``session(access, id_token)``, so what stays alive is what the cache keeps:
RSS growth (VmRSS from /proc/self/status) is the cache's cost. Past the
cache size, more tokens flow through: growth after full must be about 0.
Nothing is asserted.

Cold start runs ``import verifier``, ``AppConfig()`` from the environment with
a baked JWKS, ``TokenVerifier.from_config``, ``JWTSessionMiddleware`` and the
first verify in a fresh interpreter whose sockets refuse to connect, and
counts every attempt (there must be none).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import random
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
    CLIENT_ID,
    SCOPE,
    access_token,
    baked_env,
    banner,
    make_config,
    make_issuer,
    record,
    rss_mb,
    table,
)
from verifier.session_cache import cache_key
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

BATCH = 10_000
#: The issue's two points: the default cache.size, and a large one.
SIZES = (10_000, 200_000)
ROLES = ("owner", "admin", "member")
#: A pool of organizations (with their projects) that users' memberships are drawn from.
ORG_POOL = [
    {"id": f"org_{n:04d}Xq7", "slug": f"team-{n:04d}", "name": f"Organization {n:04d} Ltd"}
    for n in range(30)
]


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def user_claims(index: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """User ``index``'s memberships: 3 organizations of the pool, a role in each
    (drawn per user), and 5 of those organizations' projects (4 each)."""
    draw = random.Random(index)
    picked = draw.sample(ORG_POOL, 3)
    orgs = [{**org, "role": draw.choice(ROLES)} for org in picked]
    projects = [
        {
            "id": f"prj_{org['id'][4:8]}_{n}",
            "slug": f"{org['slug']}-project-{n}",
            "organizationId": org["id"],
        }
        for org, n in sorted(
            draw.sample([(org, n) for org in picked for n in range(4)], 5),
            key=lambda pair: (pair[0]["id"], pair[1]),
        )
    ]
    return orgs, projects


#: HS256 by default: what the cache keeps does not depend on the algorithm
#: (only the signature check does), and 220,000 sessions then take seconds.
HS_SECRET = "bench-memory-hs256-secret-0123456789abcdef"


def fast_minter(issuer: DevIssuer, alg: str = "HS256") -> Callable[[int], tuple[str, str]]:
    """Access and ID tokens signed straight with hmac or cryptography (faster than DevIssuer)."""
    if alg == "HS256":
        access_header = _b64(orjson.dumps({"alg": "HS256", "typ": "at+jwt"}))
        id_header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
        secret = HS_SECRET.encode()

        def signature(data: bytes) -> bytes:
            return hmac.digest(secret, data, "sha256")

    else:
        kid = issuer.kids("ES256")[-1]
        private = ECKey.import_key(issuer.private_jwk(kid)).get_op_key("sign")
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        access_header = _b64(orjson.dumps({"alg": "ES256", "kid": kid, "typ": "at+jwt"}))
        id_header = _b64(orjson.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}))
        ecdsa = ec.ECDSA(hashes.SHA256())

        def signature(data: bytes) -> bytes:
            r, s = decode_dss_signature(private.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    now = int(time.time())

    def sign(header: str, claims: dict[str, Any]) -> str:
        signing_input = f"{header}.{_b64(orjson.dumps(claims))}"
        return f"{signing_input}.{_b64(signature(signing_input.encode('ascii')))}"

    def mint(index: int) -> tuple[str, str]:
        orgs, projects = user_claims(index)
        common = {"iss": issuer.issuer, "sub": f"user_{index:07d}", "iat": now, "exp": now + 3600}
        access = sign(
            access_header,
            {
                **common,
                "aud": AUDIENCE,
                "jti": f"jti_{index:016x}",
                "sid": f"sid_{index:07d}",
                "scope": SCOPE,
                "organizations": orgs,
                "projects": projects,
            },
        )
        id_token = sign(
            id_header,
            {
                **common,
                "aud": CLIENT_ID,
                "sid": f"sid_{index:07d}",
                "email": f"user.{index:07d}@example.com",
                "email_verified": True,
                "name": f"User Number {index:07d}",
                "picture": f"https://example.com/avatars/{index:07d}.png",
            },
        )
        return access, id_token

    return mint


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """Bytes reachable from ``obj`` (getsizeof summed; objects in ``seen`` not again)."""
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
    for klass in type(obj).__mro__:
        for name in getattr(klass, "__slots__", ()):
            size += deep_size(getattr(obj, name, None), seen)
    if hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    return size


# -- one cache phase (runs in its own subprocess) -------------------------------------


def _entry_split(verifier: TokenVerifier, pair: tuple[str, str], seen: set[int]) -> dict[str, int]:
    """One entry's bytes by part; objects in ``seen`` (shared with other entries) left out."""
    cache = verifier._cache
    assert cache is not None
    key = cache_key(*pair)
    assert key is not None
    entry = cache.entries[key]
    session = entry.session
    payloads = [getattr(session, name, None) for name in ("_payload", "_id_payload")]
    payload_bytes = sum(deep_size(payload, seen) for payload in payloads)
    key_obj = next(k for k in cache.entries if k == key)
    return {
        "key_bytes": deep_size(key_obj, seen),
        "payload_bytes": payload_bytes,
        "session_bytes": deep_size(session, seen),
        "entry_bytes": deep_size(entry, seen),
    }


#: Sessions cached before one entry is measured: what they share is not its own.
WARM = 500


def phase(size: int, count: int, alg: str) -> None:
    """Verify ``count`` distinct sessions through ``session()``; print JSON lines."""
    issuer = make_issuer()
    mint = fast_minter(issuer, alg)
    auth = {"hs_secret": HS_SECRET} if alg == "HS256" else {}
    verifier = TokenVerifier.from_config(make_config(issuer, cache_size=size, auth=auth))
    session = verifier.session
    session(*mint(-1))
    verifier.clear_cache()
    warm = min(WARM, size)
    pairs = [mint(index) for index in range(warm)]
    for pair in pairs:
        session(*pair)
    # Every earlier entry pays for what the last one shares with it (kids,
    # organizations, projects, scopes): the last one's split is its own cost.
    seen: set[int] = set()
    for pair in pairs[:-1]:
        _entry_split(verifier, pair, seen)
    split = _entry_split(verifier, pairs[-1], seen)
    del pairs, seen
    every = max(100, min(BATCH, size // 5))
    start_line = {"kind": "start", "rss": rss_mb(), "cached": warm}
    start_line.update(token_chars=len(mint(0)[0]), id_chars=len(mint(0)[1]))
    print(json.dumps({**start_line, **split}), flush=True)
    start = time.perf_counter()
    for index in range(warm, count):
        session(*mint(index))
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


def run_phase(size: int, count: int, alg: str) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "bench.memory", "--phase", str(size), "--n", str(count)]
    command += ["--alg", alg]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def report_phase(size: int, lines: list[dict[str, Any]], alg: str) -> dict[str, float]:
    start = lines[0]
    samples = lines[1:]
    base = start["rss"]
    full = next((s for s in samples if s["cached"] >= size), samples[-1])
    # The next sample taken after the cache filled up: growth from there on is a leak.
    end = samples[-1]
    per_10k = (full["rss"] - base) / max(full["cached"] - start["cached"], 1) * BATCH
    parts = ("key_bytes", "payload_bytes", "session_bytes", "entry_bytes")
    entry_bytes = sum(start[name] for name in parts)
    banner(
        f"memory: cache.size={size:,}, {end['verified']:,} distinct sessions "
        f"({alg} access + ID token)"
    )
    print(
        f"one entry by getsizeof, deep, without what entries share: {entry_bytes:,} B = key "
        f"(SHA-256 of the {start['token_chars']}+{start['id_chars']}-char tokens) "
        f"{start['key_bytes']:,} B + payload bytes (access + ID, parsed when read) "
        f"{start['payload_bytes']:,} B + the Session's own objects {start['session_bytes']:,} B "
        f"+ the entry {start['entry_bytes']:,} B (+ dict/LRU slots, not counted)"
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
        f"baseline {base:.1f} MB; full at {full['verified']:,} sessions: "
        f"+{full['rss'] - base:.1f} MB = {per_10k:.1f} MB per 10,000 entries "
        f"({per_10k / BATCH * 1000:.2f} KB per session); after full: {after_full:+.1f} MB over "
        f"{end['verified'] - full['verified']:,} more sessions"
        + ("" if abs(after_full) < max(2.0, 0.05 * (full["rss"] - base)) else "  <- GROWTH")
    )
    record(
        f"memory_{size}",
        per_10k / BATCH * 1000,
        after_full_mb=after_full,
        more=end["verified"] - full["verified"],
    )
    return {
        "per_10k": per_10k,
        "after_full": after_full,
        "entry_kb": entry_bytes / 1024,
        "more": end["verified"] - full["verified"],
    }


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
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in SIZES),
        help="cache sizes, one subprocess each (10000,200000)",
    )
    parser.add_argument(
        "--more", type=int, default=20_000, help="sessions past a full cache (20000)"
    )
    parser.add_argument(
        "--alg", choices=("HS256", "ES256"), default="HS256", help="token algorithm (HS256)"
    )
    parser.add_argument("--cold", type=int, default=3, help="cold-start repeats (3)")
    parser.add_argument("--quick", action="store_true", help="tiny run: size 1,000, 1,000 more")
    parser.add_argument("--phase", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:
        phase(args.phase, args.n, args.alg)
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.quick:
        sizes, args.more, args.cold = [1_000], 1_000, 1
    summary = []
    for size in sizes:
        result = report_phase(size, run_phase(size, size + args.more, args.alg), args.alg)
        summary.append(
            [
                f"{size:,}",
                result["per_10k"] / BATCH * 1000,
                result["per_10k"],
                result["entry_kb"],
                f"{result['after_full']:+.1f} MB / {int(result['more']):,}",
            ]
        )
    banner("memory summary")
    print(
        table(
            ["cache.size", "KB / session", "MB / 10k", "entry KB (deep)", "after full"],
            summary,
        )
    )
    print("target (issue 24): <= 4 KB per session, flat once the cache is full")
    cold_start(make_issuer(), args.cold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
