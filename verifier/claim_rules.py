"""Claim checks that need no verifier state: NumericDates, ``at+jwt`` and audiences.

Pure functions over verified claims, shared by :class:`~verifier.tokens.TokenVerifier`
for access and ID tokens. Every refusal is a :class:`~verifier.errors.VerifierError`
naming the claim, never its value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import AudienceMismatch, ClaimsInvalid

__all__ = ["audiences", "is_at_jwt", "numeric_date"]


def numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """The claim ``name`` as seconds; ``None`` when absent and not ``required``."""
    value = claims.get(name)
    if value is None:
        if required or name in claims:
            raise ClaimsInvalid(f'the "{name}" claim is required', claim=name)
        return None
    # bool is an int subclass; NaN and infinities are not dates.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClaimsInvalid(f'the "{name}" claim is not a NumericDate', claim=name)
    return float(value)


def is_at_jwt(typ: object) -> bool:
    """Whether a ``typ`` header says RFC 9068 access token (``at+jwt``, any case)."""
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ.removeprefix("application/") == "at+jwt"


def audiences(claims: Mapping[str, Any], name: str = "aud") -> list[str]:
    """The audience claim ``name`` as a list of strings (a lone string becomes one)."""
    aud = claims.get(name)
    if aud is None:
        raise AudienceMismatch(f'the token has no "{name}" claim')
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return aud
    raise ClaimsInvalid(f'the "{name}" claim is neither a string nor a list of strings', claim=name)
