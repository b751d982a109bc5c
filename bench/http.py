"""Requests per second over real HTTP: uvicorn on 127.0.0.1, load from wrk.

Run ``python -m bench.http`` (``--duration 10`` seconds per case, ``--rounds``
repeats every case interleaved; medians are printed). Cases, each its own
uvicorn process (1 worker, httptools, no access log):

- ``hello``: a Starlette hello world, sent the same request bytes as the case
  it is the baseline of (a Bearer header; or the cookies);
- ``cached``: the same app behind JWTSessionMiddleware, one Bearer token repeated;
- ``cached cookies``: the same, with access, ID and refresh cookies (realistic
  sizes, refresh enabled) and two others, one browser repeated;
- ``uncached RS256``: the middleware with ``cache.size=0`` and a file of
  distinct RS256 tokens that wrk rotates through;
- ``session roundtrip``: a baseline app that asks a session service (a second
  uvicorn app on 127.0.0.1) over HTTP with httpx2 on every request.

When wrk is missing and cannot be installed, an httpx2 async load generator
stands in and the output says so. Ratios to hello are medians of per-round
ratios (each case ran next to its hello in every round); req/s carry their
spread. Every process started here is stopped on exit (process groups,
try/finally); nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bench.common import (
    ISSUER,
    access_token,
    baked_env,
    banner,
    make_issuer,
    median,
    mint,
    paired_ratio,
    record,
    spread,
    table,
)

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = 32

# -- the apps uvicorn serves (chosen by BENCH_APP) -----------------------------------


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _hello_app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


def _auth_service() -> Starlette:
    """A session service: looks the bearer token up and answers the session as JSON."""
    token = os.environ["BENCH_TOKEN"]
    session = {
        "user": {"id": "user_0000000", "email": "a@example.com"},
        "organizations": [{"id": "org_7fQk2Lm9", "role": "owner"}],
    }

    async def lookup(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(session)

    return Starlette(routes=[Route("/session", lookup)])


def _roundtrip_app() -> Starlette:
    """The baseline: every request asks the session service over HTTP."""
    auth_url = os.environ["BENCH_AUTH_URL"]
    clients: list[httpx2.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx2.AsyncClient(base_url=auth_url, limits=limits, trust_env=False) as client:
            clients.append(client)
            yield

    async def page(request: Request) -> Response:
        headers = {"authorization": request.headers.get("authorization", "")}
        answer = await clients[0].get("/session", headers=headers)
        if answer.status_code != 200:
            return PlainTextResponse("unauthorized", status_code=401)
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", page)], lifespan=lifespan)


def create_app() -> Any:
    """uvicorn factory: ``BENCH_APP`` = hello | middleware | auth | roundtrip."""
    kind = os.environ["BENCH_APP"]
    if kind == "hello":
        return _hello_app()
    if kind == "auth":
        return _auth_service()
    if kind == "roundtrip":
        return _roundtrip_app()
    if kind == "middleware":
        from verifier import AppConfig, JWTSessionMiddleware

        return JWTSessionMiddleware(_hello_app(), config=AppConfig())
    raise SystemExit(f"unknown BENCH_APP {kind!r}")


# -- processes ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start(name: str, env: dict[str, str], workdir: Path) -> Server:
    port = _free_port()
    log = workdir / f"{name.replace(' ', '_')}.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.http:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "APP_CONFIG_ENV_FILE": str(workdir / "none.env"), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    return Server(name, port, process, log)


def _wait_ready(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-2000:]}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), 0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not start within {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextlib.contextmanager
def servers(specs: dict[str, dict[str, str]], workdir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name, env in specs.items():
            started[name] = _start(name, env, workdir)
        for server in started.values():
            _wait_ready(server)
        yield started
    finally:
        for server in started.values():
            _stop(server.process)


# -- load generators ----------------------------------------------------------------

_CACHED_LUA = """
wrk.headers["Authorization"] = "Bearer {token}"
"""

_COOKIES_LUA = """
wrk.headers["Cookie"] = "{cookie}"
"""

#: Issue 24's targets: requests/s of the middleware over its hello, at least.
TARGETS = {"middleware cached Bearer": 0.95, "middleware cached cookies": 0.9}

_ROTATE_LUA = """
local tokens = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/", {["Authorization"] = "Bearer " .. tokens[i]})
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def ensure_wrk() -> str | None:
    """The wrk binary, installing the Debian package when missing; None if impossible."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("wrk not found: trying apt-get install -y wrk ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(command, env=env, capture_output=True, timeout=180, check=False)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(wrk: str, url: str, duration: float, script: Path, args: Sequence[str] = ()) -> Result:
    command = [
        wrk,
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url + "/",
    ]
    if args:
        command += ["--", *args]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Result(
        rps=float(rps.group(1)) if rps else float("nan"),
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        errors=errors,
    )


def run_httpx2(
    url: str, duration: float, tokens: Sequence[str | None], cookie: str | None = None
) -> Result:
    """Fallback load: CONNECTIONS concurrent keep-alive clients for ``duration`` seconds."""

    async def main() -> Result:
        latencies: list[float] = []
        errors = 0
        limits = httpx2.Limits(max_connections=CONNECTIONS)
        async with httpx2.AsyncClient(base_url=url, limits=limits, trust_env=False) as client:
            deadline = time.perf_counter() + duration

            async def worker(offset: int) -> None:
                nonlocal errors
                index = offset
                while time.perf_counter() < deadline:
                    token = tokens[index % len(tokens)]
                    index += CONNECTIONS
                    headers = {"authorization": f"Bearer {token}"} if token else {}
                    if cookie is not None:
                        headers["cookie"] = cookie
                    start = time.perf_counter()
                    response = await client.get("/", headers=headers)
                    latencies.append(time.perf_counter() - start)
                    if response.status_code >= 400:
                        errors += 1

            began = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(CONNECTIONS)))
            elapsed = time.perf_counter() - began
        latencies.sort()

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

        return Result(len(latencies) / elapsed, pct(0.50), pct(0.99), errors)

    return asyncio.run(main())


# -- the bench ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case (10)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats (1)")
    parser.add_argument("--tokens", type=int, default=2000, help="distinct RS256 tokens (2000)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per case before the rounds (0 = none)"
    )
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "httpx2"), default="auto", help="load generator"
    )
    args = parser.parse_args(argv)

    wrk = ensure_wrk() if args.loadgen != "httpx2" else None
    if args.loadgen == "wrk" and wrk is None:
        print("wrk is not available", file=sys.stderr)
        return 2
    issuer = make_issuer()
    token = access_token(issuer, 0, "RS256", ttl=3600)
    id_token = issuer.id_token(
        sub="user_0000000",
        sid="sid_0000000",
        email="ada.lovelace@example.com",
        name="Ada Lovelace",
        picture="https://example.com/avatars/ada-lovelace.png",
    )
    cookie = (
        f"theme=dark; _ga=GA1.1.1234567890.1700000000; jwtedge_access={token}; "
        f"jwtedge_id={id_token}; jwtedge_refresh={secrets.token_urlsafe(32)}"
    )
    distinct = mint(issuer, args.tokens, "RS256", ttl=3600)
    warmup = args.warmup if args.warmup is not None else min(2.0, max(1.0, args.duration / 5))
    # `timeout` and CI send SIGTERM: exit through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="jwtedge-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "tokens").write_text("\n".join(distinct) + "\n")
        (workdir / "cached.lua").write_text(_CACHED_LUA.format(token=token))
        (workdir / "cookies.lua").write_text(_COOKIES_LUA.format(cookie=cookie))
        (workdir / "rotate.lua").write_text(_ROTATE_LUA)
        env = baked_env(issuer)
        specs = {
            "hello": {"BENCH_APP": "hello"},
            "cached": {"BENCH_APP": "middleware", **env},
            # Refresh enabled, as wherever a refresh cookie is set (the token is fresh: no call).
            "cookies": {
                "BENCH_APP": "middleware",
                **env,
                "APP_CONFIG_ENDPOINTS__TOKEN": f"{ISSUER}/token",
            },
            "uncached": {"BENCH_APP": "middleware", **env, "APP_CONFIG_CACHE__SIZE": "0"},
            "auth": {"BENCH_APP": "auth", "BENCH_TOKEN": token},
        }
        # (case label, server, lua script, script args, tokens for the fallback, baseline)
        cases: list[tuple[str, str, str, list[str], Sequence[str | None], str]] = [
            # hello gets the same request bytes as the cases it is the baseline
            # of: the difference between the rows is the middleware, not parsing.
            ("hello", "hello", "cached.lua", [], [token], "hello"),
            ("middleware cached Bearer", "cached", "cached.lua", [], [token], "hello"),
            ("hello (cookies)", "hello", "cookies.lua", [], [None], "hello (cookies)"),
            ("middleware cached cookies", "cookies", "cookies.lua", [], [None], "hello (cookies)"),
            (
                "middleware uncached RS256",
                "uncached",
                "rotate.lua",
                ["tokens"],
                distinct,
                "hello",
            ),
            ("session roundtrip", "roundtrip", "cached.lua", [], [token], "hello"),
        ]
        loadgen = f"wrk, 1 thread, {CONNECTIONS} connections" if wrk else "httpx2 (FALLBACK)"
        banner(f"http: uvicorn 1 worker (httptools), load: {loadgen}")
        if not wrk:
            why = (
                "--loadgen httpx2 was asked for"
                if args.loadgen == "httpx2"
                else "wrk is not installed and could not be installed"
            )
            print(
                f"NOTE: {why}; an httpx2 async load generator runs in this Python process "
                "instead. It saturates well below wrk, so absolute rates are low and the "
                "ratios are compressed towards 1."
            )
        started = time.monotonic()
        results: dict[str, list[Result]] = {label: [] for label, *_ in cases}
        with servers(specs, workdir) as running:
            roundtrip_env = {"BENCH_APP": "roundtrip", "BENCH_AUTH_URL": running["auth"].url}
            with servers({"roundtrip": roundtrip_env}, workdir) as more:
                running.update(more)
                first = 0 if warmup > 0 else 1
                for round_index in range(first, args.rounds + 1):  # round 0 warms up
                    length = warmup if round_index == 0 else args.duration
                    shift = round_index % len(cases)
                    for label, name, script, script_args, fallback, _ in (
                        cases[shift:] + cases[:shift]
                    ):
                        url = running[name].url
                        if wrk:
                            script_path = workdir / script
                            extra = [str(workdir / a) for a in script_args]
                            result = run_wrk(wrk, url, length, script_path, extra)
                        else:
                            cookie_header = cookie if script == "cookies.lua" else None
                            result = run_httpx2(url, length, fallback, cookie_header)
                        if round_index:
                            results[label].append(result)
        baselines = {label: base for label, *_, base in cases}
        report(results, baselines, args, time.monotonic() - started)
    return 0


def report(
    results: dict[str, list[Result]],
    baselines: dict[str, str],
    args: argparse.Namespace,
    elapsed: float,
) -> None:
    print(
        f"{args.rounds} round(s) x {args.duration:g} s per case, interleaved; "
        f"{args.tokens} distinct RS256 tokens rotated for the uncached case "
        f"(cache.size=0); wall time {elapsed:.0f} s. x hello: median of per-round ratios "
        "to the hello sent the same request bytes."
    )
    rps = {label: [r.rps for r in rs] for label, rs in results.items()}
    roundtrip = median(rps["session roundtrip"])
    rows = []
    for label, rs in results.items():
        base = baselines[label]
        ratio = paired_ratio(rps[label], rps[base])
        target = TARGETS.get(label)
        if target:
            row = "http_bearer" if "Bearer" in label else "http_cookies"
            record(row, ratio, spread=spread(rps[label]), rounds=len(rps[label]))
        rows.append(
            [
                label,
                f"{median(rps[label]):,.0f} ±{spread(rps[label]):4.1f}%",
                ratio,
                f"≥ {target:.2f}" if target else "-",
                ("ok" if ratio >= target else "MISSED") if target else "-",
                median(rps[label]) / roundtrip,
                median(r.p50_ms for r in rs),
                median(r.p99_ms for r in rs),
                sum(r.errors for r in rs),
            ]
        )
    print(
        table(
            [
                "case",
                "req/s",
                "x hello",
                "target",
                "",
                "x roundtrip",
                "p50 ms",
                "p99 ms",
                "errors",
            ],
            rows,
        )
    )
    print(
        "DESIGN's reference points: cached 0.88-0.96x hello; verifying every request "
        "0.22-0.25x; a session service per request 0.03x."
    )
    if any(r.errors for rs in results.values() for r in rs):
        print("WARNING: some requests failed (non-2xx or socket errors): see the errors column.")


if __name__ == "__main__":
    raise SystemExit(main())
