"""The JWKS model: parse and validate an issuer's public signing keys.

Shared by the config (the baked set), the bake and the remote key layer, so
every path applies the same rules:

- usable: public RSA of at least 2048 bits, EC on P-256/P-384/P-521, OKP
  Ed25519; for signing (``use`` absent or ``sig``, ``key_ops`` absent or
  containing ``verify``, ``alg`` absent or a signature algorithm that fits
  the key type and curve);
- unusable keys (encryption keys, weak or unknown types and curves, bad
  material) are skipped and reported with their kid and a reason, never used;
  weak includes an RSA modulus that is even or has a prime factor below 1000
  and an Ed25519 key that is a small-order point in any encoding (such a key
  verifies forged signatures);
- a set with any private member or any ``oct`` key is refused whole (it
  proves the publisher leaks secrets), as is a set with duplicate kids among
  usable keys or with no usable key at all.

Key material is decoded tolerantly (padding, the standard alphabet, leading
zero bytes) because it comes from the trusted issuer, not from a token; the
canonical form re-encodes it strictly, so the same keys always serialize to
the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from .errors import JWKSInvalid

__all__ = [
    "EC_CURVE_ALGS",
    "PRIVATE_MEMBERS",
    "RSA_ALGS",
    "JWKSet",
    "PublicJWK",
    "SkippedKey",
    "b64url_decode_lenient",
    "b64url_encode",
    "parse_jwks",
]

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVE_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
OKP_ALGS = frozenset({"Ed25519", "EdDSA"})
MIN_RSA_BITS = 2048
#: Product of the primes below 1000: one gcd finds any of them in a modulus.
_SMALL_PRIMES_PRODUCT = math.prod(
    n for n in range(2, 1000) if all(n % k for k in range(2, math.isqrt(n) + 1))
)
_ED25519_P = 2**255 - 19
#: y-coordinates of the eight points of order dividing 8 on edwards25519: the
#: identity (y=1), the point of order 2 (y=-1), the two of order 4 (y=0) and
#: the four of order 8 (two y values, each with both signs of x). Whether a
#: point is small-order depends on y alone (its negation has the same y), so
#: every encoding of one is caught by reducing y mod p, whatever the sign bit
#: and including the non-canonical y + p forms.
_ED25519_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _ED25519_P - 1,
        0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
    }
)
# Canonical member order: type, identity, then key material.
_CANONICAL_ORDER = ("kty", "kid", "alg", "crv", "n", "e", "x", "y")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
JoseKey = RSAKey | ECKey | OKPKey


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_lenient(value: object) -> bytes:
    """Decode key material from a trusted document: padding and +/ tolerated."""
    if not isinstance(value, str) or not value:
        raise ValueError("not a non-empty string")
    text = value.strip().rstrip("=").replace("+", "-").replace("/", "_")
    try:
        # validate=True: characters outside the alphabet are an error, not skipped.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _int_member(jwk: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(b64url_decode_lenient(jwk.get(name)), "big")


def _fixed_member(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    raw = b64url_decode_lenient(jwk.get(name))
    # Some issuers drop or add leading zero bytes; the value is what counts.
    raw = raw.lstrip(b"\x00").rjust(size, b"\x00")
    if len(raw) != size:
        raise ValueError(f"{name} is not {size} bytes")
    return raw


@dataclass(frozen=True, slots=True)
class PublicJWK:
    """One usable public signing key, imported once."""

    kid: str | None
    kty: str
    #: The ``alg`` the issuer published, or ``None`` (then the key store decides).
    alg: str | None
    crv: str | None
    #: Canonical public members, in canonical order.
    members: tuple[tuple[str, str], ...]
    #: RFC 7638 SHA-256 thumbprint.
    thumbprint: str
    #: The joserfc key, for joserfc's algorithm models.
    jose_key: JoseKey = field(repr=False, compare=False)

    @property
    def public_key(self) -> PublicKey:
        """The ``cryptography`` public key object."""
        key = self.jose_key.public_key
        assert isinstance(
            key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
        )
        return key

    @property
    def key_size(self) -> int:
        """Modulus size in bits for RSA, curve size for EC, 256 for Ed25519."""
        key = self.public_key
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return key.key_size
        return 256

    def to_dict(self) -> dict[str, str]:
        """The canonical JWK as a dict."""
        return dict(self.members)


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A key in the document that is not used, and why (no key material)."""

    index: int
    kid: str | None
    kty: str | None
    reason: str

    def describe(self) -> str:
        """One line naming the key and the reason, for CLI and logs."""
        name = self.kid if self.kid is not None else f"#{self.index}"
        return f"{name} ({self.kty or '?'}): {self.reason}"


