"""The JWKS model (verifier/jwks.py) and strict key selection (verifier/keys.py).

Documents are shaped like what real issuers publish (Microsoft Entra, Keycloak,
better-auth, Supabase), with keys generated here, so every rule is checked
against the quirks it exists for.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from verifier.errors import AlgorithmNotAllowed, JWKSInvalid, KeyNotFound, VerifierError
from verifier.jwks import JWKSet, PublicJWK, SkippedKey, b64url_encode, parse_jwks
from verifier.keys import KeyStore
from verifier.tokens import verify_jws

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
    "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
    "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
    "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_E = "AQAB"
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
RFC7638_KEY = {"kty": "RSA", "n": RFC7638_N, "e": RFC7638_E, "alg": "RS256", "kid": "2011-04-29"}

# Any base64 strings: jwtedge never follows or parses x5c.
X5C = ["MIIDBTCCAe2gAwIBAgIQN33ROaIJ6bJBWDCxtmJEbjANBgkqhkiG9w0BAQsFADAt", "QUJDRA=="]
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


# -- keys ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> list[RSAKey]:
    return [RSAKey.generate_key(2048) for _ in range(3)]


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ECKey]:
    return {crv: ECKey.generate_key(crv) for crv in ("P-256", "P-384", "P-521")}


@pytest.fixture(scope="module")
def ed_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def pub(key: RSAKey | ECKey | OKPKey, **members: Any) -> dict[str, Any]:
    """The key's public JWK plus (or overridden by) ``members``."""
    return {**key.as_dict(private=False), **members}


def weak_rsa_jwk(kid: str) -> dict[str, Any]:
    # cryptography directly: joserfc warns on purpose when asked for 1024 bits.
    numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()  # noqa: S505
    return {
        "kty": "RSA",
        "kid": kid,
        "n": b64url_encode(numbers.n.to_bytes(128, "big")),
        "e": "AQAB",
    }


def b64(data: bytes) -> str:
    return b64url_encode(data)


def sign(key: RSAKey | ECKey | OKPKey | OctKey, header: dict[str, Any]) -> str:
    """A compact JWS over a small payload with exactly this header."""
    header_b64 = b64(json.dumps(header).encode())
    payload_b64 = b64(b'{"sub":"u1"}')
    signing_input = f"{header_b64}.{payload_b64}".encode()
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input, key)
    return f"{header_b64}.{payload_b64}.{b64(signature)}"


def refused(document: object) -> JWKSInvalid:
    with pytest.raises(JWKSInvalid) as info:
        parse_jwks(document)
    return info.value


def skipped_of(exc: JWKSInvalid) -> list[SkippedKey]:
    return list(exc.context["skipped"])


# -- issuer-shaped documents ---------------------------------------------------


def test_entra_keys_without_alg_and_with_x5c_x5t_issuer_are_usable(rsa_keys: list[RSAKey]) -> None:
    tenant = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
    document = {
        "keys": [
            pub(rsa_keys[0], use="sig", kid="nOo3ZDrODXEK1jKWhXslHR_KXEg", x5t="nOo3ZD", x5c=X5C)
            | {"issuer": tenant},
            pub(rsa_keys[1], use="sig", kid="L1KfKFI_jnXbwWc22xZxw1sUHH0", x5t="L1KfKF", x5c=X5C)
            | {"issuer": tenant, "cloud_instance_name": "microsoftonline.com"},
        ]
    }

    jwks = parse_jwks(document)

    assert jwks.kids == ("L1KfKFI_jnXbwWc22xZxw1sUHH0", "nOo3ZDrODXEK1jKWhXslHR_KXEg")
    assert all(key.alg is None and key.kty == "RSA" for key in jwks.keys)
    assert jwks.skipped == ()
    for key in jwks.keys:
        assert {name for name, _ in key.members} == {"kty", "kid", "n", "e"}


