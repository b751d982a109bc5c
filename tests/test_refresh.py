"""InProcessRefresher on its own: single flight, grace, spent tokens, client auth, bad answers.

The token endpoint is a real DevIssuer app reached through
``httpx2.ASGITransport`` (or an ``httpx2.MockTransport`` for answers no issuer
would give); clocks are injected, so "time passes" without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote_plus

import httpx2
import pytest

from verifier.config import AppConfig
from verifier.errors import RefreshFailed
from verifier.jwks import parse_jwks
from verifier.refresh import InProcessRefresher, RefreshResult, token_key
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISSUER = "http://127.0.0.1:9000"
TOKEN_ENDPOINT = ISSUER + "/token"
GRACE = 10.0


class Clock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recording(httpx2.AsyncBaseTransport):
    """Forwards to ``inner`` and keeps every request it saw."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx2.Request] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


class Gated(httpx2.AsyncBaseTransport):
    """Holds every request until ``gate`` opens; ``entered`` says one is waiting."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.handle_async_request(request)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> DevIssuer:
    """A fresh issuer per test: its counters and fail switches are the assertions."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=clock)


def verifier_for(issuer: DevIssuer, clock: Clock) -> TokenVerifier:
    values: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": "api",
        "client_id": issuer.client_id,
        "jwks": parse_jwks(issuer.jwks()),
    }
    return TokenVerifier.from_config(AppConfig(auth=values, keys={"remote": "never"}), now=clock)


@pytest.fixture
def verifier(issuer: DevIssuer, clock: Clock) -> TokenVerifier:
    return verifier_for(issuer, clock)


@pytest.fixture
async def make_refresher(
    issuer: DevIssuer, verifier: TokenVerifier, clock: Clock
) -> AsyncIterator[Callable[..., InProcessRefresher]]:
    made: list[InProcessRefresher] = []

    def make(**kwargs: Any) -> InProcessRefresher:
        kwargs.setdefault("transport", httpx2.ASGITransport(app=issuer.app))
        kwargs.setdefault("token_endpoint", TOKEN_ENDPOINT)
        kwargs.setdefault("client_id", issuer.client_id)
        kwargs.setdefault("verifier", verifier)
        kwargs.setdefault("grace", GRACE)
        kwargs.setdefault("now", clock)
        refresher = InProcessRefresher(**kwargs)
        made.append(refresher)
        return refresher

    yield make
    for refresher in made:
        await refresher.aclose()


@pytest.fixture
def secrets_seen() -> list[str]:
    """Every token a test handled; none of them may reach a log line."""
    return []


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture, secrets_seen: list[str]) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text + "".join(str(record.args) for record in caplog.records)
    for secret in secrets_seen:
        assert secret not in text


def login(
    issuer: DevIssuer, secrets_seen: list[str], sub: str = "u1", **kwargs: Any
) -> dict[str, Any]:
    tokens = issuer.login(sub, **kwargs)
    secrets_seen.extend(
        tokens[kind] for kind in ("access_token", "id_token", "refresh_token") if kind in tokens
    )
    return tokens


def proof_of(verifier: TokenVerifier, token: str) -> dict[str, Any]:
    """What the middleware passes: the caller's own token, expiry ignored."""
    return verifier.verify_access(token, check_expiry=False)


def assert_no_secret(exc: RefreshFailed, *secrets: str) -> None:
    shown = " ".join([str(exc), repr(exc), exc.message, repr(exc.context), repr(exc.args)])
    for secret in secrets:
        assert secret not in shown


def remember(secrets_seen: list[str], result: RefreshResult) -> RefreshResult:
    tokens = result.tokens
    secrets_seen.extend(t for t in (tokens.access, tokens.id, tokens.refresh) if t)
    return result


# -- single flight ----------------------------------------------------------


async def test_concurrent_refreshes_of_one_token_make_one_issuer_call(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])

    results = await asyncio.gather(
        *(refresher.refresh(tokens["refresh_token"], proof=proof) for _ in range(50))
    )

    assert issuer.stats.token_requests == 1
    assert issuer.stats.refresh_grants == 1
    assert refresher.stats.calls == 1
    assert refresher.stats.ok == 1
    assert refresher.stats.joined == 49
    assert all(result is results[0] for result in results)
    new = remember(secrets_seen, results[0])
    assert new.tokens.refresh not in (None, tokens["refresh_token"])
    assert new.tokens.access != tokens["access_token"]
    assert new.claims["sub"] == "u1"
    assert new.claims["sid"] == proof["sid"]


