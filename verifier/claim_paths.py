"""Claim names and RFC 6901 JSON Pointers: where in the claims a value is read.

``claims.roles`` and ``claims.permissions`` (and the issuer profiles) name a
claim either by its name, namespaced URLs included, or by a JSON Pointer
into nested claims (``/realm_access/roles``). Pure functions, no imports
from the rest of the package, so the config can check a path without
loading the profiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["claim_at", "parse_claim_path"]


def parse_claim_path(text: str) -> tuple[str, ...]:
    """A claim name, or an RFC 6901 JSON Pointer (``/realm_access/roles``), as path segments.

    Anything not starting with ``/`` is one claim name, so namespaced URL
    claims (``https://example.com/roles``) are names. Raises ``ValueError``
    for an empty name or a malformed pointer (``~`` not followed by 0 or 1).
    """
    if not text:
        raise ValueError("a claim name must not be empty")
    if not text.startswith("/"):
        return (text,)
    segments = []
    for raw in text[1:].split("/"):
        if "~" in raw.replace("~0", "").replace("~1", ""):
            raise ValueError(f"{text!r} is not an RFC 6901 JSON Pointer ('~' must be ~0 or ~1)")
        segments.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(segments)


def claim_at(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` (from :func:`parse_claim_path`), or ``None`` when absent.

    Only objects are walked (RFC 6901 array indexes are not needed for claims).
    """
    value: Any = claims
    for segment in path:
        if type(value) is not dict and not isinstance(value, Mapping):
            return None
        value = value.get(segment)
        if value is None:
            return None
    return value
