"""Fuzz the refresher with random token-endpoint responses.

An ``httpx2.MockTransport`` answers every refresh with a drawn response:
random status codes, JSON bodies with missing, extra and wrong-typed fields,
genuine tokens mixed with forged ones and tokens of another user or session,
JSON that is not an object, bytes that are not JSON, very large bodies.
Properties (DESIGN.md, Refresh and Errors):

- ``refresh()`` returns a ``RefreshResult`` only when the response is a 200
  JSON object whose ``access_token`` the independent oracle calls genuinely
  valid, for the proof's ``sub`` (and ``sid``), with a valid matching ID
  token when there is one; it does return one whenever that holds;
- anything else raises ``RefreshFailed``, never another exception;
- no message, repr or context holds a token from the response or the
  refresh token that was sent.

Every example spends a fresh refresh token, so single-flight, grace and
spent-token memory never carry over between examples.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.conftest import make_config
from tests.fuzz import Oracle, assert_documented, examples, json_values, mutate, mutations
from verifier.errors import RefreshFailed
from verifier.oauth import MAX_RESPONSE_BYTES
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

NOW = 1_760_000_000
TOKEN_ENDPOINT = "https://issuer.test/token"


@dataclass(repr=False)
class Endpoint:
    """A refresher whose token endpoint answers whatever the example says."""

    refresher: InProcessRefresher
    verifier: TokenVerifier
    oracle: Oracle
    access: dict[str, str]
    ids: dict[str, str]
    answer: list[httpx2.Response]

    def __repr__(self) -> str:
        return "Endpoint()"


@pytest.fixture(scope="module")
def endpoint(issuer: DevIssuer) -> Endpoint:
    stranger = DevIssuer(issuer=issuer.issuer, audience="api", client_id="web", alg="Ed25519")
    access = {
        "u1": issuer.access_token("u1", iat=NOW),
        "u1 sid s1": issuer.access_token("u1", iat=NOW, sid="s1", alg="ES256"),
        "u1 sid s2": issuer.access_token("u1", iat=NOW, sid="s2", alg="Ed25519"),
        "u2": issuer.access_token("u2", iat=NOW),
        "u1 expired": issuer.access_token("u1", iat=NOW - 1000),
        "u1 other audience": issuer.access_token("u1", iat=NOW, audience="other"),
        "u1 ID token": issuer.id_token("u1", iat=NOW),
        "u1 by a stranger": stranger.access_token("u1", iat=NOW),
        "u1 without exp": issuer.access_token("u1", iat=NOW, extra={"exp": None}),
    }
    ids = {
        "u1": issuer.id_token("u1", iat=NOW),
        "u1 sid s1": issuer.id_token("u1", iat=NOW, sid="s1", alg="ES256"),
        "u1 sid s2": issuer.id_token("u1", iat=NOW, sid="s2"),
        "u2": issuer.id_token("u2", iat=NOW),
        "u1 for another client": issuer.id_token("u1", iat=NOW, audience="other"),
        "u1 access token": access["u1"],
        "u1 by a stranger": stranger.id_token("u1", iat=NOW),
    }
    verifier = TokenVerifier.from_config(make_config(issuer), now=lambda: NOW)
    answer = [httpx2.Response(500)]
    refresher = InProcessRefresher(
        token_endpoint=TOKEN_ENDPOINT,
        client_id="web",
        verifier=verifier,
        transport=httpx2.MockTransport(lambda request: answer[0]),
    )
    oracle = Oracle(issuer.jwks(), issuer=issuer.issuer, audience="api", client_id="web", now=NOW)
    return Endpoint(refresher, verifier, oracle, access, ids, answer)


@st.composite
def tokens_from(draw: st.DrawFn, pool: dict[str, str], *, absent: int) -> Any:
    """A token field: a pool token (maybe mutated), anything else, or absent.

    ``u1`` (the proof's user, no ``sid``) is drawn more often than the rest,
    so responses that must succeed are common enough to check that too.
    """
    kinds = ["u1"] * 4 + ["pool"] * 6 + ["mutated", "mutated", "json"] + ["absent"] * absent
    kind = draw(st.sampled_from(kinds))
    if kind == "absent":
        return ...
    if kind == "json":
        return draw(json_values)
    tokens = list(pool.values())
    token = pool["u1"] if kind == "u1" else pool[draw(st.sampled_from(sorted(pool)))]
    if kind == "mutated":
        token = mutate(
            token, draw(st.lists(mutations(len(tokens)), min_size=1, max_size=2)), tokens
        )
    return token


@st.composite
def responses(draw: st.DrawFn, endpoint: Endpoint, sent: str) -> tuple[httpx2.Response, Any]:
    """A token-endpoint answer, and the JSON body it was built from (or None)."""
    common = st.sampled_from([200] * 12 + [201, 204, 400, 401, 403, 429, 500, 503])
    any_status = st.integers(min_value=100, max_value=599)
    status = draw(draw(st.sampled_from([common] * 6 + [any_status])))
    headers = {"content-type": draw(st.sampled_from(["application/json", "text/html", ""]))}
    shape = draw(st.sampled_from(["object"] * 10 + ["json", "bytes", "huge", "empty"]))
    if shape == "bytes":
        return httpx2.Response(status, content=draw(st.binary(max_size=200)), headers=headers), None
    if shape == "empty":
        return httpx2.Response(status, content=b"", headers=headers), None
    if shape == "json":
        body: Any = draw(json_values)
    else:
        body = {}
        fields = {
            "access_token": tokens_from(endpoint.access, absent=1),
            "id_token": tokens_from(endpoint.ids, absent=6),
            "refresh_token": st.sampled_from(
                [...] * 3 + [json_values, st.text(max_size=30)]
            ).flatmap(
                lambda choice: choice if isinstance(choice, st.SearchStrategy) else st.just(choice)
            ),
            "token_type": st.sampled_from(["Bearer", "bearer", "mac", 1, ...]),
            "expires_in": st.one_of(st.just(...), json_values),
            "scope": st.one_of(st.just(...), json_values),
            # Issuers echo all sorts of things in "error": even the tokens.
            "error": st.one_of(
                st.just(...),
                st.just(...),
                st.sampled_from(["invalid_grant", "invalid_client", "server_error"]),
                st.just(sent),
                st.sampled_from(sorted(endpoint.access.values())),
                json_values,
            ),
            "error_description": st.one_of(st.just(...), st.text(max_size=40)),
        }
        for name, strategy in fields.items():
            value = draw(strategy)
            if value is not ...:
                body[name] = value
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            body[draw(st.text(max_size=8))] = draw(json_values)
    if shape == "huge":
        body["padding"] = "x" * draw(st.integers(min_value=10_000, max_value=2_000_000))
    content = json.dumps(body).encode()
    return httpx2.Response(status, content=content, headers=headers), body


#: Opaque refresh tokens: any text, or the lower-case kind some issuers mint.
refresh_tokens = st.text(max_size=20) | st.from_regex(r"[a-z_]{0,24}", fullmatch=True)


def unique_suffix() -> str:
    """32 random lower-case letters: unique per example, still an opaque token."""
    return uuid.uuid4().hex.translate(str.maketrans("0123456789", "qrstuvwxyz"))


def should_succeed(
    endpoint: Endpoint, response: httpx2.Response, body: Any, proof: dict[str, Any]
) -> bool:
    """What DESIGN.md's Refresh section asks of an acceptable token response."""
    if response.status_code != 200 or not isinstance(body, dict):
        return False
    if len(response.content) > MAX_RESPONSE_BYTES:
        return False  # read no further than the cap (verifier/oauth.py)
    claims = endpoint.oracle.access_claims(body.get("access_token"))
    if claims is None or claims["sub"] != proof["sub"]:
        return False
    if proof.get("sid") is not None and claims.get("sid") != proof["sid"]:
        return False
    id_token = body.get("id_token")
    if id_token is not None and endpoint.oracle.id_claims(id_token, claims) is None:
        return False
    refresh_token = body.get("refresh_token")
    return refresh_token is None or isinstance(refresh_token, str)


def secrets_in(body: Any, sent: str) -> list[str]:
    """Every string in the response that could be a token, and the one we sent."""
    found = [sent]
    if isinstance(body, dict):
        for name in ("access_token", "id_token", "refresh_token"):
            if isinstance(body.get(name), str):
                found.append(body[name])
    return found


@settings(max_examples=examples(500))
@given(data=st.data())
async def test_refresh_returns_new_tokens_only_for_a_genuine_access_token_of_the_same_user(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    proof_token = data.draw(st.sampled_from(["u1"] * 3 + ["u1 sid s1"]), label="proof")
    proof = endpoint.verifier.verify_access(endpoint.access[proof_token])
    # Fresh per example: a drawn prefix, made unique so no flight, grace or
    # spent-token memory from an earlier example applies.
    sent = data.draw(refresh_tokens, label="refresh token") + unique_suffix()
    response, body = data.draw(responses(endpoint, sent), label="response")
    endpoint.answer[0] = response
    expected = should_succeed(endpoint, response, body, proof)

    try:
        result = await endpoint.refresher.refresh(sent, proof=proof)
    except RefreshFailed as err:
        event("refresh_failed")
        refused = err
    else:
        refused = None
    if refused is not None:
        secrets = secrets_in(body, sent)
        assert_documented(refused, *secrets)
        assert not expected, f"a good token response was refused: {refused.message}"
        return
    event("refreshed")
    assert expected, "refresh() accepted a response without a genuine token for this user"
    assert isinstance(body, dict)
    assert result.tokens.access == body["access_token"]
    assert result.claims["sub"] == proof["sub"]
    for secret in secrets_in(body, sent):
        if len(secret) >= 16:  # as in assert_documented: short strings match by chance
            assert secret not in repr(result)
            assert secret not in repr(result.tokens)


# -- regressions for bugs the fuzzer found --------------------------------------


@pytest.mark.parametrize("echoed", ["the refresh token sent", "a new access token"])
async def test_refresh_failure_message_never_echoes_a_token_from_the_error_member(
    endpoint: Endpoint, echoed: str
) -> None:
    """Fixed: the ``error`` member used to reach the message verbatim."""
    sent = "rt-" + uuid.uuid4().hex
    token = sent if echoed == "the refresh token sent" else endpoint.access["u1"]
    endpoint.answer[0] = httpx2.Response(400, json={"error": token})
    proof = endpoint.verifier.verify_access(endpoint.access["u1"])
    with pytest.raises(RefreshFailed) as info:
        await endpoint.refresher.refresh(sent, proof=proof)
    assert token not in str(info.value)
    assert token not in repr(info.value)


async def test_refresh_failure_message_never_echoes_a_lowercase_refresh_token(
    endpoint: Endpoint,
) -> None:
    sent = "opaque_" + unique_suffix()
    endpoint.answer[0] = httpx2.Response(400, json={"error": sent})
    proof = endpoint.verifier.verify_access(endpoint.access["u1"])
    with pytest.raises(RefreshFailed) as info:
        await endpoint.refresher.refresh(sent, proof=proof)
    assert sent not in str(info.value)
    assert sent not in repr(info.value)
