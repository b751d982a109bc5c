"""Refresh through the issuer's token endpoint: single flight, bounded grace.

Rotating refresh tokens are single-use: an issuer that sees one spent twice
revokes the whole family and logs the user out. Browsers race (tabs, parallel
fetches), so the refresher

- runs one flight per refresh token (keyed by its SHA-256, never the token)
  and lets concurrent callers await it;
- keeps the result for ``refresh.grace`` seconds and hands it only to
  requests that carry the same old refresh token **and** a token whose
  signature verifies (expiry ignored) for the same ``sub`` (and ``sid`` when
  the issuer sets one), so a stolen old refresh token alone gets nothing;
- never replays a spent refresh token to the issuer;
- remembers refresh tokens the issuer refused (``invalid_grant``) apart from
  spent ones, both bounded, so no number of failures can make it forget a
  spent token;
- after a failed flight, refuses further refreshes carrying the same proof
  token (keyed by its SHA-256, ``proof_key``) for ``cooldown`` seconds, and
  lets one proof token drive one issuer call at a time, so a stolen or
  replayed proof cannot spend the client's quota at the issuer;
- verifies the new tokens locally, requiring the old ``iss``, ``sub`` and
  ``sid``, before anyone sees them.

Whether a request may ask at all (it must carry a signature-valid access or
ID token of this issuer) is the middleware's decision
(:meth:`~verifier.middleware.JWTSessionMiddleware.proof_for`).

:class:`Refresher` is the interface; :class:`InProcessRefresher`
(:mod:`verifier.inprocess_refresher`) coordinates one process, and
:class:`~verifier.redis_refresher.RedisRefresher` every process that shares one
Redis; :func:`refresher_from_config` picks the one the config asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigInvalid
from .inprocess_refresher import (
    COOLDOWN_MEMORY,
    FAILED_MEMORY,
    SPENT_MEMORY,
    ClientAuth,
    InProcessRefresher,
    RefreshResult,
    RefreshStats,
    token_key,
)

if TYPE_CHECKING:
    import httpx2

    from .config import AppConfig
    from .tokens import TokenVerifier

__all__ = [
    "COOLDOWN_MEMORY",
    "FAILED_MEMORY",
    "SPENT_MEMORY",
    "ClientAuth",
    "InProcessRefresher",
    "RefreshResult",
    "RefreshStats",
    "Refresher",
    "refresher_from_config",
    "token_key",
]


class Refresher(Protocol):
    """Coordinates refreshes of one refresh token (in process, or shared)."""

    stats: RefreshStats

    async def refresh(
        self,
        refresh_token: str,
        *,
        proof: Mapping[str, Any] | None,
        proof_key: str | None = None,
    ) -> RefreshResult:
        """New tokens for ``refresh_token``, or :class:`RefreshFailed`.

        ``proof`` is the claims of the caller's current access or ID token,
        signature verified, expiry ignored (``None`` when it has none).
        ``proof_key`` is that token's :func:`token_key`: with it, a failed
        flight puts the proof in a cooldown (``reason="cooldown"`` refusals,
        no issuer call) and one proof drives one issuer call at a time.
        """
        ...


def refresher_from_config(
    config: AppConfig,
    verifier: TokenVerifier,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Refresher | None:
    """The refresher ``config`` asks for: shared on Redis when
    ``refresh.redis_url`` is set (imported only then: ``redis`` is optional),
    else in process; ``None`` when refresh is off or impossible."""
    if config.refresh.redis_url is not None:
        try:
            from .redis_refresher import RedisRefresher
        except ImportError:
            raise ConfigInvalid(
                "APP_CONFIG_REFRESH__REDIS_URL is set but the redis package is not installed "
                "(pip install 'jwtedge[redis]')",
                setting="APP_CONFIG_REFRESH__REDIS_URL",
            ) from None
        return RedisRefresher.from_config(config, verifier, transport=transport)
    return InProcessRefresher.from_config(config, verifier, transport=transport)
