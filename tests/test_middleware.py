"""JWTSessionMiddleware through the real ASGI stack (httpx2 ASGITransport, TestClient)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from verifier.config import AppConfig
from verifier.cookies import CHUNK_SIZE, CookieJar, TokenSet
from verifier.errors import VerifierError
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.stats import MiddlewareStats
from verifier.testing import DevIssuer

LOOPBACK = "http://127.0.0.1"
PLAIN = {"access": "jwtedge_access", "id": "jwtedge_id", "refresh": "jwtedge_refresh"}
HOST = {kind: f"__Host-{name}" for kind, name in PLAIN.items()}
ORGS = [
    {"id": "org_1", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
    {"id": "org_2", "slug": "globex", "name": "Globex Corporation", "role": "member"},
]
PROJECTS = [
    {"id": "prj_1", "slug": "website", "organizationId": "org_1"},
    {"id": "prj_2", "slug": "billing", "organizationId": "org_2"},
]
SPOOFED = {
    "X-Auth-User": "admin",
    "X-User-Id": "admin",
    "X-Forwarded-User": "admin",
    "X-Auth-Email": "admin@example.com",
}
UNSAFE_METHODS = ["POST", "PUT", "PATCH", "DELETE"]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


# -- the inner app ----------------------------------------------------------


async def whoami(request: Request) -> JSONResponse:
    session = get_session(request)
    return JSONResponse(
        {
            "authenticated": request.user.is_authenticated,
            "user": request.user.identity,
            "scopes": list(request.auth.scopes),
            "session": session.to_dict() if session is not None else None,
            "cookie": request.headers.get("cookie"),
            "headers": dict(request.headers.items()),
        }
    )


@requires("authenticated")
async def private(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.user.identity}")


async def ws_whoami(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(
        {
            "authenticated": websocket.user.is_authenticated,
            "cookie": websocket.headers.get("cookie"),
            "x-auth-user": websocket.headers.get("x-auth-user"),
        }
    )
    await websocket.close()


ROUTES = [
    Route("/private", private),
    WebSocketRoute("/ws", ws_whoami),
    Route("/{path:path}", whoami, methods=ALL_METHODS),
]


def make_app(config: AppConfig, **kwargs: Any) -> JWTSessionMiddleware:
    return JWTSessionMiddleware(Starlette(routes=ROUTES), config, **kwargs)


def build_config(
    issuer: DevIssuer, *, auth: Mapping[str, Any] | None = None, **sections: Any
) -> AppConfig:
    """An AppConfig over the issuer's keys, with any other sections set."""
    values: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": "api",
        "client_id": "web",
        "jwks": parse_jwks(issuer.jwks()),
    }
    values.update(auth or {})
    return AppConfig(auth=values, **sections)


def client_for(app: Any, base_url: str = LOOPBACK) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base_url)


def cookie_header(pairs: Mapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in pairs.items())


def token_cookies(
    access: str | None, id_token: str | None = None, names: Mapping[str, str] = PLAIN
) -> dict[str, str]:
    pairs = {}
    if access is not None:
        pairs[names["access"]] = access
    if id_token is not None:
        pairs[names["id"]] = id_token
    return pairs


def cookie_pairs_from_set_cookie(set_cookies: list[str]) -> dict[str, str]:
    """What a browser would send back after these ``Set-Cookie`` values."""
    pairs = {}
    for header in set_cookies:
        if "Max-Age=0" in header:
            continue
        name, _, value = header.split(";", 1)[0].partition("=")
        pairs[name] = value
    return pairs


def big_access_token(issuer: DevIssuer, sub: str, *, longer_than: int) -> tuple[str, list[Any]]:
    """An access token made long by many organizations."""
    count = 0
    while True:
        count += 8
        orgs = [
            {
                "id": f"org_{i:04d}",
                "slug": f"organization-{i:04d}",
                "name": f"Organization number {i:04d} with a long display name",
                "role": "member",
            }
            for i in range(count)
        ]
        token = issuer.access_token(sub, organizations=orgs)
        if len(token) > longer_than:
            return token, orgs


# -- invalid tokens, one per code -------------------------------------------


def _claims(issuer: DevIssuer) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer.issuer, "sub": "u1", "aud": "api", "iat": now, "exp": now + 300}


def _bad_signature(issuer: DevIssuer) -> str:
    header, payload, _ = issuer.access_token("u1").split(".")
    other_signature = issuer.access_token("u2").split(".")[2]
    return f"{header}.{payload}.{other_signature}"


