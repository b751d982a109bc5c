"""config/nginx.conf.example in front of real servers: nginx, the jwtedge app, an upstream.

A real DevIssuer, the reference app (its bake from that issuer) and a tiny
upstream that echoes what it received (over HTTP, and over a WebSocket on the
config's ``/ws/`` location) run on uvicorn on 127.0.0.1; a real nginx runs the
shipped example config in front of the upstream (:mod:`tests.e2e.nginx`).
Each test goes through nginx as a browser, an API client or a real
``websockets`` client would, and checks what the upstream saw (or that it saw
nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from starlette.types import Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.e2e.nginx import NginxServer, running_nginx
from tests.e2e.servers import app_config, dev_issuer, serve_app
from verifier.app import EdgeState, create_app
from verifier.cookies import CHUNK_SIZE
from verifier.testing import DevIssuer

pytestmark = pytest.mark.e2e

#: The token cookies' names on plain http to 127.0.0.1 (no __Host- prefix), by token kind.
PLAIN = {"access": "jwtedge_access", "id": "jwtedge_id", "refresh": "jwtedge_refresh"}
#: Identity headers a client might send to impersonate someone.
SPOOFED = {
    "X-Auth-User": "mallory",
    "X-Auth-Email": "mallory@evil.example",
    "X-Auth-Org": "evil",
    "X-Auth-Orgs": "evil",
    "X-Auth-Projects": "prj_evil",
    "X-Auth-Role": "owner",
    "X-Auth-Request-User": "mallory",
    "X-User-Id": "mallory",
    "X-Forwarded-User": "mallory",
    "Remote-User": "mallory",
}


# -- the upstream -------------------------------------------------------------------------


@dataclass
class Upstream:
    """An ASGI app that answers every request with what it received, as JSON;
    a WebSocket is accepted and gets the same record as its first message."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # lifespan: nothing to set up
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        record = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "cookie": "; ".join(v for k, v in headers if k == "cookie"),
            "body": body.decode("latin-1"),
        }
        self.seen.append(record)
        payload = json.dumps(record).encode()
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": payload})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        record = {
            "type": "websocket",
            "path": scope["path"],
            "headers": headers,
            "cookie": "; ".join(v for k, v in headers if k == "cookie"),
        }
        self.seen.append(record)
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(record)})
        while (await receive())["type"] != "websocket.disconnect":
            pass


def header(record: dict[str, Any], name: str) -> list[str]:
    """Every value of one header the upstream received (names are lower case there)."""
    return [value for key, value in record["headers"] if key == name.lower()]


# -- the stack ----------------------------------------------------------------------------


@dataclass
class Stack:
    issuer: DevIssuer
    app_url: str
    upstream: Upstream
    nginx: NginxServer
    #: The jwtedge app's state: its counters tell why /auth/verify refused.
    edge: EdgeState

    @property
    def url(self) -> str:
        return self.nginx.url

    def client(self) -> httpx2.Client:
        """A browser-like client talking to nginx; redirects are followed by hand."""
        return httpx2.Client(base_url=self.url, follow_redirects=False, timeout=10.0)

    def cookie_header(self, tokens: dict[str, Any], *, before: str = "", after: str = "") -> str:
        pairs = [f"{name}={tokens[f'{kind}_token']}" for kind, name in PLAIN.items()]
        return "; ".join(part for part in (before, "; ".join(pairs), after) if part)


@contextmanager
def running_stack() -> Iterator[Stack]:
    with dev_issuer() as issuer:
        config = app_config(issuer)
        # Room for the big-token test (the default refuses tokens over 8 KiB).
        config = config.model_copy(
            update={"auth": config.auth.model_copy(update={"max_token_bytes": 15200})}
        )
        upstream = Upstream()
        app = create_app(config)
        with (
            serve_app(app) as app_url,
            serve_app(upstream) as upstream_url,
            running_nginx(
                app=urlsplit(app_url).netloc, upstream=urlsplit(upstream_url).netloc
            ) as nginx,
        ):
            yield Stack(issuer, app_url, upstream, nginx, app.state.edge)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack() as stack:
        yield stack


@pytest.fixture
def upstream(stack: Stack) -> Upstream:
    stack.upstream.seen.clear()
    return stack.upstream


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, Any]:
    """A valid token set for Ada (two organizations: owner of acme, member of globex)."""
    return stack.issuer.login("ada")


