"""The store's connection options against real redis-servers: AUTH from the
URL or from a private file, a refused password (a clear exit, not retried),
TLS with our CA (and a client certificate when Redis asks for one)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import greenstalk
import pytest

from conftest import Daemon, listening_socket, start_beanstalk_py
from redis_rig import RedisServer

pytestmark = pytest.mark.daemon


def _client(daemon: Daemon) -> greenstalk.Client:
    return greenstalk.Client((daemon.host, daemon.port))


def _works(daemon: Daemon) -> None:
    with _client(daemon) as c:
        job_id = c.put(b"hello")
        job = c.reserve(timeout=2)
        assert job.id == job_id
        c.delete(job)


def test_auth_from_the_url_and_from_a_private_file(tmp_path: Path) -> None:
    server = RedisServer(extra=("--requirepass", "s3cr:et")).start()
    try:
        daemon = start_beanstalk_py("--store", f"redis://:s3cr%3Aet@127.0.0.1:{server.port}/0")
        try:
            _works(daemon)
        finally:
            assert daemon.stop() == 0
        secret = tmp_path / "redis-password"
        secret.write_text("s3cr:et\n")
        secret.chmod(0o600)
        daemon = start_beanstalk_py("--store", f"redis://127.0.0.1:{server.port}/0",
                                    "--store-password-file", str(secret))
        try:
            _works(daemon)
        finally:
            assert daemon.stop() == 0
        secret.chmod(0o644)  # readable by others: refused, naming the file
        daemon = Daemon([sys.executable, "-m", "beanstalk_py", "--store", f"redis://127.0.0.1:{server.port}/0",
                         "--store-password-file", str(secret)], listener=listening_socket())
        with pytest.raises(RuntimeError, match="chmod 600"):
            daemon.start()
        assert daemon.proc is not None and daemon.proc.returncode == 2
    finally:
        server.stop()


def test_a_wrong_password_is_a_clear_exit_at_once() -> None:
    server = RedisServer(extra=("--requirepass", "right")).start()
    try:
        daemon = Daemon([sys.executable, "-m", "beanstalk_py", "--store", f"redis://:wrong@127.0.0.1:{server.port}/0"],
                        listener=listening_socket())
        with pytest.raises(RuntimeError, match="refused AUTH") as caught:
            daemon.start(timeout=8)  # not retried for CONNECT_TIMEOUT_S: another try cannot help
        said = str(caught.value).split("exited 2:", 1)[1]  # what it wrote (the message has argv first)
        assert "wrong" not in said  # never the password
        assert daemon.proc is not None and daemon.proc.returncode == 2
    finally:
        server.stop()


@pytest.mark.parametrize("client_certificate", [False, True])
def test_tls_with_our_ca(tmp_path: Path, client_certificate: bool) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "redis.pem", tmp_path / "redis.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    extra = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
             "--tls-auth-clients", "yes" if client_certificate else "no"]
    # A plain port for the rig's PING, the TLS one for the front end.
    tls_port = _free_port()
    server = RedisServer(extra=("--tls-port", str(tls_port), *extra)).start()
    args = ["--store", f"rediss://127.0.0.1:{tls_port}/0", "--store-tls-ca", str(ca_file)]
    if client_certificate:
        mine = ca.issue_cert("front-end.example")
        mine_cert, mine_key = tmp_path / "fe.pem", tmp_path / "fe.key"
        mine.cert_chain_pems[0].write_to_path(str(mine_cert))
        mine.private_key_pem.write_to_path(str(mine_key))
        os.chmod(mine_key, 0o600)
        args += ["--store-tls-cert", str(mine_cert), "--store-tls-key", str(mine_key)]
    try:
        daemon = start_beanstalk_py(*args)
        try:
            _works(daemon)
        finally:
            assert daemon.stop() == 0
        # Without our CA the certificate is not trusted: a clear exit.
        daemon = Daemon([sys.executable, "-m", "beanstalk_py", "--store", f"rediss://127.0.0.1:{tls_port}/0"],
                        listener=listening_socket())
        with pytest.raises(RuntimeError, match="TLS with redis at 127.0.0.1"):
            daemon.start(timeout=30)
    finally:
        server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
