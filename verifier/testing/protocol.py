"""The wire side of the dev issuer's OAuth endpoints: parameters, forms, client credentials.

RFC 6749 request parsing (no parameter twice, urlencoded bodies only, Basic
credentials form-encoded first), PKCE ``S256``, URL checks, and
:class:`OAuthError`, the error answer of RFC 6749 §5.2. For demos and tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = [
    "NO_STORE",
    "PKCE",
    "OAuthError",
    "basic_credentials",
    "corrupt_signature",
    "digest",
    "equal",
    "http_url",
    "narrow_scope",
    "new_sid",
    "read_form",
    "required",
    "s256",
    "single_params",
    "with_query",
]

# RFC 7636 §4.1: 43 to 128 unreserved characters, for verifiers and challenges alike.
PKCE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An error answer in the shape of RFC 6749 §5.2 (never carries a token)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            # RFC 6749 §5.2: a 401 names the authentication scheme the client may use.
            headers["WWW-Authenticate"] = 'Basic realm="dev-issuer"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, self.status, headers)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def equal(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def new_sid() -> str:
    return str(uuid.uuid4())


def corrupt_signature(token: str) -> str:
    """The same token with every signature byte flipped: still base64url, never valid."""
    signing_input, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    flipped = bytes(byte ^ 0xFF for byte in raw)
    return signing_input + "." + base64.urlsafe_b64encode(flipped).rstrip(b"=").decode("ascii")


#: RFC 8707 §2: ``resource`` may be sent several times (one per target API).
_REPEATABLE = frozenset({"resource"})


def single_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 §3.1: no parameter twice (``resource`` aside: RFC 8707 allows it; the
    DevIssuer ignores it); one sent without a value counts as omitted."""
    params: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen and name not in _REPEATABLE:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        seen.add(name)
        if value:
            params[name] = value
    return params


async def read_form(request: Request) -> dict[str, str]:
    """The form body, parsed without python-multipart (urlencoded only, as RFC 6749 says)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OAuthError("invalid_request", "the body is not UTF-8") from exc
    return single_params(parse_qsl(text, keep_blank_values=True))


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise OAuthError("invalid_request", f"{name} is required")
    return value


def narrow_scope(granted: str, requested: str | None) -> str:
    """RFC 6749 §6: a refresh may ask for fewer scopes than were granted, never more."""
    if requested is None:
        return granted
    if not set(requested.split()) <= set(granted.split()):
        raise OAuthError("invalid_scope", "scope exceeds what was granted")
    return requested


def basic_credentials(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: Basic credentials whose parts are form-urlencoded first."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "only Basic client authentication is supported", 401)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return unquote_plus(client_id), unquote_plus(secret)


def http_url(value: str | None, name: str) -> str:
    """Any absolute http(s) URL without a fragment: it is a dev issuer, not an allowlist."""
    if value is None:
        raise OAuthError("invalid_request", f"{name} is required")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise OAuthError("invalid_request", f"{name} is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise OAuthError("invalid_request", f"{name} must be an absolute http(s) URL")
    if parts.fragment or "#" in value:
        raise OAuthError("invalid_request", f"{name} must not contain a fragment")
    return value


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended, keeping the query it already has (RFC 6749 §3.1.2)."""
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))
