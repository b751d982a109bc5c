"""Token refresh through JWTSessionMiddleware (issue "Token refresh on HTTP requests").

The middleware's token-endpoint calls reach a DevIssuer app through
``httpx2.ASGITransport`` (a served DevIssuer on 127.0.0.1 only where a real
timeout is needed); the issuer, the verifier and the refresher share one
injected clock, so expiry and the grace window pass without sleeping.

Every ``Set-Cookie`` the middleware emits in this module is recorded and its
attributes are checked when the test ends, and no token any test handled may
appear in a log record, the middleware's stats or the refresher's repr.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from verifier.config import AppConfig
from verifier.cookies import CHUNK_SIZE
from verifier.errors import (
    AlgorithmNotAllowed,
    AudienceMismatch,
    IssuedInFuture,
    IssuerMismatch,
    KeyNotFound,
    KeysStale,
    RefreshFailed,
    SignatureInvalid,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    VerifierError,
)
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore, VerificationKey
from verifier.middleware import JWTSessionMiddleware, get_session, refresh_now
from verifier.refresh import InProcessRefresher
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISSUER = "http://127.0.0.1:9000"
LOOPBACK = "http://127.0.0.1"
HTTPS = "https://testserver"
KINDS = ("access", "id", "refresh")
PLAIN = {"access": "jwtedge_access", "id": "jwtedge_id", "refresh": "jwtedge_refresh"}
HOST = {kind: f"__Host-{name}" for kind, name in PLAIN.items()}
ACCESS_TTL = 300
LEEWAY = 30
SKEW = 30
GRACE = 10
#: Past the access token's exp plus the verifier's leeway: it no longer verifies.
PAST_EXPIRY = ACCESS_TTL + LEEWAY + 1
#: Still valid, but within refresh.skew of its exp.
WITHIN_SKEW = ACCESS_TTL - SKEW + 5
MAX_AGE = str(30 * 86400)


class Clock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the inner app ----------------------------------------------------------


def describe(request: Request) -> dict[str, Any]:
    session = get_session(request)
    if session is None:
        return {"authenticated": False}
    return {
        "authenticated": True,
        "sub": session.user.id,
        "sid": session.session_id,
        "jti": session.claims.get("jti"),
        "iat": session.claims.get("iat"),
        "email": session.user.email,
        "name": session.user.name,
        "id_claims": session.id_claims is not None,
        "projects": [project.id for project in session.projects],
        "organizations": [org.id for org in session.organizations],
    }


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({**describe(request), "cookie": request.headers.get("cookie")})


async def refresh_route(request: Request) -> JSONResponse:
    try:
        await refresh_now(request)
    except RefreshFailed as exc:
        return JSONResponse({"error": exc.code, "message": exc.message, **describe(request)}, 409)
    return JSONResponse(describe(request))


async def ws_whoami(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"authenticated": websocket.user.is_authenticated})
    await websocket.close()


ROUTES = [
    Route("/refresh", refresh_route, methods=["POST"]),
    WebSocketRoute("/ws", ws_whoami),
    Route("/{path:path}", whoami, methods=["GET", "POST"]),
]


# -- recording what the middleware emits --------------------------------------


@dataclass
class Emitted:
    """One response start the middleware sent, with the request it answered."""

    scheme: str
    host: str
    status: int
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class Recorder:
    """Outermost ASGI wrapper: keeps every ``http.response.start``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.emitted: list[Emitted] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (key.decode("latin-1").lower(), value.decode("latin-1"))
                    for key, value in message.get("headers", [])
                ]
                self.emitted.append(Emitted(scope["scheme"], host, message["status"], headers))
            await send(message)

        await self.app(scope, receive, record)


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str | bool]

    @classmethod
    def parse(cls, header: str) -> SetCookie:
        pair, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = pair.partition("=")
        parsed: dict[str, str | bool] = {}
        for attribute in attributes:
            key, sep, val = attribute.partition("=")
            parsed[key.lower()] = val if sep else True
        return cls(name, value, parsed)

    @property
    def deletes(self) -> bool:
        return self.attributes.get("max-age") == "0"


def set_cookies(response: httpx2.Response) -> list[SetCookie]:
    return [SetCookie.parse(value) for value in response.headers.get_list("set-cookie")]


def stored(response: httpx2.Response, names: Mapping[str, str] = PLAIN) -> dict[str, str]:
    """The token values the response stores (chunks joined), by kind."""
    cookies = {c.name: c.value for c in set_cookies(response) if not c.deletes}
    tokens: dict[str, str] = {}
    for kind in KINDS:
        name = names[kind]
        if name in cookies:
            tokens[kind] = cookies[name]
            continue
        chunks = []
        index = 0
        while f"{name}.{index}" in cookies:
            chunks.append(cookies[f"{name}.{index}"])
            index += 1
        if chunks:
            tokens[kind] = "".join(chunks)
    return tokens


def assert_attributes(cookie: SetCookie, *, secure: bool) -> None:
    attrs = cookie.attributes
    assert attrs.get("httponly") is True, cookie
    assert attrs.get("samesite") == "Lax", cookie
    assert attrs.get("path") == "/", cookie
    assert attrs.get("max-age") in ("0", MAX_AGE), cookie
    assert "domain" not in attrs, cookie
    assert ("secure" in attrs) is secure, cookie
    assert cookie.name.startswith("__Host-") is secure, cookie


