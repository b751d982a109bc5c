"""Sign-in for the reference app: authorization code + PKCE, callback, logout.

Why it looks the way it does:

- **No server-side state.** jwtedge is stateless, so what the callback must
  check (``state``, ``nonce``, the PKCE verifier, the return path and the
  redirect URI) travels in a short-lived cookie, sealed with AES-GCM under a
  key derived (HKDF-SHA256) from ``login.state_key``. Every worker derives the
  same key, so any worker can finish a login another one started. The cookie
  is HttpOnly, SameSite=Lax (the callback is a top-level cross-site GET) and
  lives 10 minutes.
- **One cookie per pending login.** Its name carries a hash of the ``state``,
  so two tabs signing in at once do not overwrite each other's cookie. The
  AEAD's associated data is that name, so a sealed value cannot be replayed
  under another login's name.
- **The return path is local or refused.** ``next`` must be a path on this
  site (:func:`safe_return_path`); anything that a browser could read as
  another origin (``//host``, ``/\\host``, percent-encoded forms of either,
  control characters) gets a 400, never a silent fallback, so a bad link is
  noticed instead of quietly landing the user on ``/``.
- **Tokens are verified before they become cookies**, the ID token's
  ``nonce`` included, and nothing a page, a redirect or a log line says ever
  holds a token: failures name a stable code (:class:`LoginError`).
- **Logout** clears the cookies, revokes the refresh token where the issuer
  has a revocation endpoint (best effort, bounded by a timeout) and, where it
  has an end-session endpoint, sends the browser there with the configured
  ``login.post_logout_redirect`` only. The refresh token is read by the
  :class:`LogoutTokens` wrapper before the middleware strips token cookies.
"""

from __future__ import annotations

from .flow import (
    CALLBACK_PATH,
    OFFLINE_ACCESS_WARNING,
    LoginFlow,
    LoginStats,
    callback_path,
    error_page,
    login_enabled,
)
from .logout import LOGOUT_PATH, LOGOUT_TOKENS_KEY, LogoutTokens
from .state import (
    MIN_STATE_KEY_BYTES,
    STATE_COOKIE_PREFIX,
    STATE_TTL,
    LoginError,
    StateCipher,
    safe_return_path,
)

__all__ = [
    "CALLBACK_PATH",
    "LOGOUT_PATH",
    "LOGOUT_TOKENS_KEY",
    "MIN_STATE_KEY_BYTES",
    "OFFLINE_ACCESS_WARNING",
    "STATE_COOKIE_PREFIX",
    "STATE_TTL",
    "LoginError",
    "LoginFlow",
    "LoginStats",
    "LogoutTokens",
    "StateCipher",
    "callback_path",
    "error_page",
    "login_enabled",
    "safe_return_path",
]
