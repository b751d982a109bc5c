"""verifier/request_rules.py: the one decision, and the same verdict in process and for a proxy.

The unit tests call the functions with the inputs of issue 19 (``Bearer \\xa0``,
``\\x1f``, ``\\x85``, ``"POST, GET"``, an absent method, each handshake header
alone). The table tests send one request two ways, as the ASGI server hands
it to :class:`~verifier.middleware.JWTSessionMiddleware` and as a proxy's
subrequest to the reference app's ``/auth/verify`` (nginx's headers), and
require the same verdict: refused (403 ``csrf_rejected``), this user, or no
identity. :func:`both_verdicts` is shared with the fuzz suite.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.test_login import ORGS, PROJECTS, edge_config, new_issuer
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.cookies import TokenSet
from verifier.errors import CSRFRejected
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.request_rules import (
    bearer_token,
    header_field,
    is_websocket_handshake,
    join_field,
    method_is_safe,
    origin_allowed,
    origin_of,
    original_methods,
    refusal,
    same_origin,
    uses_cookie_credentials,
)
from verifier.testing import DevIssuer

HOST = "127.0.0.1:8000"
OWN = f"http://{HOST}"
EVIL = "http://evil.example"
SIBLING = "http://chat.127.0.0.1:8000"  # same site on a real domain, another origin
COOKIES = {"access": "jwtedge_access", "id": "jwtedge_id", "refresh": "jwtedge_refresh"}
#: One header each: any of them alone makes a request a WebSocket handshake.
HANDSHAKE_HEADERS = {
    "key": ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    "version": ("sec-websocket-version", "13"),
    "upgrade": ("upgrade", "websocket"),
    "fetch-mode": ("sec-fetch-mode", "websocket"),
}


#: A request that carries an access cookie (the rules never look at its value).
COOKIE_TOKENS = TokenSet(access="a.b.c")


def raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def decide(
    *,
    authorization: str | None = None,
    cookies: TokenSet = COOKIE_TOKENS,
    methods: Sequence[str] = (),
    websocket: bool = False,
    origin: str | None = None,
    sec_fetch_site: str | None = None,
    allowed: Sequence[str] = (),
) -> CSRFRejected | None:
    """The decision for one request, its credentials read as the middleware reads them."""
    bearer = bearer_token(authorization) if authorization is not None else None
    return refusal(
        cookie_auth=uses_cookie_credentials(bearer, cookies),
        methods=methods,
        websocket=websocket,
        origin=origin,
        sec_fetch_site=sec_fetch_site,
        own_origin=lambda: OWN,
        allowed_origins=allowed,
    )


# -- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["\xa0", "\x1f", "\x85", "\x0b", "\x0c", "\u3000"])
def test_a_bearer_value_of_whitespace_other_than_sp_and_htab_is_a_bearer_credential(
    junk: str,
) -> None:
    assert bearer_token(f"Bearer {junk}") == junk
    assert bearer_token(f"Bearer  {junk}\t") == junk


@pytest.mark.parametrize("junk", ["\xa0", "\x1f", "\x85"])
def test_a_junk_bearer_makes_a_cross_site_post_a_bearer_request_never_a_cookie_one(
    junk: str,
) -> None:
    # Not judged by the browser rules (a Bearer request), and its credential is
    # the junk, which fails verification: the cookies are never read.
    bearer = bearer_token(f"Bearer {junk}")
    assert bearer is not None
    assert not uses_cookie_credentials(bearer, TokenSet(access="a.b.c"))


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer  ", "Bearer \t", "bearer \t \t"])
def test_a_bearer_value_empty_after_stripping_sp_and_htab_is_no_bearer(value: str) -> None:
    assert bearer_token(value) is None
    refused = decide(authorization=value, methods=["POST"], origin=EVIL)
    assert isinstance(refused, CSRFRejected)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc\t ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearerabc", None),
        ("Bearer\tabc", None),  # the scheme ends at SP (RFC 9110 §11.4)
        ("", None),
    ],
)
def test_bearer_token_reads_the_scheme_without_case_and_strips_only_ows(
    value: str, token: str | None
) -> None:
    assert bearer_token(value) == token


def test_cookie_credentials_are_any_access_or_refresh_cookie_without_a_bearer() -> None:
    assert uses_cookie_credentials(None, TokenSet(access="x"))
    assert uses_cookie_credentials(None, TokenSet(refresh="r"))
    assert uses_cookie_credentials(None, TokenSet(access="", refresh=None))
    assert not uses_cookie_credentials(None, TokenSet(id="only-an-id-token"))
    assert not uses_cookie_credentials(None, TokenSet())
    assert not uses_cookie_credentials("tok", TokenSet(access="x", refresh="r"))


# -- methods ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE"])
def test_the_safe_methods_of_rfc_9110_are_safe(method: str) -> None:
    assert method_is_safe([method])
    assert decide(methods=[method], origin=EVIL) is None


@pytest.mark.parametrize(
    "method",
    ["POST", "PUT", "PATCH", "DELETE", "POST, GET", "GET, POST", "get", "post", "", " GET",
     "GET ", "PROPFIND", "CONNECT", "G\x00ET", "GET\r\n"],
)  # fmt: skip
def test_unsafe_unknown_and_malformed_methods_are_unsafe(method: str) -> None:
    assert not method_is_safe([method])
    assert isinstance(decide(methods=[method], origin=EVIL), CSRFRejected)
    assert decide(methods=[method], origin=OWN) is None


def test_an_absent_original_method_means_get() -> None:
    assert original_methods(raw(("origin", EVIL))) == []
    assert method_is_safe([])
    assert decide(methods=original_methods(raw(("origin", EVIL))), origin=EVIL) is None


def test_every_original_method_header_counts_and_one_unsafe_value_decides() -> None:
    headers = raw(
        ("x-original-method", "GET"), ("x-forwarded-method", "POST"), ("x-original-method", "GET")
    )
    assert original_methods(headers) == ["GET", "POST", "GET"]
    assert not method_is_safe(original_methods(headers))
    assert original_methods(raw(("x-original-method", "POST, GET"))) == ["POST, GET"]
    assert not method_is_safe(original_methods(raw(("x-original-method", "POST, GET"))))


# -- WebSocket handshakes -----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HANDSHAKE_HEADERS))
def test_each_handshake_header_alone_makes_a_websocket_handshake(kind: str) -> None:
    name, value = HANDSHAKE_HEADERS[kind]
    assert is_websocket_handshake(raw(("host", HOST), (name, value), ("accept", "*/*")))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sec-websocket-key", ""),  # present is enough, whatever the value
        ("sec-websocket-version", "8"),
        ("upgrade", "WebSocket"),
        ("upgrade", "h2c, websocket"),
        ("upgrade", "websocket/13"),
        ("sec-fetch-mode", "WEBSOCKET"),
    ],
)
def test_handshake_detection_ignores_case_lists_and_values(name: str, value: str) -> None:
    assert is_websocket_handshake(raw((name, value)))


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("upgrade", "h2c")],
        [("connection", "Upgrade")],
        [("sec-fetch-mode", "navigate")],
        [("sec-fetch-mode", "cors")],
        [("x-sec-websocket-key", "x")],
        [("sec-websocket-protocol", "chat")],
    ],
)
def test_plain_requests_are_not_handshakes(headers: list[tuple[str, str]]) -> None:
    assert not is_websocket_handshake(raw(*headers))


def test_a_cookie_handshake_needs_an_allowed_origin_and_a_bearer_one_does_not() -> None:
    for origin in (None, EVIL, SIBLING, "null", f"{OWN}.evil.example"):
        refused = decide(websocket=True, origin=origin)
        assert isinstance(refused, CSRFRejected), origin
        assert "WebSocket" in str(refused)
    assert decide(websocket=True, origin=OWN) is None
    assert decide(websocket=True, origin=OWN.upper() + "/") is None
    # Sec-Fetch-Site does not stand in for Origin on a handshake: browsers always send Origin.
    assert decide(websocket=True, sec_fetch_site="same-origin") is not None
    assert decide(websocket=True, origin=EVIL, authorization="Bearer tok") is None
    assert decide(websocket=True, origin=None, cookies=TokenSet()) is None


def test_allowed_origins_replace_the_own_origin_for_handshakes_only() -> None:
    allowed = ["https://app.example/", "https://ADMIN.example"]
    assert decide(websocket=True, origin="https://admin.example", allowed=allowed) is None
    assert decide(websocket=True, origin=OWN, allowed=allowed) is not None
    # The CSRF rule for unsafe methods stays same-origin.
    assert decide(methods=["POST"], origin="https://admin.example", allowed=allowed) is not None


# -- origins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "host", "origin"),
    [
        ("http", "App.Example", "http://app.example"),
        ("http", "app.example:80", "http://app.example"),
        ("https", "app.example:443", "https://app.example"),
        ("https", "app.example:80", "https://app.example:80"),
        ("ws", "127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("wss", "app.example:443", "https://app.example"),
        ("HTTPS", "[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_origin_of_serializes_as_browsers_do(scheme: str, host: str, origin: str) -> None:
    assert origin_of(scheme, host) == origin


def test_same_origin_takes_origin_first_then_sec_fetch_site() -> None:
    assert same_origin(OWN, None, OWN)
    assert same_origin("HTTP://127.0.0.1:8000/", "cross-site", OWN)
    assert not same_origin(EVIL, "same-origin", OWN)  # Origin wins over Sec-Fetch-Site
    assert same_origin(None, "same-origin", OWN)
    assert not same_origin(None, "same-site", OWN)
    assert not same_origin(None, None, OWN)
    assert not same_origin("null", None, OWN)


def test_a_header_sent_twice_is_one_joined_value_that_never_matches() -> None:
    headers = raw(("origin", OWN), ("origin", OWN), ("sec-fetch-site", "same-origin"))
    origin = header_field(headers, b"origin")
    assert origin == f"{OWN}, {OWN}"
    assert join_field(join_field(None, OWN), OWN) == origin
    assert not same_origin(origin, None, OWN)
    assert not origin_allowed(origin, OWN, [])
    assert header_field(headers, b"sec-fetch-site") == "same-origin"
    assert header_field(headers, b"cookie") is None


def test_the_own_origin_is_computed_only_when_a_rule_needs_it() -> None:
    calls: list[int] = []

    def own() -> str:
        calls.append(1)
        return OWN

    arguments: dict[str, Any] = {
        "origin": EVIL,
        "sec_fetch_site": None,
        "own_origin": own,
        "allowed_origins": [],
    }
    assert refusal(cookie_auth=False, methods=["POST"], websocket=True, **arguments) is None
    assert refusal(cookie_auth=True, methods=["GET"], websocket=False, **arguments) is None
    assert calls == []
    assert refusal(cookie_auth=True, methods=["POST"], websocket=True, **arguments) is not None
    assert calls == [1]


# -- the same verdict in process and through forward auth ------------------------------------


@dataclass(frozen=True)
class Case:
    """One request as a browser (or a client) sends it."""

    cookies: str | None = None
    authorization: str | None = None
    method: str | None = None  # None: no X-Original-Method (nginx's subrequest is a GET)
    origin: str | None = None
    sec_fetch_site: str | None = None
    handshake: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())

    def headers(self) -> list[tuple[str, str]]:
        pairs = [("host", HOST)]
        if self.cookies is not None:
            pairs.append(("cookie", self.cookies))
        if self.authorization is not None:
            pairs.append(("authorization", self.authorization))
        if self.origin is not None:
            pairs.append(("origin", self.origin))
        if self.sec_fetch_site is not None:
            pairs.append(("sec-fetch-site", self.sec_fetch_site))
        return [*pairs, *self.handshake, *self.extra]


REFUSED = "refused"
NO_IDENTITY = "no identity"


class _Recorder:
    """The app behind the middleware: records who reached it, answers 200."""

    def __init__(self) -> None:
        self.users: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = get_session_from(scope)
        self.users.append(session)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def get_session_from(scope: Scope) -> str | None:
    session = get_session(HTTPConnection(scope))
    return session.user.id if session is not None else None


async def _call(app: ASGIApp, scope: Scope) -> list[Message]:
    sent: list[Message] = []
    incoming = [
        {"type": "websocket.connect"} if scope["type"] == "websocket" else {"type": "http.request"}
    ]

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        return {
            "type": "websocket.disconnect" if scope["type"] == "websocket" else "http.disconnect"
        }

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(kind: str, path: str, method: str, headers: list[tuple[str, str]]) -> Scope:
    scope: Scope = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw(*headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    if kind == "http":
        scope["method"] = method
    else:
        scope["extensions"] = {"websocket.http.response": {}}
    return scope


def _status_and_code(sent: list[Message]) -> tuple[int, str | None]:
    status = next(
        m["status"]
        for m in sent
        if m["type"] in ("http.response.start", "websocket.http.response.start")
    )
    body = b"".join(
        m.get("body", b"")
        for m in sent
        if m["type"] in ("http.response.body", "websocket.http.response.body")
    )
    code = orjson.loads(body).get("code") if body.startswith(b"{") else None
    return status, code


async def in_process_verdict(middleware: JWTSessionMiddleware, inner: _Recorder, case: Case) -> str:
    """The request sent straight to the app: an upgrade when it carries a handshake header."""
    before = len(inner.users)
    if case.handshake:
        scope = _scope("websocket", "/ws", "GET", case.headers())
    else:
        method = "GET" if case.method is None else case.method
        scope = _scope("http", "/page", method, case.headers())
    sent = await _call(middleware, scope)
    if len(inner.users) > before:
        user = inner.users[-1]
        return f"user:{user}" if user is not None else NO_IDENTITY
    status, code = _status_and_code(sent)
    if status == 403:
        assert code == "csrf_rejected"
        return REFUSED
    assert status == 401, (status, code)
    return NO_IDENTITY


async def forward_auth_verdict(app: ASGIApp, case: Case) -> str:
    """The same request judged by /auth/verify, with the headers the shipped nginx sends."""
    headers = [("x-forwarded-proto", "http"), ("x-forwarded-host", HOST), *case.headers()]
    if case.method is not None:
        headers.append(("x-original-method", case.method))
    sent = await _call(app, _scope("http", "/auth/verify", "GET", headers))
    status, code = _status_and_code(sent)
    if status == 200:
        start = next(m for m in sent if m["type"] == "http.response.start")
        user = dict(start["headers"])[b"x-auth-user"].decode()
        return f"user:{user}"
    if status == 403:
        assert code == "csrf_rejected"
        return REFUSED
    assert status == 401, (status, code)
    return NO_IDENTITY


@dataclass(repr=False)
class Judges:
    """The middleware in front of a recorder, and the reference app's forward auth."""

    issuer: DevIssuer
    config: AppConfig
    middleware: JWTSessionMiddleware
    inner: _Recorder
    app: ASGIApp
    tokens: dict[str, str]

    def __repr__(self) -> str:
        return "Judges(middleware, /auth/verify)"  # no tokens in a failure report

    def cookie(self, *kinds: str, **override: str) -> str:
        values = {**self.tokens, **override}
        return "; ".join(f"{COOKIES[kind]}={values[kind]}" for kind in kinds)