def expects_secure(emitted: Emitted) -> bool:
    """``cookies.secure=auto``: Secure unless plain http to a loopback host."""
    hostname = emitted.host.rsplit(":", 1)[0]
    loopback = hostname in ("localhost", "[::1]") or hostname.startswith("127.")
    return emitted.scheme == "https" or not loopback


# -- the harness ------------------------------------------------------------


@dataclass
class Edge:
    """One app behind the middleware, with everything a test inspects."""

    config: AppConfig
    verifier: TokenVerifier
    refresher: InProcessRefresher | None
    middleware: JWTSessionMiddleware
    app: Recorder

    def client(self, base_url: str = LOOPBACK) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app), base_url=base_url)


@dataclass
class Harness:
    clock: Clock
    issuer: DevIssuer
    edges: list[Edge] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def edge(
        self,
        *,
        issuer: DevIssuer | None = None,
        network: bool = False,
        refresh: Mapping[str, Any] | None = None,
        cookies: Mapping[str, Any] | None = None,
        keys: KeyStore | None = None,
    ) -> Edge:
        issuer = issuer or self.issuer
        config = AppConfig(
            auth={
                "issuer": issuer.issuer,
                "audience": "api",
                "client_id": issuer.client_id,
                "jwks": parse_jwks(issuer.jwks()),
                "leeway": LEEWAY,
            },
            endpoints={"token": issuer.issuer + "/token"},
            keys={"remote": "never"},
            refresh={"skew": SKEW, "grace": GRACE, **(refresh or {})},
            cookies=dict(cookies or {}),
        )
        verifier = TokenVerifier.from_config(config, keys=keys, now=self.clock)
        # In process unless the test needs real sockets (a timeout is a socket's business).
        transport = None if network else httpx2.ASGITransport(app=issuer.app)
        refresher = InProcessRefresher.from_config(
            config, verifier, transport=transport, now=self.clock
        )
        middleware = JWTSessionMiddleware(
            Starlette(routes=ROUTES), config, verifier=verifier, refresher=refresher
        )
        edge = Edge(config, verifier, refresher, middleware, Recorder(middleware))
        self.edges.append(edge)
        return edge

    def login(self, sub: str = "u1", **kwargs: Any) -> dict[str, Any]:
        tokens = self.issuer.login(sub, **kwargs)
        self.watch(*(tokens.get(k) for k in ("access_token", "id_token", "refresh_token")))
        return tokens

    def watch(self, *tokens: str | None) -> None:
        self.secrets.extend(token for token in tokens if token)

    def emitted_cookies(self) -> Iterator[tuple[Emitted, SetCookie]]:
        for edge in self.edges:
            for emitted in edge.app.emitted:
                for value in emitted.values("set-cookie"):
                    yield emitted, SetCookie.parse(value)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> DevIssuer:
    """A fresh issuer per test: its counters and fail switches are the assertions."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=clock)


@pytest.fixture
async def harness(
    clock: Clock, issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Harness]:
    caplog.set_level(logging.DEBUG)
    harness = Harness(clock, issuer)
    yield harness

    for emitted, cookie in harness.emitted_cookies():
        assert_attributes(cookie, secure=expects_secure(emitted))
        if not cookie.deletes:
            harness.watch(cookie.value)
    for edge in harness.edges:
        for emitted in edge.app.emitted:
            if emitted.values("set-cookie"):
                assert emitted.values("cache-control") == ["no-store"]
    shown = caplog.text + "".join(repr(record.args) for record in caplog.records)
    for edge in harness.edges:
        shown += repr(edge.middleware.stats.snapshot()) + repr(edge.middleware.stats)
        if edge.refresher is not None:
            shown += repr(edge.refresher) + repr(edge.refresher.stats)
            await edge.refresher.aclose()
    for secret in harness.secrets:
        assert secret not in shown


def cookie_header(
    tokens: Mapping[str, Any],
    *,
    kinds: tuple[str, ...] = KINDS,
    names: Mapping[str, str] = PLAIN,
) -> dict[str, str]:
    """A ``Cookie`` header carrying the login's tokens (``access_token`` …) or a stored set."""
    pairs = []
    for kind in kinds:
        value = tokens.get(kind, tokens.get(f"{kind}_token"))
        if value is not None:
            pairs.append(f"{names[kind]}={value}")
    return {"Cookie": "; ".join(pairs)}


def claims_of(verifier: TokenVerifier, access: str) -> dict[str, Any]:
    return verifier.verify_access(access, check_expiry=False)


