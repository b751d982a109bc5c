"""The reference app's routes: pages, the session API, the WebSocket, forward auth, health."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..authz import requires_org, unauthenticated_response
from ..errors import RefreshFailed
from ..login import LOGOUT_PATH
from ..metrics import CONTENT_TYPE, render
from ..middleware import error_response, get_session, refresh_now
from ..session import Organization
from ..websocket import CloseAtExpiry
from .forward_auth import forward_auth_response
from .health import readiness
from .pages import account_page, home_page, login_link, page
from .state import METHODS, NO_STORE, EdgeState

__all__ = ["edge_routes"]


def edge_routes(edge: EdgeState) -> list[BaseRoute]:
    """The app's routes over ``edge``; login's two routes only when login is served."""
    config = edge.config

    async def home(request: Request) -> Response:
        return home_page(request, get_session(request), edge)

    async def account(request: Request) -> Response:
        session = get_session(request)
        if session is None:
            if not edge.login.enabled:
                body = "<h1>Sign-in required</h1><p>Sign-in is not configured here.</p>"
                return page(request, "Sign-in required", body, status=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            location = login_link(config, target)
            return Response(status_code=302, headers={**NO_STORE, "Location": location})
        return account_page(request, session)

    async def api_session(request: Request) -> Response:
        session = get_session(request)
        if session is None:
            return unauthenticated_response()
        return JSONResponse(session.to_dict(), headers=NO_STORE)

    @requires_org(path_param="slug", active_claim=config.claims.active_org)
    async def org_projects(request: Request) -> Response:
        session = get_session(request)
        assert session is not None
        org: Organization = request.state.org
        projects = [
            {"id": p.id, "slug": p.slug, "organization_id": p.organization_id}
            for p in session.projects
            if p.organization_id == org.id
        ]
        body = {
            "organization": {"id": org.id, "slug": org.slug, "name": org.name, "role": org.role},
            "projects": projects,
        }
        return JSONResponse(body, headers=NO_STORE)

    async def ws_session(websocket: WebSocket) -> None:
        session = get_session(websocket)
        if session is None:
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(unauthenticated_response())
            else:
                await websocket.close(code=1008)
            return
        await websocket.accept()
        message = {"type": "session", "session": session.to_dict()}
        await websocket.send_text(orjson.dumps(message).decode("utf-8"))
        while True:
            incoming = await websocket.receive()
            if incoming["type"] == "websocket.disconnect":
                return
            if incoming.get("text") == "session":
                await websocket.send_text(orjson.dumps(message).decode("utf-8"))

    async def forward_auth(request: Request) -> Response:
        return forward_auth_response(request, edge)

    async def auth_refresh(request: Request) -> Response:
        try:
            session = await refresh_now(request)
        except RefreshFailed as exc:
            return error_response(exc)
        return JSONResponse(session.to_dict(), headers=NO_STORE)

    async def favicon(request: Request) -> Response:
        # Browsers ask on every page load; an empty answer keeps consoles clean.
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok", headers=NO_STORE)

    async def readyz(request: Request) -> Response:
        await edge.remote.revalidate()
        ready, body = readiness(edge)
        return JSONResponse(body, status_code=200 if ready else 503, headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        return Response(render(edge.metrics.registry), media_type=CONTENT_TYPE, headers=NO_STORE)

    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/account", account, methods=["GET"]),
        Route("/api/session", api_session, methods=["GET"]),
        Route("/api/orgs/{slug}/projects", org_projects, methods=["GET"]),
        WebSocketRoute(
            "/ws", CloseAtExpiry.endpoint(ws_session, close_code=config.websocket.close_code)
        ),
        Route(config.http.forward_auth_path, forward_auth, methods=sorted(METHODS)),
        Route("/auth/refresh", auth_refresh, methods=["POST"]),
        Route(LOGOUT_PATH, edge.login.logout, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if edge.login.enabled:
        routes += [
            Route(config.http.login_path, edge.login.login, methods=["GET"]),
            Route(edge.login.callback_path, edge.login.callback, methods=["GET"]),
        ]
    return routes
