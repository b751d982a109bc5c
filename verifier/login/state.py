"""What a started login carries to its callback, and the checks on what comes back.

The state cookie (``state``, ``nonce``, the PKCE verifier, the return path,
the redirect URI and an expiry) is sealed with AES-256-GCM under a key
derived (HKDF-SHA256) from ``login.state_key``, with the cookie's name as
associated data; the return path is a path on this site or refused
(:func:`safe_return_path`). :class:`LoginError` is every refusal's type.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MIN_STATE_KEY_BYTES",
    "STATE_COOKIE_PREFIX",
    "STATE_TTL",
    "LoginError",
    "Pending",
    "StateCipher",
    "safe_return_path",
]

#: Seconds a started login may take before its state cookie is refused.
STATE_TTL = 600
STATE_COOKIE_PREFIX = "jwtedge_login_"
#: ``login.state_key`` must be at least this long: HKDF stretches, it adds no entropy.
MIN_STATE_KEY_BYTES = 32

_HKDF_INFO = b"jwtedge login state v1"
_AAD_PREFIX = b"jwtedge-login-v1|"
_MAX_NEXT = 2048


class LoginError(Exception):
    """A refused sign-in step: a stable ``code`` and a message without secrets."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


# -- the return path -------------------------------------------------------------


def _unsafe_path(value: str) -> bool:
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return True
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme or parts.netloc)


def safe_return_path(value: str | None) -> str:
    """``value`` when it is a path on this site; ``/`` when absent.

    A local path starts with exactly one ``/``, has no scheme or host, no
    backslash and no control character, both as given and after
    percent-decoding (repeated, so ``%252F`` counts too). Anything else raises
    :class:`LoginError` ``next_invalid`` (400).
    """
    if value is None or value == "":
        return "/"
    if len(value) > _MAX_NEXT:
        raise LoginError("next_invalid", "the return path is too long")
    decoded = value
    for _ in range(4):
        if _unsafe_path(decoded):
            raise LoginError("next_invalid", "the return path must be a path on this site")
        once = unquote(decoded)
        if once == decoded:
            return value
        decoded = once
    raise LoginError("next_invalid", "the return path is encoded too many times")


# -- the state cookie ----------------------------------------------------------------


class StateCipher:
    """AES-256-GCM under a key derived from ``login.state_key`` (HKDF-SHA256)."""

    def __init__(self, state_key: bytes) -> None:
        if len(state_key) < MIN_STATE_KEY_BYTES:
            raise ValueError(f"the state key must be at least {MIN_STATE_KEY_BYTES} bytes")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
        self._aead = AESGCM(hkdf.derive(state_key))

    def __repr__(self) -> str:
        return "StateCipher(key=<hidden>)"

    def seal(self, payload: dict[str, Any], *, aad: bytes) -> str:
        """The payload encrypted and authenticated, as base64url text."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, orjson.dumps(payload), _AAD_PREFIX + aad)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, value: str, *, aad: bytes) -> dict[str, Any]:
        """The payload, or :class:`LoginError` ``state_invalid`` for anything tampered."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], _AAD_PREFIX + aad)
            payload = orjson.loads(plain)
        except (binascii.Error, ValueError, InvalidTag, orjson.JSONDecodeError):
            raise LoginError("state_invalid", "the login state cookie is not valid") from None
        if not isinstance(payload, dict):
            raise LoginError("state_invalid", "the login state cookie is not valid")
        return payload


@dataclass(frozen=True, slots=True)
class Pending:
    """What a started login left for its callback (never shown or logged)."""

    state: str
    nonce: str
    verifier: str
    next: str
    redirect_uri: str
    expires: float

    def __repr__(self) -> str:
        return f"Pending(next={self.next!r})"

    def to_payload(self) -> dict[str, Any]:
        return {
            "s": self.state,
            "n": self.nonce,
            "v": self.verifier,
            "r": self.next,
            "u": self.redirect_uri,
            "e": self.expires,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Pending:
        try:
            values = (payload["s"], payload["n"], payload["v"], payload["r"], payload["u"])
            expires = float(payload["e"])
        except (KeyError, TypeError, ValueError):
            raise LoginError("state_invalid", "the login state cookie is not valid") from None
        if not all(isinstance(value, str) for value in values):
            raise LoginError("state_invalid", "the login state cookie is not valid")
        return cls(*values, expires=expires)
