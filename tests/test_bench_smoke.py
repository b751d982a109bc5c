"""The benches run: each one with a tiny workload, in a subprocess. No timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http import ensure_wrk
from tests.ci import skip_or_fail

REPO = Path(__file__).resolve().parents[1]


def run_bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APP_CONFIG_ENV_FILE": str(REPO / "bench" / "no-such.env")}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_ran(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout


def test_verify_bench_runs_and_prints_ratios() -> None:
    result = run_bench("bench.verify", "--quick")
    assert_ran(result, "raw cryptography", "ours/raw", "cached session() / raw RS256 verify")


def test_verify_bench_profile_runs() -> None:
    result = run_bench("bench.verify", "--profile", "--n", "10")
    assert_ran(result, "stage breakdown", "TOTAL verify_access", "cProfile")


def test_middleware_bench_runs_and_prints_overheads() -> None:
    result = run_bench("bench.middleware", "--quick")
    assert_ran(result, "hello (no middleware)", "cached Bearer", "cached cookies", "own/hello")


def test_middleware_bench_profile_splits_both_cached_paths() -> None:
    result = run_bench("bench.middleware", "--profile", "--quick")
    assert_ran(
        result,
        "scan headers",
        "cache hit: verifier.session()",
        "SHA-256 of the token(s)",
        "TOTAL measured",
        "cProfile, cached cookies",
    )


def test_refresh_storm_makes_one_token_request() -> None:
    result = run_bench("bench.refresh_storm", "--n", "50")
    assert_ran(result, "token-endpoint calls", "joined=", "verifies of the expired access token")


def test_memory_bench_runs_and_guards_the_network() -> None:
    result = run_bench("bench.memory", "--quick")
    assert_ran(result, "MB per 10,000 entries", "KB / session", "network calls attempted: 0")


def test_hostile_bench_runs_and_prints_every_figure_of_issue_17() -> None:
    result = run_bench("bench.hostile", "--quick", timeout=120)
    assert_ran(
        result,
        "64 KB, 5,000 members, Bearer",
        "700 members < 8 KiB, Bearer",
        "x valid uncached",
        "1 MiB hostile token",
        "growth MiB",
    )


@pytest.mark.e2e
def test_http_bench_runs_with_wrk() -> None:
    # `make test` installs wrk (Makefile SYSTEM_DEPS); the bench tries apt-get as root too.
    if ensure_wrk() is None:
        skip_or_fail("wrk is not installed (apt-get install -y wrk); the http bench needs it")
    result = run_bench(
        "bench.http", "--duration", "1", "--warmup", "0", "--tokens", "20", timeout=90
    )
    assert_ran(result, "load: wrk", "middleware cached cookies", "session roundtrip", "x hello")


@pytest.mark.e2e
def test_http_bench_says_when_it_falls_back_to_httpx2() -> None:
    result = run_bench(
        "bench.http",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--tokens",
        "20",
        "--loadgen",
        "httpx2",
        timeout=90,
    )
    assert_ran(result, "httpx2 (FALLBACK)", "session roundtrip")