INVALID: dict[str, Callable[[DevIssuer], str]] = {
    "token_malformed": lambda issuer: "not-a-jwt",
    "token_expired": lambda issuer: issuer.access_token("u1", iat=int(time.time()) - 7200),
    "signature_invalid": _bad_signature,
    "audience_mismatch": lambda issuer: issuer.access_token("u1", audience="someone-else"),
    "issuer_mismatch": lambda issuer: issuer.access_token(
        "u1", extra={"iss": "https://evil.example"}
    ),
    "algorithm_not_allowed": lambda issuer: issuer.sign(
        _claims(issuer), header={"alg": "none", "typ": "at+jwt"}, alg="none"
    ),
    "key_not_found": lambda issuer: issuer.sign(
        _claims(issuer),
        header={"alg": "RS256", "kid": "no-such-kid", "typ": "at+jwt"},
        kid=issuer.kid,
    ),
}


# -- fixtures ---------------------------------------------------------------


@pytest.fixture
def config(issuer: DevIssuer) -> AppConfig:
    return build_config(issuer)


@pytest.fixture
def stats() -> MiddlewareStats:
    return MiddlewareStats()


@pytest.fixture
def app(config: AppConfig, stats: MiddlewareStats) -> JWTSessionMiddleware:
    return make_app(config, stats=stats)


@pytest.fixture
async def client(app: JWTSessionMiddleware) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
def access(issuer: DevIssuer) -> str:
    return issuer.access_token(
        "u1", organizations=ORGS, projects=PROJECTS, scope="openid profile read:projects"
    )


@pytest.fixture
def id_token(issuer: DevIssuer) -> str:
    return issuer.id_token("u1", email="ada@example.com", name="Ada Lovelace")


@pytest.fixture
def cookies(access: str, id_token: str) -> str:
    return cookie_header(token_cookies(access, id_token))


# -- sessions from credentials ----------------------------------------------


async def test_cookies_give_a_session_with_user_organizations_and_projects(
    client: httpx2.AsyncClient, cookies: str
) -> None:
    response = await client.get("/dashboard", headers={"Cookie": cookies})

    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is True
    assert body["user"] == "u1"
    assert body["scopes"] == ["authenticated", "openid", "profile", "read:projects"]
    session = body["session"]
    assert session["user"] == {
        "id": "u1",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "picture": None,
        "email_verified": True,
    }
    assert session["organizations"] == [
        {**ORGS[0], "roles": ["owner"], "permissions": []},
        {**ORGS[1], "roles": ["member"], "permissions": []},
    ]
    assert session["projects"] == [
        {"id": "prj_1", "slug": "website", "organization_id": "org_1"},
        {"id": "prj_2", "slug": "billing", "organization_id": "org_2"},
    ]
    assert session["scopes"] == ["openid", "profile", "read:projects"]


async def test_bearer_header_gives_a_session(client: httpx2.AsyncClient, access: str) -> None:
    response = await client.get("/api/me", headers={"Authorization": f"Bearer {access}"})

    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is True
    assert body["user"] == "u1"
    assert [org["name"] for org in body["session"]["organizations"]] == [
        "Acme Inc.",
        "Globex Corporation",
    ]


async def test_bearer_wins_over_cookies_when_both_are_present(
    client: httpx2.AsyncClient, issuer: DevIssuer
) -> None:
    from_cookie = issuer.access_token("cookie-user")
    from_bearer = issuer.access_token("bearer-user")

    response = await client.get(
        "/",
        headers={
            "Authorization": f"Bearer {from_bearer}",
            "Cookie": cookie_header(token_cookies(from_cookie, issuer.id_token("cookie-user"))),
        },
    )

    assert response.json()["user"] == "bearer-user"


async def test_chunked_cookies_give_a_session(
    client: httpx2.AsyncClient, config: AppConfig, issuer: DevIssuer
) -> None:
    access, orgs = big_access_token(issuer, "u1", longer_than=CHUNK_SIZE)
    set_cookies = CookieJar(config.cookies).set_cookies(
        TokenSet(access=access, id=issuer.id_token("u1")), secure=False
    )
    pairs = cookie_pairs_from_set_cookie(set_cookies)
    assert {"jwtedge_access.0", "jwtedge_access.1"} <= set(pairs)

    response = await client.get("/", headers={"Cookie": cookie_header(pairs)})

    body = response.json()
    assert body["authenticated"] is True
    assert [org["name"] for org in body["session"]["organizations"]] == [
        org["name"] for org in orgs
    ]


