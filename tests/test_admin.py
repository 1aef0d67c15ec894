"""`beanstalk-py admin` against beanstalk-py and the real beanstalkd 1.12: every
command the beanstalk protocol can express, with its exact output for a
known queue, its exit codes (1 not found, 2 usage, 3 cannot connect) and
the commands that need the HTTP API (without --url; with it: test_admin_http.py)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator, Optional

import pytest

from beanstalk_py.admin import main as admin_main
from conftest import REFERENCE_BINARY, Daemon, free_port
from setup_conn import Conn, daemon  # daemon: the fixture, run against both servers

pytestmark = pytest.mark.daemon



def admin(daemon: Optional[Daemon], *args: str, stdin: bytes = b"", addr: Optional[str] = None
          ) -> subprocess.CompletedProcess:
    """The admin CLI as a subprocess; stdout and stderr as bytes."""
    where = ["--addr", addr] if addr else (["--addr", f"127.0.0.1:{daemon.port}"] if daemon else [])
    return subprocess.run(
        [sys.executable, "-m", "beanstalk_py", "admin", *where, *args],
        input=stdin, capture_output=True, timeout=30,
    )


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode()




@pytest.fixture
def queue(daemon: Daemon) -> Iterator[Daemon]:
    """emails: 1 "first" pri 10, 2 "second" pri 2000 (ready), 3 "later" (delayed 100 s),
    4 "broken" (buried); other: 5 "urgent" pri 0, reserved by a connection kept open
    (it uses and watches default)."""
    setup = Conn(daemon)
    setup.ask(b"use emails\r\n", b"USING emails\r\n")
    setup.ask(b"put 10 0 60 5\r\nfirst\r\n", b"INSERTED 1\r\n")
    setup.ask(b"put 2000 0 60 6\r\nsecond\r\n", b"INSERTED 2\r\n")
    setup.ask(b"put 5 100 60 5\r\nlater\r\n", b"INSERTED 3\r\n")
    setup.ask(b"put 3000 0 60 6\r\nbroken\r\n", b"INSERTED 4\r\n")
    setup.ask(b"reserve-job 4\r\n", b"RESERVED 4 6\r\nbroken\r\n")
    setup.ask(b"bury 4 3000\r\n", b"BURIED\r\n")
    setup.ask(b"use other\r\n", b"USING other\r\n")
    setup.ask(b"put 0 0 60 6\r\nurgent\r\n", b"INSERTED 5\r\n")
    setup.close()
    holder = Conn(daemon)
    holder.ask(b"reserve-job 5\r\n", b"RESERVED 5 6\r\nurgent\r\n")
    try:
        yield daemon
    finally:
        holder.close()


TUBES_TABLE = """\
TUBE     READY  RESERVED  DELAYED  BURIED  URGENT  PAUSE  LEFT  WAITING  USING  WATCHING
default      0         0        0       0       0      0     0        0      1         1
emails       2         0        1       1       1      0     0        0      0         0
other        0         1        0       0       0      0     0        0      0         0
"""


def raw_stats(daemon: Daemon) -> list[str]:
    with daemon.connect() as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"\n\r\n"):
            data += sock.recv(65536)
    return [line.split(": ", 1)[0] for line in data.decode().splitlines()[2:] if line]


# ---------------------------------------------------------------------- reading


def test_stats_prints_every_field(queue: Daemon) -> None:
    result = admin(queue, "stats")
    assert result.returncode == 0, err(result)
    lines = out(result).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == raw_stats(queue)
    for expected in ("current-jobs-ready: 2", "current-jobs-reserved: 1", "current-jobs-delayed: 1",
                     "current-jobs-buried: 1", "current-jobs-urgent: 1", "total-jobs: 5",
                     "version: 1.12", "draining: false", f"pid: {queue.proc.pid}"):
        assert expected in lines
    assert err(result) == ""
    as_json = json.loads(out(admin(queue, "stats", "--json")))
    assert as_json["total-jobs"] == 5 and as_json["pid"] == queue.proc.pid
    assert as_json["version"] == "1.12" and as_json["draining"] is False
    assert isinstance(as_json["rusage-utime"], float) and isinstance(as_json["id"], str)
    assert list(as_json) == raw_stats(queue)
    assert json.loads(out(admin(queue, "--json", "stats"))) .keys() == as_json.keys()  # global --json


def test_tubes_table_and_json(queue: Daemon) -> None:
    result = admin(queue, "tubes")
    assert (result.returncode, out(result), err(result)) == (0, TUBES_TABLE, "")
    rows = json.loads(out(admin(queue, "tubes", "--json")))
    assert [row["name"] for row in rows] == ["default", "emails", "other"]
    emails = rows[1]
    assert emails["current-jobs-ready"] == 2 and emails["current-jobs-buried"] == 1
    assert emails["total-jobs"] == 4 and emails["pause"] == 0
    assert rows[0]["current-using"] == 1 and rows[0]["current-watching"] == 1  # the holder, not us


def test_peek_commands(queue: Daemon) -> None:
    cases = {
        ("peek", "1"): b"id: 1\nfirst\n",
        ("peek", "5"): b"id: 5\nurgent\n",  # reserved jobs can be peeked by id
        ("peek-ready", "emails"): b"id: 1\nfirst\n",
        ("peek-delayed", "emails"): b"id: 3\nlater\n",
        ("peek-buried", "emails"): b"id: 4\nbroken\n",
    }
    for args, expected in cases.items():
        result = admin(queue, *args)
        assert (result.returncode, result.stdout, result.stderr) == (0, expected, b""), args
    assert admin(queue, "peek", "2", "--raw").stdout == b"second"
    assert json.loads(admin(queue, "peek-buried", "emails", "--json").stdout) == {"id": 4, "body": "broken"}
    for args, message in (
        (("peek", "99"), "job 99 not found"),
        (("peek-ready", "other"), "no ready job in tube 'other'"),
        (("peek-buried", "default"), "no buried job in tube 'default'"),
        (("peek-ready", "nosuch"), "no tube 'nosuch' on 127.0.0.1:"),
    ):
        result = admin(queue, *args)
        assert result.returncode == 1 and result.stdout == b"", args
        assert message in err(result) and err(result).count("\n") == 1


def test_status(queue: Daemon) -> None:
    for job_id, state in (("1", "ready"), ("3", "delayed"), ("4", "buried"), ("5", "reserved")):
        result = admin(queue, "status", job_id)
        assert (result.returncode, out(result)) == (0, state + "\n")
    missing = admin(queue, "status", "99")
    assert (missing.returncode, out(missing), err(missing)) == (1, "unknown\n", "")
    assert json.loads(out(admin(queue, "status", "99", "--json"))) == {"id": 99, "state": "unknown"}
    job = json.loads(out(admin(queue, "status", "4", "--json")))
    assert {k: job[k] for k in ("id", "tube", "state", "pri", "ttr", "buries", "reserves")} == {
        "id": 4, "tube": "emails", "state": "buried", "pri": 3000, "ttr": 60, "buries": 1, "reserves": 1}


# ---------------------------------------------------------------------- acting


def test_kick_delete_pause(queue: Daemon) -> None:
    assert out(admin(queue, "kick", "emails", "5")) == "kicked 1\n"  # the buried one only
    assert out(admin(queue, "status", "4")) == "ready\n"
    assert out(admin(queue, "kick", "emails", "5")) == "kicked 1\n"  # then the delayed one
    assert out(admin(queue, "status", "3")) == "ready\n"
    assert out(admin(queue, "kick", "emails", "5")) == "kicked 0\n"
    assert admin(queue, "kick", "nosuch", "1").returncode == 1

    assert out(admin(queue, "delete", "2")) == "deleted job 2\n"
    gone = admin(queue, "delete", "2")
    assert (gone.returncode, out(gone)) == (1, "") and "job 2 not found" in err(gone)
    assert admin(queue, "delete", "5").returncode == 1  # reserved by another connection

    assert out(admin(queue, "pause", "emails", "100")) == "tube emails paused for 100 s\n"
    emails = json.loads(out(admin(queue, "tubes", "--json")))[1]
    assert emails["pause"] == 100 and 99 <= emails["pause-time-left"] <= 100
    assert out(admin(queue, "pause", "emails", "0")) == "tube emails unpaused\n"
    assert admin(queue, "pause", "nosuch", "1").returncode == 1


def test_kick_job(queue: Daemon) -> None:
    assert out(admin(queue, "kick-job", "3")) == "kicked job 3\n"
    assert out(admin(queue, "status", "3")) == "ready\n"
    for job_id in ("3", "5", "99"):  # ready, reserved, missing: NOT_FOUND
        result = admin(queue, "kick-job", job_id)
        assert result.returncode == 1 and f"job {job_id} not found" in err(result)


def test_put(daemon: Daemon) -> None:
    result = admin(daemon, "put", "jobs", stdin=b"payload\x00\xff")
    assert (result.returncode, out(result), err(result)) == (0, "1\n", "")
    assert admin(daemon, "peek", "1", "--raw").stdout == b"payload\x00\xff"
    assert json.loads(out(admin(daemon, "peek", "1", "--json"))) == {"id": 1, "body": "cGF5bG9hZAD/", "body_b64": True}
    assert out(admin(daemon, "put", "jobs", "--pri", "3", "--ttr", "9", stdin=b"")) == "2\n"
    job = json.loads(out(admin(daemon, "status", "2", "--json")))
    assert (job["tube"], job["state"], job["pri"], job["ttr"], job["delay"]) == ("jobs", "ready", 3, 9, 0)
    assert out(admin(daemon, "put", "jobs", "--delay", "50", stdin=b"x")) == "3\n"
    job = json.loads(out(admin(daemon, "status", "3", "--json")))
    assert (job["state"], job["pri"], job["delay"], job["ttr"]) == ("delayed", 1024, 50, 60)


def test_clear(queue: Daemon) -> None:
    conn = Conn(queue)
    conn.ask(b"use emails\r\n", b"USING emails\r\n")
    for n in range(6, 9):
        conn.ask(b"put 0 0 60 1\r\nx\r\n", b"INSERTED %d\r\n" % n)
    conn.close()
    assert out(admin(queue, "clear", "emails", "--state", "ready", "--limit", "2")) == \
        "deleted 2 ready jobs from tube emails\n"
    result = admin(queue, "clear", "emails", "--state", "ready")
    assert (result.returncode, out(result), err(result)) == (0, "deleted 3 ready jobs from tube emails\n", "")
    assert out(admin(queue, "clear", "emails", "--state", "delayed")) == "deleted 1 delayed jobs from tube emails\n"
    assert out(admin(queue, "clear", "emails", "--state", "buried")) == "deleted 1 buried jobs from tube emails\n"
    assert out(admin(queue, "clear", "other", "--state", "ready")) == "deleted 0 ready jobs from tube other\n"
    assert out(admin(queue, "status", "5")) == "reserved\n"  # never touched
    assert admin(queue, "clear", "nosuch", "--state", "ready").returncode == 1
    lines = TUBES_TABLE.splitlines()
    assert out(admin(queue, "tubes")) == "\n".join([lines[0], lines[1], lines[3]]) + "\n"  # emails is gone


def test_drain(daemon: Daemon) -> None:
    result = admin(daemon, "drain")
    assert (result.returncode, out(result), err(result)) == (
        0, f"draining: pid {daemon.proc.pid} at 127.0.0.1:{daemon.port} now answers puts with DRAINING\n", "")
    assert json.loads(out(admin(daemon, "stats", "--json")))["draining"] is True
    refused = admin(daemon, "put", "jobs", stdin=b"x")
    assert refused.returncode == 4 and "DRAINING" in err(refused) and out(refused) == ""
    again = admin(daemon, "drain")
    assert (again.returncode, out(again)) == (0, f"already draining: pid {daemon.proc.pid} at 127.0.0.1:{daemon.port}\n")
    assert daemon.proc.poll() is None


def test_unix_socket(request: pytest.FixtureRequest) -> None:
    """--unix PATH, against both daemons listening on `-l unix:PATH`."""
    with tempfile.TemporaryDirectory() as tmp:
        argvs = {"beanstalk-py": [sys.executable, "-m", "beanstalk_py"]}
        if REFERENCE_BINARY is not None:
            argvs["beanstalkd"] = [REFERENCE_BINARY]
        for name, argv in argvs.items():
            path = os.path.join(tmp, f"{name}.sock")
            daemon = Daemon([*argv, "-l", f"unix:{path}"], unix_path=path).start()
            try:
                base = [sys.executable, "-m", "beanstalk_py", "admin", "--unix", path]
                put = subprocess.run([*base, "put", "t"], input=b"hi", capture_output=True, timeout=30)
                assert (put.returncode, put.stdout) == (0, b"1\n"), put.stderr
                peek = subprocess.run([*base, "peek-ready", "t"], capture_output=True, timeout=30)
                assert peek.stdout == b"id: 1\nhi\n"
                drain = subprocess.run([*base, "drain"], capture_output=True, timeout=30)
                assert drain.returncode == 0 and f"unix:{path}".encode() in drain.stdout
            finally:
                daemon.stop()
        if REFERENCE_BINARY is None:
            pytest.skip("beanstalkd is not installed: checked beanstalk-py only")


# ---------------------------------------------------------------------- drain's refusals


class FakeServer:
    """Answers `stats` with a chosen pid, so drain can be shown a process that is not a daemon."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                    while b"\r\n" in data:
                        line, data = data.split(b"\r\n", 1)
                        if line == b"stats":
                            body = f"---\npid: {self.pid}\ndraining: false\nversion: \"1.12\"\n".encode()
                            conn.sendall(b"OK %d\r\n%s\r\n" % (len(body), body))
                        elif line == b"quit":
                            break

    def close(self) -> None:
        self.listener.close()


