"""The cached path's shape (issue 24): what it writes, what it copies, what it keeps.

Behaviour, never durations: the middleware writes the scope in place and
replaces (never edits) the header list only when it removes something; the
one-pass cookie scan reads every pair as the plain split-based parse does
(checked against it by hypothesis); the session cache keys on a digest of
both whole tokens and keeps payload bytes, not claims; equal memberships are
shared between sessions; a token that only expired is verified once per
request, its claims then prove the refresh.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.authentication import UnauthenticatedUser
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import make_config
from verifier.config import CookiesSettings
from verifier.cookies import CookieJar
from verifier.errors import AudienceMismatch, TokenExpired, VerifierError
from verifier.identity_headers import IdentityHeaders
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore, VerificationKey
from verifier.middleware import COOKIES_PRESENT_KEY, JWTSessionMiddleware
from verifier.request_scan import HeaderScanner, Scanned
from verifier.session import Session
from verifier.session_cache import DIGEST_MEMO, ExpiredProofs, cache_key
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ORGS = [
    {"id": "org_1", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
    {"id": "org_2", "slug": "globex", "name": "Globex", "role": "member"},
]
PROJECTS = [{"id": "prj_1", "slug": "site", "organizationId": "org_1"}]


class Inner:
    """An ASGI app that records the scope it was given."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(headers: list[tuple[bytes, bytes]], method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app: JWTSessionMiddleware, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def token(issuer: DevIssuer, sub: str = "u1", **kwargs: Any) -> str:
    return issuer.access_token(sub, organizations=ORGS, projects=PROJECTS, **kwargs)


# -- the scope and its headers ------------------------------------------------------------


async def test_the_app_gets_the_very_header_list_when_nothing_is_removed(
    issuer: DevIssuer,
) -> None:
    inner = Inner()
    app = JWTSessionMiddleware(inner, make_config(issuer))
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", f"Bearer {token(issuer)}".encode()),
        (b"cookie", b"theme=dark; lang=en"),
    ]
    scope = http_scope(headers)

    await call(app, scope)

    (seen,) = inner.scopes
    assert seen is scope  # written in place, as Starlette's AuthenticationMiddleware does
    assert seen["headers"] is headers
    assert seen["user"].identity == "u1"
    assert seen[COOKIES_PRESENT_KEY] == ()


async def test_the_callers_header_list_is_never_edited_when_headers_are_removed(
    issuer: DevIssuer,
) -> None:
    inner = Inner()
    app = JWTSessionMiddleware(inner, make_config(issuer))
    access = token(issuer)
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"x-auth-user", b"admin"),
        (b"cookie", f"theme=dark; jwtedge_access={access}".encode()),
        (b"accept", b"*/*"),
    ]
    original = list(headers)
    scope = http_scope(headers)

    await call(app, scope)

    assert headers == original  # the caller's list, untouched
    (seen,) = inner.scopes
    assert seen["headers"] is not headers
    assert seen["headers"] == [
        (b"host", b"127.0.0.1:8000"),
        (b"cookie", b"theme=dark"),
        (b"accept", b"*/*"),
    ]
    assert seen["user"].identity == "u1"
    assert seen[COOKIES_PRESENT_KEY] == ("jwtedge_access",)


async def test_a_token_cookie_named_in_two_cookie_headers_is_no_credential(
    issuer: DevIssuer,
) -> None:
    inner = Inner()
    app = JWTSessionMiddleware(inner, make_config(issuer))
    scope = http_scope(
        [
            (b"host", b"127.0.0.1:8000"),
            (b"cookie", f"jwtedge_access={token(issuer, 'victim')}".encode()),
            (b"cookie", f"a=1; jwtedge_access={token(issuer, 'planted')}".encode()),
        ]
    )

    sent = await call(app, scope)

    (seen,) = inner.scopes
    assert not seen["user"].is_authenticated
    assert seen["headers"] == [(b"host", b"127.0.0.1:8000"), (b"cookie", b"a=1")]
    assert app.stats.duplicate_cookies == 1
    cleared = [v for k, v in sent[0]["headers"] if k == b"set-cookie" and b"Max-Age=0" in v]
    assert cleared, "every variant of the duplicated cookie is deleted"


