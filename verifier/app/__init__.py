"""The reference edge app: what a jwtedge deployment looks like end to end.

``create_app(config)`` wires :class:`~verifier.middleware.JWTSessionMiddleware`
in front of a small Starlette app that shows every part of the design:

- ``/`` (a page with the user, their organizations, projects, token expiry
  and a live WebSocket panel), ``/account`` (a page that needs sign-in and
  sends anonymous browsers to the login), ``/api/session``,
  ``/api/orgs/{slug}/projects`` (an authorization example) and ``/ws``;
- ``/auth/verify``, the forward-auth endpoint for nginx ``auth_request`` (and
  Traefik's forwardAuth): it answers 200 with ``X-Auth-*`` headers, 401 or
  403 from claims alone, and never refreshes;
- ``/auth/login``, the callback and ``/auth/logout`` (:mod:`verifier.login`),
  and ``POST /auth/refresh`` to pick up changed claims at once;
- ``/healthz`` (no I/O), ``/readyz`` (the key layer's state) and ``/metrics``
  (:mod:`verifier.metrics`, one registry per app).

The callback and logout paths are added to ``http.exclude_paths`` for the
middleware: both write the token cookies themselves, and a refresh there
would append cookies that undo theirs (the CSRF rule still applies, it runs
on every path). Pages carry ``Cache-Control: no-store`` and a nonce-based
Content-Security-Policy; every value is escaped with :func:`html.escape`, and
no response other than a ``Set-Cookie`` ever holds a token.
"""

from __future__ import annotations

from .factory import app_from_env, create_app
from .forward_auth import LIST_HEADER_CAP
from .state import EdgeState

__all__ = ["LIST_HEADER_CAP", "EdgeState", "app_from_env", "create_app"]