def make_judges(**sections: Any) -> Judges:
    """Both judges over one config: refresh off (forward auth never refreshes, so an
    in-process refresh would be a difference of refresh, not of the rules)."""
    issuer = new_issuer()
    config = edge_config(issuer, refresh={"enabled": False}, **sections)
    inner = _Recorder()
    access = issuer.access_token("ada", organizations=ORGS, projects=PROJECTS)
    tokens = {
        "access": access,
        "id": issuer.id_token("ada", email="ada@example.com"),
        "refresh": "opaque-refresh-token",
        "expired": issuer.access_token("ada", ttl=-300),
    }
    return Judges(
        issuer=issuer,
        config=config,
        middleware=JWTSessionMiddleware(inner, config=config),
        inner=inner,
        app=create_app(config),
        tokens=tokens,
    )


async def both_verdicts(judges: Judges, case: Case) -> tuple[str, str]:
    """(in process, forward auth) for one request."""
    return (
        await in_process_verdict(judges.middleware, judges.inner, case),
        await forward_auth_verdict(judges.app, case),
    )


@pytest.fixture(scope="module")
def judges() -> Judges:
    return make_judges()


def credential_variants(judges: Judges) -> dict[str, dict[str, str | None]]:
    cookie = judges.cookie("access", "id")
    return {
        "cookies": {"cookies": cookie},
        "refresh-cookie-only": {"cookies": judges.cookie("refresh")},
        "expired-cookie": {"cookies": judges.cookie("access", access=judges.tokens["expired"])},
        "bearer": {"authorization": f"Bearer {judges.tokens['access']}"},
        "bearer-nbsp+cookies": {"authorization": "Bearer \xa0", "cookies": cookie},
        "bearer-x1f+cookies": {"authorization": "Bearer \x1f", "cookies": cookie},
        "bearer-x85+cookies": {"authorization": "Bearer \x85", "cookies": cookie},
        "bearer-empty+cookies": {"authorization": "Bearer \t", "cookies": cookie},
        "basic+cookies": {"authorization": "Basic dXNlcjpwYXNz", "cookies": cookie},
        "none": {},
    }