def test_keycloak_enc_key_listed_first_is_skipped_and_named(rsa_keys: list[RSAKey]) -> None:
    document = {
        "keys": [
            pub(rsa_keys[0], kid="kc-enc", use="enc", alg="RSA-OAEP", x5c=X5C, x5t="abc")
            | {"x5t#S256": "def"},
            pub(rsa_keys[1], kid="kc-sig", use="sig", alg="RS256", x5c=X5C, x5t="ghi"),
        ]
    }

    jwks = parse_jwks(document)

    assert jwks.kids == ("kc-sig",)
    assert jwks.keys[0].alg == "RS256"
    [skipped] = jwks.skipped
    assert (skipped.index, skipped.kid, skipped.kty) == (0, "kc-enc", "RSA")
    assert "enc" in skipped.reason
    assert skipped.describe().startswith("kc-enc (RSA): ")


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_better_auth_and_telegram_ed25519_keys_are_usable(ed_key: OKPKey, alg: str) -> None:
    jwks = parse_jwks({"keys": [pub(ed_key, alg=alg, kid="ba-1")]})

    [key] = jwks.keys
    assert (key.kty, key.crv, key.alg, key.kid) == ("OKP", "Ed25519", alg, "ba-1")
    assert key.key_size == 256


def test_supabase_key_with_use_sig_and_key_ops_verify_is_usable(ec_keys: dict[str, ECKey]) -> None:
    member = pub(ec_keys["P-256"], alg="ES256", kid="sb-1", use="sig", key_ops=["verify"], ext=True)

    jwks = parse_jwks({"keys": [member]})

    assert jwks.kids == ("sb-1",)
    assert jwks.keys[0].crv == "P-256"


@pytest.mark.parametrize("key_ops", [["sign"], ["encrypt", "wrapKey"], [], "verify"])
def test_key_ops_without_verify_is_skipped(
    ec_keys: dict[str, ECKey], rsa_keys: list[RSAKey], key_ops: object
) -> None:
    document = {
        "keys": [
            pub(ec_keys["P-256"], kid="sb-ops", use="sig", key_ops=key_ops),
            pub(rsa_keys[0], kid="ok"),
        ]
    }

    jwks = parse_jwks(document)

    assert jwks.kids == ("ok",)
    assert [(s.kid, s.reason) for s in jwks.skipped] == [
        ("sb-ops", "key_ops does not include 'verify'")
    ]


@pytest.mark.parametrize("use", ["enc", "SIG", ""])
def test_use_other_than_sig_is_skipped(rsa_keys: list[RSAKey], use: str) -> None:
    jwks = parse_jwks({"keys": [pub(rsa_keys[0], kid="u", use=use), pub(rsa_keys[1], kid="ok")]})

    assert jwks.kids == ("ok",)
    assert [s.kid for s in jwks.skipped] == ["u"]


# -- key material quirks -------------------------------------------------------


def _standard_b64(value: str, *, leading_zero: bool = False) -> str:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if leading_zero:
        raw = b"\x00" + raw
    return base64.b64encode(raw).decode()


def test_rsa_modulus_with_a_leading_zero_byte_canonicalizes_like_the_clean_form() -> None:
    raw_n = base64.urlsafe_b64decode(RFC7638_N + "==")
    zero_padded = {**RFC7638_KEY, "n": b64url_encode(b"\x00" + raw_n)}

    quirky = parse_jwks({"keys": [zero_padded]})
    clean = parse_jwks({"keys": [RFC7638_KEY]})

    assert quirky.keys[0].to_dict()["n"] == RFC7638_N
    assert quirky.canonical_json() == clean.canonical_json()
    assert quirky.keys[0].thumbprint == RFC7638_THUMBPRINT


def test_padding_and_standard_alphabet_canonicalize_like_the_clean_form() -> None:
    standard_n = _standard_b64(RFC7638_N)
    # The RFC's modulus has '-' and '_', so its standard form has '+' and '/'.
    assert "+" in standard_n
    assert "/" in standard_n
    assert standard_n.endswith("=")
    quirky_key = {**RFC7638_KEY, "n": standard_n, "e": "AQAB="}

    quirky = parse_jwks({"keys": [quirky_key]})

    assert quirky.canonical_json() == parse_jwks({"keys": [RFC7638_KEY]}).canonical_json()


def test_leading_zero_padding_and_standard_alphabet_together_are_usable() -> None:
    quirky_key = {**RFC7638_KEY, "n": _standard_b64(RFC7638_N, leading_zero=True)}

    jwks = parse_jwks({"keys": [quirky_key]})

    assert jwks.keys[0].to_dict()["n"] == RFC7638_N
    assert jwks.keys[0].key_size == 2048


