"""`beanstalk-py admin --url`: jobs (paged with cursors), clear and move (dry
runs, then for real, checked with stats-tube over the protocol), export
through the HTTP API against export --binlog of the same daemon, tokens
(viewer and operator), unix sockets, and the exit codes (1 not found,
2 usage, 3 cannot connect, 4 refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from beanstalk_py.admin.api import read_token_file
from beanstalk_py.admin.client import UsageError
from conftest import Daemon, free_port, start_beanstalk_py
from http_rig import Http, beanstalk, start_with_http, yaml_dict
from setup_conn import Conn

pytestmark = pytest.mark.daemon

VIEWER = "viewer-0c5e1b7a93d24f68"
OPERATOR = "operator-6a2f9d04b7e13c58"


def admin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beanstalk_py", "admin", *args], capture_output=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "BEANSTALK_PY_TOKEN"}
                          | (env or {}))


def where(daemon: Daemon, http: Http) -> list[str]:
    return ["--addr", f"127.0.0.1:{daemon.port}", "--url", f"http://127.0.0.1:{http.port}"]


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def tube_stats(daemon: Daemon, tube: str) -> dict[str, int]:
    stats = yaml_dict(beanstalk(daemon, f"stats-tube {tube}".encode()))
    return {state: int(stats[f"current-jobs-{state}"]) for state in ("ready", "reserved", "delayed", "buried")}


@pytest.fixture
def plane() -> Iterator[tuple[Daemon, Http]]:
    daemon, http = start_with_http()
    try:
        yield daemon, http
    finally:
        assert daemon.stop() == 0


def put_many(daemon: Daemon, tube: str, bodies: list[tuple[int, bytes]], delay: int = 0) -> None:
    c = Conn(daemon)
    c.ask(f"use {tube}\r\n".encode(), f"USING {tube}\r\n".encode())
    for pri, body in bodies:
        c.sock.sendall(b"put %d %d 60 %d\r\n%s\r\n" % (pri, delay, len(body), body))
    for _ in bodies:
        while b"\r\n" not in c.buf:
            c.buf += c.sock.recv(65536)
        line, _, c.buf = c.buf.partition(b"\r\n")
        assert line.startswith(b"INSERTED ")
    c.close()


# ---------------------------------------------------------------------- jobs


def test_jobs_pages_in_serving_order(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    # Priorities out of id order: serving order is (pri, id).
    put_many(daemon, "mail", [((7 * i) % 12, f"mail {i}\r\nline 2".encode()) for i in range(12)])
    put_many(daemon, "a/b", [(5, b"\x00\xffraw")])
    served = sorted(((7 * i) % 12, i + 1) for i in range(12))

    table = admin(*where(daemon, http), "jobs", "mail", "--limit", "10", "--page", "3")
    lines = ok(table).splitlines()
    assert lines[0].split() == ["ID", "PRI", "AGE", "TIME-LEFT", "SIZE", "BODY"]
    rows = [line.split(None, 5) for line in lines[1:]]
    assert [(int(row[1]), int(row[0])) for row in rows] == served[:10]
    for row in rows:  # control characters escaped: one line a job
        assert row[3:] == ["0", str(len(f"mail {int(row[0]) - 1}\r\nline 2")), f"mail {int(row[0]) - 1}\\r\\nline 2"]
    assert table.stderr == b"more ready jobs in tube mail than the 10 shown (--limit N)\n"

    # JSON lines, all 12 over four pages of 3, as the API gives them.
    listed = [json.loads(line) for line in ok(admin(*where(daemon, http), "--json", "jobs", "mail",
                                                    "--page", "3")).splitlines()]
    assert [(job["pri"], job["id"]) for job in listed] == served
    assert listed[0]["preview"] == f"mail {served[0][1] - 1}\r\nline 2" and listed[0]["state"] == "ready"
    assert http.json("/api/v1/tubes/mail/jobs?limit=12")["jobs"] == listed

    # A tube named with "/", a body that is not UTF-8 (hex), other states.
    assert ok(admin(*where(daemon, http), "jobs", "a/b")).splitlines()[1].split()[-1] == "hex:00ff726177"
    put_many(daemon, "mail", [(1, b"later")], delay=300)
    delayed = ok(admin(*where(daemon, http), "jobs", "mail", "--state", "delayed")).splitlines()
    assert len(delayed) == 2 and 298 <= int(delayed[1].split()[3]) <= 300
    empty = admin(*where(daemon, http), "jobs", "mail", "--state", "buried")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, b"", b"no buried jobs in tube mail\n")

    missing = admin(*where(daemon, http), "jobs", "nothing")
    assert (missing.returncode, missing.stderr) == (1, b"beanstalk-py admin: no tube nothing\n")


def test_jobs_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    daemon = start_beanstalk_py("--http", f"unix:{path}")
    try:
        Http(unix=path).wait()
        put_many(daemon, "default", [(3, b"hello")])
        lines = ok(admin("--url", f"unix:{path}", "jobs", "default")).splitlines()
        assert lines[1].split() == ["1", "3", lines[1].split()[2], "0", "5", "hello"]
        assert ok(admin("--url", f"unix:{path}", "clear", "default", "--state", "ready")) == \
            "deleted 1 ready jobs from tube default\n"
    finally:
        assert daemon.stop() == 0
    gone = admin("--url", f"unix:{path}", "jobs", "default")
    assert gone.returncode == 3 and gone.stderr.decode().startswith(f"beanstalk-py admin: cannot connect to unix:{path}")


# ---------------------------------------------------------------------- clear and move


def test_clear_and_move_dry_run_then_for_real(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    put_many(daemon, "mail", [(i, b"job %d" % i) for i in range(8)])
    put_many(daemon, "mail", [(9, b"late")] * 3, delay=600)
    c = Conn(daemon)
    c.ask(b"watch mail\r\n", b"WATCHING 2\r\n")
    for job_id in (1, 2, 3):
        c.ask(b"reserve-job %d\r\n" % job_id, b"RESERVED %d 5\r\njob %d\r\n" % (job_id, job_id - 1))
        c.ask(b"bury %d 0\r\n" % job_id, b"BURIED\r\n")
    c.ask(b"reserve-job 4\r\n", b"RESERVED 4 5\r\njob 3\r\n")  # held: never cleared or moved
    assert tube_stats(daemon, "mail") == {"ready": 4, "reserved": 1, "delayed": 3, "buried": 3}
    at = where(daemon, http)

    assert ok(admin(*at, "clear", "mail", "--state", "buried", "--dry-run")) == \
        "would delete 3 buried jobs from tube mail (dry run)\n"
    assert ok(admin(*at, "clear", "mail", "--state", "buried", "--limit", "2", "--dry-run")) == \
        "would delete 2 buried jobs from tube mail (dry run)\n"
    assert tube_stats(daemon, "mail")["buried"] == 3
    assert ok(admin(*at, "clear", "mail", "--state", "buried", "--limit", "2")) == \
        "deleted 2 buried jobs from tube mail\n"
    assert tube_stats(daemon, "mail")["buried"] == 1
    assert ok(admin(*at, "clear", "mail", "--state", "buried", "--all")) == "deleted 1 buried jobs from tube mail\n"

    assert ok(admin(*at, "move", "mail", "later/on", "--state", "delayed", "--dry-run")) == \
        "would move 3 delayed jobs from tube mail to tube later/on (dry run)\n"
    assert tube_stats(daemon, "mail") == {"ready": 4, "reserved": 1, "delayed": 3, "buried": 0}
    assert ok(admin(*at, "move", "mail", "later/on", "--state", "delayed")) == \
        "moved 3 delayed jobs from tube mail to tube later/on\n"
    assert ok(admin(*at, "move", "mail", "other", "--state", "ready", "--limit", "3")) == \
        "moved 3 ready jobs from tube mail to tube other\n"
    assert tube_stats(daemon, "mail") == {"ready": 1, "reserved": 1, "delayed": 0, "buried": 0}
    assert tube_stats(daemon, "later/on") == {"ready": 0, "reserved": 0, "delayed": 3, "buried": 0}
    assert tube_stats(daemon, "other") == {"ready": 3, "reserved": 0, "delayed": 0, "buried": 0}
    # The most urgent ready jobs went first (pri 0-2 were buried, 3 is reserved).
    moved = [job["pri"] for job in http.json("/api/v1/tubes/other/jobs")["jobs"]]
    assert moved == [4, 5, 6]

    # The protocol fallback has a dry run too; move without --url is a usage error.
    assert ok(admin("--addr", f"127.0.0.1:{daemon.port}", "clear", "other", "--state", "ready", "--dry-run")) == \
        "would delete 3 ready jobs from tube other (dry run)\n"
    assert tube_stats(daemon, "other")["ready"] == 3
    no_url = admin("--addr", f"127.0.0.1:{daemon.port}", "move", "other", "mail", "--state", "ready")
    assert no_url.returncode == 2 and b"move needs the daemon's HTTP listener: give --url URL" in no_url.stderr

    for args in (["clear", "nothing", "--state", "ready"], ["move", "nothing", "x", "--state", "ready"]):
        missing = admin(*at, *args)
        assert (missing.returncode, missing.stderr) == (1, b"beanstalk-py admin: no tube nothing\n")
    same = admin(*at, "move", "other", "other", "--state", "ready")
    assert same.returncode == 2 and b"FROM and TO are the same tube" in same.stderr
    both = admin(*at, "clear", "other", "--state", "ready", "--all", "--limit", "2")
    assert both.returncode == 2 and b"not allowed with argument" in both.stderr
    c.close()


# ---------------------------------------------------------------------- export


def fill(daemon: Daemon) -> Conn:
    """Jobs in every state, a non-UTF-8 body, a tube named with "/"; job 6 is
    reserved by the returned connection, job 7 put and deleted."""
    c = Conn(daemon)
    c.ask(b"use mail\r\n", b"USING mail\r\n")
    c.ask(b"put 10 0 60 5\r\nhello\r\n", b"INSERTED 1\r\n")
    c.ask(b"put 20 100 30 5\r\nlater\r\n", b"INSERTED 2\r\n")
    c.ask(b"put 30 0 60 9\r\nbroken\r\nx\r\n", b"INSERTED 3\r\n")
    c.ask(b"reserve-job 3\r\n", b"RESERVED 3 9\r\nbroken\r\nx\r\n")
    c.ask(b"bury 3 31\r\n", b"BURIED\r\n")
    c.ask(b"use a/b\r\n", b"USING a/b\r\n")
    c.ask(b"put 0 0 120 4\r\n\x00\xff\xfe\r\r\n", b"INSERTED 4\r\n")
    c.ask("put 7 0 60 5\r\nété\r\n".encode(), b"INSERTED 5\r\n")
    c.ask(b"use work\r\n", b"USING work\r\n")
    c.ask(b"put 1024 0 60 4\r\ntask\r\n", b"INSERTED 6\r\n")
    c.ask(b"put 1024 0 60 4\r\ngone\r\n", b"INSERTED 7\r\n")
    c.ask(b"delete 7\r\n", b"DELETED\r\n")
    c.ask(b"reserve-job 6\r\n", b"RESERVED 6 4\r\ntask\r\n")
    return c


EXPECTED = [
    {"id": 1, "tube": "mail", "state": "ready", "pri": 10, "delay": 0, "ttr": 60, "body": "hello"},
    {"id": 2, "tube": "mail", "state": "delayed", "pri": 20, "delay": 100, "ttr": 30, "body": "later"},
    {"id": 3, "tube": "mail", "state": "buried", "pri": 31, "delay": 0, "ttr": 60, "body": "broken\r\nx"},
    {"id": 4, "tube": "a/b", "state": "ready", "pri": 0, "delay": 0, "ttr": 120, "body": "AP/+DQ==", "body_b64": True},
    {"id": 5, "tube": "a/b", "state": "ready", "pri": 7, "delay": 0, "ttr": 60, "body": "été"},
    {"id": 6, "tube": "work", "state": "ready", "pri": 1024, "delay": 0, "ttr": 60, "body": "task"},
]


def test_export_through_the_api_matches_export_binlog(tmp_path: Path) -> None:
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    daemon, http = start_with_http("-b", str(binlog))
    try:
        holder = fill(daemon)
        url = f"http://127.0.0.1:{http.port}"
        by_api = admin("--url", url, "export", "-")
        by_binlog = admin("export", "--binlog", str(binlog), "-")
        assert by_api.stderr == f"exported 6 jobs (4 ready, 1 delayed, 1 buried) from {url}\n".encode()
        assert by_binlog.returncode == 0, by_binlog.stderr
        api_jobs = [json.loads(line) for line in ok(by_api).splitlines()]
        binlog_jobs = [json.loads(line) for line in ok(by_binlog).splitlines()]
        # The time a delayed job has left is read at two moments (in whole seconds, rounded up).
        assert abs(api_jobs[1]["delay"] - binlog_jobs[1]["delay"]) <= 1 and 98 <= api_jobs[1]["delay"] <= 100
        api_jobs[1]["delay"] = binlog_jobs[1]["delay"] = 100
        assert api_jobs == binlog_jobs == EXPECTED
        assert [key for key in json.loads(by_api.stdout.splitlines()[3])] == list(EXPECTED[3])

        dump = tmp_path / "queue.jsonl"
        assert ok(admin("--url", url, "export", str(dump))) == \
            f"exported 6 jobs (4 ready, 1 delayed, 1 buried) from {url} to {dump}\n"
        assert len(dump.read_bytes().splitlines()) == 6
        # With both, --binlog is read.
        both = admin("--url", url, "export", "--binlog", str(binlog), "-")
        assert ok(both).count("\n") == 6 and str(binlog) in both.stderr.decode()
        holder.close()
    finally:
        assert daemon.stop() == 0


def test_export_of_bodies_over_the_api_cap(tmp_path: Path) -> None:
    """The API gives 64 KiB of a body: a longer one is read with peek on --addr,
    once that is known to be the same daemon."""
    daemon, http = start_with_http("-z", "200000")
    other = start_beanstalk_py()
    try:
        put_many(daemon, "big", [(1, b"x" * 70000), (2, b"small")])
        url = ["--url", f"http://127.0.0.1:{http.port}"]
        alone = admin(*url, "export", "-")
        assert alone.returncode == 2 and b"job 1 has a body of 70000 bytes" in alone.stderr
        assert b"give --addr or --unix too" in alone.stderr
        wrong = admin(*url, "--addr", f"127.0.0.1:{other.port}", "export", "-")
        assert wrong.returncode == 2 and b"is not the daemon behind" in wrong.stderr
        jobs = [json.loads(line) for line in ok(admin(*where(daemon, http), "export", "-")).splitlines()]
        assert [(job["id"], job["body"]) for job in jobs] == [(1, "x" * 70000), (2, "small")]
    finally:
        other.stop()
        assert daemon.stop() == 0


# ---------------------------------------------------------------------- tokens and errors


def _secret(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_read_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("# mine\n\n  secret-token-1234567  \n")
    path.chmod(0o600)
    assert read_token_file(str(path)) == "secret-token-1234567"
    path.chmod(0o640)
    with pytest.raises(UsageError, match="chmod 600"):
        read_token_file(str(path))
    path.write_text("secret operator\n")
    path.chmod(0o600)
    with pytest.raises(UsageError, match="the token alone"):
        read_token_file(str(path))
    with pytest.raises(UsageError, match="No such file"):
        read_token_file(str(tmp_path / "missing"))


def test_tokens_viewer_lists_operator_clears(tmp_path: Path) -> None:
    tokens = _secret(tmp_path / "tokens", f"{VIEWER} viewer\n{OPERATOR} operator\n")
    daemon, http = start_with_http("--http-tokens", tokens)
    try:
        put_many(daemon, "mail", [(1, b"a"), (2, b"b")])
        url = ["--url", f"http://127.0.0.1:{http.port}"]
        viewer = _secret(tmp_path / "viewer", f"# the viewer's token\n{VIEWER}\n")
        operator = _secret(tmp_path / "operator", f"{OPERATOR}\n")

        assert len(ok(admin(*url, "--token-file", viewer, "jobs", "mail")).splitlines()) == 3
        refused = admin(*url, "--token-file", viewer, "clear", "mail", "--state", "ready")
        assert refused.returncode == 4
        assert refused.stderr.decode() == (
            f"beanstalk-py admin: http://127.0.0.1:{http.port} refused POST /api/v1/tubes/mail/clear (403): "
            "token line 1 is a viewer; writes need an operator token\n")
        assert tube_stats(daemon, "mail")["ready"] == 2

        anonymous = admin(*url, "jobs", "mail")
        assert anonymous.returncode == 4 and b"asks for a token (401): give --token-file FILE" in anonymous.stderr
        wrong = admin(*url, "--token", "not-the-token-0123456789", "jobs", "mail")
        assert wrong.returncode == 4 and b"did not accept the token (401)" in wrong.stderr
        loose = _secret(tmp_path / "loose", f"{OPERATOR}\n", 0o644)
        refused = admin(*url, "--token-file", loose, "clear", "mail", "--state", "ready")
        assert refused.returncode == 2 and b"chmod 600" in refused.stderr and OPERATOR.encode() not in refused.stderr

        assert ok(admin(*url, "--token-file", operator, "clear", "mail", "--state", "ready", "--limit", "1")) == \
            "deleted 1 ready jobs from tube mail\n"
        assert ok(admin(*url, "clear", "mail", "--state", "ready", env={"BEANSTALK_PY_TOKEN": OPERATOR})) == \
            "deleted 1 ready jobs from tube mail\n"
        assert beanstalk(daemon, b"stats-tube mail") == b"NOT_FOUND"  # emptied, so gone
    finally:
        assert daemon.stop() == 0
    assert daemon.proc is not None
    log = daemon.proc.stderr.read().decode()
    assert "http: token line 2 (operator): clear tube mail ready: 1 job" in log


def test_cannot_connect_and_wrong_urls(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs", "mail"], ["clear", "mail", "--state", "ready"], ["export", "-"],
                 ["move", "a", "b", "--state", "buried"]):
        result = admin("--url", dead, *args)
        assert (result.returncode, result.stderr) == (
            3, f"beanstalk-py admin: cannot connect to {dead}: connection refused\n".encode()), args
    # The beanstalk port given as --url; a path prefix the listener does not serve.
    beanstalk_port = admin("--url", f"http://127.0.0.1:{daemon.port}", "jobs", "mail")
    assert beanstalk_port.returncode == 2 and b"does not answer HTTP" in beanstalk_port.stderr
    prefixed = admin("--url", f"http://127.0.0.1:{http.port}/queue", "jobs", "mail")
    assert prefixed.returncode == 2
    assert prefixed.stderr.decode() == (f"beanstalk-py admin: http://127.0.0.1:{http.port}/queue/api/v1/tubes/mail"
                                        "/jobs: no such path: is --url the daemon's --http address (beanstalk-py "
                                        "with the HTTP API)?\n")
    # Protocol commands keep using --addr when --url is given too.
    assert daemon.proc is not None
    assert json.loads(ok(admin(*where(daemon, http), "stats", "--json")))["pid"] == daemon.proc.pid
