"""verifier.fetch: discovery and JWKS over HTTP, with an injected clock and sleep (no waiting)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from verifier.errors import JWKSFetchFailed, JWKSInvalid
from verifier.fetch import Fetcher, discovery_url, is_loopback_url
from verifier.testing import DevIssuer

ISSUER = "https://auth.example.com"
JWKS_URL = f"{ISSUER}/jwks"
DISCOVERY = f"{ISSUER}/.well-known/openid-configuration"

Handler = Callable[[httpx2.Request], httpx2.Response]


class FakeTime:
    """A monotonic clock the test moves, and a sleep that moves it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def jwks_doc(issuer: DevIssuer) -> dict[str, Any]:
    return issuer.jwks()


def json_response(
    body: object, status: int = 200, *, content_type: str = "application/json"
) -> httpx2.Response:
    return httpx2.Response(
        status, content=json.dumps(body).encode(), headers={"content-type": content_type}
    )


def discovery_doc(issuer: str = ISSUER, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": issuer,
        "jwks_uri": f"{issuer.rstrip('/')}/keys",
        "token_endpoint": f"{issuer.rstrip('/')}/token",
        "authorization_endpoint": f"{issuer.rstrip('/')}/authorize",
    }
    doc.update(extra)
    return doc


class Recorder:
    """A MockTransport handler that records every request URL."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.urls: list[str] = []
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.urls.append(str(request.url))
        self.requests.append(request)
        return self.handler(request)


def make_fetcher(fake: FakeTime, handler: Handler, **options: Any) -> Fetcher:
    return Fetcher(
        transport=httpx2.MockTransport(handler),
        clock=fake.clock,
        sleep=fake.sleep,
        jitter=lambda: 0.5,
        **options,
    )


# -- discovery ------------------------------------------------------------------


async def test_discovery_then_jwks(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        fake.now += 0.25  # each request "takes" a quarter second
        if str(request.url) == DISCOVERY:
            return json_response(discovery_doc(end_session_endpoint=f"{ISSUER}/logout"))
        assert str(request.url) == f"{ISSUER}/keys"
        return json_response(jwks_doc, content_type="application/jwk-set+json")

    recorder = Recorder(handler)
    async with make_fetcher(fake, recorder) as fetcher:
        result = await fetcher.fetch(ISSUER)
        assert fetcher.stats.requests == 2
        assert fetcher.stats.retries == 0

    meta = result.metadata
    assert meta.discovered is True
    assert meta.issuer == ISSUER
    assert meta.jwks_uri == f"{ISSUER}/keys"
    assert meta.token_endpoint == f"{ISSUER}/token"
    assert meta.authorization_endpoint == f"{ISSUER}/authorize"
    assert meta.end_session_endpoint == f"{ISSUER}/logout"
    assert meta.revocation_endpoint is None
    assert len(result.jwks) == len(jwks_doc["keys"])
    assert result.size == len(json.dumps(jwks_doc).encode())
    assert result.elapsed == pytest.approx(0.5)
    assert recorder.urls == [DISCOVERY, f"{ISSUER}/keys"]
    assert recorder.requests[0].extensions["timeout"]["read"] == 5.0


async def test_discovery_strips_one_trailing_slash_and_matches_issuer_exactly(
    fake: FakeTime,
) -> None:
    issuer = ISSUER + "/"
    recorder = Recorder(lambda request: json_response(discovery_doc(issuer)))
    async with make_fetcher(fake, recorder) as fetcher:
        meta = await fetcher.discover(issuer)
    assert recorder.urls == [DISCOVERY]
    assert meta.issuer == issuer
    assert discovery_url(issuer) == DISCOVERY


async def test_discovery_404_falls_back_to_issuer_jwks(
    fake: FakeTime, jwks_doc: dict[str, Any]
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if str(request.url) == DISCOVERY:
            return httpx2.Response(404, text="not found")
        return json_response(jwks_doc)

    recorder = Recorder(handler)
    async with make_fetcher(fake, recorder) as fetcher:
        result = await fetcher.fetch(ISSUER)
    assert result.metadata.discovered is False
    assert result.metadata.jwks_uri == JWKS_URL
    assert result.metadata.token_endpoint is None
    assert recorder.urls == [DISCOVERY, JWKS_URL]
    assert fake.sleeps == []


async def test_discovery_error_other_than_404_does_not_fall_back(fake: FakeTime) -> None:
    recorder = Recorder(lambda request: httpx2.Response(403))
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="HTTP 403"):
            await fetcher.fetch(ISSUER)
    assert recorder.urls == [DISCOVERY]


async def test_discovery_issuer_mismatch_is_refused_naming_both(fake: FakeTime) -> None:
    evil = "https://evil.example.com"
    async with make_fetcher(fake, lambda request: json_response(discovery_doc(evil))) as fetcher:
        with pytest.raises(JWKSFetchFailed) as info:
            await fetcher.fetch(ISSUER)
    message = str(info.value)
    assert evil in message
    assert repr(ISSUER) in message
    assert info.value.context["url"] == DISCOVERY


async def test_discovery_issuer_with_extra_slash_is_a_mismatch(fake: FakeTime) -> None:
    doc = discovery_doc(ISSUER + "/")
    async with make_fetcher(fake, lambda request: json_response(doc)) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="expected exactly"):
            await fetcher.discover(ISSUER)


async def test_discovery_without_jwks_uri_is_refused(fake: FakeTime) -> None:
    doc = {"issuer": ISSUER}
    async with make_fetcher(fake, lambda request: json_response(doc)) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="no jwks_uri"):
            await fetcher.discover(ISSUER)


@pytest.mark.parametrize(
    ("member", "value"),
    [("jwks_uri", "http://auth.example.com/keys"), ("jwks_uri", "ftp://auth.example.com/keys")],
)
async def test_discovered_jwks_uri_must_be_https(fake: FakeTime, member: str, value: str) -> None:
    doc = discovery_doc(**{member: value})
    recorder = Recorder(lambda request: json_response(doc))
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="jwks_uri"):
            await fetcher.fetch(ISSUER)
    assert recorder.urls == [DISCOVERY]


async def test_discovered_token_endpoint_over_plain_http_is_refused(fake: FakeTime) -> None:
    doc = discovery_doc(token_endpoint="http://auth.example.com/token")
    async with make_fetcher(fake, lambda request: json_response(doc)) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="token_endpoint must use https"):
            await fetcher.discover(ISSUER)


async def test_jwks_url_given_skips_discovery(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    recorder = Recorder(lambda request: json_response(jwks_doc))
    async with make_fetcher(fake, recorder) as fetcher:
        result = await fetcher.fetch(ISSUER, jwks_url=JWKS_URL)
    assert recorder.urls == [JWKS_URL]
    assert result.metadata.discovered is False
    assert result.metadata.jwks_uri == JWKS_URL


# -- retries, backoff, deadline ----------------------------------------------------


async def test_500_then_200_is_retried(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    answers = [httpx2.Response(500), json_response(jwks_doc)]
    recorder = Recorder(lambda request: answers.pop(0))
    async with make_fetcher(fake, recorder) as fetcher:
        jwks, size = await fetcher.fetch_jwks(JWKS_URL)
        assert fetcher.stats.retries == 1
    assert len(jwks) == len(jwks_doc["keys"])
    assert size > 0
    assert len(recorder.urls) == 2
    # First backoff step is 0.5 s with "equal jitter": 0.25 + 0.25 * jitter(0.5).
    assert fake.sleeps == [pytest.approx(0.375)]


async def test_backoff_grows_exponentially(fake: FakeTime) -> None:
    async with make_fetcher(fake, lambda request: httpx2.Response(503), retries=3) as fetcher:
        with pytest.raises(JWKSFetchFailed) as info:
            await fetcher.fetch_jwks(JWKS_URL)
    assert str(info.value) == (f"jwks_fetch_failed: GET {JWKS_URL}: HTTP 503 after 4 attempts")
    assert info.value.context == {
        "url": JWKS_URL,
        "cause": "HTTP 503 after 4 attempts",
        "attempts": 4,
    }
    assert fake.sleeps == [pytest.approx(0.375), pytest.approx(0.75), pytest.approx(1.5)]


async def test_429_honours_retry_after_seconds(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    answers = [httpx2.Response(429, headers={"Retry-After": "7"}), json_response(jwks_doc)]
    async with make_fetcher(fake, lambda request: answers.pop(0)) as fetcher:
        await fetcher.fetch_jwks(JWKS_URL)
    assert fake.sleeps == [7.0]


async def test_429_honours_retry_after_http_date(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    headers = {
        "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2015 07:28:12 GMT",
    }
    answers = [httpx2.Response(429, headers=headers), json_response(jwks_doc)]
    async with make_fetcher(fake, lambda request: answers.pop(0)) as fetcher:
        await fetcher.fetch_jwks(JWKS_URL)
    assert fake.sleeps == [12.0]


async def test_retry_after_past_the_deadline_fails_without_sleeping(fake: FakeTime) -> None:
    recorder = Recorder(lambda request: httpx2.Response(429, headers={"Retry-After": "120"}))
    async with make_fetcher(fake, recorder, deadline=30.0) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="Retry-After 120 s, past the 30 s deadline"):
            await fetcher.fetch_jwks(JWKS_URL)
    assert fake.sleeps == []
    assert len(recorder.urls) == 1


async def test_timeouts_stop_at_the_deadline(fake: FakeTime) -> None:
    start = fake.now
    budgets: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        budget = request.extensions["timeout"]["read"]
        budgets.append(budget)
        fake.now += budget  # the attempt burns its whole timeout
        raise httpx2.ReadTimeout("timed out", request=request)

    async with make_fetcher(fake, handler, timeout=5.0, deadline=30.0, retries=100) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="timed out after the 30 s deadline") as info:
            await fetcher.fetch_jwks(JWKS_URL)
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
    # Simulated attempts plus injected sleeps never exceed the deadline...
    assert fake.now - start <= 30.0
    assert sum(budgets) + sum(fake.sleeps) == pytest.approx(fake.now - start)
    # ...and no attempt was given more time than was left.
    assert all(budget <= 5.0 for budget in budgets)
    assert len(budgets) > 3


async def test_attempt_timeout_is_bounded_by_the_remaining_deadline(fake: FakeTime) -> None:
    budgets: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        budgets.append(request.extensions["timeout"]["read"])
        fake.now += 4.0
        raise httpx2.ConnectTimeout("timed out", request=request)

    async with make_fetcher(fake, handler, timeout=5.0, deadline=6.0, retries=5) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="deadline"):
            await fetcher.fetch_jwks(JWKS_URL)
    # 4 s burnt + 0.375 s backoff leaves 1.625 s for the second attempt.
    assert budgets == [5.0, pytest.approx(1.625)]


async def test_connection_refused_is_retried_then_named(fake: FakeTime) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("All connection attempts failed", request=request) from (
            ConnectionRefusedError(111, "Connection refused")
        )

    recorder = Recorder(handler)
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed) as info:
            await fetcher.fetch_jwks(JWKS_URL)
    assert info.value.context["cause"] == "connection refused after 4 attempts"
    assert info.value.context["url"] == JWKS_URL
    assert isinstance(info.value.__cause__, httpx2.ConnectError)
    assert len(recorder.urls) == 4


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_4xx_other_than_429_fails_at_once(fake: FakeTime, status: int) -> None:
    recorder = Recorder(lambda request: httpx2.Response(status))
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed, match=f"HTTP {status}$"):
            await fetcher.fetch_jwks(JWKS_URL)
    assert len(recorder.urls) == 1
    assert fake.sleeps == []


# -- redirects ------------------------------------------------------------------


async def test_same_origin_redirect_is_followed(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/jwks":
            return httpx2.Response(302, headers={"Location": "/v2/jwks"})
        if request.url.path == "/v2/jwks":
            return httpx2.Response(307, headers={"Location": f"{ISSUER}:443/v3/jwks"})
        return json_response(jwks_doc)

    recorder = Recorder(handler)
    async with make_fetcher(fake, recorder) as fetcher:
        jwks, _ = await fetcher.fetch_jwks(JWKS_URL)
        assert fetcher.stats.redirects == 2
    assert len(jwks) == len(jwks_doc["keys"])
    assert [url.rsplit("/", 2)[-2] for url in recorder.urls] == ["auth.example.com", "v2", "v3"]


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example.com/jwks",
        "https://auth.example.com:8443/jwks",
        "http://auth.example.com/jwks",
        "//evil.example.com/jwks",
    ],
)
async def test_redirect_to_another_origin_is_refused(fake: FakeTime, location: str) -> None:
    recorder = Recorder(lambda request: httpx2.Response(301, headers={"Location": location}))
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="redirect to another origin refused"):
            await fetcher.fetch_jwks(JWKS_URL)
    assert recorder.urls == [JWKS_URL]


async def test_more_than_three_redirects_fail(fake: FakeTime) -> None:
    recorder = Recorder(lambda request: httpx2.Response(302, headers={"Location": "/again"}))
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="more than 3 redirects"):
            await fetcher.fetch_jwks(JWKS_URL)
    assert len(recorder.urls) == 4


# -- bodies ---------------------------------------------------------------------


async def test_html_body_is_refused(fake: FakeTime) -> None:
    html = httpx2.Response(200, html="<html><body>Sign in</body></html>")
    async with make_fetcher(fake, lambda request: html) as fetcher:
        with pytest.raises(JWKSFetchFailed, match=r"not JSON \(Content-Type text/html\)"):
            await fetcher.fetch_jwks(JWKS_URL)


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/jwk-set+json", "application/jrd+json"],
)
async def test_json_content_types_are_accepted(
    fake: FakeTime, jwks_doc: dict[str, Any], content_type: str
) -> None:
    response = json_response(jwks_doc, content_type=content_type)
    async with make_fetcher(fake, lambda request: response) as fetcher:
        jwks, _ = await fetcher.fetch_jwks(JWKS_URL)
    assert len(jwks) == len(jwks_doc["keys"])


class CountingStream(httpx2.AsyncByteStream):
    """Five MiB of JSON-looking bytes in 64 KiB chunks, counting what was read."""

    def __init__(self, total: int = 5 * 1024 * 1024, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_large_streamed_body_is_refused_without_reading_it_all(fake: FakeTime) -> None:
    stream = CountingStream()
    response = httpx2.Response(200, headers={"content-type": "application/json"}, stream=stream)
    async with make_fetcher(fake, lambda request: response) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="larger than 1 MiB"):
            await fetcher.fetch_jwks(JWKS_URL)
    assert stream.sent <= 1024 * 1024 + stream.chunk
    assert stream.sent < stream.total
    assert stream.closed


async def test_declared_large_body_is_refused_before_reading(fake: FakeTime) -> None:
    stream = CountingStream()
    headers = {"content-type": "application/json", "content-length": str(stream.total)}
    response = httpx2.Response(200, headers=headers, stream=stream)
    async with make_fetcher(fake, lambda request: response) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="larger than 1 MiB"):
            await fetcher.fetch_jwks(JWKS_URL)
    assert stream.sent == 0


class TricklingStream(httpx2.AsyncByteStream):
    """A body that never finishes: one byte, then silence."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(3600)


