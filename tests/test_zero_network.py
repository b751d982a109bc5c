"""Page loads make zero outbound network calls, cold start included."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware
from verifier.stats import MiddlewareStats
from verifier.testing import DevIssuer

REQUESTS = 1_000
ORGS = [{"id": "org_1", "slug": "acme", "name": "Acme Inc.", "role": "owner"}]
PROJECTS = [{"id": "prj_1", "slug": "website", "organizationId": "org_1"}]


@pytest.fixture
def connection_attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Refuse and record every way of opening an outbound connection."""
    attempts: list[tuple[str, str]] = []

    def refuse(name: str) -> Callable[..., Any]:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            attempts.append((name, repr(args[-1] if args else kwargs)))
            raise AssertionError(f"network call attempted: {name}")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    return attempts


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(
        {"authenticated": request.user.is_authenticated, "user": request.user.identity}
    )


def test_the_guard_records_and_refuses_connection_attempts(
    connection_attempts: list[tuple[str, str]],
) -> None:
    with pytest.raises(AssertionError, match="network call"):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as sock, pytest.raises(AssertionError, match="network call"):
        sock.connect(("127.0.0.1", 9))
    with pytest.raises(AssertionError, match="network call"):
        socket.getaddrinfo("example.com", 443)

    assert [name for name, _ in connection_attempts] == [
        "socket.create_connection",
        "socket.connect",
        "socket.getaddrinfo",
    ]


async def test_a_cold_app_serves_a_thousand_authenticated_requests_without_network(
    issuer: DevIssuer, connection_attempts: list[tuple[str, str]]
) -> None:
    users = [f"user-{n}" for n in range(10)]
    cookies = [
        f"jwtedge_access={issuer.access_token(sub, organizations=ORGS, projects=PROJECTS)}; "
        f"jwtedge_id={issuer.id_token(sub)}"
        for sub in users
    ]

    # Cold: a new config, verifier and middleware, all built under the guard.
    config = AppConfig(
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        keys={"remote": "never"},
    )
    stats = MiddlewareStats()
    app = JWTSessionMiddleware(Starlette(routes=[Route("/", whoami)]), config, stats=stats)

    statuses: list[int] = []
    seen_users: set[str] = set()
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for n in range(REQUESTS):
            response = await client.get("/", headers={"Cookie": cookies[n % len(cookies)]})
            statuses.append(response.status_code)
            body = response.json()
            assert body["authenticated"] is True
            seen_users.add(body["user"])

    assert statuses == [200] * REQUESTS
    assert seen_users == set(users)
    assert stats.authenticated == REQUESTS
    assert connection_attempts == []
