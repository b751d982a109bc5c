"""jwtedge: verify signed JWTs at the edge, from baked keys, with no I/O per request.

The names below are loaded on first use (PEP 562), so ``from verifier import
TokenVerifier`` imports the verify path alone: not the middleware, the
refresher or an HTTP client.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
    from .config import AppConfig
    from .errors import VerifierError
    from .keys import KeyStore
    from .middleware import JWTSessionMiddleware, get_session
    from .session import Organization, Project, Session, User
    from .tokens import TokenVerifier

__all__ = [
    "AppConfig",
    "JWTSessionMiddleware",
    "KeyStore",
    "Organization",
    "Project",
    "Session",
    "TokenVerifier",
    "User",
    "VerifierError",
    "get_session",
]

#: Where each public name lives.
_HOMES = {
    "AppConfig": "config",
    "JWTSessionMiddleware": "middleware",
    "KeyStore": "keys",
    "Organization": "session",
    "Project": "session",
    "Session": "session",
    "TokenVerifier": "tokens",
    "User": "session",
    "VerifierError": "errors",
    "get_session": "middleware",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
