"""The write-ahead binlog (``-b DIR``): the policy, as beanstalkd's walg.c is.
Plain blocking file I/O, no trio, and no clock of its own (the caller's).

What it guarantees
------------------
* Every command that changes a job's durable state writes one record with
  ``os.pwritev`` *before* the engine answers (the ``append_*`` methods);
  :class:`~.sync.Sync` (run by the server in a thread, or before replies
  under ``-f 0``) makes it durable.
* A command whose record cannot be written fails and changes nothing; a
  delete never needs new space (:mod:`.space`).
* Replay keeps every complete record before a torn or corrupt tail (a CRC32
  per record says which records are complete, :mod:`.format`), says on
  stderr what it skipped, and starts.
* Disk use stays proportional to live data: see *Compaction* below.

Files
-----
``DIR/lock`` (an fcntl write lock, the same kind beanstalkd takes, so the two
daemons exclude each other) and ``DIR/bspy-binlog.N``, N = 1, 2, 3...  Our
files are named differently from beanstalkd's ``binlog.N`` on purpose:
beanstalkd started on a beanstalk-py directory would read our files as
"unknown version" and then unlink them, so with other names it leaves them
alone.  ``binlog.N`` files found at start-up are beanstalkd 1.12 (format 7, or
the 1.4 format 5) and are migrated, once, into our format (:mod:`.migrate`,
:meth:`Binlog.open`).

Compaction
----------
Each file counts the live jobs whose latest FULL record it holds.  Files at
the head of the list (the oldest) that hold none are unlinked, as in
beanstalkd; only the head may go, because a delete record in a middle file
may be what keeps a job of an older file dead.  While the files take at least
three times the bytes of the live jobs' full records and there are two closed
files before the current one, the first live job of the head file is written
again as a FULL record in the current file (``binlog-records-migrated``), so
the head empties and goes.  Short records are not counted as live (unlike
beanstalkd, whose count of them makes a log of repeated releases grow without
bound, #622), so endless updates of the same jobs also stay bounded.  Work per
command is bounded: compaction copies at most about twice the bytes the
command wrote (at least one job).
"""

from __future__ import annotations

import errno
import fcntl
import operator
import os
import re
import sys
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from ..job import DELAYED, READY, RESERVED
from ..wal import WalStats
from .format import (
    DEFAULT_FILE_SIZE,
    DELETE_SIZE,
    FILE_PREFIX,
    HEADER_SIZE,
    MAX_TUBE,
    NS,
    UPDATE_SIZE,
    VERSION,
    JobRecord,
    Replay,
    Scan,
    Update,
    encode_delete,
    encode_header,
    encode_update,
    replay_own,
)
from .migrate import V7_PREFIX, replay_v7
from .space import BinlogError, Space, _default_falloc
from .sync import Sync

if TYPE_CHECKING:
    from ..job import Job

_NUMBERED = re.compile(r"[0-9]+")
_ZEROS = (0, 0, 0, 0, 0)
_ORDER = operator.attrgetter("stamp", "id")  # the order jobs come back in (ties: the import's stamp 1)


class BinlogLockError(BinlogError):
    """The directory is missing or locked by another process (exit 10)."""

    in_use = False  # True: another process holds the lock (not an I/O failure)


