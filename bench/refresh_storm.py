"""A refresh storm: N concurrent requests carry one expired access token and its refresh cookie.

Run ``python -m bench.refresh_storm`` (``--n 1000``). The requests go
through JWTSessionMiddleware in process (httpx2 ASGITransport); the token
endpoint is a real DevIssuer on uvicorn at 127.0.0.1. Single flight means the
issuer must see exactly ONE token request: that count is a correctness check,
so this script exits 1 when it is not 1 (or when a request did not come out
authenticated with new cookies). It also counts how often the expired
access token's signature was checked: once per request is the target (the
failed verify is the refresh proof; the issuer's new tokens are not
counted). Latencies are printed, never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Sequence

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.common import banner, make_config, record, table
from verifier.keys import KeyStore, VerificationKey
from verifier.middleware import JWTSessionMiddleware
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer


async def _whoami(request: Request) -> PlainTextResponse:
    user = request.user
    return PlainTextResponse(user.identity if user.is_authenticated else "anonymous")


def count_verifies(keys: KeyStore, token: str) -> list[int]:
    """Count the signature checks of ``token`` through ``keys`` (a one-item list)."""
    signing_input = token.rpartition(".")[0].encode("ascii")
    count = [0]
    key_for = keys.key_for

    def counting_key_for(kid: str | None, alg: str) -> VerificationKey:
        key = key_for(kid, alg)
        verify = key.verify

        def counted(data: bytes, signature: bytes) -> bool:
            if data == signing_input:
                count[0] += 1
            return verify(data, signature)

        return dataclasses.replace(key, verify=counted)

    keys.key_for = counting_key_for  # type: ignore[method-assign]
    return count


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def storm(issuer: DevIssuer, count: int) -> int:
    config = make_config(issuer, endpoints={"token": f"{issuer.url}/token"})
    app = JWTSessionMiddleware(Starlette(routes=[Route("/", _whoami)]), config=config)
    refresher = app.refresher
    assert isinstance(refresher, InProcessRefresher), "the config must enable refresh"

    # One login whose access token expired two minutes ago (past the 30 s leeway).
    issuer.access_ttl = -120
    login = issuer.login("u1")
    issuer.access_ttl = 300
    cookie = (
        f"jwtedge_access={login['access_token']}; jwtedge_id={login['id_token']}; "
        f"jwtedge_refresh={login['refresh_token']}"
    )
    before = issuer.stats.token_requests
    verifies = count_verifies(app.verifier.keys, login["access_token"])

    latencies: list[float] = []
    outcomes = {"authenticated + new cookies": 0, "other": 0}
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:

        async def one() -> None:
            start = time.perf_counter()
            response = await client.get("/", headers={"cookie": cookie})
            latencies.append(time.perf_counter() - start)
            renewed = any(
                value.startswith("jwtedge_access=")
                for value in response.headers.get_list("set-cookie")
            )
            ok = response.status_code == 200 and response.text == "u1" and renewed
            outcomes["authenticated + new cookies" if ok else "other"] += 1

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        wall = time.perf_counter() - began
    await refresher.aclose()

    calls = issuer.stats.token_requests - before
    stats = refresher.stats
    banner(f"refresh storm: {count} concurrent requests, one expired token + refresh cookie")
    print(
        table(
            ["token-endpoint calls", "expected", "result"],
            [[calls, 1, "ok" if calls == 1 else "FAILED"]],
        )
    )
    print(
        f"refresher: calls={stats.calls} ok={stats.ok} joined={stats.joined} "
        f"grace_reused={stats.grace_reused} reuse_refused={stats.reuse_refused} "
        f"failed={stats.failed}"
    )
    print(f"outcomes: {outcomes}")
    record("storm", verifies[0] / count, verifies=verifies[0], requests=count)
    print(
        f"verifies of the expired access token: {verifies[0]} for {count} requests = "
        f"{verifies[0] / count:.2f} per request (target 1: the failed verify is the proof)"
    )
    ms = [value * 1e3 for value in latencies]
    rows = [
        [
            f"{count} requests",
            statistics.median(ms),
            _percentile(ms, 0.90),
            _percentile(ms, 0.99),
            max(ms),
            wall * 1e3,
        ]
    ]
    print(table(["latency (ms)", "p50", "p90", "p99", "max", "wall"], rows))
    failed = calls != 1 or outcomes["other"] != 0
    if failed:
        print(
            "FAILED: single flight must make exactly one token request, and every "
            "request must come out authenticated with new cookies."
        )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="concurrent requests (1000)")
    parser.add_argument(
        "--token-delay", type=float, default=0.0, help="seconds the token endpoint waits (0)"
    )
    args = parser.parse_args(argv)
    with DevIssuer.serve(port=0, audience="api", client_id="web") as issuer:
        issuer.token_delay = args.token_delay
        return asyncio.run(storm(issuer, args.n))


if __name__ == "__main__":
    raise SystemExit(main())
