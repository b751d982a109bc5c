"""The verified-session cache, and the claims of genuine tokens that only expired.

A token seen before is the common case, so :meth:`TokenVerifier.session()
<verifier.tokens.TokenVerifier.session>` looks the pair up in
:class:`SessionCache` BEFORE verifying it. The key must therefore bind every
character of both tokens: it is the SHA-256 of the access token (and of the
ID token, the two told apart by the access token's length), never a part of
them (a cached signature alone would let any payload ride on it). The 32-byte digest
replaces the token strings (~1.2 KB, ~2 KB with an ID token) as the key;
SHA-256 is the fastest digest the standard library has here (SHA-NI, about
1 µs for a 1.2 KB token: ``bench/middleware.py --profile`` measures it).

The digests of the last :data:`DIGEST_MEMO` distinct tokens (or pairs) that
verified are remembered by their exact strings: a browser sends the same
cookies with every request of a page load, so a hot token costs a str hash
instead of a SHA-256. The memo is bounded (it starts over when full), holds
no string that did not verify (a forger cannot fill it), and only ever maps a
string to its own digest, so it cannot serve anything a lookup would not.

An entry holds the :class:`~verifier.session.Session` (whose claims stay as
payload bytes until read), when it may be served (``valid_from <= now <
valid_until``: every time check with leeway) and the kids that signed it, so
a key rotation evicts what that key verified. Only sessions built from
tokens that verified are stored; the LRU bound is ``cache.size``.

:class:`ExpiredProofs` keeps, for a moment, the claims of access tokens whose
signature and claims were all good but ``exp``: the refresh that follows in
the same request proves itself with them instead of verifying the token a
second time (the refresh-storm figure of ``bench/refresh_storm.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DIGEST_MEMO", "CacheStats", "ExpiredProofs", "SessionCache", "cache_key"]

#: Distinct tokens (or pairs) whose digest is remembered: ~600 KB at most.
DIGEST_MEMO = 256


def cache_key(access_token: str, id_token: str | None = None) -> bytes | None:
    """SHA-256 of the whole pair, or ``None`` for a token that is not ASCII
    (no token is: verifying it refuses it, and nothing caches it).

    The input is unambiguous whatever the strings hold (they are not verified
    yet): ``"1 " + access`` alone, ``"2 <len(access)> " + access + " " + id``
    for a pair, so no string, however malformed, finds another's entry.
    """
    if id_token is None:
        if not access_token.isascii():
            return None
        return sha256(f"1 {access_token}".encode("ascii")).digest()
    if not (access_token.isascii() and id_token.isascii()):
        return None
    return sha256(f"2 {len(access_token)} {access_token} {id_token}".encode("ascii")).digest()


@dataclass
class CacheStats:
    """Hits and misses of :meth:`verifier.tokens.TokenVerifier.session`."""

    hits: int = 0
    misses: int = 0


class _Entry:
    __slots__ = ("kids", "session", "valid_from", "valid_until")

    def __init__(
        self,
        session: Session,
        valid_from: float,
        valid_until: float,
        kids: tuple[str | None, str | None],
    ) -> None:
        self.session = session
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.kids = kids


class SessionCache:
    """Sessions of verified token pairs by :func:`cache_key`, least recently used first out.

    ``(access, id_token) in cache`` answers for a pair of tokens (tests and
    diagnostics); the hot path calls :meth:`get` with a key it computed once.
    """

    __slots__ = ("_kid_pairs", "digests", "entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # stdlib OrderedDict keeps a hit to one lookup and one move_to_end.
        self.entries: OrderedDict[bytes, _Entry] = OrderedDict()
        #: Exact token (or (access, ID) pair) -> its cache_key, for hot tokens.
        self.digests: dict[str | tuple[str, str], bytes] = {}
        # Every entry of one key holds the same (kid, kid) pair: one tuple, shared.
        self._kid_pairs: dict[tuple[str | None, str | None], tuple[str | None, str | None]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        key = cache_key(*pair)
        return key is not None and key in self.entries

    def remember(self, exact: str | tuple[str, str], key: bytes) -> None:
        """Remember ``key``, the :func:`cache_key` of ``exact`` (a token, or an
        (access, ID) pair), once it found or made an entry: only strings of
        tokens that verified are kept, at most :data:`DIGEST_MEMO` of them."""
        digests = self.digests
        if len(digests) >= DIGEST_MEMO:
            digests.clear()
        digests[exact] = key

    def get(self, key: bytes, now: float) -> Session | None:
        """The session cached under ``key`` while ``now`` is inside its validity, else ``None``
        (an entry out of its validity is dropped)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.valid_from <= now < entry.valid_until:
            self.entries.move_to_end(key)
            return entry.session
        del self.entries[key]
        return None

    def put(
        self,
        key: bytes,
        session: Session,
        *,
        valid_from: float,
        valid_until: float,
        kids: tuple[str | None, str | None],
    ) -> None:
        """Keep ``session`` (of tokens that verified) for ``valid_from <= now < valid_until``."""
        pairs = self._kid_pairs
        if len(pairs) > 64:  # a handful of keys sign everything; never let it grow
            pairs.clear()
        kids = pairs.setdefault(kids, kids)
        entries = self.entries
        entries[key] = _Entry(session, valid_from, valid_until, kids)
        if len(entries) > self.size:
            entries.popitem(last=False)

    def evict_kids(self, kids: frozenset[str | None]) -> None:
        """Drop the sessions verified with any of ``kids`` (removed or replaced keys)."""
        entries = self.entries
        for key in [key for key, entry in entries.items() if kids.intersection(entry.kids)]:
            del entries[key]

    def clear(self) -> None:
        self.entries.clear()
        self.digests.clear()


class ExpiredProofs:
    """Claims of genuine access tokens whose only fault was ``exp``, by :func:`cache_key`.

    Bounded (``size`` entries, oldest out first), and only ever filled by a
    token that passed every check but its expiry. Read by
    ``verify_access(token, check_expiry=False)``, the refresh proof.
    """

    __slots__ = ("entries", "size")

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: OrderedDict[bytes, Mapping[str, Any]] = OrderedDict()

    def remember(self, token: str | bytes, claims: Mapping[str, Any]) -> None:
        if not isinstance(token, str):
            return
        key = cache_key(token)
        if key is None:
            return
        entries = self.entries
        entries[key] = claims
        entries.move_to_end(key)
        if len(entries) > self.size:
            entries.popitem(last=False)

    def get(self, token: str | bytes) -> Mapping[str, Any] | None:
        if not isinstance(token, str) or not self.entries:
            return None
        key = cache_key(token)
        return None if key is None else self.entries.get(key)

    def clear(self) -> None:
        self.entries.clear()
