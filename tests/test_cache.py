"""The verified-token cache of TokenVerifier.session(): hits, expiry, eviction, bounds, forgery."""

from __future__ import annotations

import time
from typing import Any

import pytest
from freezegun import freeze_time
from joserfc.jwk import ECKey

from tests.conftest import make_config
from verifier.config import CacheSettings
from verifier.errors import (
    IdTokenMismatch,
    KeyNotFound,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    VerifierError,
)
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore
from verifier.testing import DevIssuer
from verifier.tokens import Clock, TokenVerifier

LEEWAY = 30
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_verifier(
    issuer: DevIssuer,
    *,
    cache_size: int = 16,
    now: Clock = time.time,
    jwks: dict[str, Any] | None = None,
) -> TokenVerifier:
    keys = KeyStore(parse_jwks(jwks if jwks is not None else issuer.jwks()))
    return TokenVerifier(
        keys,
        issuer=issuer.issuer,
        audiences=("api",),
        client_id="web",
        leeway=LEEWAY,
        cache_size=cache_size,
        now=now,
    )


def cached_count(verifier: TokenVerifier) -> int:
    # No public size accessor exists; the bound itself is what these tests pin down.
    cache = verifier._cache
    return 0 if cache is None else len(cache)


def is_cached(verifier: TokenVerifier, access: str, id_token: str | None = None) -> bool:
    cache = verifier._cache
    return cache is not None and (access, id_token) in cache


def with_signature_char(token: str, index: int) -> str:
    """``token`` with one signature character changed, keeping canonical base64url.

    ``index`` counts from the end of the token. For the last character only the
    values whose unused low bits are zero keep the encoding canonical.
    """
    position = len(token) + index if index < 0 else index
    old = token[position]
    if index == -1:
        signature_length = len(token.rpartition(".")[2])
        choices = "AQgw" if signature_length % 4 == 2 else "AEIMQUYcgkosw048"
    else:
        choices = _B64URL
    new = next(char for char in choices if char != old)
    return token[:position] + new + token[position + 1 :]


def token_for(issuer: DevIssuer, sub: str = "u1", **kwargs: Any) -> str:
    return issuer.access_token(sub=sub, organizations=[{"id": "o1", "slug": "acme"}], **kwargs)


# -- hits -----------------------------------------------------------------------------


def test_a_hit_returns_the_same_session_object_and_counts_a_hit(issuer: DevIssuer) -> None:
    verifier = make_verifier(issuer)
    token = token_for(issuer)

    first = verifier.session(token)
    second = verifier.session(token)

    assert second is first
    assert (verifier.cache_stats.hits, verifier.cache_stats.misses) == (1, 1)


def test_first_sight_of_a_token_is_a_miss_that_verifies_it(issuer: DevIssuer) -> None:
    verifier = make_verifier(issuer)

    session = verifier.session(token_for(issuer, sub="u7"))

    assert session.user.id == "u7"
    assert (verifier.cache_stats.hits, verifier.cache_stats.misses) == (0, 1)


def test_tokens_given_as_bytes_are_verified_but_not_cached(issuer: DevIssuer) -> None:
    verifier = make_verifier(issuer)
    token = token_for(issuer).encode("ascii")

    first = verifier.session(token)
    second = verifier.session(token)

    assert first is not second
    assert first.user.id == second.user.id == "u1"
    assert cached_count(verifier) == 0


# -- time -----------------------------------------------------------------------------


def test_an_expired_token_in_the_cache_is_rejected_and_evicted(issuer: DevIssuer) -> None:
    with freeze_time("2030-01-01 00:00:00") as frozen:
        verifier = make_verifier(issuer, now=time.time)
        token = token_for(issuer, ttl=60, iat=int(time.time()))
        session = verifier.session(token)

        frozen.tick(60 + LEEWAY - 1)
        assert verifier.session(token) is session  # still inside exp + leeway

        frozen.tick(1)
        with pytest.raises(TokenExpired):
            verifier.session(token)
        assert not is_cached(verifier, token)
        with pytest.raises(TokenExpired):
            verifier.session(token)

    assert verifier.cache_stats.hits == 1
    assert verifier.cache_stats.misses == 3


