"""Who may use the HTTP listener: bearer tokens and roles (401/403), the token
file's mode, tokens never in a log, the loopback rule without tokens, unix
sockets, and the message when the [http] extra is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Daemon, free_port, listening_socket, start_beanstalk_py
from http_rig import Http, start_with_http

pytestmark = pytest.mark.daemon

VIEWER = "viewer-7f3a9c2e51d84b06"
OPERATOR = "operator-b81d4e0c93a27f55"


def _token_file(tmp_path: Path, mode: int = 0o600) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"# who may use the plane\n{VIEWER} viewer\n{OPERATOR} operator\n")
    path.chmod(mode)
    return str(path)


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """The daemon with a beanstalk port of its own, expected to exit at start."""
    return subprocess.run([sys.executable, "-m", "beanstalk_py", "-p", str(free_port()), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_tokens_and_roles(tmp_path: Path) -> None:
    daemon, anonymous = start_with_http("--http-tokens", _token_file(tmp_path))
    try:
        for path in ("/metrics", "/api/v1/stats", "/api/v1/tubes", "/nothing"):
            reply = anonymous.get(path)
            assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer"), path
        # The probes answer without a token: they tell only "running" / "ready".
        assert anonymous.get("/healthz").json == {"status": "ok"}
        assert anonymous.get("/readyz").status == 200
        assert anonymous.with_token("not-a-token-at-all-123").get("/api/v1/stats").status == 401
        assert anonymous.get("/api/v1/stats", headers={"Authorization": f"Basic {OPERATOR}"}).status == 401
        viewer, operator = anonymous.with_token(VIEWER), anonymous.with_token(OPERATOR)
        with daemon.connect() as sock:
            sock.sendall(b"put 0 0 60 1\r\nx\r\n")
            assert sock.recv(100) == b"INSERTED 1\r\n"
        assert viewer.get("/api/v1/tubes/default").json["current-jobs-ready"] == 1
        assert viewer.get("/metrics").status == 200
        # Host is not checked with tokens: the token is the credential.
        assert viewer.get("/healthz", headers={"Host": "queue.example.com"}).status == 200
        refused = viewer.post("/api/v1/tubes/default/clear", {"state": "ready", "all": True})
        assert refused.status == 403 and "operator" in refused.json["error"]
        assert viewer.post("/api/v1/jobs/1/delete").status == 403
        assert operator.post("/api/v1/tubes/default/clear", {"state": "ready", "all": True}).json == {"count": 1}
    finally:
        assert daemon.stop() == 0
    assert daemon.proc is not None
    log = daemon.proc.stderr.read().decode() + daemon.proc.stdout.read().decode()
    assert "http: token line 3 (operator): clear tube default ready: 1 job" in log
    assert "2 bearer tokens" in log
    assert VIEWER not in log and OPERATOR not in log


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    for mode in (0o644, 0o640):
        result = _run("--http", f"127.0.0.1:{free_port()}", "--http-tokens", _token_file(tmp_path, mode))
        assert result.returncode == 2
        assert "chmod 600" in result.stderr and VIEWER not in result.stderr and OPERATOR not in result.stderr
    result = _run("--http", f"127.0.0.1:{free_port()}", "--http-tokens", str(tmp_path / "missing"))
    assert result.returncode == 2 and "missing" in result.stderr


def test_a_non_loopback_address_needs_tokens(tmp_path: Path) -> None:
    for address in ("0.0.0.0", "", "[::]"):
        result = _run("--http", f"{address}:{free_port()}")
        assert result.returncode == 2, address
        assert "loopback" in result.stderr and "--http-tokens" in result.stderr
    # With tokens it serves every interface, and asks every request for a token.
    port = free_port()
    daemon = start_beanstalk_py("--http", f"0.0.0.0:{port}", "--http-tokens", _token_file(tmp_path))
    try:
        http = Http(port).wait()
        assert http.get("/api/v1/stats").status == 401
        assert http.with_token(VIEWER).get("/api/v1/stats").status == 200
    finally:
        assert daemon.stop() == 0


def test_usage_errors() -> None:
    assert _run("--http-tokens", "/dev/null").returncode == 5
    for spec in ("8080", "localhost", "unix:", "host:port"):
        result = _run("--http", spec)
        assert result.returncode == 5 and "--http" in result.stderr, spec


def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    daemon = start_beanstalk_py("--http", f"unix:{path}")
    try:
        http = Http(unix=path).wait()
        assert http.get("/readyz").json == {"status": "ready"}
        # No Host check on a unix socket: only local users can reach it.
        assert http.get("/api/v1/stats", headers={"Host": "anything"}).status == 200
        with daemon.connect() as sock:
            sock.sendall(b"put 0 0 60 1\r\nx\r\n")
            sock.recv(100)
        assert http.post("/api/v1/jobs/1/delete").json == {"count": 1}
    finally:
        assert daemon.stop() == 0
    assert daemon.proc is not None
    assert "http: unix socket (operator): delete job 1: 1 job" in daemon.proc.stderr.read().decode()


def test_without_the_extra_http_says_what_to_install() -> None:
    # find_spec answers None for a module set to None in sys.modules: as if not installed.
    script = ("import sys; sys.modules['starlette'] = None; from beanstalk_py.main import main; "
              f"sys.exit(main(['-p', '{free_port()}', '--http', '127.0.0.1:{free_port()}']))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "pip install 'beanstalk-py[http]'" in result.stderr


def test_without_http_nothing_of_the_extra_is_imported() -> None:
    script = ("import sys, threading; from beanstalk_py import main as m; "
              "t = threading.Timer(1.5, lambda: __import__('os').kill(__import__('os').getpid(), 15)); t.start(); "
              f"code = m.main(['-p', '{free_port()}']); "
              "print(sorted(n for n in sys.modules if n.split('.')[0] in ('starlette', 'hypercorn'))); "
              "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_listener_bound_before_serving_and_sigterm_exits_cleanly() -> None:
    port = free_port()
    daemon = Daemon([sys.executable, "-m", "beanstalk_py", "-V", "--http", f"127.0.0.1:{port}"],
                    listener=listening_socket()).start()
    try:
        Http(port).wait()
    finally:
        assert daemon.stop() == 0
    assert daemon.proc is not None
    assert f"127.0.0.1:{port} (HTTP)" in daemon.proc.stdout.read().decode()
