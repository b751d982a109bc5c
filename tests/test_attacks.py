"""Hostile tokens, one test per attack, each a real signed token with an asserted code.

The clock is injected (``FIXED``) and tokens are minted with ``iat`` near it, so
nothing depends on the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from tests.conftest import ISSUER, make_config
from verifier import jws as jws_module
from verifier.errors import JWKSInvalid, VerifierError
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore
from verifier.testing import DevIssuer
from verifier.tokens import MAX_HEADER_MEMBERS, MAX_NESTING_DEPTH, TokenVerifier

FIXED = 1_700_000_000
LEEWAY = 30
HS_SECRET = "an-hs256-secret-that-is-long-enough-0123456789"


@pytest.fixture(scope="module")
def other() -> DevIssuer:
    """An attacker's issuer: same issuer URL, same kid naming scheme, its own keys."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


def verifier(issuer: DevIssuer, *, now: float = FIXED, **auth: Any) -> TokenVerifier:
    return TokenVerifier.from_config(make_config(issuer, **auth), now=lambda: now)


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        call(*args, **kwargs)
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(issuer: DevIssuer, alg: str) -> dict[str, Any]:
    kid = issuer.kids(alg)[-1]
    return next(dict(key) for key in issuer.jwks()["keys"] if key["kid"] == kid)


def claims(issuer: DevIssuer, **changes: Any) -> dict[str, Any]:
    """Access-token claims valid at ``FIXED``; a None value removes a claim."""
    values: dict[str, Any] = {
        "iss": issuer.issuer,
        "sub": "u1",
        "aud": "api",
        "iat": FIXED,
        "exp": FIXED + 300,
        "scope": "openid",
    }
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def header(issuer: DevIssuer, key: str = "RS256", **members: Any) -> dict[str, Any]:
    """A header for the issuer's newest ``key`` (an algorithm); ``members`` override."""
    return {"alg": key, "kid": issuer.kids(key)[-1], "typ": "at+jwt", **members}


def signed(issuer: DevIssuer, hdr: Any, payload: Any = None, *, alg: str = "RS256") -> str:
    """Sign ``hdr`` exactly as given with the issuer's real key of ``alg``."""
    body = claims(issuer) if payload is None else payload
    return issuer.sign(body, header=hdr, kid=issuer.kids(alg)[-1], alg=alg)


def access(issuer: DevIssuer, **kwargs: Any) -> str:
    kwargs.setdefault("iat", FIXED)
    return issuer.access_token("u1", **kwargs)


def id_token(issuer: DevIssuer, **kwargs: Any) -> str:
    kwargs.setdefault("iat", FIXED)
    return issuer.id_token("u1", **kwargs)


def hs256(hdr: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(hdr).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def replace_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


# -- alg: none ---------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("with_signature", [False, True], ids=["empty-sig", "real-sig"])
def test_alg_none_is_refused_in_any_case_with_or_without_a_signature(
    issuer: DevIssuer, spelling: str, with_signature: bool
) -> None:
    hdr = {"alg": spelling, "kid": issuer.kids("RS256")[-1], "typ": "at+jwt"}
    if with_signature:
        token = signed(issuer, hdr)
    else:
        token = issuer.sign(claims(issuer), header=hdr, alg="none")
        assert token.endswith(".")

    assert refused(verifier(issuer).verify_access, token).code == "algorithm_not_allowed"


# -- algorithm confusion ---------------------------------------------------------


def rsa_public_secrets(issuer: DevIssuer) -> dict[str, bytes]:
    jwk = public_jwk(issuer, "RS256")
    return {
        "pem": RSAKey.import_key(jwk).as_pem(private=False),
        "jwk-json": json.dumps(jwk).encode(),
    }


@pytest.mark.parametrize("secret_kind", ["pem", "jwk-json"])
def test_hs256_keyed_with_the_rsa_public_key_is_refused_without_hs_secret(
    issuer: DevIssuer, secret_kind: str
) -> None:
    secret = rsa_public_secrets(issuer)[secret_kind]
    token = hs256(header(issuer, "RS256", alg="HS256"), claims(issuer), secret)

    assert refused(verifier(issuer).verify_access, token).code == "algorithm_not_allowed"


@pytest.mark.parametrize("secret_kind", ["pem", "jwk-json"])
@pytest.mark.parametrize("with_kid", [True, False], ids=["kid", "no-kid"])
def test_hs256_keyed_with_the_rsa_public_key_fails_against_another_hs_secret(
    issuer: DevIssuer, secret_kind: str, with_kid: bool
) -> None:
    secret = rsa_public_secrets(issuer)[secret_kind]
    hdr = header(issuer, "RS256", alg="HS256")
    if not with_kid:
        del hdr["kid"]
    token = hs256(hdr, claims(issuer), secret)

    err = refused(verifier(issuer, hs_secret=HS_SECRET).verify_access, token)

    assert err.code == "signature_invalid"


def test_hs256_with_the_configured_secret_verifies(issuer: DevIssuer) -> None:
    # Control for the two tests above: the HMAC path itself works.
    token = hs256({"alg": "HS256", "typ": "at+jwt"}, claims(issuer), HS_SECRET.encode())

    assert verifier(issuer, hs_secret=HS_SECRET).verify_access(token)["sub"] == "u1"


def test_rsa_key_signing_ps256_under_the_rs256_kid_is_refused(issuer: DevIssuer) -> None:
    kid = issuer.kids("RS256")[-1]
    token = issuer.sign(
        claims(issuer), header={"alg": "PS256", "kid": kid, "typ": "at+jwt"}, kid=kid, alg="PS256"
    )

    assert refused(verifier(issuer).verify_access, token).code == "algorithm_not_allowed"


def test_es256_signature_under_an_es384_header_is_refused(issuer: DevIssuer) -> None:
    kid = issuer.kids("ES256")[-1]
    token = issuer.sign(
        claims(issuer), header={"alg": "ES384", "kid": kid, "typ": "at+jwt"}, kid=kid, alg="ES256"
    )

    assert refused(verifier(issuer).verify_access, token).code == "algorithm_not_allowed"


@pytest.mark.parametrize(("key_alg", "claimed"), [("ES256", "RS256"), ("Ed25519", "ES256")])
def test_header_alg_of_another_key_type_is_refused(
    issuer: DevIssuer, key_alg: str, claimed: str
) -> None:
    token = signed(issuer, header(issuer, key_alg, alg=claimed), alg=key_alg)

    assert refused(verifier(issuer).verify_access, token).code == "algorithm_not_allowed"


def rsa_store_without_alg(issuer: DevIssuer, **options: Any) -> TokenVerifier:
    jwk = public_jwk(issuer, "RS256")
    del jwk["alg"]
    keys = KeyStore(parse_jwks({"keys": [jwk]}), **options)
    return TokenVerifier(keys, issuer=issuer.issuer, audiences=("api",), now=lambda: FIXED)


def test_rsa_key_without_alg_is_bound_to_rsa_alg_not_to_the_token(issuer: DevIssuer) -> None:
    kid = issuer.kids("RS256")[-1]
    pss = access(issuer, kid=kid, alg="PS256")
    pkcs1 = access(issuer, kid=kid, alg="RS256")

    default = rsa_store_without_alg(issuer)
    pss_bound = rsa_store_without_alg(issuer, rsa_alg="PS256")

    assert refused(default.verify_access, pss).code == "algorithm_not_allowed"
    assert default.verify_access(pkcs1)["sub"] == "u1"
    assert pss_bound.verify_access(pss)["sub"] == "u1"
    assert refused(pss_bound.verify_access, pkcs1).code == "algorithm_not_allowed"


def test_algorithm_outside_the_allowlist_is_refused(issuer: DevIssuer) -> None:
    token = access(issuer, alg="ES256")

    err = refused(verifier(issuer, algorithms=["RS256"]).verify_access, token)

    assert err.code == "algorithm_not_allowed"


# -- kid -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid", ["../../etc/passwd", "x' OR '1'='1", "", "rs256-1", "\x00", "RS256-1-" + "a" * 8]
)
def test_unknown_kid_is_refused_as_key_not_found(issuer: DevIssuer, kid: str) -> None:
    token = signed(issuer, header(issuer, kid=kid))

    err = refused(verifier(issuer).verify_access, token)

    assert err.code == "key_not_found"


