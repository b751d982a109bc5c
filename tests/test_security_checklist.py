"""The security checklist (issue "Reliability and security", item 5), through create_app.

Every item runs against the reference app (``create_app``) or the bare
middleware, under Starlette's TestClient, with the issuer's endpoints served
by a DevIssuer through ``httpx2.ASGITransport``:

- CSWSH: a cross-origin (or Origin-less) WebSocket upgrade with cookies is refused;
- every ``Set-Cookie`` (login state, callback, automatic and explicit refresh,
  logout) is HttpOnly, Path=/, SameSite as configured (the login-state cookie
  always Lax) and Secure exactly when the mode says so;
- ``Cache-Control: no-store`` on everything that carries session data;
- spoofed identity headers never reach the app or the forward-auth answer;
- open redirects (``next=``, the post-logout redirect) are refused;
- state, nonce, PKCE and ``iss`` mismatches are refused;
- CSRF: a cookie-authenticated unsafe method is refused on every path the app
  has (and some it has not), and through forward auth;
- tokens in query strings are ignored over HTTP and refused on WebSockets;
- no token or secret in any log line, at any level, during the whole file;
- no error response carries a stack trace or a file path.

The last two, plus the cookie attributes and ``no-store`` on every
``Set-Cookie``, are checked for every response and log record the module
produces, by the autouse fixture ``_checked_after_every_test``: a
:class:`Recorder` wraps each app and a :class:`LogRecorder` sits on the root
logger at DEBUG; :class:`Secrets` collects every token, refresh token,
client secret, state key, ``state``, ``nonce`` and code the tests see.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verifier.app import create_app
from verifier.authz import requires_org, requires_project
from verifier.clock import wall_clock
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.login import STATE_COOKIE_PREFIX
from verifier.middleware import JWTSessionMiddleware
from verifier.testing import DevIssuer

APP = "http://127.0.0.1"
#: TestClient puts "testserver" in relative WebSocket URLs; the app is on 127.0.0.1.
WS = "ws://127.0.0.1/ws"
HTTPS_APP = "https://app.example"
ISSUER_URL = "https://issuer.test"
EVIL = "https://evil.example"
SAME_ORIGIN = {"Origin": APP}
CLIENT_SECRET = "checklist-client-secret-" + "c" * 24
STATE_KEY = "checklist-state-key-" + "k" * 32
TOKEN_NAMES = ("jwtedge_access", "jwtedge_id", "jwtedge_refresh")
ORGS = [
    {"id": "org_acme", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
    {"id": "org_globex", "slug": "globex", "name": "Globex Corporation", "role": "member"},
]
PROJECTS = [{"id": "prj_web", "slug": "website", "organizationId": "org_acme"}]
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
SPOOFED = {
    "X-Auth-User": "admin",
    "X-Auth-Email": "admin@example.com",
    "X-Auth-Org": "acme",
    "X-Auth-Role": "owner",
    "X-Auth-Orgs": "acme,globex",
    "X-Auth-Projects": "prj_web",
    "X-AUTH-Anything": "1",
    "X-User-Id": "admin",
    "X-Forwarded-User": "admin",
    # Spellings uvicorn passes and WSGI bridges read as X-Auth-User (issue 20,
    # item 2), and the rest of the documented list.
    "X_Auth_User": "admin",
    "X-Auth_User": "admin",
    "X-Forwarded-Email": "admin@example.com",
    "X-Forwarded-Groups": "admins",
    "X-Forwarded-Preferred-Username": "admin",
    "X-Forwarded-Access-Token": "forged",
    "X-Remote-User": "admin",
    "Remote-User": "admin",
    "Cf-Access-Authenticated-User-Email": "admin@example.com",
    "X-Goog-Authenticated-User-Email": "admin@example.com",
    "X-Amzn-Oidc-Identity": "admin",
    "X-MS-CLIENT-PRINCIPAL-NAME": "admin",
}
#: What a stack trace or a source path looks like in a response body.
TRACE_PATTERNS = [
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r'File "[^"]+", line \d+'),
    re.compile(r"[\w./\\-]+\.py\b"),
    re.compile(r"site-packages"),
]


# -- what the whole module watches ----------------------------------------------------------


class Secrets:
    """Every secret value a test saw; none may appear in a log line."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        #: Tokens (and their signatures): these may not appear in any response body either.
        self.tokens: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= 12:
            self.values.add(value)

    def token(self, value: str | None) -> str:
        assert value
        self.add(value)
        self.tokens.add(value)
        parts = value.split(".")
        if len(parts) == 3:
            # The payload and the signature are each as sensitive as the whole.
            for part in parts[1:]:
                self.add(part)
            self.tokens.add(parts[2])
        return value


