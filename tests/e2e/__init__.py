"""End-to-end tests: real uvicorn servers on 127.0.0.1, real HTTP between them.

:func:`serve_app` runs any ASGI app the way ``DevIssuer.serve`` runs the
issuer: the socket is bound first (any free port), uvicorn serves it from a
background thread with the app's lifespan on, and the server is shut down on
exit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve_app"]


@contextmanager
def serve_app(app: ASGIApp, *, host: str = "127.0.0.1", timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on a real uvicorn server; yields its base URL (``http://host:port``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        # No access log: it would only repeat the paths the tests request.
        config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="e2e-app", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + timeout
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start on http://{host}:{port}")
                time.sleep(0.01)  # waiting for start-up, not for time to pass
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
    finally:
        sock.close()