def lock_directory(directory: str, path: str) -> int:
    """Take ``path`` (``directory``'s lock file) as beanstalkd and the daemon do:
    an exclusive lockf, for as long as the returned descriptor stays open.
    BinlogLockError (``in_use`` when another process holds it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BinlogLockError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            error = BinlogLockError(f"{directory} is in use: another process (beanstalk-py or beanstalkd) "
                                    f"holds the lock on {path}")
            error.in_use = True
            raise error from exc
        raise BinlogLockError(f"cannot lock {path}: {exc.strerror}") from exc
    return fd


class BinlogOpenError(BinlogError):
    """Replay or creating the first file failed (exit 1)."""


def _stderr(message: str) -> None:
    print(f"beanstalk-py: {message}", file=sys.stderr, flush=True)


class Binlog:
    """The log of one directory; implements :class:`beanstalk_py.wal.WriteAheadLog`.

    Use: ``records, next_id = log.open()``; load them into the engine; then
    ``log.bind(engine.jobs)`` (compaction reads live jobs from that mapping)
    and call the ``append_*`` methods before each reply; give
    :attr:`durability` to whatever runs the fsyncs.  ``fsync_ms`` None means
    never fsync (``-F``); 0 means before every reply (``-f 0``).  ``clock``
    is the engine's monotonic clock (the one job times are on) and
    ``wall_clock`` the wall clock, both in ns: records keep wall-clock times.
    Single-threaded except :meth:`Sync.sync <.sync.Sync.sync>`.
    """

    def __init__(
        self,
        directory: str,
        file_size: int = DEFAULT_FILE_SIZE,
        fsync_ms: Optional[int] = 50,
        *,
        clock: Callable[[], int],
        wall_clock: Callable[[], int],
        log: Callable[[str], None] = _stderr,
        falloc: Callable[[int, int, int], None] = _default_falloc,
    ) -> None:
        self.dir = directory
        self.file_size = file_size
        self._clock = clock
        self._wall_clock = wall_clock
        self._log = log
        self._warned: dict[str, int] = {}
        self.durability = Sync(fsync_ms, clock, self._warn, directory)
        self.space = Space(directory, file_size, self.durability, header=self._header,
                           falloc=falloc, log=log, warn=self._warn)
        self._lock_fd: Optional[int] = None
        self._jobs: Optional[Mapping[int, "Job"]] = None
        self._max_id = 0  # highest job id written (file headers keep it)
        self._stamp = 1  # the next order stamp
        self._debt = 0  # bytes written since compaction last ran
        self.records_migrated = 0

    # ------------------------------------------------------------------ figures

    def stats(self) -> WalStats:
        space = self.space
        cur = space.current
        current = cur.seq if cur is not None else 0
        oldest = space.closed[0].seq if space.closed else current
        return WalStats(oldest, current, self.records_migrated, self.durability.written, self.file_size)

    @property
    def disk_bytes(self) -> int:
        """Bytes of all our files as allocated (preallocation included)."""
        return self.space.disk_bytes

    @property
    def live_bytes(self) -> int:
        """Bytes of the live jobs' latest full records."""
        return self.space.live_bytes

    def files(self) -> list[tuple[int, int, int, int]]:
        """``(seq, size, used, live jobs)`` per file, oldest first (for tests)."""
        return self.space.files()

    # ------------------------------------------------------------------ start-up

    def lock(self) -> None:
        """Take DIR/lock for the life of the process (BinlogLockError if not)."""
        self._lock_fd = lock_directory(self.dir, self.space.path("lock"))

    def open(self, progress: Optional[Callable[[int, int], None]] = None) -> tuple[list[JobRecord], int]:
        """Lock, replay, migrate if needed, open a new file.

        Returns the live jobs (ordered by their order stamp; reserved jobs
        come back ready) and the next job id to issue.  Raises
        :class:`BinlogLockError` (exit 10) or :class:`BinlogOpenError` (exit 1).
        ``progress(done, total)``, in bytes of log files, is called before
        each file is read and once more when all are (``done == total``),
        before the files are checkpointed or kept (the daemon tells systemd
        that start-up goes on).
        """
        if self._lock_fd is None:
            self.lock()
        try:
            return self._open(progress)
        except BinlogError:
            raise
        except OSError as exc:
            raise BinlogOpenError(f"{exc.filename or self.dir}: {exc.strerror}") from exc

    def _open(self, progress: Optional[Callable[[int, int], None]]) -> tuple[list[JobRecord], int]:
        self.durability.open_dir()
        own: list[tuple[int, str]] = []
        foreign: list[tuple[int, str]] = []
        for name in os.listdir(self.dir):
            for prefix, into in ((FILE_PREFIX, own), (V7_PREFIX, foreign)):
                if name.startswith(prefix) and _NUMBERED.fullmatch(name[len(prefix):]):
                    into.append((int(name[len(prefix):]), name))
        own.sort()
        foreign.sort()
        sizes = {name: os.stat(self.space.path(name)).st_size for _n, name in own + foreign} if progress else {}
        total = sum(sizes.values())
        done = 0
        replay = Replay()
        problems: list[str] = []
        migrated: list[str] = []  # foreign files read (removed after migration)
        unreadable: list[str] = []
        for _n, name in foreign:
            if progress is not None:
                progress(done, total)
                done += sizes[name]
            version, problem = replay_v7(self._read(name), replay)
            if problem is not None:
                problems.append(f"{name}: {problem}")
            (unreadable if version is None else migrated).append(name)
        own_files: list[tuple[int, str, int, Scan]] = []
        damaged = False
        for seq, name in own:
            if progress is not None:
                progress(done, total)
                done += sizes[name]
            data = self._read(name)
            scan = replay_own(data, seq, replay)
            if scan.version is not None and scan.version > VERSION:
                raise BinlogOpenError(
                    f"{name} was written by a newer beanstalk-py (format {scan.version}); refusing to start"
                )
            if scan.problem is not None:
                damaged = True
                problems.append(f"{name}: {scan.problem}; skipped {scan.skipped} bytes after the last complete record")
            own_files.append((seq, name, len(data), scan))
            # The file's bytes go now, not with the scans after the last file:
            # the next read reuses their memory.  1,000,000 jobs (357 MB of
            # files, all held until the end otherwise): open 2.40 -> 2.00 s
            # pure, medians of 3 alternated runs.
            scan.data = b""
            del data
        if progress is not None:
            progress(total, total)
        for text in problems:
            self._log(text)
        if problems:
            self._log("errors reading the binlog: every complete record before them was kept; "
                      "starting with what could be read")

        # attrgetter rather than a lambda, the key made in C: sorting 300,000
        # records 52 -> 47 ms pure, 59 -> 50 ms compiled.
        records = sorted(replay.jobs.values(), key=_ORDER)
        for rec in records:
            if rec.state == RESERVED:
                rec.state = READY  # a reservation does not survive a restart
        self._max_id = replay.max_id
        self._stamp = replay.max_stamp + 1
        self.space.next_seq = (own[-1][0] if own else 0) + 1
        self.space.start()
        if migrated or unreadable or damaged:
            self._checkpoint(records, [name for _seq, name, _size, _scan in own_files], migrated, unreadable)
        else:
            self._keep(records, own_files)
        return records, replay.max_id + 1

    def _read(self, name: str) -> bytes:
        with open(self.space.path(name), "rb") as fh:
            return fh.read()

    def _checkpoint(self, records: list[JobRecord], own: list[str], migrated: list[str],
                    unreadable: list[str]) -> None:
        """Write every live job into the new file(s), make that durable, then
        remove the files it came from."""
        space = self.space
        for rec in records:
            space.write_full(rec, 0 if rec.id in space.where else 1)
            self.records_migrated += 1
        self.durability.sync_all(space.open_fds())
        for name in own:
            self._unlink(name)
        for name in migrated:
            self._unlink(name)
        for name in unreadable:
            os.replace(space.path(name), space.path(name + ".unreadable"))
            self._log(f"{name} renamed to {name}.unreadable (beanstalk-py cannot read it)")
        self.durability.fsync_dir()
        if migrated:
            cur = space.current
            self._log(
                f"migrated {len(records)} jobs from beanstalkd binlog files "
                f"{migrated[0]}..{migrated[-1]} into {FILE_PREFIX}{cur.seq if cur is not None else '?'}; "
                "the beanstalkd files were removed (one-way: beanstalkd cannot read the new files)"
            )

    def _keep(self, records: list[JobRecord], own_files: list[tuple[int, str, int, Scan]]) -> None:
        """Keep the files as they are; register which live jobs each holds."""
        found = [(seq, name, size, scan.end) for seq, name, size, scan in own_files if scan.end > HEADER_SIZE]
        empty = [name for _seq, name, _size, scan in own_files if scan.end <= HEADER_SIZE]
        self.space.restore(found, records)
        if self.durability.enabled:
            self.durability.sync_all(self.space.open_fds())
        for name in empty:
            self._unlink(name)  # no record at all: nothing to replay, safe to drop
        self.space.gc()

    def bind(self, jobs: Mapping[int, "Job"]) -> None:
        """Give compaction the engine's live jobs (id -> Job)."""
        self._jobs = jobs

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(self.space.path(name))
        except FileNotFoundError:
            pass
        self.durability.dir_changed()

    def _header(self, seq: int) -> bytes:
        return encode_header(seq, self._max_id, self._stamp)

    # ------------------------------------------------------------------ writing

    # Compaction runs at the start of an append, never after its record: the
    # engine changes its memory only once the append has returned, and a copy
    # made from memory in between would carry the job's old state *after*
    # the record of its new one.  At the start, memory matches every record.

    def _record(self, job: "Job", tube: bytes, stamp: int) -> JobRecord:
        """The job as a FULL record: monotonic times become wall-clock times."""
        off = self._wall_clock() - self._clock()
        state = job.state
        counts = job.counts  # the five counters in record order, None while all are 0 (job.py)
        if counts is None:  # every put: 0.2 us less than reading the five properties
            return JobRecord(
                job.id, tube, state, job.pri, job.delay * NS, job.ttr * NS, job.created_at + off,
                job.deadline + off if state == DELAYED else 0, job.body, stamp,
            )
        return JobRecord(
            job.id, tube, state, job.pri, job.delay * NS, job.ttr * NS, job.created_at + off,
            job.deadline + off if state == DELAYED else 0, job.body, stamp, *counts,
        )

    def append_put(self, job: "Job") -> None:
        """A new job: one FULL record.  Sets ``job.file`` and ``job.wal_stamp``."""
        if self.space.closed:
            self._maintain()
        stamp = self._stamp
        self._stamp = stamp + 1
        rec = self._record(job, job.tube.name, stamp)
        job.file = self.space.write_full(rec, 1).seq
        job.wal_stamp = stamp
        if rec.id > self._max_id:
            self._max_id = rec.id
        self._debt += rec.size

    def append_update(
        self,
        job: "Job",
        state: Optional[str] = None,
        pri: Optional[int] = None,
        delay: Optional[int] = None,
        deadline: Optional[int] = None,
        bump: Optional[str] = None,
    ) -> None:
        """A state change: one UPDATE record.

        ``state``, ``pri``, ``delay`` (seconds) and ``deadline`` (monotonic ns) are
        the values the job is about to take, by default its current ones;
        ``bump`` names the counter the change adds one to ("reserve",
        "timeout", "release", "bury" or "kick").  The job itself is not
        changed (but for ``wal_stamp``): the caller applies the change once
        this returns, and not at all if it raises.
        """
        if self.space.closed:
            self._maintain()
        if state is None:
            state = job.state
        if state == DELAYED:
            wall = (job.deadline if deadline is None else deadline) + self._wall_clock() - self._clock()
        else:
            wall = 0
        counts = job.counts  # as in _record
        rc, tc, lc, bc, kc = counts if counts is not None else _ZEROS
        if bump is not None:
            if bump == "release":
                lc += 1
            elif bump == "bury":
                bc += 1
            elif bump == "kick":
                kc += 1
            elif bump == "reserve":
                rc += 1
            elif bump == "timeout":
                tc += 1
            else:
                raise ValueError(f"unknown counter {bump!r}")
        stamp = self._stamp
        self._stamp = stamp + 1
        record = encode_update(Update(
            job.id, state, job.pri if pri is None else pri, (job.delay if delay is None else delay) * NS,
            wall, stamp, (rc, tc, lc, bc, kc),
        ))
        self.space.write((record,), UPDATE_SIZE, 0)
        job.wal_stamp = stamp
        self._debt += UPDATE_SIZE

    def append_move(self, job: "Job", tube: bytes) -> None:
        """The job is about to move to ``tube``: one FULL record of its current
        state in that tube, with a new order stamp.  Sets ``job.file`` and
        ``job.wal_stamp``; the caller changes ``job.tube`` once this returns."""
        if not 0 < len(tube) <= MAX_TUBE:
            raise ValueError(f"tube name of {len(tube)} bytes")
        if self.space.closed:
            self._maintain()
        stamp = self._stamp
        self._stamp = stamp + 1
        rec = self._record(job, tube, stamp)
        job.file = self.space.write_full(rec, 0 if job.id in self.space.where else 1).seq
        job.wal_stamp = stamp
        self._debt += rec.size

    def append_delete(self, job: "Job") -> None:
        """The job is gone: one DELETE record (space was reserved at put)."""
        space = self.space
        if space.closed:
            self._maintain()
        space.write((encode_delete(job.id),), DELETE_SIZE, -1)
        space.forget(job.id)
        self._debt += DELETE_SIZE

    # ------------------------------------------------------------------ compaction

    def _maintain(self) -> None:
        """GC and compaction, paid for by the bytes written since the last call."""
        space = self.space
        closed = space.closed
        budget = 2 * self._debt
        self._debt = 0
        if not closed[0].live:
            space.gc()
        if len(closed) >= 2 and space.disk_bytes >= 3 * space.live_bytes and self._jobs is not None:
            self._compact(budget)

    def _compact(self, budget: int) -> None:
        """Copy live jobs out of the head file, at most ~``budget`` bytes (one job at least)."""
        space = self.space
        closed = space.closed
        jobs = self._jobs
        assert jobs is not None
        moved = 0
        while len(closed) >= 2 and space.disk_bytes >= 3 * space.live_bytes:
            head = closed[0]
            if not head.live:
                space.gc()
                if closed and closed[0] is head:
                    return  # could not unlink
                continue
            job_id = next(iter(head.live))
            job = jobs.get(job_id)
            if job is None:  # not a live job of the engine: forget it
                space.forget(job_id)
                continue
            try:
                moved += self._copy_forward(job)
            except BinlogError:
                return  # no room now; try again after a later write
            self.records_migrated += 1
            if moved >= budget:
                return

    def _copy_forward(self, job: "Job") -> int:
        """The job's current state as a FULL record in the current file, its
        order stamp kept; returns the bytes written."""
        rec = self._record(job, job.tube.name, job.wal_stamp)
        job.file = self.space.write_full(rec, 0).seq
        return rec.size

    def _warn(self, kind: str, text: str) -> None:
        """Log ``text``, at most once a second per ``kind`` (a failing disk repeats itself)."""
        now = self._clock()
        if now - self._warned.get(kind, -(10**18)) >= 1_000_000_000:
            self._warned[kind] = now
            self._log(text)

    # ------------------------------------------------------------------ closing

    def abandon(self) -> None:
        """Drop every descriptor without syncing or tidying: what a SIGKILL leaves (tests)."""
        self.space.abandon()
        self.durability.abandon()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Sync (unless -F), drop unused spares, trim the current file, unlock."""
        sync = self.durability
        space = self.space
        with sync.sync_lock:  # no sync runs while the files close
            if space.current is not None:
                if sync.enabled:
                    try:
                        sync.sync_all(space.open_fds())
                    except OSError as exc:
                        self._log(f"fsync at exit: {exc.strerror}")
                space.close()
            sync.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
