"""The default clocks, read at call time.

A default of ``now: Clock = time.time`` binds the function object when the
module is imported, so a user's ``freezegun.freeze_time`` (which swaps
``time.time`` in the ``time`` module) never reaches it and tokens are checked
against the real time. These wrappers look ``time.time`` / ``time.monotonic``
up on every call instead, so frozen or travelled time moves every jwtedge
clock that was not injected. Freezing ``time.monotonic`` also stalls asyncio
event loops: freeze with ``real_asyncio=True`` (or ``tick=True``) when a loop
must keep running.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "monotonic_clock", "wall_clock"]

#: Seconds as a float: epoch seconds for wall clocks, arbitrary for monotonic ones.
Clock = Callable[[], float]


def wall_clock() -> float:
    """``time.time()``, looked up when called (seconds since the epoch)."""
    return time.time()


def monotonic_clock() -> float:
    """``time.monotonic()``, looked up when called."""
    return time.monotonic()
