"""One soak run: the servers, the steady and flapping phases, the workers, :func:`run_soak`.

:func:`run_soak` starts a DevIssuer and the app on uvicorn threads, then
:func:`drive` runs the load on this thread's event loop: ``concurrency``
:func:`worker` tasks drawing actions from :data:`~.client.WEIGHTS`, while
:func:`flap` (a thread, so the switch between phases is on time however busy
the loop is) ends the steady phase and then takes the issuer down and up.
:func:`idle_snapshot` measures the server once it has wound down, before and
after the load.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import httpx2

from tests.e2e.servers import app_config, serve_app
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.testing import DevIssuer

from .accounting import summarize
from .client import WEIGHTS, Load
from .profile import DOWN_MODES, FD_TOLERANCE, Profile, profile_from_env
from .report import failures
from .resources import LogCapture, ServerProbe, memory_mb, open_fds
from .wire import CountingTransport, Ledger

__all__ = ["drive", "run_soak"]


def run_soak(profile: Profile | None = None) -> dict[str, Any]:
    """Run one soak; the summary dict (``summary["failures"]`` lists broken invariants)."""
    profile = profile or profile_from_env()
    capture = LogCapture()
    fds_before_start = open_fds()
    threads_before = threading.active_count()
    with DevIssuer.serve(port=0) as issuer:
        issuer.access_ttl = profile.access_ttl
        issuer.reuse_grace = profile.reuse_grace
        config = _config(issuer, profile)
        ledger = Ledger()
        app = create_app(config, issuer_transport=CountingTransport(ledger))
        probe = ServerProbe(app)
        # After DevIssuer.serve: uvicorn's dictConfig replaces the "uvicorn" handlers.
        with capture.attached("", "uvicorn"), serve_app(probe) as base_url:
            load = Load(profile, issuer, ledger, base_url)
            timing = asyncio.run(drive(load, probe))
            edge = app.state.edge
            middleware = edge.stats.snapshot()
            refresher = asdict(edge.refresher.stats) if edge.refresher is not None else {}
        issuer_end = asdict(issuer.stats)
    fds_after_stop = open_fds()
    settled = time.monotonic() + profile.settle
    # Sockets of just-stopped threads close asynchronously: wait for them (bounded).
    while fds_after_stop > fds_before_start + FD_TOLERANCE and time.monotonic() < settled:
        time.sleep(0.1)
        fds_after_stop = open_fds()
    threads_after = threading.active_count()

    servers = {
        "issuer": issuer_end,
        "refresher": refresher,
        "middleware": middleware,
        "fds_before_start": fds_before_start,
        "fds_after_stop": fds_after_stop,
        "threads_before": threads_before,
        "threads_after": threads_after,
    }
    summary = summarize(profile, load, timing, servers, capture)
    summary["failures"] = failures(summary)
    return summary


def _config(issuer: DevIssuer, profile: Profile) -> AppConfig:
    """The e2e config (keys baked, endpoints from discovery) with the soak's timings."""
    base = app_config(issuer)
    return base.model_copy(
        update={
            "auth": base.auth.model_copy(update={"leeway": profile.leeway}),
            "refresh": base.refresh.model_copy(
                update={
                    "skew": profile.skew,
                    "timeout": profile.refresh_timeout,
                    "grace": profile.grace,
                }
            ),
        }
    )


async def worker(load: Load, seed: int) -> None:
    """One client connection's loop: weighted random actions until the run ends."""
    rng = random.Random(seed)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    actions: dict[str, Callable[[random.Random], Any]] = {
        "page": load.act_page,
        "api": load.act_api,
        "expired": load.act_expired,
        "garbage": load.act_garbage,
        "bad_signature": lambda r: load.act_refused_token("bad_signature", r),
        "unknown_kid": lambda r: load.act_refused_token("unknown_kid", r),
        "expired_no_refresh": lambda r: load.act_refused_token("expired_no_refresh", r),
        "forged_refresh": load.act_forged_refresh,
        "anonymous": load.act_anonymous,
        "ws_valid": load.act_ws_valid,
        "ws_hold": lambda r: load.act_ws_valid(r, hold=True),
        "ws_bad": load.act_ws_bad,
    }
    cap = load.profile.operation_cap
    while not load.finished.is_set() and load.operations < cap:
        load.operations += 1
        await actions[rng.choices(names, weights)[0]](rng)


def set_issuer(load: Load, state: str) -> None:
    """``up``, or one of :data:`~.profile.DOWN_MODES`, on the served DevIssuer."""
    issuer = load.issuer
    issuer.token_delay = load.profile.fail_delay if state == "slow" else 0
    issuer.fail_delay = load.profile.fail_delay
    issuer.fail_mode = state if state in ("500", "timeout") else None


