"""Unit tests of the binlog: encoding, replay, compaction, damaged files, full disks, migration.

Everything runs in-process on real files in a temporary directory.  A crash is
simulated with :meth:`Binlog.abandon` (descriptors dropped, nothing synced or
tidied), which leaves on disk exactly what a SIGKILL would.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

from beanstalk_py import binlog as bl
from beanstalk_py.binlog import (
    FILE_PREFIX,
    HEADER_SIZE,
    Binlog,
    BinlogError,
    BinlogFull,
    JobRecord,
    Scan,
    Update,
    encode_delete,
    encode_full,
    encode_header,
    encode_update,
)
from beanstalk_py.binlog.migrate import V5_JOBREC, V7_JOBREC
from beanstalk_py.conn import Connection
from beanstalk_py.engine import NS, Engine
from beanstalk_py.job import BURIED, DELAYED, READY, RESERVED
from beanstalk_py.stats import ServerInfo
from beanstalk_py.wal import Durability, WalError, WalFull, WalIOError, WalStats, WriteAheadLog


def mono() -> int:
    return time.monotonic_ns()


def make_log(path: Path, size: int = 65536, fsync_ms: Optional[int] = None, **kwargs) -> Binlog:
    """A Binlog on the real clocks, as main.py makes it."""
    kwargs.setdefault("log", lambda m: None)
    return Binlog(str(path), size, fsync_ms, clock=mono, wall_clock=time.time_ns, **kwargs)


class Node:
    """An engine with a binlog in ``path``, wired as main.py does it."""

    def __init__(
        self,
        path: Path,
        size: int = 65536,
        fsync_ms: Optional[int] = None,
        falloc: Optional[Callable[[int, int, int], None]] = None,
    ) -> None:
        self.logs: list[str] = []
        kwargs = {"falloc": falloc} if falloc is not None else {}
        self.wal = make_log(path, size, fsync_ms, log=self.logs.append, **kwargs)
        self.records, self.next_id = self.wal.open()
        self.engine = Engine()
        self.engine.restore(self.records, self.next_id, mono(), time.time_ns())
        self.engine.attach_wal(self.wal, self.wal.durability)
        self.info = ServerInfo(started_at=mono())

    def conn(self) -> Connection:
        return Connection(self.engine, self.info)

    def send(self, conn: Connection, data: bytes) -> bytes:
        now = mono()
        conn.receive_data(data, now)
        while True:  # finished blocked reserves, as Dispatcher.settle delivers them
            batch = self.engine.take_completed()
            if not batch:
                return conn.take_output()
            for owner, outcome in batch:
                owner.deliver(outcome, now)

    def crash(self) -> None:
        self.wal.abandon()


def snapshot(engine: Engine) -> dict[int, tuple]:
    """What a restart must give back, per job (reserved shows as ready)."""
    out = {}
    for job in engine.jobs.values():
        state = READY if job.state == RESERVED else job.state
        out[job.id] = (
            job.tube.name, state, job.pri, job.delay, job.ttr, job.body,
            job.reserve_ct, job.timeout_ct, job.release_ct, job.bury_ct, job.kick_ct,
        )
    return out


def wall_times(engine: Engine) -> dict[int, tuple[int, int]]:
    off = time.time_ns() - mono()
    return {
        job.id: (job.created_at + off, job.deadline + off if job.state == DELAYED else 0)
        for job in engine.jobs.values()
    }


def assert_same_times(before: dict, after: dict, slack: int = 50_000_000) -> None:
    assert before.keys() == after.keys()
    for key, (created, deadline) in before.items():
        assert abs(after[key][0] - created) < slack
        assert abs(after[key][1] - deadline) < slack


def buried_order(engine: Engine, tube: bytes = b"default") -> list[int]:
    return [job.id for job in engine.tubes[tube].buried]


def own_files(path: Path) -> list[str]:
    return sorted((p.name for p in path.iterdir() if p.name.startswith(FILE_PREFIX)),
                  key=lambda n: int(n.rsplit(".", 1)[1]))


# --------------------------------------------------------------------- encoding


def sample_record(**changes) -> JobRecord:
    rec = JobRecord(7, b"tube-a", DELAYED, 2**32 - 1, 5 * NS, 120 * NS, 1_700_000_000 * NS,
                    1_700_000_005 * NS, b"body\r\nwith crlf\r\n", stamp=9, reserve_ct=1,
                    timeout_ct=2, release_ct=3, bury_ct=4, kick_ct=2**32 - 1)
    for key, value in changes.items():
        setattr(rec, key, value)
    return rec


def full_bytes(rec: JobRecord) -> bytes:
    return b"".join(encode_full(rec))


def scan_all(data: bytes) -> tuple[Scan, list]:
    scan = Scan(data)
    return scan, list(scan)


def test_records_round_trip() -> None:
    full = sample_record()
    upd = Update(7, BURIED, 0, 5 * NS, 1_700_000_005 * NS, 10, (1, 2, 3, 4, 2**32 - 1))  # deadline dropped
    data = encode_header(3, 6, 9) + full_bytes(full) + encode_update(upd) + encode_delete(7) + bytes(100)
    scan, items = scan_all(data)
    assert scan.header == (3, 6, 9) and scan.problem is None and scan.skipped == 0
    assert [kind for _, _, kind, _ in items] == [bl.T_FULL, bl.T_UPDATE, bl.T_DELETE]
    assert items[0][3].fields() == full.fields() and full.size == items[0][1] - items[0][0]
    assert items[1][3] == (7, BURIED, 0, 5 * NS, 0, 10, (1, 2, 3, 4, 2**32 - 1))
    assert items[2][3] == 7
    assert scan.end == len(data) - 100
    assert len(encode_update(upd)) == bl.UPDATE_SIZE and len(encode_delete(7)) == bl.DELETE_SIZE


def test_full_record_keeps_deadline_only_when_delayed() -> None:
    rec = sample_record(state=READY)
    (_, _, _, decoded), = scan_all(encode_header(1, 0, 1) + full_bytes(rec))[1]
    assert decoded.deadline == 0 and decoded.state == READY


def test_header_and_layout_sizes() -> None:
    assert len(encode_header(1, 2, 3)) == HEADER_SIZE
    assert bl.FULL_FIXED == 76 and bl.UPDATE_SIZE == 68 and bl.DELETE_SIZE == 20
    assert V7_JOBREC.size == 80  # beanstalkd's Jobrec on x86_64


def test_scan_reports_garbage_but_not_zeros() -> None:
    good = encode_header(1, 0, 1) + full_bytes(sample_record())
    scan, items = scan_all(good + bytes(50))
    assert len(items) == 1 and scan.problem is None
    scan, items = scan_all(good + bytes(10) + b"\x01" + bytes(5))
    assert len(items) == 1 and scan.problem is not None and scan.skipped == 11
    scan, items = scan_all(bytes(4096))
    assert items == [] and scan.empty and scan.problem is None


# --------------------------------------------------------------------- replay


def test_empty_directory(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.records == [] and node.next_id == 1
    assert (tmp_path / "lock").exists() and own_files(tmp_path) == [f"{FILE_PREFIX}1"]
    node.wal.close()
    node = Node(tmp_path)
    assert node.records == [] and node.next_id == 1 and node.logs == []


def test_every_state_survives_a_crash(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    assert node.send(c, b"put 5 0 60 3\r\nabc\r\nput 9 100 30 2\r\nhi\r\n") == b"INSERTED 1\r\nINSERTED 2\r\n"
    assert node.send(c, b"use other\r\nput 1 0 10 4\r\nwxyz\r\nput 2 0 10 1\r\nq\r\n") == (
        b"USING other\r\nINSERTED 3\r\nINSERTED 4\r\n")
    assert node.send(c, b"watch other\r\nreserve\r\n").endswith(b"RESERVED 3 4\r\nwxyz\r\n")
    assert node.send(c, b"bury 3 77\r\n") == b"BURIED\r\n"
    assert node.send(c, b"reserve\r\n") == b"RESERVED 4 1\r\nq\r\n"
    assert node.send(c, b"release 4 3 50\r\n") == b"RELEASED\r\n"      # now delayed
    assert node.send(c, b"reserve\r\n") == b"RESERVED 1 3\r\nabc\r\n"
    assert node.send(c, b"release 1 42 0\r\n") == b"RELEASED\r\n"     # #597: new pri, delay 0
    assert node.send(c, b"reserve\r\n") == b"RESERVED 1 3\r\nabc\r\n"  # stays reserved
    assert node.send(c, b"put 0 0 1 1\r\nz\r\ndelete 5\r\n") == b"INSERTED 5\r\nDELETED\r\n"
    before, times = snapshot(node.engine), wall_times(node.engine)
    # Job 1 is reserved: a reserve is not logged, so that reservation is not
    # counted after the restart, and its TTR deadline does not survive.
    before[1] = before[1][:6] + (before[1][6] - 1,) + before[1][7:]
    times[1] = (times[1][0], 0)
    node.crash()

    again = Node(tmp_path)
    assert again.logs == []
    assert snapshot(again.engine) == before
    assert_same_times(times, wall_times(again.engine))
    assert again.engine.jobs[1].state == READY and again.engine.jobs[1].pri == 42
    assert again.engine.jobs[2].state == DELAYED and again.engine.jobs[4].state == DELAYED
    assert again.engine.jobs[3].state == BURIED and again.engine.jobs[3].bury_ct == 1
    assert again.next_id == 6 and again.engine.next_id == 6
    c = again.conn()
    assert again.send(c, b"put 0 0 1 1\r\nn\r\n") == b"INSERTED 6\r\n"


def test_no_extra_buries_and_buried_order_across_restarts(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    for body in (b"a", b"b", b"c"):
        node.send(c, b"put 0 0 60 1\r\n" + body + b"\r\n")
    for job_id in (3, 1, 2):
        assert node.send(c, b"reserve-job %d\r\nbury %d 0\r\n" % (job_id, job_id)).endswith(b"BURIED\r\n")
    node.wal.close()
    for _ in range(3):
        node = Node(tmp_path)
        assert buried_order(node.engine) == [3, 1, 2]
        assert [node.engine.jobs[i].bury_ct for i in (1, 2, 3)] == [1, 1, 1]
        node.crash()


def test_reserve_job_of_buried_then_release_comes_back_ready(tmp_path: Path) -> None:
    """Reference quirk #4.4: 1.12 brings this job back buried with buries 2."""
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 0 0 60 1\r\nx\r\nreserve\r\nbury 1 0\r\n")
    assert node.send(c, b"reserve-job 1\r\nrelease 1 0 0\r\n") == b"RESERVED 1 1\r\nx\r\nRELEASED\r\n"
    node.crash()
    node = Node(tmp_path)
    job = node.engine.jobs[1]
    assert (job.state, job.bury_ct, job.reserve_ct, job.release_ct) == (READY, 1, 2, 1)