def test_10kb_kid_is_refused_by_the_size_cap_before_parsing(issuer: DevIssuer) -> None:
    token = signed(issuer, header(issuer, kid="k" * 10240))

    assert refused(verifier(issuer).verify_access, token).code == "token_too_large"


def test_10kb_kid_under_a_raised_cap_is_key_not_found_and_echoed_short(
    issuer: DevIssuer,
) -> None:
    token = signed(issuer, header(issuer, kid="k" * 10240))

    err = refused(verifier(issuer, max_token_bytes=65536).verify_access, token)

    assert err.code == "key_not_found"
    assert len(err.context["kid"]) <= 64


@pytest.mark.parametrize("kid", [7, 1.5, {"kid": "x"}, ["x"], True])
def test_kid_that_is_not_a_string_is_header_invalid(issuer: DevIssuer, kid: Any) -> None:
    token = signed(issuer, header(issuer, kid=kid))

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


def two_rsa_keys(issuer: DevIssuer, other: DevIssuer) -> TokenVerifier:
    jwks = parse_jwks({"keys": [*issuer.jwks()["keys"], public_jwk(other, "RS256")]})
    return TokenVerifier.from_config(make_config(issuer, jwks=jwks), now=lambda: FIXED)


def test_missing_kid_with_several_keys_for_the_alg_is_key_not_found(
    issuer: DevIssuer, other: DevIssuer
) -> None:
    token = signed(issuer, {"alg": "RS256", "typ": "at+jwt"})

    assert refused(two_rsa_keys(issuer, other).verify_access, token).code == "key_not_found"
    # With exactly one RS256 key baked, the same token is accepted.
    assert verifier(issuer).verify_access(token)["sub"] == "u1"


# -- headers that are never followed ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBszCCAVmgAwIBAgIUQ"]),
        ("jwk", {"kty": "oct", "k": "c2VjcmV0"}),
    ],
)
def test_key_reference_headers_are_header_invalid(issuer: DevIssuer, name: str, value: Any) -> None:
    token = signed(issuer, header(issuer, **{name: value}))

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


def test_embedded_attacker_jwk_with_a_baked_kid_is_header_invalid(
    issuer: DevIssuer, other: DevIssuer
) -> None:
    baked_kid = issuer.kids("RS256")[-1]
    attacker_jwk = {**public_jwk(other, "RS256"), "kid": baked_kid}
    hdr = {"alg": "RS256", "kid": baked_kid, "typ": "at+jwt", "jwk": attacker_jwk}
    token = other.sign(claims(issuer), header=hdr, kid=other.kids("RS256")[-1])

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


@pytest.mark.parametrize(
    "members",
    [
        {"crit": ["exp"], "exp": FIXED + 300},
        {"crit": ["urn:example:unknown"], "urn:example:unknown": True},
        {"crit": ["b64"], "b64": True},
        {"crit": []},
    ],
    ids=["exp", "urn", "b64-true", "empty"],
)
def test_crit_is_header_invalid(issuer: DevIssuer, members: dict[str, Any]) -> None:
    token = signed(issuer, header(issuer, **members))

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


@pytest.mark.parametrize(
    "members", [{"b64": False}, {"b64": False, "crit": ["b64"]}, {"b64": "false"}]
)
def test_b64_false_is_header_invalid(issuer: DevIssuer, members: dict[str, Any]) -> None:
    token = signed(issuer, header(issuer, **members))

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


@pytest.mark.parametrize(
    "hdr",
    [{"kid": "x"}, {"alg": 256}, {"alg": None}, {"alg": ["RS256"]}],
    ids=["missing", "number", "null", "list"],
)
def test_alg_that_is_missing_or_not_a_string_is_header_invalid(
    issuer: DevIssuer, hdr: dict[str, Any]
) -> None:
    token = signed(issuer, hdr)

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


@pytest.mark.parametrize("typ", [1, ["at+jwt"], {"t": "at+jwt"}])
def test_typ_that_is_not_a_string_is_header_invalid(issuer: DevIssuer, typ: Any) -> None:
    token = signed(issuer, header(issuer, typ=typ))

    assert refused(verifier(issuer).verify_access, token).code == "header_invalid"


