"""Answers that need no web framework: probes while the binlog replays, and past the connection cap.

Two places answer HTTP without Starlette and hypercorn, with the same few
lines of parsing here:

* :class:`ReplayResponder`: while ``open_binlog`` replays the log (main.py,
  synchronous, before trio runs), a thread answers on the already-bound
  ``--http`` socket: ``GET /healthz`` 200 ``{"status": "ok", "phase":
  "replaying"}``, ``/readyz`` 503 ``{"status": "replaying"}``, any other path
  503 with ``Retry-After``.  A thread, because there is no trio yet to run a
  task in (the same reasoning as startup.py's import thread), and replay is
  one long synchronous call.  The thread spends its time in ``select`` and
  needs the GIL only for the few microseconds of each answer.  Measured on
  the 2-core test machine, replaying 500,000 jobs (about 1.8 s): 82 probes
  answered, the slowest in 211 ms (the replay holds the GIL through long C
  calls); a client probing back to back (200-500 probes a second) slowed the
  replay by 2-15%, one probe a second by nothing measurable.  When replay
  ends it stops accepting and hands the socket back; connections it never
  accepted wait in the kernel backlog for hypercorn, so no request is lost.
* :func:`busy_answer`: a connection past ``--http-max-connections`` (the
  listener's overflow lane, listener.py) gets the probes answered and every
  other path a 503.

Every connection is bounded: :data:`HEAD_TIMEOUT_S` for the TLS handshake and
the request head together, reads of at most 1 KiB, a head of at most
:data:`MAX_HEAD` bytes, one request, then ``Connection: close``.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import ssl
import threading
import time
import traceback
from typing import Any, Optional

from ..log import warn
from ..tls import HandshakeLog, _reason

# A request head (and a TLS handshake before it) must arrive within this long,
# as beanstalkd-rs's header timeout.
HEAD_TIMEOUT_S = 2.0
MAX_HEAD = 4096  # bytes of request head a probe answer reads; more: 431
READ_CHUNK = 1024
RETRY_AFTER_S = 1
# Connections the replay thread serves at once; more wait in the backlog.
REPLAY_CONNECTIONS = 64
# When replay ends, a connection half-way through its head gets this long to
# finish before it is closed (the start-up waits for it).
STOP_GRACE_S = 0.25
# accept() failing for want of descriptors: try again after this long
# (trio's own serve_listeners waits 0.1 s too).
ACCEPT_PAUSE_S = 0.1
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
PROBE_PATHS = ("/healthz", "/readyz")

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


# ---------------------------------------------------------------------- sans-IO


def head_end(data: "bytes | bytearray") -> int:
    """The length of the request head in ``data`` (through its blank line), or -1."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return end + 4
    end = data.find(b"\n\n")  # bare LF lines, as h11 also accepts
    return end + 2 if end >= 0 else -1


class Head:
    """The parts of a request head a probe answer needs."""

    def __init__(self, method: str, path: str, host: Optional[str]) -> None:
        self.method = method
        self.path = path
        self.host = host

    @classmethod
    def parse(cls, data: bytes) -> Optional["Head"]:
        """The request line and ``Host`` of a complete head; None if it is not HTTP/1."""
        end = head_end(data)
        if end < 0:
            return None
        lines = data[:end].decode("latin-1").splitlines()
        words = lines[0].split(" ") if lines else []
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            return None
        host = None
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() == "host":
                host = value.strip()
        return cls(words[0].upper(), words[1].partition("?")[0], host)


def render(status: int, body: Optional[dict[str, Any]], headers: tuple[tuple[str, str], ...] = (),
           head_only: bool = False) -> bytes:
    """One whole ``Connection: close`` response, JSON like the app's answers."""
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
             "Content-Type: application/json", f"Content-Length: {len(data)}",
             "Cache-Control: no-store", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else data)


def _unavailable(error: str) -> bytes:
    return render(503, {"error": error}, (("Retry-After", str(RETRY_AFTER_S)),))


def replaying_answer(data: bytes) -> bytes:
    """The answer to one request head while the binlog replays."""
    head = Head.parse(data)
    if head is None:
        return render(431 if head_end(data) < 0 else 400, {"error": "not an HTTP/1 request head"})
    probe = head.method in ("GET", "HEAD")
    if probe and head.path == "/healthz":
        return render(200, {"status": "ok", "phase": "replaying"}, head_only=head.method == "HEAD")
    if probe and head.path == "/readyz":
        return render(503, {"status": "replaying"}, (("Retry-After", str(RETRY_AFTER_S)),),
                      head_only=head.method == "HEAD")
    return _unavailable("the binlog is being replayed; try again shortly")


def busy_answer(data: bytes, ready: bool, host_allowed: bool = True) -> bytes:
    """The answer on a connection past ``--http-max-connections``: the probes as the
    app gives them (``host_allowed`` False: the loopback rule's 403), else a 503."""
    head = Head.parse(data)
    if head is None:
        return render(431 if head_end(data) < 0 else 400, {"error": "not an HTTP/1 request head"})
    if head.method in ("GET", "HEAD") and head.path in PROBE_PATHS:
        only = head.method == "HEAD"
        if not host_allowed:
            return render(403, {"error": "without --http-tokens only loopback host names are served"},
                          head_only=only)
        if head.path == "/healthz":
            return render(200, {"status": "ok"}, head_only=only)
        return render(200, {"status": "ready"}, head_only=only) if ready else \
            render(503, {"status": "draining"}, head_only=only)
    return _unavailable("too many HTTP connections (--http-max-connections); try again shortly")


