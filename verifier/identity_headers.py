"""The identity headers a client could spoof: one list, one way to compare.

Proxies that authenticate (oauth2-proxy, nginx ``auth_request``, Authelia,
Cloudflare Access, Google IAP, AWS ALB, Azure App Service) tell the app who
the user is in request headers, and many apps read them. A client must never
be able to send them itself, so the middleware removes every one of them
from every request before the app sees it.

Names are compared with case ignored and ``_`` folded into ``-``: uvicorn
passes ``X_Auth_User`` and ``X-Auth_User`` as they were sent, and a WSGI
bridge (Starlette's, a2wsgi, Django's handler) maps both to
``HTTP_X_AUTH_USER``, the same variable as ``X-Auth-User``.

The built-in list (README, Security model):

- prefixes: ``X-Auth-*`` (``X-Auth-Request-*`` included), ``X-User-*``,
  ``Cf-Access-*`` (Cloudflare Access), ``X-Goog-Authenticated-*`` (Google
  IAP), ``X-Amzn-Oidc-*`` (AWS ALB), ``X-MS-CLIENT-PRINCIPAL*`` (Azure App
  Service);
- names: ``X-Forwarded-User``, ``-Email``, ``-Groups``,
  ``-Preferred-Username``, ``-Access-Token`` (oauth2-proxy),
  ``X-Remote-User``, ``Remote-User``, ``Remote-Email``, ``Remote-Groups``,
  ``Remote-Name`` (Authelia), ``X-Goog-Iap-Jwt-Assertion`` (Google IAP);
- plus whatever ``http.strip_headers`` names (exact names, or prefixes when
  they end in ``*``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "IDENTITY_HEADER_NAMES",
    "IDENTITY_HEADER_PREFIXES",
    "MEMO_SIZE",
    "IdentityHeaders",
    "fold_header_name",
]

#: Folded prefixes: any header starting with one of these is removed.
IDENTITY_HEADER_PREFIXES: tuple[str, ...] = (
    "x-auth-",
    "x-user-",
    "cf-access-",
    "x-goog-authenticated-",
    "x-amzn-oidc-",
    "x-ms-client-principal",
)
#: Folded exact names.
IDENTITY_HEADER_NAMES: frozenset[str] = frozenset(
    {
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "x-remote-user",
        "remote-user",
        "remote-email",
        "remote-groups",
        "remote-name",
        "x-goog-iap-jwt-assertion",
    }
)

_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_", b"abcdefghijklmnopqrstuvwxyz-")


def fold_header_name(name: bytes) -> bytes:
    """``name`` in lower case with ``_`` as ``-``: the form names are compared in."""
    return name.translate(_FOLD)


#: Distinct header names whose verdict is remembered; past this the memo
#: starts over, so names an attacker invents cannot grow it.
MEMO_SIZE = 1024


class IdentityHeaders:
    """Decides whether a request header name is a spoofable identity header.

    ``extra`` adds names (``http.strip_headers``); one ending in ``*`` is a
    prefix. Built once per middleware. This is the hot path: an app sees the
    same few dozen header names over and over, so each name's verdict is
    kept in :attr:`known` (raw name → bool, bounded by :data:`MEMO_SIZE`) and
    a request pays one dict lookup per header; only a name never seen before
    is folded and compared.
    """

    __slots__ = ("known", "names", "prefixes")

    def __init__(self, extra: Iterable[str] = ()) -> None:
        prefixes = list(IDENTITY_HEADER_PREFIXES)
        names = set(IDENTITY_HEADER_NAMES)
        for entry in extra:
            folded = fold_header_name(entry.strip().encode("latin-1")).decode("latin-1")
            if folded.endswith("*"):
                if folded[:-1]:
                    prefixes.append(folded[:-1])
            elif folded:
                names.add(folded)
        self.prefixes = tuple(p.encode("latin-1") for p in prefixes)
        self.names = frozenset(n.encode("latin-1") for n in names)
        self.known: dict[bytes, bool] = {}

    def matches(self, name: bytes) -> bool:
        """Whether header ``name`` (raw, any case, ``_`` or ``-``) is on the list."""
        verdict = self.known.get(name)
        if verdict is None:
            folded = name.translate(_FOLD)
            verdict = folded in self.names or folded.startswith(self.prefixes)
            known = self.known
            if len(known) >= MEMO_SIZE:
                known.clear()
            known[name] = verdict
        return verdict
