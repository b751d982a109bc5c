"""DevIssuer: a local OIDC issuer for demos and tests. Never use it in production.

It holds one RS256 (RSA-2048), one ES256 (P-256) and one Ed25519 signing key
from the start, mints access and ID tokens with the claim shapes jwtedge
expects, signs arbitrary (even hostile) tokens, rotates keys while keeping the
old ones published, and serves discovery and the JWKS as a Starlette app,
optionally on a real uvicorn server on 127.0.0.1::

    issuer = DevIssuer(issuer="http://127.0.0.1:9000", audience="api", client_id="web")
    token = issuer.access_token(sub="u1", organizations=[...], ttl=300)

    with DevIssuer.serve(port=0) as issuer:
        issuer.url  # e.g. http://127.0.0.1:41234

It is also an OAuth 2.0 / OIDC provider with users, /authorize (code + PKCE),
/token (rotating refresh tokens with reuse detection), /revoke and /logout,
plus switches that make the token endpoint fail or stall; ``login()`` mints a
whole token response without HTTP. Those endpoints live in
:mod:`verifier.testing.oauth`; :class:`DevIssuer` (:mod:`verifier.testing.issuer`)
is the façade::

    issuer.add_user("u2", email="b@example.com", organizations=[...])
    tokens = issuer.login("u2")          # access, ID and refresh token, one sid
    issuer.fail_mode, issuer.fail_count = "500", 1   # the next /token answers 500
"""

from __future__ import annotations

from .issuer import DevIssuer, IssuerStats
from .oauth import CODE_TTL, DEFAULT_SCOPE, FAIL_MODES
from .signing_keys import KEY_ALGORITHMS

__all__ = ["CODE_TTL", "DEFAULT_SCOPE", "FAIL_MODES", "KEY_ALGORITHMS", "DevIssuer", "IssuerStats"]
