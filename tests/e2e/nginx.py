"""A real nginx on 127.0.0.1 running ``config/nginx.conf.example``, for end-to-end tests.

:func:`running_nginx` finds the ``nginx`` binary (installing the Debian
package with apt-get when it is missing and the tests run as root), renders
the example config into a temporary directory, starts ``nginx -p <dir> -c
<conf>`` in the foreground (``daemon off``, ``master_process on``) on a free
port, waits until it answers and stops it on exit, always: SIGQUIT (graceful)
first, then SIGTERM, then SIGKILL. Without nginx the tests are skipped with
the reason, except under CI (:mod:`tests.ci`), where a missing nginx fails the
run: CI must never pass by skipping the proxy tests.

Rendering substitutes the example's placeholders (``__LISTEN__``, ``__APP__``,
``__UPSTREAM__``) and adds only what a throwaway server needs: the pid file,
the error and access logs and every temp path inside the temporary directory,
and ``daemon off``. The security-relevant part of the config is tested
exactly as shipped. ``JWTEDGE_NGINX_CONF=path/to/your.conf`` runs the same
tests against another config with the same placeholders.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.ci import skip_or_fail

__all__ = [
    "EXAMPLE",
    "PLACEHOLDERS",
    "NginxServer",
    "nginx_binary",
    "render_config",
    "running_nginx",
]

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "nginx.conf.example"
#: The example's placeholders: every one must be substituted, none may be left.
PLACEHOLDERS = ("__LISTEN__", "__APP__", "__UPSTREAM__")
#: Debian's package: the core binary, built with the auth_request module.
_PACKAGE = "nginx"
_APT_TIMEOUT = 600.0
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _install_with_apt() -> str | None:
    """nginx via apt-get, only as root on a Debian-like system."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", _PACKAGE],
    ):
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=_APT_TIMEOUT)
        except (subprocess.SubprocessError, OSError):
            return None
    return _find()


def _find() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"  # not on a non-root user's PATH on Debian
    return found


def nginx_binary() -> str:
    """The nginx path; installs it when possible, else skips (fails under CI)."""
    binary = _find() or _install_with_apt()
    if binary is None:
        skip_or_fail(
            "nginx is not installed and could not be installed "
            "(apt-get install nginx, or run the tests as root)"
        )
    version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
    if "--with-http_auth_request_module" not in version.stderr:
        skip_or_fail(f"{binary} was built without the auth_request module")
    return binary


def render_config(directory: Path, values: Mapping[str, str], *, example: Path = EXAMPLE) -> Path:
    """Write the example with ``values`` substituted and the paths kept in ``directory``.

    ``values`` maps every placeholder to its value (``__LISTEN__`` →
    ``127.0.0.1:8080``). Raises ``ValueError`` when a placeholder is missing
    from the example or left unsubstituted.
    """
    text = example.read_text()
    for name in PLACEHOLDERS:
        if name not in text:
            raise ValueError(f"{example} has no {name} placeholder")
        if name not in values:
            raise ValueError(f"no value for {name}")
    for name, value in values.items():
        text = text.replace(name, value)
    if leftover := sorted(set(re.findall(r"__[A-Z]+__", text))):
        raise ValueError(f"unsubstituted placeholders: {', '.join(leftover)}")
    main = (
        "# Added by tests/e2e/nginx.py: a foreground server whose files stay in one directory.\n"
        "daemon off;\n"
        "master_process on;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
    )
    paths = "".join(f"    {name}_temp_path {directory / 'tmp' / name};\n" for name in _TEMP_PATHS)
    http = f"http {{\n    access_log {directory / 'access.log'};\n{paths}"
    text, count = re.subn(r"^http \{\n", http, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise ValueError(f"{example} has no top-level 'http {{' block")
    conf = directory / "nginx.conf"
    conf.write_text(main + text)
    return conf


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    """Whether something accepts connections and speaks HTTP on the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"GET /auth/__nginx_probe__ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


@dataclass
class NginxServer:
    """A started nginx: its base URL, directory (config and logs) and process."""

    url: str
    port: int
    directory: Path
    conf: Path
    process: subprocess.Popen[bytes]

    def error_log(self) -> str:
        """The error log so far (for assertion messages)."""
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGQUIT (finish open requests), then SIGTERM, then SIGKILL; always reaps."""
    for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
            return


@contextmanager
def running_nginx(
    *, app: str, upstream: str, example: Path | None = None, timeout: float = 10.0
) -> Iterator[NginxServer]:
    """nginx serving the rendered example on a free 127.0.0.1 port.

    ``app`` and ``upstream`` are ``host:port`` of the jwtedge app and of the
    protected upstream. ``example`` defaults to ``$JWTEDGE_NGINX_CONF`` (your
    own config with the same placeholders: the tests then check it) or the
    shipped example. Retries a few times when another process takes the free
    port between choosing it and nginx binding it.
    """
    if example is None:
        example = Path(os.environ.get("JWTEDGE_NGINX_CONF") or EXAMPLE)
    binary = nginx_binary()
    with tempfile.TemporaryDirectory(prefix="jwtedge-nginx-") as name:
        directory = Path(name)
        # nginx's workers run as an unprivileged user when the master is root:
        # they must reach the temp paths below this directory.
        directory.chmod(0o755)
        (directory / "tmp").mkdir()
        last_error = ""
        for _ in range(3):
            port = _free_port()
            values = {"__LISTEN__": f"127.0.0.1:{port}", "__APP__": app, "__UPSTREAM__": upstream}
            conf = render_config(directory, values, example=example)
            stderr_path = directory / "stderr.log"
            with stderr_path.open("wb") as stderr:
                process = subprocess.Popen(
                    [binary, "-p", str(directory), "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            try:
                deadline = time.monotonic() + timeout
                while process.poll() is None and not _answers(port):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"nginx did not answer on 127.0.0.1:{port}")
                    time.sleep(0.02)  # waiting for start-up, not for time to pass
                if process.poll() is not None:
                    last_error = stderr_path.read_text(errors="replace")
                    if "Address already in use" in last_error:
                        continue
                    raise RuntimeError(f"nginx exited at start-up: {last_error.strip()}")
                server = NginxServer(f"http://127.0.0.1:{port}", port, directory, conf, process)
                yield server
                return
            finally:
                _stop(process)
        raise RuntimeError(f"nginx could not bind a free port: {last_error.strip()}")
