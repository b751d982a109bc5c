"""Published JWS vectors through ``verify_jws``: Wycheproof and the RFC 7520 cookbook.

Every Wycheproof case runs, one test per ``tcId``. No ``invalid`` case may be
accepted. ``valid`` cases must verify, except the ones our strict verifier
refuses on purpose, listed in :data:`STRICT_REFUSALS` with the code they get;
each listed case is asserted to be refused with that code, so the list cannot
go stale.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS
from verifier.errors import VerifierError
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore
from verifier.tokens import verify_jws

WYCHEPROOF = Path("wycheproof/testvectors_v1/json_web_signature_test.json")
COOKBOOK = Path("rfc7520")

#: Valid Wycheproof cases our strict verifier refuses: ``tcId -> "code: why"``.
STRICT_REFUSALS: dict[int, str] = {
    259: "token_malformed: empty payload (RS256); compact JWS with detached content is refused",
    264: "token_malformed: empty payload (RS384); compact JWS with detached content is refused",
    268: "token_malformed: empty payload (RS512); compact JWS with detached content is refused",
    272: "token_malformed: empty payload (PS256); compact JWS with detached content is refused",
    320: "token_malformed: empty payload (PS384); compact JWS with detached content is refused",
    325: "token_malformed: empty payload (PS512); compact JWS with detached content is refused",
    346: "algorithm_not_allowed: the JWK says PS256, the token PS384 (one key, one algorithm)",
    350: "algorithm_not_allowed: the JWK says PS256, the token PS384 (one key, one algorithm)",
    347: "jwks_invalid: the JWK's alg 'ES521' is not an algorithm name, so the key is unusable",
    351: "jwks_invalid: the JWK's alg 'ES521' is not an algorithm name, so the key is unusable",
    372: "token_malformed: '?' in the header segment is not base64url (no lenient decoding)",
    373: "token_malformed: '?' in the payload segment is not base64url (no lenient decoding)",
}


def _pad_signature(jws: str) -> str:
    header, payload, signature = jws.split(".")
    return f"{header}.{payload}.{signature}="


def _pad_payload(jws: str) -> str:
    header, payload, signature = jws.split(".")
    return f"{header}.{payload}==.{signature}"


#: Invalid cases whose ``jws`` is byte-identical to a valid case in the same file
#: (upstream C2SP/wycheproof#236: the padding the comment names was lost). No
#: verifier can refuse them without refusing the valid twin, so the test asserts
#: the twin still exists and that the token the comment describes is refused.
VECTOR_DEFECTS: dict[int, tuple[str, Callable[[str], str]]] = {
    367: ("invalidBase64Padding: same jws as tcId 357; '=' after the MAC", _pad_signature),
    370: ("invalidBase64PaddingInPayload: same jws as tcId 357; '==' in the payload", _pad_payload),
}


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _wycheproof_document() -> dict[str, Any] | None:
    path = VECTORS / WYCHEPROOF
    if not path.is_file():
        return None
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


def _wycheproof_params() -> list[Any]:
    document = _wycheproof_document()
    if document is None:
        # The `vectors` fixture turns this into a clear skip (or a CI failure).
        return [pytest.param(None, None, id="vectors-absent")]
    return [
        pytest.param(group, case, id=f"tc{case['tcId']}")
        for group in document["testGroups"]
        for case in group["tests"]
    ]


def group_keys(group: dict[str, Any]) -> KeyStore:
    """The group's public key through the JWKS model, or its explicit HMAC secret."""
    public = group.get("public")
    if public is not None:
        return KeyStore(parse_jwks({"keys": [public]}))
    secret = group["private"]
    assert secret["kty"] == "oct"
    return KeyStore(None, hs_secret=b64url_decode(secret["k"]), algorithms=[secret["alg"]])


def run_case(group: dict[str, Any], jws: str) -> VerifierError | bytes:
    """The payload when the case verifies, else the error (key loading included)."""
    try:
        _, payload = verify_jws(jws, group_keys(group))
    except VerifierError as err:
        return err
    return payload


