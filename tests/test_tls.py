"""TLS and mutual TLS on the beanstalk protocol (--tls-listen), and --max-connections.

Certificates are made per test session with trustme; every daemon is a real
subprocess and every client a real socket.  greenstalk takes an already
connected (here: TLS-wrapped) socket, so a stock client runs over TLS unchanged.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import greenstalk
import pytest
import trustme

from conftest import Daemon, beanstalk_py_argv, free_port

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _files(tmp: Path, ca: trustme.CA) -> dict[str, str]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"cert": tmp / "server.pem", "key": tmp / "server.key", "ca": tmp / "ca.pem"}
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {name: str(path) for name, path in paths.items()}


class TLSDaemon:
    def __init__(self, daemon: Daemon, tls_port: int, files: dict[str, str]) -> None:
        self.daemon = daemon
        self.tls_port = tls_port
        self.files = files

    def plain(self) -> socket.socket:
        return self.daemon.connect()

    def tls(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _start(tmp: Path, ca: trustme.CA, *extra: str, mutual: bool = False) -> TLSDaemon:
    files = _files(tmp, ca)
    port, tls_port = free_port(), free_port()
    argv = beanstalk_py_argv(port, "--tls-listen", f"127.0.0.1:{tls_port}",
                             "--tls-cert", files["cert"], "--tls-key", files["key"], *extra)
    if mutual:
        argv += ["--tls-client-ca", files["ca"]]
    daemon = Daemon(argv, port=port).start()
    # The TLS port is bound before the plain one answers.
    return TLSDaemon(daemon, tls_port, files)


@pytest.fixture
def tls_daemon(tmp_path: Path, ca: trustme.CA) -> Iterator[TLSDaemon]:
    d = _start(tmp_path, ca)
    try:
        yield d
    finally:
        assert d.daemon.stop() == 0


@pytest.fixture
def mtls_daemon(tmp_path: Path, ca: trustme.CA) -> Iterator[TLSDaemon]:
    d = _start(tmp_path, ca, mutual=True)
    try:
        yield d
    finally:
        d.daemon.stop()


def _client_context(ca: trustme.CA, cert: "trustme.LeafCert | None" = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def _stats(sock: socket.socket) -> dict[str, str]:
    sock.sendall(b"stats\r\n")
    data = b""
    while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    body = data.split(b"\r\n", 1)[1]
    return dict(line.split(": ", 1) for line in body.decode().splitlines()[1:] if ": " in line)


def _stderr_until(daemon: Daemon, text: str, timeout: float = 5.0) -> str:
    """The daemon's stderr once it contains ``text`` (the daemon keeps running)."""
    assert daemon.proc is not None and daemon.proc.stderr is not None
    import os
    import selectors

    fd = daemon.proc.stderr.fileno()
    os.set_blocking(fd, False)
    seen = ""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        if sel.select(0.1):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    sel.close()
    return seen


def test_greenstalk_over_tls(tls_daemon: TLSDaemon, ca: trustme.CA) -> None:
    ctx = _client_context(ca)
    with greenstalk.Client(tls_daemon.tls(ctx), use="mail", watch="mail") as client:
        job_id = client.put("hello over TLS", priority=7, ttr=30)
        job = client.reserve(timeout=2)
        assert (job.id, job.body) == (job_id, "hello over TLS")
        assert client.stats_job(job)["state"] == "reserved"
        client.delete(job)
        with pytest.raises(greenstalk.TimedOutError):
            client.reserve(timeout=0)
    # The same queue on the plain port: one store behind both listeners.
    with tls_daemon.plain() as sock:
        stats = _stats(sock)
    assert (stats["cmd-put"], stats["cmd-delete"], stats["total-jobs"]) == ("1", "1", "1")


def test_tls_and_plain_clients_share_the_queue(tls_daemon: TLSDaemon, ca: trustme.CA) -> None:
    ctx = _client_context(ca)
    with tls_daemon.tls(ctx) as worker, tls_daemon.plain() as producer:
        worker.sendall(b"reserve-with-timeout 5\r\n")
        time.sleep(0.2)  # the worker is now blocked in its reserve, over TLS
        producer.sendall(b"put 0 0 60 5\r\nhello\r\n")
        assert producer.recv(100) == b"INSERTED 1\r\n"
        got = b""
        while not got.endswith(b"hello\r\n"):
            got += worker.recv(100)
        assert got == b"RESERVED 1 5\r\nhello\r\n"


def test_mutual_tls_admits_a_client_with_a_certificate(mtls_daemon: TLSDaemon, ca: trustme.CA) -> None:
    ctx = _client_context(ca, ca.issue_cert("worker-1"))
    with mtls_daemon.tls(ctx) as sock:
        sock.sendall(b"put 0 0 60 2\r\nok\r\n")
        assert sock.recv(100) == b"INSERTED 1\r\n"


