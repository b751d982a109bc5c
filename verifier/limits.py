"""What a token may make us parse: structural limits, each checked in linear time.

jwtedge stands at the front door, so whatever a request carries, verifying
it must cost bounded CPU and memory (issue 17; ``bench/hostile.py`` measures
it):

- :func:`check_size`: ``auth.max_token_bytes``, before anything decodes a
  token, on every path that receives one;
- :func:`parse_header`: at most :data:`MAX_HEADER_MEMBERS` members, counted
  before parsing by a scan that stops at the first name over the limit, then
  one orjson parse, at most :data:`MAX_NESTING_DEPTH` levels, and no
  duplicate member (RFC 7515 §4; RFC 8725), found in one more linear pass;
- :func:`load_claims`: orjson, then at most :data:`MAX_NESTING_DEPTH` levels
  (duplicate claims are read last-wins, as RFC 7515 §5.2 allows).

Every refusal is :class:`~verifier.errors.TokenMalformed` (or
:class:`~verifier.errors.TokenTooLarge`) and names sizes or limits, never
token bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .errors import TokenMalformed, TokenTooLarge

__all__ = ["MAX_HEADER_MEMBERS", "MAX_NESTING_DEPTH", "check_size", "load_claims", "parse_header"]

#: Members a token header may have, counted at every level. JOSE headers carry
#: a handful (``alg``, ``kid``, ``typ``, ``cty``, ``crit``...); more is an
#: attack on the parser, refused as ``token_malformed``.
MAX_HEADER_MEMBERS = 32
#: How deep a header or the claims may nest (the top-level object is level 1).
#: Real issuers nest 4 or 5 levels (Stytch, Keycloak, Zitadel, PropelAuth).
MAX_NESTING_DEPTH = 32


def check_size(token: str | bytes, max_bytes: int) -> None:
    """Raise :class:`~verifier.errors.TokenTooLarge` when ``token`` is over ``max_bytes``.

    The first thing every path that receives a token does, before decoding
    or parsing any of it (``auth.max_token_bytes``). A token is ASCII, so its
    length in characters is its length in bytes; a longer non-ASCII string is
    refused here too, and a shorter one right after, as malformed.
    """
    size = len(token)
    if size > max_bytes:
        raise TokenTooLarge(size=size, limit=max_bytes)


def _too_deep(value: Any) -> bool:
    """Whether parsed JSON nests deeper than :data:`MAX_NESTING_DEPTH`: one walk, level by level.

    Linear in the containers and their members. Of three linear checks
    measured (this one; a depth-first walk keeping each value's depth; a scan
    of the bytes with strings cut out) it was the cheapest, about one orjson
    parse of the same payload; realistic payloads skip it (:func:`_shallow`).
    """
    level = [value]
    depth = 1
    while level:
        if depth > MAX_NESTING_DEPTH:
            return True
        below = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
        level = below
        depth += 1
    return False


def _shallow(raw: bytes) -> bool:
    """True when ``raw`` cannot nest deeper than the limit: it has few brackets at all.

    Two C-speed counts (brackets inside strings count too, which only errs
    towards the exact walk) spare realistic tokens the walk.
    """
    return raw.count(b"{") + raw.count(b"[") <= MAX_NESTING_DEPTH


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise TokenMalformed("the header has duplicate members", member=name[:32])
        result[name] = value
    return result


#: One JSON string, and whether a ":" follows it (then it is a member name).
#: Possessive, and an unterminated string matches to the end: linear on any input.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"[ \t\n\r]*+(:)?)?', re.DOTALL)


def _more_members_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` names more than ``limit`` members, at any level.

    Read before parsing, and only as far as the member after the limit: every
    quote outside a string opens one, so the scan stays aligned on valid JSON
    (what is not valid JSON fails to parse next anyway).
    """
    names = 0
    for string in _STRING.finditer(raw):
        if string.group(1) is not None:
            names += 1
            if names > limit:
                return True
    return False


def parse_header(raw: bytes) -> dict[str, Any]:
    """A header object: linear in ``raw``, at most :data:`MAX_HEADER_MEMBERS` members."""
    # Every member name, at any level, is followed by exactly one ":" outside
    # strings, so the colons bound the members from above: realistic headers
    # skip the count, and a header with too many members is refused unparsed.
    colons = raw.count(b":")
    if colons > MAX_HEADER_MEMBERS and _more_members_than(raw, MAX_HEADER_MEMBERS):
        raise TokenMalformed(f"the header has more than {MAX_HEADER_MEMBERS} members")
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TokenMalformed("the header is not JSON") from exc
    if not isinstance(header, dict):
        raise TokenMalformed("the header is not a JSON object")
    if not _shallow(raw) and _too_deep(header):
        raise TokenMalformed(f"the header nests deeper than {MAX_NESTING_DEPTH} levels")
    # orjson keeps the last of duplicate members. When the colons number the
    # top-level members, no object nests and no name repeats. Anything else (a
    # colon in a value, a nested object, a repeated name, however escaped) pays
    # for one exact stdlib parse: linear, and over at most 32 members.
    if colons != len(header):
        try:
            exact: dict[str, Any] = json.loads(raw, object_pairs_hook=_refuse_duplicates)
        except (ValueError, RecursionError) as exc:
            # ValueError: stdlib json reads a few things orjson refused differently.
            raise TokenMalformed("the header is not valid JSON") from exc
        return exact
    return header


def load_claims(payload: bytes) -> dict[str, Any]:
    """A claims object: orjson (linear), then at most :data:`MAX_NESTING_DEPTH` levels."""
    try:
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise TokenMalformed("the payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise TokenMalformed("the payload is not a JSON object")
    if not _shallow(payload) and _too_deep(claims):
        raise TokenMalformed(f"the payload nests deeper than {MAX_NESTING_DEPTH} levels")
    return claims
