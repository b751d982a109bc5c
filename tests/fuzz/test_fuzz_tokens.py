"""Fuzz the token verifier: mutated genuine tokens, hostile signed JSON, noise.

Properties (DESIGN.md, Verification rules and Errors):

- every refusal is a ``VerifierError`` leaf whose ``code`` is in
  ``ERROR_CODES``, and neither ``str(err)`` nor ``repr(err)`` holds the token;
- a token is accepted only when the independent :class:`~tests.fuzz.Oracle`
  (stdlib JSON and raw ``cryptography`` against the baked public keys) says it
  is genuinely valid: the issuer's signature over exactly these bytes, a
  header the rules allow, and valid claims.

The clock is fixed (``NOW``) so the long profile can run for hours.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.conftest import make_config
from tests.fuzz import (
    FORMS,
    Mutation,
    Oracle,
    as_form,
    assert_documented,
    b64url,
    examples,
    mutate,
    mutations,
)
from verifier.config import AppConfig
from verifier.errors import VerifierError
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier, verify_jws

NOW = 1_760_000_000
ALGS = ("RS256", "ES256", "Ed25519")


@dataclass(repr=False)
class Corpus:
    """Genuine tokens of every key type, near-misses, and a stranger's tokens."""

    issuer: DevIssuer
    config: AppConfig
    oracle: Oracle
    verifier: TokenVerifier
    kids: dict[str, str]
    originals: list[str]

    def __repr__(self) -> str:
        return f"Corpus({len(self.originals)} originals)"

    def fresh_verifier(self) -> TokenVerifier:
        """A verifier with an empty cache, for examples that must not share state."""
        return TokenVerifier.from_config(self.config, now=lambda: NOW)


@pytest.fixture(scope="module")
def corpus(issuer: DevIssuer) -> Corpus:
    # Another issuer at the same URL: real signatures from keys we never baked.
    stranger = DevIssuer(issuer=issuer.issuer, audience="api", client_id="web", alg="ES256")
    kids = {alg: issuer.kids(alg)[-1] for alg in ALGS}
    orgs = [{"id": "org_1", "slug": "acme", "name": "Acme", "role": "owner"}]
    projects = [{"id": "prj_1", "slug": "web", "organizationId": "org_1"}]
    originals: list[str] = []
    for alg in ALGS:
        kid = kids[alg]
        originals += [
            issuer.access_token("u1", iat=NOW, kid=kid, organizations=orgs, projects=projects),
            issuer.access_token("u1", iat=NOW, kid=kid, sid="s1", typ="JWT"),
            issuer.id_token("u1", iat=NOW, kid=kid),
            issuer.id_token("u1", iat=NOW, kid=kid, sid="s1", nonce="n"),
            issuer.access_token("u1", iat=NOW - 1000, kid=kid),  # expired
            issuer.access_token("u1", iat=NOW, kid=kid, audience="other"),
            issuer.sign(  # no kid: the one key of this algorithm must be chosen
                {"iss": issuer.issuer, "sub": "u2", "aud": "api", "exp": NOW + 60}, {"alg": alg}
            ),
        ]
    originals.append(issuer.access_token("u1", iat=NOW, kid=kids["Ed25519"], alg="EdDSA"))
    originals.append(stranger.access_token("u1", iat=NOW))
    originals.append(stranger.id_token("u1", iat=NOW))
    config = make_config(issuer)
    oracle = Oracle(issuer.jwks(), issuer=issuer.issuer, audience="api", client_id="web", now=NOW)
    verifier = TokenVerifier.from_config(config, now=lambda: NOW)
    return Corpus(issuer, config, oracle, verifier, kids, originals)


def attempt(call: Callable[[Any], Any], token: object) -> Any:
    """``call(token)``, or None after checking the refusal is documented."""
    try:
        return call(token)
    except VerifierError as err:
        event(err.code)
        assert_documented(err, token)
        return None


