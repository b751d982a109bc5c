"""Discovery and JWKS over HTTP: the one fetch path shared by the bake and the remote key layer.

Both callers need the same guarantees, so they live here once:

- discovery at ``<issuer>/.well-known/openid-configuration`` whose ``issuer``
  must equal ours exactly; only a 404 falls back to ``<issuer>/jwks`` (the
  path better-auth serves);
- https everywhere except loopback hosts (127.0.0.0/8, ::1, localhost);
- a per-attempt timeout and a total deadline, both bounded by the injected
  clock; retries with exponential backoff and jitter on connection errors,
  timeouts, 5xx and 429 (``Retry-After`` honoured); other 4xx fail at once;
- bodies capped while streaming, JSON content types only;
- redirects followed by hand, to the same scheme, host and port only;
- the key set validated by :func:`~verifier.jwks.parse_jwks`.

Every failure is one :class:`~verifier.errors.JWKSFetchFailed` whose message
names the URL and the cause, with ``url`` and ``cause`` in its context.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx2
import orjson

from . import http_fields
from .errors import JWKSFetchFailed
from .jwks import JWKSet, parse_jwks

__all__ = [
    "DISCOVERY_PATH",
    "FALLBACK_JWKS_PATH",
    "FetchResult",
    "FetchStats",
    "Fetcher",
    "IssuerMetadata",
    "discovery_url",
    "is_loopback_url",
]

DISCOVERY_PATH = "/.well-known/openid-configuration"
#: Where better-auth serves its key set; used only when discovery answers 404.
FALLBACK_JWKS_PATH = "/jwks"
MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_JSON_TYPES = frozenset({"application/json", "application/jwk-set+json"})
_ENDPOINTS = (
    "token_endpoint",
    "authorization_endpoint",
    "end_session_endpoint",
    "revocation_endpoint",
)
#: First backoff step and its ceiling (seconds), before jitter.
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class IssuerMetadata:
    """What discovery told us (or the fallback, when ``discovered`` is False)."""

    issuer: str
    jwks_uri: str
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    #: False when discovery was 404 and ``<issuer>/jwks`` was assumed, or skipped.
    discovered: bool = True
    #: The discovery document as served (the bake reads issuer hints from it).
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One complete fetch: the issuer's metadata and its validated key set."""

    metadata: IssuerMetadata
    jwks: JWKSet
    #: Bytes of the JWKS body.
    size: int
    #: Seconds the whole fetch took, by the injected clock.
    elapsed: float


@dataclass(slots=True)
class FetchStats:
    """Counts of HTTP work, so "zero network calls" stays observable."""

    #: Requests sent (every attempt and every redirect hop).
    requests: int = 0
    #: Attempts that were retried after a retryable failure.
    retries: int = 0
    redirects: int = 0


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is 127.0.0.0/8, ``::1`` or ``localhost``."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def discovery_url(issuer: str) -> str:
    """``<issuer>/.well-known/openid-configuration`` (one trailing slash dropped, per OIDC).

    A multi-tenant Entra issuer (``…/{tenantid}/v2.0``) is discovered at its
    ``common`` endpoint, whose document names that very template as issuer.
    """
    return issuer.replace("{tenantid}", "common").removesuffix("/") + DISCOVERY_PATH


def _fallback_jwks_url(issuer: str) -> str:
    return issuer.removesuffix("/") + FALLBACK_JWKS_PATH


