"""jwtedge: verify signed JWTs at the edge, from baked keys, with no I/O per request."""

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
