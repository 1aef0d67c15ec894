"""The binlog over real sockets: SIGKILL and restart, bounded churn, the lock, migration from beanstalkd 1.12."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import REFERENCE_BINARY, Daemon, free_port, start_beanstalk_py, start_reference

# The 100k-job churn of issue 3: 1 KiB jobs, 500 alive, 1 MiB files, at most 3 MB on disk.
CHURN_JOBS = 100_000
CHURN_LIVE = 500
CHURN_BODY = 1024
CHURN_FILE_SIZE = 1048576
CHURN_DISK_LIMIT = 3_000_000


class Client:
    """A blocking beanstalk client that reads whole replies (line + body)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        sock.settimeout(30)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def reply(self) -> tuple[bytes, Optional[bytes]]:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                break
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        body = None
        if line.startswith((b"OK ", b"FOUND ", b"RESERVED ")):
            size = int(line.rsplit(b" ", 1)[1])
            while len(self.buf) < size + 2:
                self._fill()
            body = bytes(self.buf[:size])
            del self.buf[: size + 2]
        return line, body

    def cmd(self, line: bytes, body: Optional[bytes] = None) -> tuple[bytes, Optional[bytes]]:
        data = line + b"\r\n" + (body + b"\r\n" if body is not None else b"")
        self.sock.sendall(data)
        return self.reply()

    def line(self, line: bytes, body: Optional[bytes] = None) -> bytes:
        return self.cmd(line, body)[0]

    def yaml(self, line: bytes) -> dict[str, str]:
        status, body = self.cmd(line)
        assert status.startswith(b"OK "), (line, status)
        assert body is not None
        out = {}
        for row in body.decode().splitlines()[1:]:
            key, value = row.split(": ", 1)
            out[key] = value
        return out


def connect(daemon: Daemon) -> Client:
    return Client(daemon.connect())


def jobs_of(client: Client, ids) -> dict[int, dict[str, str]]:
    """stats-job plus the body of every job that exists."""
    out = {}
    for job_id in ids:
        status, body = client.cmd(b"peek %d" % job_id)
        if status == b"NOT_FOUND":
            continue
        facts = client.yaml(b"stats-job %d" % job_id)
        facts["body"] = body  # type: ignore[assignment]
        out[job_id] = facts
    return out


