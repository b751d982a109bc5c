"""A fault-injecting HTTP server on 127.0.0.1, for the reliability tests.

:class:`FaultServer` speaks just enough HTTP/1.1 on a raw socket to misbehave
in ways a framework would not let it: it resets a connection in the middle of
a body, never answers, drips one byte at a time, streams 50 MB without a
``Content-Length``, or redirects to itself forever. Each path has a
:class:`Fault` (switchable while the server runs); unknown paths get 404.

One request per connection (``Connection: close``), each connection on its
own daemon thread, so a request held open by ``hang`` or ``drip`` never blocks
the next one. Every request is recorded (:attr:`FaultServer.seen`) and every
fault that streams records how many body bytes it managed to send before the
client went away (:attr:`FaultServer.sent`), which is how a test proves a
client stopped reading at its cap instead of swallowing the whole body.

:func:`refused_url` is the other half: a port that is bound but not
listening, so a connection attempt is refused at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import orjson

__all__ = [
    "Fault",
    "FaultServer",
    "Seen",
    "drip",
    "hang",
    "huge",
    "json_body",
    "redirect_loop",
    "refused_url",
    "reset_mid_body",
    "respond",
]

Kind = Literal["respond", "reset", "hang", "drip", "huge", "redirect_loop"]
Body = bytes | Callable[[], bytes]

_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024
#: How long a blocked send may wait for a client that stopped reading.
_SEND_TIMEOUT = 5.0
_REASONS = {
    200: "OK",
    302: "Found",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """How the server answers one path. Build them with the functions below."""

    kind: Kind
    status: int = 200
    content_type: str | None = "application/json"
    body: Body = b""
    headers: tuple[tuple[str, str], ...] = ()
    #: ``drip``: seconds between bytes.
    interval: float = 1.0
    #: ``huge``: bytes offered; ``reset`` and ``drip``: the declared Content-Length.
    size: int = 0


def respond(
    status: int,
    body: Body = b"",
    *,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> Fault:
    """A complete, well-formed response (any status, any body, any content type)."""
    return Fault(
        "respond",
        status=status,
        body=body,
        content_type=content_type,
        headers=tuple((headers or {}).items()),
    )


def json_body(document: Callable[[], object]) -> Fault:
    """200 ``application/json`` with ``document()`` read at request time."""
    return respond(200, lambda: orjson.dumps(document()))


def reset_mid_body(size: int = 4096) -> Fault:
    """Headers declaring ``size`` bytes, an eighth of them, then a TCP RST."""
    return Fault("reset", size=size)


def hang() -> Fault:
    """Read the request and never answer (until the client or the server goes away)."""
    return Fault("hang")


def drip(interval: float = 1.0, size: int = 4096) -> Fault:
    """A 200 JSON response whose ``size``-byte body comes one byte every ``interval`` s."""
    return Fault("drip", interval=interval, size=size)


def huge(size: int = 50 * 1024 * 1024) -> Fault:
    """A 200 JSON response of ``size`` bytes, streamed without a Content-Length."""
    return Fault("huge", size=size)


def redirect_loop() -> Fault:
    """302 back to the same path, forever."""
    return Fault("redirect_loop", status=302)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the server read."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Sent:
    """What a streaming fault managed to send before it stopped."""

    path: str
    kind: Kind
    #: Body bytes written to the socket (the client may not have read them all).
    body_bytes: int
    #: True when the client closed or reset the connection before the end.
    client_went_away: bool
    seconds: float


class FaultServer:
    """Misbehaves per path on ``http://127.0.0.1:<any free port>``; a context manager."""

    def __init__(self, routes: dict[str, Fault] | None = None) -> None:
        self.routes: dict[str, Fault] = dict(routes or {})
        self.seen: list[Seen] = []
        self.sent: list[Sent] = []
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept, name="fault-server", daemon=True)

    # -- control -----------------------------------------------------------------

    def __enter__(self) -> FaultServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every open connection, join the threads (bounded)."""
        self._stopping.set()
        self._acceptor.join(timeout)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._sock.close()

    def cut(self) -> None:
        """Shut every open connection down (the server keeps accepting new ones).

        Releases a request a ``hang`` or ``drip`` holds open: its client sees
        the connection fail at once instead of waiting for its own timeout.
        """
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> int:
        """Connections accepted and not yet closed (held ones included)."""
        with self._lock:
            return len(self._conns)

    def clear(self) -> None:
        """Forget the requests and streams recorded so far (routes stay)."""
        with self._lock:
            self.seen.clear()
            self.sent.clear()

    def route(self, path: str, fault: Fault) -> None:
        """Answer ``path`` with ``fault`` from the next request on."""
        self.routes[path] = fault

    def hits(self, path: str) -> int:
        """Requests read for ``path`` so far."""
        with self._lock:
            return sum(1 for seen in self.seen if seen.path == path)

    def wait_for_hits(self, path: str, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests for ``path`` were read (False on timeout)."""
        with self._lock:
            return self._lock.wait_for(
                lambda: sum(1 for s in self.seen if s.path == path) >= count, timeout
            )

    def wait_for_sent(self, count: int = 1, timeout: float = 10.0) -> list[Sent]:
        """Block until ``count`` streaming faults have finished; what they sent."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.sent) >= count, timeout)
            return list(self.sent)

    # -- serving -----------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(
                target=self._serve, args=(conn,), name="fault-conn", daemon=True
            )
            with self._lock:
                self._conns.add(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(_SEND_TIMEOUT)
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                self.seen.append(request)
                self._lock.notify_all()
            fault = self.routes.get(request.path) or respond(404, b'{"error":"not_found"}')
            handler = getattr(self, f"_{fault.kind}")
            handler(conn, request, fault)
        except OSError:
            return  # the client went away: nothing left to misbehave at
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _record(self, path: str, kind: Kind, sent: int, gone: bool, started: float) -> None:
        with self._lock:
            self.sent.append(Sent(path, kind, sent, gone, time.monotonic() - started))
            self._lock.notify_all()

    def _respond(self, conn: socket.socket, request: Seen, fault: Fault) -> None:
        body = fault.body() if callable(fault.body) else fault.body
        conn.sendall(_head(fault.status, fault.content_type, len(body), fault.headers) + body)

    def _redirect_loop(self, conn: socket.socket, request: Seen, fault: Fault) -> None:
        conn.sendall(_head(302, None, 0, (("Location", request.path),)))

    def _reset(self, conn: socket.socket, request: Seen, fault: Fault) -> None:
        conn.sendall(_head(200, "application/json", fault.size) + b" " * (fault.size // 8))
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _hang(self, conn: socket.socket, request: Seen, fault: Fault) -> None:
        started = time.monotonic()
        gone = _wait_for_close(conn, self._stopping, timeout=60.0)
        self._record(request.path, "hang", 0, gone, started)

    def _drip(self, conn: socket.socket, request: Seen, fault: Fault) -> None:
        started = time.monotonic()
        conn.sendall(_head(200, "application/json", fault.size))
        sent, gone = 0, False
        body = b'{"keys":[' + b" " * max(0, fault.size - 9)
        try:
            while sent < fault.size and not self._stopping.is_set():
                conn.sendall(body[sent : sent + 1])
                sent += 1
                if _wait_for_close(conn, self._stopping, timeout=fault.interval):
                    gone = True
                    break
        except OSError:
            gone = True
        self._record(request.path, "drip", sent, gone, started)

    def _huge(self, conn: socket.socket, request: Seen, fault: Fault) -> None:
        started = time.monotonic()
        # No Content-Length: the client cannot refuse it up front, only by counting.
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        chunk = b'{"keys":[' + b" " * (_CHUNK - 9)
        sent, gone = 0, False
        try:
            while sent < fault.size and not self._stopping.is_set():
                piece = chunk[: min(_CHUNK, fault.size - sent)]
                conn.sendall(piece)
                sent += len(piece)
                chunk = b" " * _CHUNK
        except OSError:  # reset, broken pipe, or a send that timed out
            gone = True
        self._record(request.path, "huge", sent, gone, started)


def _head(
    status: int,
    content_type: str | None,
    length: int,
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_request(conn: socket.socket) -> Seen | None:
    """One request: the head, then a Content-Length body; None if the client left."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > _MAX_HEAD:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        rest += chunk
    return Seen(method, urlsplit(target).path, headers, rest[:length])


def _wait_for_close(conn: socket.socket, stopping: threading.Event, *, timeout: float) -> bool:
    """Wait up to ``timeout`` s; True as soon as the client closes or resets."""
    deadline = time.monotonic() + timeout
    while not stopping.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([conn], [], [], min(left, 0.05))
        if readable:
            try:
                if not conn.recv(4096):
                    return True
            except OSError:
                return True
    return False


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` where the port is bound but not listening (refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