def test_reserved_jobs_come_back_ready(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 0 0 60 1\r\nx\r\nput 0 30 60 1\r\ny\r\nput 0 0 60 1\r\nz\r\nreserve-job 3\r\nbury 3 0\r\n")
    # a ready job reserved, a delayed one and a buried one taken by reserve-job
    assert node.send(c, b"reserve-job 1\r\nreserve-job 2\r\nreserve-job 3\r\n").count(b"RESERVED") == 3
    node.crash()
    node = Node(tmp_path)
    assert {job.id: job.state for job in node.engine.jobs.values()} == {1: READY, 2: READY, 3: READY}


def test_delayed_deadline_uses_the_wall_clock(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 0 2 60 1\r\nx\r\nput 0 3600 60 1\r\ny\r\n")
    node.crash()
    time.sleep(0.05)
    # A restart sees the same wall-clock deadlines whatever its monotonic clock says.
    records, _ = make_log(tmp_path).open()
    engine = Engine()
    engine.restore(records, 3, 10**12, time.time_ns())  # a different monotonic epoch
    left = {job.id: (job.deadline - 10**12) / NS for job in engine.jobs.values()}
    assert 1.8 < left[1] < 2.0 and 3599.8 < left[2] < 3600.0
    # A deadline that passed while the server was down: ready at once.
    engine = Engine()
    engine.restore(records, 3, 0, time.time_ns() + 10 * NS)
    assert engine.jobs[1].state == READY and engine.jobs[2].state == DELAYED


def test_ids_continue_after_an_emptied_log(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 0 0 1 1\r\na\r\nput 0 0 1 1\r\nb\r\ndelete 1\r\ndelete 2\r\n")
    node.crash()
    for expected in (3, 4, 5):
        node = Node(tmp_path)
        assert node.next_id == expected and node.records == []
        assert len(own_files(tmp_path)) == 1  # the emptied files are gone
        c = node.conn()
        assert node.send(c, b"put 0 0 1 1\r\na\r\n") == b"INSERTED %d\r\n" % expected
        assert node.send(c, b"delete %d\r\n" % expected) == b"DELETED\r\n"
        node.crash()


def test_failed_put_uses_an_id_but_leaves_no_record(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    assert node.send(c, b"put 0 0 1 2\r\nabcdput 0 0 1 1\r\nb\r\n") == b"EXPECTED_CRLF\r\nINSERTED 2\r\n"
    node.crash()
    node = Node(tmp_path)
    assert [r.id for r in node.records] == [2] and node.next_id == 3


def test_timeouts_and_closed_connections_keep_counters(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 0 0 1 1\r\nx\r\nput 0 0 60 1\r\ny\r\nreserve\r\n")
    node.engine.tick(mono() + 2 * NS)  # job 1's TTR runs out
    assert node.engine.jobs[1].timeout_ct == 1
    other = node.conn()
    node.send(other, b"reserve-job 2\r\n")
    other.close(mono())  # job 2 goes back to ready with reserves 1
    node.crash()
    node = Node(tmp_path)
    jobs = node.engine.jobs
    assert (jobs[1].state, jobs[1].timeout_ct, jobs[1].reserve_ct) == (READY, 1, 1)
    assert (jobs[2].state, jobs[2].reserve_ct) == (READY, 1)


def test_stats_show_live_binlog_figures(tmp_path: Path) -> None:
    node = Node(tmp_path, size=4096)
    c = node.conn()
    for _ in range(60):
        node.send(c, b"put 0 0 1 10\r\n0123456789\r\n")
    stats = node.send(c, b"stats\r\n").decode()
    assert "binlog-max-size: 4096\n" in stats
    assert "binlog-records-written: 60\n" in stats
    figures = node.wal.stats()
    assert f"binlog-current-index: {figures.current_index}\n" in stats
    assert f"binlog-oldest-index: {figures.oldest_index}\n" in stats
    assert figures.current_index > 1 and figures.records_written == 60 and figures.max_size == 4096
    job = node.send(c, b"stats-job 60\r\n").decode()
    assert f"file: {figures.current_index}\n" in job


def test_big_job_grows_its_file(tmp_path: Path) -> None:
    node = Node(tmp_path, size=1000)
    c = node.conn()
    body = b"x" * 5000
    assert node.send(c, b"put 0 0 1 5000\r\n" + body + b"\r\n") == b"INSERTED 1\r\n"
    node.crash()
    node = Node(tmp_path, size=1000)
    assert node.engine.jobs[1].body == body + b"\r\n"


# --------------------------------------------------------------------- damaged logs


def small_log(path: Path) -> bytes:
    """A one-file log with every record type; returns the file's bytes."""
    node = Node(path, size=4096)
    c = node.conn()
    node.send(c, b"put 3 0 60 2\r\nab\r\nput 1 40 60 1\r\nd\r\nuse t2\r\nput 8 0 9 3\r\nxyz\r\n")
    node.send(c, b"watch t2\r\nreserve\r\nrelease 1 7 0\r\nreserve\r\nbury 1 5\r\nkick 1\r\n")
    node.send(c, b"delete 3\r\nreserve-job 2\r\nbury 2 0\r\nput 0 0 1 1\r\nq\r\n")
    assert len(node.engine.jobs) == 3
    node.crash()
    (name,) = own_files(path)
    data = (path / name).read_bytes()
    scan = Scan(data)
    list(scan)
    return data[: scan.end]


def model(data: bytes, upto: int) -> tuple[dict[int, tuple], int]:
    """The jobs and next id that the intact records ending at or before ``upto`` give."""
    replay = bl.Replay()
    if upto >= HEADER_SIZE:
        ends = [end for _, end, _, _ in Scan(data)]
        cut = max([e for e in ends if e <= upto], default=HEADER_SIZE)
        bl.replay_own(data[:cut], 1, replay)
    out = {}
    for rec in replay.jobs.values():
        if rec.state == RESERVED:
            rec.state = READY
        out[rec.id] = rec.fields()
    return out, replay.max_id + 1


def recover(path: Path, data: bytes) -> tuple[dict[int, tuple], int, list[str]]:
    for name in os.listdir(path):
        os.unlink(path / name)
    (path / f"{FILE_PREFIX}1").write_bytes(data)
    logs: list[str] = []
    wal = make_log(path, 4096, log=logs.append)
    records, next_id = wal.open()
    wal.close()
    return {r.id: r.fields() for r in records}, next_id, logs


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = small_log(src)
    ends = {end for _, end, _, _ in Scan(data)}
    work = tmp_path / "work"
    work.mkdir()
    full, _ = model(data, len(data))
    assert len(full) == 3
    for cut in range(len(data) + 1):
        jobs, next_id, logs = recover(work, data[:cut])
        expect, expect_next = model(data, cut)
        assert jobs == expect, cut
        assert next_id == expect_next, cut
        if cut in ends or cut == HEADER_SIZE:
            assert logs == [], (cut, logs)
        # whatever was reported, the directory is clean afterwards
        wal = make_log(work, 4096, log=logs.append)
        again, again_next = wal.open()
        wal.close()
        assert {r.id: r.fields() for r in again} == expect and again_next >= expect_next


def test_garbled_at_every_offset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = small_log(src) + bytes(64)
    work = tmp_path / "work"
    work.mkdir()
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        jobs, next_id, logs = recover(work, bytes(bad))
        if 44 <= pos < HEADER_SIZE:
            upto = len(data)  # header padding is not checked
        else:
            upto = pos
        expect, expect_next = model(data, upto)
        assert jobs == expect, pos
        if pos < 44:
            assert next_id == 1
        else:
            assert next_id == expect_next, pos
        if pos < 44 or pos >= HEADER_SIZE:
            assert logs, pos  # the damage is reported


def test_damage_in_an_older_file_keeps_later_files(tmp_path: Path) -> None:
    node = Node(tmp_path, size=600)
    c = node.conn()
    for i in range(12):
        node.send(c, b"put 0 0 1 20\r\n%020d\r\n" % i)
    files = own_files(tmp_path)
    assert len(files) >= 3
    node.crash()
    first = tmp_path / files[0]
    raw = bytearray(first.read_bytes())
    raw[HEADER_SIZE + 10] ^= 0x55  # first record of the oldest file
    first.write_bytes(bytes(raw))
    node = Node(tmp_path, size=600)
    assert node.logs and "checksum" in node.logs[0]
    # the jobs of the later files are all there; only those of the damaged file are missing
    assert 12 in node.engine.jobs and 1 not in node.engine.jobs


# --------------------------------------------------------------------- compaction


def churn(node: Node, cycles: int, live: int, body: int = 1000, pinned: int = 0) -> int:
    """FIFO put/delete churn with ``live`` jobs alive; returns the largest disk use seen."""
    c = node.conn()
    payload = b"x" * body
    put = b"put 0 0 60 %d\r\n%s\r\n" % (body, payload)
    for _ in range(pinned):
        node.send(c, put)
    ids: list[int] = []
    peak = 0
    for _ in range(cycles):
        reply = node.send(c, put)
        ids.append(int(reply.split()[1]))
        if len(ids) > live:
            assert node.send(c, b"delete %d\r\n" % ids.pop(0)) == b"DELETED\r\n"
        peak = max(peak, node.wal.disk_bytes)
    return peak


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def test_churn_stays_bounded(tmp_path: Path) -> None:
    size = 65536
    node = Node(tmp_path, size=size)
    peak = churn(node, 6000, live=20)
    assert peak <= 3 * size, peak
    assert dir_bytes(tmp_path) <= 3 * size
    assert node.wal.stats().records_migrated == 0  # dead files just go; nothing to copy


def test_long_lived_jobs_are_moved_forward(tmp_path: Path) -> None:
    size = 65536
    node = Node(tmp_path, size=size)
    peak = churn(node, 6000, live=20, pinned=3)
    assert peak <= 4 * size, peak
    assert node.wal.stats().records_migrated > 0
    assert {node.engine.jobs[i].file for i in (1, 2, 3)} != {1}
    assert node.wal.stats().oldest_index > 1
    before = snapshot(node.engine)
    node.crash()
    node = Node(tmp_path, size=size)
    assert snapshot(node.engine) == before and node.logs == []


def test_repeated_release_with_delay_stays_bounded(tmp_path: Path) -> None:
    """Reference #622: the log of reserve/release-with-delay grew without bound."""
    size = 16384
    node = Node(tmp_path, size=size)
    c = node.conn()
    node.send(c, b"put 0 0 60 100\r\n" + b"y" * 100 + b"\r\n")
    for i in range(5000):
        assert node.send(c, b"reserve-job 1\r\nrelease 1 %d 1\r\n" % i).endswith(b"RELEASED\r\n")
        assert node.wal.disk_bytes <= 4 * size
    node.crash()
    node = Node(tmp_path, size=size)
    job = node.engine.jobs[1]
    assert (job.pri, job.state, job.release_ct, job.reserve_ct) == (4999, DELAYED, 5000, 5000)


def test_no_compaction_when_the_log_is_mostly_live(tmp_path: Path) -> None:
    node = Node(tmp_path, size=8192)
    c = node.conn()
    for _ in range(200):
        node.send(c, b"put 0 0 60 200\r\n" + b"z" * 200 + b"\r\n")
    assert node.wal.stats().records_migrated == 0
    assert len(node.wal.files()) >= 5
    assert node.wal.disk_bytes < 1.3 * node.wal.live_bytes + 2 * 8192


def test_compaction_decision_needs_garbage_and_two_closed_files(tmp_path: Path) -> None:
    node = Node(tmp_path, size=4096)
    c = node.conn()
    node.send(c, b"put 0 0 60 10\r\npinned-job\r\n")
    filler = b"put 0 0 60 500\r\n" + b"f" * 500 + b"\r\n"
    ids = []
    while node.wal.stats().current_index < 3:  # head (1) is two files behind now
        reply = node.send(c, filler)
        ids.append(int(reply.split()[1]))
    assert node.wal.stats().records_migrated == 0  # the files are still live
    for job_id in ids:
        node.send(c, b"delete %d\r\n" % job_id)
    # deleting made the disk mostly garbage: the pinned job moved, the head went
    assert node.wal.stats().records_migrated >= 1
    assert node.engine.jobs[1].file == node.wal.stats().current_index
    assert node.wal.stats().oldest_index == node.wal.stats().current_index


# --------------------------------------------------------------------- full disk and I/O errors


class FailingFalloc:
    """Preallocation that fails with ENOSPC once ``allow`` files were made."""

    def __init__(self, allow: int) -> None:
        self.allow = allow
        self.calls = 0

    def __call__(self, fd: int, offset: int, length: int) -> None:
        self.calls += 1
        if self.calls > self.allow:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.posix_fallocate(fd, offset, length)


def test_disk_full_put_fails_and_deletes_still_work(tmp_path: Path) -> None:
    """testserv.c binlog_disk_full / binlog_disk_full_delete, in our terms."""
    falloc = FailingFalloc(allow=2)
    node = Node(tmp_path, size=1024, falloc=falloc)
    c = node.conn()
    replies = [node.send(c, b"put 0 0 100 50\r\n" + b"a" * 50 + b"\r\n") for _ in range(40)]
    assert b"OUT_OF_MEMORY\r\n" in replies
    first_oom = replies.index(b"OUT_OF_MEMORY\r\n")
    assert all(r.startswith(b"INSERTED") for r in replies[:first_oom])
    inserted = [int(r.split()[1]) for r in replies if r.startswith(b"INSERTED")]
    assert len(node.engine.jobs) == len(inserted)
    for job_id in inserted:
        assert node.send(c, b"delete %d\r\n" % job_id) == b"DELETED\r\n"
    assert any("No space" in line for line in node.logs)
    assert node.send(c, b"put 0 0 100 1\r\nb\r\n") == b"INSERTED 41\r\n"  # ids used by failures stay used
    node.crash()
    node = Node(tmp_path, size=1024)
    assert list(node.engine.jobs) == [41]


def test_disk_full_release_bury_kick_fail_cleanly(tmp_path: Path) -> None:
    falloc = FailingFalloc(allow=1)
    node = Node(tmp_path, size=2048, falloc=falloc)
    c = node.conn()
    node.send(c, b"put 0 0 100 1\r\nb\r\nreserve\r\nbury 1 0\r\nput 0 0 100 1\r\nr\r\n")
    # fill the file with releases until the log says no
    for i in range(100):
        node.send(c, b"reserve-job 2\r\n")
        reply = node.send(c, b"release 2 %d 0\r\n" % i)
        if reply != b"RELEASED\r\n":
            break
    assert reply == b"OUT_OF_MEMORY\r\n"
    job = node.engine.jobs[2]
    assert job.state == RESERVED and job.pri == i - 1 and job.release_ct == i
    assert node.send(c, b"bury 2 9\r\n") == b"INTERNAL_ERROR\r\n"
    assert job.state == RESERVED and job.bury_ct == 0
    assert node.send(c, b"kick-job 1\r\nkick 10\r\n") == b"NOT_FOUND\r\nKICKED 0\r\n"
    assert node.engine.jobs[1].state == BURIED and node.engine.jobs[1].kick_ct == 0
    before = snapshot(node.engine)
    assert node.send(c, b"delete 2\r\ndelete 1\r\n") == b"DELETED\r\nDELETED\r\n"
    node.crash()
    node = Node(tmp_path, size=2048)
    assert node.engine.jobs == {} and before


def test_write_error_fails_the_command_and_leaves_no_trace(tmp_path: Path, monkeypatch) -> None:
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 0 0 60 1\r\na\r\n")
    real = os.pwritev
    fail = {"n": 0}

    def flaky(fd, bufs, offset):
        if fail["n"]:
            fail["n"] -= 1
            # write part of the record, then fail, as a dying disk might
            real(fd, [bytes(bufs[0])[:3]], offset)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, bufs, offset)

    monkeypatch.setattr(os, "pwritev", flaky)
    fail["n"] = 1
    assert node.send(c, b"put 0 0 60 1\r\nb\r\n") == b"OUT_OF_MEMORY\r\n"
    fail["n"] = 1
    assert node.send(c, b"delete 1\r\n") == b"INTERNAL_ERROR\r\n"
    assert 1 in node.engine.jobs  # not deleted: memory and disk agree
    fail["n"] = 1
    assert node.send(c, b"reserve\r\nrelease 1 5 0\r\n") == b"RESERVED 1 1\r\na\r\nOUT_OF_MEMORY\r\n"
    assert node.engine.jobs[1].state == RESERVED
    assert node.send(c, b"release 1 5 0\r\nput 0 0 60 1\r\nc\r\n") == b"RELEASED\r\nINSERTED 3\r\n"
    monkeypatch.undo()
    node.crash()
    node = Node(tmp_path)
    assert node.logs == []  # the failed writes were zeroed and overwritten
    assert sorted(node.engine.jobs) == [1, 3] and node.engine.jobs[1].pri == 5


# --------------------------------------------------------------------- fsync policy


def test_sync_policy(tmp_path: Path) -> None:
    """What the I/O drivers and the sync task see (wal.Durability)."""
    for name in "abc":
        (tmp_path / name).mkdir()
    never = Node(tmp_path / "a", fsync_ms=None)
    sync: Durability = never.wal.durability
    c = never.conn()
    never.send(c, b"put 0 0 1 1\r\nx\r\n")
    assert not sync.periodic and not sync.must_sync()
    assert not sync.sync_due(mono() + 10 * NS) and sync.sync_deadline() is None

    always = Node(tmp_path / "b", fsync_ms=0)
    sync = always.wal.durability
    assert not sync.periodic and not sync.must_sync()
    assert not sync.sync_due(mono())  # nothing written yet
    c = always.conn()
    always.send(c, b"put 0 0 1 1\r\nx\r\n")
    assert sync.sync_due(mono()) and sync.must_sync()
    assert always.wal.durability.durable < always.wal.durability.written
    assert sync.sync() is True
    assert not sync.sync_due(mono()) and not sync.syncing and not sync.must_sync()
    assert always.wal.durability.durable == always.wal.durability.written

    paced = Node(tmp_path / "c", fsync_ms=50)
    sync = paced.wal.durability
    assert sync.periodic and sync.interval_ns == 50_000_000
    c = paced.conn()
    sync.sync()
    paced.send(c, b"put 0 0 1 1\r\nx\r\n")
    assert not sync.must_sync()  # the sync task's business, not the replies'
    now = mono()
    deadline = sync.sync_deadline()
    assert deadline is not None and now < deadline <= now + 50_000_000
    assert not sync.sync_due(now)
    assert sync.sync_due(deadline)
    sync.sync()
    assert sync.sync_deadline() is None


def test_sync_covers_files_left_behind(tmp_path: Path, monkeypatch) -> None:
    node = Node(tmp_path, size=1024, fsync_ms=0)
    synced: list[int] = []
    real = os.fsync
    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    c = node.conn()
    for _ in range(30):
        node.send(c, b"put 0 0 1 50\r\n" + b"s" * 50 + b"\r\n")
    sync = node.wal.durability
    retired = list(sync._retired)
    assert retired  # files were left while no sync ran
    sync.sync()
    assert set(retired) <= set(synced) and sync._retired == []
    assert sync.dir_fd in synced  # new files: the directory too


def test_close_trims_and_drops_spares(tmp_path: Path) -> None:
    node = Node(tmp_path, size=1 << 20)
    c = node.conn()
    node.send(c, b"put 0 0 1 1\r\nx\r\n")
    assert (tmp_path / f"{FILE_PREFIX}1").stat().st_size == 1 << 20  # preallocated
    node.wal.close()
    assert (tmp_path / f"{FILE_PREFIX}1").stat().st_size < 200
    node = Node(tmp_path, size=1 << 20)
    assert list(node.engine.jobs) == [1]


# --------------------------------------------------------------------- beanstalkd 1.12 files


def v7_record(job_id: int, state: int, tube: bytes = b"", body: bytes = b"", pri: int = 0,
              delay: int = 0, ttr: int = NS, created: int = 0, deadline: int = 0,
              counters: tuple = (0, 0, 0, 0, 0), size: Optional[int] = None) -> bytes:
    rec = V7_JOBREC.pack(job_id, pri, delay, ttr, len(body) if size is None else size,
                             created, deadline, *counters, state)
    return struct.pack("<i", len(tube)) + tube + rec + body


def test_v7_replay_semantics(tmp_path: Path) -> None:
    now = time.time_ns()
    data = struct.pack("<i", 7) + b"".join([
        v7_record(1, 1, b"default", b"one\r\n", pri=10, created=now - 5 * NS),
        v7_record(2, 4, b"tube-b", b"two\r\n", delay=60 * NS, created=now, deadline=now + 60 * NS),
        v7_record(3, 1, b"default", b"three\r\n"),
        v7_record(1, 3, pri=20, created=now - 5 * NS, counters=(1, 0, 0, 1, 0), size=5),  # buried
        v7_record(3, 0, size=7),                        # deleted
        v7_record(9, 3, size=3),                        # short record of an unknown job: ignored
        v7_record(4, 2, b"default", b"four\r\n", counters=(3, 0, 0, 0, 0)),  # reserved: ready
    ]) + bytes(4096)
    (tmp_path / "binlog.3").write_bytes(data)
    logs: list[str] = []
    wal = make_log(tmp_path, log=logs.append)
    records, next_id = wal.open()
    got = {r.id: r for r in records}
    assert sorted(got) == [1, 2, 4] and next_id == 10
    assert (got[1].state, got[1].pri, got[1].bury_ct, got[1].reserve_ct, got[1].body) == (BURIED, 20, 1, 1, b"one\r\n")
    assert got[1].created_at == now - 5 * NS
    assert (got[2].tube, got[2].state, got[2].deadline, got[2].delay) == (b"tube-b", DELAYED, now + 60 * NS, 60 * NS)
    assert (got[4].state, got[4].reserve_ct) == (READY, 3)
    assert any("migrated 3 jobs" in line for line in logs)
    wal.close()
    assert not (tmp_path / "binlog.3").exists()  # one way: the beanstalkd file is gone
    wal = make_log(tmp_path, log=logs.append)
    again, again_next = wal.open()
    assert [r.fields() for r in again] == [r.fields() for r in records] and again_next == 10


def test_v7_torn_tail_and_unknown_version(tmp_path: Path) -> None:
    good = v7_record(1, 1, b"default", b"ok\r\n")
    torn = v7_record(2, 1, b"default", b"lost\r\n")[:-3]
    (tmp_path / "binlog.1").write_bytes(struct.pack("<i", 7) + good + torn)
    (tmp_path / "binlog.2").write_bytes(struct.pack("<i", 99) + b"junk")
    (tmp_path / "binlog.4").write_bytes(bytes(4096))  # beanstalkd crashed creating it (#546)
    logs: list[str] = []
    wal = make_log(tmp_path, log=logs.append)
    records, next_id = wal.open()
    assert [r.id for r in records] == [1] and next_id == 2
    text = "\n".join(logs)
    assert "binlog.1" in text and "binlog.2: unknown version: 99" in text
    assert (tmp_path / "binlog.2.unreadable").exists()
    assert not any(p.name in ("binlog.1", "binlog.2", "binlog.4") for p in tmp_path.iterdir())


def test_v5_is_read_too(tmp_path: Path) -> None:
    rec = V5_JOBREC.pack(5, 7, 0, 30_000_000, 4, 1_700_000_000_000_000, 0, 2, 0, 1, 0, 0, 1)
    data = struct.pack("<i", 5) + struct.pack("<Q", 3) + b"old" + rec + b"v5\r\n" + bytes(200)
    (tmp_path / "binlog.1").write_bytes(data)
    wal = make_log(tmp_path)
    (got,), next_id = wal.open()
    assert (got.id, got.tube, got.pri, got.ttr, got.body, got.created_at, got.reserve_ct, got.release_ct) == (
        5, b"old", 7, 30 * NS, b"v5\r\n", 1_700_000_000 * NS, 2, 1)
    assert next_id == 6


def test_interrupted_migration_is_redone(tmp_path: Path) -> None:
    """New files written, old ones not yet removed: replay both, the new ones win."""
    (tmp_path / "binlog.1").write_bytes(struct.pack("<i", 7) + v7_record(1, 1, b"default", b"a\r\n"))
    wal = make_log(tmp_path)
    records, _ = wal.open()
    wal.abandon()
    (tmp_path / "binlog.1").write_bytes(struct.pack("<i", 7) + v7_record(1, 1, b"default", b"a\r\n"))
    wal = make_log(tmp_path)
    again, next_id = wal.open()
    assert [r.fields() for r in again] == [r.fields() for r in records] and next_id == 2


def test_newer_format_refuses_to_start(tmp_path: Path) -> None:
    head = struct.pack("<8sIIQQQ", bl.MAGIC, 99, HEADER_SIZE, 1, 0, 1)
    (tmp_path / f"{FILE_PREFIX}1").write_bytes(head + struct.pack("<I", zlib.crc32(head)) + bytes(4))
    with pytest.raises(bl.BinlogOpenError, match="newer"):
        make_log(tmp_path).open()


def test_binlog_error_classes() -> None:
    assert issubclass(BinlogFull, BinlogError) and issubclass(bl.BinlogIOError, BinlogError)
    assert issubclass(bl.BinlogLockError, BinlogError) and issubclass(bl.BinlogOpenError, BinlogError)
    # the engine catches the interface's errors without importing the binlog
    assert issubclass(BinlogError, WalError)
    assert issubclass(BinlogFull, WalFull) and issubclass(bl.BinlogIOError, WalIOError)


def test_binlog_implements_the_wal_seams(tmp_path: Path) -> None:
    wal: WriteAheadLog = make_log(tmp_path)  # mypy checks the Protocols here
    durability: Durability = bl.Sync(None, mono, lambda kind, text: None, str(tmp_path))
    assert isinstance(wal, Binlog) and not durability.periodic
    wal.open()
    assert wal.stats() == WalStats(1, 1, 0, 0, 65536)
    wal.close()


def fake_job(job_id: int, state: str = READY, created_at: int = 0, deadline: int = 0,
             counts: Optional[list[int]] = None) -> SimpleNamespace:
    """What the log reads of a job, without an engine."""
    return SimpleNamespace(
        id=job_id, tube=SimpleNamespace(name=b"t"), state=state, pri=1, delay=2, ttr=3,
        created_at=created_at, deadline=deadline, body=b"b\r\n", counts=counts, file=0, wal_stamp=0,
    )


def test_times_come_from_the_callers_clocks(tmp_path: Path) -> None:
    """Records keep wall-clock times computed from the two clocks given, never from time.*."""
    for module in (bl.format, bl.migrate, bl.space, bl.sync, bl.log):
        assert "time" not in vars(module), module.__name__
    wal = Binlog(str(tmp_path), 65536, None, clock=lambda: 5 * NS, wall_clock=lambda: 1000 * NS,
                 log=lambda m: None)
    wal.open()
    wal.append_put(fake_job(1, created_at=4 * NS))  # type: ignore[arg-type]
    job = fake_job(2, DELAYED, created_at=4 * NS, deadline=9 * NS, counts=[1, 2, 3, 4, 5])
    wal.append_put(job)  # type: ignore[arg-type]
    wal.append_update(job, DELAYED, deadline=19 * NS, bump="kick")  # type: ignore[arg-type]
    wal.close()
    records, _ = make_log(tmp_path).open()
    got = {r.id: (r.created_at, r.deadline, r.delay, r.ttr, r.counters) for r in records}
    assert got == {1: (999 * NS, 0, 2 * NS, 3 * NS, (0, 0, 0, 0, 0)),
                   2: (999 * NS, 1014 * NS, 2 * NS, 3 * NS, (1, 2, 3, 4, 6))}


def test_files_hold_exactly_what_the_encoders_make(tmp_path: Path) -> None:
    """Production writes through the encoders the round-trip tests check."""
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"put 3 0 60 2\r\nab\r\nput 1 40 60 1\r\nd\r\nreserve\r\nrelease 1 7 30\r\n")
    node.send(c, b"reserve-job 2\r\nbury 2 5\r\nkick 1\r\ndelete 2\r\n")
    node.wal.append_move(node.engine.jobs[1], b"elsewhere")
    node.crash()
    (name,) = own_files(tmp_path)
    data = (tmp_path / name).read_bytes()
    scan = Scan(data)
    rebuilt = data[:HEADER_SIZE]
    kinds = []
    for _pos, _end, kind, value in scan:
        kinds.append(kind)
        if isinstance(value, JobRecord):
            rebuilt += full_bytes(value)
        elif isinstance(value, Update):
            rebuilt += encode_update(value)
        else:
            rebuilt += encode_delete(value)
    assert scan.problem is None and rebuilt == data[: scan.end]
    assert {bl.T_FULL, bl.T_UPDATE, bl.T_DELETE} <= set(kinds)


# --------------------------------------------------------------------- moving a job to another tube


def test_move_survives_a_crash(tmp_path: Path) -> None:
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"use a\r\nput 5 0 60 1\r\nx\r\nput 6 300 60 1\r\ny\r\nput 7 0 60 1\r\nz\r\n")
    node.send(c, b"watch a\r\nreserve-job 1\r\nrelease 1 5 0\r\nreserve-job 3\r\nbury 3 7\r\n")
    node.send(c, b"use b\r\nput 0 0 60 1\r\nw\r\nreserve-job 4\r\nbury 4 0\r\n")  # buried in b first
    before, times = snapshot(node.engine), wall_times(node.engine)
    for job_id in (1, 2, 3):
        job = node.engine.jobs[job_id]
        node.wal.append_move(job, b"b")
        assert job.tube.name == b"a"  # the engine moves it once the record is written
        assert job.file == node.wal.stats().current_index and node.wal.space.where[job_id].seq == job.file
        check_invariants(node.wal)
    with pytest.raises(ValueError):
        node.wal.append_move(node.engine.jobs[1], b"")
    node.crash()

    again = Node(tmp_path)
    assert again.logs == []
    expect = {job_id: (b"b" if job_id < 4 else row[0],) + row[1:] for job_id, row in before.items()}
    assert snapshot(again.engine) == expect
    assert_same_times(times, wall_times(again.engine))
    assert (again.engine.jobs[1].release_ct, again.engine.jobs[3].bury_ct) == (1, 1)
    assert buried_order(again.engine, b"b") == [4, 3]  # a new stamp: behind those buried there before
    # records after a move apply to the moved job
    job = again.engine.jobs[3]
    again.wal.append_update(job, READY, bump="kick")
    again.crash()
    third = Node(tmp_path)
    job = third.engine.jobs[3]
    assert (job.tube.name, job.state, job.kick_ct, job.bury_ct) == (b"b", READY, 1, 1)


def test_engine_move_is_logged(tmp_path: Path) -> None:
    if not hasattr(Engine, "move_jobs"):
        pytest.skip("this engine cannot move jobs yet")
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"use a\r\nput 0 0 60 1\r\nx\r\nput 0 0 60 1\r\ny\r\n")
    assert node.engine.move_jobs(b"a", b"b", READY, 1, mono()) == 1
    before = snapshot(node.engine)
    node.crash()
    again = Node(tmp_path)
    assert snapshot(again.engine) == before
    assert {job.id: job.tube.name for job in again.engine.jobs.values()} == {1: b"b", 2: b"a"}


def test_operator_job_changes_survive_a_crash(tmp_path: Path) -> None:
    """move_job, bury_job and reprioritize_job are logged before they are made,
    and a restart counts what it restored (recovered_jobs)."""
    node = Node(tmp_path)
    c = node.conn()
    node.send(c, b"use a\r\n" + b"put 100 0 60 1\r\nx\r\n" * 4 + b"put 100 500 60 1\r\nd\r\n")
    now = mono()
    assert node.engine.move_job(1, b"b", now)
    assert node.engine.bury_job(2, now)
    assert node.engine.bury_job(5, now)  # a delayed one
    assert node.engine.reprioritize_job(3, 7, now)
    assert node.send(c, b"delete 4\r\n") == b"DELETED\r\n"
    before = snapshot(node.engine)
    node.crash()
    again = Node(tmp_path)
    assert snapshot(again.engine) == before
    jobs = again.engine.jobs
    assert (jobs[1].tube.name, jobs[1].state) == (b"b", READY)
    assert (jobs[2].state, jobs[2].bury_ct, jobs[5].state) == (BURIED, 1, BURIED)
    assert jobs[3].pri == 7
    assert again.engine.recovered_jobs() == 4


# --------------------------------------------------------------------- random operations


def check_invariants(wal: Binlog) -> None:
    space = wal.space
    cur = space.current
    assert cur is not None
    spare_slots = sum((f.size - f.used) // bl.SLOT for f in space.spares)
    assert space.spare_slots == spare_slots
    assert (cur.size - cur.used) // bl.SLOT + spare_slots >= len(space.where)  # every live job can be deleted
    files = [*space.closed, cur, *space.spares]
    assert [f.seq for f in files] == sorted(f.seq for f in files)
    assert sum(f.size for f in files) == wal.disk_bytes
    assert sum(sum(f.live.values()) for f in files) == wal.live_bytes
    assert sum(len(f.live) for f in files) == len(space.where)
    for job_id, f in space.where.items():
        assert job_id in f.live


@pytest.mark.parametrize("seed", range(int(os.environ.get("BINLOG_SEEDS", "10"))))
def test_random_operations_crashes_and_full_disks(tmp_path: Path, seed: int) -> None:
    import random

    rng = random.Random(seed)
    size = rng.choice([512, 1024, 4096])

    failing = {"on": False}

    def falloc(fd: int, offset: int, length: int) -> None:
        if failing["on"] and rng.random() < 0.15:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.posix_fallocate(fd, offset, length)

    node = Node(tmp_path, size=size, falloc=falloc)
    failing["on"] = True
    unlogged: set[int] = set()  # jobs whose counters a failed best-effort record lost

    def watch_quiet_logs(engine: Engine) -> None:
        # Engine._log_quietly's records are updates naming the job alone; its
        # log is wrapped, not the method replaced (a compiled Engine's methods
        # cannot be), to note the jobs whose record failed.
        wal = engine.wal
        assert wal is not None

        class NotingQuietFailures:
            def __getattr__(self, name: str) -> Any:
                return getattr(wal, name)

            def append_update(self, job: Any, *args: Any, **kwargs: Any) -> None:
                try:
                    wal.append_update(job, *args, **kwargs)
                except BinlogError:
                    if not args and not kwargs:
                        unlogged.add(job.id)
                    raise

        engine.wal = NotingQuietFailures()  # type: ignore[assignment]

    watch_quiet_logs(node.engine)
    for _round in range(4):
        conns = [node.conn() for _ in range(2)]
        for _ in range(250):
            c = rng.choice(conns)
            ids = list(node.engine.jobs) or [1]
            job_id = rng.choice(ids + [max(ids) + 1])
            mine = [job.id for job in c.session.reserved]
            op = rng.random()
            if op < 0.3:
                body = b"b" * rng.choice([1, 10, 100, 700])
                tube = rng.choice([b"a", b"b", b"default"])
                delay = rng.choice([0, 0, 0, 300])
                ttr = rng.choice([1, 600])
                node.send(c, b"use %s\r\nput %d %d %d %d\r\n%s\r\n" % (
                    tube, rng.randrange(2000), delay, ttr, len(body), body))
            elif op < 0.4:
                node.send(c, b"watch a\r\nwatch b\r\nreserve-with-timeout 0\r\n")
            elif op < 0.5:
                node.send(c, b"reserve-job %d\r\n" % job_id)
            elif op < 0.6 and mine:
                node.send(c, b"release %d %d %d\r\n" % (rng.choice(mine), rng.randrange(2000), rng.choice([0, 300])))
            elif op < 0.7 and mine:
                node.send(c, b"bury %d %d\r\n" % (rng.choice(mine), rng.randrange(2000)))
            elif op < 0.85:
                node.send(c, b"delete %d\r\n" % job_id)
            elif op < 0.92:
                node.send(c, b"use %s\r\nkick %d\r\n" % (rng.choice([b"a", b"b", b"default"]), rng.randrange(1, 4)))
            elif op < 0.96:
                node.send(c, b"kick-job %d\r\n" % job_id)
            elif op < 0.98:
                node.engine.tick(mono() + 2 * NS)  # TTRs of 1 s run out (delays of 300 s do not)
                node.engine.take_completed()
            else:
                c.close(mono())  # its reserved jobs go back to ready
                conns[conns.index(c)] = node.conn()
            check_invariants(node.wal)
        expect = snapshot(node.engine)
        times = wall_times(node.engine)
        for job in node.engine.jobs.values():
            if job.state == RESERVED or job.id in unlogged:  # reserves/timeouts not logged
                expect[job.id] = expect[job.id][:6] + (None, None) + expect[job.id][8:]
            if job.state == RESERVED:
                times[job.id] = (times[job.id][0], 0)
        next_id = node.engine.next_id
        node.crash()
        failing["on"] = False  # a start-up that cannot allocate exits 1; not tested here
        node = Node(tmp_path, size=size, falloc=falloc)
        failing["on"] = True
        unlogged.clear()
        watch_quiet_logs(node.engine)
        assert node.logs == [] or all("No space" in line or "preallocate" in line for line in node.logs)
        got = snapshot(node.engine)
        for job_id, row in expect.items():
            if row[6] is None:
                got[job_id] = got[job_id][:6] + (None, None) + got[job_id][8:]
        diff = {k: (got.get(k), expect.get(k)) for k in got.keys() | expect.keys() if got.get(k) != expect.get(k)}
        assert not diff, repr(diff)
        assert_same_times(times, wall_times(node.engine))
        assert node.engine.next_id <= next_id
        check_invariants(node.wal)