async def test_a_missing_middle_chunk_makes_the_request_anonymous(issuer: DevIssuer) -> None:
    config = build_config(issuer, auth={"max_token_bytes": 16384})
    access, _ = big_access_token(issuer, "u1", longer_than=2 * CHUNK_SIZE)
    pairs = cookie_pairs_from_set_cookie(
        CookieJar(config.cookies).set_cookies(TokenSet(access=access), secure=False)
    )
    assert {"jwtedge_access.0", "jwtedge_access.1", "jwtedge_access.2"} <= set(pairs)
    torn = {name: value for name, value in pairs.items() if name != "jwtedge_access.1"}

    async with client_for(make_app(config)) as client:
        whole = await client.get("/", headers={"Cookie": cookie_header(pairs)})
        missing = await client.get("/", headers={"Cookie": cookie_header(torn)})

    assert whole.json()["authenticated"] is True
    assert missing.status_code == 200
    assert missing.json()["authenticated"] is False


async def test_no_credentials_give_an_anonymous_user_with_no_scopes(
    client: httpx2.AsyncClient,
) -> None:
    response = await client.get("/")

    body = response.json()
    assert response.status_code == 200
    assert body["authenticated"] is False
    assert body["scopes"] == []
    assert body["session"] is None


async def test_cookies_over_https_use_host_prefixed_names(
    app: JWTSessionMiddleware, access: str, id_token: str
) -> None:
    async with client_for(app, "https://app.example.com") as client:
        prefixed = await client.get(
            "/", headers={"Cookie": cookie_header(token_cookies(access, id_token, HOST))}
        )
        plain = await client.get(
            "/", headers={"Cookie": cookie_header(token_cookies(access, id_token, PLAIN))}
        )

    assert prefixed.json()["authenticated"] is True
    # A cookie without the prefix may have been planted by a sibling host or over http.
    assert plain.json()["authenticated"] is False


# -- invalid tokens -----------------------------------------------------------


@pytest.mark.parametrize("code", list(INVALID))
async def test_invalid_token_in_cookies_makes_a_page_anonymous(
    client: httpx2.AsyncClient, issuer: DevIssuer, code: str
) -> None:
    token = INVALID[code](issuer)

    response = await client.get("/page", headers={"Cookie": cookie_header(token_cookies(token))})

    assert response.status_code == 200
    assert response.json()["authenticated"] is False