async def test_joiners_without_matching_proof_are_refused_while_the_owner_succeeds(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    issuer.add_user("u2")
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen, "u1")
    other_user = login(issuer, secrets_seen, "u2")
    same_user_other_login = login(issuer, secrets_seen, "u1")
    proof = proof_of(verifier, tokens["access_token"])
    refresh_token = tokens["refresh_token"]

    outcomes = await asyncio.gather(
        refresher.refresh(refresh_token, proof=proof),
        refresher.refresh(refresh_token, proof=None),
        refresher.refresh(refresh_token, proof=proof_of(verifier, other_user["access_token"])),
        refresher.refresh(
            refresh_token, proof=proof_of(verifier, same_user_other_login["access_token"])
        ),
        refresher.refresh(refresh_token, proof=proof),
        return_exceptions=True,
    )

    owner, no_proof, other_sub, other_sid, good_joiner = outcomes
    assert isinstance(owner, RefreshResult)
    assert good_joiner is owner
    for refused in (no_proof, other_sub, other_sid):
        assert isinstance(refused, RefreshFailed)
        assert refused.code == "refresh_failed"
        assert_no_secret(refused, refresh_token)
    remember(secrets_seen, owner)
    assert issuer.stats.token_requests == 1
    assert refresher.stats.reuse_refused == 3


async def test_kept_result_is_handed_out_within_the_grace_only_with_a_matching_proof(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    clock: Clock,
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    first = remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=proof))

    clock.advance(GRACE - 1)
    again = await refresher.refresh(tokens["refresh_token"], proof=proof)
    with pytest.raises(RefreshFailed):
        await refresher.refresh(tokens["refresh_token"], proof=None)

    assert again is first
    assert refresher.stats.grace_reused == 1
    assert issuer.stats.token_requests == 1
    assert issuer.stats.revoked_families == 0


async def test_spent_refresh_token_is_refused_after_the_grace_without_calling_the_issuer(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    clock: Clock,
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=proof))

    clock.advance(GRACE + 1)
    with pytest.raises(RefreshFailed) as caught:
        await refresher.refresh(tokens["refresh_token"], proof=proof)

    assert caught.value.context["reason"] == "spent"
    assert_no_secret(caught.value, tokens["refresh_token"])
    assert issuer.stats.token_requests == 1
    assert issuer.stats.reuse_detected == 0
    assert issuer.stats.revoked_families == 0
    assert refresher.stats.calls == 1


async def test_invalid_grant_is_remembered_so_the_token_never_reaches_the_issuer_again(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    issuer.fail_mode, issuer.fail_count = "invalid_grant", 1

    with pytest.raises(RefreshFailed) as first:
        await refresher.refresh(tokens["refresh_token"], proof=proof)
    with pytest.raises(RefreshFailed) as second:
        await refresher.refresh(tokens["refresh_token"], proof=proof)

    assert first.value.context["reason"] == "invalid_grant"
    assert first.value.context["status"] == 400
    # The issuer's answer, remembered (so a page still clears its cookies), not a spend.
    assert second.value.context == {"reason": "invalid_grant", "remembered": True}
    assert issuer.stats.token_requests == 1
    assert refresher.stats.reuse_refused == 1
    for exc in (first.value, second.value):
        assert_no_secret(exc, tokens["refresh_token"])


async def test_a_transient_issuer_error_does_not_spend_the_refresh_token(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    issuer.fail_mode, issuer.fail_count = "500", 1

    with pytest.raises(RefreshFailed) as failed:
        await refresher.refresh(tokens["refresh_token"], proof=proof)
    retried = remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=proof))

    assert failed.value.context == {"reason": "issuer_error", "status": 500}
    assert retried.claims["sub"] == "u1"
    assert issuer.stats.token_requests == 2
    assert issuer.stats.refresh_grants == 1
    assert refresher.stats.failed == 1
    assert refresher.stats.ok == 1


