"""What one app holds (:class:`EdgeState`, ``app.state.edge``) and what its parts share."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AppConfig
from ..login import LoginFlow
from ..metrics import EdgeMetrics
from ..refresh import Refresher
from ..remote import RemoteKeys
from ..stats import MiddlewareStats
from ..tokens import TokenVerifier

__all__ = ["METHODS", "NO_STORE", "EdgeState"]

NO_STORE = {"Cache-Control": "no-store"}
#: The methods the edge routes by name; any other is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class EdgeState:
    """What one app holds (``app.state.edge``): for routes, metrics and tests."""

    config: AppConfig
    verifier: TokenVerifier
    remote: RemoteKeys
    refresher: Refresher | None
    stats: MiddlewareStats
    login: LoginFlow
    metrics: EdgeMetrics