def test_drain_refuses_a_process_that_is_not_a_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    fake = FakeServer(sleeper.pid)
    try:
        code = admin_main(["--addr", f"127.0.0.1:{fake.port}", "drain"])
        captured = capsys.readouterr()
        assert code == 4 and captured.out == ""
        assert f"pid {sleeper.pid} from 127.0.0.1:{fake.port} is 'sleep 60', not beanstalk-py or beanstalkd" \
            in captured.err
        assert sleeper.poll() is None  # not signalled (SIGUSR1 would have killed sleep)
        fake.pid = 2**22 + 12345  # above the default pid_max: no such process
        code = admin_main(["--addr", f"127.0.0.1:{fake.port}", "drain"])
        assert code == 4 and "no such process runs here" in capsys.readouterr().err
        fake.pid = 1
        assert admin_main(["--addr", f"127.0.0.1:{fake.port}", "drain"]) == 4
        assert "refusing to signal it" in capsys.readouterr().err
    finally:
        fake.close()
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------- exit codes


def test_cannot_connect_exits_3() -> None:
    port = free_port()  # nothing listens there
    result = admin(None, "stats", addr=f"127.0.0.1:{port}")
    assert result.returncode == 3 and out(result) == ""
    assert err(result) == f"beanstalk-py admin: cannot connect to 127.0.0.1:{port}: connection refused\n"
    for args in (["tubes"], ["top", "-n", "1"], ["put", "t"], ["import", "-"], ["drain"]):
        result = admin(None, *args, addr=f"127.0.0.1:{port}")
        assert result.returncode == 3, args
        assert err(result).count("\n") == 1 and f"127.0.0.1:{port}" in err(result)
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-m", "beanstalk_py", "admin", "--unix", f"{tmp}/none", "stats"],
                                capture_output=True, timeout=30)
        assert result.returncode == 3 and f"unix:{tmp}/none" in err(result)