def test_ec_coordinate_with_a_leading_zero_byte_canonicalizes_like_the_clean_form(
    ec_keys: dict[str, ECKey],
) -> None:
    clean = pub(ec_keys["P-256"], kid="ec")
    raw_x = base64.urlsafe_b64decode(clean["x"] + "=")
    quirky = {**clean, "x": base64.b64encode(b"\x00" + raw_x).decode()}

    assert (
        parse_jwks({"keys": [quirky]}).canonical_json()
        == parse_jwks({"keys": [clean]}).canonical_json()
    )


# -- skipped keys --------------------------------------------------------------


def _rsa_with(rsa_keys: list[RSAKey], **members: Any) -> dict[str, Any]:
    return pub(rsa_keys[2], **{"kid": "bad", **members})


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        pytest.param(lambda keys: weak_rsa_jwk("bad"), "1024 bits", id="rsa-1024"),
        pytest.param(
            lambda keys: pub(ECKey.generate_key("secp256k1"), kid="bad"),
            "secp256k1",
            id="ec-secp256k1",
        ),
        pytest.param(
            lambda keys: pub(OKPKey.generate_key("X25519"), kid="bad"), "X25519", id="okp-x25519"
        ),
        pytest.param(lambda keys: _rsa_with(keys, alg="none"), "'none'", id="alg-none"),
        pytest.param(lambda keys: _rsa_with(keys, alg="HS256"), "'HS256'", id="rsa-alg-hs256"),
        pytest.param(lambda keys: {"kty": "foo", "kid": "bad"}, "'foo'", id="unknown-kty"),
        pytest.param(lambda keys: {"kid": "bad", "n": "AQAB"}, "None", id="missing-kty"),
        pytest.param(lambda keys: _rsa_with(keys, e="AQ"), "e must be", id="rsa-e-1"),
        pytest.param(lambda keys: _rsa_with(keys, e="AQAA"), "e must be odd", id="rsa-e-even"),
        pytest.param(
            lambda keys: _rsa_with(keys, n=12345), "invalid key material", id="n-not-a-string"
        ),
        pytest.param(lambda keys: _rsa_with(keys, kid=""), "kid", id="empty-kid"),
    ],
)
def test_unusable_key_is_skipped_with_a_reason_and_named(
    rsa_keys: list[RSAKey], make_bad: Any, reason: str
) -> None:
    bad = make_bad(rsa_keys)
    document = {"keys": [pub(rsa_keys[0], kid="good"), bad]}

    jwks = parse_jwks(document)

    assert jwks.kids == ("good",)
    [skipped] = jwks.skipped
    assert skipped.index == 1
    assert skipped.kid == bad.get("kid")
    assert reason in skipped.reason


def test_ec_point_not_on_the_curve_is_skipped(
    ec_keys: dict[str, ECKey], rsa_keys: list[RSAKey]
) -> None:
    good = pub(ec_keys["P-256"], kid="ec")
    raw_y = bytearray(base64.urlsafe_b64decode(good["y"] + "="))
    raw_y[-1] ^= 1
    off_curve = {**good, "kid": "off", "y": b64url_encode(bytes(raw_y))}

    jwks = parse_jwks({"keys": [good, off_curve]})

    assert jwks.kids == ("ec",)
    assert [s.kid for s in jwks.skipped] == ["off"]
    assert "invalid key material" in jwks.skipped[0].reason


@pytest.mark.parametrize(
    ("crv", "alg"), [("P-256", "ES384"), ("P-384", "ES256"), ("P-521", "ES256K")]
)
def test_ec_alg_that_does_not_fit_the_curve_is_skipped(
    ec_keys: dict[str, ECKey], rsa_keys: list[RSAKey], crv: str, alg: str
) -> None:
    jwks = parse_jwks({"keys": [pub(ec_keys[crv], kid="ec", alg=alg), pub(rsa_keys[0], kid="r")]})

    assert jwks.kids == ("r",)
    assert "does not fit curve" in jwks.skipped[0].reason


# -- sets refused whole --------------------------------------------------------


@pytest.mark.parametrize("member", PRIVATE_MEMBERS)
def test_private_member_on_a_usable_key_refuses_the_whole_set(
    rsa_keys: list[RSAKey], member: str
) -> None:
    leaky = pub(rsa_keys[0], kid="leaky", **{member: "AQAB"})

    exc = refused({"keys": [pub(rsa_keys[1], kid="ok"), leaky]})

    assert member in exc.message
    assert "AQAB" not in exc.message


