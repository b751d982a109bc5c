"""A real ``redis-server`` on 127.0.0.1 for tests, started and stopped per use.

``running_redis()`` finds ``redis-server`` (installing it with apt-get when it
is missing and the tests run as root), starts it on a free port in a temporary
directory with persistence off, waits until it answers PING and stops it
(terminate, then kill) on exit. Without a server the tests are skipped with
the reason, except under CI (:func:`tests.ci.under_ci`), where a missing server
fails the run: CI must never pass by skipping the shared-store tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ci import skip_or_fail

__all__ = ["RedisServer", "require_redis_package", "running_redis", "skip_or_fail"]

_APT_TIMEOUT = 600.0


def require_redis_package() -> None:
    """The ``redis`` client package, or a skip (a failure under CI)."""
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        skip_or_fail("the redis package is not installed (pip install 'jwtedge[redis]')")


def _install_with_apt() -> str | None:
    """``redis-server`` via apt-get, only as root on a Debian-like system."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
    ):
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=_APT_TIMEOUT)
        except (subprocess.SubprocessError, OSError):
            return None
    return shutil.which("redis-server")


def redis_server_binary() -> str:
    """The ``redis-server`` path; installs it when possible, else skips (fails under CI)."""
    binary = shutil.which("redis-server") or _install_with_apt()
    if binary is None:
        skip_or_fail(
            "redis-server is not installed and could not be installed "
            "(apt-get install redis-server, or run the tests as root)"
        )
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (no persistence, no daemon)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start on a free port and wait until it answers PING (a few tries on port races)."""
        self._dir = tempfile.TemporaryDirectory(prefix="jwtedge-redis-")
        for _ in range(3):
            self.port = _free_port()
            log = Path(self._dir.name) / "redis.log"
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    self._dir.name,
                    "--logfile",
                    str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self._dir.name,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.ping():
                    return
                time.sleep(0.02)
            self._terminate()
        self.stop()
        raise RuntimeError("redis-server did not start on 127.0.0.1")

    def ping(self) -> bool:
        """Whether the server answers ``PING`` (raw RESP: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _terminate(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (kill after ``timeout``) and remove the temporary directory."""
        self._terminate(timeout)
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.process is not None})"


@contextlib.contextmanager
def running_redis(timeout: float = 10.0) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped on exit; skips (fails under CI) without one."""
    require_redis_package()
    server = RedisServer(redis_server_binary())
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()
