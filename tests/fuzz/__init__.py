"""Property-based fuzzing of the verifier (hypothesis); see docs/fuzzing.md.

Each test states its example count for the ``ci`` profile with
``settings(max_examples=examples(N))``; the ``long`` profile
(``JWTEDGE_FUZZ=long``) replaces every count with :data:`LONG_EXAMPLES`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import strategies as st

from verifier.errors import ERROR_CODES, VerifierError

#: ``JWTEDGE_FUZZ=long`` selects the long profile; anything else runs ``ci``.
PROFILE = "long" if os.environ.get("JWTEDGE_FUZZ", "").strip().lower() == "long" else "ci"
#: Examples per test in the long profile (``JWTEDGE_FUZZ_EXAMPLES`` overrides it).
LONG_EXAMPLES = int(os.environ.get("JWTEDGE_FUZZ_EXAMPLES", "100000"))


def examples(ci: int) -> int:
    """``ci`` examples in the ci profile, :data:`LONG_EXAMPLES` in the long one."""
    return ci if PROFILE == "ci" else LONG_EXAMPLES


# -- an independent oracle ----------------------------------------------------
#
# What "genuinely valid" means, written from DESIGN.md's verification rules
# with the stdlib and raw ``cryptography`` only (no verifier code), so a fuzz
# test can ask "should this token have been accepted?" without trusting the
# code under test. It is deliberately no stricter than the design: a token the
# oracle calls valid may still be refused, never the other way round.

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_KEY_REFERENCES = ("jku", "x5u", "x5c", "jwk", "crit")
_ID_TOKEN_ONLY = ("nonce", "at_hash", "c_hash")
_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _strict_segment(segment: str) -> bytes | None:
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        return None
    raw = _b64(segment)
    # Canonical only: re-encoding gives the same text (no stray unused bits).
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        return None
    return raw


def _json_object(raw: bytes, *, duplicates: bool) -> dict[str, Any] | None:
    """A JSON object, last member winning; with ``duplicates=False`` a repeated
    top-level member refuses it (RFC 7515 §4: Header Parameter names are unique;
    what nested values of unknown parameters hold is not a header parameter)."""
    repeats: list[bool] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        repeats.append(len(set(names)) != len(names))
        return dict(pairs)

    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    # The outermost object is completed, so hooked, last.
    return None if not duplicates and repeats[-1] else value


class OracleKey:
    """A public key from a JWKS dict, bound to its one algorithm."""

    def __init__(self, jwk: Mapping[str, Any]) -> None:
        self.kid: str = jwk["kid"]
        self.alg: str = "Ed25519" if jwk["alg"] == "EdDSA" else jwk["alg"]
        key: Any
        if jwk["kty"] == "RSA":
            n, e = (int.from_bytes(_b64(jwk[m]), "big") for m in ("n", "e"))
            key = rsa.RSAPublicNumbers(e, n).public_key()
        elif jwk["kty"] == "EC":
            x, y = (int.from_bytes(_b64(jwk[m]), "big") for m in ("x", "y"))
            key = ec.EllipticCurvePublicNumbers(x, y, _CURVES[jwk["crv"]]).public_key()
        else:
            key = ed25519.Ed25519PublicKey.from_public_bytes(_b64(jwk["x"]))
        self.key = key

    def verifies(self, signing_input: bytes, signature: bytes) -> bool:
        digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
        try:
            if self.alg.startswith("RS"):
                self.key.verify(signature, signing_input, padding.PKCS1v15(), digest[self.alg[2:]])
            elif self.alg.startswith("PS"):
                pss = padding.PSS(
                    padding.MGF1(digest[self.alg[2:]]), digest[self.alg[2:]].digest_size
                )
                self.key.verify(signature, signing_input, pss, digest[self.alg[2:]])
            elif self.alg.startswith("ES"):
                size = (self.key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                der = encode_dss_signature(r, s)
                self.key.verify(der, signing_input, ec.ECDSA(digest[self.alg[2:]]))
            else:
                self.key.verify(signature, signing_input)
        except (InvalidSignature, ValueError):
            return False
        return True


class Oracle:
    """Says whether a token is genuinely valid, independently of the verifier."""

    def __init__(
        self,
        jwks: Mapping[str, Any],
        *,
        issuer: str,
        audience: str,
        client_id: str,
        now: float,
        leeway: float = 30.0,
        max_bytes: int = 8192,
    ) -> None:
        self.keys = [OracleKey(jwk) for jwk in jwks["keys"]]
        self.issuer = issuer
        self.audience = audience
        self.client_id = client_id
        self.now = now
        self.leeway = leeway
        self.max_bytes = max_bytes

    def signed_parts(self, token: object) -> tuple[dict[str, Any], bytes] | None:
        """``(header, payload)`` when the JWS itself is valid, else None."""
        if isinstance(token, bytes | bytearray):
            try:
                token = bytes(token).decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(token, str) or not token.isascii() or len(token) > self.max_bytes:
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header_raw, payload, signature = (_strict_segment(part) for part in parts)
        if header_raw is None or payload is None or signature is None:
            return None
        header = _json_object(header_raw, duplicates=False)
        if header is None or not self._header_ok(header):
            return None
        alg = "Ed25519" if header["alg"] == "EdDSA" else header["alg"]
        # "kid": null is read as no kid (the key must then be the one for alg).
        if header.get("kid") is not None:
            candidates = [key for key in self.keys if key.kid == header["kid"]]
        else:
            candidates = [key for key in self.keys if key.alg == alg]
        if len(candidates) != 1 or candidates[0].alg != alg:
            return None
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        if not candidates[0].verifies(signing_input, signature):
            return None
        return header, payload

    @staticmethod
    def _header_ok(header: Mapping[str, Any]) -> bool:
        if not isinstance(header.get("alg"), str):
            return False
        if any(name in header for name in _KEY_REFERENCES):
            return False
        if "b64" in header and header["b64"] is not True:
            return False
        return all(
            header.get(name) is None or isinstance(header[name], str) for name in ("kid", "typ")
        )

    def _date_ok(self, claims: Mapping[str, Any], name: str) -> bool:
        if name not in claims:
            return True
        value = claims[name]
        return (
            not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
        )

    def _audiences(self, claims: Mapping[str, Any]) -> list[str] | None:
        aud = claims.get("aud")
        if isinstance(aud, str):
            return [aud]
        if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
            return aud
        return None

    def access_claims(self, token: object) -> dict[str, Any] | None:
        """The claims when ``token`` is a genuinely valid access token, else None."""
        parts = self.signed_parts(token)
        if parts is None:
            return None
        claims = _json_object(parts[1], duplicates=True)
        if claims is None or any(name in claims for name in _ID_TOKEN_ONLY):
            return None
        if claims.get("iss") != self.issuer:
            return None
        if "exp" not in claims or not all(self._date_ok(claims, n) for n in ("exp", "nbf", "iat")):
            return None
        if self.now >= claims["exp"] + self.leeway:
            return None
        if "nbf" in claims and self.now + self.leeway < claims["nbf"]:
            return None
        if "iat" in claims and claims["iat"] > self.now + self.leeway:
            return None
        sub, sid = claims.get("sub"), claims.get("sid")
        if not isinstance(sub, str) or not sub or not (sid is None or isinstance(sid, str)):
            return None
        audiences = self._audiences(claims)
        if audiences is None or self.audience not in audiences:
            return None
        return claims

    def id_claims(
        self, token: object, access: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The claims when ``token`` is a valid ID token (for ``access``), else None."""
        parts = self.signed_parts(token)
        if parts is None:
            return None
        header, payload = parts
        typ = header.get("typ")
        if isinstance(typ, str) and typ.lower().removeprefix("application/") == "at+jwt":
            return None
        claims = _json_object(payload, duplicates=True)
        if claims is None or claims.get("iss") != self.issuer:
            return None
        if not all(self._date_ok(claims, name) for name in ("exp", "iat")):
            return None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            return None
        audiences = self._audiences(claims)
        if audiences is None or self.client_id not in audiences:
            return None
        azp = claims.get("azp")
        if (len(audiences) > 1 and azp is None) or (azp is not None and azp != self.client_id):
            return None
        if access is not None:
            if access.get("sub") != sub:
                return None
            sid, access_sid = claims.get("sid"), access.get("sid")
            if sid is not None and access_sid is not None and sid != access_sid:
                return None
        return claims