class LogRecorder(logging.Handler):
    """Keeps every record, formatted with its exception and stack, as one string."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[tuple[str, str]] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, self.format(record)))


@dataclass
class Recorded:
    """One response an app sent, with what the cookie rules expect of it."""

    kind: str
    method: str
    path: str
    scheme: str
    host: str
    secure_mode: str
    same_site: str
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class Recorder:
    """Wraps an ASGI app; records every HTTP (and WebSocket denial) response."""

    def __init__(
        self, app: ASGIApp, config: AppConfig, log: list[Recorded], secrets: Secrets
    ) -> None:
        self.app = app
        self.config = config
        self.log = log
        self.secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry = Recorded(
            kind=scope["type"],
            method=scope.get("method", "GET"),
            path=scope["path"],
            scheme=scope.get("scheme", "http"),
            host=headers.get("host", ""),
            secure_mode=self.config.cookies.secure,
            same_site=self.config.cookies.same_site,
        )

        async def recording_send(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                entry.status = message["status"]
                entry.headers = [
                    (k.decode("latin-1").lower(), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                ]
                for value in entry.header_values("set-cookie"):
                    cookie_value = value.partition("=")[2].split(";", 1)[0]
                    if cookie_value.count(".") == 2:
                        self.secrets.token(cookie_value)
                    else:  # a sealed login state, a refresh token, or a clearing value
                        self.secrets.add(cookie_value)
            elif kind in ("http.response.body", "websocket.http.response.body"):
                entry.body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if entry.status:
                self.log.append(entry)


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    registry = Secrets()
    registry.add(CLIENT_SECRET)
    registry.add(STATE_KEY)
    return registry


@pytest.fixture(scope="module")
def logs() -> Iterator[LogRecorder]:
    handler = LogRecorder()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def responses() -> list[Recorded]:
    return []


def browser_side(logger: str, line: str) -> bool:
    """The test's own browser: its HTTP client logs each URL it requests (the
    callback's code and state, the authorize URL's state and nonce included).
    Only those request lines are exempt; the app's own calls to the issuer
    go to the token and revocation endpoints and are checked like the rest."""
    if logger != "httpx2":
        return False
    match = re.match(r"INFO httpx2 HTTP Request: [A-Z]+ (\S+)", line)
    if match is None:
        return False
    url = match.group(1)
    return url.startswith((APP, HTTPS_APP, "http://app.example", f"{ISSUER_URL}/authorize"))


def parse_set_cookie(value: str) -> tuple[str, str, dict[str, str]]:
    parts = [part.strip() for part in value.split(";")]
    name, _, cookie_value = parts[0].partition("=")
    attributes: dict[str, str] = {}
    for part in parts[1:]:
        key, _, attribute = part.partition("=")
        attributes[key.lower()] = attribute
    return name, cookie_value, attributes


def loopback(host: str) -> bool:
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return hostname in ("localhost", "127.0.0.1", "[::1]") or hostname.startswith("127.")


def expected_secure(entry: Recorded) -> bool:
    """DESIGN.md, Config: auto is on unless the request is plain http to a loopback host."""
    if entry.secure_mode == "always":
        return True
    if entry.secure_mode == "never":
        return False
    return entry.scheme in ("https", "wss") or not loopback(entry.host)


def cookie_problems(entry: Recorded) -> list[str]:
    problems = []
    secure = expected_secure(entry)
    for value in entry.header_values("set-cookie"):
        name, _, attributes = parse_set_cookie(value)
        where = f"{entry.method} {entry.path}: {name}"
        if "httponly" not in attributes:
            problems.append(f"{where} is not HttpOnly")
        if attributes.get("path") != "/":
            problems.append(f"{where} has Path={attributes.get('path')!r}")
        state = STATE_COOKIE_PREFIX in name
        same_site = "lax" if state else entry.same_site
        # Attribute values compare case-insensitively (RFC 6265bis 5.6.7).
        if attributes.get("samesite", "").lower() != same_site:
            problems.append(f"{where} has SameSite={attributes.get('samesite')!r}, not {same_site}")
        if ("secure" in attributes) != secure:
            problems.append(f"{where}: Secure is {'secure' in attributes}, expected {secure}")
        if name.startswith("__Host-") != secure:
            problems.append(f"{where}: the __Host- prefix does not follow Secure={secure}")
        if "domain" in attributes:
            problems.append(f"{where} has a Domain")
        if "max-age" not in attributes:
            problems.append(f"{where} has no Max-Age")
    if entry.header_values("set-cookie") and "no-store" not in ",".join(
        entry.header_values("cache-control")
    ):
        problems.append(f"{entry.method} {entry.path} sets cookies without Cache-Control: no-store")
    return problems


def trace_problems(entry: Recorded) -> list[str]:
    if entry.status < 400:
        return []
    text = entry.body.decode("utf-8", "replace")
    return [
        f"{entry.method} {entry.path} ({entry.status}) body matches {pattern.pattern!r}: {text!r}"
        for pattern in TRACE_PATTERNS
        if pattern.search(text)
    ]


@pytest.fixture(autouse=True)
def _checked_after_every_test(
    logs: LogRecorder, secrets: Secrets, responses: list[Recorded]
) -> Iterator[None]:
    start = len(responses)
    yield
    leaks = [
        (logger, line[:200])
        for logger, line in logs.lines
        if not browser_side(logger, line)
        for secret in secrets.values
        if secret in line
    ]
    assert not leaks, f"a secret reached the logs: {leaks[:3]}"
    problems: list[str] = []
    for entry in responses[start:]:
        problems += cookie_problems(entry)
        problems += trace_problems(entry)
        body = entry.body.decode("utf-8", "replace")
        headers = "\n".join(v for k, v in entry.headers if k not in ("set-cookie", "location"))
        problems += [
            f"{entry.method} {entry.path} echoes a token"
            for token in secrets.tokens
            if token in body or token in headers
        ]
    assert not problems, "\n".join(problems)


# -- the issuer, the app, signing in --------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    issuer = DevIssuer(
        issuer=ISSUER_URL, audience="api", client_id="web", client_secret=CLIENT_SECRET
    )
    issuer.add_user(
        "ada", email="ada@example.com", name="Ada Lovelace", organizations=ORGS, projects=PROJECTS
    )
    issuer.default_user = "ada"
    return issuer


@pytest.fixture(autouse=True)
def _issuer_defaults(issuer: DevIssuer) -> None:
    issuer.access_ttl = 300
    issuer.clock = wall_clock
    issuer.fail_mode = None
    issuer.fail_count = None


def edge_config(issuer: DevIssuer, **sections: Any) -> AppConfig:
    discovery = issuer.discovery()
    meta = {
        name: discovery[name]
        for name in (
            "issuer",
            "jwks_uri",
            "token_endpoint",
            "authorization_endpoint",
            "end_session_endpoint",
            "revocation_endpoint",
        )
    }
    values: dict[str, Any] = {
        "auth": {
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "client_secret": CLIENT_SECRET,
            "jwks": parse_jwks(issuer.jwks()),
            "jwks_meta": meta,
        },
        "keys": {"remote": "never"},
        "login": {"state_key": STATE_KEY},
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return AppConfig(_env_file=None, **values)


@dataclass
class Edge:
    """The reference app behind a Recorder."""

    app: Starlette
    recorder: Recorder
    config: AppConfig

    def client(self, base_url: str = APP, **kwargs: Any) -> TestClient:
        return TestClient(self.recorder, base_url=base_url, follow_redirects=False, **kwargs)


@pytest.fixture
def make_edge(issuer: DevIssuer, secrets: Secrets, responses: list[Recorded]) -> Any:
    def make(transport: httpx2.AsyncBaseTransport | None = None, **sections: Any) -> Edge:
        config = edge_config(issuer, **sections)
        app = create_app(config, issuer_transport=transport or httpx2.ASGITransport(app=issuer.app))
        return Edge(app, Recorder(app, config, responses, secrets), config)

    return make


@pytest.fixture
def edge(make_edge: Any) -> Edge:
    return make_edge()


def query(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    params[name] = value
    return urlunsplit(parts._replace(query=urlencode(params)))


def start_login(client: TestClient, secrets: Secrets, next_path: str = "/") -> str:
    response = client.get(f"/auth/login?{urlencode({'next': next_path})}")
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    secrets.add(query(location, "state"))
    secrets.add(query(location, "nonce"))
    return location


def authorize(issuer: DevIssuer, location: str, secrets: Secrets) -> str:
    with TestClient(issuer.app, base_url=ISSUER_URL, follow_redirects=False) as browser:
        response = browser.get(location)
    assert response.status_code == 302, response.text
    callback = response.headers["location"]
    secrets.add(query(callback, "code"))
    return callback


def sign_in(client: TestClient, issuer: DevIssuer, secrets: Secrets) -> list[httpx2.Response]:
    """The whole login; the /auth/login and callback responses."""
    login = client.get("/auth/login?next=/")
    assert login.status_code == 302, login.text
    location = login.headers["location"]
    secrets.add(query(location, "state"))
    secrets.add(query(location, "nonce"))
    callback = client.get(authorize(issuer, location, secrets))
    assert callback.status_code == 303, callback.text
    return [login, callback]


def token_cookie_header(issuer: DevIssuer, secrets: Secrets, *, refresh_only: bool = False) -> str:
    """Cookies of a signed-in browser, without going through the login."""
    tokens = issuer.login("ada")
    access = secrets.token(tokens["access_token"])
    id_token = secrets.token(tokens["id_token"])
    refresh = tokens["refresh_token"]
    secrets.add(refresh)
    if refresh_only:
        return f"jwtedge_refresh={refresh}"
    return f"jwtedge_access={access}; jwtedge_id={id_token}; jwtedge_refresh={refresh}"


def set_token_cookies(response: httpx2.Response) -> list[str]:
    """Names of token cookies the response sets to a value (clearing ones excluded)."""
    names = []
    for value in response.headers.get_list("set-cookie"):
        name, cookie_value, _ = parse_set_cookie(value)
        if name.removeprefix("__Host-") in TOKEN_NAMES and cookie_value:
            names.append(name)
    return names


def assert_refused_login(response: httpx2.Response, code: str) -> None:
    assert response.status_code == 400, response.text
    assert f"<code>{code}</code>" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert not set_token_cookies(response)
    assert "location" not in response.headers


# -- 0. the watchers themselves ----------------------------------------------------------------


def test_the_watchers_see_debug_records_and_every_response(
    edge: Edge, logs: LogRecorder, responses: list[Recorded]
) -> None:
    lines, recorded = len(logs.lines), len(responses)
    with edge.client() as client:
        client.get("/api/session", headers={"Authorization": "Bearer not.a.token"})
        client.get("/auth/callback?state=unknown&code=unknown")

    new = [line for _, line in logs.lines[lines:]]
    assert any(line.startswith("DEBUG jwtedge credentials refused") for line in new), new
    assert any(line.startswith("INFO jwtedge.login sign-in refused") for line in new), new
    assert [entry.status for entry in responses[recorded:]] == [401, 400]


# -- 1. CSWSH -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [EVIL, "null", "http://127.0.0.1.evil.example", "http://127.0.0.1:8443", "https://127.0.0.1"],
)
def test_a_cross_origin_websocket_upgrade_with_cookies_is_refused(
    edge: Edge, issuer: DevIssuer, secrets: Secrets, origin: str
) -> None:
    cookie = token_cookie_header(issuer, secrets)
    with (
        edge.client() as client,
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(WS, headers={"Cookie": cookie, "Origin": origin}),
    ):
        pass

    assert denied.value.status_code == 403
    assert denied.value.json()["code"] == "csrf_rejected"


def test_a_websocket_upgrade_with_cookies_and_no_origin_is_refused(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    cookie = token_cookie_header(issuer, secrets)
    with (
        edge.client() as client,
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(WS, headers={"Cookie": cookie}),
    ):
        pass

    assert denied.value.status_code == 403


def test_same_origin_cookie_and_origin_less_bearer_upgrades_are_accepted(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    cookie = token_cookie_header(issuer, secrets)
    access = secrets.token(issuer.access_token("ada"))
    with edge.client() as client:
        with client.websocket_connect(WS, headers={"Cookie": cookie, **SAME_ORIGIN}) as ws:
            assert ws.receive_json()["session"]["user"]["id"] == "ada"
        with client.websocket_connect(WS, headers={"Authorization": f"Bearer {access}"}) as ws:
            assert ws.receive_json()["session"]["user"]["id"] == "ada"


# -- 2. cookie attributes on every Set-Cookie -------------------------------------------------


class Browser:
    """A cookie store that follows Set-Cookie (value, or removal at Max-Age=0)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def seen(self, response: httpx2.Response) -> httpx2.Response:
        for value in response.headers.get_list("set-cookie"):
            name, cookie_value, attributes = parse_set_cookie(value)
            if attributes.get("max-age") == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = cookie_value
        return response

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}