def test_a_token_whose_nbf_is_in_the_future_is_refused_and_not_cached(
    issuer: DevIssuer,
) -> None:
    with freeze_time("2030-01-01 00:00:00") as frozen:
        verifier = make_verifier(issuer, now=time.time)
        now = int(time.time())
        token = token_for(issuer, iat=now, ttl=3600, extra={"nbf": now + 120})

        for _ in range(2):
            with pytest.raises(TokenNotYetValid):
                verifier.session(token)
        assert cached_count(verifier) == 0

        frozen.tick(120 - LEEWAY)
        assert verifier.session(token).user.id == "u1"


def test_a_cached_session_is_not_served_before_its_nbf_when_the_clock_goes_back(
    issuer: DevIssuer,
) -> None:
    with freeze_time("2030-01-01 12:00:00") as frozen:
        verifier = make_verifier(issuer, now=time.time)
        now = int(time.time())
        token = token_for(issuer, iat=now - 300, ttl=3600, extra={"nbf": now})
        session = verifier.session(token)
        assert verifier.session(token) is session

        frozen.tick(-(LEEWAY + 30))  # e.g. NTP steps the clock back a minute
        with pytest.raises(TokenNotYetValid):
            verifier.session(token)
        assert not is_cached(verifier, token)


# -- key changes ----------------------------------------------------------------------


def test_removing_a_key_evicts_the_sessions_verified_with_it(issuer: DevIssuer) -> None:
    jwks = issuer.jwks()
    verifier = make_verifier(issuer, jwks=jwks)
    rs_kid = issuer.kids("RS256")[0]
    rs_token = token_for(issuer, kid=rs_kid)
    es_token = token_for(issuer, alg="ES256")
    verifier.session(rs_token)
    es_session = verifier.session(es_token)

    verifier.keys.load(parse_jwks({"keys": [k for k in jwks["keys"] if k["kid"] != rs_kid]}))

    assert not is_cached(verifier, rs_token)
    with pytest.raises(KeyNotFound):
        verifier.session(rs_token)
    assert verifier.session(es_token) is es_session  # other keys' sessions survive


def test_replacing_a_key_under_the_same_kid_evicts_its_sessions(issuer: DevIssuer) -> None:
    jwks = issuer.jwks()
    verifier = make_verifier(issuer, jwks=jwks)
    es_kid = issuer.kids("ES256")[0]
    es_token = token_for(issuer, kid=es_kid)
    rs_token = token_for(issuer, alg="RS256")
    verifier.session(es_token)
    rs_session = verifier.session(rs_token)

    other = {**ECKey.generate_key("P-256").as_dict(private=False)}
    other.update(kid=es_kid, alg="ES256", use="sig")
    replaced = [other if k["kid"] == es_kid else k for k in jwks["keys"]]
    verifier.keys.load(parse_jwks({"keys": replaced}))

    assert not is_cached(verifier, es_token)
    with pytest.raises(SignatureInvalid):
        verifier.session(es_token)
    assert verifier.session(rs_token) is rs_session


def test_adding_a_key_keeps_the_cached_sessions(issuer: DevIssuer) -> None:
    jwks = issuer.jwks()
    verifier = make_verifier(issuer, jwks=jwks)
    token = token_for(issuer)
    session = verifier.session(token)

    extra = {**ECKey.generate_key("P-256").as_dict(private=False)}
    extra.update(kid="brand-new", alg="ES256", use="sig")
    verifier.keys.load(parse_jwks({"keys": [*jwks["keys"], extra]}))

    assert verifier.session(token) is session


# -- bounds ---------------------------------------------------------------------------


def test_the_cache_never_holds_more_than_its_size_and_keeps_recently_used(
    issuer: DevIssuer,
) -> None:
    verifier = make_verifier(issuer, cache_size=3)
    tokens = [token_for(issuer, sub=f"u{i}") for i in range(5)]
    sessions = {}

    for index in (0, 1, 2):
        sessions[index] = verifier.session(tokens[index])
    assert verifier.session(tokens[0]) is sessions[0]  # 0 is now the most recent
    for index in (3, 4):  # each evicts the least recently used: 1, then 2
        sessions[index] = verifier.session(tokens[index])
        assert cached_count(verifier) <= 3

    assert cached_count(verifier) == 3
    assert [is_cached(verifier, token) for token in tokens] == [True, False, False, True, True]
    for index in (0, 3, 4):
        assert verifier.session(tokens[index]) is sessions[index]
    assert verifier.session(tokens[1]) is not sessions[1]  # verified again
    assert cached_count(verifier) == 3