@pytest.mark.parametrize("member", PRIVATE_MEMBERS)
def test_private_member_on_a_skipped_enc_key_refuses_the_whole_set(
    rsa_keys: list[RSAKey], member: str
) -> None:
    enc = pub(rsa_keys[0], kid="enc", use="enc", alg="RSA-OAEP", **{member: "AQAB"})

    refused({"keys": [enc, pub(rsa_keys[1], kid="ok")]})


def test_full_private_jwk_refuses_the_set_without_echoing_key_material(
    rsa_keys: list[RSAKey],
) -> None:
    private = {**rsa_keys[0].as_dict(private=True), "kid": "priv"}
    exponent = str(private["d"])

    exc = refused({"keys": [pub(rsa_keys[1], kid="ok"), private]})

    assert exponent not in str(exc)
    assert exponent not in repr(exc)
    assert "key #1" in exc.message


@pytest.mark.parametrize(
    "oct_key",
    [
        {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64url_encode(b"s" * 32)},
        {"kty": "oct", "kid": "hmac-no-k"},
        {"kty": "oct", "kid": "aes", "use": "enc", "alg": "A256GCM", "k": b64url_encode(b"s" * 32)},
    ],
    ids=["hmac", "without-k", "aes-enc"],
)
def test_any_oct_key_refuses_the_whole_set(rsa_keys: list[RSAKey], oct_key: dict[str, Any]) -> None:
    exc = refused({"keys": [pub(rsa_keys[0], kid="ok"), oct_key]})

    assert "oct" in exc.message


def test_duplicate_kids_among_usable_keys_refuse_the_set(
    rsa_keys: list[RSAKey], ec_keys: dict[str, ECKey]
) -> None:
    exc = refused({"keys": [pub(rsa_keys[0], kid="same"), pub(ec_keys["P-256"], kid="same")]})

    assert "duplicate kid" in exc.message


def test_duplicate_kid_where_one_key_is_skipped_is_fine(rsa_keys: list[RSAKey]) -> None:
    document = {
        "keys": [
            pub(rsa_keys[0], kid="same", use="enc", alg="RSA-OAEP"),
            pub(rsa_keys[1], kid="same", use="sig", alg="RS256"),
        ]
    }

    jwks = parse_jwks(document)

    assert jwks.kids == ("same",)
    assert [s.kid for s in jwks.skipped] == ["same"]


def test_set_with_no_usable_key_is_refused_and_names_each_skipped_key(
    rsa_keys: list[RSAKey],
) -> None:
    document = {
        "keys": [
            pub(rsa_keys[0], kid="enc", use="enc"),
            weak_rsa_jwk("weak"),
            pub(OKPKey.generate_key("X25519"), kid="xdh"),
        ]
    }

    exc = refused(document)

    assert "no usable signing key" in exc.message
    skipped = skipped_of(exc)
    assert [(s.index, s.kid) for s in skipped] == [(0, "enc"), (1, "weak"), (2, "xdh")]
    assert all(s.reason for s in skipped)


def test_empty_set_is_refused() -> None:
    exc = refused({"keys": []})

    assert skipped_of(exc) == []


def test_extra_members_of_the_document_and_the_keys_are_ignored(rsa_keys: list[RSAKey]) -> None:
    document = {
        "keys": [pub(rsa_keys[0], kid="k", use="sig", x5c=X5C, foo={"bar": [1]}, ext=True)],
        "issuer": "https://issuer.example",
        "cache_max_age": 3600,
    }

    jwks = parse_jwks(document)

    assert jwks.kids == ("k",)
    assert list(jwks.to_dict()["keys"][0]) == ["kty", "kid", "n", "e"]


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        b"\xff\xfe",
        "",
        "[]",
        "null",
        '"keys"',
        "{}",
        '{"keys": {}}',
        '{"keys": "x"}',
        '{"keys": null}',
        '{"keys": [1]}',
        '{"keys": [[]]}',
        [],
        None,
        42,
    ],
)
def test_non_json_non_object_or_missing_keys_is_refused(document: object) -> None:
    refused(document)


