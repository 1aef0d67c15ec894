"""The probes while the binlog replays: /healthz 200 and /readyz 503 from the
start-up thread (http/probe.py), then the real server with every job; and the
responder itself in-process (HTTPS, bounds, and no request lost at hand-over)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
import trustme

from beanstalk_py.http.probe import HEAD_TIMEOUT_S, STOP_GRACE_S, ReplayResponder
from conftest import Daemon, free_port, listening_socket, start_beanstalk_py
from http_rig import yaml_dict

pytestmark = pytest.mark.daemon

# Jobs in the binlog: measured on the 2-core test machine, 400,000 jobs of
# 50 bytes (91 MB of files) took 2.5 s to write and 1.4 s to replay; 500,000
# give a replay of about 1.8 s, long enough to probe it many times.
JOBS = 500_000
BODY = b"x" * 50


def _fill_binlog(directory: str) -> None:
    """Pipelined puts into a daemon with -b (no fsync), then SIGKILL: a log to replay."""
    daemon = start_beanstalk_py("-b", directory, "-F")
    try:
        with daemon.connect() as sock:
            sock.settimeout(30)
            command = b"put 0 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
            sent = replies = 0
            while replies < JOBS:
                if sent < JOBS and sent - replies < 20_000:  # a bounded number in flight
                    batch = min(2000, JOBS - sent)
                    sock.sendall(command * batch)
                    sent += batch
                data = sock.recv(1 << 20)
                assert data and b"INSERTED" in data
                replies += data.count(b"\n")
    finally:
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_probes_answer_while_the_binlog_replays(tmp_path: Path) -> None:
    directory = str(tmp_path / "binlog")
    Path(directory).mkdir()
    _fill_binlog(directory)
    port = free_port()
    daemon = Daemon([sys.executable, "-m", "beanstalk_py", "-b", directory, "--http", f"127.0.0.1:{port}"],
                    listener=listening_socket())
    # start() returns once the beanstalk port answers, that is after replay.
    starting = threading.Thread(target=daemon.start, kwargs={"timeout": 25})
    starting.start()
    seen: list[tuple[str, int, bytes, Optional[str], float]] = []
    try:
        deadline = time.monotonic() + 25
        paths = ("/healthz", "/readyz", "/api/v1/stats")
        turn = 0
        while time.monotonic() < deadline:
            path = paths[turn % 3]
            turn += 1
            asked = time.monotonic()
            try:
                status, headers, body = _get(port, path)
            except ConnectionRefusedError:
                time.sleep(0.02)  # not bound yet
                continue
            seen.append((path, status, body, headers.get("retry-after"), time.monotonic() - asked))
            if path == "/readyz" and status == 200:
                break
            time.sleep(0.02)
        starting.join(timeout=25)
        replaying = [s for s in seen if s[1] != 200 or b"replaying" in s[2]]
        assert ("/healthz", 200, b'{"status": "ok", "phase": "replaying"}') in [s[:3] for s in replaying], seen
        assert ("/readyz", 503, b'{"status": "replaying"}', "1") in [s[:4] for s in replaying], seen
        others = [s for s in replaying if s[0] == "/api/v1/stats"]
        assert others and all(s[1] == 503 and s[3] == "1" for s in others), others
        assert all(s[4] < 1.0 for s in seen), max(s[4] for s in seen)  # each answered within a second
        assert seen[-1][:2] == ("/readyz", 200)
        # Then the real server, with every job replayed.
        status, _, body = _get(port, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        with daemon.connect() as sock:
            sock.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"\r\n") or reply.count(b"\n") < 3:
                reply += sock.recv(65536)
        assert int(yaml_dict(reply.partition(b"\r\n")[2])["current-jobs-ready"]) == JOBS
        print(f"\n{len(replaying)} answers while replaying (slowest {max(s[4] for s in replaying) * 1000:.1f} ms), "
              f"then ready; {len(seen)} in all")
    finally:
        starting.join(timeout=30)
        assert daemon.stop() == 0


# ---------------------------------------------------------------------- the responder in-process


def _raw(address: tuple[str, int], data: bytes, ctx: Optional[ssl.SSLContext] = None) -> bytes:
    """Send ``data``, read until the server closes."""
    sock = socket.create_connection(address, timeout=5)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def test_responder_answers_and_hands_the_socket_back() -> None:
    listener = listening_socket()
    listener.setblocking(False)
    address = listener.getsockname()
    responder = ReplayResponder(listener)
    with responder:
        healthz = _raw(address, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert healthz.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in healthz
        assert healthz.endswith(b'{"status": "ok", "phase": "replaying"}')
        head = _raw(address, b"HEAD /healthz HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")  # no body
        readyz = _raw(address, b"GET /readyz?verbose=1 HTTP/1.1\r\n\r\n")
        assert readyz.startswith(b"HTTP/1.1 503 ") and readyz.endswith(b'{"status": "replaying"}')
        other = _raw(address, b"POST /api/v1/tubes/x/clear HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert other.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1\r\n" in other
        assert _raw(address, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert _raw(address, b"GET /healthz HTTP/1.1\r\nX: " + b"y" * 4500).startswith(b"HTTP/1.1 431 ")
        # A silent connection neither blocks the next probe nor lives past the head timeout.
        silent = socket.create_connection(address, timeout=5)
        started = time.monotonic()
        assert _raw(address, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 0.5
        assert silent.recv(10) == b""  # closed by the server
        assert HEAD_TIMEOUT_S - 0.2 < time.monotonic() - started < HEAD_TIMEOUT_S + 1.0
        silent.close()
        half = socket.create_connection(address, timeout=5)
        half.sendall(b"GET /hea")  # still sending its head when replay ends
        time.sleep(0.1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < STOP_GRACE_S + 0.5  # stopped within the grace
    assert half.recv(10) == b""  # closed at hand-over
    half.close()
    assert responder.answered == 7
    # After hand-over the socket is the caller's again: a connection waits in
    # the backlog for the next server (hypercorn), none is lost.
    late = socket.create_connection(address, timeout=5)
    late.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
    listener.setblocking(True)
    listener.settimeout(5)
    accepted, _ = listener.accept()
    with accepted, late:
        assert accepted.recv(100) == b"GET /healthz HTTP/1.1\r\n\r\n"
    listener.close()


def test_responder_speaks_https_and_checks_client_certificates() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    good = ssl.create_default_context()
    ca.configure_trust(good)
    ca.issue_cert("probe", common_name="probe").configure_cert(good)
    anonymous = ssl.create_default_context()
    ca.configure_trust(anonymous)
    listener = listening_socket()
    address = listener.getsockname()
    with ReplayResponder(listener, server_ctx):
        reply = _raw(address, b"GET /healthz HTTP/1.1\r\n\r\n", good)
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b'"phase": "replaying"}')
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if _raw(address, b"GET /healthz HTTP/1.1\r\n\r\n", anonymous):
                raise AssertionError("answered without a client certificate")
            raise ConnectionError("closed without an answer")  # EOF: refused too
        # Plain text to the TLS port: closed, no answer.
        try:
            plain = _raw(address, b"GET /healthz HTTP/1.1\r\n\r\n")
        except ConnectionError:
            plain = b""
        assert not plain.startswith(b"HTTP/1.1 200")
    listener.close()
