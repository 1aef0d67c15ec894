"""HTTPS and mutual TLS on the HTTP listener (--http-cert, --http-key, --http-client-ca):
who gets through the handshake, how writes name a certificate, files checked at
start-up (exit 2), and client certificates as the credential off loopback."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import trustme

from conftest import Daemon, free_port, start_beanstalk_py
from beanstalk_py.http.auth import certificate_name

pytestmark = pytest.mark.daemon

TOKEN = "operator-5c0ffee5c0ffee5c0ffee"


@dataclass
class Pki:
    """A CA, the server's certificate and key, a good client and one from another CA."""

    ca: trustme.CA
    cert: str
    key: str
    ca_file: str
    alice: trustme.LeafCert  # CN=alice, signed by ca
    mallory: trustme.LeafCert  # CN=alice too, but signed by another CA

    def context(self, client: Optional[trustme.LeafCert] = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if client is not None:
            client.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, str(cert), str(key), str(ca_file), ca.issue_cert("alice@example.org", common_name="alice"),
               other.issue_cert("alice@example.org", common_name="alice"))


def _request(port: int, ctx: Optional[ssl.SSLContext], method: str = "GET", path: str = "/healthz",
             body: Any = None, headers: Optional[dict[str, str]] = None) -> tuple[int, bytes]:
    """One request; ``ctx`` None is plain HTTP."""
    if ctx is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _refused(port: int, ctx: Optional[ssl.SSLContext]) -> str:
    """How a request that must not get through ended: a TLS alert, EOF or a reset
    (never an answer, let alone a 200)."""
    try:
        status, _ = _request(port, ctx, path="/api/v1/stats")
    except (ssl.SSLError, ConnectionError, http.client.HTTPException) as exc:
        return type(exc).__name__
    raise AssertionError(f"answered {status}")


def _start(pki: Pki, *extra: str, http_host: str = "127.0.0.1") -> tuple[Daemon, int]:
    port = free_port()
    daemon = start_beanstalk_py("--http", f"{http_host}:{port}", "--http-cert", pki.cert, "--http-key", pki.key,
                                *extra)
    ctx = pki.context(pki.alice)
    deadline = time.monotonic() + 15
    while True:  # the listener starts once the beanstalk port serves
        try:
            if _request(port, ctx)[0] in (200, 401):
                return daemon, port
        except (OSError, ssl.SSLError, http.client.HTTPException):
            if time.monotonic() > deadline:
                daemon.stop()
                raise
        time.sleep(0.05)


def _stderr(daemon: Daemon) -> str:
    assert daemon.stop() == 0 and daemon.proc is not None
    return daemon.proc.stderr.read().decode()


def test_mutual_tls_lets_only_certificates_of_the_ca_in(pki: Pki) -> None:
    daemon, port = _start(pki, "--http-client-ca", pki.ca_file)
    try:
        good = pki.context(pki.alice)
        assert _request(port, good) == (200, b'{"status":"ok"}')
        assert _request(port, good, path="/api/v1/stats")[0] == 200
        # The certificate is the credential: no Host check (a browser cannot be
        # made to present it to a rebound name whose server certificate fails).
        assert _request(port, good, headers={"Host": "queue.example.com"})[0] == 200
        assert _request(port, good, "POST", "/api/v1/tubes/default/pause", {"delay": 0})[0] == 200
        _refused(port, pki.context())  # no client certificate
        _refused(port, pki.context(pki.mallory))  # the same name from another CA
        _refused(port, None)  # plain HTTP to the TLS port
        assert _request(port, good)[0] == 200  # none of that hurt the listener
    finally:
        log = _stderr(daemon)
    assert "serving https on" in log and "client certificates required" in log
    # Writes name the certificate's subject.
    assert "http: client certificate CN=alice (operator): pause tube default for 0 s" in log
    assert "TLS handshake with HTTP client 127.0.0.1:" in log  # the refusals, logged (rate-limited)


