"""The server side of a run: its event loop, its log records, this process's fds and memory.

:class:`ServerProbe` wraps the app to find the server's event loop and count
the tasks alive on it; :class:`LogCapture` collects WARNING and above from
every thread (uvicorn's error log included); :func:`open_fds` and
:func:`memory_mb` read ``/proc/self``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["KNOWN_UPSTREAM", "LogCapture", "ServerProbe", "memory_mb", "open_fds"]

#: Server log lines that are not jwtedge's doing, and the upstream report for each.
#: uvicorn's websockets-sansio protocol (``ws="auto"`` when ``websockets`` is
#: installed) never marks the handshake complete after a ``websocket.http.response``
#: denial, so every refused upgrade logs this at ERROR although the client got
#: its 401/403 (wsproto does not): https://github.com/Kludex/uvicorn/pull/3138
KNOWN_UPSTREAM = {
    "ASGI callable returned without completing handshake.": "Kludex/uvicorn#3138",
}


class ServerProbe:
    """Pass-through ASGI wrapper that remembers the server's event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def task_count(self) -> int:
        """Tasks alive on the server's loop (the probe's own excluded)."""
        assert self.loop is not None, "the server has not started"

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        # A deadline for a loop that stopped answering, not a figure.
        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=30)


class LogCapture(logging.Handler):
    """WARNING and above, from every logger and thread (uvicorn's error log included).

    Attach it to the root logger and to ``uvicorn`` (whose default logging
    config does not propagate) once the servers have configured logging.
    Messages in :data:`KNOWN_UPSTREAM` are counted apart, by message.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.known: Counter[str] = Counter()
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_soak_seen", False):  # reached through two loggers
            return
        record._soak_seen = True
        side = "client" if record.threadName == threading.main_thread().name else "server"
        message = record.getMessage()
        if side == "server" and message in KNOWN_UPSTREAM:
            self.known[message] += 1
            return
        self.counts[(side, record.levelname)] += 1
        if len(self.samples) < 20:
            self.samples.append(
                f"[{record.threadName}] {record.name} {record.levelname}: {message}"
            )

    @contextmanager
    def attached(self, *names: str) -> Iterator[None]:
        loggers = [logging.getLogger(name) for name in names]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeHandler(self)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def memory_mb() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process, in MiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values