# -- serialization -----------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 4, 5, 6])
def test_token_without_exactly_three_segments_is_malformed(issuer: DevIssuer, count: int) -> None:
    parts = access(issuer).split(".")
    token = ".".join((parts * 2)[:count])

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize("padding", ["=", "==", "==="])
def test_base64_padding_in_any_segment_is_malformed(
    issuer: DevIssuer, index: int, padding: str
) -> None:
    token = access(issuer)
    token = replace_segment(token, index, token.split(".")[index] + padding)

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize("blank", [" ", "\n", "\t", "\r\n"], ids=["space", "lf", "tab", "crlf"])
def test_whitespace_inside_a_segment_is_malformed(
    issuer: DevIssuer, index: int, blank: str
) -> None:
    token = access(issuer)
    segment = token.split(".")[index]
    token = replace_segment(token, index, segment[:8] + blank + segment[8:])

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


@pytest.mark.parametrize("blank", [" ", "\n"])
def test_whitespace_around_the_token_is_malformed(issuer: DevIssuer, blank: str) -> None:
    token = access(issuer)

    assert refused(verifier(issuer).verify_access, blank + token).code == "token_malformed"
    assert refused(verifier(issuer).verify_access, token + blank).code == "token_malformed"


def tokens_with_urlsafe_characters(issuer: DevIssuer) -> Iterator[str]:
    for _ in range(50):
        token = access(issuer)
        if "-" in token or "_" in token:
            yield token
            return
    pytest.fail("no token with '-' or '_' in 50 tries")


def test_standard_base64_alphabet_is_malformed(issuer: DevIssuer) -> None:
    token = next(tokens_with_urlsafe_characters(issuer))
    standard = token.translate(str.maketrans("-_", "+/"))
    assert standard != token

    assert refused(verifier(issuer).verify_access, standard).code == "token_malformed"


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize("char", ["é", "\u0430", "\u200b", "\U0001f600"])
def test_non_ascii_character_in_a_segment_is_malformed(
    issuer: DevIssuer, index: int, char: str
) -> None:
    token = access(issuer)
    segment = token.split(".")[index]
    token = replace_segment(token, index, segment[:4] + char + segment[4:])

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"
    encoded = token.encode("utf-8")
    assert refused(verifier(issuer).verify_access, encoded).code == "token_malformed"


@pytest.mark.parametrize("raw", [b'["RS256"]', b'"RS256"', b"null", b"7", b"{", b""])
def test_header_that_is_not_a_json_object_is_malformed(issuer: DevIssuer, raw: bytes) -> None:
    token = signed(issuer, raw)

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


@pytest.mark.parametrize("raw", [b'["u1"]', b'"u1"', b"null", b"1", b"{", b"\xff\xfe"])
def test_payload_that_is_not_a_json_object_is_malformed(issuer: DevIssuer, raw: bytes) -> None:
    token = signed(issuer, header(issuer), raw)

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


def test_deeply_nested_header_with_an_escape_is_refused_with_a_code(issuer: DevIssuer) -> None:
    kid = issuer.kids("RS256")[-1]
    depth = 1010  # below orjson's nesting limit, above CPython 3.11's recursion limit
    raw = f'{{"alg":"RS256","kid":"{kid}","x":"\\n","n":{"[" * depth}{"]" * depth}}}'
    token = signed(issuer, raw.encode())
    assert len(token) < 8192

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


# -- duplicate members ----------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        '{{"alg":"RS256","kid":"{kid}","alg":"RS256"}}',
        '{{"alg":"none","kid":"{kid}","alg":"RS256"}}',
        '{{"alg":"RS256","kid":"{kid}","kid":"{kid}"}}',
        '{{"alg":"RS256","kid":"{kid}","\\u0061lg":"RS256"}}',
        '{{"alg":"RS256","kid":"{kid}","\\u006bid":"other"}}',
        '{{"alg":"RS256","kid":"{kid}","typ":"JWT","t\\u0079p":"at+jwt"}}',
    ],
    ids=["same-value", "none-first", "kid", "escaped-alg", "escaped-kid", "escaped-typ"],
)
def test_header_with_duplicate_members_is_malformed(issuer: DevIssuer, template: str) -> None:
    raw = template.format(kid=issuer.kids("RS256")[-1]).encode()
    token = signed(issuer, raw)

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_duplicate_among_many_header_members_is_malformed(
    issuer: DevIssuer, position: str
) -> None:
    kid = issuer.kids("RS256")[-1]
    members = [f'"m{index:02d}":{index}' for index in range(28)]
    spot = {"first": 0, "middle": 14, "last": 28}[position]
    members.insert(spot, '"m07":"again"')
    raw = f'{{"alg":"RS256","kid":"{kid}",{",".join(members)}}}'.encode()

    error = refused(verifier(issuer).verify_access, signed(issuer, raw))

    assert error.code == "token_malformed"
    assert "duplicate" in error.message


def test_a_duplicate_inside_a_nested_header_value_is_malformed(issuer: DevIssuer) -> None:
    kid = issuer.kids("RS256")[-1]
    raw = f'{{"alg":"RS256","kid":"{kid}","ext":{{"a":1,"\u0061":2}}}}'.encode()

    assert refused(verifier(issuer).verify_access, signed(issuer, raw)).code == "token_malformed"


# -- structural limits (issue 17) -------------------------------------------------


def members_header(issuer: DevIssuer, count: int) -> dict[str, Any]:
    """A header with exactly ``count`` members: alg, kid, typ and fillers."""
    fillers = {f"x{index:02d}": index for index in range(count - 3)}
    return {**header(issuer), **fillers}


def test_a_header_with_32_members_verifies_and_33_is_malformed(issuer: DevIssuer) -> None:
    at_limit = signed(issuer, members_header(issuer, MAX_HEADER_MEMBERS))
    over = signed(issuer, members_header(issuer, MAX_HEADER_MEMBERS + 1))

    assert MAX_HEADER_MEMBERS == 32
    assert verifier(issuer).verify_access(at_limit)["sub"] == "u1"
    error = refused(verifier(issuer).verify_access, over)
    assert error.code == "token_malformed"
    assert "more than 32 members" in error.message


def test_header_members_of_nested_objects_count_toward_the_cap(issuer: DevIssuer) -> None:
    nested = {f"n{index:02d}": index for index in range(MAX_HEADER_MEMBERS - 3)}
    token = signed(issuer, {**header(issuer), "ext": nested})  # 4 + 29 = 33 members

    error = refused(verifier(issuer).verify_access, token)

    assert error.code == "token_malformed"
    assert "more than 32 members" in error.message


