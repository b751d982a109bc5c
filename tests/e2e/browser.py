"""A real Chromium for the browser tests and the screenshot script, driven by Playwright.

Chromium is Debian's (``/usr/bin/chromium``), never Playwright's download
(``playwright install`` needs a network the test machines do not have):
:func:`find_chromium` locates it, :func:`ensure_chromium` installs the
``chromium`` package when it is missing and we can (root and ``apt-get``),
and :func:`launch` starts it through Playwright with the flags that keep a
headless Chromium off the network. Both raise :class:`BrowserUnavailable`
with the reason when no browser can be had; callers decide whether that is a
skip or a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

__all__ = ["CHROMIUM_FLAGS", "DEBIAN_PACKAGE", "BrowserUnavailable", "ensure_chromium", "launch"]

DEBIAN_PACKAGE = "chromium"
#: Headless, no sandbox (we run as root in containers), and no background
#: traffic: without the networking flags Chromium keeps trying outside hosts,
#: which are refused here and slow every start.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_CANDIDATES = ("chromium", "chromium-browser")
_DEBIAN_PATH = Path("/usr/bin/chromium")
#: Only to catch a hung apt-get: a normal install takes well under a minute.
_INSTALL_TIMEOUT = 600.0


class BrowserUnavailable(Exception):
    """No Chromium (or no Playwright) to drive; ``reason`` says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def find_chromium() -> Path | None:
    """The Chromium executable on ``PATH`` (or Debian's path), or ``None``."""
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return _DEBIAN_PATH if _DEBIAN_PATH.is_file() else None


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def ensure_chromium() -> Path:
    """Chromium's path, installing Debian's ``chromium`` first when it is missing and we can.

    Raises :class:`BrowserUnavailable` when it is missing and cannot be
    installed (not root, no ``apt-get``, or the install failed).
    """
    found = find_chromium()
    if found is not None:
        return found
    if not _can_install():
        raise BrowserUnavailable(
            f"Chromium not found; install the Debian package {DEBIAN_PACKAGE!r} "
            "(apt-get install chromium) or run as root so it is installed for you"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", DEBIAN_PACKAGE],
    )
    for step in steps:
        try:
            done = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise BrowserUnavailable(f"{' '.join(step)} did not finish in time") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise BrowserUnavailable(
                f"{' '.join(step)} failed (exit {done.returncode}): {' / '.join(tail)}"
            )
    found = find_chromium()
    if found is None:
        raise BrowserUnavailable(f"installed {DEBIAN_PACKAGE!r} but no chromium executable")
    return found


def launch(playwright: Playwright, executable: Path) -> Browser:
    """Start ``executable`` headless through Playwright with :data:`CHROMIUM_FLAGS`.

    Playwright gives every launch a new, empty profile (a temporary
    ``--user-data-dir``) and removes it when the browser closes.
    """
    return playwright.chromium.launch(
        executable_path=str(executable), headless=True, args=list(CHROMIUM_FLAGS)
    )
