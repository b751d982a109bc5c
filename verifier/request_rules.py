"""The one browser-safety decision, taken alike in process and for a proxy.

:class:`~verifier.middleware.JWTSessionMiddleware` judges the request in front
of it; the forward-auth endpoint (``/auth/verify``, for nginx ``auth_request``
and Traefik ``forwardAuth``) judges the request a proxy is about to pass on,
from the headers the proxy sends. A rule taken twice drifts (a Bearer header
one side read as empty and the other as present, a method list one side read
as unsafe and the other as safe), so both ask :func:`refusal`, and read their
inputs with the helpers here:

- **credentials**: :func:`bearer_token` reads an ``Authorization`` value. A
  Bearer value that is empty after stripping SP and HTAB (RFC 9110's OWS) is
  no Bearer; any other character (NBSP, a control character) makes it a Bearer
  credential, which then fails verification: it is never a reason to read the
  cookies and skip the browser rules. :func:`uses_cookie_credentials` says
  whether the request is authenticated by the cookies a browser attaches on
  its own.
- **method**: :func:`method_is_safe`. Only ``GET``, ``HEAD``, ``OPTIONS`` and
  ``TRACE`` (RFC 9110 §9.2.1, case-sensitive) are safe; an unknown or
  malformed method (``post``, ``"POST, GET"``, an empty value) is unsafe. No
  value at all means ``GET``: a proxy's subrequest is a GET and says nothing
  unless told to (nginx ``X-Original-Method``, Traefik ``X-Forwarded-Method``:
  :func:`original_methods`).
- **WebSocket handshake**: :func:`is_websocket_handshake`. Any one of
  ``Sec-WebSocket-Key``, ``Sec-WebSocket-Version``, ``Upgrade: websocket`` or
  ``Sec-Fetch-Mode: websocket``: proxies drop ``Upgrade`` (a hop-by-hop
  header) from the subrequest and keep the others, and a browser sends all
  of them, so any one is enough.
- **origin**: :func:`origin_of` (the request's own origin), :func:`same_origin`
  (the CSRF rule: ``Origin``, or ``Sec-Fetch-Site: same-origin`` without one)
  and :func:`origin_allowed` (the WebSocket rule: ``websocket.allowed_origins``,
  the own origin when empty; a missing ``Origin`` is never allowed, since
  browsers always send it on a handshake). A header field sent more than once
  is read as one value joined with ``", "`` (:func:`join_field`), which never
  equals an origin: fail closed.

Bearer callers are never judged here: a browser does not attach an
``Authorization`` header to a cross-site request on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .cookies import TokenSet
from .errors import CSRFRejected

__all__ = [
    "COOKIE_AUTH_KEY",
    "ORIGINAL_METHOD_HEADERS",
    "SAFE_METHODS",
    "bearer_token",
    "cross_origin_upgrade",
    "header_field",
    "is_websocket_handshake",
    "join_field",
    "method_is_safe",
    "origin_allowed",
    "origin_of",
    "original_methods",
    "refusal",
    "same_origin",
    "uses_cookie_credentials",
]

#: The scope key where the middleware records :func:`uses_cookie_credentials`
#: for every http and websocket scope. The forward-auth endpoint reads it: the
#: token cookies are gone from the headers it sees (``cookies.forward``).
COOKIE_AUTH_KEY = "jwtedge.cookie_auth"
#: RFC 9110 §9.2.1. Method names are case-sensitive: ``get`` is not ``GET``.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Where a proxy puts the original request's method: nginx (the shipped
#: config) and Traefik's forwardAuth.
ORIGINAL_METHOD_HEADERS = (b"x-original-method", b"x-forwarded-method")
_OWS = " \t"
_HANDSHAKE_PRESENT = frozenset({b"sec-websocket-key", b"sec-websocket-version"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_WS_SCHEMES = {"ws": "http", "wss": "https"}


def bearer_token(value: str) -> str | None:
    """The credential of an ``Authorization: Bearer`` value, else ``None``.

    The scheme ends at the first SP and is compared without case (RFC 9110
    §11.1); only SP and HTAB are stripped from the credential. ``"Bearer "``
    and ``"Bearer \\t"`` are no Bearer; ``"Bearer \\xa0"`` is a Bearer
    credential ``"\\xa0"`` (which fails verification).
    """
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip(_OWS)
    return credentials or None


def uses_cookie_credentials(bearer: str | None, tokens: TokenSet) -> bool:
    """Whether the request authenticates with token cookies, not a Bearer header.

    Any access or refresh cookie counts, valid or not: the browser rules are
    decided before verification, so a bad cookie is refused for its origin
    the same way a good one is.
    """
    return bearer is None and (tokens.access is not None or tokens.refresh is not None)


def method_is_safe(methods: Sequence[str]) -> bool:
    """Whether every method value is a safe method; no value at all means ``GET``."""
    return SAFE_METHODS.issuperset(methods)


def original_methods(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every ``X-Original-Method`` / ``X-Forwarded-Method`` value, as sent.

    ``headers`` are ASGI headers (lower-case names). Each value is judged
    whole, so ``"POST, GET"`` is one malformed (unsafe) method, and a second
    header saying ``GET`` never hides a first one saying ``POST``.
    """
    return [value.decode("latin-1") for name, value in headers if name in ORIGINAL_METHOD_HEADERS]