@pytest.mark.parametrize(
    "extra",
    [{"x5t#S256": "a:b:c"}, {"ext": {"a": [1, {"b": 2}]}}, {"url": "https://a.example:8443/x"}],
    ids=["colons-in-a-value", "nested-object", "url"],
)
def test_headers_that_take_the_exact_duplicate_check_still_verify(
    issuer: DevIssuer, extra: dict[str, Any]
) -> None:
    token = signed(issuer, header(issuer, kid="urn:kid:" + issuer.kids("RS256")[-1], **extra))
    roomy = TokenVerifier(
        KeyStore(parse_jwks({"keys": [{**public_jwk(issuer, "RS256"), "kid": header_kid(token)}]})),
        issuer=issuer.issuer,
        audiences=("api",),
        now=lambda: FIXED,
    )

    assert roomy.verify_access(token)["sub"] == "u1"


def header_kid(token: str) -> str:
    raw = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    kid: str = json.loads(raw)["kid"]
    return kid


def nested_claim(depth: int) -> Any:
    """A value that makes the payload ``depth`` levels deep (the payload object is level 1)."""
    value: Any = "leaf"
    for level in range(depth - 1):
        value = {"k": value} if level % 2 else [value]
    return value


def test_claims_nesting_32_levels_verify_and_33_are_malformed(issuer: DevIssuer) -> None:
    at_limit = signed(issuer, header(issuer), claims(issuer, deep=nested_claim(MAX_NESTING_DEPTH)))
    over = signed(issuer, header(issuer), claims(issuer, deep=nested_claim(MAX_NESTING_DEPTH + 1)))

    assert MAX_NESTING_DEPTH >= 16
    assert verifier(issuer).verify_access(at_limit)["sub"] == "u1"
    error = refused(verifier(issuer).verify_access, over)
    assert error.code == "token_malformed"
    assert "nests deeper" in error.message


def test_many_organizations_nested_like_real_issuers_verify(issuer: DevIssuer) -> None:
    """Stytch, Keycloak, Zitadel and PropelAuth nest 4 to 5 levels, often with
    many entries (more brackets than the cheap pre-check lets through)."""
    orgs = {
        f"org_{index}": {"roles": [{"name": "member", "perms": ["read", "write"]}]}
        for index in range(40)
    }
    token = signed(issuer, header(issuer), claims(issuer, **{"urn:zitadel:roles": orgs}))

    assert verifier(issuer).verify_access(token)["urn:zitadel:roles"]["org_3"]["roles"]


def test_a_header_nesting_deeper_than_the_limit_is_malformed(issuer: DevIssuer) -> None:
    token = signed(issuer, header(issuer, ext=nested_claim(MAX_NESTING_DEPTH + 1)))

    error = refused(verifier(issuer).verify_access, token)

    assert error.code == "token_malformed"
    assert "nests deeper" in error.message


def test_a_forged_token_never_enters_the_header_cache(issuer: DevIssuer, other: DevIssuer) -> None:
    hdr = header(issuer, nonce_member="forged-once")
    forged = other.sign(claims(issuer), header=hdr, kid=other.kids("RS256")[-1], alg="RS256")
    genuine = signed(issuer, header(issuer, nonce_member="genuine-once"))

    assert refused(verifier(issuer).verify_access, forged).code == "signature_invalid"
    assert forged.split(".")[0] not in jws_module._HEADERS.entries
    verifier(issuer).verify_access(genuine)
    assert genuine.split(".")[0] in jws_module._HEADERS.entries


def payload_with(issuer: DevIssuer, tail: str) -> bytes:
    """Valid claims as raw JSON, with ``tail`` members appended (duplicates allowed)."""
    body = json.dumps(claims(issuer), separators=(",", ":"))
    return (body[:-1] + "," + tail + "}").encode()


def test_payload_duplicate_members_are_read_last_wins(issuer: DevIssuer) -> None:
    token = signed(issuer, header(issuer), payload_with(issuer, '"sub":"u2","scope":"admin"'))

    verified = verifier(issuer).verify_access(token)

    assert verified["sub"] == "u2"
    assert verified["scope"] == "admin"


def test_payload_duplicate_exp_is_validated_on_the_last_value(issuer: DevIssuer) -> None:
    expired_last = signed(issuer, header(issuer), payload_with(issuer, f'"exp":{FIXED - 100}'))
    claims_expired_first = claims(issuer, exp=FIXED - 100)
    body = json.dumps(claims_expired_first, separators=(",", ":"))
    valid_last = signed(issuer, header(issuer), (body[:-1] + f',"exp":{FIXED + 300}}}').encode())

    assert refused(verifier(issuer).verify_access, expired_last).code == "token_expired"
    assert verifier(issuer).verify_access(valid_last)["exp"] == FIXED + 300


def test_payload_duplicate_iss_is_validated_on_the_last_value(issuer: DevIssuer) -> None:
    token = signed(issuer, header(issuer), payload_with(issuer, '"iss":"https://evil.example"'))

    assert refused(verifier(issuer).verify_access, token).code == "issuer_mismatch"


# -- dates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exp", [str(FIXED + 300), True, False, None, [FIXED + 300], {"t": FIXED + 300}]
)
def test_exp_that_is_not_a_number_is_claims_invalid(issuer: DevIssuer, exp: Any) -> None:
    raw = json.dumps({**claims(issuer), "exp": exp}).encode()
    token = signed(issuer, header(issuer), raw)

    assert refused(verifier(issuer).verify_access, token).code == "claims_invalid"


def test_missing_exp_is_claims_invalid(issuer: DevIssuer) -> None:
    token = access(issuer, extra={"exp": None})

    assert refused(verifier(issuer).verify_access, token).code == "claims_invalid"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_exp_nan_or_infinity_is_refused_as_malformed_json(issuer: DevIssuer, value: float) -> None:
    # NaN and Infinity are not JSON (RFC 8259), so the payload never parses.
    token = access(issuer, extra={"exp": value})

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


def test_exp_beyond_double_range_is_refused_as_malformed_json(issuer: DevIssuer) -> None:
    token = signed(issuer, header(issuer), payload_with(issuer, '"exp":1e400'))

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


@pytest.mark.parametrize("name", ["nbf", "iat"])
@pytest.mark.parametrize("value", [str(FIXED), True, None])
def test_nbf_and_iat_that_are_not_numbers_are_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    raw = json.dumps({**claims(issuer), name: value}).encode()
    token = signed(issuer, header(issuer), raw)

    assert refused(verifier(issuer).verify_access, token).code == "claims_invalid"


