"""Fuzz the response header fields the issuer (or anything on the way) controls.

``verifier.fetch`` reads ``Retry-After``, ``Date``, ``Content-Type``,
``Content-Length`` and ``Location``; ``verifier.oauth`` reads
``Content-Length``. Values are drawn from any Unicode text, raw bytes, look-
alike digits (``²``, ``١٢``, fullwidth and mathematical digits), numbers in
every spelling, and well-formed HTTP-dates with one edit. Properties
(RFC 9110; issue 17):

- each parser in :mod:`verifier.http_fields` returns ``None`` or a value of
  its grammar, never raises, and accepts only ASCII digits as digits;
- HTTP-dates round-trip in all three forms (IMF-fixdate, RFC 850, asctime);
- a ``Fetcher`` answered with those header values on 200, 3xx, 4xx, 429 and
  5xx responses returns a key set or raises ``JWKSFetchFailed`` /
  ``JWKSInvalid``, nothing else, and never sleeps past its deadline;
- ``post_form`` returns ``(status, body)`` or raises
  ``TokenEndpointUnavailable``, whatever ``Content-Length`` says.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.fuzz import examples
from verifier import http_fields
from verifier.errors import JWKSFetchFailed, JWKSInvalid
from verifier.fetch import Fetcher
from verifier.oauth import MAX_RESPONSE_BYTES, TokenEndpointUnavailable, post_form
from verifier.testing import DevIssuer

NOW = 1_760_000_000.0
JWKS_URL = "https://issuer.test/jwks"
_ASCII_DIGITS = set("0123456789")

#: Digits of other scripts: str.isdigit() is true for all, int() accepts some.
LOOKALIKES = [
    "²",
    "³",
    "¹",
    "١٢",
    "٣",
    "۴",
    "७",
    "\uff10",
    "\uff11\uff12",
    "\U0001d7d5",
    "⑦",
    "Ⅻ",
    "½",
]
SPELLINGS = [
    "0",
    "007",
    "7",
    " 7 ",
    "\t7",
    "-1",
    "+5",
    "1e3",
    "0x10",
    "7.5",
    "5, 5",
    "1" * 30,
    "9" * 5000,
    "",
    " ",
    "Infinity",
    "NaN",
]


def _date_forms(moment: datetime) -> list[str]:
    return [
        format_datetime(moment, usegmt=True),
        moment.strftime("%A, %d-%b-%y %H:%M:%S GMT"),
        moment.strftime("%a %b ") + f"{moment.day:>2}" + moment.strftime(" %H:%M:%S %Y"),
    ]


moments = st.datetimes(
    min_value=datetime(1977, 1, 1), max_value=datetime(2075, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))


@st.composite
def edited_dates(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_date_forms(draw(moments))))
    index = draw(st.integers(min_value=0, max_value=len(text)))
    edit = draw(st.sampled_from(["keep", "insert", "delete", "lower", "upper"]))
    if edit == "insert":
        return text[:index] + draw(st.sampled_from([*LOOKALIKES, " ", "0", ","])) + text[index:]
    if edit == "delete":
        return text[:index] + text[index + 1 :]
    if edit == "lower":
        return text.lower()
    if edit == "upper":
        return text.upper()
    return text


values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(LOOKALIKES + SPELLINGS),
    st.lists(st.sampled_from([*LOOKALIKES, *"0123456789 ,;/"]), max_size=8).map("".join),
    edited_dates(),
    st.sampled_from(
        [
            "application/json",
            "application/jwk-set+json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json;",
            "application /json",
            "application/ json",
            "text/html",
            "application/problem+json",
            "ａpplication/json",  # noqa: RUF001 - a fullwidth look-alike is the point
            "/json",
            "application/",
            "*/*",
        ]
    ),
    st.sampled_from(
        [
            "/jwks",
            "https://issuer.test/jwks2",
            "https://evil.test/jwks",
            "//evil.test/jwks",
            "https://issuer.test:99999/x",
            "https://[::1/x",
            "http://issuer.test/jwks",
            "/jwks²",
            "javascript:alert(1)",
        ]
    ),
)
raw_values = st.one_of(
    values.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)


def ascii_digits(text: str) -> bool:
    stripped = text.strip(" \t")
    return bool(stripped) and set(stripped) <= _ASCII_DIGITS


# -- the parsers -------------------------------------------------------------------------


@settings(max_examples=examples(400))
@given(value=values, date=values)
def test_field_parsers_return_their_grammar_or_none_and_never_raise(value: str, date: str) -> None:
    delay = http_fields.delay_seconds(value)
    assert (delay is not None) == ascii_digits(value)
    if delay is not None:
        assert 0 <= delay <= http_fields.MAX_DELAY_SECONDS

    length = http_fields.content_length(value)
    assert (length is not None) == ascii_digits(value)
    if length is not None:
        assert length >= 0

    moment = http_fields.http_date(value, now=lambda: NOW)
    if moment is not None:
        event("date parsed")
        assert value.isascii()
        assert moment.tzinfo is UTC

    media = http_fields.media_type(value)
    if media is not None:
        kind, _, subtype = media.partition("/")
        assert media.isascii()
        assert kind
        assert subtype
        assert media == media.lower()

    location = http_fields.location(value)
    if location is not None:
        assert location.isascii()
        assert location.isprintable()
        assert " " not in location

    seconds = http_fields.retry_after(value, date, now=lambda: NOW)
    if seconds is not None:
        assert 0.0 <= seconds <= http_fields.MAX_DELAY_SECONDS
        assert ascii_digits(value) or moment is not None


@settings(max_examples=examples(200))
@given(moment=moments)
def test_http_dates_round_trip_in_all_three_forms(moment: datetime) -> None:
    now = lambda: NOW  # noqa: E731 - 2025: two-digit years read 1976..2075
    for form in _date_forms(moment):
        assert http_fields.http_date(form, now=now) == moment, form
    later = moment + timedelta(seconds=90)
    assert http_fields.retry_after(_date_forms(later)[0], _date_forms(moment)[1], now=now) == 90.0


# -- the fetcher and the token endpoint ------------------------------------------------------

FIELDS = ["retry-after", "date", "content-type", "content-length", "location"]


@pytest.fixture(scope="module")
def jwks_body() -> bytes:
    issuer = DevIssuer(issuer="https://issuer.test", audience="api", client_id="web")
    return json.dumps(issuer.jwks()).encode()


@st.composite
def responses(draw: st.DrawFn, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = draw(st.sampled_from([200, 200, 301, 302, 307, 404, 429, 500, 503]))
    chosen = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=5))
    headers = [(name.encode(), draw(raw_values)) for name in chosen]
    if status == 200 and "content-type" not in chosen:
        # Mostly a JSON type, so that what the other fields do is reached.
        headers.append((b"content-type", b"application/json"))
    return status, headers, body if status == 200 else b""


class Sleeps:
    def __init__(self) -> None:
        self.now = 1000.0
        self.total = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert 0.0 <= seconds < float("inf")
        self.now += seconds
        self.total += seconds


@settings(max_examples=examples(200))
@given(data=st.data())
async def test_the_fetcher_survives_any_response_header_values(
    jwks_body: bytes, data: st.DataObject
) -> None:
    answers = data.draw(st.lists(responses(jwks_body), min_size=1, max_size=4), label="answers")
    queue = list(answers)

    def answer(_request: httpx2.Request) -> httpx2.Response:
        status, headers, content = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx2.Response(status, headers=headers, content=content)

    time = Sleeps()
    async with Fetcher(
        transport=httpx2.MockTransport(answer),
        deadline=30.0,
        retries=3,
        clock=time.clock,
        sleep=time.sleep,
        jitter=lambda: 0.5,
    ) as fetcher:
        try:
            jwks, size = await fetcher.fetch_jwks(JWKS_URL)
        except (JWKSFetchFailed, JWKSInvalid) as exc:
            event(f"refused: {exc.code}")
        else:
            event("fetched")
            assert size == len(jwks_body)
            assert len(jwks) > 0
    assert time.total <= 30.0


@settings(max_examples=examples(200))
@given(
    status=st.sampled_from([200, 400, 500]),
    length=st.one_of(
        raw_values, st.integers(min_value=0, max_value=2**70).map(str).map(str.encode)
    ),
    content_type=raw_values,
    body=st.sampled_from([b'{"access_token":"x"}', b"not json", b""]),
)
async def test_post_form_survives_any_content_length(
    status: int, length: bytes, content_type: bytes, body: bytes
) -> None:
    headers = [(b"content-length", length), (b"content-type", content_type)]

    def answer(_request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers, content=body)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
        declared = http_fields.content_length(length.decode("latin-1"))
        if declared is not None and declared > MAX_RESPONSE_BYTES:
            event("declared too large")
            with pytest.raises(TokenEndpointUnavailable, match="ResponseTooLarge"):
                await post_form(client, "https://issuer.test/token", {"a": "b"}, {}, timeout=5.0)
            return
        got, parsed = await post_form(
            client, "https://issuer.test/token", {"a": "b"}, {}, timeout=5.0
        )
    event("answered")
    assert got == status
    assert parsed == (json.loads(body) if body.startswith(b"{") else None)


def test_values_cover_look_alike_digits() -> None:
    assert all(text.isdigit() or not text.isascii() for text in LOOKALIKES if text != "½")
    assert not any(ascii_digits(text) for text in LOOKALIKES)
    assert http_fields.delay_seconds("9" * 5000) == http_fields.MAX_DELAY_SECONDS
    sample: Any = http_fields.content_length("9" * 5000)
    assert sample > MAX_RESPONSE_BYTES