async def test_a_cancelled_first_caller_does_not_cancel_the_flight(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    gated = Gated(httpx2.ASGITransport(app=issuer.app))
    refresher = make_refresher(transport=gated)
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])

    first = asyncio.create_task(refresher.refresh(tokens["refresh_token"], proof=proof))
    await gated.entered.wait()
    second = asyncio.create_task(refresher.refresh(tokens["refresh_token"], proof=proof))
    while refresher.stats.joined == 0:
        await asyncio.sleep(0)  # lets the second caller join; no time passes
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gated.gate.set()
    result = remember(secrets_seen, await second)

    later = await refresher.refresh(tokens["refresh_token"], proof=proof)
    assert later is result
    assert issuer.stats.token_requests == 1
    assert issuer.stats.refresh_grants == 1
    assert refresher.stats.ok == 1


async def test_a_failed_flight_reaches_every_waiter_and_leaves_no_flight_behind(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    issuer.fail_mode, issuer.fail_count = "500", 1

    outcomes = await asyncio.gather(
        *(refresher.refresh(tokens["refresh_token"], proof=proof) for _ in range(10)),
        return_exceptions=True,
    )

    assert all(isinstance(outcome, RefreshFailed) for outcome in outcomes)
    assert issuer.stats.token_requests == 1
    # The next caller starts a new flight (the failure was transient).
    remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=proof))
    assert issuer.stats.token_requests == 2


# -- the proof cooldown and the two memories ----------------------------------


def random_refresh_token() -> str:
    return "rt-" + secrets.token_urlsafe(24)


