"""panva's oidc-provider (Node, OpenID Certified) on 127.0.0.1, for the end-to-end tests.

:func:`node_binary` finds ``node`` (installing Debian's ``nodejs`` and ``npm``
with apt-get when it is missing and the tests run as root, as the nginx and
Redis helpers do); :func:`provider_modules` installs the pinned
``oidc-provider`` from ``tests/e2e/oidc_provider/package-lock.json`` into the
ignored ``.cache/oidc-provider`` folder once (``npm ci``; ``make test`` runs
the same step first). :class:`OidcProvider` runs
``tests/e2e/oidc_provider/server.mjs`` with a key file in a temporary
directory, reads the issuer URL it prints, and can restart it on the same
port (a key rotation keeps the old keys and prepends new ones).

Without Node or the package the tests skip with the reason, except under
``CI`` set to ``true``, ``1`` or ``yes``, where that is a failure: CI must
never pass by skipping the provider tests.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx2
import pytest

__all__ = [
    "CACHE",
    "PACKAGE_DIR",
    "OidcProvider",
    "ci_requires_everything",
    "installed_version",
    "node_binary",
    "provider_modules",
    "running_provider",
    "skip_or_fail",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parent / "oidc_provider"
SERVER = PACKAGE_DIR / "server.mjs"
#: Ignored (.gitignore): node_modules live here, never in the source tree.
CACHE = REPO / ".cache" / "oidc-provider"
_DEBIAN_PACKAGES = ("nodejs", "npm")
_APT_TIMEOUT = 600.0
_NPM_TIMEOUT = 600.0
#: Node starts and generates five keys in well under this.
_START_TIMEOUT = 30.0


def ci_requires_everything() -> bool:
    """``CI`` is ``true``, ``1`` or ``yes`` (any case): skips are failures there."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """``pytest.skip`` locally; ``pytest.fail`` under CI."""
    if ci_requires_everything():
        pytest.fail(
            f"{reason} (CI: a missing Node, oidc-provider or browser is a failure, not a skip)"
        )
    pytest.skip(reason)


def _install_with_apt() -> str | None:
    """Debian's nodejs and npm via apt-get, only as root on a Debian-like system."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *_DEBIAN_PACKAGES],
    ):
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=_APT_TIMEOUT)
        except (subprocess.SubprocessError, OSError):
            return None
    return shutil.which("node")


def node_binary() -> str:
    """The ``node`` path; installs it when possible, else skips (fails under CI)."""
    binary = shutil.which("node") or _install_with_apt()
    if binary is None:
        skip_or_fail(
            "node is not installed and could not be installed "
            "(apt-get install nodejs npm, or run the tests as root)"
        )
    return binary


def _installed(cache: Path) -> bool:
    lock = cache / "package-lock.json"
    return (
        (cache / "node_modules" / "oidc-provider" / "package.json").is_file()
        and lock.is_file()
        and filecmp.cmp(lock, PACKAGE_DIR / "package-lock.json", shallow=False)
    )


def provider_modules(cache: Path = CACHE) -> Path:
    """``node_modules`` holding the pinned oidc-provider; ``npm ci`` into ``cache`` when
    it is missing or its lock file differs from the committed one."""
    if _installed(cache):
        return cache / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        skip_or_fail("npm is not installed (apt-get install npm), so oidc-provider cannot be")
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PACKAGE_DIR / name, cache / name)
    command = [npm, "ci", "--prefix", str(cache), "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_NPM_TIMEOUT, check=False
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        skip_or_fail(f"npm ci for oidc-provider did not finish: {type(exc).__name__}")
    if done.returncode != 0 or not _installed(cache):
        tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        skip_or_fail(f"npm ci for oidc-provider failed (exit {done.returncode}): {tail}")
    return cache / "node_modules"


def installed_version(cache: Path = CACHE) -> str:
    """The installed oidc-provider version (``8.8.1``)."""
    package = cache / "node_modules" / "oidc-provider" / "package.json"
    version: str = json.loads(package.read_text())["version"]
    return version


class OidcProvider:
    """One ``server.mjs`` process; ``options`` become its ``--name value`` flags
    (``access_ttl=6`` → ``--access-ttl 6``; lists repeat the flag; ``True`` is a bare flag)."""

    def __init__(self, directory: Path, **options: Any) -> None:
        self.node = node_binary()
        self.modules = provider_modules()
        self.directory = directory
        self.keys_file = directory / "provider-keys.json"
        self.options = options
        self.issuer = ""
        self.version = ""
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self._stderr: Any = None

    def _command(self, *, rotate: bool) -> list[str]:
        command = [
            self.node,
            str(SERVER),
            "--modules",
            str(self.modules),
            "--keys",
            str(self.keys_file),
            "--port",
            str(self.port),
        ]
        if rotate:
            command.append("--rotate")
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                command.append(flag)
            elif isinstance(value, list | tuple):
                for item in value:
                    command += [flag, str(item)]
            elif value is not None and value is not False:
                command += [flag, str(value)]
        return command

    def start(self, *, rotate: bool = False) -> None:
        """Start (on the last port, after the first start) and wait for its issuer line."""
        log = self.directory / "provider.log"
        self._stderr = log.open("a")
        self.process = subprocess.Popen(
            self._command(rotate=rotate),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=self.directory,
        )
        line = self._first_line(self.process)
        if not line:
            self.stop()
            raise RuntimeError(f"oidc-provider did not start: {log.read_text()[-2000:]}")
        announced = json.loads(line)
        self.issuer, self.version = announced["issuer"], announced["version"]
        self.port = int(self.issuer.rsplit(":", 1)[1])

    @staticmethod
    def _first_line(process: subprocess.Popen[str]) -> str:
        # readline() blocks; a thread bounds it without select() on a text pipe.
        found: list[str] = []
        reader = threading.Thread(
            target=lambda: found.append(process.stdout.readline() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(_START_TIMEOUT)
        return found[0].strip() if found else ""

    def restart(self, *, rotate: bool = False) -> None:
        """Stop and start again on the same port (same issuer URL); memory state is lost."""
        self.stop()
        self.start(rotate=rotate)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def events(self) -> dict[str, Any]:
        """What the provider did: grants by type, grant errors, revoked grants, requests."""
        response = httpx2.get(f"{self.issuer}/_test/events", timeout=10, trust_env=False)
        response.raise_for_status()
        events: dict[str, Any] = response.json()
        return events

    def grants(self, grant_type: str) -> int:
        count: int = self.events()["grants"].get(grant_type, 0)
        return count

    def signing_kids(self) -> list[str]:
        """Kids of the signing keys in the key file, newest first."""
        keys = json.loads(self.keys_file.read_text())["keys"]
        return [key["kid"] for key in keys if key.get("use") == "sig"]

    def log(self) -> str:
        path = self.directory / "provider.log"
        return path.read_text() if path.exists() else ""

    def __repr__(self) -> str:
        return f"OidcProvider(issuer={self.issuer!r}, running={self.process is not None})"


@contextlib.contextmanager
def running_provider(directory: Path, **options: Any) -> Iterator[OidcProvider]:
    """A started :class:`OidcProvider`, stopped on exit."""
    provider = OidcProvider(directory, **options)
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


def wait_until(moment: float) -> None:
    """Sleep until the wall clock passes ``moment`` (token expiry is wall-clock time)."""
    while (remaining := moment - time.time()) > 0:
        time.sleep(min(remaining, 1.0))