def check_token(corpus: Corpus, token: object) -> None:
    """Every verifier entry point on ``token``; an acceptance must be genuine."""
    verifier, oracle = corpus.verifier, corpus.oracle
    jws = attempt(lambda t: verify_jws(t, verifier.keys), token)
    if jws is not None:
        parts = oracle.signed_parts(token)
        assert parts is not None, "verify_jws accepted a JWS the oracle refuses"
        assert jws[1] == parts[1]
    access = attempt(verifier.verify_access, token)
    if access is not None:
        expected = oracle.access_claims(token)
        assert expected is not None, "verify_access accepted a token the oracle refuses"
        # Same members and subject; numbers may differ in type (orjson reads
        # integers beyond 64 bits as floats, the stdlib as ints).
        assert set(access) == set(expected)
        assert access["sub"] == expected["sub"]
    id_claims = attempt(verifier.verify_id, token)
    if id_claims is not None:
        assert oracle.id_claims(token) is not None, "verify_id accepted an invalid ID token"


# -- mutated genuine tokens -------------------------------------------------


@settings(max_examples=examples(700))
@given(data=st.data())
def test_mutated_tokens_are_refused_unless_genuinely_valid(
    corpus: Corpus, data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from(corpus.originals), label="base")
    edits: list[Mutation] = data.draw(
        st.lists(mutations(len(corpus.originals)), max_size=4), label="edits"
    )
    token = as_form(mutate(base, edits, corpus.originals), data.draw(FORMS, label="form"))
    check_token(corpus, token)
    if not edits and corpus.oracle.access_claims(base) is not None:
        # The generator is not degenerate: an untouched genuine token passes.
        assert corpus.verifier.verify_access(token)


@settings(max_examples=examples(300))
@given(
    token=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"),
        st.lists(st.binary(max_size=120).map(b64url), min_size=0, max_size=5).map(".".join),
        st.none(),
        st.integers(),
    )
)
def test_random_input_raises_only_documented_errors(corpus: Corpus, token: object) -> None:
    check_token(corpus, token)


# -- hostile JSON, really signed ----------------------------------------------
#
# JSON is built as text so it can hold what no encoder writes: numbers beyond
# a double (1e309, 10**400), escaped lone surrogates, duplicate members, member
# names written with escapes, nesting up to the size cap.

SPECIAL_NUMBERS = [
    "1e309", "-1e309", "1E400", "1e-400", "-0", "0.0", "NaN", "Infinity", "-Infinity",
    str(10**400), str(-(10**400)), "1" * 30, "9007199254740993", "1.7976931348623157e308",
]  # fmt: skip


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


escaped_surrogates = st.lists(
    st.integers(min_value=0xD800, max_value=0xDFFF), min_size=1, max_size=3
).map(lambda points: '"' + "".join(f"\\u{point:04x}" for point in points) + '"')

json_leaves = st.one_of(
    st.sampled_from(["null", "true", "false", '""', "0", "[]", "{}"]),
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats().map(json.dumps),
    st.text(max_size=24).map(_quoted),
    escaped_surrogates,
)


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{name}:{value}" for name, value in pairs) + "}"


member_names = st.one_of(
    st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat", "sid", "alg", "kid", "typ"]).map(
        _quoted
    ),
    st.text(max_size=8).map(_quoted),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(member_names, inner), max_size=4).map(_object),
    ),
    max_leaves=8,
)
deep_nesting = st.one_of(
    st.integers(min_value=1, max_value=2900).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=1200).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)


def _escaped(name: str) -> str:
    """The member name with its first letter as a \\u escape: the same name to JSON."""
    return '"' + f"\\u{ord(name[0]):04x}" + name[1:] + '"'


