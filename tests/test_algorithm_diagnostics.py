"""A token refused for its algorithm says why: which token, its alg, the key's, the setting.

One key keeps exactly one algorithm (RFC 8725 §3.1): the JWK's ``alg``, else
``auth.rsa_alg`` for RSA, the curve's for EC. An issuer whose alg-less RSA
key signs RS256 access tokens and PS256 ID tokens (oidc-provider allows it)
cannot be served, and every message on the way says so: the bake warns about
RSA keys without ``alg``, ``algorithm_not_allowed`` carries the context, and
the login callback's error page repeats it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from deploy.bake import rsa_alg_warnings
from deploy.cli import Seams, app
from tests.test_login import APP, authorize, edge_config, new_issuer, start_login
from tests.test_login_settings import Recording
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.errors import AlgorithmNotAllowed
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISSUER = "http://127.0.0.1:9000"


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    """RS256, ES256 and Ed25519 keys, each with its alg in the JWKS."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


def without_alg(jwks: dict[str, Any], kty: str) -> dict[str, Any]:
    keys = [
        {k: v for k, v in key.items() if not (k == "alg" and key["kty"] == kty)}
        for key in jwks["keys"]
    ]
    return {"keys": keys}


def kid_of(issuer: DevIssuer, kty: str) -> str:
    kid: str = next(key["kid"] for key in issuer.jwks()["keys"] if key["kty"] == kty)
    return kid


def verifier_for(issuer: DevIssuer, jwks: dict[str, Any], **auth: Any) -> TokenVerifier:
    config = AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(jwks),
            **auth,
        },
        keys={"remote": "never"},
    )
    return TokenVerifier.from_config(config)


def id_token_signed_with(issuer: DevIssuer, alg: str, kid: str) -> str:
    claims = {"iss": issuer.issuer, "aud": "web", "sub": "u1", "iat": 1, "exp": 4_000_000_000}
    return issuer.sign(claims, header={"alg": alg, "kid": kid, "typ": "JWT"})


# -- the key store -----------------------------------------------------------------------


def test_an_rsa_key_without_alg_names_auth_rsa_alg(issuer: DevIssuer) -> None:
    store = KeyStore(parse_jwks(without_alg(issuer.jwks(), "RSA")), rsa_alg="RS256")
    kid = kid_of(issuer, "RSA")

    with pytest.raises(AlgorithmNotAllowed) as caught:
        store.key_for(kid, "PS256")

    error = caught.value
    assert error.context["alg"] == "PS256"
    assert error.context["key_alg"] == "RS256"
    assert error.context["setting"] == "auth.rsa_alg"
    assert "alg PS256 is not the key's algorithm" in error.message
    assert "used with RS256 only" in error.message
    assert "APP_CONFIG_AUTH__RSA_ALG=RS256" in error.message


def test_a_key_with_its_own_alg_names_the_jwk(issuer: DevIssuer) -> None:
    store = KeyStore(parse_jwks(issuer.jwks()))

    with pytest.raises(AlgorithmNotAllowed) as caught:
        store.key_for(kid_of(issuer, "RSA"), "PS256")

    assert caught.value.context["setting"] == "jwk.alg"
    assert "the JWK's alg" in caught.value.message
    assert "auth.rsa_alg" not in caught.value.message


def test_an_ec_key_without_alg_names_its_curve(issuer: DevIssuer) -> None:
    store = KeyStore(parse_jwks(without_alg(issuer.jwks(), "EC")))

    with pytest.raises(AlgorithmNotAllowed) as caught:
        store.key_for(kid_of(issuer, "EC"), "ES384")

    assert caught.value.context["setting"] == "jwk.crv"
    assert "P-256" in caught.value.message


def test_an_algorithm_outside_the_allowlist_names_auth_algorithms(issuer: DevIssuer) -> None:
    store = KeyStore(parse_jwks(issuer.jwks()), algorithms=["ES256"])

    with pytest.raises(AlgorithmNotAllowed) as caught:
        store.key_for(kid_of(issuer, "RSA"), "RS256")

    assert caught.value.context["setting"] == "auth.algorithms"


# -- the verifier: which token -----------------------------------------------------------