def expected_code(reason: str) -> str:
    return reason.split(":", 1)[0]


@pytest.mark.parametrize(("group", "case"), _wycheproof_params())
def test_wycheproof_jws_case(vectors: Path, group: dict[str, Any], case: dict[str, Any]) -> None:
    tc_id, comment = case["tcId"], case["comment"]

    outcome = run_case(group, case["jws"])

    if tc_id in VECTOR_DEFECTS:
        reason, intended = VECTOR_DEFECTS[tc_id]
        assert case["result"] == "invalid"
        assert isinstance(outcome, bytes), f"tcId {tc_id} is no longer identical to a valid case"
        refused = run_case(group, intended(case["jws"]))
        assert isinstance(refused, VerifierError), f"tcId {tc_id} ({reason}) was accepted"
        assert refused.code == "token_malformed"
    elif case["result"] == "invalid":
        assert isinstance(outcome, VerifierError), f"invalid tcId {tc_id} ({comment}) was accepted"
    elif tc_id in STRICT_REFUSALS:
        reason = STRICT_REFUSALS[tc_id]
        assert isinstance(outcome, VerifierError), f"tcId {tc_id} is listed as refused: {reason}"
        assert outcome.code == expected_code(reason)
    else:
        assert not isinstance(outcome, VerifierError), f"valid tcId {tc_id} ({comment}): {outcome}"
        assert outcome == b64url_decode(case["jws"].split(".")[1])


def test_wycheproof_lists_name_real_cases(vectors: Path) -> None:
    document = _wycheproof_document()
    assert document is not None
    cases = {case["tcId"]: case for group in document["testGroups"] for case in group["tests"]}
    assert len(cases) == document["numberOfTests"]
    assert {cases[tc_id]["result"] for tc_id in STRICT_REFUSALS} == {"valid"}
    assert {cases[tc_id]["result"] for tc_id in VECTOR_DEFECTS} == {"invalid"}
    valid_jws = {case["jws"] for case in cases.values() if case["result"] == "valid"}
    assert all(cases[tc_id]["jws"] in valid_jws for tc_id in VECTOR_DEFECTS)


# -- RFC 7520 (JOSE cookbook) ---------------------------------------------------