async def test_anonymous_requests_share_placeholders_that_cannot_be_changed(
    issuer: DevIssuer,
) -> None:
    inner = Inner()
    app = JWTSessionMiddleware(inner, make_config(issuer))

    await call(app, http_scope([(b"host", b"127.0.0.1:8000")]))
    await call(app, http_scope([(b"host", b"127.0.0.1:8000")]))

    first, second = inner.scopes
    assert isinstance(first["user"], UnauthenticatedUser)
    assert first["auth"] is second["auth"]
    assert tuple(first["auth"].scopes) == ()
    with pytest.raises(AttributeError):
        first["auth"].scopes = ["admin"]


# -- the cookie scan reads what the plain parse reads --------------------------------------


def reference_take(
    header: str, is_token: Any, forward: bool
) -> tuple[dict[str, str], list[str], bool, str | None]:
    """The split-based parse the scan replaced (issue 22's), kept as the oracle."""
    cookies: dict[str, str] = {}
    names: list[str] = []
    duplicate = False
    kept = []
    taken = False
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if sep and is_token(name):
            taken = True
            if name in cookies:
                duplicate = True
            else:
                cookies[name] = value.strip()
                names.append(name)
            if not forward:
                continue
        kept.append(part)
    if not taken or forward:
        return cookies, names, duplicate, None
    return cookies, names, duplicate, ";".join(kept).strip()


_PIECES = st.sampled_from(
    [
        "jwtedge_access",
        "__Host-jwtedge_access",
        "jwtedge_id",
        "jwtedge_id.0",
        "jwtedge_id.1",
        "jwtedge_refresh",
        "jwtedge_access.17",
        "__Host-jwtedge_id.9",
        "__Host-",
        "xjwtedge_access",
        "theme",
        "=",
        ";",
        " ",
        "\t",
        "\xa0",
        "a",
        "eyJ.x_Y-z",
        "\n",
        "\x1f",
        ";;",
    ]
)


@settings(max_examples=1000, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=24), forward=st.booleans())
def test_the_cookie_scan_reads_every_pair_as_the_split_parse_does(
    pieces: list[str], forward: bool
) -> None:
    header = "".join(pieces)
    jar = CookieJar(CookiesSettings())
    scanner = HeaderScanner(IdentityHeaders(), jar, forward_cookies=forward)
    request = Scanned()
    names: list[str] = []

    kept = scanner._take_cookies(request, names, header.encode("latin-1"))

    cookies, expected_names, duplicate, expected_kept = reference_take(
        header, jar.is_token_cookie, forward
    )
    assert request.cookies == cookies
    assert names == expected_names
    assert request.duplicate_cookies is duplicate
    assert kept == (None if expected_kept is None else expected_kept.encode("latin-1"))


# -- what the session cache keeps ------------------------------------------------------------


def test_the_cache_keys_on_a_digest_of_both_whole_tokens(issuer: DevIssuer) -> None:
    verifier = TokenVerifier.from_config(make_config(issuer))
    access = token(issuer)
    id_token = issuer.id_token("u1")

    verifier.session(access, id_token)

    cache = verifier._cache
    assert cache is not None
    (key,) = cache.entries
    assert key == cache_key(access, id_token)
    assert isinstance(key, bytes)
    assert len(key) == 32
    assert cache_key(access) != key
    # No token is kept: nothing the cache holds refers to the strings.
    assert not [obj for obj in gc.get_referrers(access) if obj is cache.entries]
    assert (access, id_token) in cache
    assert (access, None) not in cache


def test_no_string_finds_the_entry_of_another_pair() -> None:
    # Keys are looked up before anything is verified: malformed strings included.
    pair = cache_key("a.b.c", "d.e.f")
    assert pair != cache_key("a.b.c d.e.f")
    assert pair != cache_key("a.b.c d", ".e.f")
    assert pair != cache_key("a.b.", "c d.e.f")
    assert pair != cache_key("2 5 a.b.c d.e.f")
    assert cache_key("a.b.c") != cache_key("1 a.b.c")
    assert cache_key("a.b.c\u00e9") is None  # never a token: verifying refuses it


def test_a_cached_session_keeps_payload_bytes_and_parses_its_claims_once(
    issuer: DevIssuer,
) -> None:
    verifier = TokenVerifier.from_config(make_config(issuer))
    access = token(issuer, scope="openid read")

    session = verifier.session(access, issuer.id_token("u1", email="ada@example.com"))

    assert isinstance(session._payload, bytes)
    assert session._claims is None
    claims = session.claims
    assert claims["sub"] == "u1"
    assert claims["organizations"] == ORGS
    assert session.claims is claims
    assert session._payload is None
    assert session.id_claims is not None
    assert session.id_claims["email"] == "ada@example.com"
    assert session.issued_at == float(claims["iat"])
    with pytest.raises(TypeError):
        claims["sub"] = "admin"  # type: ignore[index]