@pytest.mark.parametrize("code", list(INVALID))
async def test_invalid_token_in_cookies_answers_401_under_api(
    client: httpx2.AsyncClient, issuer: DevIssuer, code: str
) -> None:
    token = INVALID[code](issuer)

    response = await client.get(
        "/api/projects", headers={"Cookie": cookie_header(token_cookies(token))}
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = response.json()
    assert body["error"] == "invalid_token"
    assert body["code"] == code


@pytest.mark.parametrize("code", list(INVALID))
async def test_bearer_header_with_invalid_token_answers_401_on_a_page_path(
    client: httpx2.AsyncClient, issuer: DevIssuer, code: str
) -> None:
    token = INVALID[code](issuer)

    response = await client.get("/page", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["code"] == code


async def test_on_error_replaces_the_401_response(config: AppConfig, issuer: DevIssuer) -> None:
    seen: list[tuple[str, str]] = []

    def on_error(conn: HTTPConnection, exc: VerifierError) -> Response:
        seen.append((conn.url.path, exc.code))
        return JSONResponse({"custom": exc.code}, status_code=418)

    expired = INVALID["token_expired"](issuer)
    async with client_for(make_app(config, on_error=on_error)) as client:
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {expired}"})

    assert response.status_code == 418
    assert response.json() == {"custom": "token_expired"}
    assert seen == [("/api/me", "token_expired")]


# -- excluded paths and request hygiene --------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/static/x"])
async def test_excluded_paths_are_unauthenticated_but_still_cleaned(
    client: httpx2.AsyncClient, access: str, id_token: str, path: str
) -> None:
    pairs = {"theme": "dark", **token_cookies(access, id_token), "lang": "en"}

    response = await client.get(path, headers={"Cookie": cookie_header(pairs), **SPOOFED})

    body = response.json()
    assert response.status_code == 200
    assert body["authenticated"] is False
    assert body["cookie"] == "theme=dark; lang=en"
    for name in SPOOFED:
        assert name.lower() not in body["headers"]


async def test_a_path_that_only_starts_like_an_excluded_one_is_authenticated(
    client: httpx2.AsyncClient, cookies: str
) -> None:
    response = await client.get("/static-evil", headers={"Cookie": cookies})

    assert response.json()["authenticated"] is True


async def test_spoofed_identity_headers_are_stripped_on_normal_paths(
    client: httpx2.AsyncClient, cookies: str, stats: MiddlewareStats
) -> None:
    response = await client.get("/", headers={"Cookie": cookies, **SPOOFED, "X-Request-Id": "r1"})

    body = response.json()
    assert body["authenticated"] is True
    for name in SPOOFED:
        assert name.lower() not in body["headers"]
    assert body["headers"]["x-request-id"] == "r1"
    assert stats.headers_stripped == len(SPOOFED)


async def test_token_cookies_are_not_forwarded_to_the_app(
    client: httpx2.AsyncClient, access: str, id_token: str
) -> None:
    only_tokens = await client.get("/", headers={"Cookie": cookie_header(token_cookies(access))})
    mixed = await client.get(
        "/",
        headers={"Cookie": cookie_header({**token_cookies(access, id_token), "theme": "dark"})},
    )

    assert only_tokens.json()["authenticated"] is True
    assert only_tokens.json()["cookie"] is None
    assert mixed.json()["cookie"] == "theme=dark"


async def test_token_cookies_are_forwarded_when_cookies_forward_is_on(
    issuer: DevIssuer, access: str
) -> None:
    config = build_config(issuer, cookies={"forward": True})
    async with client_for(make_app(config)) as client:
        response = await client.get(
            "/", headers={"Cookie": cookie_header({"theme": "dark", "jwtedge_access": access})}
        )

    body = response.json()
    assert body["authenticated"] is True
    assert body["cookie"] == f"theme=dark; jwtedge_access={access}"


async def test_tokens_in_the_query_string_are_ignored(
    client: httpx2.AsyncClient, access: str, id_token: str
) -> None:
    page = await client.get("/", params={"access_token": access, "id_token": id_token})
    api = await client.get("/api/me", params={"access_token": access})

    assert page.status_code == 200
    assert page.json()["authenticated"] is False
    assert api.status_code == 200
    assert api.json()["authenticated"] is False


# -- CSRF ---------------------------------------------------------------------


@pytest.mark.parametrize("method", UNSAFE_METHODS)
async def test_cookie_authenticated_unsafe_method_without_origin_is_rejected(
    client: httpx2.AsyncClient, cookies: str, method: str, stats: MiddlewareStats
) -> None:
    response = await client.request(method, "/items", headers={"Cookie": cookies})

    assert response.status_code == 403
    assert response.json()["code"] == "csrf_rejected"
    assert stats.csrf_rejected == 1


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://127.0.0.1.evil.example",
        "http://127.0.0.1:8080",
        "https://127.0.0.1",
        "null",
    ],
)
@pytest.mark.parametrize("method", UNSAFE_METHODS)
async def test_cookie_authenticated_unsafe_method_with_cross_site_origin_is_rejected(
    client: httpx2.AsyncClient, cookies: str, method: str, origin: str
) -> None:
    response = await client.request(method, "/items", headers={"Cookie": cookies, "Origin": origin})

    assert response.status_code == 403
    assert response.json()["code"] == "csrf_rejected"


@pytest.mark.parametrize("method", UNSAFE_METHODS)
async def test_cookie_authenticated_unsafe_method_with_same_origin_is_allowed(
    client: httpx2.AsyncClient, cookies: str, method: str
) -> None:
    response = await client.request(
        method, "/items", headers={"Cookie": cookies, "Origin": "http://127.0.0.1"}
    )

    assert response.status_code == 200
    assert response.json()["authenticated"] is True


async def test_same_origin_check_over_https_with_host_prefixed_cookies(
    app: JWTSessionMiddleware, access: str, id_token: str
) -> None:
    cookies = cookie_header(token_cookies(access, id_token, HOST))
    async with client_for(app, "https://app.example.com") as client:
        same = await client.post(
            "/items", headers={"Cookie": cookies, "Origin": "https://app.example.com"}
        )
        downgraded = await client.post(
            "/items", headers={"Cookie": cookies, "Origin": "http://app.example.com"}
        )

    assert same.status_code == 200
    assert same.json()["authenticated"] is True
    assert downgraded.status_code == 403


@pytest.mark.parametrize("method", UNSAFE_METHODS)
async def test_sec_fetch_site_same_origin_without_origin_is_allowed(
    client: httpx2.AsyncClient, cookies: str, method: str
) -> None:
    response = await client.request(
        method, "/items", headers={"Cookie": cookies, "Sec-Fetch-Site": "same-origin"}
    )

    assert response.status_code == 200
    assert response.json()["authenticated"] is True


@pytest.mark.parametrize("site", ["cross-site", "same-site", "none"])
async def test_sec_fetch_site_other_than_same_origin_is_rejected(
    client: httpx2.AsyncClient, cookies: str, site: str
) -> None:
    response = await client.post("/items", headers={"Cookie": cookies, "Sec-Fetch-Site": site})

    assert response.status_code == 403