def test_no_reply_times_out_with_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts and never answers: one line, exit 3, within --timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        assert admin_main(["--addr", f"127.0.0.1:{port}", "--timeout", "0.3", "stats"]) == 3
        assert time.monotonic() - started < 3
        assert capsys.readouterr().err == f"beanstalk-py admin: 127.0.0.1:{port}: no reply within 0.3 s\n"


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["peek"], "the following arguments are required: ID"),
    (["peek", "0"], "'0' is not a job id"),
    (["peek", "x"], "'x' is not a job id"),
    (["kick", "t", "-1"], "'-1' is not an integer from 0 to 4294967295"),
    (["peek-ready", "bad name"], "invalid tube name 'bad name'"),
    (["peek-ready", "-t"], "the following arguments are required: TUBE"),
    (["put", "t", "--pri", "4294967296"], "'4294967296' is not an integer from 0 to 4294967295"),
    (["clear", "t"], "the following arguments are required: --state"),
    (["clear", "t", "--state", "reserved"], "invalid choice: 'reserved'"),
    (["--addr", "127.0.0.1:99999", "stats"], "bad port '99999'"),
    (["--addr", "::1", "stats"], "write an IPv6 address as [ADDR]:PORT"),
    (["--addr", "h:1", "--unix", "/x", "stats"], "not allowed with argument"),
])
def test_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin_main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


