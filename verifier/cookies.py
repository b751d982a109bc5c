"""Read and write the token cookies.

Tokens can outgrow a browser's ~4 KB cookie limit (organizations and
projects live in the claims), so a long value is split into chunks
``name.0``, ``name.1``, … of at most :data:`CHUNK_SIZE` characters, up to
``cookies.max_chunks``. Writing a value clears the chunks (or the unchunked
cookie) a previous, differently sized value left behind.

Every cookie is HttpOnly with the configured SameSite, Path, Domain and
Max-Age. ``Secure`` follows ``cookies.secure``: ``auto`` turns it on unless
the request is plain http to a loopback host (local development), reading the
scheme uvicorn reports, so ``--proxy-headers`` behind TLS keeps it. Secure
cookies without a Domain get the ``__Host-`` prefix (``host_prefix=auto``),
which browsers only accept from a secure origin for the exact host.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Literal

from starlette.types import Scope

from .config import CookiesSettings

__all__ = [
    "CHUNK_SIZE",
    "CookieJar",
    "TokenSet",
    "is_loopback_host",
    "parse_cookie_header",
    "request_host",
    "request_is_secure",
]

#: Characters per chunk: leaves room for the name and attributes under 4096.
CHUNK_SIZE = 3800
#: Cookie names this app can write: configured names (letters, digits, ``_``,
#: ``-``), the ``__Host-`` prefix and ``.N`` chunk suffixes.
_WRITABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
TokenKind = Literal["access", "id", "refresh"]
_KINDS: tuple[TokenKind, ...] = ("access", "id", "refresh")


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens as carried by cookies (any may be missing)."""

    access: str | None = None
    id: str | None = None
    refresh: str | None = None

    def __repr__(self) -> str:
        # Never show token values.
        present = [kind for kind in _KINDS if getattr(self, kind)]
        return f"TokenSet(present={present!r})"


def parse_cookie_header(value: str) -> dict[str, str]:
    """Cookie pairs, first occurrence winning, without SimpleCookie's quirks."""
    cookies: dict[str, str] = {}
    for chunk in value.split(";"):
        name, sep, val = chunk.partition("=")
        name = name.strip()
        if sep and name and name not in cookies:
            cookies[name] = val.strip()
    return cookies


def request_host(scope: Scope) -> str:
    """The Host header (lower case), or the server address."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return str(value.decode("latin-1").strip().lower())
    server = scope.get("server")
    if server:
        host, port = server
        return f"{host}:{port}" if port else str(host)
    return ""


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 and ``[::1]``, any port."""
    if host.startswith("["):
        hostname = host[1 : host.find("]")] if "]" in host else host
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    hostname = hostname.rstrip(".")
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        # A DNS name such as 127.evil.com is not loopback, whatever it starts with.
        return False


