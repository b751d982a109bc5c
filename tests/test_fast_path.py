"""The direct signature path agrees with joserfc's algorithm models.

``KeyStore`` verifies with ``cryptography`` directly (padding and hash objects
built once per key); joserfc's models are the reference. Every Wycheproof JWS
signature, and bit-flipped variants of real DevIssuer tokens of every
algorithm, must get the same verdict from both.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS
from verifier.errors import JWKSInvalid
from verifier.jwks import parse_jwks
from verifier.keys import _direct_verifier, _joserfc_verifier, key_algorithm
from verifier.testing import DevIssuer

WYCHEPROOF = VECTORS / "wycheproof/testvectors_v1/json_web_signature_test.json"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _split(token: str) -> tuple[bytes, bytes]:
    header, payload, signature = token.split(".")
    return f"{header}.{payload}".encode(), _b64(signature)


def _asymmetric_cases() -> list[tuple[dict[str, Any], str]]:
    if not WYCHEPROOF.is_file():
        return []
    document = json.loads(WYCHEPROOF.read_text("utf-8"))
    return [
        (group["public"], case["jws"])
        for group in document["testGroups"]
        if "public" in group
        for case in group["tests"]
        if case["jws"].count(".") == 2
    ]


def test_direct_and_joserfc_verifiers_agree_on_every_wycheproof_signature(
    vectors: Path,
) -> None:
    compared = 0
    for public, jws in _asymmetric_cases():
        try:
            jwk = parse_jwks({"keys": [public]}).keys[0]
        except JWKSInvalid:
            continue  # the model refuses the key: neither path is ever used
        alg = key_algorithm(jwk)
        try:
            signing_input, signature = _split(jws)
        except ValueError:
            continue  # not base64: refused before any signature check
        direct = _direct_verifier(alg, jwk)(signing_input, signature)
        reference = _joserfc_verifier(alg, jwk)(signing_input, signature)
        assert direct is reference, jws[:40]
        compared += 1
    assert compared > 300


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "ES512", "Ed25519"])
def test_direct_and_joserfc_verifiers_agree_on_real_and_flipped_signatures(alg: str) -> None:
    issuer = DevIssuer(alg=alg)
    jwk = next(key for key in parse_jwks(issuer.jwks()).keys if key.kid == issuer.kid)
    direct = _direct_verifier(key_algorithm(jwk), jwk)
    reference = _joserfc_verifier(key_algorithm(jwk), jwk)
    signing_input, signature = _split(issuer.access_token("u1", alg=alg))

    assert direct(signing_input, signature) is reference(signing_input, signature) is True
    for index in range(0, len(signature), max(1, len(signature) // 16)):
        flipped = bytearray(signature)
        flipped[index] ^= 0x01
        assert direct(signing_input, bytes(flipped)) is reference(signing_input, bytes(flipped))
        assert direct(signing_input, bytes(flipped)) is False
    for bad in (b"", signature[:-1], signature + b"\x00", b"\xff" * 1024):
        assert direct(signing_input, bad) is reference(signing_input, bad) is False
