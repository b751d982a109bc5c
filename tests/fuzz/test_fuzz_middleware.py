"""Fuzz JWTSessionMiddleware with random cookies, headers, methods and paths.

The ASGI app is called directly with a built ``http`` scope (what uvicorn
hands over: lower-case header names, bytes values), in front of a tiny inner
app that answers 200 and records the scope it saw. Properties (DESIGN.md,
Request hygiene and Errors):

- no exception escapes and the status is 200, 401, 403 or 503 (never a 5xx
  other than ``keys_stale``'s 503, never anything else);
- the inner app is authenticated only when the request carried a token the
  independent oracle calls a genuinely valid access token for that user;
- no ``X-Auth-*``, ``X-User-Id`` or ``X-Forwarded-User`` header and no token
  cookie (or chunk) reaches the inner app.

Two middlewares run: one without refresh, one whose refresher (behind a
``MockTransport``) only ever gets failures from the issuer, so a refresh can
never be the reason a request is authenticated.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx2
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from starlette.requests import cookie_parser
from starlette.types import Message, Receive, Scope, Send

from tests.fuzz import Oracle, examples, mutate, mutations
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

NOW = 1_760_000_000
TOKEN_ENDPOINT = "https://issuer.test/token"
KINDS = {"access": "jwtedge_access", "id": "jwtedge_id", "refresh": "jwtedge_refresh"}
TOKEN_COOKIE = re.compile(
    r"(__Host-)?(jwtedge_access|jwtedge_id|jwtedge_refresh)(\.[0-9]+)?", re.ASCII
)
#: The documented identity-header list, written out independently of the code's:
#: any case, ``_`` or ``-`` between words.
SPOOFABLE = re.compile(
    rb"(x[-_]auth[-_]|x[-_]user[-_]|cf[-_]access[-_]|x[-_]goog[-_]authenticated[-_]"
    rb"|x[-_]amzn[-_]oidc[-_]|x[-_]ms[-_]client[-_]principal).*"
    rb"|x[-_]forwarded[-_](user|email|groups|preferred[-_]username|access[-_]token)"
    rb"|x[-_]remote[-_]user|remote[-_](user|email|groups|name)|x[-_]goog[-_]iap[-_]jwt[-_]assertion",
    re.DOTALL | re.IGNORECASE,
)
PATHS = [
    "/", "/page", "/api", "/api/", "/api/me", "/apix", "/API/me", "/healthz", "/healthz/",
    "/healthzx", "/healthz.json", "/static/app.js", "/static-x/app.js", "/Static/app.js",
    "//static/x", "/static/../api/me", "/api/../healthz", "/%2Fapi", "/metrics", "/assets",
    "/auth/verify", "/auth/login", "/auth/refresh", "",
]  # fmt: skip
HEADER_KINDS = (
    ["cookie"] * 3 + ["authorization"] * 2 + ["refresh", "origin", "fetch", "spoof", "other"]
)
SPOOFED_NAMES = [
    b"x-auth-user", b"x-auth-email", b"x-auth-", b"x-user-id", b"x-forwarded-user",
    b"X_Auth_User", b"x-auth_user", b"X-Forwarded-Email", b"remote_user",
    b"Cf-Access-Jwt-Assertion",
]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "post", "TRACE"]
HOSTS = ["app.example", "127.0.0.1:8000", "localhost", "[::1]:8000", "[", "app.example:443"]
FAILURES = [
    httpx2.Response(400, json={"error": "invalid_grant"}),
    httpx2.Response(500, content=b"oops"),
    httpx2.Response(200, content=b"not json"),
    httpx2.Response(200, json={"access_token": "e30.e30.e30"}),
    httpx2.Response(200, json={"access_token": 1, "id_token": []}),
]


@dataclass
class Stack:
    """A middleware in front of an inner app that records what reached it."""

    app: JWTSessionMiddleware
    seen: list[Scope] = field(default_factory=list)


@dataclass(repr=False)
class World:
    issuer: DevIssuer
    oracle: Oracle
    tokens: list[str]
    plain: Stack
    refreshing: Stack
    failure: list[httpx2.Response]
    calls: list[httpx2.Request]
    #: The tokens in ``tokens`` that are valid access tokens.
    valid: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.valid = [token for token in self.tokens if self.oracle.access_claims(token)]

    def __repr__(self) -> str:
        return f"World({len(self.tokens)} tokens)"


def _inner(seen: list[Scope]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture(scope="module")
def world(issuer: DevIssuer) -> World:
    orgs = [
        {"id": f"org_{i}", "slug": f"s{i}", "name": "N" * 40, "role": "member"} for i in range(60)
    ]
    tokens = []
    for alg in ("RS256", "ES256", "Ed25519"):
        kid = issuer.kids(alg)[-1]
        tokens += [
            issuer.access_token("u1", iat=NOW, kid=kid, sid="s1"),
            issuer.id_token("u1", iat=NOW, kid=kid, sid="s1"),
            issuer.access_token("u2", iat=NOW - 1000, kid=kid),  # expired
            issuer.access_token("u3", iat=NOW, kid=kid, audience="other"),
        ]
    # Longer than one cookie chunk (3800 characters), shorter than the size cap.
    tokens.append(issuer.access_token("u4", iat=NOW, organizations=orgs))
    tokens.append(issuer.id_token("u2", iat=NOW))
    auth = {"issuer": issuer.issuer, "audience": "api", "client_id": "web"}
    jwks = parse_jwks(issuer.jwks())
    failure = [FAILURES[0]]
    calls: list[httpx2.Request] = []

    def stack(config: AppConfig, *, refresh: bool) -> Stack:
        seen: list[Scope] = []
        verifier = TokenVerifier.from_config(config, now=lambda: NOW)
        refresher = None
        if refresh:

            def answer(request: httpx2.Request) -> httpx2.Response:
                calls.append(request)
                return failure[0]

            transport = httpx2.MockTransport(answer)
            refresher = InProcessRefresher(
                token_endpoint=TOKEN_ENDPOINT,
                client_id="web",
                verifier=verifier,
                transport=transport,
            )
        app = JWTSessionMiddleware(_inner(seen), config, verifier=verifier, refresher=refresher)
        return Stack(app, seen)

    plain = AppConfig(auth={**auth, "jwks": jwks}, keys={"remote": "never"})
    refreshing = AppConfig(
        auth={**auth, "jwks": jwks},
        keys={"remote": "never"},
        endpoints={"token": TOKEN_ENDPOINT},
        cookies={"secure": "never"},
    )
    oracle = Oracle(issuer.jwks(), issuer=issuer.issuer, audience="api", client_id="web", now=NOW)
    return World(
        issuer,
        oracle,
        tokens,
        stack(plain, refresh=False),
        stack(refreshing, refresh=True),
        failure,
        calls,
    )


# -- requests -----------------------------------------------------------------

latin1 = st.text(alphabet=st.characters(max_codepoint=255), max_size=40)
cookie_safe = st.text(
    alphabet=st.characters(max_codepoint=255, exclude_characters=";="), max_size=12
)


@st.composite
def token_values(draw: st.DrawFn, world: World) -> str:
    """A value a token cookie or Bearer header might carry."""
    kind = draw(
        st.sampled_from(["valid"] * 3 + ["genuine"] * 2 + ["mutated"] * 2 + ["noise", "huge"])
    )
    if kind == "valid":
        return draw(st.sampled_from(world.valid))
    if kind == "noise":
        return draw(latin1)
    if kind == "huge":
        return draw(st.sampled_from(["A", "eyJ", "."])) * draw(
            st.integers(min_value=1, max_value=64 * 1024)
        )
    token = draw(st.sampled_from(world.tokens))
    if kind == "mutated":
        edits = draw(st.lists(mutations(len(world.tokens)), min_size=1, max_size=2))
        token = mutate(token, edits, world.tokens)
    # Cookies and headers travel as latin-1 bytes.
    return token.encode("latin-1", "replace").decode("latin-1")


@st.composite
def token_cookies(draw: st.DrawFn, world: World) -> list[tuple[str, str]]:
    """One token, whole or in chunks (some missing, extra or out of order)."""
    base = draw(st.sampled_from([KINDS["access"]] * 2 + [KINDS["id"], KINDS["refresh"]]))
    name = draw(st.sampled_from(["", "__Host-"])) + base
    value = draw(token_values(world))
    if draw(st.booleans()):
        return [(name, value)]
    cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=6)))
    bounds = [0, *cuts, len(value)]
    chunks = [value[a:b] for a, b in itertools.pairwise(bounds)]
    pairs = [(f"{name}.{index}", chunk) for index, chunk in enumerate(chunks)]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        edit = draw(st.sampled_from(["drop", "swap", "extra", "renumber"]))
        if not pairs:
            break
        at = draw(st.integers(0, len(pairs) - 1))
        if edit == "drop":
            del pairs[at]
        elif edit == "swap":
            pairs[0], pairs[at] = pairs[at], pairs[0]
        elif edit == "extra":
            pairs.append((f"{name}.{draw(st.integers(0, 20))}", draw(cookie_safe)))
        else:
            pairs[at] = (
                f"{name}.{draw(st.sampled_from(['00', '-1', '1a', '²', ' 1', '']))}",
                pairs[at][1],
            )
    return pairs


@st.composite
def cookie_headers(draw: st.DrawFn, world: World) -> bytes:
    pairs: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if draw(st.booleans()):
            pairs += draw(token_cookies(world))
        else:
            pairs.append((draw(cookie_safe), draw(cookie_safe)))
    separator = draw(st.sampled_from(["; ", ";", " ; ", ";;"]))
    text = separator.join(
        f"{name}{draw(st.sampled_from(['='] * 6 + [' = ', '']))}{value}" for name, value in pairs
    )
    return text.encode("latin-1", "replace")


@st.composite
def authorization(draw: st.DrawFn, world: World) -> bytes:
    schemes = ["Bearer"] * 4 + ["bearer", "BEARER", "Basic", "Token", "", "Bearer:"]
    scheme = draw(st.sampled_from(schemes))
    gap = draw(st.sampled_from([" ", "  ", "\t", " \t", ""]))
    credentials = draw(st.one_of(token_values(world), st.just(""), latin1))
    return f"{scheme}{gap}{credentials}".encode("latin-1", "replace")


@st.composite
def requests(draw: st.DrawFn, world: World) -> Scope:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.one_of(st.sampled_from(HOSTS), latin1))
    same_origin = f"{scheme}://{host}"
    headers: list[tuple[bytes, bytes]] = [(b"host", host.encode("latin-1"))]
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(
            st.sampled_from(
                ["cookie", "cookie", "authorization", "origin", "fetch", "spoof", "other"]
            )
        )
        if kind == "cookie":
            headers.append((b"cookie", draw(cookie_headers(world))))
        elif kind == "refresh":
            # A refresh cookie alone: the refresh path, with the issuer failing.
            prefix = draw(st.sampled_from(["", "__Host-"]))
            value = draw(cookie_safe.filter(str.strip))
            headers.append((b"cookie", f"{prefix}jwtedge_refresh={value}".encode("latin-1")))
        elif kind == "authorization":
            headers.append((b"authorization", draw(authorization(world))))
        elif kind == "origin":
            origin = draw(
                st.one_of(st.sampled_from([same_origin, "null", "http://evil.example"]), latin1)
            )
            headers.append((b"origin", origin.encode("latin-1")))
        elif kind == "fetch":
            site = draw(st.sampled_from(["same-origin", "SAME-ORIGIN", "cross-site", "none", ""]))
            headers.append((b"sec-fetch-site", site.encode()))
        elif kind == "spoof":
            name = draw(
                st.sampled_from(SPOOFED_NAMES)
                | latin1.map(lambda text: b"X_AUTH-" + text.encode("latin-1"))
            )
            headers.append((name, draw(latin1).encode("latin-1")))
        else:
            headers.append((draw(latin1).lower().encode("latin-1"), draw(latin1).encode("latin-1")))
    path = draw(st.one_of(st.sampled_from(PATHS), latin1.map(lambda text: "/" + text)))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": draw(st.one_of(st.sampled_from(METHODS), latin1)),
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "query_string": draw(st.sampled_from([b"", b"access_token=x", b"token=" + b"A" * 50])),
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.7", 50000),
        "server": ("app.example", 443 if scheme == "https" else 80),
    }


# -- the oracle's view of a request ---------------------------------------------


def presented_strings(scope: Scope) -> set[str]:
    """Every string the middleware could have read as a token (a superset)."""
    found: set[str] = set()
    for name, value in scope["headers"]:
        text = value.decode("latin-1")
        if name == b"authorization":
            found.add(text.partition(" ")[2].strip())
        elif name == b"cookie":
            pairs: dict[str, list[str]] = {}
            for chunk in text.split(";"):
                key, _, val = chunk.partition("=")
                pairs.setdefault(key.strip(), []).append(val.strip())
            for values in pairs.values():
                found.update(values)
            for base in KINDS.values():
                for prefix in ("", "__Host-"):
                    joined = ""
                    for index in range(16):
                        parts = pairs.get(f"{prefix}{base}.{index}")
                        if not parts:
                            break
                        joined += parts[0]
                        found.add(joined)
    return found


async def call(app: JWTSessionMiddleware, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@settings(max_examples=examples(700))
@given(data=st.data())
async def test_middleware_never_fails_and_never_lets_spoofed_identity_through(
    world: World, data: st.DataObject
) -> None:
    scope = data.draw(requests(world), label="request")
    refresh = data.draw(st.booleans(), label="refresh enabled")
    stack = world.refreshing if refresh else world.plain
    if refresh:
        world.failure[0] = data.draw(st.sampled_from(FAILURES), label="issuer answer")
    stack.seen.clear()
    world.calls.clear()
    # The middleware writes into the scope, as Starlette's own do (never into
    # the header list it was given): read what was sent before it runs.
    presented = presented_strings(dict(scope))

    sent = await call(stack.app, scope)

    start = next(message for message in sent if message["type"] == "http.response.start")
    status = start["status"]
    event(f"status {status}")
    if world.calls:
        event("refresh attempted")
    assert status in (200, 401, 403, 503)
    if not stack.seen:
        assert status != 200, "answered 200 without the inner app"
        return
    assert status == 200
    inner = stack.seen[-1]
    for name, value in inner["headers"]:
        assert not SPOOFABLE.fullmatch(name), f"{name!r} reached the inner app"
        if name == b"cookie":
            leaked = [
                key for key in cookie_parser(value.decode("latin-1")) if TOKEN_COOKIE.fullmatch(key)
            ]
            assert not leaked, f"token cookies {leaked} reached the inner app"
    user = inner["user"]
    if user.is_authenticated:
        event("authenticated")
        claims = inner["auth"].claims
        genuine = [
            found for text in presented if (found := world.oracle.access_claims(text)) is not None
        ]
        assert any(found == dict(claims) for found in genuine), (
            f"authenticated as {user.identity!r} without a genuine access token"
        )