def test_an_id_token_in_the_other_rsa_algorithm_is_refused_as_the_id_token(
    issuer: DevIssuer,
) -> None:
    verifier = verifier_for(issuer, without_alg(issuer.jwks(), "RSA"))
    access = issuer.access_token("u1")
    id_token = id_token_signed_with(issuer, "PS256", kid_of(issuer, "RSA"))

    with pytest.raises(AlgorithmNotAllowed) as caught:
        verifier.session(access, id_token)

    error = caught.value
    assert error.context["token"] == "ID"
    assert error.message.startswith("ID token: alg PS256 is not the key's algorithm")
    assert (error.context["alg"], error.context["key_alg"]) == ("PS256", "RS256")
    assert error.context["setting"] == "auth.rsa_alg"


def test_with_rsa_alg_switched_the_access_token_is_the_one_refused(issuer: DevIssuer) -> None:
    verifier = verifier_for(issuer, without_alg(issuer.jwks(), "RSA"), rsa_alg="PS256")
    id_token = id_token_signed_with(issuer, "PS256", kid_of(issuer, "RSA"))

    with pytest.raises(AlgorithmNotAllowed) as caught:
        verifier.session(issuer.access_token("u1"), id_token)

    assert caught.value.context["token"] == "access"
    assert caught.value.message.startswith("access token: alg RS256")
    assert "APP_CONFIG_AUTH__RSA_ALG=PS256" in caught.value.message


def test_the_refusal_never_holds_the_token(issuer: DevIssuer) -> None:
    verifier = verifier_for(issuer, without_alg(issuer.jwks(), "RSA"))
    id_token = id_token_signed_with(issuer, "PS256", kid_of(issuer, "RSA"))

    with pytest.raises(AlgorithmNotAllowed) as caught:
        verifier.verify_id(id_token)

    shown = str(caught.value) + repr(caught.value) + json.dumps(caught.value.context)
    for part in id_token.split("."):
        assert part not in shown


# -- the login callback ------------------------------------------------------------------


def test_the_login_callback_says_which_token_and_which_setting() -> None:
    issuer = new_issuer()
    kid = kid_of(issuer, "RSA")
    config = edge_config(issuer)
    config = config.model_copy(
        update={
            "auth": config.auth.model_copy(
                update={"jwks": parse_jwks(without_alg(issuer.jwks(), "RSA"))}
            )
        }
    )

    def ps256_id_token(body: dict[str, Any]) -> dict[str, Any]:
        claims = json.loads(_segment(body["id_token"], 1))
        body["id_token"] = issuer.sign(claims, header={"alg": "PS256", "kid": kid})
        return body

    app = create_app(config, issuer_transport=Recording(issuer, edit=ps256_id_token))
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        response = client.get(authorize(issuer, start_login(client)))

    assert response.status_code == 400
    text = html.unescape(response.text)
    assert "Code: token_invalid" in re.sub(r"<[^>]+>", "", text)
    assert "ID token: alg PS256 is not the key's algorithm" in text
    assert "used with RS256 only" in text
    assert "auth.rsa_alg" in text


def _segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# -- the bake ----------------------------------------------------------------------------


def test_rsa_alg_warnings_name_each_rsa_key_without_alg(issuer: DevIssuer) -> None:
    jwks = parse_jwks(without_alg(issuer.jwks(), "RSA"))

    (warning,) = rsa_alg_warnings(jwks)

    assert kid_of(issuer, "RSA") in warning
    assert "auth.rsa_alg" in warning
    assert "APP_CONFIG_AUTH__RSA_ALG" in warning
    assert rsa_alg_warnings(parse_jwks(issuer.jwks())) == []


def test_jwtedge_bake_warns_about_an_rsa_key_without_alg(
    issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("APP_CONFIG_")]:
        monkeypatch.delenv(name)
    jwks = without_alg(issuer.jwks(), "RSA")
    documents = {
        f"{ISSUER}/.well-known/openid-configuration": issuer.discovery(),
        f"{ISSUER}/jwks": jwks,
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=documents[str(request.url)])

    result = CliRunner().invoke(
        app,
        ["bake", "--issuer", ISSUER, "--allow-loopback"],
        obj=Seams(transport=httpx2.MockTransport(handler)),
    )

    assert result.exit_code == 0, result.output
    shown = " ".join(result.stderr.split())
    assert "RSA without an alg" in shown
    assert "auth.rsa_alg" in shown
    assert kid_of(issuer, "RSA") in shown