# ---------------------------------------------------------------------- the replay thread


class _Conn:
    """One accepted connection of the replay thread: handshake, head, answer."""

    def __init__(self, sock: socket.socket, deadline: float, tls: bool) -> None:
        self.sock = sock
        self.deadline = deadline
        self.handshaking = tls
        self.data = bytearray()
        self.out: Optional[bytes] = None  # the answer, once the head is in

    def step(self) -> int:
        """Make what progress the socket allows: the events to wait for next, 0 when done."""
        try:
            if self.handshaking:
                assert isinstance(self.sock, ssl.SSLSocket)
                self.sock.do_handshake()
                self.handshaking = False
            while self.out is None:
                chunk = self.sock.recv(READ_CHUNK)
                if not chunk:
                    return 0
                self.data += chunk
                if head_end(self.data) >= 0 or len(self.data) > MAX_HEAD:
                    self.out = replaying_answer(bytes(self.data))
            while self.out:
                self.out = self.out[self.sock.send(self.out):]
            return 0
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_WRITE
        except BlockingIOError:
            return selectors.EVENT_READ if self.out is None else selectors.EVENT_WRITE
        except ssl.SSLError:
            raise  # a failed handshake: the caller logs it
        except OSError:
            return 0


class ReplayResponder:
    """Answers the probes on the bound ``--http`` socket from a thread, while replay runs.

    A context manager: ``with responder: open_binlog(...)``.  The socket stays
    the caller's; on exit the thread stops accepting, finishes or closes what
    it accepted (at most :data:`STOP_GRACE_S`) and is joined.
    """

    def __init__(self, sock: socket.socket, context: Optional[ssl.SSLContext] = None,
                 limit: int = REPLAY_CONNECTIONS) -> None:
        self.sock = sock
        self.context = context
        self.limit = limit
        self.answered = 0  # connections that got an answer (the tests read it)
        self._thread: Optional[threading.Thread] = None
        self._wake_r, self._wake_w = -1, -1
        self._handshakes = HandshakeLog()

    def __enter__(self) -> "ReplayResponder":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="beanstalk-py-http-replay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            # Never fatal: the probes then wait in the backlog until the server runs.
            warn(f"http: the replay-time responder stopped:\n{traceback.format_exc()}")

    def _serve(self) -> None:
        conns: dict[socket.socket, _Conn] = {}
        blocking = self.sock.getblocking()
        self.sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            accepting = False
            paused_until = 0.0
            stop_at: Optional[float] = None
            try:
                while True:
                    now = time.monotonic()
                    for conn in [c for c in conns.values() if c.deadline <= now]:
                        self._close(selector, conns, conn)
                    if stop_at is not None and (not conns or now >= stop_at):
                        return
                    want = stop_at is None and len(conns) < self.limit and now >= paused_until
                    if want != accepting:
                        if want:
                            selector.register(self.sock, selectors.EVENT_READ)
                        else:
                            selector.unregister(self.sock)
                        accepting = want
                    deadlines = [c.deadline for c in conns.values()]
                    deadlines += [stop_at] if stop_at is not None else [paused_until] if now < paused_until else []
                    timeout = max(0.0, min(deadlines) - now) if deadlines else None
                    for key, _events in selector.select(timeout):
                        if isinstance(key.data, _Conn):
                            self._step(selector, conns, key.data)
                        elif key.fileobj is self.sock:
                            if not self._accept(selector, conns):
                                paused_until = time.monotonic() + ACCEPT_PAUSE_S
                        elif stop_at is None:  # the wake-up pipe: replay is over
                            selector.unregister(self._wake_r)
                            stop_at = time.monotonic() + STOP_GRACE_S
            finally:
                for conn in list(conns.values()):
                    self._close(selector, conns, conn)
                self.sock.setblocking(blocking)

    def _accept(self, selector: selectors.BaseSelector, conns: dict[socket.socket, _Conn]) -> bool:
        """Accept what waits, up to the limit; False when out of descriptors (pause)."""
        while len(conns) < self.limit:
            try:
                sock, _addr = self.sock.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    return False
                continue  # ECONNABORTED and the like: that client is gone
            sock.setblocking(False)
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    sock.close()
                    continue
            conn = _Conn(sock, time.monotonic() + HEAD_TIMEOUT_S, self.context is not None)
            conns[sock] = conn
            selector.register(sock, selectors.EVENT_READ, conn)
            self._step(selector, conns, conn)
        return True

    def _step(self, selector: selectors.BaseSelector, conns: dict[socket.socket, _Conn], conn: _Conn) -> None:
        try:
            events = conn.step()
        except ssl.SSLError as exc:
            self._handshakes.failure(_peer(conn.sock), _reason(exc))
            events = 0
        if not events:
            if conn.out is not None and not conn.out:
                self.answered += 1
            self._close(selector, conns, conn)
        else:
            selector.modify(conn.sock, events, conn)

    @staticmethod
    def _close(selector: selectors.BaseSelector, conns: dict[socket.socket, _Conn], conn: _Conn) -> None:
        conns.pop(conn.sock, None)
        try:
            selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


def _peer(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return "an HTTP client"
    if isinstance(peer, tuple):
        return f"HTTP client {peer[0]}:{peer[1]}"
    return "an HTTP client on the unix socket"
