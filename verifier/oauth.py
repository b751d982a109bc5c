"""Talking to the issuer's token endpoint: one bounded POST, one error vocabulary.

The refresher and the login callback both post a form to the token endpoint.
The answer comes from the network, so it is treated like any other untrusted
input: the whole call is bounded in time (httpx2's timeouts are per phase),
the body is read up to :data:`MAX_RESPONSE_BYTES` and no further (a larger
``Content-Length``, read by its RFC 9110 grammar, is refused unread), and only the
RFC 6749 error codes are ever repeated in a message (an issuer that echoes a
token in ``error`` must not get it into our logs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import httpx2
import orjson

from .http_fields import content_length

__all__ = [
    "MAX_RESPONSE_BYTES",
    "OAUTH_ERRORS",
    "TokenEndpointUnavailable",
    "oauth_error",
    "post_form",
]

#: A token response is a few KB; anything past this is refused unread.
MAX_RESPONSE_BYTES = 1024 * 1024

#: RFC 6749 §5.2 error codes: the only ``error`` values a message may repeat.
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
    }
)


class TokenEndpointUnavailable(Exception):
    """No usable answer: unreachable, too slow, or too large. ``cause`` is a class name."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def oauth_error(body: object) -> str | None:
    """The response's ``error`` when it is a standard code, else ``None``."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error in OAUTH_ERRORS else None


async def post_form(
    client: httpx2.AsyncClient,
    url: str,
    form: Mapping[str, str | Sequence[str]],
    headers: dict[str, str],
    *,
    timeout: float,
) -> tuple[int, object]:
    """POST ``form``; return the status and the parsed JSON body (``None`` if not JSON).

    A sequence value sends the parameter once per item (RFC 8707 ``resource``).

    Raises :class:`TokenEndpointUnavailable` when the endpoint cannot be
    reached, answers too slowly, or sends more than :data:`MAX_RESPONSE_BYTES`.
    """
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url, data=form, headers=headers) as response:
                # A declared length over the cap is refused unread; one that does
                # not parse (RFC 9110 §8.6) is ignored, and the cap below holds.
                declared = content_length(response.headers.get("content-length"))
                if declared is not None and declared > MAX_RESPONSE_BYTES:
                    raise TokenEndpointUnavailable("ResponseTooLarge")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise TokenEndpointUnavailable("ResponseTooLarge")
                    chunks.append(chunk)
                status = response.status_code
    except (TimeoutError, httpx2.HTTPError, httpx2.InvalidURL, OSError, OverflowError) as exc:
        raise TokenEndpointUnavailable(type(exc).__name__) from None
    try:
        return status, orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return status, None