# -- token mutations ----------------------------------------------------------
#
# A mutation is a plain tuple drawn independently of the token it will be
# applied to (positions are taken modulo the token's length), so hypothesis
# shrinks it well and prints it readably.

Mutation = tuple[Any, ...]

_POSITION = st.integers(min_value=0, max_value=20_000)


def mutations(donors: int) -> st.SearchStrategy[Mutation]:
    """One edit of a compact JWS; ``donors`` is how many tokens segments come from."""
    donor = st.integers(min_value=0, max_value=max(donors - 1, 0))
    segment = st.integers(min_value=0, max_value=2)
    return st.one_of(
        st.tuples(st.just("flip"), _POSITION, st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("truncate"), _POSITION),
        st.tuples(st.just("swap"), segment, donor, segment),
        st.tuples(st.just("segment"), segment, st.binary(max_size=96)),
        st.tuples(st.just("insert"), _POSITION, st.text(min_size=1, max_size=4)),
        st.tuples(st.just("delete"), _POSITION, st.integers(min_value=1, max_value=8)),
        st.tuples(
            st.just("append"),
            st.sampled_from(["A", ".", "=", " ", "\n", "\x00", "é", "eyJ"]),
            st.integers(min_value=1, max_value=10_000),
        ),
        st.tuples(st.just("padding"), segment, st.sampled_from(["=", "==", "+", "/", " "])),
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segments(token: str) -> list[str]:
    parts = token.split(".")
    return parts + [""] * (3 - len(parts))


def mutate(token: str, edits: list[Mutation], donors: list[str]) -> str:
    """Apply ``edits`` in order; every edit is defined on any string."""
    for edit in edits:
        kind = edit[0]
        size = max(len(token), 1)
        if kind == "flip":
            index = edit[1] % size
            if token:
                flipped = chr(ord(token[index]) ^ (1 << edit[2]))
                token = token[:index] + flipped + token[index + 1 :]
        elif kind == "truncate":
            token = token[: edit[1] % size]
        elif kind == "swap":
            parts = _segments(token)
            parts[edit[1]] = _segments(donors[edit[2] % len(donors)])[edit[3]]
            token = ".".join(parts)
        elif kind == "segment":
            parts = _segments(token)
            parts[edit[1]] = b64url(edit[2])
            token = ".".join(parts)
        elif kind == "insert":
            index = edit[1] % (len(token) + 1)
            token = token[:index] + edit[2] + token[index:]
        elif kind == "delete":
            index = edit[1] % size
            token = token[:index] + token[index + edit[2] :]
        elif kind == "append":
            token += edit[1] * edit[2]
        elif kind == "padding":
            parts = _segments(token)
            parts[edit[1]] += edit[2]
            token = ".".join(parts)
    return token


#: How a token string is handed to the verifier.
FORMS = st.sampled_from(["str", "bytes", "bytearray"])


def as_form(token: str, form: str) -> str | bytes | bytearray:
    if form == "str":
        return token
    raw = token.encode("utf-8", "surrogatepass")
    return raw if form == "bytes" else bytearray(raw)


def text_of(token: object) -> str:
    """The token as text, for "is it echoed?" checks."""
    if isinstance(token, bytes | bytearray):
        return bytes(token).decode("utf-8", "replace")
    return str(token)


def assert_documented(err: BaseException, *secrets: object) -> None:
    """A VerifierError leaf with a documented code that echoes none of ``secrets``."""
    assert isinstance(err, VerifierError), repr(err)
    assert err.code in ERROR_CODES, err.code
    assert isinstance(err, ERROR_CODES[err.code])
    rendered = (str(err), repr(err), err.message, repr(err.context))
    for secret in secrets:
        text = text_of(secret)
        # Short strings ("a", "eyJ") appear in any message by chance.
        if len(text) >= 16:
            assert not any(text in shown for shown in rendered), (err.code, err.message)


#: Small JSON values of every type, nested a little: what hostile documents
#: and token-endpoint responses are built from. No NaN or infinities (JSON has
#: none; json.dumps would write them and orjson rightly refuses them).
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
