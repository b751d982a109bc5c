"""``jwtedge demo`` as a real process: it serves, signs in, and stops cleanly on a signal."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx2
import pytest

pytestmark = pytest.mark.e2e

#: Only to catch a hang: a healthy demo starts in a few seconds and stops in less than one.
START_WAIT = 60.0
STOP_WAIT = 30.0


def read_lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (every thread's list), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found += [int(child) for child in text.split()]
    return found


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_signs_in_the_demo_user_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APP_CONFIG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # no .env here: the demo must not need one
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        output = ""
        deadline = time.monotonic() + START_WAIT
        while "sign in at" not in output or "dev issuer" not in output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the demo printed no URL in time:\n{output}"
            line = lines.get(timeout=remaining)
            assert line is not None, f"the demo exited early:\n{output}"
            output += line
        app_url = re.search(r"app (http://127\.0\.0\.1:\d+)", output)
        sign_in = re.search(r"sign in at (http://\S+/auth/login\?next=/)", output)
        issuer_url = re.search(r"dev issuer (http://127\.0\.0\.1:(\d+))", output)
        assert app_url is not None, output
        assert sign_in is not None, output
        assert issuer_url is not None, output
        assert sign_in.group(1) == f"{app_url.group(1)}/auth/login?next=/"
        assert children(proc.pid) == []  # threads only: nothing can be left behind

        with httpx2.Client(follow_redirects=True, timeout=10.0) as browser:
            page = browser.get(sign_in.group(1))
        assert page.status_code == 200
        for text in ("Demo User", "Acme Inc.", "Globex Corporation", "owner", "member"):
            assert text in page.text

        app_port = int(app_url.group(1).rsplit(":", 1)[1])
        issuer_port = int(issuer_url.group(2))
        assert accepts(app_port)
        assert accepts(issuer_port)

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=STOP_WAIT) == 0
        assert not accepts(app_port)
        assert not accepts(issuer_port)
        assert proc.stderr is not None
        errors = proc.stderr.read()
        assert "Traceback" not in errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