def test_document_is_accepted_as_str_bytes_or_dict(rsa_keys: list[RSAKey]) -> None:
    document = {"keys": [pub(rsa_keys[0], kid="k")]}
    text = json.dumps(document)

    canonical = {
        parse_jwks(document).canonical_json(),
        parse_jwks(text).canonical_json(),
        parse_jwks(text.encode()).canonical_json(),
        JWKSet.parse(text).canonical_json(),
    }

    assert len(canonical) == 1


# -- canonical form ------------------------------------------------------------


def test_same_keys_in_any_order_and_with_quirks_give_identical_bytes_and_sha256(
    rsa_keys: list[RSAKey], ec_keys: dict[str, ECKey], ed_key: OKPKey
) -> None:
    clean = [
        pub(rsa_keys[0], kid="b-rsa", alg="RS256"),
        pub(ec_keys["P-384"], kid="c-ec", alg="ES384"),
        pub(ed_key, kid="a-ed", alg="Ed25519"),
    ]
    quirky_rsa = {
        **clean[0],
        "n": _standard_b64(clean[0]["n"], leading_zero=True),
        "use": "sig",
        "x5c": X5C,
    }
    quirky_ec = {**clean[1], "x": clean[1]["x"] + "=" * (-len(clean[1]["x"]) % 4), "foo": 1}
    quirky = [clean[2] | {"key_ops": ["verify"]}, quirky_ec, quirky_rsa]

    first = parse_jwks({"keys": clean})
    second = parse_jwks({"keys": quirky, "extra": True})

    assert first.canonical_json() == second.canonical_json()
    assert first.sha256 == second.sha256
    assert first.sha256 == hashlib.sha256(first.canonical_json().encode()).hexdigest()
    assert first.kids == ("a-ed", "b-rsa", "c-ec")


def test_canonical_json_is_compact_with_a_fixed_member_order(
    rsa_keys: list[RSAKey], ec_keys: dict[str, ECKey], ed_key: OKPKey
) -> None:
    # Members deliberately listed in a scrambled order.
    rsa_member = {"e": "AQAB", "alg": "PS256", "n": pub(rsa_keys[0])["n"], "kid": "r", "kty": "RSA"}
    ec = pub(ec_keys["P-521"])
    ec_member = {"y": ec["y"], "x": ec["x"], "crv": "P-521", "kid": "e", "kty": "EC"}
    ed_member = {"x": pub(ed_key)["x"], "alg": "EdDSA", "crv": "Ed25519", "kty": "OKP"}

    jwks = parse_jwks({"keys": [rsa_member, ec_member, ed_member]})
    text = jwks.canonical_json()

    assert " " not in text
    assert "\n" not in text
    orders = [list(member) for member in json.loads(text)["keys"]]
    # Sorted by kid; the kid-less key sorts first.
    assert orders == [
        ["kty", "alg", "crv", "x"],
        ["kty", "kid", "crv", "x", "y"],
        ["kty", "kid", "alg", "n", "e"],
    ]


def test_canonical_json_of_the_rfc7638_key_is_exact() -> None:
    jwks = parse_jwks({"keys": [RFC7638_KEY | {"use": "sig"}]})

    assert jwks.canonical_json() == (
        '{"keys":[{"kty":"RSA","kid":"2011-04-29","alg":"RS256",'
        f'"n":"{RFC7638_N}","e":"AQAB"}}]}}'
    )


def test_thumbprint_matches_the_rfc7638_example() -> None:
    jwks = parse_jwks({"keys": [RFC7638_KEY]})

    assert jwks.keys[0].thumbprint == RFC7638_THUMBPRINT
    assert jwks.thumbprints == {"2011-04-29": RFC7638_THUMBPRINT}


def test_kids_and_thumbprints_describe_the_usable_keys(
    rsa_keys: list[RSAKey], ec_keys: dict[str, ECKey]
) -> None:
    document = {
        "keys": [
            pub(rsa_keys[1], kid="z"),
            pub(ec_keys["P-256"], kid="m"),
            pub(rsa_keys[0], kid="skip", use="enc"),
        ]
    }

    jwks = parse_jwks(document)

    assert jwks.kids == ("m", "z")
    assert len(jwks) == 2
    assert jwks.thumbprints == {
        "m": ec_keys["P-256"].thumbprint(),
        "z": rsa_keys[1].thumbprint(),
    }
    assert isinstance(jwks.get("m"), PublicJWK)
    assert jwks.get("skip") is None


# -- KeyStore: one algorithm per key (RFC 8725 §3.1) ---------------------------