def cookbook(vectors: Path, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((vectors / COOKBOOK / name).read_text("utf-8"))
    return document


def public_store(vectors: Path, key_file: str, **options: Any) -> KeyStore:
    return KeyStore(parse_jwks({"keys": [cookbook(vectors, key_file)]}), **options)


def refusal(token: str, keys: KeyStore) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        verify_jws(token, keys)
    return info.value


def cookbook_hmac_store(vectors: Path) -> KeyStore:
    key = cookbook(vectors, "jwk/3_5.symmetric_key_mac_computation.json")
    return KeyStore(None, hs_secret=b64url_decode(key["k"]), algorithms=["HS256"])


@pytest.mark.parametrize(
    ("example", "key_file", "options"),
    [
        pytest.param(
            "jws/4_1.rsa_v15_signature.json", "jwk/3_3.rsa_public_key.json", {}, id="RS256"
        ),
        pytest.param(
            "jws/4_2.rsa-pss_signature.json",
            "jwk/3_3.rsa_public_key.json",
            {"rsa_alg": "PS384"},
            id="PS384",
        ),
        pytest.param("jws/4_3.ecdsa_signature.json", "jwk/3_1.ec_public_key.json", {}, id="ES512"),
    ],
)
def test_rfc7520_signature_verifies_with_its_public_key(
    vectors: Path, example: str, key_file: str, options: dict[str, Any]
) -> None:
    document = cookbook(vectors, example)

    header, payload = verify_jws(
        document["output"]["compact"], public_store(vectors, key_file, **options)
    )

    assert header == document["signing"]["protected"]
    assert payload == document["input"]["payload"].encode("utf-8")


def test_rfc7520_pss_example_is_refused_when_the_rsa_key_is_bound_to_rs256(
    vectors: Path,
) -> None:
    # The cookbook RSA key has no "alg": auth.rsa_alg (RS256 by default) decides, not the token.
    document = cookbook(vectors, "jws/4_2.rsa-pss_signature.json")

    err = refusal(
        document["output"]["compact"], public_store(vectors, "jwk/3_3.rsa_public_key.json")
    )

    assert err.code == "algorithm_not_allowed"


def test_rfc7520_hmac_example_verifies_with_the_explicit_secret(vectors: Path) -> None:
    document = cookbook(vectors, "jws/4_4.hmac-sha2_integrity_protection.json")

    _, payload = verify_jws(document["output"]["compact"], cookbook_hmac_store(vectors))

    assert payload == document["input"]["payload"].encode("utf-8")


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_rfc8037_ed25519_example_verifies(vectors: Path, alg: str) -> None:
    document = cookbook(vectors, "curve25519/jws.json")
    public = {k: v for k, v in document["input"]["key"].items() if k != "d"}
    if alg != "EdDSA":
        public["alg"] = alg
    keys = KeyStore(parse_jwks({"keys": [public]}))

    header, payload = verify_jws(document["output"]["compact"], keys)

    assert header == {"alg": "EdDSA"}
    assert payload == document["input"]["payload"].encode("utf-8")


def test_rfc7797_unencoded_payload_in_compact_form_is_refused(vectors: Path) -> None:
    document = cookbook(vectors, "rfc7797/hmac-sha2_b64_false.json")
    token = document["output"]["compact"]
    secret = b64url_decode(document["input"]["key"]["k"])

    with_secret = refusal(token, KeyStore(None, hs_secret=secret, algorithms=["HS256"]))
    without_secret = refusal(token, public_store(vectors, "jwk/3_3.rsa_public_key.json"))

    # The header is judged before any key is looked up, so both refuse the same way.
    assert with_secret.code == "header_invalid"
    assert without_secret.code == "header_invalid"


def test_rfc7797_json_only_example_is_refused(vectors: Path) -> None:
    document = cookbook(vectors, "rfc7797/4.2.hmac-sha2_b64_false.json")
    secret = b64url_decode(document["input"]["key"]["k"])
    keys = KeyStore(None, hs_secret=secret, algorithms=["HS256"])
    signing = document["signing"]
    # Its payload "$.02" holds a '.', so the compact form has four segments.
    compact = (
        f"{signing['protected_b64u']}.{signing['sig-input'].split('.', 1)[1]}.{signing['sig']}"
    )
    # The same header over an encodable payload still says b64=false.
    encodable = f"{signing['protected_b64u']}.JC4wMg.{signing['sig']}"

    assert refusal(compact, keys).code == "token_malformed"
    assert refusal(encodable, keys).code == "header_invalid"
    for form in ("json", "json_flat"):
        assert refusal(json.dumps(document["output"][form]), keys).code == "token_malformed"


def test_rfc7520_detached_content_is_refused_as_malformed(vectors: Path) -> None:
    document = cookbook(vectors, "jws/4_5.signature_with_detached_content.json")
    compact = document["output"]["compact"]
    assert compact.split(".")[1] == ""

    assert refusal(compact, cookbook_hmac_store(vectors)).code == "token_malformed"


@pytest.mark.parametrize(
    "example",
    [
        "jws/4_1.rsa_v15_signature.json",
        "jws/4_6.protecting_specific_header_fields.json",
        "jws/4_7.protecting_content_only.json",
        "jws/4_8.multiple_signatures.json",
    ],
)
def test_rfc7520_json_serializations_are_refused_as_malformed(vectors: Path, example: str) -> None:
    output = cookbook(vectors, example)["output"]
    keys = cookbook_hmac_store(vectors)

    for form in ("json", "json_flat"):
        if form in output:
            assert refusal(json.dumps(output[form]), keys).code == "token_malformed"