@dataclass(frozen=True, slots=True)
class JWKSet:
    """Validated public signing keys, sorted by kid, plus what was skipped."""

    keys: tuple[PublicJWK, ...]
    skipped: tuple[SkippedKey, ...] = ()

    @classmethod
    def parse(cls, document: object) -> JWKSet:
        """Parse a JWKS given as a JSON string, bytes or an already-loaded dict."""
        return parse_jwks(document)

    @property
    def kids(self) -> tuple[str | None, ...]:
        return tuple(key.kid for key in self.keys)

    @property
    def thumbprints(self) -> dict[str | None, str]:
        """kid → RFC 7638 thumbprint, for drift checks."""
        return {key.kid: key.thumbprint for key in self.keys}

    def get(self, kid: str) -> PublicJWK | None:
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.to_dict() for key in self.keys]}

    def canonical_json(self) -> str:
        """Compact JSON, keys sorted by kid, members in a fixed order.

        Byte-identical for the same keys, whatever order or encoding quirks
        the issuer's document had.
        """
        return orjson.dumps(self.to_dict()).decode("utf-8")

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.keys)


def parse_jwks(document: object) -> JWKSet:
    """Validate a JWKS document and return the usable keys.

    Raises :class:`~verifier.errors.JWKSInvalid` (with ``skipped`` in its
    context) when the set is refused.
    """
    if isinstance(document, str | bytes | bytearray):
        try:
            document = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            raise JWKSInvalid("the key set is not valid JSON") from exc
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JWKSInvalid('the key set is not a JSON object with a "keys" array')

    entries: list[object] = document["keys"]
    _refuse_secrets(entries)

    usable: list[PublicJWK] = []
    skipped: list[SkippedKey] = []
    for index, entry in enumerate(entries):
        assert isinstance(entry, Mapping)  # _refuse_secrets checked it
        try:
            usable.append(_import_key(entry))
        except _Unusable as why:
            skipped.append(_skipped(index, entry, str(why)))

    seen: set[str] = set()
    for key in usable:
        if key.kid is None:
            continue
        if key.kid in seen:
            raise JWKSInvalid(f"duplicate kid {key.kid!r} among usable keys", skipped=skipped)
        seen.add(key.kid)
    if not usable:
        raise JWKSInvalid("the key set has no usable signing key", skipped=skipped)

    usable.sort(key=lambda key: (key.kid or "", key.thumbprint))
    return JWKSet(keys=tuple(usable), skipped=tuple(skipped))


def _refuse_secrets(entries: Iterable[object]) -> None:
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise JWKSInvalid(f"key #{index} is not a JSON object")
        if entry.get("kty") == "oct":
            raise JWKSInvalid(f"key #{index} is a symmetric (oct) key: the set leaks a secret")
        leaked = sorted(PRIVATE_MEMBERS.intersection(entry))
        if leaked:
            raise JWKSInvalid(
                f"key #{index} carries private members {', '.join(leaked)}: "
                "the set leaks a private key"
            )


class _Unusable(Exception):
    """A key that is skipped, with the reason as its message."""


def _skipped(index: int, entry: Mapping[str, Any], reason: str) -> SkippedKey:
    kid = entry.get("kid")
    kty = entry.get("kty")
    return SkippedKey(
        index=index,
        kid=kid if isinstance(kid, str) else None,
        kty=kty if isinstance(kty, str) else None,
        reason=reason,
    )


def _check_purpose(entry: Mapping[str, Any]) -> None:
    use = entry.get("use")
    if use is not None and use != "sig":
        raise _Unusable(f"use is {use!r}, not 'sig'")
    key_ops = entry.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _Unusable("key_ops does not include 'verify'")


def _import_key(entry: Mapping[str, Any]) -> PublicJWK:
    kid = entry.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise _Unusable("kid is not a non-empty string")
    _check_purpose(entry)
    alg = entry.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise _Unusable("alg is not a string")

    kty = entry.get("kty")
    try:
        if kty == "RSA":
            return _import_rsa(entry, kid, alg)
        if kty == "EC":
            return _import_ec(entry, kid, alg)
        if kty == "OKP":
            return _import_okp(entry, kid, alg)
    except ValueError as exc:
        raise _Unusable(f"invalid key material: {exc}") from exc
    raise _Unusable(f"unsupported key type {str(kty)[:32]!r}")


