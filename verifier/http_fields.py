"""Response header fields from the network, read by their RFC 9110 grammar.

An issuer (or anything between us and it) controls these values, so each
parser accepts exactly its field's grammar and returns ``None`` for anything
else, never raising: the caller then behaves as if the field were absent.
Digits are ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` raises,
and ``int("١٢")`` is 12), and no value is converted past a fixed length.

- :func:`delay_seconds`: ``Retry-After``'s ``delay-seconds`` (§10.2.3);
- :func:`http_date`: an HTTP-date (§5.6.7): IMF-fixdate, and the obsolete
  RFC 850 and asctime forms recipients must still accept (``Date``, and
  ``Retry-After``'s other form);
- :func:`retry_after`: ``Retry-After`` as seconds from ``Date`` (or now);
- :func:`content_length`: ``1*DIGIT`` (§8.6);
- :func:`media_type`: the ``type/subtype`` of ``Content-Type`` (§8.3.1);
- :func:`location`: a ``Location`` (§10.2.2) that is visible ASCII.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = [
    "MAX_DELAY_SECONDS",
    "content_length",
    "delay_seconds",
    "http_date",
    "location",
    "media_type",
    "retry_after",
]

#: RFC 9111 §1.2.2: a larger delta-seconds is read as 2**31.
MAX_DELAY_SECONDS = 2**31
#: More digits than any length we could hold: read as this (always over a cap).
_MAX_LENGTH = 2**63 - 1

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
# Case-sensitive, as the grammar is (day-name, month and "GMT" are %s strings).
_IMF_FIXDATE = re.compile(
    rf"(?:{_DAYS}), (?P<day>[0-9]{{2}}) (?P<month>{_MONTH}) (?P<year>[0-9]{{4}}) {_TIME} GMT",
    re.ASCII,
)
_RFC850_DATE = re.compile(
    rf"(?:{_LONG_DAYS}), (?P<day>[0-9]{{2}})-(?P<month>{_MONTH})-(?P<year>[0-9]{{2}}) {_TIME} GMT",
    re.ASCII,
)
_ASCTIME_DATE = re.compile(
    rf"(?:{_DAYS}) (?P<month>{_MONTH}) (?P<day>[0-9 ][0-9]) {_TIME} (?P<year>[0-9]{{4}})",
    re.ASCII,
)
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"[ \t]*({_TCHARS})/({_TCHARS})[ \t]*(?:;.*)?", re.ASCII | re.DOTALL)
_VISIBLE = re.compile(r"[\x21-\x7e]+", re.ASCII)


def delay_seconds(value: str | None) -> int | None:
    """``1*DIGIT`` (surrounding blanks allowed), capped at :data:`MAX_DELAY_SECONDS`."""
    if value is None:
        return None
    value = value.strip(" \t")
    if not _DIGITS.fullmatch(value):
        return None
    # int() of a long digit string is slow (and refused past 4,300 digits).
    if len(value) > 10:
        return MAX_DELAY_SECONDS
    return min(int(value), MAX_DELAY_SECONDS)


def http_date(value: str | None, *, now: Callable[[], float] = time.time) -> datetime | None:
    """An HTTP-date in any of its three forms, as an aware UTC datetime, else None.

    A two-digit RFC 850 year more than 50 years in the future is read as the
    most recent past year with those digits (§5.6.7); ``now`` decides that.
    A leap second (``:60``) is read as ``:59``.
    """
    if value is None:
        return None
    value = value.strip(" \t")
    if len(value) > 64:
        return None
    match = (
        _IMF_FIXDATE.fullmatch(value)
        or _RFC850_DATE.fullmatch(value)
        or _ASCTIME_DATE.fullmatch(value)
    )
    if match is None:
        return None
    fields = match.groupdict()
    year = int(fields["year"])
    if len(fields["year"]) == 2:
        this_year = datetime.fromtimestamp(now(), UTC).year
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    try:
        return datetime(
            year,
            _MONTHS.index(fields["month"]) + 1,
            int(fields["day"]),
            int(fields["hour"]),
            int(fields["minute"]),
            min(int(fields["second"]), 59),
            tzinfo=UTC,
        )
    except ValueError:  # 31 Feb, hour 25, year 0000
        return None


def retry_after(
    value: str | None, date: str | None = None, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, else None.

    An HTTP-date is measured against the response's own ``Date`` when that
    parses (so our clock's skew does not matter), else against ``now``.
    """
    seconds = delay_seconds(value)
    if seconds is not None:
        return float(seconds)
    when = http_date(value, now=now)
    if when is None:
        return None
    sent = http_date(date, now=now)
    reference = sent.timestamp() if sent is not None else now()
    return min(max(0.0, when.timestamp() - reference), float(MAX_DELAY_SECONDS))


def content_length(value: str | None) -> int | None:
    """``1*DIGIT`` (surrounding blanks allowed); a huge value stays huge, never raises."""
    if value is None:
        return None
    value = value.strip(" \t")
    if not _DIGITS.fullmatch(value):
        return None
    return _MAX_LENGTH if len(value) > 18 else int(value)


def media_type(value: str | None) -> str | None:
    """The lower-cased ``type/subtype`` of a ``Content-Type``; parameters are not read."""
    if value is None:
        return None
    match = _MEDIA_TYPE.fullmatch(value)
    if match is None:
        return None
    return f"{match[1]}/{match[2]}".lower()


def location(value: str | None) -> str | None:
    """A ``Location`` value made of visible ASCII (a URI-reference never holds more)."""
    if value is None:
        return None
    value = value.strip(" \t")
    return value if _VISIBLE.fullmatch(value) else None