def request_is_secure(scope: Scope, mode: str, *, host: str | None = None) -> bool:
    """Whether cookies for this request get ``Secure``; ``host`` is
    :func:`request_host` when the caller has read it already."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    scheme = scope.get("scheme", "http")
    if scheme in ("https", "wss"):
        return True
    return not is_loopback_host(request_host(scope) if host is None else host)


class CookieJar:
    """Names, reading and ``Set-Cookie`` values for the token cookies."""

    def __init__(self, settings: CookiesSettings) -> None:
        self.settings = settings
        # Names are fixed by the settings: compute them once, not per request.
        self._names = {secure: self._build_names(secure) for secure in (False, True)}
        self._chunks = {
            name: tuple(f"{name}.{index}" for index in range(settings.max_chunks))
            for names in self._names.values()
            for name in names.values()
        }
        bases = (settings.access, settings.id, settings.refresh)
        self._known = frozenset(
            name
            for base in bases
            for prefixed in (base, "__Host-" + base)
            for name in (prefixed, *(f"{prefixed}.{i}" for i in range(settings.max_chunks)))
        )
        self._stems = tuple({*bases, *("__Host-" + base for base in bases)})
        #: What every token cookie name starts with: a base name, or it with ``__Host-``.
        self.stems = self._stems
        #: Every token cookie name up to ``max_chunks`` chunks, with and without
        #: ``__Host-`` (:meth:`is_token_cookie` also knows chunks past that).
        self.token_names = self._known
        self._triples = {
            secure: (names["access"], names["id"], names["refresh"])
            for secure, names in self._names.items()
        }

    def _build_names(self, secure: bool) -> dict[TokenKind, str]:
        prefix = self._prefix(secure)
        s = self.settings
        return {"access": prefix + s.access, "id": prefix + s.id, "refresh": prefix + s.refresh}

    def names(self, *, secure: bool) -> dict[TokenKind, str]:
        return dict(self._names[secure])

    def _prefix(self, secure: bool) -> str:
        s = self.settings
        # Browsers accept __Host- only when Secure, without Domain and with Path=/.
        use = secure and s.domain is None and s.path == "/" and s.host_prefix == "auto"
        return "__Host-" if use else ""

    def is_token_cookie(self, name: str) -> bool:
        """Any token cookie or chunk, with or without the ``__Host-`` prefix."""
        if name in self._known:
            return True
        if not name.startswith(self._stems):
            return False
        # A chunk index beyond max_chunks is still ours (and still stripped).
        base = name.removeprefix("__Host-")
        stem, dot, index = base.rpartition(".")
        s = self.settings
        return bool(dot) and index.isdigit() and stem in (s.access, s.id, s.refresh)

    def read(self, cookies: Mapping[str, str], *, secure: bool) -> TokenSet:
        """The tokens in the request's cookies (chunks joined)."""
        access, id_, refresh = self._triples[secure]
        # One lookup per kind when the token came whole (the common case).
        values = cookies.get(access), cookies.get(id_), cookies.get(refresh)
        # Positional: the frozen dataclass's keyword call costs more, on every request.
        return TokenSet(
            values[0] or None if values[0] is not None else self._read_one(cookies, access),
            values[1] or None if values[1] is not None else self._read_one(cookies, id_),
            values[2] or None if values[2] is not None else self._read_one(cookies, refresh),
        )

    def _read_one(self, cookies: Mapping[str, str], name: str) -> str | None:
        value = cookies.get(name)
        if value is not None:
            return value or None
        chunks = self._chunks[name]
        if chunks[0] not in cookies:
            return None
        parts: list[str] = []
        for chunk in chunks:
            part = cookies.get(chunk)
            if part is None:
                break
            parts.append(part)
        # A chunk after a gap means a torn write: the joined value would be wrong.
        if any(chunk in cookies for chunk in chunks[len(parts) + 1 :]):
            return None
        return "".join(parts) or None

    def set_cookies(
        self,
        tokens: TokenSet,
        *,
        secure: bool,
        present: Iterable[str] | None = None,
        clear_missing: bool = False,
    ) -> list[str]:
        """``Set-Cookie`` values that store ``tokens``.

        ``present`` is the token cookie names the request carried (the
        middleware's ``scope["jwtedge.cookies_present"]``): stale chunks among
        them are cleared and nothing else. ``None`` means unknown: a kind to
        clear then gets its base name cleared blind. With ``clear_missing`` a
        kind with no token is cleared. Raises ``ValueError`` when a token
        needs more than ``max_chunks``.
        """
        blind = present is None
        present = set(present or ())
        names = self.names(secure=secure)
        headers: list[str] = []
        for kind in _KINDS:
            value = getattr(tokens, kind)
            name = names[kind]
            if value is None:
                if clear_missing:
                    headers += self._clear(name, present, keep=set(), secure=secure, blind=blind)
                continue
            pieces = [value[i : i + CHUNK_SIZE] for i in range(0, len(value), CHUNK_SIZE)]
            if len(pieces) > self.settings.max_chunks:
                raise ValueError(f"the {kind} token needs more than cookies.max_chunks chunks")
            written = [name] if len(pieces) == 1 else [f"{name}.{i}" for i in range(len(pieces))]
            max_age = int(self.settings.refresh_max_age)
            for cookie_name, piece in zip(written, pieces, strict=True):
                headers.append(self._header(cookie_name, piece, max_age=max_age, secure=secure))
            headers += self._clear(name, present, keep=set(written), secure=secure, blind=False)
        return headers

    def clear_cookies(self, *, secure: bool, present: Iterable[str] | None = None) -> list[str]:
        """``Set-Cookie`` values that delete the token cookies and chunks in ``present``
        (every base name when ``present`` is ``None``: unknown)."""
        return self.set_cookies(TokenSet(), secure=secure, present=present, clear_missing=True)

    def _clear(
        self, name: str, present: set[str], *, keep: set[str], secure: bool, blind: bool
    ) -> list[str]:
        candidates = {name, *(f"{name}.{i}" for i in range(self.settings.max_chunks))}
        stale = sorted((candidates & present) - keep)
        if blind and not keep and not stale:
            # Nobody said what the browser holds: clear the base name to be sure.
            stale = [name]
        return [self._header(cookie, "", max_age=0, secure=secure) for cookie in stale]

    def clear_everywhere(
        self, names: Iterable[str], *, secure: bool, keep: Collection[str] = ()
    ) -> list[str]:
        """``Set-Cookie`` values deleting each of ``names`` wherever this app may have set it.

        A browser keeps one cookie per (name, domain, path): after a change of
        ``cookies.domain`` or ``cookies.path`` it may hold the old and the new
        variant side by side for up to ``refresh_max_age``, and a sibling host
        can plant a third (cookie tossing). So each name is cleared host-only
        and with ``cookies.domain``, at ``cookies.path`` and at ``/``;
        ``__Host-`` names only exist host-only at ``/``, always Secure. Names
        in ``keep`` are being set anew by the same response: their configured
        variant is left to that new value.
        """
        s = self.settings
        configured = (s.domain or None, s.path)
        domains = (None, s.domain) if s.domain else (None,)
        paths = tuple(dict.fromkeys((s.path, "/")))
        headers: list[str] = []
        for name in dict.fromkeys(names):
            if not _WRITABLE_NAME.fullmatch(name):
                # Not a name this app writes (``jwtedge_id.²`` passes as a chunk
                # name when stripping): nothing of ours to delete.
                continue
            host_only = name.startswith("__Host-")
            places = [(None, "/")] if host_only else [(d, p) for d in domains for p in paths]
            for place in places:
                if name in keep and (host_only or place == configured):
                    continue
                headers.append(
                    self._header(name, "", max_age=0, secure=secure or host_only, place=place)
                )
        return headers

    def _header(
        self,
        name: str,
        value: str,
        *,
        max_age: int,
        secure: bool,
        place: tuple[str | None, str] | None = None,
    ) -> str:
        """One ``Set-Cookie`` value; ``place`` overrides the configured (domain, path)."""
        s = self.settings
        domain, path = place if place is not None else (s.domain, s.path)
        cookie: SimpleCookie = SimpleCookie()
        cookie[name] = value
        morsel = cookie[name]
        morsel["path"] = path
        morsel["max-age"] = max_age
        morsel["httponly"] = True
        morsel["samesite"] = s.same_site.capitalize()
        if domain:
            morsel["domain"] = domain
        if secure or s.same_site == "none":
            morsel["secure"] = True
        return morsel.OutputString()
