"""End-to-end tests: real uvicorn servers on 127.0.0.1, real HTTP between them.

:func:`serve_app` runs any ASGI app the way ``jwtedge serve`` and ``jwtedge
demo`` do (:func:`deploy.run.serve_in_thread`: the socket bound first on any
free port, uvicorn in a background thread with the app's lifespan on, shut
down on exit).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp

from deploy.run import serve_in_thread

__all__ = ["serve_app"]


@contextmanager
def serve_app(app: ASGIApp, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a real uvicorn server; yields its base URL (``http://host:port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        with serve_in_thread(app, sock):
            yield f"http://{host}:{sock.getsockname()[1]}"
