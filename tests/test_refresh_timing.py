"""When the middleware refreshes: the effective skew comes from the token itself.

``min(refresh.skew, (exp - iat) / 3)``, the configured skew when the token
has no ``iat``: a token living no longer than ``refresh.skew`` is refreshed
once per lifetime, in its last third, never on every request. The issuer,
the verifier and the refresher share one injected clock, so time passes
without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISSUER = "http://127.0.0.1:9000"
APP = "http://127.0.0.1"
SKEW = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


async def whoami(request: Request) -> JSONResponse:
    session = get_session(request)
    return JSONResponse({"exp": session.expires_at if session else None})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> DevIssuer:
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=clock)


def middleware_for(issuer: DevIssuer, clock: Clock, **refresh: Any) -> JWTSessionMiddleware:
    config = AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": issuer.client_id,
            "jwks": parse_jwks(issuer.jwks()),
            "leeway": 0,
        },
        endpoints={"token": issuer.issuer + "/token"},
        keys={"remote": "never"},
        refresh={"skew": SKEW, **refresh},
    )
    verifier = TokenVerifier.from_config(config, now=clock)
    refresher = InProcessRefresher.from_config(
        config, verifier, transport=httpx2.ASGITransport(app=issuer.app), now=clock
    )
    return JWTSessionMiddleware(
        Starlette(routes=[Route("/", whoami)]), config, verifier=verifier, refresher=refresher
    )


@pytest.fixture
def client_for(issuer: DevIssuer, clock: Clock) -> Iterator[Any]:
    opened: list[TestClient] = []

    def make(**refresh: Any) -> TestClient:
        client = TestClient(middleware_for(issuer, clock, **refresh), base_url=APP)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def cookies(tokens: dict[str, Any]) -> dict[str, str]:
    return {
        "jwtedge_access": tokens["access_token"],
        "jwtedge_id": tokens["id_token"],
        "jwtedge_refresh": tokens["refresh_token"],
    }


def get(client: TestClient, jar: dict[str, str]) -> httpx2.Response:
    header = "; ".join(f"{name}={value}" for name, value in jar.items())
    response = client.get("/", headers={"Cookie": header})
    assert response.status_code == 200
    for value in response.headers.get_list("set-cookie"):
        name, _, rest = value.partition("=")
        jar[name] = rest.split(";")[0]
    return response


def test_a_token_shorter_than_the_skew_is_not_due_before_its_last_third(
    issuer: DevIssuer, clock: Clock, client_for: Any
) -> None:
    issuer.access_ttl = 15  # refresh.skew is 30: once, every request would have refreshed
    jar = cookies(issuer.login("u1"))
    client = client_for()

    for _ in range(10):
        get(client, jar)
    clock.now += 9  # 6 s left: more than a third of 15
    get(client, jar)
    assert issuer.stats.refresh_grants == 0

    clock.now += 1.5  # 4.5 s left: inside the last third
    get(client, jar)
    assert issuer.stats.refresh_grants == 1
    for _ in range(10):
        get(client, jar)
    assert issuer.stats.refresh_grants == 1  # the new token is not due yet


def test_a_six_second_token_is_refreshed_every_four_seconds_not_on_every_request(
    issuer: DevIssuer, clock: Clock, client_for: Any
) -> None:
    issuer.access_ttl = 6
    jar = cookies(issuer.login("u1"))
    client = client_for()

    requests = 0
    start = clock.now
    while clock.now < start + 18:
        get(client, jar)
        requests += 1
        clock.now += 0.5

    assert requests == 36
    # Due once less than 2 s (a third) is left: the tokens minted at 0, 4, 8 and 12
    # are refreshed at 4.5, 8.5, 12.5 and 16.5 (the issuer's iat is whole seconds).
    assert issuer.stats.refresh_grants == 4


def test_a_long_lived_token_is_due_within_the_configured_skew(
    issuer: DevIssuer, clock: Clock, client_for: Any
) -> None:
    issuer.access_ttl = 3600  # a third is 1200 s: the configured 30 s is the smaller
    jar = cookies(issuer.login("u1"))
    client = client_for()

    clock.now += 3600 - 31
    get(client, jar)
    assert issuer.stats.refresh_grants == 0
    clock.now += 2
    get(client, jar)
    assert issuer.stats.refresh_grants == 1


def test_without_iat_the_configured_skew_applies(
    issuer: DevIssuer, clock: Clock, client_for: Any
) -> None:
    tokens = issuer.login("u1")
    claims = {
        "iss": issuer.issuer,
        "aud": "api",
        "sub": "u1",
        "exp": int(clock.now) + 20,  # within the 30 s skew; no iat to measure its life
    }
    jar = cookies(tokens) | {"jwtedge_access": issuer.sign(claims)}
    client = client_for()

    get(client, jar)

    assert issuer.stats.refresh_grants == 1


def test_a_token_no_longer_than_the_skew_is_warned_about_once(
    issuer: DevIssuer, clock: Clock, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jwtedge")
    issuer.access_ttl = 30  # equal to the skew counts
    jar = cookies(issuer.login("u1"))
    client = client_for()

    for _ in range(5):
        get(client, jar)

    warned = [r for r in caplog.records if "no longer than refresh.skew" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    assert "APP_CONFIG_REFRESH__SKEW" in warned[0].getMessage()


def test_a_token_longer_than_the_skew_is_not_warned_about(
    issuer: DevIssuer, clock: Clock, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jwtedge")
    issuer.access_ttl = 31
    jar = cookies(issuer.login("u1"))

    get(client_for(), jar)

    assert not [r for r in caplog.records if "refresh.skew" in r.getMessage()]


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(3600, SKEW), (90, SKEW), (60, 20.0), (30, 10.0), (6, 2.0)],
)
def test_the_effective_skew_is_the_smaller_of_the_setting_and_a_third_of_the_lifetime(
    issuer: DevIssuer, clock: Clock, ttl: int, expected: float
) -> None:
    middleware = middleware_for(issuer, clock)
    token = issuer.access_token("u1", ttl=ttl)

    session = middleware.verifier.session(token)

    assert middleware.effective_skew(session) == expected