async def test_a_failed_flight_cools_its_proof_down_for_every_refresh_token(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    clock: Clock,
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher(cooldown=5.0)
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    proof_key = token_key(tokens["access_token"])

    with pytest.raises(RefreshFailed) as first:
        await refresher.refresh(random_refresh_token(), proof=proof, proof_key=proof_key)
    refused = []
    for _ in range(20):
        with pytest.raises(RefreshFailed) as caught:
            await refresher.refresh(random_refresh_token(), proof=proof, proof_key=proof_key)
        refused.append(caught.value)
    # The real refresh token is refused too while its proof cools down...
    with pytest.raises(RefreshFailed) as real:
        await refresher.refresh(tokens["refresh_token"], proof=proof, proof_key=proof_key)

    assert first.value.context["reason"] == "invalid_grant"
    assert {exc.context["reason"] for exc in [*refused, real.value]} == {"cooldown"}
    assert issuer.stats.token_requests == 1
    for exc in [*refused, real.value]:
        assert_no_secret(exc, tokens["refresh_token"], tokens["access_token"])

    # ...and refreshes once the cooldown has passed; the real token was never spent.
    clock.advance(5)
    result = await refresher.refresh(tokens["refresh_token"], proof=proof, proof_key=proof_key)
    remember(secrets_seen, result)
    assert issuer.stats.token_requests == 2
    assert issuer.stats.refresh_grants == 1


async def test_the_cooldown_is_keyed_by_the_proof_token_not_by_the_user(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    victim = login(issuer, secrets_seen)
    # An old access token of the same user and session: a stolen one, say.
    claims = proof_of(verifier, victim["access_token"])
    old = issuer.access_token("u1", sid=claims["sid"], iat=int(claims["iat"]) - 1000)
    secrets_seen.append(old)
    with pytest.raises(RefreshFailed):
        await refresher.refresh(
            random_refresh_token(), proof=proof_of(verifier, old), proof_key=token_key(old)
        )

    result = await refresher.refresh(
        victim["refresh_token"],
        proof=proof_of(verifier, victim["access_token"]),
        proof_key=token_key(victim["access_token"]),
    )

    remember(secrets_seen, result)
    assert result.claims["sub"] == "u1"
    assert issuer.stats.token_requests == 2


async def test_one_proof_drives_one_issuer_call_at_a_time(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    gated = Gated(httpx2.ASGITransport(app=issuer.app))
    refresher = make_refresher(transport=gated)
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    proof_key = token_key(tokens["access_token"])

    owner = asyncio.create_task(
        refresher.refresh(tokens["refresh_token"], proof=proof, proof_key=proof_key)
    )
    await gated.entered.wait()
    # The same refresh token joins the flight; any other one with this proof is refused.
    joiner = asyncio.create_task(
        refresher.refresh(tokens["refresh_token"], proof=proof, proof_key=proof_key)
    )
    outcomes = await asyncio.gather(
        *(
            refresher.refresh(random_refresh_token(), proof=proof, proof_key=proof_key)
            for _ in range(30)
        ),
        return_exceptions=True,
    )
    gated.gate.set()
    result = remember(secrets_seen, await owner)

    assert await joiner is result
    assert all(isinstance(o, RefreshFailed) for o in outcomes)
    assert {o.context["reason"] for o in outcomes if isinstance(o, RefreshFailed)} == {"cooldown"}
    assert issuer.stats.token_requests == 1
    # A success releases the proof without a cooldown.
    with pytest.raises(RefreshFailed) as after:
        await refresher.refresh(random_refresh_token(), proof=proof, proof_key=proof_key)
    assert after.value.context["reason"] == "invalid_grant"
    assert issuer.stats.token_requests == 2


async def test_no_number_of_refused_tokens_pushes_a_spent_token_out_of_memory(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    clock: Clock,
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher(spent_memory=10, failed_memory=10)
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=proof))
    clock.advance(GRACE + 1)

    # Far more refusals than either memory holds, each a real issuer call.
    refused = [random_refresh_token() for _ in range(100)]
    for token in refused:
        with pytest.raises(RefreshFailed):
            await refresher.refresh(token, proof=proof)
    assert issuer.stats.token_requests == 101

    with pytest.raises(RefreshFailed) as spent:
        await refresher.refresh(tokens["refresh_token"], proof=proof)
    assert spent.value.context["reason"] == "spent"
    assert issuer.stats.token_requests == 101
    assert issuer.stats.reuse_detected == 0
    # The refused memory is bounded: its newest entries are refused without a
    # call, the oldest were forgotten.
    with pytest.raises(RefreshFailed) as newest:
        await refresher.refresh(refused[-1], proof=proof)
    assert newest.value.context == {"reason": "invalid_grant", "remembered": True}
    assert issuer.stats.token_requests == 101
    with pytest.raises(RefreshFailed):
        await refresher.refresh(refused[0], proof=proof)
    assert issuer.stats.token_requests == 102


async def test_the_cooldown_memory_expires_its_entries(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    clock: Clock,
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher(cooldown=2.0)
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    for n in range(50):
        with pytest.raises(RefreshFailed):
            await refresher.refresh(random_refresh_token(), proof=proof, proof_key=f"{n:064x}")
    clock.advance(2)

    # Every proof is free again; the expired entries were dropped on the way.
    with pytest.raises(RefreshFailed) as again:
        await refresher.refresh(random_refresh_token(), proof=proof, proof_key=f"{0:064x}")
    assert again.value.context["reason"] == "invalid_grant"
    assert issuer.stats.token_requests == 51
    assert len(refresher._cooling) == 1


# -- client authentication --------------------------------------------------

SECRET = "s3cr:et/+ &%é"
CLIENT_ID = "web:app+1"


def form_of(request: httpx2.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


@pytest.fixture
def confidential(clock: Clock) -> DevIssuer:
    return DevIssuer(
        issuer=ISSUER, audience="api", client_id=CLIENT_ID, client_secret=SECRET, clock=clock
    )


async def test_client_secret_basic_form_encodes_both_parts_per_rfc6749(
    confidential: DevIssuer, clock: Clock, secrets_seen: list[str]
) -> None:
    recording = Recording(httpx2.ASGITransport(app=confidential.app))
    refresher = InProcessRefresher(
        token_endpoint=TOKEN_ENDPOINT,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        verifier=verifier_for(confidential, clock),
        transport=recording,
        now=clock,
    )
    tokens = login(confidential, secrets_seen)

    result = remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=None))

    assert refresher.client_auth == "client_secret_basic"
    assert result.claims["sub"] == "u1"
    (request,) = recording.requests
    scheme, _, value = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == f"{quote_plus(CLIENT_ID)}:{quote_plus(SECRET)}"
    form = form_of(request)
    assert form == {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert SECRET not in repr(refresher)


async def test_client_secret_post_sends_the_credentials_in_the_form(
    confidential: DevIssuer, clock: Clock, secrets_seen: list[str]
) -> None:
    recording = Recording(httpx2.ASGITransport(app=confidential.app))
    refresher = InProcessRefresher(
        token_endpoint=TOKEN_ENDPOINT,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        client_auth="client_secret_post",
        verifier=verifier_for(confidential, clock),
        transport=recording,
        now=clock,
    )
    tokens = login(confidential, secrets_seen)

    remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=None))

    (request,) = recording.requests
    assert "authorization" not in request.headers
    assert form_of(request) == {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert confidential.stats.refresh_grants == 1


async def test_public_client_sends_its_client_id_alone(
    issuer: DevIssuer, make_refresher: Callable[..., InProcessRefresher], secrets_seen: list[str]
) -> None:
    recording = Recording(httpx2.ASGITransport(app=issuer.app))
    refresher = make_refresher(transport=recording)
    tokens = login(issuer, secrets_seen)

    remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=None))

    assert refresher.client_auth == "none"
    (request,) = recording.requests
    assert "authorization" not in request.headers
    assert form_of(request) == {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": "web",
    }
    assert request.headers["accept"] == "application/json"