def claim_values(issuer: str) -> dict[str, st.SearchStrategy[str]]:
    """Near-valid and hostile raw values for each claim the verifier checks."""
    dates = st.one_of(
        st.sampled_from([NOW + 300, NOW - 29, NOW - 31, NOW + 29, NOW + 31, NOW, 0]).map(str),
        st.sampled_from(["true", "false", "null", '"1760000300"', "[]", "1760000300.5"]),
        st.sampled_from(SPECIAL_NUMBERS),
    )
    return {
        "iss": st.sampled_from([issuer, issuer + "/", issuer.upper(), "", "http://evil"]).map(
            _quoted
        ),
        "sub": st.sampled_from(['"u1"', '"u2"', '""', "1", "null", '["u1"]']),
        "aud": st.sampled_from(
            ['"api"', '["api"]', '["web","api"]', '["web"]', '"web"', "[]", '["api",1]', "null"]
        ),
        "azp": st.sampled_from(['"web"', '"other"', "null", "1"]),
        "exp": dates,
        "nbf": dates,
        "iat": dates,
        "sid": st.sampled_from(['"s1"', '"s2"', "1", "null"]),
        "nonce": st.sampled_from(['"n"', "null"]),
        "at_hash": st.just('"h"'),
        "organizations": st.sampled_from(
            ['[{"id":"o","name":"O"}]', '[{"id":1}]', '"org"', "[null]", "[]"]
        ),
        "scope": st.sampled_from(['"openid read"', '["a"]', "1", '["a",1]']),
    }


@st.composite
def hostile_json(draw: st.DrawFn, base: dict[str, str], values: dict[str, Any]) -> str:
    """``base`` (member → raw value) with members set, removed, duplicated, escaped."""
    # Pairs of (member name as JSON text, raw value).
    pairs = [(_quoted(name), value) for name, value in base.items()]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        op = draw(st.sampled_from(["set", "delete", "duplicate", "escape", "nest"]))
        name = draw(st.sampled_from(sorted(values)) | st.text(max_size=6))
        strategy = values.get(name, json_values)
        value = draw(st.one_of(strategy, json_values) if name in values else strategy)
        quoted = _quoted(name)
        if op == "set":
            pairs = [(n, v) for n, v in pairs if n != quoted] + [(quoted, value)]
        elif op == "delete":
            pairs = [(n, v) for n, v in pairs if n != quoted]
        elif op == "duplicate":
            pairs.append((quoted, value))
        elif op == "escape" and name:
            pairs.append((_escaped(name), value))
        else:
            pairs.append((quoted, draw(deep_nesting)))
    text = _object(pairs)
    shape = draw(st.sampled_from(["object", "object", "object", "other", "framed"]))
    if shape == "other":
        return draw(st.one_of(json_values, deep_nesting, st.text(max_size=40)))
    if shape == "framed":
        prefix = draw(st.sampled_from(["", " ", "\ufeff", "\n"]))
        suffix = draw(st.sampled_from(["", " ", "x", "}", ",", "\x00"]))
        return prefix + text + suffix
    return text


def _header_values(kids: dict[str, str]) -> dict[str, st.SearchStrategy[str]]:
    algs = ["RS256", "ES256", "Ed25519", "EdDSA", "PS256", "RS384", "ES384", "HS256", "none"]
    return {
        "alg": st.one_of(st.sampled_from([*algs, "NONE", "nOnE", "", "rs256"]).map(_quoted)),
        "kid": st.one_of(
            st.sampled_from([*kids.values(), "", "unknown", "../../etc/passwd"]).map(_quoted),
            st.sampled_from(["null", "1", '["a"]']),
        ),
        "typ": st.sampled_from(['"JWT"', '"at+jwt"', '"application/AT+JWT"', '"jwt"', "1", "null"]),
        "crit": st.sampled_from(['["exp"]', "[]", '"b64"']),
        "b64": st.sampled_from(["false", "true", '"false"', "0"]),
        "jku": st.just('"https://evil.example/jwks"'),
        "x5u": st.just('"https://evil.example/cert"'),
        "x5c": st.just('["MIIB"]'),
        "jwk": st.just('{"kty":"oct","k":"AAAA"}'),
    }


def _access_base(issuer: str) -> dict[str, str]:
    return {
        "iss": _quoted(issuer),
        "sub": '"u1"',
        "aud": '"api"',
        "iat": str(NOW),
        "exp": str(NOW + 300),
        "scope": '"openid"',
    }


def _id_base(issuer: str) -> dict[str, str]:
    return {
        "iss": _quoted(issuer),
        "sub": '"u1"',
        "aud": '"web"',
        "iat": str(NOW),
        "exp": str(NOW + 300),
        "email": '"a@example.com"',
    }