def flap(load: Load, stop: threading.Event) -> None:
    """The run's timeline: the steady phase, then the issuer up and down; then the end.

    What the checks need is counted, not timed, so a slow machine makes the
    run longer, never different. **Steady** lasts its share of ``duration``
    and, beyond that, until every busy family has been refreshed once (at
    most ``steady_wait`` longer). **Flapping** lasts the rest of ``duration``
    and at least one turn of each of :data:`~.profile.DOWN_MODES`: up for
    ``flap_up``, down for ``flap_down``, in turn. Then the issuer stays up
    until every call a down issuer held has ended (the app gave up on it, at
    ``refresh.timeout``) and ``flap_up`` more, so replays after a lost answer
    show. Then :attr:`Load.finished` stops the workers.

    A thread, not a task: the workers keep the client loop busy, and a late
    switch would blur the line between the phases.
    """
    profile = load.profile
    planned = load.start + profile.duration * profile.steady_fraction
    try:
        while time.monotonic() < planned or not load.busy_refreshed():
            if time.monotonic() >= planned + profile.steady_wait or stop.wait(0.05):
                break
        load.boundary = time.monotonic()
        load.boundary_stats = asdict(load.issuer.stats)
        flapping_until = load.boundary + profile.duration * (1 - profile.steady_fraction)
        for mode in itertools.cycle(DOWN_MODES):
            if stop.wait(profile.flap_up):
                return
            every_mode_flapped = set(load.flaps) == set(DOWN_MODES)
            room = flapping_until - time.monotonic()
            if every_mode_flapped and room < profile.flap_down + profile.flap_up:
                break
            set_issuer(load, mode)
            load.flaps[mode] += 1
            if stop.wait(profile.flap_down):
                return
            set_issuer(load, "up")
        held_until = time.monotonic() + profile.fail_delay + profile.client_timeout
        while load.ledger.in_flight() and time.monotonic() < held_until:
            if stop.wait(0.05):
                return
        stop.wait(profile.flap_up)
    finally:
        set_issuer(load, "up")
        load.finished.set()


async def drive(load: Load, probe: ServerProbe) -> dict[str, Any]:
    """Warm up, snapshot the idle server, run the workers and the flapper, snapshot again."""
    profile = load.profile
    load.prepare()
    limits = httpx2.Limits(
        max_connections=profile.concurrency, max_keepalive_connections=profile.concurrency
    )
    # A cookie jar that keeps nothing: each family's cookies travel in its own header.
    blocking = _blocking_jar()
    timeout = profile.client_timeout
    warm = httpx2.AsyncClient(timeout=timeout, trust_env=False, cookies=blocking)
    async with warm:
        load.client = warm
        await load.act_page(random.Random(0))
        await load.act_ws_valid(random.Random(0))
    baseline = await idle_snapshot(load, probe, None)
    load.status.clear()
    load.by_action.clear()
    load.ws.clear()
    load.latencies.clear()
    load.unexpected.clear()
    load.denied.clear()

    async with httpx2.AsyncClient(
        timeout=timeout, limits=limits, trust_env=False, cookies=blocking
    ) as client:
        load.client = client
        load.start = time.monotonic()
        stop = threading.Event()
        flapper = threading.Thread(target=flap, args=(load, stop), name="soak-flapper")
        flapper.start()
        try:
            # A hard bound on the whole load: the phases' own deadlines plus a margin.
            async with asyncio.timeout(profile.duration + profile.steady_wait + 120):
                await asyncio.gather(
                    *(worker(load, profile.seed * 100_003 + n) for n in range(profile.concurrency))
                )
        finally:
            stop.set()
            flapper.join(profile.client_timeout)
        wall = time.monotonic() - load.start
    after = await idle_snapshot(load, probe, baseline)
    return {"wall": wall, "idle_before": baseline, "idle_after": after}


async def idle_snapshot(
    load: Load, probe: ServerProbe, baseline: dict[str, Any] | None
) -> dict[str, Any]:
    """Server tasks, fds and memory once the server has wound down (bounded wait).

    Before the load: until the task count holds for three readings. After:
    until it is back to the baseline, or ``settle`` seconds have passed.
    """
    readings = [probe.task_count()]
    deadline = time.monotonic() + load.profile.settle
    while time.monotonic() < deadline:
        if baseline is None and readings[-3:] == [readings[-1]] * 3:
            break
        if baseline is not None and readings[-1] <= baseline["server_tasks"]:
            break
        await asyncio.sleep(0.1)
        readings.append(probe.task_count())
    return {
        "server_tasks": readings[-1],
        "fds": open_fds(),
        "threads": threading.active_count(),
        **memory_mb(),
    }


def _blocking_jar() -> Any:
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
