"""A soak run's shape: :class:`Profile`, the CI and long profiles, and the fixed bounds.

:data:`SHORT` runs under pytest with ``make test``; :data:`LONG` (``JWTEDGE_SOAK=long``)
is the minute at 200 connections docs/load.md reports. Times are in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Down states of the flapping phase, in order (see the module doc).
DOWN_MODES = ("slow", "timeout", "500")
#: File descriptors a run may leave open after its servers stopped.
FD_TOLERANCE = 8
#: Growth of VmRSS over the load the checks accept.
RSS_BOUND_MB = 150.0


@dataclass(frozen=True)
class Profile:
    """One soak run's shape (times in seconds)."""

    duration: float = 60.0
    concurrency: int = 200
    users: int = 50
    #: Of ``users``: families only visited once their access token has expired.
    idle_users: int = 10
    access_ttl: int = 5
    skew: float = 2.0
    leeway: float = 0.0
    refresh_timeout: float = 2.0
    grace: float = 10.0
    steady_fraction: float = 0.5
    flap_up: float = 3.0
    flap_down: float = 1.0
    #: How long ``timeout`` and ``slow`` hold a /token answer (past ``refresh_timeout``).
    fail_delay: float = 3.0
    #: How much longer than planned the steady phase may wait for every busy
    #: family's first refresh (a deadline: it normally ends on time).
    steady_wait: float = 60.0
    #: The issuer's reuse interval (Auth0's, Okta's grace): 0 revokes on any replay.
    reuse_grace: float = 0.0
    seed: int = 1
    #: Client operations at most (a count bound beside the time bound); 0: 2000 per second.
    max_operations: int = 0
    #: How long the end of the run waits for connections and tasks to wind down
    #: (a deadline: the wait ends as soon as they have).
    settle: float = 30.0
    #: Client-side deadline of one request, upgrade or awaited WebSocket message.
    client_timeout: float = 30.0

    @property
    def operation_cap(self) -> int:
        return self.max_operations or int(self.duration * 2000) + 1000


#: The CI profile: 12 s of load (6 s steady, 6 s flapping; longer on a slow machine,
#: see :func:`.run.flap`). ``refresh.timeout`` is 5 s so that while the issuer is up
#: no refresh call times out however loaded the machine; ``slow`` and ``timeout``
#: hold their answers 6 s, past it.
SHORT = Profile(
    duration=12.0,
    concurrency=100,
    flap_up=1.0,
    flap_down=0.6,
    refresh_timeout=5.0,
    fail_delay=6.0,
)
#: ``JWTEDGE_SOAK=long``: a minute at 200 connections.
LONG = Profile(duration=60.0, concurrency=200)


def profile_from_env() -> Profile:
    """:data:`LONG` when ``JWTEDGE_SOAK=long``, else :data:`SHORT`."""
    return LONG if os.environ.get("JWTEDGE_SOAK", "").lower() == "long" else SHORT
