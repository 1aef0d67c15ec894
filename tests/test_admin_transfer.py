"""`admin export --binlog` and `admin import`: a queue read from a running
daemon's binlog directory (its lock untouched), then put into a fresh
beanstalkd and a fresh beanstalk-py, which end up with the same tubes,
counts and bodies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Daemon, free_port, start_beanstalk_py, start_reference
from setup_conn import STARTERS, Conn

pytestmark = pytest.mark.daemon

COUNTS = ("current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed", "current-jobs-buried",
          "current-jobs-urgent", "total-jobs")


def admin(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beanstalk_py", "admin", *args],
                          input=stdin, capture_output=True, timeout=60)


def at(daemon: Daemon) -> list[str]:
    return ["--addr", f"127.0.0.1:{daemon.port}"]


def fill(daemon: Daemon) -> Conn:
    """mail: 1 ready, 2 delayed 100 s, 3 buried; bin: 4 ready with a non-UTF-8 body;
    work: 5 reserved by the returned connection; 6 put and deleted."""
    c = Conn(daemon)
    c.ask(b"use mail\r\n", b"USING mail\r\n")
    c.ask(b"put 10 0 60 5\r\nhello\r\n", b"INSERTED 1\r\n")
    c.ask(b"put 20 100 30 5\r\nlater\r\n", b"INSERTED 2\r\n")
    c.ask(b"put 30 0 60 9\r\nbroken\r\nx\r\n", b"INSERTED 3\r\n")
    c.ask(b"reserve-job 3\r\n", b"RESERVED 3 9\r\nbroken\r\nx\r\n")
    c.ask(b"bury 3 31\r\n", b"BURIED\r\n")
    c.ask(b"use bin\r\n", b"USING bin\r\n")
    c.ask(b"put 0 0 120 4\r\n\x00\xff\xfe\r\r\n", b"INSERTED 4\r\n")
    c.ask(b"use work\r\n", b"USING work\r\n")
    c.ask(b"put 1024 0 60 4\r\ntask\r\n", b"INSERTED 5\r\n")
    c.ask(b"put 1024 0 60 4\r\ngone\r\n", b"INSERTED 6\r\n")
    c.ask(b"delete 6\r\n", b"DELETED\r\n")
    c.ask(b"reserve-job 5\r\n", b"RESERVED 5 4\r\ntask\r\n")
    return c


EXPECTED = [
    {"id": 1, "tube": "mail", "state": "ready", "pri": 10, "delay": 0, "ttr": 60, "body": "hello"},
    {"id": 2, "tube": "mail", "state": "delayed", "pri": 20, "delay": 100, "ttr": 30, "body": "later"},
    {"id": 3, "tube": "mail", "state": "buried", "pri": 31, "delay": 0, "ttr": 60, "body": "broken\r\nx"},
    {"id": 4, "tube": "bin", "state": "ready", "pri": 0, "delay": 0, "ttr": 120, "body": "AP/+DQ==", "body_b64": True},
    {"id": 5, "tube": "work", "state": "ready", "pri": 1024, "delay": 0, "ttr": 60, "body": "task"},
]
BODIES = {1: b"hello", 2: b"later", 3: b"broken\r\nx", 4: b"\x00\xff\xfe\r", 5: b"task"}


def parse_export(data: bytes) -> list[dict]:
    jobs = [json.loads(line) for line in data.decode().splitlines()]
    for job in jobs:
        if job["state"] == "delayed":
            assert 98 <= job["delay"] <= 100
            job["delay"] = 100
    return jobs


def tube_counts(daemon: Daemon, tube: str) -> dict:
    stats = json.loads(admin(*at(daemon), "tubes", "--json").stdout)
    row = next(row for row in stats if row["name"] == tube)
    return {key: row[key] for key in COUNTS}


def second_daemon_exits(directory: Path) -> int:
    return subprocess.run([sys.executable, "-m", "beanstalk_py", "-b", str(directory), "-l", "127.0.0.1",
                           "-p", str(free_port())], capture_output=True, timeout=20).returncode


def check_imported(daemon: Daemon) -> None:
    """What importing EXPECTED gives, on either server (ids are issued 1.. in file order)."""
    assert tube_counts(daemon, "mail") == {
        "current-jobs-ready": 1, "current-jobs-reserved": 0, "current-jobs-delayed": 1,
        "current-jobs-buried": 1, "current-jobs-urgent": 1, "total-jobs": 3}
    assert tube_counts(daemon, "bin")["current-jobs-ready"] == 1
    assert tube_counts(daemon, "work")["current-jobs-ready"] == 1
    for job_id, body in BODIES.items():
        assert admin(*at(daemon), "peek", str(job_id), "--raw").stdout == body
        job = json.loads(admin(*at(daemon), "status", str(job_id), "--json").stdout)
        want = EXPECTED[job_id - 1]
        assert (job["tube"], job["state"], job["pri"], job["ttr"]) == (want["tube"], want["state"], want["pri"], want["ttr"])
        if want["state"] == "delayed":
            assert 98 <= job["time-left"] <= 100
    assert admin(*at(daemon), "peek-buried", "mail", "--raw").stdout == b"broken\r\nx"


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    started = STARTERS[request.param]()
    try:
        yield started
    finally:
        started.stop()


def test_export_a_running_daemons_binlog_and_import_it_into_both(tmp_path: Path) -> None:
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    source = start_beanstalk_py("-b", str(binlog))
    try:
        holder = fill(source)
        before = sorted(os.listdir(binlog))
        dump = tmp_path / "queue.jsonl"
        result = admin("export", "--binlog", str(binlog), str(dump))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"exported 5 jobs (3 ready, 1 delayed, 1 buried) from {binlog} to {dump}\n".encode()
        assert result.stderr == b""
        assert parse_export(dump.read_bytes()) == EXPECTED
        # The daemon runs on, undisturbed: same files, its lock held, its reservation kept.
        assert sorted(os.listdir(binlog)) == before
        assert source.proc.poll() is None
        assert second_daemon_exits(binlog) == 10
        assert admin(*at(source), "status", "5").stdout == b"reserved\n"
        holder.ask(b"use mail\r\n", b"USING mail\r\n")
        holder.ask(b"put 0 0 60 1\r\nz\r\n", b"INSERTED 7\r\n")
        holder.close()
    finally:
        source.stop()

    for start in STARTERS.values():
        fresh = start()
        try:
            result = admin(*at(fresh), "import", str(dump))
            assert result.returncode == 0, result.stderr
            assert result.stdout == (f"imported 5 jobs (3 ready, 1 delayed, 1 buried) "
                                     f"into 127.0.0.1:{fresh.port}\n").encode()
            check_imported(fresh)
        finally:
            fresh.stop()


def test_export_to_stdout_import_from_stdin(tmp_path: Path) -> None:
    source = start_beanstalk_py("-b", str(tmp_path))
    try:
        fill(source).close()
        exported = admin("export", "--binlog", str(tmp_path), "-")
        assert exported.returncode == 0
        assert exported.stderr == f"exported 5 jobs (3 ready, 1 delayed, 1 buried) from {tmp_path}\n".encode()
        assert parse_export(exported.stdout) == EXPECTED
    finally:
        source.stop()
    fresh = start_beanstalk_py()
    try:
        result = admin(*at(fresh), "import", "-", stdin=exported.stdout)
        assert result.returncode == 0, result.stderr
        check_imported(fresh)
    finally:
        fresh.stop()


def test_export_reads_beanstalkd_binlog_files_without_migrating_them(tmp_path: Path) -> None:
    reference = start_reference("-b", str(tmp_path))
    try:
        holder = fill(reference)
        result = admin("export", "--binlog", str(tmp_path), "-")
        assert result.returncode == 0, result.stderr
        assert parse_export(result.stdout) == EXPECTED
        assert not [name for name in os.listdir(tmp_path) if name.startswith("bspy-")]
        assert second_daemon_exits(tmp_path) == 10  # beanstalkd still holds its lock
        assert reference.proc.poll() is None
        holder.close()
    finally:
        reference.stop()


def test_export_while_the_daemon_compacts(tmp_path: Path) -> None:
    """Small files and churn: files are written, compacted and removed while
    export reads them; every export is whole (the long-lived jobs all there)."""
    source = start_beanstalk_py("-b", str(tmp_path), "-s", "65536")
    stop = threading.Event()
    try:
        setup = Conn(source)
        body = b"k" * 1000
        for n in range(1, 21):
            setup.ask(b"put 5 0 60 1000\r\n" + body + b"\r\n", b"INSERTED %d\r\n" % n)
        setup.close()

        def churn() -> None:
            c = Conn(source)
            job_id = 21
            while not stop.is_set():
                c.ask(b"put 9 0 60 1000\r\n" + body + b"\r\n", b"INSERTED %d\r\n" % job_id)
                c.ask(b"delete %d\r\n" % job_id, b"DELETED\r\n")
                job_id += 1
            c.close()

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            for _ in range(15):
                result = admin("export", "--binlog", str(tmp_path), "-")
                assert result.returncode == 0, result.stderr
                ids = [job["id"] for job in map(json.loads, result.stdout.decode().splitlines())]
                # Every long-lived job, once each.  The export reads the files
                # one after another while the daemon writes, so churn jobs put
                # and deleted meanwhile may show (their put read, their delete
                # not yet): only ids past 20, never twice.
                assert ids[:20] == list(range(1, 21))
                assert len(set(ids)) == len(ids) and all(job_id > 20 for job_id in ids[20:])
        finally:
            stop.set()
            worker.join()
        stats = json.loads(admin(*at(source), "stats", "--json").stdout)
        assert stats["binlog-current-index"] > 3  # files came and went meanwhile
    finally:
        source.stop()


@pytest.mark.parametrize("target", list(STARTERS), indirect=True)
def test_import_a_handwritten_file(target: Daemon, tmp_path: Path) -> None:
    """Defaults (pri 1024, ttr 60, ready, tube default), a reserved job put as
    ready, base64 bodies; exact counts; against both servers."""
    lines = [
        {"body": "plain"},
        {"tube": "t", "state": "reserved", "pri": 1, "ttr": 5, "body": "was reserved"},
        {"tube": "t", "state": "buried", "pri": 7, "body": "aGk=", "body_b64": True},
        {"tube": "t", "state": "delayed", "delay": 500, "body": ""},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = admin(*at(target), "import", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"imported 4 jobs (2 ready, 1 delayed, 1 buried) into 127.0.0.1:{target.port}\n".encode(), b"")
    job = json.loads(admin(*at(target), "status", "1", "--json").stdout)
    assert (job["tube"], job["pri"], job["ttr"], job["state"]) == ("default", 1024, 60, "ready")
    assert admin(*at(target), "status", "2").stdout == b"ready\n"
    assert admin(*at(target), "peek-buried", "t").stdout == b"id: 3\nhi\n"
    job = json.loads(admin(*at(target), "status", "3", "--json").stdout)
    assert (job["state"], job["pri"]) == ("buried", 7)
    assert admin(*at(target), "peek-delayed", "t").stdout == b"id: 4\n\n"


@pytest.mark.parametrize("target", list(STARTERS), indirect=True)
def test_import_rejects_a_bad_file_before_putting_anything(target: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    for content, message in (
        ('{"body": "a"}\nnot json\n', "bad.jsonl:2: not a JSON line"),
        ('{"body": "a"}\n[1]\n', "bad.jsonl:2: not a JSON object"),
        ('{"tube": "no space", "body": "a"}\n', "bad.jsonl:1: invalid tube name"),
        ('{"state": "gone", "body": "a"}\n', "bad.jsonl:1: \"state\" must be"),
        ('{"pri": -1, "body": "a"}\n', "bad.jsonl:1: 'pri' must be an integer from 0 to 4294967295"),
        ('{"body": 5}\n', "bad.jsonl:1: \"body\" must be a string"),
        ('{"body": "!!", "body_b64": true}\n', "bad.jsonl:1: \"body\" is not valid base64"),
    ):
        path.write_text(content)
        result = admin(*at(target), "import", str(path))
        assert (result.returncode, result.stdout) == (2, b""), content
        assert message in result.stderr.decode(), (content, result.stderr)
    missing = admin(*at(target), "import", str(tmp_path / "none"))
    assert missing.returncode == 2 and b"cannot read" in missing.stderr
    assert json.loads(admin(*at(target), "stats", "--json").stdout)["total-jobs"] == 0


@pytest.mark.parametrize("target", list(STARTERS), indirect=True)
def test_import_stops_when_the_server_refuses(target: Daemon, tmp_path: Path) -> None:
    """A body over max-job-size (65535 on both): the jobs before it are in, the count says so, exit 4."""
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"body": "a"}) + "\n" + json.dumps({"body": "x" * 70000}) + "\n")
    result = admin(*at(target), "import", str(path))
    assert result.returncode == 4 and result.stdout == b""
    assert (b"imported 1 of 2 jobs (1 ready, 0 delayed, 0 buried)" in result.stderr
            and b"line 2: the server answered JOB_TOO_BIG to put" in result.stderr)


def test_export_usage_errors(tmp_path: Path) -> None:
    result = admin("export", "--binlog", str(tmp_path / "none"), "-")
    assert result.returncode == 2 and b"not a directory" in result.stderr
    empty = admin("export", "--binlog", str(tmp_path), "-")
    assert (empty.returncode, empty.stdout) == (0, b"")
    assert empty.stderr == f"exported 0 jobs (0 ready, 0 delayed, 0 buried) from {tmp_path}\n".encode()
    assert not os.listdir(tmp_path)  # nothing created, not even a lock file