@pytest.mark.parametrize("args, message", [
    (["jobs", "t"], "jobs needs the daemon's HTTP listener: give --url URL"),
    (["jobs", "t", "--state", "buried"], "jobs needs the daemon's HTTP listener: give --url URL"),
    (["move", "a", "b", "--state", "ready"], "move needs the daemon's HTTP listener: give --url URL"),
    (["--url", "ftp://127.0.0.1:8080", "jobs", "t"], "--url ftp://127.0.0.1:8080: expected http://HOST:PORT"),
    (["--url", "http://127.0.0.1:99999", "jobs", "t"], "expected http://HOST:PORT, https://HOST:PORT or unix:PATH"),
    (["--url", "http://u:p@127.0.0.1:8080", "jobs", "t"], "no user, query or fragment"),
    (["--token", "abc", "jobs", "t"], "--token and --token-file go with --url"),
    (["export", "out.jsonl"], "export needs --binlog DIR (the daemon's binlog directory, read without "
                              "disturbing it) or --url URL"),
])
def test_http_only_commands_exit_2(args: list[str], message: str) -> None:
    """These never connect (so no address is needed)."""
    result = admin(None, *args)
    assert (result.returncode, out(result)) == (2, "")
    assert message in err(result) and err(result).count("\n") == 1


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert admin_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status: 0 ok, 1 not found" in text
    commands = ["stats", "tubes", "top", "peek", "peek-ready", "peek-delayed", "peek-buried", "status",
                "kick", "kick-job", "delete", "pause", "put", "drain", "clear", "jobs", "move",
                "export", "import"]
    for name in commands:
        assert f"    {name} " in text
        assert admin_main([name, "--help"]) == 0
        assert f"usage: beanstalk-py admin {name}" in capsys.readouterr().out