def is_websocket_handshake(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether ASGI ``headers`` belong to a WebSocket opening handshake.

    ``Sec-WebSocket-Key`` or ``Sec-WebSocket-Version`` present (any value),
    ``websocket`` among the ``Upgrade`` protocols, or ``Sec-Fetch-Mode:
    websocket``; names and these values compared without case.
    """
    for name, value in headers:
        if name in _HANDSHAKE_PRESENT:
            return True
        if name == b"upgrade":
            protocols = value.decode("latin-1").split(",")
            if any(p.partition("/")[0].strip(_OWS).lower() == "websocket" for p in protocols):
                return True
        elif name == b"sec-fetch-mode" and value.strip(b" \t").lower() == b"websocket":
            return True
    return False


def join_field(current: str | None, value: str) -> str:
    """``value`` added to a header field read so far (RFC 9110 §5.3: one list)."""
    return value if current is None else f"{current}, {value}"


def header_field(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """Every value of one ASGI header joined by :func:`join_field`; ``None`` when absent."""
    field: str | None = None
    for key, value in headers:
        if key == name:
            field = join_field(field, value.decode("latin-1"))
    return field


def origin_of(scheme: str, host: str) -> str:
    """The serialized origin of a request to ``host`` (``Host`` value) over ``scheme``.

    ``ws``/``wss`` count as ``http``/``https``; a default port is dropped, as
    browsers drop it from ``Origin``.
    """
    scheme = scheme.lower()
    scheme = _WS_SCHEMES.get(scheme, scheme)
    host = host.strip(_OWS).lower()
    default = _DEFAULT_PORTS.get(scheme, "")
    if default and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


def _normal(origin: str) -> str:
    return origin.strip(_OWS).lower().rstrip("/")


def same_origin(origin: str | None, sec_fetch_site: str | None, own_origin: str) -> bool:
    """The CSRF rule's test: ``Origin`` equals ``own_origin``; without an ``Origin``,
    ``Sec-Fetch-Site: same-origin`` (case and a trailing slash ignored)."""
    if origin is not None:
        return _normal(origin) == own_origin
    return sec_fetch_site is not None and sec_fetch_site.strip(_OWS).lower() == "same-origin"


def origin_allowed(origin: str | None, own_origin: str, allowed: Sequence[str]) -> bool:
    """The WebSocket rule's test: ``Origin`` in ``allowed``, or ``own_origin`` when empty."""
    if origin is None:
        return False
    origin = _normal(origin)
    if allowed:
        return origin in (_normal(entry) for entry in allowed)
    return origin == own_origin


def cross_origin_upgrade() -> CSRFRejected:
    """The refusal of a cookie-authenticated handshake from an origin not allowed."""
    return CSRFRejected("cross-origin WebSocket upgrade with cookie credentials refused")


def refusal(
    *,
    cookie_auth: bool,
    methods: Sequence[str],
    websocket: bool,
    origin: str | None,
    sec_fetch_site: str | None,
    own_origin: Callable[[], str],
    allowed_origins: Sequence[str],
) -> CSRFRejected | None:
    """The one decision: why this request must be refused (403), or ``None``.

    - ``cookie_auth``: from :func:`uses_cookie_credentials`; Bearer and
      anonymous requests are never refused here.
    - ``methods``: the method(s) of the request judged (empty: ``GET``).
    - ``websocket``: an ASGI ``websocket`` scope in process,
      :func:`is_websocket_handshake` for a proxy.
    - ``origin``, ``sec_fetch_site``: the header fields, as :func:`header_field`
      reads them.
    - ``own_origin``: called only when needed (:func:`origin_of`).
    - ``allowed_origins``: ``websocket.allowed_origins``.

    A cookie-authenticated handshake needs an allowed ``Origin``
    (:func:`cross_origin_upgrade`); a cookie-authenticated unsafe method needs
    the same origin (:class:`~verifier.errors.CSRFRejected`).
    """
    if not cookie_auth:
        return None
    own: str | None = None
    if websocket:
        own = own_origin()
        if not origin_allowed(origin, own, allowed_origins):
            return cross_origin_upgrade()
    if not method_is_safe(methods):
        own = own if own is not None else own_origin()
        if not same_origin(origin, sec_fetch_site, own):
            return CSRFRejected()
    return None