ORIGINS: dict[str, dict[str, str | None]] = {
    "same": {"origin": OWN},
    "cross": {"origin": EVIL},
    "sibling": {"origin": SIBLING},
    "absent": {},
    "fetch-same-origin": {"sec_fetch_site": "same-origin"},
    "twice": {"origin": f"{OWN}, {OWN}"},
}
METHODS = [None, "GET", "HEAD", "POST", "DELETE", "post", "POST, GET", "", "PROPFIND"]
HANDSHAKES = {"none": (), **{k: (v,) for k, v in HANDSHAKE_HEADERS.items()}}
HANDSHAKES["all"] = tuple(HANDSHAKE_HEADERS.values())


def table(judges: Judges) -> list[tuple[str, Case]]:
    rows = []
    credentials = credential_variants(judges)
    for (cred, c), (org, o), method, (shake, h) in itertools.product(
        credentials.items(), ORIGINS.items(), METHODS, HANDSHAKES.items()
    ):
        if h and method not in (None, "GET"):
            continue  # a handshake is a GET
        case = Case(method=method, handshake=h, **c, **o)  # type: ignore[arg-type]
        rows.append((f"{cred}/{org}/{method!r}/{shake}", case))
    return rows


async def test_the_middleware_and_forward_auth_give_the_same_verdict_on_a_table_of_requests(
    judges: Judges,
) -> None:
    verdicts: dict[str, tuple[str, str]] = {}
    for name, case in table(judges):
        verdicts[name] = await both_verdicts(judges, case)

    differing = {name: pair for name, pair in verdicts.items() if pair[0] != pair[1]}
    assert differing == {}
    seen = {pair[0] for pair in verdicts.values()}
    assert seen == {REFUSED, NO_IDENTITY, "user:ada"}, seen
    assert len(verdicts) > 500