def _build(
    kty: str,
    kid: str | None,
    alg: str | None,
    crv: str | None,
    material: dict[str, str],
    jose_type: type[JoseKey],
) -> PublicJWK:
    values = {"kty": kty, "kid": kid, "alg": alg, "crv": crv, **material}
    members = tuple(
        (name, values[name]) for name in _CANONICAL_ORDER if values.get(name) is not None
    )
    jose_key = jose_type.import_key(dict(members))  # type: ignore[arg-type]
    return PublicJWK(
        kid=kid,
        kty=kty,
        alg=alg,
        crv=crv,
        members=members,  # type: ignore[arg-type]
        thumbprint=jose_key.thumbprint(),
        jose_key=jose_key,
    )


def _import_rsa(entry: Mapping[str, Any], kid: str | None, alg: str | None) -> PublicJWK:
    if alg is not None and alg not in RSA_ALGS:
        raise _Unusable(f"alg {alg!r} is not an RSA signature algorithm")
    n = _int_member(entry, "n")
    e = _int_member(entry, "e")
    if n.bit_length() < MIN_RSA_BITS:
        raise _Unusable(f"RSA key of {n.bit_length()} bits is weaker than {MIN_RSA_BITS}")
    # No real key has such a modulus; one that does is broken or planted.
    if n % 2 == 0:
        raise _Unusable("RSA modulus is even")
    if (factor := math.gcd(n, _SMALL_PRIMES_PRODUCT)) != 1:
        raise _Unusable(f"RSA modulus has a prime factor below 1000 ({_smallest_factor(factor)})")
    # cryptography refuses e < 3, even e and e >= n.
    rsa.RSAPublicNumbers(e, n).public_key()
    material = {
        "n": b64url_encode(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": b64url_encode(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    }
    return _build("RSA", kid, alg, None, material, RSAKey)


def _import_ec(entry: Mapping[str, Any], kid: str | None, alg: str | None) -> PublicJWK:
    crv = entry.get("crv")
    # isinstance first: an array or object here must not reach a dict lookup.
    if not isinstance(crv, str) or crv not in _EC_CURVES:
        raise _Unusable(f"unsupported EC curve {str(crv)[:32]!r}")
    if alg is not None and alg != EC_CURVE_ALGS[crv]:
        raise _Unusable(f"alg {alg!r} does not fit curve {crv}")
    curve, size = _EC_CURVES[crv]
    x = _fixed_member(entry, "x", size)
    y = _fixed_member(entry, "y", size)
    # from_encoded_point checks that the point is on the curve.
    ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    material = {"x": b64url_encode(x), "y": b64url_encode(y)}
    return _build("EC", kid, alg, crv, material, ECKey)


def _import_okp(entry: Mapping[str, Any], kid: str | None, alg: str | None) -> PublicJWK:
    crv = entry.get("crv")
    if crv != "Ed25519":
        raise _Unusable(f"unsupported OKP curve {str(crv)[:32]!r}")
    if alg is not None and alg not in OKP_ALGS:
        raise _Unusable(f"alg {alg!r} does not fit curve Ed25519")
    x = b64url_decode_lenient(entry.get("x"))
    if len(x) != 32:
        raise ValueError("x is not 32 bytes")
    if _is_small_order_ed25519(x):
        # With such a key, R = identity and S = 0 "verify" any message.
        raise _Unusable("Ed25519 key is a small-order point (it would verify forgeries)")
    ed25519.Ed25519PublicKey.from_public_bytes(x)
    return _build("OKP", kid, alg, "Ed25519", {"x": b64url_encode(x)}, OKPKey)


def _smallest_factor(n: int) -> int:
    return next(k for k in range(2, 1000) if n % k == 0)


def _is_small_order_ed25519(encoded: bytes) -> bool:
    """Whether a 32-byte Ed25519 public key encodes a point of order 1, 2, 4 or 8."""
    y = int.from_bytes(encoded, "little") & ((1 << 255) - 1)  # bit 255 is x's sign
    return y % _ED25519_P in _ED25519_SMALL_ORDER_Y
