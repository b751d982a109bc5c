"""Regenerate docs/signed-in.png: the reference app's ``/`` page, signed in, in Chromium.

Starts ``jwtedge demo`` (a dev issuer and the app on free ports of
127.0.0.1), follows the sign-in link it prints in headless Chromium (Debian's
``chromium`` driven by Playwright, see ``tests/e2e/browser.py``), waits until
the live WebSocket panel shows the session, saves a full-page screenshot and
stops the demo with Ctrl-C's signal. Not run by CI: every run shows other
times and another session id. See docs/screenshot.md.

    .venv/bin/python scripts/screenshot.py [--out docs/signed-in.png]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from playwright.sync_api import expect, sync_playwright

from tests.e2e.browser import BrowserUnavailable, ensure_chromium, launch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "signed-in.png"
#: Only to catch a hang: the demo starts in a few seconds.
START_WAIT = 60.0
STOP_WAIT = 30.0
ACTION_TIMEOUT_MS = 15_000


def read_lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def sign_in_link(proc: subprocess.Popen[str]) -> str:
    """The sign-in link the demo prints once both servers are up."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    output = ""
    deadline = time.monotonic() + START_WAIT
    while (found := re.search(r"sign in at (http://127\.0\.0\.1:\d+/\S*)", output)) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"the demo printed no sign-in link in time:\n{output}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"the demo exited early:\n{output}")
        output += line
    return found.group(1)


def capture(link: str, out: Path) -> None:
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 720}, color_scheme="light")
            page.set_default_timeout(ACTION_TIMEOUT_MS)
            page.goto(link)
            expect(page.locator("h1")).to_contain_text("Signed in as")
            expect(page.locator("#ws-status")).to_have_text("connected")
            expect(page.locator("#ws-log")).to_contain_text('"session"')
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the PNG goes")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APP_CONFIG_")}
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "demo", "--port", "0", "--issuer-port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=scratch,  # no .env: the demo needs none
            env=env,
        )
        try:
            capture(sign_in_link(proc), args.out)
        except (BrowserUnavailable, RuntimeError) as exc:
            print(f"screenshot: {exc}", file=sys.stderr)
            return 1
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=STOP_WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
