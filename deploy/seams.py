"""The I/O every command uses, passed in through the Typer context.

Commands read their :class:`Seams` from ``ctx.obj`` (a ``Seams`` or a dict of
its fields), so tests pass ``httpx2.MockTransport``, a fake clock and a sleep
that does not wait, without monkeypatching.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx2
import typer

from verifier.fetch import Fetcher

from .bake import utc_now

__all__ = ["Seams", "make_fetcher", "seams_of"]


@dataclass(frozen=True, slots=True)
class Seams:
    """The I/O every command uses; tests replace it through ``ctx.obj``."""

    transport: httpx2.AsyncBaseTransport | None = None
    #: Monotonic clock, sleep and jitter for the fetcher's timeouts and retries.
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = random.random
    #: Wall clock: ``baked_at``, the bake's age, token expiry.
    now: Callable[[], datetime] = utc_now
    #: ``serve`` calls this instead of ``uvicorn.run(app, **options)`` when set.
    run_server: Callable[..., None] | None = None


def seams_of(ctx: typer.Context) -> Seams:
    """The seams the root context carries (the real ones when it carries none)."""
    obj = ctx.find_root().obj
    if obj is None:
        return Seams()
    if isinstance(obj, Seams):
        return obj
    if isinstance(obj, Mapping):
        return Seams(**obj)
    raise TypeError("ctx.obj must be a Seams or a mapping of its fields")


def make_fetcher(seams: Seams, *, timeout: float, deadline: float) -> Fetcher:
    """The fetcher for one command, over the injected transport and clocks."""
    return Fetcher(
        transport=seams.transport,
        timeout=timeout,
        deadline=deadline,
        clock=seams.clock,
        sleep=seams.sleep,
        jitter=seams.jitter,
    )