def test_iat_in_the_future_beyond_leeway_is_issued_in_future(issuer: DevIssuer) -> None:
    future = access(issuer, iat=FIXED + LEEWAY + 1)
    within = access(issuer, iat=FIXED + LEEWAY)

    assert refused(verifier(issuer).verify_access, future).code == "issued_in_future"
    assert verifier(issuer).verify_access(within)["iat"] == FIXED + LEEWAY


@pytest.mark.parametrize(
    ("offset", "code"), [(-1, None), (0, "token_expired"), (1, "token_expired")]
)
def test_exp_boundary_is_exp_plus_leeway(issuer: DevIssuer, offset: int, code: str | None) -> None:
    exp = FIXED
    token = access(issuer, iat=exp - 300, ttl=300)
    tv = verifier(issuer, now=exp + LEEWAY + offset)

    if code is None:
        assert tv.verify_access(token)["exp"] == exp
    else:
        assert refused(tv.verify_access, token).code == code


@pytest.mark.parametrize(("offset", "code"), [(-1, "token_not_yet_valid"), (0, None), (1, None)])
def test_nbf_boundary_is_nbf_minus_leeway(issuer: DevIssuer, offset: int, code: str | None) -> None:
    nbf = FIXED
    token = access(issuer, extra={"nbf": nbf, "iat": None, "exp": nbf + 300})
    tv = verifier(issuer, now=nbf - LEEWAY + offset)

    if code is None:
        assert tv.verify_access(token)["nbf"] == nbf
    else:
        assert refused(tv.verify_access, token).code == code


# -- audience and issuer -----------------------------------------------------------


def test_missing_aud_is_audience_mismatch(issuer: DevIssuer) -> None:
    token = access(issuer, extra={"aud": None})

    assert refused(verifier(issuer).verify_access, token).code == "audience_mismatch"


@pytest.mark.parametrize("aud", ["other", "ap", "api ", "API", "apix", ["other", "web"]])
def test_aud_that_is_not_ours_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    token = access(issuer, audience=aud)

    assert refused(verifier(issuer).verify_access, token).code == "audience_mismatch"


@pytest.mark.parametrize("aud", [[["api"]], [], ["api", 1], {"api": True}, 7])
def test_aud_of_the_wrong_shape_is_claims_invalid(issuer: DevIssuer, aud: Any) -> None:
    token = access(issuer, extra={"aud": aud})

    assert refused(verifier(issuer).verify_access, token).code == "claims_invalid"


def test_aud_list_containing_ours_is_accepted(issuer: DevIssuer) -> None:
    token = access(issuer, audience=["other", "api"])

    assert verifier(issuer).verify_access(token)["aud"] == ["other", "api"]


@pytest.mark.parametrize(
    "iss", [ISSUER + "/", ISSUER.upper(), "HTTP://127.0.0.1:9000", ISSUER + " ", None, 1]
)
def test_issuer_that_is_not_exactly_ours_is_issuer_mismatch(issuer: DevIssuer, iss: Any) -> None:
    token = signed(issuer, header(issuer), json.dumps({**claims(issuer), "iss": iss}).encode())

    assert refused(verifier(issuer).verify_access, token).code == "issuer_mismatch"


# -- keys outside the bake ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "Ed25519"])
def test_token_from_a_key_outside_the_bake_is_key_not_found(
    issuer: DevIssuer, other: DevIssuer, alg: str
) -> None:
    token = other.access_token("u1", iat=FIXED, alg=alg)

    assert refused(verifier(issuer).verify_access, token).code == "key_not_found"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "Ed25519"])
def test_foreign_key_claiming_a_baked_kid_is_signature_invalid(
    issuer: DevIssuer, other: DevIssuer, alg: str
) -> None:
    token = other.sign(claims(issuer), header=header(issuer, alg), kid=other.kids(alg)[-1])

    assert refused(verifier(issuer).verify_access, token).code == "signature_invalid"


def test_foreign_key_without_kid_is_signature_invalid(issuer: DevIssuer, other: DevIssuer) -> None:
    token = other.sign(claims(issuer), header={"alg": "RS256", "typ": "at+jwt"}, alg="RS256")

    assert refused(verifier(issuer).verify_access, token).code == "signature_invalid"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "Ed25519"])
@pytest.mark.parametrize("tamper", ["truncate", "extend", "flip", "payload"])
def test_tampered_signature_or_payload_is_signature_invalid(
    issuer: DevIssuer, alg: str, tamper: str
) -> None:
    token = access(issuer, alg=alg)
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    if tamper == "truncate":
        token = f"{head}.{body}.{b64(raw[:-1])}"
    elif tamper == "extend":
        token = f"{head}.{body}.{b64(raw + bytes(1))}"
    elif tamper == "flip":
        token = f"{head}.{body}.{b64(bytes([raw[0] ^ 1]) + raw[1:])}"
    else:
        token = f"{head}.{b64(json.dumps(claims(issuer, sub='admin')).encode())}.{sig}"

    assert refused(verifier(issuer).verify_access, token).code == "signature_invalid"


# -- access tokens versus ID tokens ---------------------------------------------------


@pytest.mark.parametrize("require_at_jwt", [False, True])
@pytest.mark.parametrize("marker", [{"nonce": "n-1"}, {"extra": {"at_hash": "abc"}}])
def test_id_token_with_nonce_or_at_hash_is_not_an_access_token(
    issuer: DevIssuer, require_at_jwt: bool, marker: dict[str, Any]
) -> None:
    token = id_token(issuer, audience="api", **marker)
    tv = verifier(issuer, require_at_jwt=require_at_jwt)

    assert refused(tv.verify_access, token).code == "token_type_invalid"


def test_id_token_without_nonce_is_refused_by_require_at_jwt(issuer: DevIssuer) -> None:
    token = id_token(issuer, audience="api")

    err = refused(verifier(issuer, require_at_jwt=True).verify_access, token)

    assert err.code == "token_type_invalid"


def test_id_token_without_nonce_is_refused_by_audience_separation(issuer: DevIssuer) -> None:
    token = id_token(issuer)  # aud = client_id "web", not in auth.audience

    assert refused(verifier(issuer).verify_access, token).code == "audience_mismatch"