def store_for(*members: dict[str, Any], **options: Any) -> KeyStore:
    return KeyStore(parse_jwks({"keys": list(members)}), **options)


def code_of(token: str, store: KeyStore) -> str:
    with pytest.raises(VerifierError) as info:
        verify_jws(token, store)
    return info.value.code


def test_jwk_alg_wins_over_rsa_alg(rsa_keys: list[RSAKey]) -> None:
    store = store_for(pub(rsa_keys[0], kid="k", alg="PS384"), rsa_alg="RS256")

    assert store.key_for("k", "PS384").alg == "PS384"
    verify_jws(sign(rsa_keys[0], {"alg": "PS384", "kid": "k"}), store)
    with pytest.raises(AlgorithmNotAllowed):
        store.key_for("k", "RS256")


def test_rsa_key_without_alg_is_rs256_only_by_default(rsa_keys: list[RSAKey]) -> None:
    store = store_for(pub(rsa_keys[0], kid="k"))

    verify_jws(sign(rsa_keys[0], {"alg": "RS256", "kid": "k"}), store)
    assert code_of(sign(rsa_keys[0], {"alg": "PS256", "kid": "k"}), store) == (
        "algorithm_not_allowed"
    )


def test_rsa_alg_ps256_makes_rsa_keys_without_alg_ps256_only(rsa_keys: list[RSAKey]) -> None:
    store = store_for(pub(rsa_keys[0], kid="k"), rsa_alg="PS256")

    verify_jws(sign(rsa_keys[0], {"alg": "PS256", "kid": "k"}), store)
    for alg in ("RS256", "PS384", "RS512"):
        token = sign(rsa_keys[0], {"alg": alg, "kid": "k"})
        assert code_of(token, store) == "algorithm_not_allowed"


@pytest.mark.parametrize(
    ("crv", "alg"), [("P-256", "ES256"), ("P-384", "ES384"), ("P-521", "ES512")]
)
def test_ec_key_without_alg_uses_its_curves_algorithm(
    ec_keys: dict[str, ECKey], crv: str, alg: str
) -> None:
    store = store_for(pub(ec_keys[crv], kid="ec"))

    assert store.key_for("ec", alg).alg == alg
    verify_jws(sign(ec_keys[crv], {"alg": alg, "kid": "ec"}), store)
    for other in {"ES256", "ES384", "ES512", "RS256"} - {alg}:
        with pytest.raises(AlgorithmNotAllowed):
            store.key_for("ec", other)


@pytest.mark.parametrize("jwk_alg", [None, "Ed25519", "EdDSA"])
@pytest.mark.parametrize("token_alg", ["Ed25519", "EdDSA"])
def test_ed25519_key_accepts_both_eddsa_and_ed25519_tokens(
    ed_key: OKPKey, jwk_alg: str | None, token_alg: str
) -> None:
    member = pub(ed_key, kid="ed") if jwk_alg is None else pub(ed_key, kid="ed", alg=jwk_alg)
    store = store_for(member)

    assert store.key_for("ed", token_alg).alg == "Ed25519"
    header, _ = verify_jws(sign(ed_key, {"alg": token_alg, "kid": "ed"}), store)
    assert header["alg"] == token_alg


def test_ed25519_key_refuses_other_algorithms(ed_key: OKPKey) -> None:
    store = store_for(pub(ed_key, kid="ed"))

    for alg in ("ES256", "RS256", "Ed448"):
        with pytest.raises(AlgorithmNotAllowed):
            store.key_for("ed", alg)


def test_algorithm_outside_the_allowlist_is_not_allowed(
    rsa_keys: list[RSAKey], ec_keys: dict[str, ECKey]
) -> None:
    store = store_for(
        pub(rsa_keys[0], kid="r", alg="RS256"),
        pub(ec_keys["P-256"], kid="e"),
        algorithms=["ES256"],
    )

    assert code_of(sign(rsa_keys[0], {"alg": "RS256", "kid": "r"}), store) == (
        "algorithm_not_allowed"
    )
    verify_jws(sign(ec_keys["P-256"], {"alg": "ES256", "kid": "e"}), store)


def test_allowlist_naming_eddsa_allows_ed25519_keys(ed_key: OKPKey) -> None:
    store = store_for(pub(ed_key, kid="ed"), algorithms=["EdDSA"])

    verify_jws(sign(ed_key, {"alg": "Ed25519", "kid": "ed"}), store)