def _origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _human_size(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _fail(url: str, cause: str, **context: Any) -> JWKSFetchFailed:
    return JWKSFetchFailed(f"GET {url}: {cause}", url=url, cause=cause, **context)


def _check_url(url: str, *, what: str = "URL") -> None:
    """https, or http to a loopback host; anything else is refused before any I/O."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise _fail(url, f"the {what} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback_url(url):
        raise _fail(url, f"the {what} must use https (http is allowed for loopback hosts only)")


def _retry_after(response: httpx2.Response) -> float | None:
    """Seconds from ``Retry-After`` (delay-seconds or an HTTP-date), else None.

    Read by its RFC 9110 grammar (:mod:`verifier.http_fields`): any other
    value is ignored, as if the server had not sent it.
    """
    return http_fields.retry_after(
        response.headers.get("retry-after"), response.headers.get("date")
    )


def _connect_cause(exc: BaseException) -> str:
    """ "connection refused" when that is what happened, else the client's words."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; the bound only guards against cycles
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    detail = _one_line(str(exc)) or type(exc).__name__
    return f"could not connect ({detail})"


def _is_json(content_type: str | None) -> bool:
    media = http_fields.media_type(content_type)
    return media is not None and (media in _JSON_TYPES or media.endswith("+json"))


class _Deadline:
    """The total time budget of one public call, read from the injected clock."""

    def __init__(self, clock: Callable[[], float], budget: float) -> None:
        self._clock = clock
        self.budget = budget
        self.started = clock()

    @property
    def remaining(self) -> float:
        return self.budget - (self._clock() - self.started)

    @property
    def elapsed(self) -> float:
        return self._clock() - self.started


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; the message is the cause."""

    def __init__(self, cause: str, *, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class Fetcher:
    """Fetches issuer metadata and key sets with the rules in this module's docstring.

    One ``httpx2.AsyncClient`` per fetcher, which never follows redirects on
    its own and never reads proxy settings from the environment. Pass
    ``transport`` (e.g. ``httpx2.MockTransport``), ``clock``, ``sleep`` and
    ``jitter`` to test without a network and without waiting.
    """

    def __init__(
        self,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        deadline: float = 30.0,
        retries: int = 3,
        max_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if timeout <= 0 or deadline <= 0 or retries < 0 or max_bytes <= 0:
            raise ValueError("timeout, deadline and max_bytes must be positive, retries >= 0")
        self.timeout = timeout
        self.deadline = deadline
        self.retries = retries
        self.max_bytes = max_bytes
        self.stats = FetchStats()
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._transport = transport
        self._http: httpx2.AsyncClient | None = None

    @property
    def _client(self) -> httpx2.AsyncClient:
        # Built on first use: its TLS context costs ~30 ms, and most apps never fetch.
        if self._http is None:
            self._http = httpx2.AsyncClient(
                transport=self._transport,
                follow_redirects=False,
                trust_env=False,
                timeout=self.timeout,
                headers={
                    "Accept": "application/jwk-set+json, application/json",
                    "User-Agent": "jwtedge",
                },
            )
        return self._http

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        if self._http is not None:
            await self._http.aclose()

    # -- public API -------------------------------------------------------------

    async def discover(self, issuer: str) -> IssuerMetadata:
        """The issuer's metadata; ``<issuer>/jwks`` only when discovery answers 404."""
        return await self._discover(issuer, _Deadline(self._clock, self.deadline))

    async def fetch_jwks(self, jwks_uri: str) -> tuple[JWKSet, int]:
        """The validated key set at ``jwks_uri`` and the size of its body in bytes.

        Raises ``JWKSFetchFailed``, or ``JWKSInvalid`` when the set is refused.
        """
        return await self._fetch_jwks(jwks_uri, _Deadline(self._clock, self.deadline))

    async def fetch(self, issuer: str, *, jwks_url: str | None = None) -> FetchResult:
        """Discovery (unless ``jwks_url`` is given) then the key set, in one deadline."""
        deadline = _Deadline(self._clock, self.deadline)
        if jwks_url is None:
            metadata = await self._discover(issuer, deadline)
        else:
            _check_url(jwks_url, what="jwks_uri")
            metadata = IssuerMetadata(issuer=issuer, jwks_uri=jwks_url, discovered=False)
        jwks, size = await self._fetch_jwks(metadata.jwks_uri, deadline)
        return FetchResult(metadata=metadata, jwks=jwks, size=size, elapsed=deadline.elapsed)

    # -- steps ------------------------------------------------------------------

    async def _discover(self, issuer: str, deadline: _Deadline) -> IssuerMetadata:
        url = discovery_url(issuer)
        _check_url(url, what="issuer")
        body = await self._get(url, deadline, none_on_404=True)
        if body is None:
            return IssuerMetadata(
                issuer=issuer, jwks_uri=_fallback_jwks_url(issuer), discovered=False
            )
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _fail(url, "the discovery document is not valid JSON") from exc
        if not isinstance(document, dict):
            raise _fail(url, "the discovery document is not a JSON object")

        published = document.get("issuer")
        if published != issuer:
            # Both are public URLs; naming them is what makes this fixable.
            raise _fail(
                url,
                f"discovery says issuer {published!r}, expected exactly {issuer!r}",
                expected=issuer,
                published=published if isinstance(published, str) else None,
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise _fail(url, "the discovery document has no jwks_uri")
        _check_url(jwks_uri, what="jwks_uri")

        endpoints: dict[str, str | None] = {}
        for name in _ENDPOINTS:
            value = document.get(name)
            if value is None:
                endpoints[name] = None
                continue
            if not isinstance(value, str):
                raise _fail(url, f"{name} is not a string")
            # The token endpoint will receive the client secret: same rule as keys.
            _check_url(value, what=name)
            endpoints[name] = value
        return IssuerMetadata(
            issuer=issuer, jwks_uri=jwks_uri, discovered=True, document=document, **endpoints
        )

    async def _fetch_jwks(self, jwks_uri: str, deadline: _Deadline) -> tuple[JWKSet, int]:
        _check_url(jwks_uri, what="jwks_uri")
        body = await self._get(jwks_uri, deadline)
        assert body is not None  # only discovery asks for None on 404
        return parse_jwks(body), len(body)

    # -- one GET with retries -----------------------------------------------------

    async def _get(
        self, url: str, deadline: _Deadline, *, none_on_404: bool = False
    ) -> bytes | None:
        attempts = 0
        while True:
            attempts += 1
            try:
                return await self._attempt(url, deadline, none_on_404=none_on_404)
            except _Retryable as failure:
                last = failure
                cause = failure.__cause__
            plural = "attempt" if attempts == 1 else "attempts"
            if attempts > self.retries:
                raise _fail(
                    url, f"{last.cause} after {attempts} {plural}", attempts=attempts
                ) from (cause or last)
            delay = self._backoff(attempts, last.retry_after)
            if delay >= deadline.remaining:
                # Sleeping past the deadline would only delay the same answer.
                if last.retry_after is not None:
                    why = (
                        f"{last.cause} with Retry-After {last.retry_after:g} s, past the "
                        f"{deadline.budget:g} s deadline ({attempts} {plural})"
                    )
                else:
                    why = (
                        f"timed out after the {deadline.budget:g} s deadline "
                        f"({attempts} {plural}, last: {last.cause})"
                    )
                raise _fail(url, why, attempts=attempts) from (cause or last)
            self.stats.retries += 1
            await self._sleep(delay)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # The server said when; adding jitter would only make us later.
            return retry_after
        step = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0 ** (attempts - 1))
        # "Equal jitter": at least half the step, so retries never bunch at zero.
        return step / 2 + step / 2 * self._jitter()

    async def _attempt(self, url: str, deadline: _Deadline, *, none_on_404: bool) -> bytes | None:
        """One attempt, redirect hops included. Raises _Retryable or JWKSFetchFailed."""
        current = httpx2.URL(url)
        origin = _origin(current)
        for _hop in range(MAX_REDIRECTS + 1):
            remaining = deadline.remaining
            if remaining <= 0:
                raise _fail(url, f"timed out after the {deadline.budget:g} s deadline")
            budget = min(self.timeout, remaining)
            # One real-time bound for headers and body together: httpx's timeouts
            # are per socket operation, so a server trickling bytes could outlast them.
            until = asyncio.get_running_loop().time() + budget
            response = await self._send(current, budget, until)
            try:
                if response.status_code in _REDIRECT_STATUSES:
                    current = self._redirect_target(url, current, origin, response)
                    self.stats.redirects += 1
                    continue
                return await self._body(
                    str(current), response, budget, until, none_on_404=none_on_404
                )
            finally:
                await response.aclose()
        raise _fail(url, f"more than {MAX_REDIRECTS} redirects")

    def _timed_out(self, budget: float) -> str:
        # Name the setting that ran out, not the sliver of time that was left.
        if budget < self.timeout:
            return f"timed out (the {self.deadline:g} s deadline ran out)"
        return f"timed out after the {self.timeout:g} s timeout"

    async def _send(self, url: httpx2.URL, budget: float, until: float) -> httpx2.Response:
        self.stats.requests += 1
        request = self._client.build_request("GET", url, timeout=budget)
        try:
            async with asyncio.timeout_at(until):
                return await self._client.send(request, stream=True)
        except (TimeoutError, httpx2.TimeoutException) as exc:
            raise _Retryable(self._timed_out(budget)) from exc
        except httpx2.ConnectError as exc:
            raise _Retryable(_connect_cause(exc)) from exc
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            detail = _one_line(str(exc)) or type(exc).__name__
            raise _Retryable(f"connection failed ({detail})") from exc
        except httpx2.TransportError as exc:
            detail = _one_line(str(exc)) or type(exc).__name__
            raise _fail(str(url), f"request failed ({detail})") from exc

    def _redirect_target(
        self,
        url: str,
        current: httpx2.URL,
        origin: tuple[str, str, int | None],
        response: httpx2.Response,
    ) -> httpx2.URL:
        location = http_fields.location(response.headers.get("location"))
        if not location:
            raise _fail(url, f"HTTP {response.status_code} redirect without a valid Location")
        try:
            target = current.join(location)
            origin_of_target = _origin(target)
        except (httpx2.InvalidURL, ValueError) as exc:
            # ValueError: an out-of-range port, an IPv6 host that does not parse.
            raise _fail(url, "redirect to an invalid URL") from exc
        if origin_of_target != origin:
            # Never let a redirect move key fetching to a host we were not given.
            raise _fail(
                url, f"redirect to another origin refused ({target.scheme}://{target.host})"
            )
        return target

    async def _body(
        self,
        url: str,
        response: httpx2.Response,
        budget: float,
        until: float,
        *,
        none_on_404: bool,
    ) -> bytes | None:
        status = response.status_code
        if status == 404 and none_on_404:
            return None
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}", retry_after=_retry_after(response))
        if status != 200:
            raise _fail(url, f"HTTP {status}", status=status)
        content_type = response.headers.get("content-type")
        if not _is_json(content_type):
            shown = _one_line((content_type or "").split(";", 1)[0]) or "none"
            raise _fail(url, f"the response is not JSON (Content-Type {shown})")
        limit = f"the response is larger than {_human_size(self.max_bytes)}"
        # A length that does not parse is ignored: the streaming cap below still holds.
        declared = http_fields.content_length(response.headers.get("content-length"))
        if declared is not None and declared > self.max_bytes:
            raise _fail(url, limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(until):
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        # Stop reading: the rest never reaches memory.
                        raise _fail(url, limit)
                    chunks.append(chunk)
        except (TimeoutError, httpx2.TimeoutException) as exc:
            raise _Retryable(self._timed_out(budget) + " reading the body") from exc
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            detail = _one_line(str(exc)) or type(exc).__name__
            raise _Retryable(f"connection failed reading the body ({detail})") from exc
        except httpx2.DecodingError as exc:
            raise _fail(url, "the response body could not be decoded") from exc
        return b"".join(chunks)