def test_mutual_tls_rejects_a_client_without_a_certificate(mtls_daemon: TLSDaemon, ca: trustme.CA) -> None:
    ctx = _client_context(ca)  # trusts the server, presents nothing
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with mtls_daemon.tls(ctx) as sock:
            sock.sendall(b"put 0 0 60 2\r\nno\r\n")
            # TLS 1.3: the server's alert may only surface on the first read.
            if not sock.recv(100):
                raise ConnectionError("closed")
    log = _stderr_until(mtls_daemon.daemon, "TLS handshake")
    assert "TLS handshake with 127.0.0.1:" in log and "no certificate" in log, log
    # It never reached the store: no connection counted, no command, no job.
    with mtls_daemon.plain() as sock:
        stats = _stats(sock)
    assert (stats["total-connections"], stats["cmd-put"], stats["total-jobs"]) == ("2", "0", "0")


def test_mutual_tls_rejects_an_expired_or_foreign_certificate(mtls_daemon: TLSDaemon, ca: trustme.CA) -> None:
    expired = ca.issue_cert("old-worker", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                            not_before=datetime.datetime(2019, 1, 1, tzinfo=datetime.timezone.utc))
    foreign = trustme.CA().issue_cert("stranger")
    for cert, reason in ((expired, "certificate has expired"), (foreign, "unable to get local issuer")):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with mtls_daemon.tls(_client_context(ca, cert)) as sock:
                sock.sendall(b"stats\r\n")
                if not sock.recv(100):
                    raise ConnectionError("closed")
        log = _stderr_until(mtls_daemon.daemon, reason)
        assert "certificate rejected" in log and reason in log, log
        time.sleep(1.1)  # failure lines are limited to one a second


def test_an_idle_tls_client_is_closed_after_the_handshake_timeout(tmp_path: Path, ca: trustme.CA) -> None:
    d = _start(tmp_path, ca, "--tls-handshake-timeout", "0.5", "--max-connections", "1")
    try:
        with socket.create_connection(("127.0.0.1", d.tls_port), timeout=5) as idle:
            started = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server, no handshake ever sent
            assert 0.3 < time.monotonic() - started < 3
        assert "no handshake within 0.5 s" in _stderr_until(d.daemon, "no handshake")
        # Its slot was given back: the one allowed connection is free again.
        with d.plain() as sock:
            sock.sendall(b"list-tube-used\r\n")
            assert sock.recv(100) == b"USING default\r\n"
    finally:
        d.daemon.stop()


def test_plain_text_on_the_tls_port_is_refused(tls_daemon: TLSDaemon) -> None:
    with socket.create_connection(("127.0.0.1", tls_daemon.tls_port), timeout=5) as sock:
        sock.sendall(b"stats\r\n")
        assert sock.recv(100) == b""
    assert "TLS handshake with" in _stderr_until(tls_daemon.daemon, "TLS handshake")


@pytest.mark.parametrize("io_mode", ["epoll", "tasks"])
def test_max_connections_refuses_past_the_limit_and_keeps_serving(io_mode: str, tmp_path: Path,
                                                                  ca: trustme.CA) -> None:
    port = free_port()
    daemon = Daemon(beanstalk_py_argv(port, "--max-connections", "2"), port=port,
                    env={"BEANSTALK_PY_IO": io_mode}).start()
    try:
        with daemon.connect() as a, daemon.connect() as b:
            for sock in (a, b):
                sock.sendall(b"list-tube-used\r\n")
                assert sock.recv(100) == b"USING default\r\n"
            for _ in range(3):
                with daemon.connect() as extra:
                    assert extra.recv(100) == b""  # accepted and closed at once
            a.sendall(b"put 0 0 60 1\r\nx\r\n")
            assert a.recv(100) == b"INSERTED 1\r\n"
            stats = _stats(b)
            assert stats["current-connections"] == "2"  # refused ones never counted
        log = _stderr_until(daemon, "connection limit")
        assert log.count("connection limit (2) reached") == 1, log  # at most one line a second
        # Slots come back once the server has seen the clients leave.
        deadline = time.monotonic() + 5
        while True:
            with daemon.connect() as c:
                try:
                    c.sendall(b"peek 1\r\n")
                    reply = c.recv(100)
                except ConnectionError:
                    reply = b""
            if reply or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply == b"FOUND 1 1\r\nx\r\n"
    finally:
        assert daemon.stop() == 0


def test_bad_certificate_files_exit_with_a_clear_message(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    result = subprocess.run(
        [sys.executable, "-m", "beanstalk_py", "-p", str(free_port()), "--tls-listen", f"127.0.0.1:{free_port()}",
         "--tls-cert", missing, "--tls-key", missing],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "cannot load --tls-cert" in result.stderr and "nope.pem" in result.stderr
