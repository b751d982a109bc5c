"""Servers for the e2e tests: any ASGI app on real uvicorn, a real DevIssuer, the app's config.

:func:`serve_app` runs an app the way ``jwtedge serve`` and ``jwtedge demo``
do (:func:`deploy.run.serve_in_thread`: the socket bound first on any free
port, uvicorn in a background thread with the app's lifespan on, shut down on
exit), so these tests also cover the demo's server plumbing.
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
def serve_app(app: ASGIApp, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a real uvicorn server; yields its base URL (``http://host:port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        with serve_in_thread(app, sock):
            yield f"http://{host}:{sock.getsockname()[1]}"


@contextmanager
def dev_issuer(**options: Any) -> Iterator[DevIssuer]:
    """A DevIssuer on real uvicorn whose default user is Ada, in two organizations.

    ``options`` go to :class:`~verifier.testing.DevIssuer` (e.g. its ``clock``).
    """
    with DevIssuer.serve(port=0, **options) as issuer:
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