async def test_a_trickling_body_is_cut_by_the_attempt_timeout(fake: FakeTime) -> None:
    # httpx's read timeout is per socket read; the attempt's budget bounds the whole
    # exchange. This is the one test that waits in real time (50 ms).
    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "application/json"}
        return httpx2.Response(200, headers=headers, stream=TricklingStream())

    async with make_fetcher(fake, handler, timeout=0.05, retries=0) as fetcher:
        with pytest.raises(
            JWKSFetchFailed, match=r"timed out after the 0\.05 s timeout reading the body"
        ):
            await fetcher.fetch_jwks(JWKS_URL)


# -- URLs -----------------------------------------------------------------------


async def test_plain_http_to_a_public_host_is_refused_without_a_request(fake: FakeTime) -> None:
    recorder = Recorder(lambda request: pytest.fail("no request may be sent"))
    async with make_fetcher(fake, recorder) as fetcher:
        with pytest.raises(JWKSFetchFailed, match="must use https"):
            await fetcher.fetch("http://auth.example.com")
        with pytest.raises(JWKSFetchFailed, match="must use https"):
            await fetcher.fetch_jwks("http://auth.example.com/jwks")
    assert recorder.urls == []


async def test_plain_http_to_loopback_is_allowed(fake: FakeTime, jwks_doc: dict[str, Any]) -> None:
    async with make_fetcher(fake, lambda request: json_response(jwks_doc)) as fetcher:
        jwks, _ = await fetcher.fetch_jwks("http://127.0.0.1:9000/jwks")
    assert len(jwks) == len(jwks_doc["keys"])


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:9000", True),
        ("http://127.8.9.10/jwks", True),
        ("http://[::1]:8080/", True),
        ("http://localhost:3000", True),
        ("https://LOCALHOST", True),
        ("http://128.0.0.1", False),
        ("http://localhost.example.com", False),
        ("http://10.0.0.1", False),
        ("http://[::2]/", False),
        ("not a url", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


# -- validation -------------------------------------------------------------------


async def test_a_set_with_a_private_key_is_refused(fake: FakeTime, issuer: DevIssuer) -> None:
    leaked = {"keys": [issuer.private_jwk(issuer.kid)]}
    async with make_fetcher(fake, lambda request: json_response(leaked)) as fetcher:
        with pytest.raises(JWKSInvalid, match="private"):
            await fetcher.fetch_jwks(JWKS_URL)


async def test_a_set_that_is_not_json_is_refused(fake: FakeTime) -> None:
    bad = httpx2.Response(200, content=b"{nope", headers={"content-type": "application/json"})
    async with make_fetcher(fake, lambda request: bad) as fetcher:
        with pytest.raises(JWKSInvalid, match="not valid JSON"):
            await fetcher.fetch_jwks(JWKS_URL)


# -- a real server ----------------------------------------------------------------


@pytest.mark.e2e
async def test_fetches_a_real_dev_issuer_over_loopback_http() -> None:
    with DevIssuer.serve(port=0) as dev:
        async with Fetcher(timeout=5.0, deadline=10.0) as fetcher:
            result = await fetcher.fetch(dev.url)
        assert result.metadata.discovered is True
        assert result.metadata.jwks_uri == f"{dev.url}/jwks"
        assert set(result.jwks.kids) == set(dev.kids())
        assert dev.stats.discovery_requests == 1
        assert dev.stats.jwks_requests == 1


@pytest.mark.e2e
async def test_a_closed_loopback_port_is_named_connection_refused(fake: FakeTime) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed again; nothing listens there.
    async with Fetcher(retries=1, clock=fake.clock, sleep=fake.sleep) as fetcher:
        with pytest.raises(JWKSFetchFailed) as info:
            await fetcher.fetch_jwks(f"http://127.0.0.1:{port}/jwks")
    assert info.value.context["cause"] == "connection refused after 2 attempts"
    assert len(fake.sleeps) == 1
