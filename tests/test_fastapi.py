"""JWTSessionMiddleware under FastAPI via ``app.add_middleware``."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from tests.conftest import make_config
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.testing import DevIssuer

ORGS = [{"id": "org_1", "slug": "acme", "name": "Acme Inc.", "role": "admin"}]


@pytest.fixture
def api(issuer: DevIssuer) -> FastAPI:
    app = FastAPI()
    app.add_middleware(JWTSessionMiddleware, config=make_config(issuer))

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        session = get_session(request)
        return {
            "authenticated": request.user.is_authenticated,
            "user": request.user.identity,
            "scopes": list(request.auth.scopes),
            "organizations": [org.name for org in session.organizations] if session else [],
        }

    return app


def test_fastapi_route_reads_request_user_and_auth(api: FastAPI, issuer: DevIssuer) -> None:
    access = issuer.access_token("u1", organizations=ORGS, scope="openid read")

    with TestClient(api) as client:
        response = client.get("/me", headers={"Authorization": f"Bearer {access}"})

    assert response.status_code == 200
    assert response.json() == {
        "authenticated": True,
        "user": "u1",
        "scopes": ["authenticated", "openid", "read"],
        "organizations": ["Acme Inc."],
    }


async def test_fastapi_route_reads_a_cookie_session_over_asgi_transport(
    api: FastAPI, issuer: DevIssuer
) -> None:
    cookies = f"jwtedge_access={issuer.access_token('u1')}; jwtedge_id={issuer.id_token('u1')}"
    transport = httpx2.ASGITransport(app=api)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/me", headers={"Cookie": cookies})

    assert response.json()["authenticated"] is True
    assert response.json()["user"] == "u1"


def test_fastapi_anonymous_request_is_not_authenticated(api: FastAPI) -> None:
    with TestClient(api) as client:
        response = client.get("/me")

    assert response.status_code == 200
    assert response.json() == {
        "authenticated": False,
        "user": "",
        "scopes": [],
        "organizations": [],
    }