def test_sessions_built_from_claims_still_hold_them(issuer: DevIssuer) -> None:
    claims = {"sub": "u1", "exp": 2_000_000_000, "iat": 1_900_000_000, "scope": "a b"}

    session = Session.from_claims(claims)

    assert dict(session.claims) == claims
    assert session.issued_at == 1_900_000_000.0
    assert session.scopes == ("authenticated", "a", "b")


def test_equal_memberships_of_different_users_are_one_object(issuer: DevIssuer) -> None:
    verifier = TokenVerifier.from_config(make_config(issuer))

    first = verifier.session(token(issuer, "u1"))
    second = verifier.session(token(issuer, "u2"))

    assert first.user.id != second.user.id
    assert first.organizations is second.organizations
    assert first.organizations[0] is second.organizations[0]
    assert first.projects is second.projects
    assert first.scopes is second.scopes


# -- a token that only expired is verified once ------------------------------------------------


class CountingKeys(KeyStore):
    """A KeyStore that counts the signature checks of one token."""

    def __init__(self, issuer: DevIssuer) -> None:
        super().__init__(parse_jwks(issuer.jwks()))
        self.watched = b""
        self.checks = 0

    def watch(self, token: str) -> None:
        self.watched = token.rpartition(".")[0].encode("ascii")

    def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        key = super().key_for(kid, alg)
        verify = key.verify

        def counted(data: bytes, signature: bytes) -> bool:
            if data == self.watched:
                self.checks += 1
            return verify(data, signature)

        return dataclasses.replace(key, verify=counted)


def test_the_proof_of_a_token_that_only_expired_is_read_not_verified_again(
    issuer: DevIssuer,
) -> None:
    keys = CountingKeys(issuer)
    verifier = TokenVerifier.from_config(make_config(issuer), keys=keys)
    expired = issuer.access_token("u1", iat=int(time.time()) - 7200)
    keys.watch(expired)

    with pytest.raises(TokenExpired):
        verifier.session(expired)
    proof = verifier.verify_access(expired, check_expiry=False)

    assert proof["sub"] == "u1"
    assert keys.checks == 1


def test_an_expired_token_failing_another_check_reports_expiry_and_proves_nothing(
    issuer: DevIssuer,
) -> None:
    keys = CountingKeys(issuer)
    verifier = TokenVerifier.from_config(make_config(issuer), keys=keys)
    expired = issuer.access_token("u1", iat=int(time.time()) - 7200, audience="someone-else")
    keys.watch(expired)

    with pytest.raises(TokenExpired):
        verifier.session(expired)
    with pytest.raises(AudienceMismatch):
        verifier.verify_access(expired, check_expiry=False)

    assert keys.checks == 2  # nothing was kept: the proof verified in full, and failed


def test_a_key_rotation_forgets_the_kept_proofs(issuer: DevIssuer) -> None:
    verifier = TokenVerifier.from_config(make_config(issuer))
    expired = issuer.access_token("u1", iat=int(time.time()) - 7200)
    with pytest.raises(TokenExpired):
        verifier.session(expired)
    assert verifier._expired.get(expired) is not None

    verifier._evict_kids(frozenset({issuer.kid}))

    assert verifier._expired.get(expired) is None


def test_kept_proofs_are_bounded() -> None:
    proofs = ExpiredProofs(size=3)

    for index in range(10):
        proofs.remember(f"a.b.{index}", {"sub": str(index)})

    assert len(proofs.entries) == 3
    assert proofs.get("a.b.9") == {"sub": "9"}
    assert proofs.get("a.b.0") is None


def test_the_digest_memo_holds_only_tokens_that_verified_and_stays_bounded(
    issuer: DevIssuer,
) -> None:
    verifier = TokenVerifier.from_config(make_config(issuer))
    cache = verifier._cache
    assert cache is not None
    genuine = token(issuer)
    forged = genuine[:-4] + ("AAAA" if not genuine.endswith("AAAA") else "BBBB")

    with pytest.raises(VerifierError):
        verifier.session(forged)
    verifier.session(genuine)
    verifier.session(genuine)

    assert cache.digests == {genuine: cache_key(genuine)}
    for index in range(3 * DIGEST_MEMO):
        cache.remember(f"a.b.{index}", b"k")
        assert len(cache.digests) <= DIGEST_MEMO
