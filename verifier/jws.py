"""Verify a compact JWS: the serialization, the header and the signature (RFC 7515, RFC 8725).

The first of the two steps of :mod:`verifier.tokens` (joserfc's
``jwt.decode``, before its ``JWTClaimsRegistry``): :func:`verify_jws` checks
the serialization and the signature and returns the header and the raw
payload bytes; claims are validated by :class:`~verifier.tokens.TokenVerifier`.

Compact serialization only; a size cap (:func:`~verifier.limits.check_size`)
before any decoding; strict base64url; at most
:data:`~verifier.limits.MAX_HEADER_MEMBERS` header members, duplicates
refused; ``none`` refused; ``jku``/``x5u``/``x5c``/``jwk`` never followed
(refused); unknown ``crit`` and ``b64=false`` refused; the key and its one
algorithm come from the :class:`~verifier.keys.KeyStore`, never from the token.

The parsed-header cache (:data:`_HEADERS`) holds only headers of tokens whose
signature verified, bounded in bytes (64 KiB of segments, none over 1 KiB),
so no request that fails to verify can grow it. No I/O here.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    AlgorithmNotAllowed,
    HeaderInvalid,
    SignatureInvalid,
    TokenMalformed,
    TokenMissing,
)
from .limits import check_size
from .limits import load_claims as _load_claims
from .limits import parse_header as _parse_header

if TYPE_CHECKING:
    from .keys import KeyStore

__all__ = ["unverified_header", "verify_jws"]

_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_INDEX = {char: index for index, char in enumerate(_B64URL.decode())}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = {0: b"", 2: b"==", 3: b"="}
# Header parameters that point at keys elsewhere: never followed, refused.
_KEY_REFERENCES = ("jku", "x5u", "x5c", "jwk")


def _b64url(segment: str, what: str) -> bytes:
    """Strict unpadded base64url: alphabet, length and unused bits.

    One translate to the standard alphabet, then ``a2b_base64`` in strict mode
    (which refuses any character outside it), is the fastest strict route; the
    standard-alphabet characters and padding are refused first, since after
    the translate they would pass.
    """
    if not segment:
        raise TokenMalformed(f"the {what} segment is empty")
    if "+" in segment or "/" in segment or "=" in segment:
        raise TokenMalformed(f"the {what} segment is not base64url")
    size = len(segment)
    remainder = size % 4
    if remainder == 1:
        raise TokenMalformed(f"the {what} segment has an impossible length")
    # Non-zero unused bits would let two strings decode to the same bytes.
    if remainder and _B64_INDEX.get(segment[-1], 0) & (0x0F if remainder == 2 else 0x03):
        raise TokenMalformed(f"the {what} segment is not canonical base64url")
    standard = segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[remainder]
    try:
        return binascii.a2b_base64(standard, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenMalformed(f"the {what} segment is not base64url") from exc


def _check_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise HeaderInvalid('the header has no string "alg"')
    if alg.lower() == "none":
        raise AlgorithmNotAllowed('algorithm "none" is never allowed', alg="none")
    for name in _KEY_REFERENCES:
        if name in header:
            raise HeaderInvalid(f'the "{name}" header is never followed', member=name)
    if "crit" in header:
        # We understand no extension, so any critical one is unknown (RFC 7515 §4.1.11).
        raise HeaderInvalid('the header names "crit" extensions we do not support')
    if "b64" in header and header["b64"] is not True:
        raise HeaderInvalid('"b64": false (RFC 7797) is not supported')
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise HeaderInvalid('"kid" is not a string')
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise HeaderInvalid('"typ" is not a string')
    return alg, kid


def unverified_header(token: str, *, max_bytes: int = 8192) -> dict[str, Any]:
    """The header of a compact JWS, parsed strictly but NOT verified.

    For choosing a key to fetch; never trust what it returns. ``max_bytes``
    is ``auth.max_token_bytes``: a longer token is refused unread.
    """
    check_size(token, max_bytes)
    if not token.isascii() or token.count(".") != 2:
        raise TokenMalformed("the token is not a compact JWS")
    return dict(_header(token.partition(".")[0])[0])


_Header = tuple[dict[str, Any], str, str | None]


class _VerifiedHeaders:
    """Checked headers of tokens whose signature verified, by their base64url segment.

    Tokens from one key share a header, so this turns header parsing into a
    dict lookup. Only a verified token adds an entry, so a forger cannot fill
    it; a segment longer than ``max_segment`` is never kept, and the segments
    kept add up to at most ``max_bytes`` (then it starts again, empty). Values
    are never handed to callers (they get copies).
    """

    __slots__ = ("entries", "max_bytes", "max_segment", "size")

    def __init__(self, *, max_bytes: int, max_segment: int) -> None:
        self.entries: dict[str, _Header] = {}
        self.max_bytes = max_bytes
        self.max_segment = max_segment
        self.size = 0

    def add(self, segment: str, header: _Header) -> None:
        cost = len(segment)
        if cost > self.max_segment:
            return
        if self.size + cost > self.max_bytes:
            self.entries.clear()
            self.size = 0
        if self.entries.setdefault(segment, header) is header:
            self.size += cost


#: An issuer signs with a few keys and header shapes; 64 KiB holds hundreds.
_HEADERS = _VerifiedHeaders(max_bytes=64 * 1024, max_segment=1024)


def _header(segment: str) -> _Header:
    cached = _HEADERS.entries.get(segment)
    if cached is not None:
        return cached
    header = _parse_header(_b64url(segment, "header"))
    alg, kid = _check_header(header)
    return header, alg, kid


def verify_jws(
    token: str | bytes, keys: KeyStore, *, max_bytes: int = 8192
) -> tuple[dict[str, Any], bytes]:
    """Verify a compact JWS and return ``(header, payload bytes)``.

    Raises a :class:`~verifier.errors.TokenError` subclass; the message never
    contains the token.
    """
    header, payload = _verify(token, keys, max_bytes)
    return dict(header), payload


def _verify(token: str | bytes, keys: KeyStore, max_bytes: int) -> tuple[Mapping[str, Any], bytes]:
    if isinstance(token, bytes | bytearray):
        check_size(token, max_bytes)
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError as exc:
            raise TokenMalformed("the token is not ASCII") from exc
    if not isinstance(token, str):
        raise TokenMalformed("the token is not a string")
    if not token:
        raise TokenMissing()
    check_size(token, max_bytes)
    if not token.isascii():
        raise TokenMalformed("the token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenMalformed(f"a compact JWS has 3 segments, this token has {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts

    cached = _HEADERS.entries.get(header_b64)
    header, alg, kid = cached if cached is not None else _header(header_b64)
    payload = _b64url(payload_b64, "payload")
    signature = _b64url(signature_b64, "signature")
    key = keys.key_for(kid, alg)
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    if not key.verify(signing_input, signature):
        raise SignatureInvalid(kid=key.kid, alg=key.alg)
    if cached is None:
        # Only now: a header is remembered once a key of ours has signed it.
        _HEADERS.add(header_b64, (header, alg, kid))
    return header, payload


def _unverified_claims(token: str | bytes) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """Header and payload of a token, NOT verified: for a profile's early refusals only.

    ``None`` when the token does not parse (verifying it reports why).
    """
    try:
        text = token.decode("ascii") if isinstance(token, bytes | bytearray) else token
        if not isinstance(text, str) or text.count(".") != 2:
            return None
        header_b64, payload_b64, _ = text.split(".")
        header = _header(header_b64)[0]
        claims = _load_claims(_b64url(payload_b64, "payload"))
    except (UnicodeDecodeError, TokenMalformed, HeaderInvalid, AlgorithmNotAllowed):
        return None
    return header, claims