@pytest.mark.parametrize(
    ("secure_mode", "base_url", "same_site", "secure"),
    [
        pytest.param("auto", APP, "lax", False, id="auto-http-loopback"),
        pytest.param("auto", HTTPS_APP, "lax", True, id="auto-https"),
        pytest.param("auto", "http://app.example", "lax", True, id="auto-http-public-host"),
        pytest.param("always", APP, "lax", True, id="always-http-loopback"),
        pytest.param("never", HTTPS_APP, "lax", False, id="never-https"),
        pytest.param("auto", HTTPS_APP, "strict", True, id="auto-https-samesite-strict"),
    ],
)
def test_every_cookie_across_login_refresh_and_logout_has_the_right_attributes(
    make_edge: Any,
    issuer: DevIssuer,
    secrets: Secrets,
    secure_mode: str,
    base_url: str,
    same_site: str,
    secure: bool,
) -> None:
    edge = make_edge(cookies={"secure": secure_mode, "same_site": same_site})
    prefix = "__Host-" if secure else ""
    # 20 s tokens minted 15 s ago, within a third of their lifetime: every page
    # load refreshes them (the issuer is the module's: restored below).
    issuer.access_ttl = 20
    issuer.clock = lambda: time.time() - 15
    # Cookies are carried by hand, as a browser behind a TLS proxy would carry
    # them (httpx's jar never sends a Secure cookie over plain http).
    jar = Browser()
    steps: dict[str, httpx2.Response] = {}
    with edge.client(base_url) as client:
        steps["login"] = jar.seen(client.get("/auth/login?next=/"))
        location = steps["login"].headers["location"]
        secrets.add(query(location, "state"))
        secrets.add(query(location, "nonce"))
        callback = authorize(issuer, location, secrets)
        steps["callback"] = jar.seen(client.get(callback, headers=jar.header()))
        steps["page refresh"] = jar.seen(client.get("/", headers=jar.header()))
        same_origin = {"Origin": base_url, **jar.header()}
        steps["explicit refresh"] = jar.seen(client.post("/auth/refresh", headers=same_origin))
        steps["logout"] = jar.seen(
            client.post("/auth/logout", headers={"Origin": base_url, **jar.header()})
        )

    state_cookies = steps["login"].headers.get_list("set-cookie")
    assert len(state_cookies) == 1
    name, _, attributes = parse_set_cookie(state_cookies[0])
    assert name.startswith(prefix + STATE_COOKIE_PREFIX)
    assert attributes["samesite"].lower() == "lax"  # whatever cookies.same_site says
    assert attributes["max-age"] == "600"
    assert steps["callback"].status_code == 303, steps["callback"].text
    assert sorted(set_token_cookies(steps["callback"])) == sorted(
        prefix + name for name in TOKEN_NAMES
    )
    for step in ("page refresh", "explicit refresh"):
        assert steps[step].status_code == 200, steps[step].text
        assert prefix + "jwtedge_access" in set_token_cookies(steps[step]), step
    assert "Signed in as" in steps["page refresh"].text
    cleared = [parse_set_cookie(v) for v in steps["logout"].headers.get_list("set-cookie")]
    assert {n for n, _, _ in cleared} >= {prefix + name for name in TOKEN_NAMES}
    assert all(value in ("", '""') and attrs["max-age"] == "0" for _, value, attrs in cleared)
    assert not jar.cookies
    for step, response in steps.items():
        values = response.headers.get_list("set-cookie")
        assert values, f"{step} set no cookie"
        for value in values:
            _, _, attributes = parse_set_cookie(value)
            assert "httponly" in attributes, (step, value)
            assert attributes["path"] == "/", (step, value)
            assert ("secure" in attributes) is secure, (step, value)
            expected = "lax" if STATE_COOKIE_PREFIX in value else same_site
            assert attributes["samesite"].lower() == expected, (step, value)
        assert response.headers["cache-control"] == "no-store", step