def test_id_token_is_refused_by_access_claim_when_audience_holds_client_id(
    issuer: DevIssuer,
) -> None:
    token = id_token(issuer)
    tv = verifier(issuer, audience=["api", "web"], access_claim="scope")

    assert refused(tv.verify_access, token).code == "token_type_invalid"
    assert tv.verify_access(access(issuer))["sub"] == "u1"


def test_refresh_grant_id_token_listing_the_api_next_to_the_client_is_not_an_access_token(
    issuer: DevIssuer,
) -> None:
    # Issue 20, item 3: aud [web, api], azp web, no nonce, typ JWT.
    token = id_token(issuer, audience=["web", "api"], azp="web", nonce=None, typ="JWT")

    err = refused(verifier(issuer).verify_access, token)

    assert err.code == "token_type_invalid"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_an_access_token_for_the_client_and_the_api_is_accepted_with_typ_at_jwt(
    issuer: DevIssuer, typ: str
) -> None:
    token = access(issuer, audience=["web", "api"], typ=typ)

    assert verifier(issuer).verify_access(token)["aud"] == ["web", "api"]


def test_an_id_token_older_than_refresh_max_age_supplies_no_profile(issuer: DevIssuer) -> None:
    month = 30 * 86400
    tv = verifier(issuer, now=FIXED + 100)
    old = issuer.id_token("u1", email="a@example.com", iat=FIXED + 100 - month - 1)
    young = issuer.id_token("u1", email="a@example.com", iat=FIXED + 100 - month + 1)

    assert tv.session(access(issuer), old).user.email is None
    assert tv.session(access(issuer), young).user.email == "a@example.com"
    # The stale one must still match the access token: it is verified, just not used.
    other_user = issuer.id_token("u2", iat=FIXED + 100 - month - 1)
    assert refused(tv.session, access(issuer), other_user).code == "id_token_mismatch"


def test_config_with_client_id_in_audience_and_no_separation_is_refused(
    issuer: DevIssuer,
) -> None:
    err = refused(make_config, issuer, audience=["api", "web"])

    assert err.code == "config_invalid"


def test_access_token_is_not_an_id_token(issuer: DevIssuer) -> None:
    token = access(issuer, audience="web")

    assert refused(verifier(issuer).verify_id, token).code == "token_type_invalid"


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "at+jwt"])
def test_access_token_typ_is_free_without_require_at_jwt(
    issuer: DevIssuer, typ: str | None
) -> None:
    token = access(issuer, typ=typ)

    assert verifier(issuer).verify_access(token)["sub"] == "u1"


@pytest.mark.parametrize(
    "typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT", "APPLICATION/at+JWT"]
)
def test_require_at_jwt_accepts_each_spelling_of_at_jwt(issuer: DevIssuer, typ: str) -> None:
    token = access(issuer, typ=typ)

    assert verifier(issuer, require_at_jwt=True).verify_access(token)["sub"] == "u1"


@pytest.mark.parametrize("typ", ["JWT", None, "at+jwt ", "application/jwt", "x-at+jwt", "at-jwt"])
def test_require_at_jwt_refuses_other_types(issuer: DevIssuer, typ: str | None) -> None:
    token = access(issuer, typ=typ)

    err = refused(verifier(issuer, require_at_jwt=True).verify_access, token)

    assert err.code == "token_type_invalid"


@pytest.mark.parametrize(
    ("access_sid", "id_sub", "id_sid"),
    [(None, "u2", None), ("s1", "u2", "s1"), ("s1", "u1", "s2")],
    ids=["sub", "sub-same-sid", "sid"],
)
def test_access_and_id_tokens_of_different_subjects_or_sessions_are_mismatched(
    issuer: DevIssuer, access_sid: str | None, id_sub: str, id_sid: str | None
) -> None:
    access_token = access(issuer, sid=access_sid)
    other_id = issuer.id_token(id_sub, iat=FIXED, sid=id_sid)

    assert refused(verifier(issuer).session, access_token, other_id).code == "id_token_mismatch"


def test_access_and_id_tokens_of_the_same_subject_and_session_make_a_session(
    issuer: DevIssuer,
) -> None:
    session = verifier(issuer).session(access(issuer, sid="s1"), id_token(issuer, sid="s1"))

    assert (session.user.id, session.session_id) == ("u1", "s1")


def test_id_token_nonce_must_match_the_login(issuer: DevIssuer) -> None:
    token = id_token(issuer, nonce="n-1")
    tv = verifier(issuer)

    assert tv.verify_id(token, nonce="n-1")["nonce"] == "n-1"
    assert refused(tv.verify_id, token, nonce="n-2").code == "id_token_mismatch"


@pytest.mark.parametrize(
    ("audience", "azp", "code"),
    [
        (["web", "other"], None, "audience_mismatch"),
        (["web", "other"], "other", "audience_mismatch"),
        ("web", "other", "audience_mismatch"),
        ("mobile", None, "audience_mismatch"),
        (["web", "other"], "web", None),
        ("web", "web", None),
    ],
)
def test_id_token_audience_and_azp(
    issuer: DevIssuer, audience: Any, azp: str | None, code: str | None
) -> None:
    token = id_token(issuer, audience=audience, azp=azp)
    tv = verifier(issuer)

    if code is None:
        assert tv.verify_id(token)["sub"] == "u1"
    else:
        assert refused(tv.verify_id, token).code == code


def test_id_token_from_another_issuer_is_issuer_mismatch(issuer: DevIssuer) -> None:
    token = id_token(issuer, extra={"iss": ISSUER + "/"})

    assert refused(verifier(issuer).verify_id, token).code == "issuer_mismatch"


# -- size, emptiness, types --------------------------------------------------------------


def test_token_larger_than_max_token_bytes_is_too_large(issuer: DevIssuer) -> None:
    token = access(issuer, extra={"filler": "x" * 9000})
    assert len(token) > 8192

    assert refused(verifier(issuer).verify_access, token).code == "token_too_large"
    roomy = verifier(issuer, max_token_bytes=len(token))
    assert roomy.verify_access(token)["sub"] == "u1"
    tight = verifier(issuer, max_token_bytes=len(token) - 1)
    assert refused(tight.verify_access, token).code == "token_too_large"


