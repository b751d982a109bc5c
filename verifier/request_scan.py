"""One pass over a request's headers: what the middleware reads, and what it removes.

:meth:`HeaderScanner.scan` reads the ``Authorization`` Bearer credential,
``Origin``, ``Sec-Fetch-Site``, ``Host`` and the token cookies, and removes
what the app must not see: identity headers a client could spoof
(:mod:`verifier.identity_headers`) and, unless ``cookies.forward``, the token
cookies from the ``Cookie`` header. Every occurrence of a token cookie name
is seen, across pairs and ``Cookie`` headers: a name sent twice is recorded
(``duplicate_cookies``) and then no cookie is a credential.

This runs on every request, so it costs one dict lookup per header: each
raw header name's action is remembered (bounded by
:data:`~verifier.identity_headers.MEMO_SIZE`), and the header list is copied
only when something must be removed. The caller's list is never changed:
:attr:`Scanned.headers` is a new list, or ``None`` when the scope's list
stands as it is.
"""

from __future__ import annotations

from starlette.types import Scope

from .cookies import CookieJar
from .identity_headers import MEMO_SIZE, IdentityHeaders
from .request_rules import bearer_token, join_field

__all__ = ["HeaderScanner", "Paths", "Scanned"]

# What to do with a header, by its raw name. PASS is the only falsy one: the
# loop tests one truth value for the headers it leaves alone.
_PASS, _STRIP, _COOKIE, _AUTHORIZATION, _ORIGIN, _FETCH_SITE, _HOST = range(7)
_UNKNOWN = -1
#: Exact (lower-case) names, as ASGI servers pass them; a name in another case
#: is only ever compared against the identity-header list.
_READ = {
    b"cookie": _COOKIE,
    b"authorization": _AUTHORIZATION,
    b"origin": _ORIGIN,
    b"sec-fetch-site": _FETCH_SITE,
    b"host": _HOST,
}
_NO_NAMES: tuple[str, ...] = ()
#: Shared by every request without token cookies (never written: a request
#: that finds one gets its own dict).
_NO_COOKIES: dict[str, str] = {}


class Scanned:
    """What one request's headers said (see :meth:`HeaderScanner.scan`)."""

    __slots__ = (
        "bearer",
        "cookie_names",
        "cookies",
        "duplicate_cookies",
        "headers",
        "host",
        "origin",
        "sec_fetch_site",
        "stripped",
    )

    def __init__(self) -> None:
        #: The Bearer credential of the first ``Authorization`` header, if any.
        self.bearer: str | None = None
        self.origin: str | None = None
        self.sec_fetch_site: str | None = None
        #: The first ``Host`` value, raw (``None``: none was sent).
        self.host: bytes | None = None
        #: Token cookies by name (empty when a name came twice).
        self.cookies: dict[str, str] = _NO_COOKIES
        #: Every token cookie name carried, once each, in order.
        self.cookie_names: tuple[str, ...] = _NO_NAMES
        self.duplicate_cookies = False
        #: The header list the app gets; ``None``: the scope's own, untouched.
        self.headers: list[tuple[bytes, bytes]] | None = None
        #: Spoofable identity headers removed.
        self.stripped = 0


