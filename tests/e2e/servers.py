"""Servers for the reference-app e2e tests: the edge app on real uvicorn, a real DevIssuer.

The app runs through :func:`deploy.run.serve_in_thread`, the same helper
``jwtedge demo`` uses, so these tests also cover the demo's server plumbing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.types import ASGIApp

from deploy.run import serve_in_thread
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.testing import DevIssuer

STATE_KEY = "e2e-state-key-" + "x" * 32
ORGS = [
    {"id": "org_acme", "slug": "acme", "name": "Acme Inc.", "role": "owner"},
    {"id": "org_globex", "slug": "globex", "name": "Globex Corporation", "role": "member"},
]
PROJECTS = [
    {"id": "prj_web", "slug": "website", "organizationId": "org_acme"},
    {"id": "prj_bill", "slug": "billing", "organizationId": "org_globex"},
]


@contextmanager
def running_app(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (any free port); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        with serve_in_thread(app, sock):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def dev_issuer() -> Iterator[DevIssuer]:
    """A DevIssuer on real uvicorn whose default user is Ada, in two organizations."""
    with DevIssuer.serve(port=0) as issuer:
        issuer.add_user(
            "ada",
            email="ada@example.com",
            name="Ada Lovelace",
            organizations=ORGS,
            projects=PROJECTS,
        )
        issuer.default_user = "ada"
        yield issuer


def app_config(issuer: DevIssuer, **login: Any) -> AppConfig:
    """The app's config: the issuer's keys and endpoints baked in, as ``jwtedge bake`` would."""
    discovery = issuer.discovery()
    meta = {
        "issuer": issuer.issuer,
        "jwks_uri": discovery["jwks_uri"],
        "token_endpoint": discovery["token_endpoint"],
        "authorization_endpoint": discovery["authorization_endpoint"],
        "end_session_endpoint": discovery["end_session_endpoint"],
        "revocation_endpoint": discovery["revocation_endpoint"],
    }
    return AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": issuer.client_id,
            "jwks": parse_jwks(issuer.jwks()),
            "jwks_meta": meta,
        },
        login={"state_key": STATE_KEY, **login},
    )