async def test_a_wrong_client_secret_fails_without_spending_or_echoing_secrets(
    confidential: DevIssuer, clock: Clock, secrets_seen: list[str]
) -> None:
    refresher = InProcessRefresher(
        token_endpoint=TOKEN_ENDPOINT,
        client_id=CLIENT_ID,
        client_secret="not-the-secret",
        verifier=verifier_for(confidential, clock),
        transport=httpx2.ASGITransport(app=confidential.app),
        now=clock,
    )
    tokens = login(confidential, secrets_seen)

    with pytest.raises(RefreshFailed) as caught:
        await refresher.refresh(tokens["refresh_token"], proof=None)

    assert caught.value.context == {"reason": "issuer_error", "status": 401}
    assert_no_secret(caught.value, tokens["refresh_token"], "not-the-secret", SECRET)
    assert "not-the-secret" not in repr(refresher)


# -- from_config ------------------------------------------------------------


def config_for(issuer: DevIssuer, **sections: Any) -> AppConfig:
    auth: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": "api",
        "client_id": "web",
        "jwks": parse_jwks(issuer.jwks()),
    }
    auth.update(sections.pop("auth", {}))
    return AppConfig(auth=auth, keys={"remote": "never"}, **sections)


def test_from_config_builds_a_refresher_from_the_settings(
    issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    config = config_for(
        issuer,
        auth={"client_secret": SECRET},
        endpoints={"token": TOKEN_ENDPOINT},
        refresh={"grace": 3, "timeout": 0.5},
    )

    refresher = InProcessRefresher.from_config(config, verifier)

    assert refresher is not None
    assert refresher.token_endpoint == TOKEN_ENDPOINT
    assert refresher.client_id == "web"
    assert refresher.client_auth == "client_secret_basic"
    assert refresher.grace == 3
    assert refresher.timeout == 0.5
    assert SECRET not in repr(refresher)


def test_from_config_takes_the_token_endpoint_from_the_bake_metadata(
    issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    meta = {"issuer": issuer.issuer, "token_endpoint": ISSUER + "/oauth/token"}
    config = config_for(issuer, auth={"jwks_meta": meta})

    refresher = InProcessRefresher.from_config(config, verifier)

    assert refresher is not None
    assert refresher.token_endpoint == ISSUER + "/oauth/token"


@pytest.mark.parametrize(
    "sections",
    [
        pytest.param(
            {"refresh": {"enabled": False}, "endpoints": {"token": TOKEN_ENDPOINT}}, id="disabled"
        ),
        pytest.param({}, id="no-token-endpoint"),
        pytest.param(
            {"auth": {"client_id": None}, "endpoints": {"token": TOKEN_ENDPOINT}}, id="no-client-id"
        ),
    ],
)
def test_from_config_gives_no_refresher_when_it_cannot_refresh(
    issuer: DevIssuer, verifier: TokenVerifier, sections: dict[str, Any]
) -> None:
    assert InProcessRefresher.from_config(config_for(issuer, **sections), verifier) is None


# -- answers that are not a token set ----------------------------------------


def mock(
    status: int, body: bytes | Any, content_type: str = "application/json"
) -> httpx2.MockTransport:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content, headers={"content-type": content_type})

    return httpx2.MockTransport(handler)


Answer = Callable[[DevIssuer], httpx2.MockTransport]


def _valid(issuer: DevIssuer) -> str:
    return issuer.access_token("u1", sid="s1")


BAD_ANSWERS = [
    pytest.param(
        lambda i: mock(200, b"<html>oops</html>", "text/html"), "issuer_error", id="html-200"
    ),
    pytest.param(lambda i: mock(200, b""), "issuer_error", id="empty-200"),
    pytest.param(lambda i: mock(200, [_valid(i)]), "issuer_error", id="json-array-200"),
    pytest.param(
        lambda i: mock(503, {"error": "temporarily_unavailable"}), "issuer_error", id="503"
    ),
    pytest.param(lambda i: mock(500, b"oops", "text/plain"), "issuer_error", id="500-not-json"),
    pytest.param(
        lambda i: mock(400, {"error": "invalid_grant"}), "invalid_grant", id="400-invalid-grant"
    ),
    pytest.param(
        lambda i: mock(200, {"error": "invalid_grant"}), "bad_tokens", id="200-error-body"
    ),
    pytest.param(lambda i: mock(200, {"token_type": "Bearer"}), "bad_tokens", id="no-access-token"),
    pytest.param(lambda i: mock(200, {"access_token": 42}), "bad_tokens", id="access-token-number"),
    pytest.param(
        lambda i: mock(200, {"access_token": "not.a.jwt"}), "bad_tokens", id="access-token-garbage"
    ),
    pytest.param(
        lambda i: mock(200, {"access_token": _valid(i), "id_token": 7}),
        "bad_tokens",
        id="id-token-number",
    ),
    pytest.param(
        lambda i: mock(200, {"access_token": _valid(i), "refresh_token": ["x"]}),
        "bad_tokens",
        id="refresh-token-list",
    ),
    pytest.param(
        lambda i: mock(200, {"access_token": i.id_token("u1", sid="s1")}),
        "bad_tokens",
        id="id-token-as-access-token",
    ),
]


@pytest.mark.parametrize(("answer", "reason"), BAD_ANSWERS)
async def test_an_answer_that_is_not_a_token_set_fails_with_a_stable_reason_and_no_token(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    answer: Answer,
    reason: str,
) -> None:
    refresher = make_refresher(transport=answer(issuer))
    refresh_token = "rt-" + "x" * 40
    proof = {"sub": "u1", "sid": "s1"}

    with pytest.raises(RefreshFailed) as caught:
        await refresher.refresh(refresh_token, proof=proof)

    exc = caught.value
    assert exc.code == "refresh_failed"
    assert exc.context["reason"] == reason
    assert exc.__cause__ is None
    assert_no_secret(exc, refresh_token)
    assert refresher.stats.failed == 1
    assert refresher.stats.ok == 0
    assert refresh_token not in repr(refresher.stats)


async def test_an_unreachable_token_endpoint_fails_as_unavailable(
    make_refresher: Callable[..., InProcessRefresher],
) -> None:
    refresh_token = "rt-" + "y" * 40

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    refresher = make_refresher(transport=httpx2.MockTransport(refuse))

    with pytest.raises(RefreshFailed) as caught:
        await refresher.refresh(refresh_token, proof=None)

    assert caught.value.context == {"reason": "unavailable"}
    assert "ConnectError" in caught.value.message
    assert_no_secret(caught.value, refresh_token)


async def test_a_token_endpoint_slower_than_the_timeout_fails_as_unavailable(
    clock: Clock, secrets_seen: list[str]
) -> None:
    with DevIssuer.serve(port=0, clock=clock) as served:
        served.fail_mode, served.fail_delay = "timeout", 5
        refresher = InProcessRefresher(
            token_endpoint=served.url + "/token",
            client_id="web",
            verifier=verifier_for(served, clock),
            timeout=0.2,
            now=clock,
        )
        tokens = login(served, secrets_seen)
        started = time.monotonic()
        try:
            with pytest.raises(RefreshFailed) as caught:
                await refresher.refresh(tokens["refresh_token"], proof=None)
        finally:
            await refresher.aclose()
        elapsed = time.monotonic() - started

    assert elapsed < 3
    assert caught.value.context == {"reason": "unavailable"}
    assert "Timeout" in caught.value.message
    assert_no_secret(caught.value, tokens["refresh_token"])


# -- verifying what the issuer returned --------------------------------------


@pytest.mark.parametrize("mode", ["other_sub", "bad_signature"])
async def test_new_tokens_that_do_not_verify_for_the_same_subject_are_refused(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
    mode: str,
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    issuer.fail_mode, issuer.fail_count = mode, 1

    with pytest.raises(RefreshFailed) as caught:
        await refresher.refresh(tokens["refresh_token"], proof=proof)

    assert caught.value.context["reason"] == "bad_tokens"
    assert_no_secret(caught.value, tokens["refresh_token"])
    assert refresher.stats.failed == 1


@pytest.mark.parametrize("mode", ["other_sub", "bad_signature"])
async def test_a_token_the_issuer_answered_with_bad_tokens_is_never_replayed(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
    mode: str,
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    issuer.fail_mode, issuer.fail_count = mode, 1
    with pytest.raises(RefreshFailed):
        await refresher.refresh(tokens["refresh_token"], proof=proof)

    with pytest.raises(RefreshFailed):
        await refresher.refresh(tokens["refresh_token"], proof=proof)

    assert issuer.stats.token_requests == 1
    assert issuer.stats.reuse_detected == 0
    assert issuer.stats.revoked_families == 0


async def test_a_token_response_without_id_token_leaves_it_out_of_the_result(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen, scope="profile email offline_access")
    assert "id_token" not in tokens

    result = remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=None))

    assert result.tokens.id is None
    assert result.tokens.access is not None
    assert result.tokens.refresh is not None


async def test_a_token_response_without_refresh_token_leaves_it_out_of_the_result(
    issuer: DevIssuer, verifier: TokenVerifier, make_refresher: Callable[..., InProcessRefresher]
) -> None:
    access = issuer.access_token("u1", sid="s1")
    refresher = make_refresher(transport=mock(200, {"access_token": access}))

    result = await refresher.refresh("rt-" + "z" * 40, proof={"sub": "u1", "sid": "s1"})

    assert result.tokens.access == access
    assert result.tokens.id is None
    assert result.tokens.refresh is None
    assert result.claims["sub"] == "u1"


# -- no token material anywhere ------------------------------------------------


async def test_refresh_tokens_never_appear_in_stats_reprs_or_errors(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    make_refresher: Callable[..., InProcessRefresher],
    clock: Clock,
    secrets_seen: list[str],
) -> None:
    refresher = make_refresher()
    tokens = login(issuer, secrets_seen)
    proof = proof_of(verifier, tokens["access_token"])
    result = remember(secrets_seen, await refresher.refresh(tokens["refresh_token"], proof=proof))
    with pytest.raises(RefreshFailed) as refused:
        await refresher.refresh(tokens["refresh_token"], proof=None)
    clock.advance(GRACE + 1)
    with pytest.raises(RefreshFailed) as spent:
        await refresher.refresh(tokens["refresh_token"], proof=proof)

    shown = " ".join(
        [
            repr(refresher),
            str(refresher),
            repr(refresher.stats),
            repr(vars(refresher.stats)),
            repr(result),
            repr(result.tokens),
        ]
    )
    for secret in [tokens["refresh_token"], result.tokens.refresh, result.tokens.access]:
        assert secret is not None
        assert secret not in shown
        assert_no_secret(refused.value, secret)
        assert_no_secret(spent.value, secret)
    assert token_key(tokens["refresh_token"]) != tokens["refresh_token"]


async def test_a_malformed_token_endpoint_fails_the_refresh_instead_of_raising(
    verifier: TokenVerifier, clock: Clock
) -> None:
    refresh_token = "rt-" + "w" * 40
    refresher = InProcessRefresher(
        token_endpoint="http://[::1/token", client_id="web", verifier=verifier, now=clock
    )
    try:
        with pytest.raises(RefreshFailed) as caught:
            await refresher.refresh(refresh_token, proof=None)
    finally:
        await refresher.aclose()

    assert caught.value.context["reason"] == "unavailable"
    assert_no_secret(caught.value, refresh_token)
