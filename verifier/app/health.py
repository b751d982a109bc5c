"""Readiness (``/readyz``): whether the app can verify tokens now, and why not.

Unready when no key can verify (nothing baked, nothing fetched yet) or the
fetched keys are older than ``keys.stale_if_error``; the body also shows the
bake's age, the remote layer's last fetch and setup warnings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .state import EdgeState

__all__ = ["readiness"]


def readiness(edge: EdgeState) -> tuple[bool, dict[str, Any]]:
    remote, config = edge.remote, edge.config
    jwks = edge.verifier.keys.jwks
    kids = [kid for kid in (jwks.kids if jwks is not None else ()) if kid is not None]
    count = len(jwks) if jwks is not None else 0
    usable = count > 0 or config.auth.hs_secret is not None
    stale = remote.stale
    reasons = []
    if not usable:
        reasons.append("no verification key: nothing baked and nothing fetched yet")
    if stale:
        reasons.append("the fetched keys are older than keys.stale_if_error")
    meta = config.auth.jwks_meta
    baked_at = meta.baked_at if meta is not None else None
    last_fetch_at = remote.last_fetch_at
    body = {
        "status": "ready" if not reasons else "unready",
        "reasons": reasons,
        "keys": {"source": remote.keys_source, "count": count, "kids": kids, "stale": stale},
        "bake": {
            "baked_at": baked_at.isoformat() if baked_at is not None else None,
            "age_seconds": remote.bake_age,
        },
        # Setup problems seen at run time; they do not make the app unready.
        "warnings": edge.login.warnings(),
        "remote": {
            "mode": remote.mode,
            "last_fetch_error": remote.last_fetch_error,
            "last_fetch_at": (
                datetime.fromtimestamp(last_fetch_at, UTC).isoformat()
                if last_fetch_at is not None
                else None
            ),
        },
    }
    return not reasons, body
