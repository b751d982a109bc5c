"""DevIssuer: tokens verify with its published keys, hostile signing, rotation, HTTP."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.testclient import TestClient

from verifier.testing import DevIssuer

ISSUER = "http://127.0.0.1:9000"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    # Module-scoped: RSA key generation is slow. Tests that rotate make their own.
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=lambda: 1_700_000_000.7)


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segments(token: str) -> tuple[bytes, bytes, bytes]:
    header, payload, signature = token.split(".")
    return b64decode(header), b64decode(payload), b64decode(signature)


def decode(issuer: DevIssuer, token: str, alg: str) -> jwt.Token:
    jwks: Any = issuer.jwks()
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[alg])


def rsa_public_key(issuer: DevIssuer, kid: str) -> Any:
    jwk = next(k for k in issuer.jwks()["keys"] if k["kid"] == kid)
    return RSAKey.import_key(jwk).get_op_key("verify")


@pytest.mark.parametrize("alg", ["RS256", "ES256", "Ed25519"])
def test_access_token_verifies_with_the_published_key_of_each_algorithm(
    issuer: DevIssuer, alg: str
) -> None:
    token = issuer.access_token("u1", alg=alg)

    decoded = decode(issuer, token, alg)

    assert decoded.header == {"alg": alg, "kid": issuer.kids(alg)[-1], "typ": "at+jwt"}
    assert decoded.claims["sub"] == "u1"


def test_access_token_carries_the_expected_claims(issuer: DevIssuer) -> None:
    orgs = [{"id": "o1", "slug": "acme", "name": "Acme", "role": "admin"}]
    projects = [{"id": "p1", "slug": "web", "organizationId": "o1"}]

    token = issuer.access_token("u7", organizations=orgs, projects=projects, sid="s1", ttl=60)

    claims = decode(issuer, token, "RS256").claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "api"
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_060
    assert isinstance(claims["jti"], str)
    assert claims["sid"] == "s1"
    assert claims["scope"] == "openid profile"
    assert claims["organizations"] == orgs
    assert claims["projects"] == projects


def test_access_token_defaults_to_empty_memberships_and_no_sid(issuer: DevIssuer) -> None:
    claims = decode(issuer, issuer.access_token(), "RS256").claims

    assert claims["organizations"] == []
    assert claims["projects"] == []
    assert "sid" not in claims


def test_access_tokens_get_distinct_jtis(issuer: DevIssuer) -> None:
    first, second = issuer.access_token(), issuer.access_token()

    assert (
        decode(issuer, first, "RS256").claims["jti"]
        != decode(issuer, second, "RS256").claims["jti"]
    )


def test_explicit_iat_wins_over_the_clock(issuer: DevIssuer) -> None:
    claims = decode(issuer, issuer.access_token(iat=1000, ttl=5), "RS256").claims

    assert (claims["iat"], claims["exp"]) == (1000, 1005)


def test_extra_claims_are_merged_last_and_none_removes_a_claim(issuer: DevIssuer) -> None:
    token = issuer.access_token(extra={"aud": ["api", "other"], "scope": None, "nbf": 5})

    claims = decode(issuer, token, "RS256").claims
    assert claims["aud"] == ["api", "other"]
    assert "scope" not in claims
    assert claims["nbf"] == 5


def test_access_token_typ_is_configurable_and_none_leaves_it_out(issuer: DevIssuer) -> None:
    assert json.loads(segments(issuer.access_token(typ="JWT"))[0])["typ"] == "JWT"
    assert "typ" not in json.loads(segments(issuer.access_token(typ=None))[0])


def test_access_token_audience_overrides_the_default(issuer: DevIssuer) -> None:
    claims = decode(issuer, issuer.access_token(audience=["a", "b"]), "RS256").claims

    assert claims["aud"] == ["a", "b"]


def test_id_token_carries_profile_claims_and_client_id_audience(issuer: DevIssuer) -> None:
    token = issuer.id_token("u1", nonce="n1", sid="s1", picture="https://p.example/a.png")

    decoded = decode(issuer, token, "RS256")
    assert decoded.header["typ"] == "JWT"
    assert decoded.claims["aud"] == "web"
    assert decoded.claims["email"] == "a@example.com"
    assert decoded.claims["email_verified"] is True
    assert decoded.claims["name"] == "Ada Lovelace"
    assert decoded.claims["picture"] == "https://p.example/a.png"
    assert decoded.claims["nonce"] == "n1"
    assert decoded.claims["sid"] == "s1"
    assert "azp" not in decoded.claims


def test_id_token_accepts_several_audiences_with_azp(issuer: DevIssuer) -> None:
    token = issuer.id_token(audience=["web", "mobile"], azp="web", alg="Ed25519")

    claims = decode(issuer, token, "Ed25519").claims
    assert claims["aud"] == ["web", "mobile"]
    assert claims["azp"] == "web"


def test_jwks_publishes_one_public_signing_key_per_algorithm(issuer: DevIssuer) -> None:
    keys = issuer.jwks()["keys"]

    assert [(k["kty"], k["alg"], k["use"]) for k in keys] == [
        ("RSA", "RS256", "sig"),
        ("EC", "ES256", "sig"),
        ("OKP", "Ed25519", "sig"),
    ]
    assert keys[1]["crv"] == "P-256"
    assert keys[2]["crv"] == "Ed25519"
    assert len(b64decode(keys[0]["n"])) == 256
    assert all(PRIVATE_MEMBERS.isdisjoint(k) for k in keys)
    assert len({k["kid"] for k in keys}) == 3


def test_active_key_follows_the_alg_argument() -> None:
    issuer = DevIssuer(issuer=ISSUER, alg="ES256")

    assert issuer.kid == issuer.kids("ES256")[0]
    assert json.loads(segments(issuer.access_token())[0])["alg"] == "ES256"


def test_kids_filters_by_algorithm(issuer: DevIssuer) -> None:
    assert issuer.kids() == [k["kid"] for k in issuer.jwks()["keys"]]
    assert len(issuer.kids("RS256")) == 1
    assert issuer.kids("PS256") == []


def test_two_issuers_never_share_a_kid(issuer: DevIssuer) -> None:
    assert set(DevIssuer(issuer=ISSUER).kids()).isdisjoint(issuer.kids())


def test_constructor_refuses_an_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="HS256"):
        DevIssuer(issuer=ISSUER, alg="HS256")


def test_sign_keeps_a_mapping_header_exactly(issuer: DevIssuer) -> None:
    header = {"alg": "none", "crit": ["exp"], "jku": "https://evil.example/jwks"}

    token = issuer.sign({"sub": "u1"}, header)

    assert json.loads(segments(token)[0]) == header


def test_sign_keeps_raw_header_and_payload_bytes(issuer: DevIssuer) -> None:
    header = b'{"alg":"RS256","alg":"none","kid":"x"}'
    payload = b'{"sub":"u1","sub":"admin"}'

    raw_header, raw_payload, _ = segments(issuer.sign(payload, header))

    assert (raw_header, raw_payload) == (header, payload)
    assert segments(issuer.sign("[1,2]", '{"alg":"RS256"}'))[1] == b"[1,2]"


def test_sign_defaults_the_header_to_the_signing_key(issuer: DevIssuer) -> None:
    token = issuer.sign({"sub": "u1"}, kid=issuer.kids("ES256")[0])

    decoded = decode(issuer, token, "ES256")
    assert decoded.header == {"alg": "ES256", "kid": issuer.kids("ES256")[0], "typ": "JWT"}


def test_sign_with_alg_none_gives_an_empty_signature(issuer: DevIssuer) -> None:
    token = issuer.sign({"sub": "u1"}, {"alg": "none"}, alg="none")

    assert token.endswith(".")
    assert token.count(".") == 2


@pytest.mark.parametrize(
    ("alg", "pad", "digest"),
    [
        ("PS256", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()),
        ("PS512", padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512()),
        ("RS384", padding.PKCS1v15(), hashes.SHA384()),
    ],
)
def test_sign_uses_other_rsa_algorithms_with_the_rsa_key(
    issuer: DevIssuer, alg: str, pad: padding.AsymmetricPadding, digest: hashes.HashAlgorithm
) -> None:
    kid = issuer.kids("RS256")[0]
    token = issuer.sign({"sub": "u1"}, {"alg": alg, "kid": kid}, kid=kid, alg=alg)
    header, payload, _ = token.split(".")

    rsa_public_key(issuer, kid).verify(
        segments(token)[2], f"{header}.{payload}".encode(), pad, digest
    )


def test_es256_signature_is_the_raw_64_byte_form(issuer: DevIssuer) -> None:
    token = issuer.sign({"sub": "u1"}, alg="ES256")

    assert len(segments(token)[2]) == 64


@pytest.mark.parametrize(
    ("key_alg", "alg"),
    [("ES256", "ES384"), ("RS256", "ES256"), ("Ed25519", "RS256"), ("RS256", "HS256")],
)
def test_sign_refuses_an_algorithm_the_key_cannot_use(
    issuer: DevIssuer, key_alg: str, alg: str
) -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        issuer.sign({"sub": "u1"}, kid=issuer.kids(key_alg)[0], alg=alg)


def test_sign_refuses_an_unknown_kid(issuer: DevIssuer) -> None:
    with pytest.raises(ValueError, match="unknown kid"):
        issuer.sign({"sub": "u1"}, kid="nope")


@pytest.mark.parametrize("alg", ["RS256", "Ed25519"])
def test_sign_raw_matches_the_signature_of_sign(issuer: DevIssuer, alg: str) -> None:
    token = issuer.sign({"sub": "u1"}, alg=alg)
    header, payload, signature = token.split(".")

    raw = issuer.sign_raw(f"{header}.{payload}".encode(), alg=alg)

    assert raw == b64decode(signature)


def test_private_jwk_carries_the_private_part_of_a_published_key(issuer: DevIssuer) -> None:
    private = issuer.private_jwk(issuer.kid)

    public = next(k for k in issuer.jwks()["keys"] if k["kid"] == issuer.kid)
    assert {k: v for k, v in private.items() if k not in PRIVATE_MEMBERS} == public
    assert private.keys() >= PRIVATE_MEMBERS


def test_rotate_changes_the_kid_and_keeps_old_keys_published() -> None:
    issuer = DevIssuer(issuer=ISSUER, alg="Ed25519")
    old_kid, old_token = issuer.kid, issuer.access_token()

    new_kid = issuer.rotate()

    assert new_kid != old_kid
    assert issuer.kid == new_kid
    assert issuer.kids("Ed25519") == [old_kid, new_kid]
    assert len(issuer.jwks()["keys"]) == 4
    assert decode(issuer, old_token, "Ed25519").header["kid"] == old_kid
    assert decode(issuer, issuer.access_token(), "Ed25519").header["kid"] == new_kid


def test_rotate_to_another_algorithm_makes_it_active() -> None:
    issuer = DevIssuer(issuer=ISSUER)

    new_kid = issuer.rotate("ES384")

    assert issuer.kids("ES384") == [new_kid]
    assert decode(issuer, issuer.access_token(), "ES384").header["kid"] == new_kid
    assert issuer.access_token(alg="RS256")  # older algorithms still sign


def test_alg_without_kid_picks_the_newest_key_of_that_algorithm() -> None:
    issuer = DevIssuer(issuer=ISSUER)
    newest = issuer.rotate("ES256")
    issuer.rotate("RS256")

    assert decode(issuer, issuer.access_token(alg="ES256"), "ES256").header["kid"] == newest


def test_app_serves_discovery_and_counts_requests() -> None:
    issuer = DevIssuer(issuer=ISSUER)
    client = TestClient(issuer.app)

    response = client.get("/.well-known/openid-configuration")

    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == ISSUER
    assert doc["jwks_uri"] == f"{ISSUER}/jwks"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert doc["end_session_endpoint"] == f"{ISSUER}/logout"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256", "ES256", "Ed25519"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert (issuer.stats.discovery_requests, issuer.stats.jwks_requests) == (1, 0)


def test_app_serves_the_jwks_as_json_and_counts_requests() -> None:
    issuer = DevIssuer(issuer=ISSUER)
    client = TestClient(issuer.app)

    response = client.get("/jwks")
    client.get("/jwks")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == issuer.jwks()
    assert (issuer.stats.discovery_requests, issuer.stats.jwks_requests) == (0, 2)


def test_app_jwks_shows_rotated_keys() -> None:
    issuer = DevIssuer(issuer=ISSUER)
    client = TestClient(issuer.app)
    new_kid = issuer.rotate()

    assert new_kid in [k["kid"] for k in client.get("/jwks").json()["keys"]]


@pytest.mark.e2e
def test_serve_runs_a_real_server_on_any_port_and_closes_it_on_exit() -> None:
    with DevIssuer.serve(port=0, audience="api", client_id="web") as issuer:
        assert issuer.url == issuer.issuer
        assert issuer.url.startswith("http://127.0.0.1:")
        with httpx2.Client(base_url=issuer.url) as client:
            doc = client.get("/.well-known/openid-configuration").json()
            jwks = client.get(doc["jwks_uri"]).json()
        assert doc["issuer"] == issuer.url
        assert jwks == issuer.jwks()
        assert (issuer.stats.discovery_requests, issuer.stats.jwks_requests) == (1, 1)
        token = issuer.access_token()
        assert decode(issuer, token, "RS256").claims["iss"] == issuer.url

    with httpx2.Client() as client, pytest.raises(httpx2.ConnectError):
        client.get(f"{issuer.url}/jwks")


def test_serve_refuses_an_explicit_issuer() -> None:
    with pytest.raises(TypeError, match="issuer"), DevIssuer.serve(issuer=ISSUER):
        pass
