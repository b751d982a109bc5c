"""jwtedge: verify signed JWTs at the edge, from baked keys, with no I/O per request."""

from .config import AppConfig
from .errors import VerifierError
from .keys import KeyStore
from .session import Organization, Project, Session, User
from .tokens import TokenVerifier

__all__ = [
    "AppConfig",
    "KeyStore",
    "Organization",
    "Project",
    "Session",
    "TokenVerifier",
    "User",
    "VerifierError",
]
