"""Counters the middleware and its layers keep, exported as metrics later.

Plain integers and ``Counter``s: incrementing them costs next to nothing on
the hot path, and they hold codes and reasons only, never token material.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["MiddlewareStats"]


@dataclass
class MiddlewareStats:
    """What the middleware did with each request (cache hits and misses live on
    the verifier: ``TokenVerifier.cache_stats``)."""

    authenticated: int = 0
    anonymous: int = 0
    #: Requests whose credentials were refused, by error code.
    rejected: Counter[str] = field(default_factory=Counter)
    csrf_rejected: int = 0
    #: Spoofed identity headers removed from requests.
    headers_stripped: int = 0
    #: Requests whose Cookie header named a token cookie more than once
    #: (cookie tossing): served without cookie credentials.
    duplicate_cookies: int = 0
    refreshed: int = 0
    websocket_authenticated: int = 0
    websocket_anonymous: int = 0
    #: Refused upgrades, by reason (an error code, ``origin`` or ``query_token``).
    websocket_refused: Counter[str] = field(default_factory=Counter)
    #: Failed refreshes, by error code.
    refresh_failed: Counter[str] = field(default_factory=Counter)
    #: Refreshes refused before any token-endpoint call, by reason: ``no_proof``,
    #: ``proof_invalid``, ``proof_unverifiable`` (may pass later), ``cooldown``.
    refresh_refused: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready copy."""
        return {
            "authenticated": self.authenticated,
            "anonymous": self.anonymous,
            "rejected": dict(self.rejected),
            "csrf_rejected": self.csrf_rejected,
            "headers_stripped": self.headers_stripped,
            "duplicate_cookies": self.duplicate_cookies,
            "refreshed": self.refreshed,
            "websocket_authenticated": self.websocket_authenticated,
            "websocket_anonymous": self.websocket_anonymous,
            "websocket_refused": dict(self.websocket_refused),
            "refresh_failed": dict(self.refresh_failed),
            "refresh_refused": dict(self.refresh_refused),
        }