# -- 3. Cache-Control: no-store wherever session data is -------------------------------------


def test_every_response_with_session_data_is_no_store(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as client:
        login, callback = sign_in(client, issuer, secrets)
        answers = {
            "login": login,
            "callback": callback,
            "/": client.get("/"),
            "/account": client.get("/account"),
            "/api/session": client.get("/api/session"),
            "/api/orgs/acme/projects": client.get("/api/orgs/acme/projects"),
            "/auth/verify": client.get("/auth/verify"),
            "/auth/refresh": client.post("/auth/refresh", headers=SAME_ORIGIN),
            "/auth/login (signed in)": client.get("/auth/login?next=/account"),
            "/auth/logout": client.post("/auth/logout", headers=SAME_ORIGIN),
        }
    for name, response in answers.items():
        assert response.status_code < 400, (name, response.text)
        assert response.headers.get("cache-control") == "no-store", name
    assert "ada@example.com" in answers["/"].text  # these really carried the session


# -- 4. spoofed identity headers ----------------------------------------------------------------


def echo_app() -> Starlette:
    async def echo(request: Request) -> Response:
        return JSONResponse({"headers": dict(request.headers)})

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.mark.parametrize("path", ["/", "/api/things", "/healthz", "/static/app.js"])
@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_spoofed_identity_headers_never_reach_the_app(
    issuer: DevIssuer,
    secrets: Secrets,
    responses: list[Recorded],
    path: str,
    signed_in: bool,
) -> None:
    config = edge_config(issuer)
    app = Recorder(JWTSessionMiddleware(echo_app(), config=config), config, responses, secrets)
    headers = dict(SPOOFED)
    cookie = "theme=dark"
    if signed_in:
        cookie += "; " + token_cookie_header(issuer, secrets)
    with TestClient(app, base_url=APP) as client:
        response = client.get(path, headers={**headers, "Cookie": cookie})

    seen = response.json()["headers"]
    for name in SPOOFED:
        assert name.lower() not in seen, name
    # Token cookies are removed too; the app's own cookies are kept.
    assert seen.get("cookie") == "theme=dark"


def test_forward_auth_answers_with_claims_never_with_spoofed_headers(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as client:
        anonymous = client.get("/auth/verify", headers=SPOOFED)
        signed = client.get(
            "/auth/verify", headers={**SPOOFED, "Cookie": token_cookie_header(issuer, secrets)}
        )

    assert anonymous.status_code == 401
    assert not [name for name in anonymous.headers if name.lower().startswith("x-auth-")]
    assert signed.status_code == 200
    assert signed.headers["x-auth-user"] == "ada"
    assert signed.headers["x-auth-email"] == "ada@example.com"
    assert signed.headers["x-auth-orgs"] == "acme,globex"
    assert signed.headers["x-auth-projects"] == "prj_web"


# -- 5. open redirects --------------------------------------------------------------------------

NEXT_ATTACKS = [
    "//evil.example",
    "///evil.example",
    "https://evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "/\\evil.example",
    "\\\\evil.example",
    "%2F%2Fevil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%252F%252Fevil.example",
    " //evil.example",
    "/\t/evil.example",
    "/\r\nLocation: https://evil.example",
    "evil.example",
]


@pytest.mark.parametrize("target", NEXT_ATTACKS)
def test_login_refuses_a_next_that_leaves_the_site(
    edge: Edge, issuer: DevIssuer, secrets: Secrets, target: str
) -> None:
    cookie = token_cookie_header(issuer, secrets)
    url = f"/auth/login?next={quote(target, safe='')}"
    with edge.client() as client:
        anonymous = client.get(url)
        signed_in = client.get(url, headers={"Cookie": cookie})

    for response in (anonymous, signed_in):
        assert response.status_code == 400, response.headers.get("location")
        assert "location" not in response.headers
        assert "next_invalid" in response.text


def test_the_callback_returns_to_the_sealed_next_whatever_it_is_given(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as client:
        callback = authorize(issuer, start_login(client, secrets, "/account"), secrets)
        response = client.get(with_param(callback, "next", EVIL))

    assert response.status_code == 303
    assert response.headers["location"] == "/account"


@pytest.mark.parametrize("configured", [None, f"{APP}/bye"], ids=["unset", "configured"])
def test_the_post_logout_redirect_cannot_be_chosen_by_the_request(
    make_edge: Any, issuer: DevIssuer, secrets: Secrets, configured: str | None
) -> None:
    edge = make_edge(login={"post_logout_redirect": configured})
    attack = urlencode({"post_logout_redirect_uri": EVIL, "next": EVIL, "redirect_uri": EVIL})
    with edge.client() as client:
        response = client.post(
            f"/auth/logout?{attack}",
            content=attack,
            headers={
                **SAME_ORIGIN,
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": token_cookie_header(issuer, secrets),
            },
        )

    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{ISSUER_URL}/logout?")
    assert "evil" not in location
    params = parse_qs(urlsplit(location).query)
    assert params.get("post_logout_redirect_uri") == ([configured] if configured else None)


# -- 6. state, nonce, PKCE and iss mismatches ------------------------------------------------------


def test_a_callback_with_another_state_is_refused(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as client:
        callback = authorize(issuer, start_login(client, secrets), secrets)
        assert_refused_login(
            client.get(with_param(callback, "state", "forged-state")), "state_missing"
        )


def test_a_callback_in_a_browser_that_never_started_the_login_is_refused(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as victim, edge.client() as attacker:
        callback = authorize(issuer, start_login(attacker, secrets), secrets)
        # Login CSRF: the attacker's callback URL opened in the victim's browser.
        assert_refused_login(victim.get(callback), "state_missing")


def test_a_nonce_mismatch_is_refused(edge: Edge, issuer: DevIssuer, secrets: Secrets) -> None:
    with edge.client() as client:
        location = with_param(start_login(client, secrets), "nonce", "nonce-of-another-login")
        assert_refused_login(client.get(authorize(issuer, location, secrets)), "nonce_mismatch")


def test_a_code_from_another_login_fails_pkce(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as client:
        first = authorize(issuer, start_login(client, secrets), secrets)
        second = authorize(issuer, start_login(client, secrets), secrets)
        # The second login's state and verifier with the first login's code.
        swapped = with_param(second, "code", query(first, "code"))
        assert_refused_login(client.get(swapped), "token_exchange_failed")


def test_a_response_from_another_issuer_is_refused_before_the_code_is_spent(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    with edge.client() as client:
        callback = authorize(issuer, start_login(client, secrets), secrets)
        before = issuer.stats.token_requests
        assert_refused_login(
            client.get(with_param(callback, "iss", "https://issuer.test.evil.example")),
            "issuer_mismatch",
        )
        assert issuer.stats.token_requests == before


# -- 7. CSRF on every path ---------------------------------------------------------------------


def every_path(app: Starlette) -> list[str]:
    """Each route's path with its parameters filled in, plus paths the app does not have."""
    paths = {getattr(route, "path", "/").replace("{slug}", "acme") for route in app.routes}
    return sorted(paths | {"/nope", "/static/app.js", "/api/nope", "/healthz/deep"})


CSRF_VARIANTS = {
    "foreign-origin": {"Origin": EVIL},
    "null-origin": {"Origin": "null"},
    "sibling-port": {"Origin": "http://127.0.0.1:8080"},
    "no-origin": {},
    "cross-site-fetch": {"Sec-Fetch-Site": "cross-site"},
    "same-site-fetch": {"Sec-Fetch-Site": "same-site"},
}


def test_a_cross_site_cookie_request_with_an_unsafe_method_is_refused_on_every_path(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    full = token_cookie_header(issuer, secrets)
    refresh_only = token_cookie_header(issuer, secrets, refresh_only=True)
    paths = every_path(edge.app)
    assert {"/", "/auth/refresh", "/auth/logout", "/auth/callback", "/healthz"} <= set(paths)
    tokens_before = issuer.stats.token_requests
    failures = []
    with edge.client() as client:
        for path in paths:
            for method in UNSAFE:
                for variant, headers in CSRF_VARIANTS.items():
                    for cookie in (full, refresh_only):
                        response = client.request(
                            method, path, headers={**headers, "Cookie": cookie}
                        )
                        body = response.json() if response.status_code == 403 else {}
                        if body.get("code") != "csrf_rejected" or response.headers.get(
                            "set-cookie"
                        ):
                            failures.append((method, path, variant, response.status_code))
    assert not failures, failures[:10]
    assert issuer.stats.token_requests == tokens_before  # nothing refreshed, nothing revoked


def test_same_origin_and_bearer_unsafe_requests_pass_the_csrf_rule(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    access = secrets.token(issuer.access_token("ada"))
    with edge.client() as client:
        same_origin = client.post(
            "/auth/refresh", headers={**SAME_ORIGIN, "Cookie": token_cookie_header(issuer, secrets)}
        )
        fetch_metadata = client.post(
            "/auth/refresh",
            headers={
                "Sec-Fetch-Site": "same-origin",
                "Cookie": token_cookie_header(issuer, secrets),
            },
        )
        bearer = client.post("/api/session", headers={"Authorization": f"Bearer {access}"})

    assert same_origin.status_code == 200
    assert fetch_metadata.status_code == 200
    assert bearer.status_code == 405  # the route's answer: the CSRF rule let it through


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"X-Original-Method": "POST", "Origin": EVIL}, 403, id="nginx-post-foreign"),
        pytest.param({"X-Original-Method": "DELETE"}, 403, id="nginx-delete-no-origin"),
        pytest.param({"X-Forwarded-Method": "PUT", "Origin": EVIL}, 403, id="traefik-put-foreign"),
        pytest.param(
            {"X-Original-Method": "PATCH", "Sec-Fetch-Site": "cross-site"}, 403, id="cross-site"
        ),
        pytest.param({"X-Original-Method": "GET", "Origin": EVIL}, 200, id="safe-method"),
        pytest.param({"X-Original-Method": "POST", **SAME_ORIGIN}, 200, id="same-origin"),
    ],
)
def test_forward_auth_applies_the_csrf_rule_to_the_original_request(
    edge: Edge, issuer: DevIssuer, secrets: Secrets, headers: dict[str, str], status: int
) -> None:
    with edge.client() as client:
        response = client.get(
            "/auth/verify", headers={**headers, "Cookie": token_cookie_header(issuer, secrets)}
        )

    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["code"] == "csrf_rejected"
        assert "x-auth-user" not in response.headers


def test_forward_auth_with_a_bearer_token_is_not_subject_to_csrf(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    access = secrets.token(issuer.access_token("ada"))
    with edge.client() as client:
        response = client.get(
            "/auth/verify",
            headers={
                "Authorization": f"Bearer {access}",
                "X-Original-Method": "POST",
                "Origin": EVIL,
            },
        )

    assert response.status_code == 200


# -- 8. tokens in query strings ------------------------------------------------------------------


@pytest.mark.parametrize("param", ["access_token", "id_token", "token", "jwt"])
def test_a_token_in_the_query_string_is_ignored_over_http(
    edge: Edge, issuer: DevIssuer, secrets: Secrets, param: str
) -> None:
    access = secrets.token(issuer.access_token("ada"))
    with edge.client() as client:
        api = client.get(f"/api/session?{param}={access}")
        page = client.get(f"/?{param}={access}")
        verify = client.get(f"/auth/verify?{param}={access}")

    assert api.status_code == 401
    assert "Signed in as" not in page.text
    assert "You are not signed in" in page.text
    assert verify.status_code == 401


@pytest.mark.parametrize("param", ["access_token", "token", "jwt"])
def test_a_token_in_the_query_string_refuses_the_websocket_upgrade(
    edge: Edge, issuer: DevIssuer, secrets: Secrets, param: str
) -> None:
    access = secrets.token(issuer.access_token("ada"))
    cookie = token_cookie_header(issuer, secrets)
    for headers in ({}, {"Cookie": cookie, **SAME_ORIGIN}):
        with (
            edge.client() as client,
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect(f"{WS}?{param}={access}", headers=headers),
        ):
            pass
        assert denied.value.status_code == 401


# -- 9. no stack traces in error responses -------------------------------------------------------


def test_error_responses_carry_no_stack_trace_or_path(
    make_edge: Any, issuer: DevIssuer, secrets: Secrets
) -> None:
    edge = make_edge()
    assert edge.app.debug is False

    async def boom(request: Request) -> Response:
        raise RuntimeError(f"failed in {__file__} while handling {request.url.path}")

    edge.app.add_route("/boom", boom, methods=["GET", "POST"])
    garbage = "eyJhbGciOiJSUzI1NiJ9.not-base64!.sig"
    cookie = token_cookie_header(issuer, secrets)
    with edge.client(raise_server_exceptions=False) as client:
        answers = [
            client.get("/boom"),
            client.get("/boom", headers={"Cookie": cookie}),
            client.post("/boom", headers={"Cookie": cookie, **SAME_ORIGIN}),
            client.get("/nope"),
            client.put("/api/session"),
            client.get("/api/session", headers={"Authorization": f"Bearer {garbage}"}),
            client.get("/api/session", headers={"Authorization": "Bearer " + "a" * 20_000}),
            client.get("/api/orgs/initech/projects", headers={"Cookie": cookie}),
            client.post("/auth/refresh", headers={"Cookie": cookie, "Origin": EVIL}),
            client.post("/auth/refresh", headers=SAME_ORIGIN),
            client.get("/auth/callback?state=x&code=y"),
            client.get("/auth/login?next=//evil.example"),
            client.get("/auth/verify?role=emperor", headers={"Cookie": cookie}),
        ]

    statuses = [response.status_code for response in answers]
    assert statuses[:3] == [500, 500, 500]
    assert all(status >= 400 for status in statuses), statuses
    for response in answers:
        assert "Traceback" not in response.text
        assert __file__ not in response.text
        assert "RuntimeError" not in response.text


def test_keys_stale_and_an_unreachable_issuer_answer_without_a_trace(
    make_edge: Any, issuer: DevIssuer, secrets: Secrets
) -> None:
    down = httpx2.MockTransport(lambda request: httpx2.Response(500, text="upstream exploded"))
    edge = make_edge(transport=down, auth={"jwks": None}, keys={"remote": "unknown-kid"})
    access = secrets.token(issuer.access_token("ada"))
    with edge.client() as client:
        stale = client.get("/api/session", headers={"Authorization": f"Bearer {access}"})
        ready = client.get("/readyz")

    assert stale.status_code == 503
    assert stale.json()["code"] == "keys_stale"
    assert ready.status_code == 503
    assert "upstream exploded" not in stale.text


# -- 10. the authorization seams (issue 20) -----------------------------------------------------


def projects_app(config: AppConfig) -> Starlette:
    """Both decorator orders on one DELETE route each, as an app would write them."""
    owners = {"prj_web": "org_acme", "prj_bill": "org_globex"}

    async def lookup(project_id: str) -> str | None:
        return owners.get(project_id)

    @requires_org(role="owner", path_param="org")
    @requires_project("project_id", lookup=lookup)
    async def org_outer(request: Request) -> Response:
        return JSONResponse({"deleted": request.state.project_id})

    @requires_project("project_id", lookup=lookup)
    @requires_org(role="owner", path_param="org")
    async def project_outer(request: Request) -> Response:
        return JSONResponse({"deleted": request.state.project_id})

    return Starlette(
        routes=[
            Route("/api/a/{org}/projects/{project_id}", org_outer, methods=["DELETE"]),
            Route("/api/b/{org}/projects/{project_id}", project_outer, methods=["DELETE"]),
        ],
        middleware=[Middleware(JWTSessionMiddleware, config=config)],
    )


@pytest.mark.parametrize("order", ["a", "b"])
def test_an_owner_of_one_org_cannot_reach_another_orgs_project_through_it(
    issuer: DevIssuer, secrets: Secrets, responses: list[Recorded], order: str
) -> None:
    config = edge_config(issuer)
    app = Recorder(projects_app(config), config, responses, secrets)
    # Ada owns acme and is a member of globex; prj_bill belongs to globex.
    cookie = token_cookie_header(issuer, secrets)
    headers = {"Cookie": cookie, **SAME_ORIGIN}

    with TestClient(app, base_url=APP) as client:
        through_acme = client.delete(f"/api/{order}/acme/projects/prj_bill", headers=headers)
        own = client.delete(f"/api/{order}/acme/projects/prj_web", headers=headers)
        through_globex = client.delete(f"/api/{order}/globex/projects/prj_bill", headers=headers)

    assert through_acme.status_code == 403
    assert through_acme.json()["code"] == "project_forbidden"
    assert own.json() == {"deleted": "prj_web"}
    assert through_globex.json()["code"] == "role_insufficient"


def test_an_id_token_listing_the_api_is_refused_as_a_bearer(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    token = secrets.token(issuer.id_token("ada", audience=["web", "api"], azp="web", typ="JWT"))

    with edge.client() as client:
        api = client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
        verdict = client.get("/auth/verify", headers={"Authorization": f"Bearer {token}"})

    assert api.status_code == 401
    assert api.json()["code"] == "token_type_invalid"
    assert verdict.status_code == 401


def test_a_token_cookie_sent_twice_is_no_credential_and_is_cleared(
    edge: Edge, issuer: DevIssuer, secrets: Secrets
) -> None:
    ada = token_cookie_header(issuer, secrets)
    mallory = secrets.token(issuer.access_token("mallory"))
    tossed = f"jwtedge_access={mallory}; {ada}"

    with edge.client() as client:
        page = client.get("/account", headers={"Cookie": tossed})
        api = client.get("/api/session", headers={"Cookie": tossed})
        verdict = client.get("/auth/verify", headers={"Cookie": tossed})
        refresh = client.post("/auth/refresh", headers={"Cookie": tossed, "Origin": EVIL})
        metrics = client.get("/metrics").text

    assert page.status_code == 302
    assert api.status_code == 401
    assert api.json()["code"] == "token_malformed"
    assert verdict.status_code == 401
    # No cookie is trusted, so not the refresh cookie either: nothing reaches the issuer.
    assert refresh.status_code == 401
    assert refresh.json()["message"] == "this request carries no refresh cookie"
    for response in (page, api):
        cookies = [parse_set_cookie(value) for value in response.headers.get_list("set-cookie")]
        # Every token cookie the request carried is deleted; none is set.
        assert sorted(name for name, _, _ in cookies) == sorted(TOKEN_NAMES)
        assert {attributes["max-age"] for _, _, attributes in cookies} == {"0"}
    assert "jwtedge_duplicate_token_cookies_total 4.0" in metrics
