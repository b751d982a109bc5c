"""The logout request's tokens, read before the middleware strips the token cookies.

:class:`LogoutTokens` wraps the app outside
:class:`~verifier.middleware.JWTSessionMiddleware` and hands the logout
endpoint (:meth:`~verifier.login.LoginFlow.logout`) the refresh token it
revokes, through a scope key the client cannot set.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..cookies import CookieJar, TokenSet, request_is_secure

__all__ = ["LOGOUT_PATH", "LOGOUT_TOKENS_KEY", "LogoutTokens"]

LOGOUT_PATH = "/auth/logout"
#: Where :class:`LogoutTokens` leaves the tokens for the logout endpoint.
LOGOUT_TOKENS_KEY = "jwtedge.logout_tokens"


class LogoutTokens:
    """Read the token cookies of logout requests before the middleware strips them.

    Install outside :class:`~verifier.middleware.JWTSessionMiddleware`. Only
    requests to ``path`` are touched; the tokens go to a scope key the client
    cannot set, never to a header.
    """

    def __init__(self, app: ASGIApp, *, path: str, jar: CookieJar, secure_mode: str) -> None:
        self.app = app
        self.path = path
        self.jar = jar
        self.secure_mode = secure_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        cookies: dict[str, str] = {}
        duplicated = False
        for name, value in scope["headers"]:
            if name == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, sep, item = part.partition("=")
                    key = key.strip()
                    if not sep or not self.jar.is_token_cookie(key):
                        continue
                    duplicated = duplicated or key in cookies
                    cookies.setdefault(key, item.strip())
        secure = request_is_secure(scope, self.secure_mode)
        # As in the middleware: a token cookie sent twice may be a planted one,
        # so none is trusted (its refresh token is not revoked on our word).
        tokens = TokenSet() if duplicated else self.jar.read(cookies, secure=secure)
        await self.app({**scope, LOGOUT_TOKENS_KEY: tokens}, receive, send)
