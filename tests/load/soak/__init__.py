"""Load and soak driver: the reference app under real uvicorn, a real DevIssuer that flaps.

Everything runs in this process on 127.0.0.1: the DevIssuer (``DevIssuer.serve``)
and the app (``create_app`` through :func:`tests.e2e.servers.serve_app`) each
on their own uvicorn thread, and ``concurrency`` client workers on the main
thread's event loop sharing one ``httpx2.AsyncClient`` pool. Workers mix

- page and API loads for ``users`` token families (one ``login()`` each, its own
  refresh-token family and cookie jar, updated from ``Set-Cookie`` as a browser
  does), the issuer's ``access_ttl`` short and the app's ``refresh.skew`` close
  to it, so refreshes happen all the time; some families are left alone until
  their access token has expired (the expired-then-refresh path);
- refused credentials: garbage cookies and Bearer headers, flipped signatures,
  unknown kids, expired tokens without a refresh cookie, forged refresh cookies;
- anonymous requests, health probes;
- WebSocket upgrades (the ``websockets`` client) with fresh cookies (some held
  open until the app closes them with 4401 at expiry) and with bad ones
  (garbage, cross-site Origin, no cookie, a token in the query string).

The run has two phases. **Steady** (the first ``steady_fraction``): the issuer
is up; every refresh must be exactly one issuer call per rotation, and the
issuer must see no reuse and revoke no family. **Flapping**: the issuer cycles
up (``flap_up`` s) and down (``flap_down`` s), down being in turn ``slow`` (the
issuer rotates, then answers after the app's ``refresh.timeout``: the answer is
lost and the app's retry replays a spent token), ``timeout`` and ``500``
(``fail_mode``; it never rotates). Reuse and revoked families there are what
DESIGN's Refresh section predicts: they are reported, not asserted.

Refresh accounting is on the wire: the app's ``issuer_transport`` is a
counting wrapper over a real ``httpx2.AsyncHTTPTransport`` that maps every
refresh token to its family (login tokens, then each 200 answer's new token).

Resources: file descriptors (``/proc/self/fd``) before the servers start and
after they stop, and idle before/after the load; VmRSS before/after the load;
asyncio tasks on the app server's loop before/after; log records of level
WARNING and above from the server threads.

Run ``python -m tests.load.soak --duration 60 --concurrency 200``; exit status
1 when an invariant fails. :func:`run_soak` returns the summary dict.

The modules, one job each: :mod:`.profile` (a run's shape), :mod:`.wire`
(families, cookie jars and the counting transport), :mod:`.resources` (the
server's loop, logs, fds and memory), :mod:`.client` (the workers' requests and
upgrades), :mod:`.run` (the phases, the flapping issuer, :func:`run_soak`),
:mod:`.accounting` (the summary), :mod:`.report` (the invariants and the
table), ``__main__`` (the command line).
"""

from __future__ import annotations

from .profile import FD_TOLERANCE, LONG, RSS_BOUND_MB, SHORT, Profile, profile_from_env
from .report import failures, format_table
from .run import run_soak

__all__ = [
    "FD_TOLERANCE",
    "LONG",
    "RSS_BOUND_MB",
    "SHORT",
    "Profile",
    "failures",
    "format_table",
    "profile_from_env",
    "run_soak",
]