async def test_csrf_rule_applies_on_excluded_paths_too(
    client: httpx2.AsyncClient, cookies: str
) -> None:
    response = await client.post("/healthz", headers={"Cookie": cookies})

    assert response.status_code == 403
    assert response.json()["code"] == "csrf_rejected"


async def test_cookie_authenticated_get_without_origin_is_allowed(
    client: httpx2.AsyncClient, cookies: str
) -> None:
    response = await client.get("/items", headers={"Cookie": cookies})

    assert response.status_code == 200
    assert response.json()["authenticated"] is True


async def test_bearer_authenticated_post_without_origin_is_allowed(
    client: httpx2.AsyncClient, access: str
) -> None:
    response = await client.post("/api/items", headers={"Authorization": f"Bearer {access}"})

    assert response.status_code == 200
    assert response.json()["authenticated"] is True


async def test_anonymous_post_without_origin_is_not_a_csrf_case(
    client: httpx2.AsyncClient,
) -> None:
    response = await client.post("/items", headers={"Cookie": "theme=dark"})

    assert response.status_code == 200
    assert response.json()["authenticated"] is False


# -- Starlette integration ------------------------------------------------------


def test_requires_authenticated_is_403_anonymous_and_200_signed_in(
    config: AppConfig, access: str, id_token: str
) -> None:
    with TestClient(make_app(config)) as client:
        anonymous = client.get("/private")
        signed_in = client.get(
            "/private", headers={"Cookie": cookie_header(token_cookies(access, id_token, HOST))}
        )

    assert anonymous.status_code == 403
    assert signed_in.status_code == 200
    assert signed_in.text == "hello u1"


def test_testclient_over_a_non_loopback_host_reads_host_prefixed_cookies(
    config: AppConfig, access: str, id_token: str
) -> None:
    with TestClient(make_app(config)) as client:
        response = client.get(
            "/", headers={"Cookie": cookie_header(token_cookies(access, id_token, HOST))}
        )

    assert response.json()["authenticated"] is True


def test_lifespan_passes_through_the_middleware(config: AppConfig) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    inner = Starlette(routes=ROUTES, lifespan=lifespan)
    with TestClient(JWTSessionMiddleware(inner, config)) as client:
        assert events == ["startup"]
        assert client.get("/").status_code == 200

    assert events == ["startup", "shutdown"]


def test_websocket_upgrade_without_token_passes_through_anonymous_and_cleaned(
    config: AppConfig,
) -> None:
    # Authenticated upgrades belong to the WebSocket layer's own tests; here the
    # scope only has to reach the app, anonymous, with the request hygiene applied.
    with (
        TestClient(make_app(config)) as client,
        client.websocket_connect("/ws", headers={"Cookie": "theme=dark", **SPOOFED}) as websocket,
    ):
        message = websocket.receive_json()

    assert message == {"authenticated": False, "cookie": "theme=dark", "x-auth-user": None}


def test_get_session_without_the_middleware_names_it() -> None:
    with (
        TestClient(Starlette(routes=ROUTES)) as client,
        pytest.raises(RuntimeError, match="JWTSessionMiddleware"),
    ):
        client.get("/")


# -- stats ----------------------------------------------------------------------

EXPECTED_COUNTS = {
    "authenticated": 2,
    # No credentials (twice) and the expired page request.
    "anonymous": 3,
    "rejected": {"token_expired": 2, "signature_invalid": 1},
    "csrf_rejected": 1,
    "headers_stripped": 2,
}


async def test_stats_count_what_the_middleware_did(
    client: httpx2.AsyncClient,
    stats: MiddlewareStats,
    issuer: DevIssuer,
    cookies: str,
    access: str,
) -> None:
    expired = cookie_header(token_cookies(INVALID["token_expired"](issuer)))
    bad_signature = INVALID["signature_invalid"](issuer)

    await client.get("/", headers={"Cookie": cookies})
    await client.get("/api/me", headers={"Authorization": f"Bearer {access}"})
    await client.get("/")
    await client.get("/page", headers={"Cookie": expired})
    await client.get("/api/me", headers={"Cookie": expired})
    await client.get("/api/me", headers={"Authorization": f"Bearer {bad_signature}"})
    await client.post("/items", headers={"Cookie": cookies})
    await client.get("/", headers={"X-Auth-User": "admin", "X-User-Id": "1"})

    snapshot = stats.snapshot()
    assert {name: snapshot[name] for name in EXPECTED_COUNTS} == EXPECTED_COUNTS