def upstream_saw(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


# -- anonymous ----------------------------------------------------------------------------


def test_an_anonymous_page_request_is_redirected_to_the_apps_login_with_its_return_path(
    stack: Stack, upstream: Upstream
) -> None:
    with stack.client() as browser:
        response = browser.get("/reports/2024?tab=q1")

        assert response.status_code == 302
        assert response.headers["location"] == "/auth/login?next=/reports/2024?tab=q1"
        # /auth/ is the jwtedge app on this origin: it starts a sign-in at the issuer.
        login = browser.get(response.headers["location"])
        assert login.status_code == 302
        assert login.headers["location"].startswith(f"{stack.issuer.url}/authorize?")
        callback = dict(httpx2.URL(login.headers["location"]).params)["redirect_uri"]
        assert callback == f"{stack.url}/auth/callback"
    assert upstream.seen == []


def test_an_anonymous_api_request_gets_the_401_itself_and_the_verdict_is_not_public(
    stack: Stack, upstream: Upstream
) -> None:
    with stack.client() as client:
        response = client.get("/api/things")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")

        assert client.get("/auth/verify").status_code == 404
        assert client.get("/_jwtedge/verify").status_code == 404
    assert upstream.seen == []


def test_identity_headers_sent_by_an_anonymous_client_get_it_nowhere(
    stack: Stack, upstream: Upstream
) -> None:
    with stack.client() as client:
        assert client.get("/", headers=SPOOFED).status_code == 302
        assert client.get("/api/me", headers=SPOOFED).status_code == 401
    assert upstream.seen == []


# -- signed in ----------------------------------------------------------------------------


def test_a_signed_in_request_reaches_the_upstream_with_identity_headers_and_no_token_cookies(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    cookie = stack.cookie_header(tokens, before="theme=dark", after="lang=en")
    with stack.client() as browser:
        seen = upstream_saw(browser.get("/projects?page=2", headers={"Cookie": cookie}))

    assert (seen["path"], seen["query"]) == ("/projects", "page=2")
    assert header(seen, "x-auth-user") == ["ada"]
    assert header(seen, "x-auth-email") == ["ada@example.com"]
    assert header(seen, "x-auth-orgs") == ["acme,globex"]
    assert header(seen, "x-auth-projects") == ["prj_web,prj_bill"]
    # Two organizations and none chosen: no X-Auth-Org / X-Auth-Role.
    assert header(seen, "x-auth-org") == header(seen, "x-auth-role") == []
    assert seen["cookie"] == "theme=dark; lang=en"
    for token in (tokens["access_token"], tokens["id_token"], tokens["refresh_token"]):
        assert token not in json.dumps(seen)


@pytest.mark.parametrize(
    ("layout", "kept"),
    [
        pytest.param("{tokens}", "", id="only-tokens-no-cookie-header"),
        pytest.param("{tokens}; a=1", "a=1", id="tokens-first"),
        pytest.param("a=1;{tokens}", "a=1", id="tokens-last-no-space"),
        pytest.param(
            "{access}; a=1; {id}; b=2; {refresh}; c=3; __Host-jwtedge_access=x",
            "a=1; b=2; c=3",
            id="four-runs-between-three-cookies",
        ),
        pytest.param(
            "a=1; JWTEDGE_ID.2=x; {tokens}; jwtedge_login_0123abcd=sealed; b=2",
            "a=1; b=2",
            id="upper-case-and-login-state",
        ),
        pytest.param(
            "myjwtedge_access=1; jwtedge=2; {tokens}; x_jwtedge_id=3",
            "myjwtedge_access=1; jwtedge=2; x_jwtedge_id=3",
            id="look-alike-names-kept",
        ),
        pytest.param(
            "{access}; a=1; {id}; b=2; {refresh}; c=3; jwtedge_id.3=x; d=4; jwtedge_x=y",
            "",
            id="five-runs-fail-closed",
        ),
    ],
)
def test_the_upstream_never_sees_a_jwtedge_cookie(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any], layout: str, kept: str
) -> None:
    access = tokens["access_token"]
    half = len(access) // 2
    # Chunked as jwtedge writes long tokens: the app joins name.0 and name.1.
    parts = {
        "access": f"jwtedge_access.0={access[:half]}; jwtedge_access.1={access[half:]}",
        "id": f"__Host-jwtedge_id=x; jwtedge_id={tokens['id_token']}",
        "refresh": f"jwtedge_refresh={tokens['refresh_token']}",
    }
    cookie = layout.format(tokens="; ".join(parts.values()), **parts)
    with stack.client() as browser:
        seen = upstream_saw(browser.get("/", headers={"Cookie": cookie}))

    assert header(seen, "x-auth-user") == ["ada"]  # the chunks did authenticate
    assert seen["cookie"] == kept
    assert "jwtedge_" not in seen["cookie"].lower().replace("myjwtedge_", "").replace(
        "x_jwtedge_", ""
    )


def test_identity_headers_sent_by_a_signed_in_client_are_replaced_or_removed(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    headers = [("Cookie", stack.cookie_header(tokens)), *SPOOFED.items()]
    headers += [("X-Auth-User", "mallory-again"), ("X-Auth-Role", "admin")]  # repeated names
    with stack.client() as browser:
        seen = upstream_saw(browser.get("/", headers=headers))

    assert header(seen, "x-auth-user") == ["ada"]
    assert header(seen, "x-auth-email") == ["ada@example.com"]
    assert header(seen, "x-auth-orgs") == ["acme,globex"]
    assert header(seen, "x-auth-projects") == ["prj_web,prj_bill"]
    for name in ("x-auth-org", "x-auth-role", "x-auth-request-user", "x-user-id"):
        assert header(seen, name) == [], name
    assert header(seen, "x-forwarded-user") == header(seen, "remote-user") == []
    assert "mallory" not in json.dumps(seen)


def test_a_role_gated_location_lets_owners_in_and_answers_403_to_everyone_else(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    cookie = {"Cookie": stack.cookie_header(tokens)}
    with stack.client() as browser:
        owner = upstream_saw(browser.get("/admin/users", headers={**cookie, "X-Org-Slug": "acme"}))
        assert header(owner, "x-auth-org") == ["acme"]
        assert header(owner, "x-auth-role") == ["owner"]
        upstream.seen.clear()

        # Ada is a member of globex, not an owner; with no organization chosen
        # the role cannot be judged: 403 as well, and the upstream sees nothing.
        member = browser.get("/admin/users", headers={**cookie, "X-Org-Slug": "globex"})
        unchosen = browser.get("/admin/users", headers=cookie)
        anonymous = browser.get("/admin/users")

    assert member.status_code == 403
    assert unchosen.status_code == 403
    assert anonymous.status_code == 302
    assert upstream.seen == []


def test_a_cross_site_post_with_cookies_is_refused_and_a_same_origin_one_goes_through(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    cookie = stack.cookie_header(tokens)
    with stack.client() as browser:
        cross = browser.post(
            "/projects",
            content=b"name=x",
            headers={"Cookie": cookie, "Origin": "https://evil.example"},
        )
        no_origin = browser.post("/projects", content=b"name=x", headers={"Cookie": cookie})
        assert upstream.seen == []

        same = browser.post(
            "/projects", content=b"name=apollo", headers={"Cookie": cookie, "Origin": stack.url}
        )

    assert cross.status_code == 403
    assert no_origin.status_code == 403
    seen = upstream_saw(same)
    assert (seen["method"], seen["body"]) == (
        "POST",
        "name=apollo",
    )  # the body is not the subrequest's
    assert header(seen, "x-auth-user") == ["ada"]


# -- refresh and sign-in through nginx ------------------------------------------------------


def test_an_expired_access_token_is_refreshed_by_one_trip_through_the_login_without_the_issuer(
    stack: Stack, upstream: Upstream
) -> None:
    issuer = stack.issuer
    issuer.access_ttl = -120  # expired beyond the app's 30 s leeway
    try:
        expired = issuer.login("ada")
    finally:
        issuer.access_ttl = 300
    authorize_before, grants_before = issuer.stats.authorize_requests, issuer.stats.refresh_grants

    with stack.client() as browser:
        for kind, name in PLAIN.items():
            browser.cookies.set(name, expired[f"{kind}_token"], domain="127.0.0.1", path="/")

        first = browser.get("/inbox?folder=all")
        assert first.status_code == 302
        assert first.headers["location"] == "/auth/login?next=/inbox?folder=all"
        back = browser.get(first.headers["location"])
        assert back.status_code == 302
        assert back.headers["location"] == "/inbox?folder=all"  # straight back, not to the issuer
        assert len(back.headers.get_list("set-cookie")) >= 2
        seen = upstream_saw(browser.get(back.headers["location"]))

    assert issuer.stats.authorize_requests == authorize_before
    assert issuer.stats.refresh_grants == grants_before + 1
    assert header(seen, "x-auth-user") == ["ada"]
    assert seen["cookie"] == ""
    assert [record["path"] for record in upstream.seen] == ["/inbox"]


def test_a_sign_in_with_chunked_token_cookies_fits_through_nginx(
    stack: Stack, upstream: Upstream
) -> None:
    issuer = stack.issuer
    orgs = [
        {
            "id": f"org_{i:04d}",
            "slug": f"organization-{i:04d}",
            "name": f"Organization number {i:04d} with a rather long display name",
            "role": "member",
        }
        for i in range(75)  # a 13.5 KB access token: 4 chunks
    ]
    issuer.add_user("grace", email="grace@example.com", organizations=orgs)
    issuer.default_user = "grace"
    try:
        with stack.client() as browser:
            response = browser.get("/dashboard")
            for _ in range(3):  # nginx -> /auth/login -> issuer /authorize -> /auth/callback
                assert response.status_code in (302, 303), response.text
                response = browser.get(response.headers["location"])
            # The callback's Set-Cookie lines (the chunks) got through nginx's proxy buffers.
            assert response.status_code == 303, response.text
            assert response.headers["location"] == "/dashboard"
            names = {cookie.name for cookie in browser.cookies.jar}
            assert {"jwtedge_access.0", "jwtedge_access.3"} <= names, names
            cookie_bytes = sum(len(c.name) + len(c.value or "") + 2 for c in browser.cookies.jar)
            assert cookie_bytes > 8192  # one Cookie line beyond nginx's default 8 KB buffer

            seen = upstream_saw(browser.get("/dashboard"))
    finally:
        issuer.default_user = "ada"

    assert header(seen, "x-auth-user") == ["grace"]
    assert len(header(seen, "x-auth-orgs")[0].split(",")) == 75
    assert seen["cookie"] == ""
    assert len(issuer.login("grace")["access_token"]) > 3 * CHUNK_SIZE


def test_an_unverified_email_never_reaches_the_upstream_not_even_the_clients_own(
    stack: Stack, upstream: Upstream
) -> None:
    stack.issuer.add_user("eve", email="eve@example.com", email_verified=False)
    tokens = stack.issuer.login("eve")
    headers = {"Cookie": stack.cookie_header(tokens), "X-Auth-Email": "ceo@example.com"}
    with stack.client() as browser:
        seen = upstream_saw(browser.get("/", headers=headers))

    assert header(seen, "x-auth-user") == ["eve"]
    assert header(seen, "x-auth-email") == []


# -- Traefik's forwardAuth request, straight to the app ----------------------------------------


def traefik_request(
    stack: Stack, tokens: dict[str, Any], *, method: str, origin: str
) -> dict[str, str]:
    """The headers Traefik's forwardAuth sends: Host is jwtedge's own address, the
    browser's host travels in X-Forwarded-Host (traefik pkg/middlewares/auth/forward.go)."""
    return {
        "Cookie": stack.cookie_header(tokens),
        "Origin": origin,
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": urlsplit(stack.url).netloc,
        "X-Forwarded-Uri": "/projects",
    }


def test_a_traefik_style_forward_auth_request_gets_the_verdict_and_the_csrf_rule(
    stack: Stack, tokens: dict[str, Any]
) -> None:
    with httpx2.Client(base_url=stack.app_url, timeout=10.0) as client:
        get = client.get(
            "/auth/verify", headers=traefik_request(stack, tokens, method="GET", origin=stack.url)
        )
        cross = client.get(
            "/auth/verify",
            headers=traefik_request(stack, tokens, method="POST", origin="https://evil.example"),
        )

    assert get.status_code == 200
    assert get.headers["x-auth-user"] == "ada"
    assert cross.status_code == 403


def test_a_same_origin_post_through_traefik_is_not_refused_as_cross_site(
    stack: Stack, tokens: dict[str, Any]
) -> None:
    with httpx2.Client(base_url=stack.app_url, timeout=10.0) as client:
        same = client.get(
            "/auth/verify", headers=traefik_request(stack, tokens, method="POST", origin=stack.url)
        )

    assert same.status_code == 200, same.text


# -- WebSockets through nginx ---------------------------------------------------------------


def open_socket(stack: Stack, headers: dict[str, str], *, origin: str | None) -> ClientConnection:
    """A real WebSocket client through nginx's /ws/ location (Origin only when given)."""
    return connect(
        f"ws://127.0.0.1:{stack.nginx.port}/ws/chat",
        origin=origin,  # type: ignore[arg-type]
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
        close_timeout=5,
    )


def upstream_saw_socket(stack: Stack, headers: dict[str, str], *, origin: str | None) -> Any:
    with open_socket(stack, headers, origin=origin) as socket:
        record = json.loads(socket.recv(timeout=10))
    assert record["type"] == "websocket"
    return record


def refused_handshake(stack: Stack, headers: dict[str, str], *, origin: str | None) -> Any:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(stack, headers, origin=origin).close()
    return refused.value.response


def test_a_same_origin_cookie_handshake_reaches_the_websocket_upstream_with_identity_headers(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    cookie = stack.cookie_header(tokens, before="theme=dark")
    seen = upstream_saw_socket(stack, {"Cookie": cookie, **SPOOFED}, origin=stack.url)

    assert seen["path"] == "/ws/chat"
    assert header(seen, "x-auth-user") == ["ada"]
    assert header(seen, "x-auth-email") == ["ada@example.com"]
    assert header(seen, "x-auth-orgs") == ["acme,globex"]
    assert header(seen, "x-auth-projects") == ["prj_web,prj_bill"]
    assert header(seen, "x-auth-org") == header(seen, "x-user-id") == []
    assert header(seen, "origin") == [stack.url]
    assert seen["cookie"] == "theme=dark"
    assert "mallory" not in json.dumps(seen)
    for token in (tokens["access_token"], tokens["id_token"], tokens["refresh_token"]):
        assert token not in json.dumps(seen)


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://evil.example", id="another-site"),
        pytest.param("http://127.0.0.1:1", id="same-host-another-port"),
        pytest.param("https://127.0.0.1", id="another-scheme"),
        pytest.param("null", id="opaque-origin"),
        pytest.param(None, id="no-origin"),
    ],
)
def test_a_cookie_handshake_from_another_origin_or_none_never_reaches_the_upstream(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any], origin: str | None
) -> None:
    refusals = stack.edge.stats.websocket_refused["origin"]

    response = refused_handshake(stack, {"Cookie": stack.cookie_header(tokens)}, origin=origin)

    assert response.status_code == 403
    # nginx answers 403 itself (auth_request drops the body); jwtedge counted why.
    assert stack.edge.stats.websocket_refused["origin"] == refusals + 1
    assert upstream.seen == []


def test_a_bearer_handshake_with_a_valid_token_reaches_the_upstream_without_an_origin(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

    seen = upstream_saw_socket(stack, bearer, origin=None)
    cross = upstream_saw_socket(stack, bearer, origin="http://evil.example")

    assert header(seen, "x-auth-user") == header(cross, "x-auth-user") == ["ada"]


def test_a_bad_bearer_or_no_credentials_get_401_on_the_handshake(
    stack: Stack, upstream: Upstream, tokens: dict[str, Any]
) -> None:
    cookie = stack.cookie_header(tokens)
    junk = refused_handshake(
        stack, {"Authorization": "Bearer not-a-token", "Cookie": cookie}, origin=None
    )
    anonymous = refused_handshake(stack, {}, origin=stack.url)

    assert junk.status_code == anonymous.status_code == 401
    assert junk.headers["WWW-Authenticate"].startswith("Bearer")
    assert upstream.seen == []


def test_a_traefik_style_handshake_is_judged_like_nginxs(
    stack: Stack, tokens: dict[str, Any]
) -> None:
    """Traefik drops Upgrade (hop-by-hop) from the forwardAuth request and keeps the
    Sec-WebSocket-* headers: they are enough to recognise the handshake."""
    handshake = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    with httpx2.Client(base_url=stack.app_url, timeout=10.0) as client:
        same = client.get(
            "/auth/verify",
            headers={**traefik_request(stack, tokens, method="GET", origin=stack.url), **handshake},
        )
        cross = client.get(
            "/auth/verify",
            headers={
                **traefik_request(stack, tokens, method="GET", origin="http://evil.example"),
                **handshake,
            },
        )

    assert same.status_code == 200
    assert same.headers["x-auth-user"] == "ada"
    assert cross.status_code == 403
    assert cross.json()["code"] == "csrf_rejected"