@pytest.mark.parametrize("empty", ["", b"", bytearray()], ids=["str", "bytes", "bytearray"])
def test_empty_token_is_token_missing(issuer: DevIssuer, empty: Any) -> None:
    assert refused(verifier(issuer).verify_access, empty).code == "token_missing"


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_bytes_tokens_verify_like_strings(issuer: DevIssuer, kind: type) -> None:
    token = access(issuer)

    assert verifier(issuer).verify_access(kind(token.encode("ascii")))["sub"] == "u1"


def test_bytes_token_that_is_not_ascii_is_malformed(issuer: DevIssuer) -> None:
    token = access(issuer).encode("ascii") + b"\xff"

    assert refused(verifier(issuer).verify_access, token).code == "token_malformed"


def test_oversized_bytes_token_is_refused_by_the_cap_before_decoding(issuer: DevIssuer) -> None:
    token = access(issuer).encode("ascii") + b"\xff" * 10_000

    assert refused(verifier(issuer).verify_access, token).code == "token_too_large"


@pytest.mark.parametrize("value", [None, 7, ["a.b.c"]])
def test_token_that_is_not_text_is_refused(issuer: DevIssuer, value: Any) -> None:
    assert refused(verifier(issuer).verify_access, value).code == "token_malformed"


# -- no token in errors -----------------------------------------------------------------


def hostile_tokens(issuer: DevIssuer, other: DevIssuer) -> list[str | bytes]:
    kid = issuer.kids("RS256")[-1]
    good = access(issuer)
    head, body, sig = good.split(".")
    pem = rsa_public_secrets(issuer)["pem"]
    return [
        issuer.sign(claims(issuer), header={"alg": "none", "kid": kid}, alg="none"),
        signed(issuer, header(issuer, alg="NONE")),
        hs256(header(issuer, alg="HS256"), claims(issuer), pem),
        issuer.sign(claims(issuer), header=header(issuer, alg="PS256"), kid=kid, alg="PS256"),
        signed(issuer, header(issuer, kid="../../etc/passwd")),
        signed(issuer, header(issuer, kid="x' OR '1'='1")),
        signed(issuer, header(issuer, kid="k" * 10240)),
        signed(issuer, header(issuer, kid={"a": 1})),
        signed(issuer, header(issuer, jku="https://attacker.example/jwks")),
        signed(issuer, header(issuer, jwk=public_jwk(other, "RS256"))),
        signed(issuer, header(issuer, crit=["exp"])),
        signed(issuer, header(issuer, b64=False)),
        signed(issuer, f'{{"alg":"RS256","kid":"{kid}","\\u0061lg":"none"}}'.encode()),
        signed(issuer, b'["RS256"]'),
        signed(issuer, header(issuer), b'["u1"]'),
        signed(issuer, header(issuer), payload_with(issuer, f'"exp":{FIXED - 100}')),
        f"{good}.{sig}.{sig}",
        f"{head}=.{body}.{sig}",
        f"{head}.{body}.{sig} ",
        f"{head}.{body}.{sig[:10]}é{sig[10:]}",
        good.translate(str.maketrans("-_", "+/")) + "+",
        f"{head}.{body}.{b64(b'x' * 256)}",
        access(issuer, extra={"exp": "soon"}),
        access(issuer, iat=FIXED + 3600),
        access(issuer, iat=FIXED - 3600),
        access(issuer, extra={"nbf": FIXED + 3600}),
        access(issuer, audience="ap"),
        access(issuer, audience=[["api"]]),
        access(issuer, extra={"iss": ISSUER + "/"}),
        access(issuer, extra={"filler": "x" * 9000}),
        other.access_token("u1", iat=FIXED),
        other.sign(claims(issuer), header=header(issuer), kid=other.kids("RS256")[-1]),
        id_token(issuer, nonce="n", audience="api"),
        id_token(issuer),
        good.encode("ascii") + b"\xff",
    ]


def assert_token_not_echoed(err: VerifierError, token: str | bytes) -> None:
    text = token.decode("latin-1") if isinstance(token, bytes) else token
    signature = text.rsplit(".", 1)[-1]
    pieces = {text, *(signature[i : i + 20] for i in range(len(signature) - 19))}
    outputs = [str(err), repr(err), err.message, str(err.context)]
    if err.__cause__ is not None:
        outputs.append(str(err.__cause__))
    for output in outputs:
        leaked = [piece for piece in pieces if piece in output]
        assert not leaked, f"{err.code}: token material in {output[:80]!r}"


def test_no_error_echoes_the_token_or_its_signature(issuer: DevIssuer, other: DevIssuer) -> None:
    verifiers = [verifier(issuer), verifier(issuer, hs_secret=HS_SECRET, require_at_jwt=True)]
    tokens = hostile_tokens(issuer, other)
    checked = 0
    for token in tokens:
        for tv in verifiers:
            # Every hostile token is refused as an access token ...
            assert_token_not_echoed(refused(tv.verify_access, token), token)
            checked += 1
            # ... and whatever the ID token and session paths refuse is checked too.
            for call, args in ((tv.verify_id, (token,)), (tv.session, (token, token))):
                try:
                    call(*args)
                except VerifierError as err:
                    assert_token_not_echoed(err, token)
                    checked += 1
    assert checked >= 2 * len(tokens)


# -- weak keys (issue 20, item 4) ----------------------------------------------------------

ED25519_P = 2**255 - 19
ED25519_D = -121665 * pow(121666, -1, ED25519_P) % ED25519_P
#: An order-8 point as libsodium's blocklist (crypto_sign/ed25519/ref10/open.c) publishes it.
ORDER_8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")

Point = tuple[int, int]


def ed_add(a: Point, b: Point) -> Point:
    """Affine addition on edwards25519 (-x^2 + y^2 = 1 + d x^2 y^2), complete for this curve."""
    (x1, y1), (x2, y2), p = a, b, ED25519_P
    t = ED25519_D * x1 * x2 * y1 * y2 % p
    return (
        (x1 * y2 + y1 * x2) * pow(1 + t, -1, p) % p,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, p) % p,
    )