def test_in_process_main(queue: Daemon, capsysbinary: pytest.CaptureFixture[bytes],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """main() returns the exit code and writes bodies byte for byte, as the subprocess does."""
    where = ["--addr", f"127.0.0.1:{queue.port}"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xc3\xa9t\xc3\xa9")))
    assert admin_main([*where, "put", "emails"]) == 0
    assert capsysbinary.readouterr().out == b"6\n"
    assert admin_main([*where, "peek", "6"]) == 0
    assert capsysbinary.readouterr().out == "id: 6\nété\n".encode()
    assert admin_main([*where, "status", "6"]) == 0
    assert capsysbinary.readouterr().out == b"ready\n"
    assert admin_main([*where, "tubes"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out.decode().splitlines()[2].split()[:2] == ["emails", "3"]


# ---------------------------------------------------------------------- framing


def test_client_reads_replies_split_anywhere() -> None:
    """Replies arriving a byte at a time, bodies holding CRLF, and broken frames."""
    from beanstalk_py.admin.client import Client, ServerError

    ours, theirs = socket.socketpair()
    client = Client("/unused", timeout=2)
    client._sock = ours
    replies = b"OK 9\r\n---\r\n- a\r\r\nFOUND 3 4\r\nx\r\ny\r\nINSERTED 12\r\nOK 2\r\nabXX"

    def trickle() -> None:
        for i in range(len(replies)):
            theirs.sendall(replies[i:i + 1])
            time.sleep(0.001)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        assert client.read_reply().body == b"---\r\n- a\r"
        reply = client.read_reply()
        assert (reply.line, reply.body) == (b"FOUND 3 4", b"x\r\ny")
        reply = client.read_reply()
        assert (reply.word, reply.args, reply.body) == (b"INSERTED", [b"12"], None)
        with pytest.raises(ServerError, match="not followed by CRLF"):
            client.read_reply()
    finally:
        feeder.join()
        ours.close()
        theirs.close()


class TtyStderr(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_clear_draws_a_progress_bar_on_a_terminal(queue: Daemon, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake = TtyStderr()
    monkeypatch.setattr(sys, "stderr", fake)
    assert admin_main(["--addr", f"127.0.0.1:{queue.port}", "clear", "emails", "--state", "ready"]) == 0
    assert capsys.readouterr().out == "deleted 2 ready jobs from tube emails\n"
    assert fake.getvalue().endswith("\rclearing ready jobs of emails [" + "#" * 30 + "] 2/2\n")
    fake.truncate(0)
    assert admin_main(["--addr", f"127.0.0.1:{queue.port}", "clear", "emails", "--state", "ready"]) == 0
    assert fake.getvalue() == ""  # nothing to clear: no bar