def test_unknown_kid_is_key_not_found(rsa_keys: list[RSAKey]) -> None:
    store = store_for(pub(rsa_keys[0], kid="k"))

    with pytest.raises(KeyNotFound) as info:
        store.key_for("other", "RS256")
    assert info.value.code == "key_not_found"
    assert code_of(sign(rsa_keys[1], {"alg": "RS256", "kid": "other"}), store) == "key_not_found"


def test_token_without_kid_uses_the_only_key_that_fits_its_alg(
    rsa_keys: list[RSAKey], ec_keys: dict[str, ECKey]
) -> None:
    store = store_for(pub(rsa_keys[0], kid="r"), pub(ec_keys["P-256"], kid="e"))

    assert store.key_for(None, "RS256").kid == "r"
    assert store.key_for(None, "ES256").kid == "e"
    verify_jws(sign(rsa_keys[0], {"alg": "RS256"}), store)


def test_token_without_kid_is_refused_when_several_keys_fit(rsa_keys: list[RSAKey]) -> None:
    store = store_for(pub(rsa_keys[0], kid="a"), pub(rsa_keys[1], kid="b"))

    with pytest.raises(KeyNotFound):
        store.key_for(None, "RS256")
    assert code_of(sign(rsa_keys[0], {"alg": "RS256"}), store) == "key_not_found"


def test_token_without_kid_is_refused_when_no_key_fits(rsa_keys: list[RSAKey]) -> None:
    store = store_for(pub(rsa_keys[0], kid="a"))

    with pytest.raises(KeyNotFound):
        store.key_for(None, "ES256")


def test_keys_without_kid_are_found_by_alg(ec_keys: dict[str, ECKey]) -> None:
    store = store_for(pub(ec_keys["P-256"]), pub(ec_keys["P-384"]))

    assert store.key_for(None, "ES384").alg == "ES384"
    verify_jws(sign(ec_keys["P-256"], {"alg": "ES256"}), store)


def test_hs_algorithms_are_refused_without_hs_secret(rsa_keys: list[RSAKey]) -> None:
    secret = b"s" * 32
    token = sign(OctKey.import_key(secret), {"alg": "HS256", "kid": "k"})
    plain = store_for(pub(rsa_keys[0], kid="k"))
    listed = store_for(pub(rsa_keys[0], kid="k"), algorithms=["RS256", "HS256"])

    assert code_of(token, plain) == "algorithm_not_allowed"
    assert code_of(token, listed) == "algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs_algorithms_verify_with_hs_secret(rsa_keys: list[RSAKey], alg: str) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    store = store_for(pub(rsa_keys[0], kid="k"), hs_secret=secret)

    verify_jws(sign(OctKey.import_key(secret), {"alg": alg}), store)
    wrong = sign(OctKey.import_key(secret[::-1]), {"alg": alg})
    assert code_of(wrong, store) == "signature_invalid"
    # The asymmetric keys keep working beside the secret.
    verify_jws(sign(rsa_keys[0], {"alg": "RS256", "kid": "k"}), store)


def test_hs_secret_alone_needs_no_key_set() -> None:
    secret = b"k" * 48
    store = KeyStore(None, hs_secret=secret, algorithms=["HS384"])

    verify_jws(sign(OctKey.import_key(secret), {"alg": "HS384"}), store)
    assert code_of(sign(OctKey.import_key(secret), {"alg": "HS256"}), store) == (
        "algorithm_not_allowed"
    )


@pytest.mark.parametrize("secret", [b"", b"short"])
def test_keystore_refuses_an_hs_secret_shorter_than_32_bytes(secret: bytes) -> None:
    with pytest.raises((ValueError, VerifierError)):
        KeyStore(None, hs_secret=secret, algorithms=["HS256"])


@pytest.mark.parametrize("e", ["AQ*AB", "AQ!AB", "A=QAB"])
def test_key_material_with_characters_outside_base64_is_skipped(
    rsa_keys: list[RSAKey], e: str
) -> None:
    document = {"keys": [pub(rsa_keys[0], kid="good"), pub(rsa_keys[1], kid="bad", e=e)]}

    jwks = parse_jwks(document)

    assert jwks.kids == ("good",)
    assert "invalid key material" in jwks.skipped[0].reason