def kill(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(timeout=10)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


STABLE = ("id", "tube", "state", "pri", "delay", "ttr", "reserves", "timeouts", "releases", "buries", "kicks", "body")


def comparable(jobs: dict[int, dict], reserved_back: bool = True) -> dict[int, dict]:
    out = {}
    for job_id, facts in jobs.items():
        row = {key: facts[key] for key in STABLE}
        if reserved_back and row["state"] == "reserved":
            row["state"] = "ready"
        out[job_id] = row
    return out


# --------------------------------------------------------------------- crash and restart


@pytest.mark.parametrize("fsync", [["-f", "0"], ["-F"], []], ids=["f0", "F", "f50"])
def test_sigkill_then_restart_keeps_every_job(tmp_path: Path, fsync: list[str]) -> None:
    daemon = start_beanstalk_py("-b", str(tmp_path), *fsync)
    try:
        c = connect(daemon)
        assert c.line(b"put 5 0 60 5", b"first") == b"INSERTED 1"
        assert c.line(b"put 9 100 30 7", b"delayed") == b"INSERTED 2"
        assert c.line(b"use jobs-b") == b"USING jobs-b"
        assert c.line(b"put 1 0 10 6", b"buried") == b"INSERTED 3"
        assert c.line(b"put 2 0 10 8", b"released") == b"INSERTED 4"
        assert c.line(b"put 3 0 10 7", b"deleted") == b"INSERTED 5"
        assert c.line(b"put 4 0 10 8", b"pri-only") == b"INSERTED 6"
        assert c.line(b"watch jobs-b") == b"WATCHING 2"
        assert c.line(b"ignore default") == b"WATCHING 1"
        assert c.cmd(b"reserve")[0] == b"RESERVED 3 6"
        assert c.line(b"bury 3 77") == b"BURIED"
        assert c.cmd(b"reserve")[0] == b"RESERVED 4 8"
        assert c.line(b"release 4 3 50") == b"RELEASED"
        assert c.line(b"delete 5") == b"DELETED"
        assert c.cmd(b"reserve")[0] == b"RESERVED 6 8"
        assert c.line(b"release 6 4000 0") == b"RELEASED"  # reference #597
        assert c.line(b"put 0 0 10 4", b"kick") == b"INSERTED 7"
        assert c.cmd(b"reserve-job 7")[0] == b"RESERVED 7 4"
        assert c.line(b"bury 7 0") == b"BURIED"
        assert c.line(b"kick-job 7") == b"KICKED"
        before = jobs_of(c, range(1, 9))
        assert sorted(before) == [1, 2, 3, 4, 6, 7]
        kill(daemon)

        daemon = start_beanstalk_py("-b", str(tmp_path), *fsync)
        c = connect(daemon)
        after = jobs_of(c, range(1, 9))
        assert comparable(after) == comparable(before)
        for job_id in (2, 4):  # delayed: the same deadline, on the wall clock
            assert abs(int(after[job_id]["time-left"]) - int(before[job_id]["time-left"])) <= 2
        for job_id in after:
            assert int(after[job_id]["age"]) >= int(before[job_id]["age"])
        assert after[6]["pri"] == "4000"
        assert after[3]["buries"] == "1"  # beanstalkd 1.12 adds one per restart
        assert c.line(b"put 0 0 1 1", b"n") == b"INSERTED 8"
        stats = c.yaml(b"stats")
        assert stats["current-jobs-buried"] == "1" and stats["current-jobs-delayed"] == "2"
        assert int(stats["binlog-current-index"]) >= 2
    finally:
        daemon.stop()


def test_repeated_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Each round: pipelined puts and deletes, SIGKILL mid-stream, check what was acknowledged.

    An acknowledged put must be there with its body, an acknowledged delete
    must stay deleted; commands whose reply was never read may go either way.
    """
    alive: dict[int, bytes] = {}  # acknowledged puts not deleted
    deleted: set[int] = set()  # acknowledged deletes
    unsure: set[int] = set()  # deletes sent, reply not read
    top = 0  # highest id that may have been issued
    for round_no in range(5):
        daemon = start_beanstalk_py("-b", str(tmp_path), "-s", "65536")
        try:
            c = connect(daemon)
            for job_id in range(1, top + 1):
                status, body = c.cmd(b"peek %d" % job_id)
                if job_id in deleted:
                    assert status == b"NOT_FOUND", (round_no, job_id)
                elif job_id in alive and job_id not in unsure:
                    assert status.startswith(b"FOUND") and body == alive[job_id], (round_no, job_id)
                elif status.startswith(b"FOUND"):
                    assert body is not None and body.startswith(b"r")
                    alive[job_id] = body  # an unacknowledged put (or delete) that made it to disk
                elif job_id in alive:  # its delete was sent, unacknowledged, and done
                    del alive[job_id]
                    deleted.add(job_id)
                # else: an id the server never stored (its put was cut short); may come again
            unsure.clear()
            batch = []
            bodies = []
            for i in range(400):
                body = b"r%d-%d-" % (round_no, i) + b"p" * 200
                bodies.append(body)
                batch.append(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body))
            victims = sorted(alive)[: len(alive) // 2]
            batch += [b"delete %d\r\n" % job_id for job_id in victims]
            unsure.update(victims)
            c.sock.sendall(b"".join(batch))
            top += 400
            # read about half of the replies, then kill while the rest is in flight
            for i in range(len(batch) // 2 + round_no * 37):
                line, _ = c.reply()
                if i < 400:
                    assert line.startswith(b"INSERTED")
                    alive[int(line.split()[1])] = bodies[i]
                else:
                    assert line == b"DELETED"
                    victim = victims[i - 400]
                    del alive[victim]
                    deleted.add(victim)
                    unsure.discard(victim)
            kill(daemon)
        finally:
            daemon.stop()
    assert len(alive) > 400 and len(deleted) > 400


# --------------------------------------------------------------------- churn


def test_100k_churn_stays_under_3mb(tmp_path: Path) -> None:
    daemon = start_beanstalk_py("-b", str(tmp_path), "-s", str(CHURN_FILE_SIZE))
    try:
        c = connect(daemon)
        body = b"k" * CHURN_BODY
        put = b"put 0 0 60 %d\r\n%s\r\n" % (CHURN_BODY, body)
        batch_size = CHURN_LIVE
        next_delete = 1
        next_id = 1
        peak = 0
        started = time.monotonic()
        while next_id <= CHURN_JOBS:
            n = min(batch_size, CHURN_JOBS - next_id + 1)
            data = [put] * n
            deletes = 0
            while next_delete + deletes <= next_id + n - 1 - CHURN_LIVE:
                data.append(b"delete %d\r\n" % (next_delete + deletes))
                deletes += 1
            c.sock.sendall(b"".join(data))
            for i in range(n):
                assert c.reply()[0] == b"INSERTED %d" % (next_id + i)
            for i in range(deletes):
                assert c.reply()[0] == b"DELETED", next_delete + i
            next_id += n
            next_delete += deletes
            peak = max(peak, dir_bytes(tmp_path))
        elapsed = time.monotonic() - started
        stats = c.yaml(b"stats")
        assert stats["current-jobs-ready"] == str(CHURN_LIVE)
        final = dir_bytes(tmp_path)
        print(f"\n100k churn: {elapsed:.1f}s, directory {final} bytes at the end, peak {peak}; "
              f"files {sorted(os.listdir(tmp_path))}; migrated {stats['binlog-records-migrated']}")
        assert final <= CHURN_DISK_LIMIT and peak <= CHURN_DISK_LIMIT, (final, peak)
        kill(daemon)
        daemon = start_beanstalk_py("-b", str(tmp_path), "-s", str(CHURN_FILE_SIZE))
        c = connect(daemon)
        stats = c.yaml(b"stats")
        assert stats["current-jobs-ready"] == str(CHURN_LIVE)
        assert c.line(b"put 0 0 1 1", b"x") == b"INSERTED %d" % (CHURN_JOBS + 1)
        assert c.cmd(b"peek-ready")[0] == b"FOUND %d %d" % (CHURN_JOBS - CHURN_LIVE + 1, CHURN_BODY)
        assert dir_bytes(tmp_path) <= CHURN_DISK_LIMIT
    finally:
        daemon.stop()


# --------------------------------------------------------------------- the lock


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beanstalk_py", *args], capture_output=True, text=True, timeout=20)


def test_second_daemon_on_the_same_dir_refuses(tmp_path: Path) -> None:
    daemon = start_beanstalk_py("-b", str(tmp_path))
    try:
        result = run_cli("-b", str(tmp_path), "-l", "127.0.0.1", "-p", str(free_port()))
        assert result.returncode == 10
        assert "lock" in result.stderr and str(tmp_path) in result.stderr
        c = connect(daemon)
        assert c.line(b"put 0 0 1 1", b"x") == b"INSERTED 1"  # the first one is unaffected
    finally:
        daemon.stop()
    daemon = start_beanstalk_py("-b", str(tmp_path))  # free again once the first has gone
    daemon.stop()


def test_beanstalkd_and_beanstalk_py_exclude_each_other(tmp_path: Path) -> None:
    reference = start_reference("-b", str(tmp_path))
    try:
        result = run_cli("-b", str(tmp_path), "-l", "127.0.0.1", "-p", str(free_port()))
        assert result.returncode == 10 and "lock" in result.stderr
    finally:
        reference.stop()


def test_clean_stop_and_start_with_an_empty_dir(tmp_path: Path) -> None:
    """testserv.c binlog_empty_exit, then ids go on (they restart at 1 in beanstalkd)."""
    daemon = start_beanstalk_py("-b", str(tmp_path))
    assert daemon.stop() == 0  # SIGTERM: a clean stop
    daemon = start_beanstalk_py("-b", str(tmp_path))
    try:
        c = connect(daemon)
        assert c.line(b"put 0 0 1 1", b"x") == b"INSERTED 1"
        assert c.line(b"delete 1") == b"DELETED"
    finally:
        assert daemon.stop() == 0
    assert sorted(os.listdir(tmp_path)) == ["bspy-binlog.2", "lock"]  # trimmed, emptied files gone
    daemon = start_beanstalk_py("-b", str(tmp_path))
    try:
        assert connect(daemon).line(b"put 0 0 1 1", b"y") == b"INSERTED 2"
    finally:
        daemon.stop()


# --------------------------------------------------------------------- migration from beanstalkd 1.12


def reference_scenario(c: Client) -> list[int]:
    """Jobs in every state, written by the real beanstalkd; returns the ids used."""
    assert c.line(b"put 10 0 60 5", b"ready") == b"INSERTED 1"
    assert c.line(b"put 20 3600 120 7", b"delayed") == b"INSERTED 2"
    assert c.line(b"use migrate-b") == b"USING migrate-b"
    assert c.line(b"put 4294967295 0 5000 6", b"buried") == b"INSERTED 3"
    assert c.line(b"put 0 0 30 7", b"deleted") == b"INSERTED 4"
    assert c.line(b"put 7 0 30 10", b"rel\r\ndelay") == b"INSERTED 5"
    assert c.line(b"put 8 0 30 6", b"kicked") == b"INSERTED 6"
    assert c.line(b"put 9 0 30 8", b"pri-only") == b"INSERTED 7"
    big = b"B" * 60000
    assert c.line(b"put 1 0 30 60000", big) == b"INSERTED 8"
    assert c.line(b"watch migrate-b") == b"WATCHING 2"
    assert c.line(b"ignore default") == b"WATCHING 1"
    assert c.cmd(b"reserve-job 3")[0] == b"RESERVED 3 6"
    assert c.line(b"bury 3 11") == b"BURIED"
    assert c.line(b"delete 4") == b"DELETED"
    assert c.cmd(b"reserve-job 5")[0] == b"RESERVED 5 10"
    assert c.line(b"release 5 3 1800") == b"RELEASED"
    assert c.cmd(b"reserve-job 6")[0] == b"RESERVED 6 6"
    assert c.line(b"bury 6 2") == b"BURIED"
    assert c.line(b"kick 1") == b"KICKED 1"  # job 3, buried first; job 6 stays buried
    assert c.cmd(b"reserve-job 7")[0] == b"RESERVED 7 8"
    assert c.line(b"release 7 99 0") == b"RELEASED"  # not logged by 1.12 (#597)
    assert c.cmd(b"reserve-job 8")[0] == b"RESERVED 8 60000"  # held at the kill
    return list(range(1, 10))


def test_migration_from_beanstalkd_1_12(tmp_path: Path) -> None:
    if REFERENCE_BINARY is None:
        pytest.skip("beanstalkd 1.12 is not installed (apt-get install -y beanstalkd); .ci/run installs it")
    data = tmp_path / "data"
    data.mkdir()
    reference = start_reference("-b", str(data))
    try:
        ids = reference_scenario(connect(reference))
        kill(reference)  # beanstalkd dies at once on any signal; no tidy shutdown exists
    finally:
        reference.stop()
    assert any(name.startswith("binlog.") for name in os.listdir(data))

    # What beanstalkd 1.12 itself restores from these files (on a copy).
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    reference = start_reference("-b", str(copy))
    try:
        rc = connect(reference)
        expected = jobs_of(rc, ids)
        ref_next = rc.line(b"put 0 0 1 1", b"z")
    finally:
        reference.stop()

    daemon = start_beanstalk_py("-b", str(data))
    try:
        c = connect(daemon)
        got = jobs_of(c, ids)
        assert sorted(got) == sorted(expected) == [1, 2, 3, 5, 6, 7, 8]
        want = comparable(expected, reserved_back=False)
        for job_id, facts in want.items():
            if facts["state"] == "buried":
                # 1.12 replays a buried job through bury_job(): buries +1 per restart.
                facts["buries"] = str(int(facts["buries"]) - 1)
        assert comparable(got, reserved_back=False) == want
        assert got[2]["state"] == "delayed" and abs(int(got[2]["time-left"]) - int(expected[2]["time-left"])) <= 2
        assert got[5]["state"] == "delayed" and abs(int(got[5]["time-left"]) - int(expected[5]["time-left"])) <= 2
        for job_id in got:
            assert abs(int(got[job_id]["age"]) - int(expected[job_id]["age"])) <= 2
        assert got[8]["body"] == b"B" * 60000
        assert c.line(b"put 0 0 1 1", b"z") == ref_next  # ids go on from the same place
        stats = c.yaml(b"stats")
        assert int(stats["binlog-records-written"]) >= len(got)
        names = os.listdir(data)
        assert not any(n.startswith("binlog.") for n in names), names  # one way
        assert any(n.startswith("bspy-binlog.") for n in names)
        kill(daemon)
        daemon = start_beanstalk_py("-b", str(data))
        c = connect(daemon)
        again = jobs_of(c, ids)
        assert again.pop(9)["body"] == b"z"
        assert comparable(again, False) == comparable(got, False)
    finally:
        daemon.stop()