def ed_decode(encoded: bytes) -> Point | None:
    """RFC 8032 5.1.3 decoding, leniently: y >= p and the sign bit of x = 0 accepted."""
    p = ED25519_P
    value = int.from_bytes(encoded, "little")
    sign, y = value >> 255, (value & ((1 << 255) - 1)) % p
    u, v = (y * y - 1) % p, (ED25519_D * y * y + 1) % p
    x = u * pow(v, 3, p) * pow(u * pow(v, 7, p), (p - 5) // 8, p) % p
    if v * x * x % p == (-u) % p:
        x = x * pow(2, (p - 1) // 4, p) % p
    if v * x * x % p != u % p:
        return None
    if x & 1 != sign:
        x = (p - x) % p
    return x, y


def small_order_encodings() -> list[bytes]:
    """Every 32-byte encoding of the eight points of order dividing 8: canonical or not."""
    generator = ed_decode(ORDER_8)
    assert generator is not None
    points, point = [], (0, 1)
    for _ in range(8):
        points.append(point)
        point = ed_add(point, generator)
    assert point == (0, 1)  # [8]T = identity ...
    assert len(set(points)) == 8  # ... and T has order exactly 8
    encodings = set()
    for _, y in points:
        for value in (y, y + ED25519_P):  # y + p < 2^255 only for y in {0, 1}
            if value < 1 << 255:
                for sign in (0, 1):
                    encodings.add((value | sign << 255).to_bytes(32, "little"))
    return sorted(encodings)


SMALL_ORDER = small_order_encodings()


def test_the_small_order_list_is_all_fourteen_encodings() -> None:
    assert len(SMALL_ORDER) == 14
    for encoded in SMALL_ORDER:
        point = ed_decode(encoded)
        assert point is not None
        eight = (0, 1)
        for _ in range(8):
            eight = ed_add(eight, point)
        assert eight == (0, 1)


@pytest.mark.parametrize("encoded", SMALL_ORDER, ids=lambda e: e.hex()[:8] + ".." + e.hex()[-2:])
def test_an_ed25519_key_on_a_small_order_point_is_skipped_in_every_encoding(
    issuer: DevIssuer, encoded: bytes
) -> None:
    weak = {"kty": "OKP", "crv": "Ed25519", "kid": "weak", "x": b64(encoded)}

    jwks = parse_jwks({"keys": [*issuer.jwks()["keys"], weak]})

    assert "weak" not in jwks.kids
    assert [key.reason for key in jwks.skipped] == [
        "Ed25519 key is a small-order point (it would verify forgeries)"
    ]


def test_the_identity_key_forgery_verifies_nothing(issuer: DevIssuer) -> None:
    identity = (1).to_bytes(32, "little")
    weak = {"kty": "OKP", "crv": "Ed25519", "kid": "weak", "x": b64(identity)}
    keys = KeyStore(parse_jwks({"keys": [*issuer.jwks()["keys"], weak]}))
    tv = TokenVerifier(keys, issuer=issuer.issuer, audiences=("api",), now=lambda: FIXED)
    hdr = {"alg": "Ed25519", "kid": "weak", "typ": "at+jwt"}
    body = claims(issuer, sub="admin")
    forged = ".".join(
        [b64(json.dumps(hdr).encode()), b64(json.dumps(body).encode()), b64(identity + bytes(32))]
    )

    assert refused(tv.verify_access, forged).code == "key_not_found"


def rsa_jwk(n: int, kid: str) -> dict[str, str]:
    return {
        "kty": "RSA",
        "kid": kid,
        "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": "AQAB",
    }


@pytest.mark.parametrize(
    ("factor", "reason"),
    [
        (2, "RSA modulus is even"),
        (3, "RSA modulus has a prime factor below 1000 (3)"),
        (997, "RSA modulus has a prime factor below 1000 (997)"),
    ],
)
def test_an_rsa_modulus_with_a_small_prime_factor_is_skipped(
    issuer: DevIssuer, factor: int, reason: str
) -> None:
    # 2048 bits, and no prime below 1000 divides it but ``factor``.
    small_primes = [k for k in range(2, 1000) if all(k % j for j in range(2, k))]
    m = (1 << 2047) // factor + 1
    while any(m % prime == 0 for prime in small_primes):
        m += 1
    n = m * factor
    assert n.bit_length() == 2048

    jwks = parse_jwks({"keys": [*issuer.jwks()["keys"], rsa_jwk(n, "weak")]})

    assert "weak" not in jwks.kids
    assert [(key.kid, key.reason) for key in jwks.skipped] == [("weak", reason)]


def test_a_set_of_only_weak_keys_is_jwks_invalid() -> None:
    keys = [rsa_jwk(1 << 2047, "even")] + [
        {"kty": "OKP", "crv": "Ed25519", "kid": f"small-{i}", "x": b64(encoded)}
        for i, encoded in enumerate(SMALL_ORDER)
    ]

    with pytest.raises(JWKSInvalid) as info:
        parse_jwks({"keys": keys})

    assert info.value.code == "jwks_invalid"
    assert len(info.value.context["skipped"]) == 15


# -- hostile kids and claims reaching the CLI (issue 20, item 5) -----------------------------


@pytest.mark.parametrize("output", ["text", "json"])
def test_hostile_claims_and_kids_never_reach_the_terminal_raw(
    issuer: DevIssuer, tmp_path: Any, output: str
) -> None:
    from typer.testing import CliRunner

    from deploy.cli import Seams, app

    env = tmp_path / "app.env"
    jwks = parse_jwks(issuer.jwks()).canonical_json()
    env.write_text(
        f"APP_CONFIG_AUTH__ISSUER={issuer.issuer}\nAPP_CONFIG_AUTH__AUDIENCE=api\n"
        f"APP_CONFIG_AUTH__JWKS='{jwks}'\n"
    )
    injected = "\n::error title=Injected::pwned\x1b[2J\x9b1m\u202e"
    org = {"id": "o1", "slug": "acme", "name": "Acme" + injected, "role": "owner"}
    # A valid token (its claims reach the session lines) and one with a hostile kid.
    valid = issuer.access_token("u1" + injected, organizations=[org], extra={"name": injected})
    unknown_kid = signed(issuer, header(issuer, kid="k1" + injected))
    extra = ["--json"] if output == "json" else []

    for token, exit_code in ((valid, 0), (unknown_kid, 1)):
        result = CliRunner().invoke(
            app, ["inspect", "--env-file", str(env), *extra], input=token, obj=Seams()
        )

        assert result.exit_code == exit_code, result.stderr
        shown = result.stdout + result.stderr
        assert not [line for line in shown.splitlines() if line.lstrip().startswith("::")]
        for char in ("\x1b", "\x9b", "\u202e"):
            assert char not in shown
        if output == "json":
            assert result.stdout.isascii()
            json.loads(result.stdout)
