"""Authorization through real apps: Starlette decorators and FastAPI dependencies.

Both apps sit behind ``JWTSessionMiddleware`` and are called with real tokens
from the ``issuer`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from tests.conftest import make_config
from verifier.authz import requires_org, requires_project, requires_scopes
from verifier.fastapi import (
    current_session,
    install_error_handler,
    org_context,
    project_access,
    require_scopes,
)
from verifier.middleware import JWTSessionMiddleware
from verifier.session import Organization, Session
from verifier.testing import DevIssuer

ACME = {"id": "org-a", "slug": "acme", "name": "Acme", "role": "admin"}
GLOBEX = {"id": "org-b", "slug": "globex", "name": "Globex", "role": "member"}
ACME_PROJECT = {"id": "p-a", "slug": "rocket", "organizationId": "org-a"}
#: The app's own record of which organization owns which project.
PROJECT_OWNERS = {"p-a": "org-a", "p-a2": "org-a", "p-b": "org-b", "p-c": "org-c"}


async def lookup(project_id: str) -> str | None:
    return PROJECT_OWNERS.get(project_id)


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


# -- Starlette ----------------------------------------------------------------------


@requires_org()
async def current_org(request: Request) -> JSONResponse:
    org: Organization = request.state.org
    return JSONResponse({"id": org.id, "slug": org.slug, "role": org.role})


@requires_org("admin", path_param="org")
async def org_settings(request: Request) -> JSONResponse:
    return JSONResponse({"slug": request.state.org.slug})


@requires_org()
@requires_project(lookup=lookup)
async def org_project(request: Request) -> JSONResponse:
    return JSONResponse({"org": request.state.org.slug, "project": request.state.project_id})


@requires_project(lookup=lookup)
async def project(request: Request) -> JSONResponse:
    return JSONResponse({"project": request.state.project_id})


@requires_scopes("write:projects")
async def write(request: Request) -> PlainTextResponse:
    return PlainTextResponse("written")


@requires_scopes("read:projects")
def sync_read(request: Request) -> PlainTextResponse:
    return PlainTextResponse("read")


@requires_org()
async def org_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"slug": websocket.state.org.slug})
    await websocket.close()


@pytest.fixture
def starlette_client(issuer: DevIssuer) -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Route("/api/org", current_org),
            Route("/api/orgs/{org}/settings", org_settings),
            Route("/api/org-projects/{project_id}", org_project),
            Route("/api/projects/{project_id}", project),
            Route("/api/write", write, methods=["POST"]),
            Route("/api/read", sync_read),
            WebSocketRoute("/ws/org", org_socket),
        ],
        middleware=[Middleware(JWTSessionMiddleware, config=make_config(issuer))],
    )
    with TestClient(app, base_url="https://testserver") as client:
        yield client


def test_starlette_anonymous_caller_gets_401_token_missing(starlette_client: TestClient) -> None:
    for path in ("/api/org", "/api/projects/p-a", "/api/read"):
        response = starlette_client.get(path)

        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert response.json()["code"] == "token_missing"
        assert response.headers["www-authenticate"] == "Bearer"


def test_starlette_single_org_lands_in_request_state(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])

    response = starlette_client.get("/api/org", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"id": "org-a", "slug": "acme", "role": "admin"}


def test_starlette_x_org_slug_selects_the_org(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = starlette_client.get("/api/org", headers=bearer(token, **{"X-Org-Slug": "globex"}))

    assert response.status_code == 200
    assert response.json()["id"] == "org-b"


def test_starlette_x_org_id_selects_the_org(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = starlette_client.get("/api/org", headers=bearer(token, **{"X-Org-Id": "org-a"}))

    assert response.json()["slug"] == "acme"


def test_starlette_active_org_claim_selects_the_org(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX], extra={"active_org": "globex"})

    assert starlette_client.get("/api/org", headers=bearer(token)).json()["slug"] == "globex"


def test_starlette_several_orgs_without_a_choice_is_400_org_required(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = starlette_client.get("/api/org", headers=bearer(token))

    assert response.status_code == 400
    assert response.json()["code"] == "org_required"
    assert "acme, globex" in response.json()["message"]
    assert "www-authenticate" not in response.headers


def test_starlette_x_org_slug_naming_a_non_membership_is_403_org_forbidden(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])

    response = starlette_client.get("/api/org", headers=bearer(token, **{"X-Org-Slug": "globex"}))

    assert response.status_code == 403
    assert response.json()["code"] == "org_forbidden"


def test_starlette_no_memberships_is_403_org_membership_required(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    response = starlette_client.get("/api/org", headers=bearer(issuer.access_token()))

    assert response.status_code == 403
    assert response.json()["code"] == "org_membership_required"


def test_starlette_path_param_org_with_enough_role_is_allowed(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = starlette_client.get("/api/orgs/acme/settings", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"slug": "acme"}


def test_starlette_path_param_org_with_too_low_a_role_is_403_role_insufficient(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = starlette_client.get("/api/orgs/org-b/settings", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["code"] == "role_insufficient"


def test_starlette_path_param_org_that_is_not_a_membership_is_403_org_forbidden(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])

    response = starlette_client.get("/api/orgs/globex/settings", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["code"] == "org_forbidden"


def test_starlette_project_listed_in_the_token_is_allowed(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME], projects=[ACME_PROJECT])

    response = starlette_client.get("/api/projects/p-a", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"project": "p-a"}


def test_starlette_project_the_lookup_puts_in_a_member_org_is_allowed(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])

    assert starlette_client.get("/api/projects/p-a2", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("project_id", ["p-b", "p-unknown"])
def test_starlette_project_outside_the_callers_orgs_is_403_project_forbidden(
    starlette_client: TestClient, issuer: DevIssuer, project_id: str
) -> None:
    token = issuer.access_token(organizations=[ACME])

    response = starlette_client.get(f"/api/projects/{project_id}", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["code"] == "project_forbidden"


def test_starlette_member_of_org_a_naming_org_a_for_org_b_project_is_refused(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])
    headers = bearer(token, **{"X-Org-Slug": "acme", "X-Org-Id": "org-a"})

    response = starlette_client.get("/api/org-projects/p-b", headers=headers)

    assert response.status_code == 403
    assert response.json()["code"] == "project_forbidden"


def test_starlette_stacked_org_and_project_checks_fill_request_state(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])

    response = starlette_client.get("/api/org-projects/p-a2", headers=bearer(token))

    assert response.json() == {"org": "acme", "project": "p-a2"}


def test_starlette_missing_scope_is_403_with_insufficient_scope_challenge(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(scope="openid read:projects")

    response = starlette_client.post("/api/write", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.json()["code"] == "scope_insufficient"
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'


def test_starlette_present_scope_is_allowed(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(scope="openid write:projects")

    response = starlette_client.post("/api/write", headers=bearer(token))

    assert response.status_code == 200
    assert response.text == "written"


def test_starlette_sync_endpoint_is_guarded_too(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    allowed = issuer.access_token(scope="read:projects")
    refused = issuer.access_token(scope="openid")

    assert starlette_client.get("/api/read", headers=bearer(allowed)).text == "read"
    assert starlette_client.get("/api/read", headers=bearer(refused)).status_code == 403


def test_starlette_websocket_with_an_org_gets_it_in_state(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    with starlette_client.websocket_connect(
        "/ws/org", headers=bearer(token, **{"X-Org-Slug": "globex"})
    ) as websocket:
        assert websocket.receive_json() == {"slug": "globex"}


def test_starlette_websocket_without_an_org_choice_is_denied_with_400(
    starlette_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    with (
        pytest.raises(WebSocketDenialResponse) as caught,
        starlette_client.websocket_connect("/ws/org", headers=bearer(token)),
    ):
        pass

    assert caught.value.status_code == 400
    assert caught.value.json()["code"] == "org_required"


def test_starlette_anonymous_websocket_is_denied_with_401(starlette_client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as caught,
        starlette_client.websocket_connect("/ws/org"),
    ):
        pass

    assert caught.value.status_code == 401
    assert caught.value.json()["code"] == "token_missing"


# -- FastAPI ------------------------------------------------------------------------


def fastapi_app(issuer: DevIssuer, *, flat_errors: bool = True) -> FastAPI:
    app = FastAPI()
    app.add_middleware(JWTSessionMiddleware, config=make_config(issuer))
    if flat_errors:
        install_error_handler(app)

    @app.get("/api/me")
    async def me(session: Annotated[Session, Depends(current_session)]) -> dict[str, Any]:
        return {"user": session.user.id}

    @app.get("/api/org")
    async def org(
        request: FastAPIRequest, org: Annotated[Organization, Depends(org_context())]
    ) -> dict[str, Any]:
        return {"slug": org.slug, "state": request.state.org.slug}

    @app.get("/api/orgs/{org_ref}/admin")
    async def org_admin(
        org_ref: str,
        org: Annotated[Organization, Depends(org_context("admin", path_param="org_ref"))],
    ) -> dict[str, Any]:
        return {"slug": org.slug}

    @app.get("/api/projects/{project_id}")
    async def project(project_id: Annotated[str, Depends(project_access(lookup=lookup))]) -> str:
        return project_id

    @app.post("/api/write")
    async def write(session: Annotated[Session, Depends(require_scopes("write:projects"))]) -> str:
        return session.user.id

    @app.get("/public")
    async def public() -> str:
        return "hello"

    return app


@pytest.fixture
def fastapi_client(issuer: DevIssuer) -> Iterator[TestClient]:
    with TestClient(fastapi_app(issuer), base_url="https://testserver") as client:
        yield client


def test_fastapi_anonymous_caller_gets_401_with_bearer_challenge(
    fastapi_client: TestClient,
) -> None:
    for path in ("/api/me", "/api/org", "/api/projects/p-a"):
        response = fastapi_client.get(path)

        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert response.json()["code"] == "token_missing"
        assert response.headers["www-authenticate"] == "Bearer"


def test_fastapi_current_session_returns_the_session(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    response = fastapi_client.get("/api/me", headers=bearer(issuer.access_token("u7")))

    assert response.json() == {"user": "u7"}


def test_fastapi_current_session_works_with_cookies(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    # Over https the cookie names carry the __Host- prefix (cookies.host_prefix=auto).
    access, id_token = issuer.access_token("u8"), issuer.id_token("u8")
    cookies = f"__Host-jwtedge_access={access}; __Host-jwtedge_id={id_token}"

    response = fastapi_client.get("/api/me", headers={"Cookie": cookies})

    assert response.json() == {"user": "u8"}


def test_fastapi_org_context_selects_by_x_org_slug_and_fills_request_state(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = fastapi_client.get("/api/org", headers=bearer(token, **{"X-Org-Slug": "globex"}))

    assert response.status_code == 200
    assert response.json() == {"slug": "globex", "state": "globex"}


def test_fastapi_org_context_without_a_choice_is_400_org_required(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    response = fastapi_client.get("/api/org", headers=bearer(token))

    assert response.status_code == 400
    assert response.json()["code"] == "org_required"
    assert "acme, globex" in response.json()["message"]


def test_fastapi_org_context_non_membership_is_403_org_forbidden(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME])

    response = fastapi_client.get("/api/org", headers=bearer(token, **{"X-Org-Id": "org-b"}))

    assert response.status_code == 403
    assert response.json()["code"] == "org_forbidden"


def test_fastapi_org_context_from_path_param_checks_the_role(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    allowed = fastapi_client.get("/api/orgs/acme/admin", headers=bearer(token))
    refused = fastapi_client.get("/api/orgs/globex/admin", headers=bearer(token))

    assert allowed.json() == {"slug": "acme"}
    assert refused.status_code == 403
    assert refused.json()["code"] == "role_insufficient"


def test_fastapi_project_access_allows_member_orgs_and_refuses_others(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token(organizations=[ACME], projects=[ACME_PROJECT])
    headers = bearer(token, **{"X-Org-Slug": "acme"})

    assert fastapi_client.get("/api/projects/p-a", headers=headers).json() == "p-a"
    assert fastapi_client.get("/api/projects/p-a2", headers=headers).json() == "p-a2"
    refused = fastapi_client.get("/api/projects/p-b", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == "project_forbidden"


def test_fastapi_missing_scope_is_403_with_insufficient_scope_challenge(
    fastapi_client: TestClient, issuer: DevIssuer
) -> None:
    response = fastapi_client.post("/api/write", headers=bearer(issuer.access_token()))

    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.json()["code"] == "scope_insufficient"
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'


def test_fastapi_present_scope_is_allowed(fastapi_client: TestClient, issuer: DevIssuer) -> None:
    token = issuer.access_token("u9", scope="write:projects")

    assert fastapi_client.post("/api/write", headers=bearer(token)).json() == "u9"


def test_fastapi_without_the_error_handler_nests_the_body_in_detail(issuer: DevIssuer) -> None:
    app = fastapi_app(issuer, flat_errors=False)
    token = issuer.access_token(organizations=[ACME, GLOBEX])

    with TestClient(app, base_url="https://testserver") as client:
        response = client.get("/api/org", headers=bearer(token))
        anonymous = client.get("/api/me")

    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "org_required"
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


def test_fastapi_openapi_declares_the_bearer_scheme_on_protected_operations(
    issuer: DevIssuer,
) -> None:
    schema = fastapi_app(issuer).openapi()

    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    paths = schema["paths"]
    for path, method in [
        ("/api/me", "get"),
        ("/api/org", "get"),
        ("/api/orgs/{org_ref}/admin", "get"),
        ("/api/projects/{project_id}", "get"),
        ("/api/write", "post"),
    ]:
        assert {"bearerAuth": []} in paths[path][method]["security"], path
    assert "security" not in paths["/public"]["get"]