@pytest.mark.parametrize(
    ("case_name", "expected"),
    [
        # Issue 19, 1: cross-origin and Origin-less cookie handshakes.
        ("cookies/cross/None/key", REFUSED),
        ("cookies/absent/None/key", REFUSED),
        ("cookies/sibling/None/all", REFUSED),
        ("cookies/fetch-same-origin/None/version", REFUSED),
        ("cookies/same/None/all", "user:ada"),
        ("bearer/cross/None/all", "user:ada"),
        ("bearer/absent/None/fetch-mode", "user:ada"),
        ("expired-cookie/cross/None/upgrade", REFUSED),
        ("refresh-cookie-only/absent/None/key", REFUSED),
        ("none/cross/None/key", NO_IDENTITY),
        # Issue 19, 2: junk Bearer values never stand for the cookies.
        ("bearer-nbsp+cookies/cross/'POST'/none", NO_IDENTITY),
        ("bearer-x1f+cookies/cross/'POST'/none", NO_IDENTITY),
        ("bearer-x85+cookies/cross/'POST'/none", NO_IDENTITY),
        ("bearer-x85+cookies/cross/None/key", NO_IDENTITY),
        ("bearer-empty+cookies/cross/'POST'/none", REFUSED),
        ("basic+cookies/cross/'POST'/none", REFUSED),
        ("cookies/cross/'POST, GET'/none", REFUSED),
        ("cookies/cross/'post'/none", REFUSED),
        ("cookies/cross/''/none", REFUSED),
        ("cookies/cross/'PROPFIND'/none", REFUSED),
        ("cookies/cross/None/none", "user:ada"),  # absent method: GET
        ("cookies/cross/'HEAD'/none", "user:ada"),
        ("cookies/same/'POST, GET'/none", "user:ada"),
        ("cookies/fetch-same-origin/'DELETE'/none", "user:ada"),
        ("cookies/twice/'POST'/none", REFUSED),
        ("cookies/twice/None/key", REFUSED),
        ("expired-cookie/cross/'POST'/none", REFUSED),
        ("expired-cookie/same/'POST'/none", NO_IDENTITY),
        ("bearer/cross/'DELETE'/none", "user:ada"),
    ],
)
async def test_the_issues_requests_get_the_expected_verdict_both_ways(
    judges: Judges, case_name: str, expected: str
) -> None:
    case = dict(table(judges))[case_name]

    assert await both_verdicts(judges, case) == (expected, expected)


async def test_an_allowed_origins_list_is_applied_alike_by_both() -> None:
    judges = make_judges(websocket={"allowed_origins": ["https://app.example"]})
    cookie = judges.cookie("access", "id")
    shake = (HANDSHAKE_HEADERS["key"],)
    listed = Case(cookies=cookie, origin="https://app.example", handshake=shake)
    own = Case(cookies=cookie, origin=OWN, handshake=shake)

    assert await both_verdicts(judges, listed) == ("user:ada", "user:ada")
    assert await both_verdicts(judges, own) == (REFUSED, REFUSED)


async def test_forward_auth_counts_handshake_refusals_apart_from_csrf() -> None:
    judges = make_judges()
    edge = judges.app.state.edge  # type: ignore[attr-defined]
    cookie = judges.cookie("access", "id")
    await forward_auth_verdict(judges.app, Case(cookies=cookie, origin=EVIL, method="POST"))
    await forward_auth_verdict(
        judges.app, Case(cookies=cookie, origin=EVIL, handshake=(HANDSHAKE_HEADERS["key"],))
    )

    assert edge.stats.csrf_rejected == 1
    assert edge.stats.websocket_refused == {"origin": 1}