@settings(max_examples=examples(500))
@given(data=st.data())
def test_signed_hostile_json_is_accepted_only_when_genuinely_valid(
    corpus: Corpus, data: st.DataObject
) -> None:
    issuer = corpus.issuer
    signer = data.draw(st.sampled_from(ALGS), label="signing key")
    kid = corpus.kids[signer]
    header_base = {"alg": _quoted(signer), "kid": _quoted(kid), "typ": '"JWT"'}
    header = data.draw(hostile_json(header_base, _header_values(corpus.kids)), label="header")
    base = data.draw(st.sampled_from([_access_base, _id_base]), label="claims")(issuer.issuer)
    payload = data.draw(hostile_json(base, claim_values(issuer.issuer)), label="payload")
    token = issuer.sign(payload, header, kid=kid)
    check_token(corpus, token)


# -- sessions: access + ID pairs, through the verified-token cache -------------


@st.composite
def presented(draw: st.DrawFn, corpus: Corpus, *, optional: bool) -> object:
    """A token as a caller presents it: genuine, mutated, empty or absent."""
    choices = ["genuine", "genuine", "mutated", "mutated", "empty"]
    kind = draw(st.sampled_from([*choices, "absent"] if optional else choices))
    if kind == "absent":
        return None
    if kind == "empty":
        return as_form("", draw(FORMS))
    token = draw(st.sampled_from(corpus.originals))
    if kind == "mutated":
        edits = draw(st.lists(mutations(len(corpus.originals)), min_size=1, max_size=2))
        token = mutate(token, edits, corpus.originals)
    return as_form(token, draw(FORMS))


@settings(max_examples=examples(400))
@given(data=st.data())
def test_session_pairs_are_accepted_only_when_both_tokens_are_genuine(
    corpus: Corpus, data: st.DataObject
) -> None:
    # A fresh cache per example, then several calls in a row: a pair verified
    # once must not vouch for a different pair later (the cache is keyed by tokens).
    verifier = corpus.fresh_verifier()
    oracle = corpus.oracle
    # Few distinct access tokens per example, so calls hit the cache entries
    # that earlier calls of the same example left.
    accesses = data.draw(
        st.lists(presented(corpus, optional=False), min_size=1, max_size=2), label="accesses"
    )
    calls = data.draw(
        st.lists(
            st.tuples(st.sampled_from(accesses), presented(corpus, optional=True)),
            min_size=1,
            max_size=3,
        ),
        label="calls",
    )
    for access, id_token in calls:
        try:
            session = verifier.session(access, id_token)  # type: ignore[arg-type]
        except VerifierError as err:
            event(err.code)
            assert_documented(err, access, id_token)
            continue
        access_claims = oracle.access_claims(access)
        assert access_claims is not None, "session() accepted an invalid access token"
        if id_token:
            assert oracle.id_claims(id_token, access_claims) is not None, (
                "session() accepted an ID token that is invalid or for another subject"
            )
        assert session.user.id == access_claims["sub"]


def test_sanity_genuine_pair_builds_a_session(corpus: Corpus) -> None:
    """The corpus holds a valid pair, so the properties above are not vacuous."""
    access, _, id_token = corpus.originals[:3]
    assert corpus.fresh_verifier().session(access, id_token).user.id == "u1"


# -- regressions for bugs the fuzzer found (fixed) ------------------------------


@pytest.mark.parametrize("id_token", ["garbage", "another user's ID token", "the access token"])
def test_session_cache_does_not_vouch_for_an_unverified_bytes_id_token(
    corpus: Corpus, id_token: str
) -> None:
    """Found by test_session_pairs_...: a cache entry for the access token alone
    used to be returned for any bytes ID token (the lookup keyed it as None)."""
    verifier = corpus.fresh_verifier()
    access = corpus.originals[0]
    presented = {
        "garbage": b"garbage",
        "another user's ID token": corpus.issuer.id_token("u2", iat=NOW).encode(),
        "the access token": access.encode(),
    }[id_token]
    verifier.session(access)  # caches (access, None)
    with pytest.raises(VerifierError):
        verifier.session(access, presented)