def test_https_without_client_certificates(pki: Pki) -> None:
    daemon, port = _start(pki)
    try:
        assert _request(port, pki.context()) == (200, b'{"status":"ok"}')
        assert _request(port, pki.context(), path="/api/v1/stats")[0] == 200
        _refused(port, None)
        # Without credentials the loopback rule's Host check still holds.
        assert _request(port, pki.context(), headers={"Host": "evil.example"})[0] == 403
    finally:
        log = _stderr(daemon)
    assert "serving https on" in log and "no tokens: loopback only" in log


def test_mutual_tls_and_tokens_need_both(pki: Pki, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} operator\n")
    tokens.chmod(0o600)
    daemon, port = _start(pki, "--http-client-ca", pki.ca_file, "--http-tokens", str(tokens))
    try:
        good = pki.context(pki.alice)
        assert _request(port, good, path="/api/v1/stats")[0] == 401  # a certificate alone
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert _request(port, good, path="/api/v1/stats", headers=bearer)[0] == 200
        assert _request(port, good, "POST", "/api/v1/tubes/default/pause", {"delay": 0}, bearer)[0] == 200
        try:  # a token alone: refused in the handshake
            status, _ = _request(port, pki.context(), path="/api/v1/stats", headers=bearer)
            raise AssertionError(f"answered {status}")
        except (ssl.SSLError, ConnectionError, http.client.HTTPException):
            pass
    finally:
        log = _stderr(daemon)
    assert "http: token line 1 (certificate CN=alice) (operator): pause tube default" in log
    assert TOKEN not in log


def test_client_ca_is_a_credential_off_loopback(pki: Pki) -> None:
    """--http-client-ca alone allows a non-loopback address; --http-cert alone does not."""
    daemon, port = _start(pki, "--http-client-ca", pki.ca_file, http_host="0.0.0.0")
    try:
        assert _request(port, pki.context(pki.alice), path="/api/v1/stats")[0] == 200
        _refused(port, pki.context())
    finally:
        assert daemon.stop() == 0
    refused = _run("--http", f"0.0.0.0:{free_port()}", "--http-cert", pki.cert, "--http-key", pki.key)
    assert refused.returncode == 2
    assert "loopback" in refused.stderr and "--http-client-ca" in refused.stderr


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beanstalk_py", "-p", str(free_port()), *args],
                          capture_output=True, text=True, timeout=30)


def test_bad_tls_files_stop_the_daemon(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    missing = str(tmp_path / "missing.pem")
    http = ["--http", f"127.0.0.1:{free_port()}"]
    cases = [
        (["--http-cert", missing, "--http-key", pki.key], f"--http-cert {missing}: No such file"),
        (["--http-cert", pki.cert, "--http-key", missing], f"--http-key {missing}: No such file"),
        (["--http-cert", str(garbage), "--http-key", pki.key], f"--http-cert {garbage} / --http-key"),
        (["--http-cert", pki.cert, "--http-key", str(other_key)], f"--http-cert {pki.cert} / --http-key {other_key}"),
        (["--http-cert", pki.cert, "--http-key", pki.key, "--http-client-ca", str(garbage)],
         f"--http-client-ca {garbage}: "),
        (["--http-cert", pki.cert, "--http-key", pki.key, "--http-client-ca", missing],
         f"--http-client-ca {missing}: No such file"),
    ]
    for args, message in cases:
        result = _run(*http, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_certificate_names_for_log_lines() -> None:
    assert certificate_name({"subject": ((("organizationName", "Acme"),), (("commonName", "alice"),))}) == "CN=alice"
    assert certificate_name({"subject": (), "subjectAltName": (("DNS", "worker-3"),)}) == "DNS:worker-3"
    assert certificate_name({"subject": ((("commonName", "eve\nbeanstalk-py: forged"),),)}) == \
        "CN=eve?beanstalk-py: forged"
    assert certificate_name({"subject": ((("commonName", "x" * 500),),)}) == "CN=" + "x" * 125
    assert certificate_name({}) is None and certificate_name(None) is None