def test_cache_size_zero_turns_the_cache_off(issuer: DevIssuer) -> None:
    verifier = make_verifier(issuer, cache_size=0)
    token = token_for(issuer)

    first = verifier.session(token)
    second = verifier.session(token)

    assert first is not second
    assert first.user.id == second.user.id
    assert verifier.cache_stats.hits == 0
    assert cached_count(verifier) == 0


def test_cache_size_comes_from_config(issuer: DevIssuer) -> None:
    config = make_config(issuer)
    off = config.model_copy(update={"cache": CacheSettings(size=0)})

    assert TokenVerifier.from_config(config).cache_size == 10_000
    verifier = TokenVerifier.from_config(off)
    token = token_for(issuer)
    assert verifier.session(token) is not verifier.session(token)


# -- forgeries and failures -----------------------------------------------------------


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        pytest.param(lambda t, _: with_signature_char(t, -1), SignatureInvalid, id="last-char"),
        pytest.param(lambda t, _: with_signature_char(t, -40), SignatureInvalid, id="mid-sig"),
        pytest.param(
            lambda t, other: t.rpartition(".")[0] + "." + other.rpartition(".")[2],
            SignatureInvalid,
            id="another-tokens-signature",
        ),
        pytest.param(lambda t, _: t + "AA", SignatureInvalid, id="cached-token-is-a-prefix"),
        pytest.param(lambda t, _: t[:-1], TokenMalformed, id="prefix-of-cached-token"),
    ],
)
def test_a_forged_token_close_to_a_cached_one_is_not_served_from_the_cache(
    issuer: DevIssuer, forge: Any, error: type[VerifierError]
) -> None:
    verifier = make_verifier(issuer)
    token = token_for(issuer, sub="victim")
    other = token_for(issuer, sub="someone-else")
    session = verifier.session(token)
    forged = forge(token, other)
    assert forged != token

    with pytest.raises(error):
        verifier.session(forged)

    assert not is_cached(verifier, forged)
    assert verifier.session(token) is session


def test_a_forged_token_of_equal_length_is_refused(issuer: DevIssuer) -> None:
    verifier = make_verifier(issuer)
    token = token_for(issuer)
    verifier.session(token)
    forged = with_signature_char(token, -1)

    assert len(forged) == len(token)
    with pytest.raises(SignatureInvalid):
        verifier.session(forged)


@pytest.mark.parametrize(
    ("make_bad", "error"),
    [
        pytest.param(lambda i: with_signature_char(token_for(i), -1), SignatureInvalid, id="sig"),
        pytest.param(lambda i: token_for(i, ttl=-120), TokenExpired, id="expired"),
    ],
)
def test_a_failure_is_never_cached_as_a_success(
    issuer: DevIssuer, make_bad: Any, error: type[VerifierError]
) -> None:
    verifier = make_verifier(issuer)
    bad = make_bad(issuer)

    for _ in range(2):
        with pytest.raises(error):
            verifier.session(bad)

    assert (verifier.cache_stats.hits, verifier.cache_stats.misses) == (0, 2)
    assert cached_count(verifier) == 0


def test_the_id_token_is_part_of_the_cache_key(issuer: DevIssuer) -> None:
    verifier = make_verifier(issuer)
    access = token_for(issuer, sub="u1", sid="s1")
    id_token = issuer.id_token(sub="u1", sid="s1", email="u1@example.com")
    paired = verifier.session(access, id_token)

    with pytest.raises(SignatureInvalid):
        verifier.session(access, with_signature_char(id_token, -1))
    with pytest.raises(IdTokenMismatch):
        verifier.session(access, issuer.id_token(sub="someone-else"))
    alone = verifier.session(access)

    assert alone is not paired
    assert alone.user.email is None
    assert paired.user.email == "u1@example.com"
    assert verifier.session(access, id_token) is paired
    assert verifier.cache_stats.hits == 1


def test_an_id_token_given_as_bytes_is_verified_even_when_the_access_token_is_cached(
    issuer: DevIssuer,
) -> None:
    verifier = make_verifier(issuer)
    access = token_for(issuer)
    verifier.session(access)

    with pytest.raises(TokenMalformed):
        verifier.session(access, b"not.a.token")
