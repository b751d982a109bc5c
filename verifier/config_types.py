"""The values settings are made of: durations, lists, ids, the key set, URLs, algorithms.

Each parser turns what the environment (or an init argument) gives into the
typed value and raises ``ValueError`` with a message that never repeats the
input; :mod:`verifier.config` turns those into
:class:`~verifier.errors.ConfigInvalid` naming the setting.
:class:`Section` is the base of every config section.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer
from pydantic_settings import NoDecode

from .errors import JWKSInvalid
from .jwks import JWKSet, parse_jwks

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "MIN_HS_SECRET_BYTES",
    "STYTCH_ISSUER",
    "Id",
    "IdList",
    "Jwks",
    "Seconds",
    "Section",
    "StrList",
    "check_url",
    "digits_as_text",
    "parse_duration",
    "split_list",
]

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "Ed25519",
    "EdDSA",
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_HS_SECRET_BYTES = 32

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30"``, ``"30s"``, ``"5m"``, ``"12h"``, ``"7d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 12h, 7d")
    if seconds < 0 or seconds != seconds:
        raise ValueError("a duration must not be negative")
    return seconds


def split_list(value: object) -> object:
    """Accept a JSON list or a comma-separated string from the environment."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def digits_as_text(value: object) -> object:
    """Audiences, client ids and tenant ids are strings however they look.

    An all-digit id (a Zitadel project id such as ``284719360215432711``)
    arrives as a JSON number from a JSON section or list; an integer is
    turned back into its text. Floats and booleans are refused by the type.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return [digits_as_text(item) for item in value]
    return value


def _id_list(value: object) -> object:
    return digits_as_text(split_list(value))


def _load_jwks(value: object) -> object:
    if value is None or value == "" or isinstance(value, JWKSet):
        return value or None
    try:
        return parse_jwks(value)
    except JWKSInvalid as exc:
        # The message names the problem, never key material.
        raise ValueError(exc.message) from None


Seconds = Annotated[float, BeforeValidator(parse_duration)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]
IdList = Annotated[list[str], NoDecode, BeforeValidator(_id_list)]
Id = Annotated[str, BeforeValidator(digits_as_text)]
Jwks = Annotated[
    JWKSet | None,
    BeforeValidator(_load_jwks),
    PlainSerializer(lambda jwks: jwks.to_dict() if jwks is not None else None),
]


#: The one issuer that is not a URL: Stytch's default ``stytch.com/<project id>``.
STYTCH_ISSUER = re.compile(
    r"^stytch\.com/project-(?:test|live)-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$"
)


class Section(BaseModel):
    """A config section: frozen, and a misspelt setting is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def check_url(value: str | None) -> str | None:
    """An absolute http(s) URL with a host and a valid port, or ``None``."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value