class HeaderScanner:
    """Scans requests for one middleware: its identity-header list, cookie names
    and ``cookies.forward``."""

    __slots__ = ("actions", "forward", "identity", "jar", "stems")

    def __init__(self, identity: IdentityHeaders, jar: CookieJar, *, forward_cookies: bool) -> None:
        self.identity = identity
        self.jar = jar
        self.forward = forward_cookies
        #: Raw header name -> action; the names read are always in it.
        self.actions: dict[bytes, int] = dict(_READ)
        settings = jar.settings
        # Every token cookie name contains one of these (prefix and chunk
        # suffix aside): a Cookie header holding none has no token cookie.
        self.stems = (settings.access, settings.id, settings.refresh)

    def _learn(self, name: bytes) -> int:
        actions = self.actions
        if len(actions) >= MEMO_SIZE + len(_READ):
            # Names an attacker invents must not grow it: start over.
            actions.clear()
            actions.update(_READ)
        action = _STRIP if self.identity.matches(name) else _PASS
        actions[name] = action
        return action

    def scan(self, scope: Scope) -> Scanned:
        """Read ``scope["headers"]`` once; see :class:`Scanned` for what comes out."""
        request = Scanned()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        actions = self.actions
        kept: list[tuple[bytes, bytes]] | None = None
        names: list[str] = []
        for index, item in enumerate(headers):
            action = actions.get(item[0], _UNKNOWN)
            if action:
                if action == _UNKNOWN:
                    action = self._learn(item[0])
                if action == _STRIP:
                    request.stripped += 1
                    if kept is None:
                        kept = headers[:index]
                    continue
                if action == _COOKIE:
                    value = self._take_cookies(request, names, item[1])
                    if value is not None:
                        # Token cookies were taken out: the app gets the rest, if any.
                        if kept is None:
                            kept = headers[:index]
                        if value:
                            kept.append((item[0], value))
                        continue
                elif action == _AUTHORIZATION:
                    if request.bearer is None:
                        request.bearer = bearer_token(item[1].decode("latin-1"))
                elif action == _HOST:
                    if request.host is None:
                        request.host = item[1]
                elif action == _ORIGIN:
                    request.origin = join_field(request.origin, item[1].decode("latin-1"))
                elif action == _FETCH_SITE:
                    request.sec_fetch_site = join_field(
                        request.sec_fetch_site, item[1].decode("latin-1")
                    )
            if kept is not None:
                kept.append(item)
        request.headers = kept
        if names:
            request.cookie_names = tuple(names)
        if request.duplicate_cookies:
            # Which copy is the user's cannot be told: a sibling host may have
            # planted one (cookie tossing). None of them is a credential.
            request.cookies = _NO_COOKIES
        return request

    def _take_cookies(self, request: Scanned, names: list[str], raw: bytes) -> bytes | None:
        """Collect the token cookies of one ``Cookie`` value (a name seen twice is
        noted); the value without them, or ``None`` when it stays as it is.

        Read as :func:`~verifier.cookies.parse_cookie_header` reads it: pairs
        split at every ``;`` and at their first ``=``, names and values
        stripped. (Of the ways measured, ``split`` and ``partition`` in C with
        a set lookup per name was the fastest: ``find`` loops and a regex
        pass cost more.)
        """
        header = raw.decode("latin-1")
        stems = self.stems
        if stems[0] not in header and stems[1] not in header and stems[2] not in header:
            return None
        jar = self.jar
        token_names, starts, is_token_cookie = jar.token_names, jar.stems, jar.is_token_cookie
        cookies = request.cookies
        if cookies is _NO_COOKIES:
            cookies = request.cookies = {}
        kept = []
        taken = False
        for part in header.split(";"):
            name, equals, value = part.partition("=")
            if equals:
                name = name.strip()
                if name in token_names or (name.startswith(starts) and is_token_cookie(name)):
                    taken = True
                    if name in cookies:
                        request.duplicate_cookies = True
                    else:
                        cookies[name] = value.strip()
                        names.append(name)
                    continue
            kept.append(part)
        if not taken or self.forward:
            return None
        return ";".join(kept).strip().encode("latin-1")


class Paths:
    """Prefix match on whole segments: ``/static`` covers ``/static/x``, not ``/static-x``."""

    __slots__ = ("everything", "exact", "prefixes")

    def __init__(self, paths: list[str]) -> None:
        self.everything = "/" in paths
        self.exact = frozenset(paths)
        self.prefixes = tuple(path + "/" for path in paths)

    def __contains__(self, path: str) -> bool:
        return self.everything or path in self.exact or path.startswith(self.prefixes)