def tampered(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    return head + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


# -- single flight ----------------------------------------------------------


async def test_a_hundred_concurrent_requests_with_an_expired_session_share_one_refresh(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    old_jti = claims_of(edge.verifier, tokens["access_token"])["jti"]
    clock.advance(PAST_EXPIRY)
    before = issuer.stats.token_requests

    async with edge.client() as client:
        responses = await asyncio.gather(
            *(client.get("/me", headers=cookie_header(tokens)) for _ in range(100))
        )

    assert issuer.stats.token_requests - before == 1
    assert issuer.stats.refresh_grants == 1
    assert edge.middleware.stats.refreshed == 100
    assert edge.refresher is not None
    assert edge.refresher.stats.joined + edge.refresher.stats.grace_reused == 99
    bodies = [response.json() for response in responses]
    assert all(response.status_code == 200 for response in responses)
    assert all(body["authenticated"] for body in bodies)
    jtis = {body["jti"] for body in bodies}
    assert len(jtis) == 1
    (new_jti,) = jtis
    assert new_jti != old_jti
    assert {body["iat"] for body in bodies} == {int(clock())}
    token_sets = [stored(response) for response in responses]
    assert all(token_set == token_sets[0] for token_set in token_sets)
    new = token_sets[0]
    assert set(new) == {"access", "id", "refresh"}
    assert new["refresh"] != tokens["refresh_token"]
    assert claims_of(edge.verifier, new["access"])["jti"] == new_jti
    assert all(response.headers["cache-control"] == "no-store" for response in responses)


class CountingKeys(KeyStore):
    """The issuer's keys, counting the signature checks of one token."""

    def __init__(self, issuer: DevIssuer, token: str) -> None:
        super().__init__(parse_jwks(issuer.jwks()))
        self.watched = token.rpartition(".")[0].encode("ascii")
        self.checks = 0

    def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        key = super().key_for(kid, alg)
        verify = key.verify

        def counted(data: bytes, signature: bytes) -> bool:
            if data == self.watched:
                self.checks += 1
            return verify(data, signature)

        return dataclasses.replace(key, verify=counted)


async def test_each_request_of_a_refresh_storm_checks_the_expired_tokens_signature_once(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    tokens = harness.login()
    keys = CountingKeys(issuer, tokens["access_token"])
    edge = harness.edge(keys=keys)
    clock.advance(PAST_EXPIRY)

    async with edge.client() as client:
        responses = await asyncio.gather(
            *(client.get("/me", headers=cookie_header(tokens)) for _ in range(50))
        )

    assert all(response.json()["authenticated"] for response in responses)
    assert issuer.stats.refresh_grants == 1
    # The failed verify (expired) is the refresh proof: no second check per request.
    assert keys.checks == 50


async def test_the_new_cookies_authenticate_the_next_request_without_another_refresh(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    async with edge.client() as client:
        first = await client.get("/me", headers=cookie_header(tokens))
        second = await client.get("/me", headers=cookie_header(stored(first)))

    assert second.json()["authenticated"] is True
    assert second.json()["jti"] == first.json()["jti"]
    assert "set-cookie" not in second.headers
    assert issuer.stats.token_requests == 1
    # Token cookies never reach the inner app.
    assert first.json()["cookie"] is None


# -- the grace window ---------------------------------------------------------


async def refreshed_once(
    harness: Harness, edge: Edge, client: httpx2.AsyncClient
) -> tuple[dict[str, Any], dict[str, str], str]:
    """Log in, let the access token expire, refresh once: (old tokens, new tokens, new jti)."""
    tokens = harness.login()
    harness.clock.advance(PAST_EXPIRY)
    response = await client.get("/me", headers=cookie_header(tokens))
    assert response.json()["authenticated"] is True
    return tokens, stored(response), response.json()["jti"]


async def test_old_refresh_cookie_with_its_own_expired_token_reuses_the_result_within_the_grace(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    async with edge.client() as client:
        old, new, new_jti = await refreshed_once(harness, edge, client)
        clock.advance(GRACE - 1)
        calls = issuer.stats.token_requests

        late_tab = await client.get("/me", headers=cookie_header(old))
        only_id_token = await client.get("/me", headers=cookie_header(old, kinds=("id", "refresh")))

        assert issuer.stats.token_requests == calls
        for response in (late_tab, only_id_token):
            assert response.json()["authenticated"] is True
            assert response.json()["jti"] == new_jti
            assert stored(response) == new
        assert edge.refresher is not None
        assert edge.refresher.stats.grace_reused == 2

        # The family was not revoked: the new refresh token still refreshes.
        clock.advance(PAST_EXPIRY)
        later = await client.get("/me", headers=cookie_header(new))

    assert later.json()["authenticated"] is True
    assert later.json()["jti"] not in (new_jti, None)
    assert issuer.stats.token_requests == calls + 1
    assert issuer.stats.revoked_families == 0
    assert issuer.stats.reuse_detected == 0


def claims_of_any(token: str) -> dict[str, Any]:
    """A token's payload, unverified (to copy a victim's claims into a forgery)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def forger(harness: Harness) -> DevIssuer:
    """Another issuer with the same URL: its keys are not the baked ones."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web", clock=harness.clock)


def refresh_cookie_alone(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    return {"refresh": old["refresh_token"]}


def forged_access_token(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    claims = claims_of_any(old["access_token"])
    forged = forger(harness).access_token(claims["sub"], sid=claims["sid"], iat=claims["iat"])
    return {"access": forged, "refresh": old["refresh_token"]}


def forged_id_token(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    claims = claims_of_any(old["id_token"])
    forged = forger(harness).id_token(claims["sub"], sid=claims["sid"], iat=claims["iat"])
    return {"id": forged, "refresh": old["refresh_token"]}


def tampered_tokens(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    return {
        "access": tampered(old["access_token"]),
        "id": tampered(old["id_token"]),
        "refresh": old["refresh_token"],
    }


def tampered_id_token(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    return {"id": tampered(old["id_token"]), "refresh": old["refresh_token"]}


def another_users_access_token(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    harness.issuer.add_user("u2")
    other = harness.issuer.access_token("u2", sid="u2-session", iat=int(harness.clock()) - 1000)
    return {"access": other, "refresh": old["refresh_token"]}


def another_users_id_token(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    harness.issuer.add_user("u2")
    other = harness.issuer.id_token("u2", sid="u2-session")
    return {"id": other, "refresh": old["refresh_token"]}


def same_user_other_session(harness: Harness, old: Mapping[str, Any]) -> dict[str, str]:
    other = harness.issuer.access_token("u1", sid="another-sid", iat=int(harness.clock()) - 1000)
    return {"access": other, "refresh": old["refresh_token"]}


@pytest.mark.parametrize(
    ("cookies_for", "refused"),
    [
        # No proof at all, or one that can never pass: refused before the
        # refresher, and the cookies are cleared.
        pytest.param(refresh_cookie_alone, "no_proof", id="refresh-cookie-alone"),
        pytest.param(forged_id_token, "proof_invalid", id="forged-id-token-copying-sid"),
        pytest.param(tampered_id_token, "proof_invalid", id="tampered-id-token"),
        # A genuine proof of someone else: the refresher refuses to hand out the result.
        pytest.param(another_users_access_token, "refresher", id="another-users-access-token"),
        pytest.param(another_users_id_token, "refresher", id="another-users-id-token"),
        pytest.param(same_user_other_session, "refresher", id="same-user-other-sid"),
        # An access token that does not verify is not "expired": no refresh is tried.
        pytest.param(forged_access_token, None, id="forged-access-token-copying-sid"),
        pytest.param(tampered_tokens, None, id="tampered-tokens"),
    ],
)
async def test_old_refresh_cookie_without_a_genuine_proof_gets_nothing_within_the_grace(
    harness: Harness,
    issuer: DevIssuer,
    clock: Clock,
    cookies_for: Callable[[Harness, Mapping[str, Any]], dict[str, str]],
    refused: str | None,
) -> None:
    edge = harness.edge()
    async with edge.client() as client:
        old, _new, _jti = await refreshed_once(harness, edge, client)
        clock.advance(1)
        calls = issuer.stats.token_requests
        cookies = cookies_for(harness, old)
        harness.watch(*cookies.values())

        response = await client.get("/me", headers=cookie_header(cookies))

    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    cleared = set_cookies(response)
    if refused in ("no_proof", "proof_invalid"):
        assert all(cookie.deletes for cookie in cleared)
        # Only the token cookies the request carried are cleared (issue 23).
        assert {cookie.name for cookie in cleared} == {PLAIN[kind] for kind in cookies}
        assert edge.middleware.stats.refresh_refused == {refused: 1}
    else:
        assert cleared == []
        assert edge.middleware.stats.refresh_refused == {}
    assert issuer.stats.token_requests == calls
    assert issuer.stats.revoked_families == 0
    assert edge.refresher is not None
    assert edge.refresher.stats.calls == 1
    assert edge.refresher.stats.grace_reused == 0
    assert edge.refresher.stats.reuse_refused == int(refused == "refresher")
    assert edge.middleware.stats.refreshed == 1


async def test_old_refresh_cookie_after_the_grace_is_refused_without_replaying_it(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    async with edge.client() as client:
        old, _new, _jti = await refreshed_once(harness, edge, client)
        clock.advance(GRACE + 1)
        calls = issuer.stats.token_requests

        response = await client.get("/me", headers=cookie_header(old))

    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    assert "set-cookie" not in response.headers
    assert issuer.stats.token_requests == calls
    assert issuer.stats.reuse_detected == 0
    assert issuer.stats.revoked_families == 0


async def test_an_api_request_with_an_expired_token_and_a_spent_refresh_cookie_gets_401(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    async with edge.client() as client:
        old, _new, _jti = await refreshed_once(harness, edge, client)
        clock.advance(GRACE + 1)
        response = await client.get("/api/items", headers=cookie_header(old))

    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"
    assert "set-cookie" not in response.headers


async def test_an_api_request_with_an_expired_token_is_refreshed_instead_of_refused(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)

    async with edge.client() as client:
        response = await client.get("/api/items", headers=cookie_header(tokens))

    assert response.status_code == 200
    assert response.json()["authenticated"] is True
    assert set(stored(response)) == {"access", "id", "refresh"}
    assert issuer.stats.token_requests == 1


# -- refresh_now --------------------------------------------------------------


async def test_refresh_now_brings_a_new_project_into_the_cookies_and_the_session(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    issuer.add_project("u1", {"id": "prj_new", "slug": "new", "organizationId": "org_acme"})

    async with edge.client() as client:
        before = await client.get("/me", headers=cookie_header(tokens))
        response = await client.post(
            "/refresh", headers={**cookie_header(tokens), "Origin": LOOPBACK}
        )

    assert "prj_new" not in before.json()["projects"]
    assert "set-cookie" not in before.headers
    assert response.status_code == 200
    assert "prj_new" in response.json()["projects"]
    new = stored(response)
    assert set(new) == {"access", "id", "refresh"}
    claims = edge.verifier.verify_access(new["access"])
    assert {"id": "prj_new", "slug": "new", "organizationId": "org_acme"} in claims["projects"]
    assert response.json()["jti"] == claims["jti"]
    assert response.headers["cache-control"] == "no-store"
    assert issuer.stats.refresh_grants == 1


async def test_refresh_now_refuses_a_cross_site_post_before_calling_the_issuer(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()

    async with edge.client() as client:
        response = await client.post(
            "/refresh", headers={**cookie_header(tokens), "Origin": "https://evil.example"}
        )

    assert response.status_code == 403
    assert response.json()["code"] == "csrf_rejected"
    assert issuer.stats.token_requests == 0
    assert "set-cookie" not in response.headers


async def test_refresh_now_raises_refresh_failed_for_a_bearer_request(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()

    async with edge.client() as client:
        response = await client.post(
            "/refresh", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )

    assert response.status_code == 409
    assert response.json()["error"] == "refresh_failed"
    assert response.json()["authenticated"] is True
    assert issuer.stats.token_requests == 0


async def test_refresh_now_without_a_proof_makes_no_call_and_clears_the_cookies(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()

    async with edge.client() as client:
        response = await client.post(
            "/refresh", headers={**cookie_header(tokens, kinds=("refresh",)), "Origin": LOOPBACK}
        )

    assert response.status_code == 409
    assert response.json()["error"] == "refresh_failed"
    assert response.json()["authenticated"] is False
    # Only the token cookie the request carried is cleared.
    assert {cookie.name for cookie in set_cookies(response) if cookie.deletes} == {PLAIN["refresh"]}
    assert issuer.stats.token_requests == 0
    # The middleware refused once; refresh_now did not ask again.
    assert edge.middleware.stats.refresh_refused == {"no_proof": 1}


async def test_refresh_now_that_fails_keeps_the_current_session(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    issuer.fail_mode = "500"

    async with edge.client() as client:
        response = await client.post(
            "/refresh", headers={**cookie_header(tokens), "Origin": LOOPBACK}
        )

    assert response.status_code == 409
    assert response.json()["error"] == "refresh_failed"
    assert response.json()["authenticated"] is True
    assert tokens["refresh_token"] not in response.text
    assert "set-cookie" not in response.headers


async def test_refresh_now_rejected_with_invalid_grant_keeps_the_cookies_of_a_valid_session(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    issuer.fail_mode = "invalid_grant"

    async with edge.client() as client:
        response = await client.post(
            "/refresh", headers={**cookie_header(tokens), "Origin": LOOPBACK}
        )

    assert response.status_code == 409
    assert response.json()["authenticated"] is True
    assert "set-cookie" not in response.headers


# -- the issuer fails -----------------------------------------------------------

FAILURES = ["500", "other_sub", "bad_signature"]


@pytest.mark.parametrize("mode", [*FAILURES, "invalid_grant"])
async def test_a_failed_refresh_while_the_token_is_still_valid_serves_the_old_session(
    harness: Harness, issuer: DevIssuer, clock: Clock, mode: str
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    old_jti = claims_of(edge.verifier, tokens["access_token"])["jti"]
    clock.advance(WITHIN_SKEW)
    issuer.fail_mode = mode

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens))

    assert response.status_code == 200
    assert response.json()["authenticated"] is True
    assert response.json()["jti"] == old_jti
    assert "set-cookie" not in response.headers
    assert issuer.stats.token_requests == 1
    assert sum(edge.middleware.stats.refresh_failed.values()) == 1


@pytest.mark.parametrize("mode", FAILURES)
async def test_a_failed_refresh_with_an_expired_token_is_anonymous_and_keeps_the_cookies(
    harness: Harness, issuer: DevIssuer, clock: Clock, mode: str
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    issuer.fail_mode = mode

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens))

    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    assert "set-cookie" not in response.headers
    assert issuer.stats.token_requests == 1


async def test_after_a_transient_failure_the_proof_cools_down_then_the_next_request_refreshes(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge(refresh={"timeout": 5})
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    issuer.fail_mode, issuer.fail_count = "500", 1

    async with edge.client() as client:
        failed = await client.get("/me", headers=cookie_header(tokens))
        clock.advance(4)
        cooling = await client.get("/me", headers=cookie_header(tokens))
        cooling_api = await client.get("/api/items", headers=cookie_header(tokens))
        clock.advance(1)
        retried = await client.get("/me", headers=cookie_header(tokens))

    assert failed.json()["authenticated"] is False
    # Within refresh.timeout of the failure the same proof is refused locally:
    # no call, the cookies kept, anonymous on a page and 401 on the API.
    assert cooling.json()["authenticated"] is False
    assert cooling_api.status_code == 401
    for response in (failed, cooling, cooling_api):
        assert "set-cookie" not in response.headers
    assert edge.middleware.stats.refresh_refused == {"cooldown": 2}
    assert retried.json()["authenticated"] is True
    assert set(stored(retried)) == {"access", "id", "refresh"}
    assert issuer.stats.token_requests == 2
    assert issuer.stats.revoked_families == 0


@pytest.mark.parametrize(
    ("base_url", "names"), [(LOOPBACK, PLAIN), (HTTPS, HOST)], ids=["http-loopback", "https"]
)
async def test_invalid_grant_with_an_expired_token_clears_every_token_cookie(
    harness: Harness, issuer: DevIssuer, clock: Clock, base_url: str, names: dict[str, str]
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    issuer.fail_mode = "invalid_grant"

    async with edge.client(base_url) as client:
        response = await client.get("/me", headers=cookie_header(tokens, names=names))

    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    cleared = set_cookies(response)
    assert {cookie.name for cookie in cleared} == set(names.values())
    assert all(cookie.deletes and cookie.value in ("", '""') for cookie in cleared)
    assert response.headers["cache-control"] == "no-store"
    assert edge.middleware.stats.refresh_failed == {"refresh_failed": 1}


@pytest.mark.parametrize("expired", [False, True], ids=["within-skew", "expired"])
async def test_a_token_endpoint_that_times_out_leaves_the_session_as_it_was(
    harness: Harness, clock: Clock, expired: bool
) -> None:
    with DevIssuer.serve(port=0, clock=clock) as served:
        served.fail_mode, served.fail_delay = "timeout", 5
        edge = harness.edge(issuer=served, network=True, refresh={"timeout": 0.2})
        tokens = served.login("u1")
        harness.watch(tokens["access_token"], tokens["id_token"], tokens["refresh_token"])
        clock.advance(PAST_EXPIRY if expired else WITHIN_SKEW)
        started = time.monotonic()
        async with edge.client() as client:
            response = await client.get("/me", headers=cookie_header(tokens))
        elapsed = time.monotonic() - started

    assert elapsed < 3
    assert response.status_code == 200
    assert response.json()["authenticated"] is not expired
    assert "set-cookie" not in response.headers
    assert served.stats.token_requests == 1
    assert edge.middleware.stats.refresh_failed == {"refresh_failed": 1}


# -- what counts as a proof ------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "with_remote", "reason"),
    [
        (TokenMissing(), False, "no_proof"),
        (TokenMalformed("x"), False, "proof_invalid"),
        (SignatureInvalid(), True, "proof_invalid"),
        (IssuerMismatch(), True, "proof_invalid"),
        (AudienceMismatch(), True, "proof_invalid"),
        (AlgorithmNotAllowed(), True, "proof_invalid"),
        # A kid the bake lacks: the remote layer may learn it; without one, never.
        (KeyNotFound(), True, "proof_unverifiable"),
        (KeyNotFound(), False, "proof_invalid"),
        (KeysStale(issuer=ISSUER), True, "proof_unverifiable"),
        # Signature verified, but our clock disagrees with the issuer's: it will pass.
        (TokenNotYetValid(), False, "proof_unverifiable"),
        (IssuedInFuture(), False, "proof_unverifiable"),
    ],
    ids=lambda value: value.code if isinstance(value, VerifierError) else str(value),
)
def test_proof_failures_are_permanent_or_transient_by_their_cause(
    issuer: DevIssuer, error: VerifierError, with_remote: bool, reason: str
) -> None:
    config = AppConfig(
        auth={"issuer": ISSUER, "audience": "api", "client_id": "web", "jwks": issuer.jwks()},
        endpoints={"token": ISSUER + "/token", "jwks_uri": ISSUER + "/jwks"},
        keys={"remote": "unknown-kid" if with_remote else "never"},
    )
    middleware = JWTSessionMiddleware(Starlette(), config)

    assert (middleware.remote is not None) is with_remote
    assert middleware.proof_refusal(error) == reason


# -- when refresh is skipped ----------------------------------------------------


def test_refresh_is_skipped_on_a_websocket_upgrade(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    # TestClient talks to http://testserver: not loopback, so the __Host- names.
    headers = {**cookie_header(tokens, names=HOST), "Origin": "http://testserver"}

    with (
        TestClient(edge.app) as client,
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/ws", headers=headers),
    ):
        pass  # pragma: no cover - the upgrade is refused

    assert denied.value.status_code == 401
    assert "set-cookie" not in denied.value.headers
    assert issuer.stats.token_requests == 0
    assert edge.middleware.stats.websocket_refused == {"token_expired": 1}


def _excluded(tokens: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    return "/healthz", cookie_header(tokens)


def _forward_auth(tokens: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    return "/auth/verify", cookie_header(tokens)


def _bearer(tokens: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    return "/me", {
        **cookie_header(tokens, kinds=("refresh",)),
        "Authorization": f"Bearer {tokens['access_token']}",
    }


@pytest.mark.parametrize(
    ("request_for", "status"),
    [
        pytest.param(_excluded, 200, id="excluded-path"),
        pytest.param(_forward_auth, 200, id="forward-auth-path"),
        pytest.param(_bearer, 401, id="bearer"),
    ],
)
async def test_refresh_is_skipped_for_requests_that_must_not_refresh(
    harness: Harness,
    issuer: DevIssuer,
    clock: Clock,
    request_for: Callable[[Mapping[str, Any]], tuple[str, dict[str, str]]],
    status: int,
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    path, headers = request_for(tokens)

    async with edge.client() as client:
        response = await client.get(path, headers=headers)

    assert response.status_code == status
    assert "set-cookie" not in response.headers
    assert issuer.stats.token_requests == 0
    assert edge.middleware.stats.refreshed == 0
    if status == 200:
        assert response.json()["authenticated"] is False


async def test_refresh_is_skipped_when_refresh_is_disabled(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge(refresh={"enabled": False})
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens))

    assert edge.refresher is None
    assert edge.middleware.refresher is None
    assert response.json()["authenticated"] is False
    assert "set-cookie" not in response.headers
    assert issuer.stats.token_requests == 0


async def test_refresh_is_skipped_when_the_access_token_is_far_from_expiry(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(ACCESS_TTL - SKEW - 1)

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens))

    assert response.json()["authenticated"] is True
    assert "set-cookie" not in response.headers
    assert "cache-control" not in response.headers
    assert issuer.stats.token_requests == 0


async def test_refresh_is_due_within_the_skew_even_though_the_token_still_verifies(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    old_jti = claims_of(edge.verifier, tokens["access_token"])["jti"]
    clock.advance(WITHIN_SKEW)

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens))

    assert response.json()["authenticated"] is True
    assert response.json()["jti"] != old_jti
    assert issuer.stats.token_requests == 1


@pytest.mark.parametrize("path", ["/me", "/api/items"], ids=["page", "api"])
async def test_a_refresh_cookie_alone_makes_no_call_and_is_cleared(
    harness: Harness, issuer: DevIssuer, path: str
) -> None:
    edge = harness.edge()
    tokens = harness.login()

    async with edge.client() as client:
        response = await client.get(path, headers=cookie_header(tokens, kinds=("refresh",)))

    if path == "/me":
        assert response.status_code == 200
        assert response.json()["authenticated"] is False
    else:
        assert response.status_code == 401
        assert response.json()["code"] == "token_missing"
    cleared = set_cookies(response)
    assert {cookie.name for cookie in cleared} == {PLAIN["refresh"]}
    assert all(cookie.deletes for cookie in cleared)
    assert issuer.stats.token_requests == 0
    assert edge.middleware.stats.refresh_refused == {"no_proof": 1}


async def test_a_genuine_id_token_alone_is_a_proof_and_refreshes_into_a_session(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens, kinds=("id", "refresh")))

    assert response.json()["authenticated"] is True
    assert response.json()["sub"] == "u1"
    assert set(stored(response)) == {"access", "id", "refresh"}
    assert issuer.stats.token_requests == 1
    assert edge.middleware.stats.refresh_refused == {}


async def test_an_invalid_access_token_that_is_not_expired_does_not_trigger_a_refresh(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    cookies = {**tokens, "access_token": tampered(tokens["access_token"])}

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(cookies))

    assert response.json()["authenticated"] is False
    assert issuer.stats.token_requests == 0


def test_a_websocket_upgrade_with_only_a_refresh_cookie_is_anonymous_and_never_refreshes(
    harness: Harness, issuer: DevIssuer
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    headers = {
        **cookie_header(tokens, kinds=("refresh",), names=HOST),
        "Origin": "http://testserver",
    }

    with TestClient(edge.app) as client, client.websocket_connect("/ws", headers=headers) as ws:
        assert ws.receive_json() == {"authenticated": False}

    assert issuer.stats.token_requests == 0
    assert edge.middleware.stats.refreshed == 0


# -- cookies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "names", "secure"),
    [(LOOPBACK, PLAIN, False), (HTTPS, HOST, True)],
    ids=["http-loopback", "https"],
)
async def test_refreshed_cookies_carry_the_attributes_for_the_request_scheme(
    harness: Harness,
    issuer: DevIssuer,
    clock: Clock,
    base_url: str,
    names: dict[str, str],
    secure: bool,
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)

    async with edge.client(base_url) as client:
        response = await client.get("/me", headers=cookie_header(tokens, names=names))

    assert response.json()["authenticated"] is True
    cookies = set_cookies(response)
    assert {cookie.name for cookie in cookies} == set(names.values())
    for cookie in cookies:
        assert_attributes(cookie, secure=secure)
        assert cookie.attributes["max-age"] == MAX_AGE
    assert response.headers["cache-control"] == "no-store"
    assert set(stored(response, names)) == {"access", "id", "refresh"}


async def test_cookies_with_the_other_scheme_names_are_not_read(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)

    async with edge.client(HTTPS) as client:
        response = await client.get("/me", headers=cookie_header(tokens, names=PLAIN))

    assert response.json()["authenticated"] is False
    assert issuer.stats.token_requests == 0


def many_organizations(count: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"org_{n:03}",
            "slug": f"organization-{n:03}",
            "name": f"Organization number {n:03} with a long display name",
            "role": "member",
        }
        for n in range(count)
    ]


async def test_a_large_token_set_is_chunked_and_read_back_on_the_next_request(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    issuer.add_user("big", organizations=many_organizations(45))
    edge = harness.edge()
    tokens = harness.login("big")
    assert CHUNK_SIZE < len(tokens["access_token"]) <= edge.config.auth.max_token_bytes
    clock.advance(PAST_EXPIRY)

    async with edge.client() as client:
        refreshed = await client.get("/me", headers=cookie_header(tokens))
        cookies = set_cookies(refreshed)
        written = {cookie.name: cookie for cookie in cookies if not cookie.deletes}
        deleted = {cookie.name for cookie in cookies if cookie.deletes}
        chunk_cookies = {name: cookie.value for name, cookie in written.items()}
        again = await client.get(
            "/me", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in chunk_cookies.items())}
        )

    assert refreshed.json()["authenticated"] is True
    assert len(refreshed.json()["organizations"]) == 45
    assert {"jwtedge_access.0", "jwtedge_access.1"} <= set(written)
    assert "jwtedge_access" not in written
    # The unchunked cookie the request carried is cleared so it cannot shadow the chunks.
    assert deleted == {"jwtedge_access"}
    for header in refreshed.headers.get_list("set-cookie"):
        assert len(header) < 4096
    assert all(len(cookie.value) <= CHUNK_SIZE for cookie in written.values())
    assert again.json()["authenticated"] is True
    assert again.json()["jti"] == refreshed.json()["jti"]
    assert len(again.json()["organizations"]) == 45
    assert "set-cookie" not in again.headers
    assert issuer.stats.token_requests == 1


async def test_a_refresh_without_an_id_token_keeps_the_old_one_and_its_profile(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    edge = harness.edge()
    issuer.add_user("u3", email="grace@example.com", name="Grace Hopper")
    tokens = harness.login("u3", sid="sid-u3", scope="profile email offline_access")
    assert "id_token" not in tokens
    id_token = issuer.id_token("u3", sid="sid-u3", email="grace@example.com", name="Grace Hopper")
    harness.watch(id_token)
    clock.advance(PAST_EXPIRY)

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header({**tokens, "id": id_token}))

    body = response.json()
    assert body["authenticated"] is True
    assert body["id_claims"] is True
    assert body["email"] == "grace@example.com"
    assert body["name"] == "Grace Hopper"
    # The ID cookie is either left alone or rewritten with the old value, never dropped.
    assert stored(response).get("id", id_token) == id_token
    assert not any(c.deletes and c.name == PLAIN["id"] for c in set_cookies(response))
    assert issuer.stats.refresh_grants == 1


async def test_stale_chunks_are_cleared_when_the_new_token_fits_one_cookie(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    issuer.add_user("big", organizations=many_organizations(45))
    edge = harness.edge()
    tokens = harness.login("big")
    clock.advance(PAST_EXPIRY)
    async with edge.client() as client:
        chunked = stored(await client.get("/me", headers=cookie_header(tokens)))
        # The user leaves most organizations: the next access token is small.
        issuer.add_user("big", organizations=many_organizations(1))
        clock.advance(PAST_EXPIRY)
        pieces = [
            chunked["access"][i : i + CHUNK_SIZE]
            for i in range(0, len(chunked["access"]), CHUNK_SIZE)
        ]
        cookie = "; ".join(
            [f"jwtedge_access.{n}={piece}" for n, piece in enumerate(pieces)]
            + [f"jwtedge_id={chunked['id']}", f"jwtedge_refresh={chunked['refresh']}"]
        )
        response = await client.get("/me", headers={"Cookie": cookie})

    assert response.json()["authenticated"] is True
    assert response.json()["organizations"] == ["org_000"]
    cookies = set_cookies(response)
    written = {c.name for c in cookies if not c.deletes}
    deleted = {c.name for c in cookies if c.deletes}
    assert written == set(PLAIN.values())
    assert deleted == {f"jwtedge_access.{n}" for n in range(len(pieces))}
    assert issuer.stats.refresh_grants == 2


async def test_a_token_too_large_for_the_cookies_fails_the_refresh_without_crashing(
    harness: Harness, issuer: DevIssuer, clock: Clock
) -> None:
    issuer.add_user("big", organizations=many_organizations(45))
    edge = harness.edge(cookies={"max_chunks": 1})
    tokens = harness.login("big")
    clock.advance(PAST_EXPIRY)

    async with edge.client() as client:
        response = await client.get("/me", headers=cookie_header(tokens))

    assert response.status_code == 200
    assert response.json()["authenticated"] is False
    assert "set-cookie" not in response.headers
    assert edge.middleware.stats.refresh_failed == {"refresh_failed": 1}


# -- no token material anywhere ------------------------------------------------


async def test_refresh_tokens_never_appear_in_logs_stats_or_errors(
    harness: Harness, issuer: DevIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    edge = harness.edge()
    tokens = harness.login()
    clock.advance(PAST_EXPIRY)
    async with edge.client() as client:
        first = await client.get("/me", headers=cookie_header(tokens))
        new = stored(first)
        clock.advance(GRACE + 1)
        await client.get("/me", headers=cookie_header(tokens))  # spent: refused
        clock.advance(PAST_EXPIRY)
        issuer.fail_mode = "invalid_grant"
        await client.get("/me", headers=cookie_header(new))

    assert edge.refresher is not None
    with pytest.raises(RefreshFailed) as caught:
        await edge.refresher.refresh(tokens["refresh_token"], proof=None)
    shown = " ".join(
        [
            str(caught.value),
            repr(caught.value),
            repr(caught.value.context),
            repr(edge.refresher),
            repr(edge.refresher.stats),
            repr(edge.middleware.stats.snapshot()),
            caplog.text,
        ]
    )
    assert edge.middleware.stats.refresh_failed == {"refresh_failed": 2}
    assert any(record.name.startswith("jwtedge") for record in caplog.records)
    for secret in (tokens["refresh_token"], new["refresh"], new["access"], new["id"]):
        assert secret not in shown
