"""Fuzz the JWKS model: ``parse_jwks`` returns a JWKSet or raises JWKSInvalid.

Documents are built from a small pool of real generated keys (usable ones and
ones that must be skipped: weak RSA, secp256k1, Ed448, X25519) and then
mutated: members removed, added, retyped or garbled, private members and
``oct`` keys sprinkled in, kids duplicated, entries that are not objects,
``keys`` that is not a list, very long lists. Properties (DESIGN.md, Data
flow; verifier/jwks.py):

- nothing but ``JWKSInvalid`` (code ``jwks_invalid``) ever escapes;
- a returned set holds no private material, only RSA >= 2048 bits, EC
  P-256/384/521 and OKP Ed25519 keys, unique kids, and accounts for every
  entry (usable or skipped, with the reason); encryption keys are skipped;
- ``canonical_json`` parses back to the identical bytes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import event, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.fuzz import assert_documented, b64url, examples, json_values
from verifier.errors import JWKSInvalid
from verifier.jwks import PRIVATE_MEMBERS, JWKSet, parse_jwks

ALGS = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
    "ES256K", "Ed25519", "EdDSA", "HS256", "none", "RSA-OAEP", "ECDH-ES", "A128KW", "",
]  # fmt: skip
KTYS = ["RSA", "EC", "OKP", "oct", "rsa", "ec", "AKP", ""]
CURVES = ["P-256", "P-384", "P-521", "Ed25519", "Ed448", "X25519", "secp256k1", "p-256", ""]
USES = ["sig", "enc", "SIG", "", "verify"]
KEY_OPS = [["verify"], ["sign", "verify"], ["encrypt"], [], ["verify", "verify"], "verify"]
OPS = ["delete", "set", "retype", "garble", "extra", "key_ops"]
_CURVE_NAMES = {"secp256r1", "secp384r1", "secp521r1"}


@dataclass(frozen=True)
class PoolKey:
    """A real key: its public JWK and its private members."""

    public: dict[str, Any]
    private: dict[str, Any]

    def __repr__(self) -> str:
        return f"PoolKey({self.public.get('kty')}, {self.public.get('crv')})"


@pytest.fixture(scope="module")
def pool() -> list[PoolKey]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns about the (deliberately) weak key
        keys: list[Any] = [
            RSAKey.generate_key(2048),
            RSAKey.generate_key(1024),
            ECKey.generate_key("P-256"),
            ECKey.generate_key("P-384"),
            ECKey.generate_key("P-521"),
            ECKey.generate_key("secp256k1"),
            OKPKey.generate_key("Ed25519"),
            OKPKey.generate_key("Ed448"),
            OKPKey.generate_key("X25519"),
        ]
    pool = []
    for key in keys:
        public = dict(key.as_dict(private=False))
        private = {
            name: value for name, value in key.as_dict(private=True).items() if name not in public
        }
        pool.append(PoolKey(public, private))
    return pool


def garbled(value: str) -> st.SearchStrategy[Any]:
    """Key material as sloppy issuers write it, or broken."""
    raw = value.encode()
    return st.one_of(
        st.just(value + "="),  # padded
        st.just(value.replace("-", "+").replace("_", "/")),  # standard alphabet
        st.just("AA" + value),  # leading zero bytes (in most cases)
        st.just(value[: len(value) // 2]),  # truncated
        st.just(value + "!"),
        st.just(" " + value + "\n"),
        st.binary(max_size=80).map(b64url),
        st.text(max_size=40),
        st.just(raw.hex()),
        json_values,
    )


@st.composite
def entries(draw: st.DrawFn, pool: list[PoolKey], kids: list[str]) -> Any:
    """One member of ``keys``: usually a pool key, mutated; sometimes anything."""
    # Any private member or oct key refuses the whole set, so they stay rare
    # enough for most documents to reach the per-key checks.
    shape = draw(st.sampled_from(["key"] * 30 + ["oct", "other"]))
    if shape == "other":
        return draw(json_values)
    if shape == "oct":
        return {"kty": "oct", "k": draw(st.binary(max_size=32).map(b64url)), "kid": "hmac"}
    source = draw(st.sampled_from(pool))
    entry: dict[str, Any] = dict(source.public)
    if draw(st.booleans()):
        entry["kid"] = draw(st.sampled_from(kids))
    for name, values in (("alg", ALGS), ("use", USES)):
        if draw(st.integers(0, 3)) == 0:
            entry[name] = draw(st.sampled_from(values))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        op = draw(
            st.sampled_from(["delete", "set", "garble", "extra", "key_ops"] * 4 + ["private"])
        )
        name = draw(st.sampled_from(sorted(entry) or ["kty"]))
        if op == "delete":
            entry.pop(name, None)
        elif op == "set":
            entry[name] = draw(
                st.one_of(
                    json_values,
                    st.sampled_from({"kty": KTYS, "crv": CURVES, "alg": ALGS}.get(name, USES)),
                )
            )
        elif op == "retype":
            value = entry.get(name)
            entry[name] = draw(st.sampled_from([[value], {name: value}, None, 1, True, [], {}]))
        elif op == "garble" and isinstance(entry.get(name), str):
            entry[name] = draw(garbled(entry[name]))
        elif op == "private" and source.private:
            member = draw(st.sampled_from(sorted(source.private)))
            entry[member] = source.private[member]
        elif op == "private":
            entry[draw(st.sampled_from(sorted(PRIVATE_MEMBERS)))] = "AQAB"
        elif op == "extra":
            entry[draw(st.text(max_size=8))] = draw(json_values)
        else:
            entry["key_ops"] = draw(st.sampled_from(KEY_OPS))
    return entry


@st.composite
def documents(draw: st.DrawFn, pool: list[PoolKey]) -> Any:
    kids = draw(st.lists(st.text(max_size=6), min_size=1, max_size=3, unique=True))
    keys = draw(st.lists(entries(pool, kids), max_size=6))
    shape = draw(st.sampled_from(["set"] * 6 + ["huge", "keys-not-list", "not-object"]))
    if shape == "huge" and keys:
        # Long lists of the same few entries (a JWKS has no size limit of its own here).
        keys = keys * draw(st.integers(min_value=50, max_value=400))
    elif shape == "keys-not-list":
        return {"keys": draw(json_values.filter(lambda value: not isinstance(value, list)))}
    elif shape == "not-object":
        return draw(json_values)
    document: dict[str, Any] = {"keys": keys}
    if draw(st.booleans()):
        document[draw(st.text(max_size=6))] = draw(json_values)
    return document


def encoded(document: Any, form: str) -> Any:
    if form == "dict":
        return document
    text = json.dumps(document)
    return text if form == "str" else text.encode()


def check_usable(jwks: JWKSet, document: Any) -> None:
    assert len(jwks) > 0
    kids = [key.kid for key in jwks.keys if key.kid is not None]
    assert len(kids) == len(set(kids)), "duplicate kids among usable keys"
    for key in jwks.keys:
        members = dict(key.members)
        assert not PRIVATE_MEMBERS.intersection(members), f"private member in {key.kid!r}"
        assert not key.jose_key.is_private
        public = key.public_key
        if key.kty == "RSA":
            assert isinstance(public, rsa.RSAPublicKey)
            assert public.key_size >= 2048
        elif key.kty == "EC":
            assert isinstance(public, ec.EllipticCurvePublicKey)
            assert public.curve.name in _CURVE_NAMES
            assert key.crv in ("P-256", "P-384", "P-521")
        else:
            assert key.kty == "OKP"
            assert isinstance(public, ed25519.Ed25519PublicKey)
            assert key.crv == "Ed25519"
    entries_in = document["keys"]
    skipped = [item.index for item in jwks.skipped]
    assert len(skipped) == len(set(skipped))
    assert len(jwks.keys) + len(skipped) == len(entries_in), "an entry is neither used nor skipped"
    for index, entry in enumerate(entries_in):
        use, key_ops = entry.get("use"), entry.get("key_ops")
        not_for_signing = (use is not None and use != "sig") or (
            key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops)
        )
        if not_for_signing:
            assert index in skipped, f"key #{index} is not for signing but was used"


@settings(max_examples=examples(600))
@given(data=st.data())
def test_parse_jwks_returns_only_public_signing_keys_or_raises_jwks_invalid(
    pool: list[PoolKey], data: st.DataObject
) -> None:
    document = data.draw(documents(pool), label="document")
    form = data.draw(st.sampled_from(["dict", "str", "bytes"]), label="form")
    try:
        jwks = parse_jwks(encoded(document, form))
    except JWKSInvalid as err:
        event("refused")
        assert_documented(err)  # and JWKSInvalid's code is jwks_invalid
        return
    event("parsed")
    check_usable(jwks, document)
    canonical = jwks.canonical_json()
    assert parse_jwks(canonical).canonical_json() == canonical
    assert parse_jwks(orjson.loads(canonical)).canonical_json() == canonical
    assert parse_jwks(canonical.encode()).sha256 == jwks.sha256


@settings(max_examples=examples(200))
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200), json_values))
def test_parse_jwks_refuses_noise_with_jwks_invalid(raw: Any) -> None:
    with pytest.raises(JWKSInvalid):
        parse_jwks(raw)


# -- regressions for bugs the fuzzer found (fixed) ------------------------------


@pytest.mark.parametrize("crv", [[], {}, ["P-256"]])
def test_ec_key_with_a_non_string_crv_is_skipped_not_a_type_error(
    pool: list[PoolKey], crv: Any
) -> None:
    """Found by the property above: ``crv not in _EC_CURVES`` used to hash a
    JSON array or object and raise TypeError."""
    ed25519_key = next(key.public for key in pool if key.public.get("crv") == "Ed25519")
    ec_key = {**next(key.public for key in pool if key.public.get("crv") == "P-256"), "crv": crv}
    with pytest.raises(JWKSInvalid):
        parse_jwks({"keys": [{"kty": "EC", "crv": crv}]})
    jwks = parse_jwks({"keys": [ed25519_key, ec_key]})
    assert [skipped.index for skipped in jwks.skipped] == [1]
