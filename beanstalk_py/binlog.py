"""The write-ahead binlog (``-b DIR``): plain blocking file I/O, no trio.

What it guarantees
------------------
* Every command that changes a job's durable state writes one record with
  ``os.pwritev`` *before* the engine answers; :meth:`Binlog.sync` (run by the
  server in a thread, or before replies under ``-f 0``) makes it durable.
* A disk that cannot give space fails the command (:class:`BinlogFull`), an I/O
  error fails it too (:class:`BinlogIOError`); nothing is half-written: the
  bytes of a failed record are zeroed again and the next record takes its place.
* A delete never needs new space: every live job has a short record's worth of
  space reserved in files already allocated (the reference's rule, kept with a
  simpler invariant, see :meth:`Binlog._write`).
* Replay keeps every complete record before a torn or corrupt tail (a CRC32
  per record says which records are complete), says on stderr what it
  skipped, and starts.
* Disk use stays proportional to live data: see *Compaction* below.

Files
-----
``DIR/lock`` (an fcntl write lock, the same kind beanstalkd takes, so the two
daemons exclude each other) and ``DIR/bspy-binlog.N``, N = 1, 2, 3...  Our
files are named differently from beanstalkd's ``binlog.N`` on purpose:
beanstalkd started on a beanstalk-py directory would read our files as
"unknown version" and then unlink them, so with other names it leaves them
alone.  ``binlog.N`` files found at start-up are beanstalkd 1.12 (format 7, or
the 1.4 format 5) and are migrated, once, into our format (see :meth:`open`).

Format (all integers little-endian)
-----------------------------------
File header, 48 bytes::

    8s magic "bspy-wal" | u32 version (1) | u32 header size (48)
    u64 file sequence N | u64 highest job id issued before this file
    u64 next order stamp | u32 crc32 of the 40 bytes before | 4 zero bytes

Then records, each ``u32 payload length | u32 crc32(payload) | payload``.
A length and crc of 0 is the end of the data (the preallocated zeros).  The
payload's first byte is its type:

* FULL (1), 76 bytes + tube + body: type, state, tube length, pad, u64 id,
  u32 pri, i64 delay ns, i64 ttr ns, i64 created-at (wall-clock ns), i64
  delay deadline (wall-clock ns, 0 unless delayed), u64 order stamp, u32 x5
  reserves, timeouts, releases, buries, kicks; then the tube name and the
  body (with its trailing CRLF).
* UPDATE (2), 60 bytes: type, state, 2 pad, u64 id, u32 pri, i64 delay ns,
  i64 deadline (wall ns), u64 stamp, u32 x5 counters.
* DELETE (3), 12 bytes: type, 3 pad, u64 id.

States are coded as beanstalkd's: 1 ready, 2 reserved, 3 buried, 4 delayed.
Wall-clock times let a restart (even after a reboot, when the monotonic clock
starts again) compute how long a delayed job still has to wait.  The order
stamp of a job is that of the record that last changed its state (a
compaction copy keeps it), so buried jobs come back in the order they were
buried.

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
import os
import re
import struct
import sys
import threading
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Optional

from .job import BURIED, DELAYED, READY, RESERVED

if TYPE_CHECKING:
    from .job import Job

DEFAULT_FILE_SIZE = 10485760

MAGIC = b"bspy-wal"
VERSION = 1
FILE_PREFIX = "bspy-binlog."
V7_PREFIX = "binlog."  # beanstalkd's files

T_FULL, T_UPDATE, T_DELETE = 1, 2, 3
S_INVALID, S_READY, S_RESERVED, S_BURIED, S_DELAYED = 0, 1, 2, 3, 4
STATE_CODE = {READY: S_READY, RESERVED: S_RESERVED, BURIED: S_BURIED, DELAYED: S_DELAYED}
CODE_STATE = {code: state for state, code in STATE_CODE.items()}

_HEAD = struct.Struct("<8sIIQQQ")
HEADER_SIZE = 48
_REC = struct.Struct("<II")
_FULL = struct.Struct("<BBBxQIqqqqQIIIII")
_UPDATE = struct.Struct("<BBxxQIqqQIIIII")
_DELETE = struct.Struct("<BxxxQ")
_U32 = struct.Struct("<I")
FULL_FIXED = _FULL.size  # 76
UPDATE_SIZE = _REC.size + _UPDATE.size  # 68: one "slot" of reserved space
DELETE_SIZE = _REC.size + _DELETE.size  # 20
SLOT = UPDATE_SIZE
MAX_TUBE = 200
_NS = 1_000_000_000  # records keep delay and TTR in ns; jobs keep seconds

# beanstalkd 1.12 (format 7) and 1.4 (format 5), native x86_64 layout.
_V7_JOBREC = struct.Struct("<QI4xqqi4xqqIIIIIB3x")  # 80 bytes
_V5_JOBREC = struct.Struct("<QI4xQQi4xQQIIIIIB")  # 77 bytes
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
_NUMBERED = re.compile(r"[0-9]+")


class BinlogError(Exception):
    """A binlog operation failed; the command that needed it must fail."""


class BinlogFull(BinlogError):
    """No space could be allocated (disk full, quota, out of descriptors)."""


class BinlogIOError(BinlogError):
    """A write failed (EIO...)."""


class BinlogLockError(BinlogError):
    """The directory is missing or locked by another process (exit 10)."""


class BinlogOpenError(BinlogError):
    """Replay or creating the first file failed (exit 1)."""


class JobRecord:
    """A job as the log knows it.  Times are wall-clock ns (``time.time_ns``)."""

    __slots__ = (
        "id",
        "tube",
        "state",
        "pri",
        "delay",
        "ttr",
        "created_at",
        "deadline",
        "stamp",
        "reserve_ct",
        "timeout_ct",
        "release_ct",
        "bury_ct",
        "kick_ct",
        "body",
        "file",
        "size",
    )

    def __init__(
        self,
        id: int,
        tube: bytes,
        state: str,
        pri: int,
        delay: int,
        ttr: int,
        created_at: int,
        deadline: int,
        body: bytes,
        stamp: int = 0,
        reserve_ct: int = 0,
        timeout_ct: int = 0,
        release_ct: int = 0,
        bury_ct: int = 0,
        kick_ct: int = 0,
        file: int = 0,
        size: int = 0,
    ) -> None:
        self.id = id
        self.tube = tube
        self.state = state
        self.pri = pri
        self.delay = delay
        self.ttr = ttr
        self.created_at = created_at
        self.deadline = deadline
        self.body = body
        self.stamp = stamp
        self.reserve_ct = reserve_ct
        self.timeout_ct = timeout_ct
        self.release_ct = release_ct
        self.bury_ct = bury_ct
        self.kick_ct = kick_ct
        self.file = file  # sequence of our file holding the latest full record (0: foreign)
        self.size = size  # bytes of that full record

    @property
    def counters(self) -> tuple[int, int, int, int, int]:
        return (self.reserve_ct, self.timeout_ct, self.release_ct, self.bury_ct, self.kick_ct)

    def fields(self) -> tuple:
        """Everything but file placement: what a restart must give back."""
        return (
            self.id, self.tube, self.state, self.pri, self.delay, self.ttr,
            self.created_at, self.deadline, self.body, self.stamp, self.counters,
        )

    def __repr__(self) -> str:
        return f"<JobRecord {self.id} {self.state} pri={self.pri} tube={self.tube!r} stamp={self.stamp}>"


# ---------------------------------------------------------------------- encoding


def encode_header(seq: int, max_id: int, stamp: int) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, HEADER_SIZE, seq, max_id, stamp)
    return head + _U32.pack(zlib.crc32(head)) + b"\0\0\0\0"


def _frame(payload: bytes) -> bytes:
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


def encode_full(rec: JobRecord) -> bytes:
    """One FULL record (``rec.deadline`` is only kept for delayed jobs)."""
    code = STATE_CODE[rec.state]
    deadline = rec.deadline if code == S_DELAYED else 0
    head = _FULL.pack(
        T_FULL, code, len(rec.tube), rec.id, rec.pri, rec.delay, rec.ttr,
        rec.created_at, deadline, rec.stamp, *rec.counters,
    )
    return _frame(head + rec.tube + rec.body)


def encode_update(rec: JobRecord) -> bytes:
    code = STATE_CODE[rec.state]
    deadline = rec.deadline if code == S_DELAYED else 0
    return _frame(
        _UPDATE.pack(T_UPDATE, code, rec.id, rec.pri, rec.delay, deadline, rec.stamp, *rec.counters)
    )


def encode_delete(job_id: int) -> bytes:
    return _frame(_DELETE.pack(T_DELETE, job_id))


class Scan:
    """Reads one of our files: iterate for ``(offset, end, type, value)``.

    ``value`` is a :class:`JobRecord` for FULL records (``file``/``size``
    unset), a tuple ``(id, state, pri, delay, deadline, stamp, counters)``
    for UPDATE and the id for DELETE.  After iteration, ``header`` is
    ``(seq, max_id, stamp)`` or None, ``end`` the offset after the last good
    record, ``problem`` a description of what stopped the scan early (None
    for a clean end) and ``skipped`` how many non-zero bytes were left unread.
    Never raises on bad data.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.header: Optional[tuple[int, int, int]] = None
        self.version: Optional[int] = None
        self.end = 0
        self.problem: Optional[str] = None
        self.skipped = 0
        self.empty = False  # all zeros: created, never written

    def _stop(self, pos: int, why: str) -> None:
        data = self.data
        last = len(data.rstrip(b"\0"))
        if last > pos:
            self.problem = f"offset {pos}: {why}"
            self.skipped = last - pos

    def __iter__(self) -> Iterator[tuple[int, int, int, object]]:
        data = self.data
        n = len(data)
        self.end = 0
        if n < HEADER_SIZE or data[:8] != MAGIC:
            if not data.rstrip(b"\0"):
                self.empty = True
            else:
                self._stop(0, "not a beanstalk-py binlog file (bad magic)")
            return
        magic, version, hsize, seq, max_id, stamp = _HEAD.unpack_from(data)
        (crc,) = _U32.unpack_from(data, 40)
        if crc != zlib.crc32(data[:40]) or hsize != HEADER_SIZE:
            self._stop(0, "file header checksum mismatch")
            return
        self.version = version
        if version != VERSION:
            self._stop(0, f"unknown format version {version}")
            return
        self.header = (seq, max_id, stamp)
        pos = HEADER_SIZE
        self.end = pos
        view = memoryview(data)
        rec_unpack = _REC.unpack_from
        crc32 = zlib.crc32
        while True:
            if pos + 8 > n:
                self._stop(pos, "torn record header at end of file")
                return
            length, crc = rec_unpack(data, pos)
            if length == 0:
                if crc:
                    self._stop(pos, "record of length 0")
                else:
                    self._stop(pos, "data after the end-of-log zeros")
                return
            end = pos + 8 + length
            if end > n:
                self._stop(pos, f"record of {length} bytes runs past the end of the file (torn write?)")
                return
            payload = view[pos + 8 : end]
            if crc32(payload) != crc:
                self._stop(pos, "record checksum mismatch (torn or corrupt)")
                return
            kind = payload[0]
            value: object
            if kind == T_FULL and length >= FULL_FIXED + 3:
                (_, code, tube_len, job_id, pri, delay, ttr, created, deadline, stamp,
                 rc, tc, lc, bc, kc) = _FULL.unpack_from(payload)
                body = bytes(payload[FULL_FIXED + tube_len :])
                state = CODE_STATE.get(code)
                if (
                    state is None or not 0 < tube_len <= MAX_TUBE or len(body) < 2
                    or body[-2:] != b"\r\n" or not job_id
                ):
                    self._stop(pos, "malformed full record")
                    return
                value = JobRecord(
                    job_id, bytes(payload[FULL_FIXED : FULL_FIXED + tube_len]), state, pri,
                    delay, ttr, created, deadline, body, stamp, rc, tc, lc, bc, kc,
                )
            elif kind == T_UPDATE and length == _UPDATE.size:
                (_, code, job_id, pri, delay, deadline, stamp, rc, tc, lc, bc, kc) = _UPDATE.unpack_from(payload)
                state = CODE_STATE.get(code)
                if state is None or not job_id:
                    self._stop(pos, "malformed update record")
                    return
                value = (job_id, state, pri, delay, deadline, stamp, (rc, tc, lc, bc, kc))
            elif kind == T_DELETE and length == _DELETE.size:
                value = _DELETE.unpack_from(payload)[1]
            else:
                self._stop(pos, f"unknown record type {kind} of {length} bytes")
                return
            yield pos, end, kind, value
            pos = end
            self.end = pos


# ---------------------------------------------------------------------- replay


class _Replay:
    """Jobs rebuilt from records, in file order."""

    def __init__(self) -> None:
        self.jobs: dict[int, JobRecord] = {}
        self.max_id = 0
        self.max_stamp = 0
        self.records = 0

    def full(self, rec: JobRecord, seq: int, size: int) -> None:
        rec.file = seq
        rec.size = size
        self.jobs[rec.id] = rec
        self._saw(rec.id, rec.stamp)

    def update(self, job_id: int, state: str, pri: int, delay: int, deadline: int, stamp: int,
               counters: tuple[int, int, int, int, int]) -> None:
        self._saw(job_id, stamp)
        rec = self.jobs.get(job_id)
        if rec is None:
            return  # its full record was in a file already removed: the job is gone or moved
        rec.state = state
        rec.pri = pri
        rec.delay = delay
        rec.deadline = deadline
        rec.stamp = stamp
        rec.reserve_ct, rec.timeout_ct, rec.release_ct, rec.bury_ct, rec.kick_ct = counters

    def delete(self, job_id: int) -> None:
        self._saw(job_id, 0)
        self.jobs.pop(job_id, None)

    def _saw(self, job_id: int, stamp: int) -> None:
        self.records += 1
        if job_id > self.max_id:
            self.max_id = job_id
        if stamp > self.max_stamp:
            self.max_stamp = stamp


def replay_own(data: bytes, seq: int, replay: _Replay) -> Scan:
    """Apply one of our files to ``replay``; returns the finished :class:`Scan`."""
    scan = Scan(data)
    for pos, end, kind, value in scan:
        if kind == T_FULL:
            replay.full(value, seq, end - pos)  # type: ignore[arg-type]
        elif kind == T_UPDATE:
            replay.update(*value)  # type: ignore[misc]
        else:
            replay.delete(value)  # type: ignore[arg-type]
    if scan.header is not None:
        _, max_id, stamp = scan.header
        replay.max_id = max(replay.max_id, max_id)
        replay.max_stamp = max(replay.max_stamp, stamp - 1)
    return scan


def replay_v7(data: bytes, replay: _Replay) -> tuple[Optional[int], Optional[str]]:
    """Apply a beanstalkd binlog file (format 7 or 5) as beanstalkd 1.12 reads it.

    Returns ``(version, problem)``; version None means not a readable file.
    The differences from 1.12 are ours on purpose: ids of short records count
    toward the next id, and a record with an unknown state stops the file
    without dropping the job.
    """
    n = len(data)
    if n < 4:
        if data.rstrip(b"\0"):
            return None, f"{n} bytes, no version"
        return 0, None
    (version,) = _I32.unpack_from(data)
    if version == 7:
        rec_struct, name_struct, scale = _V7_JOBREC, _I32, 1
    elif version == 5:
        rec_struct, name_struct, scale = _V5_JOBREC, _U64, 1000
    elif not data.rstrip(b"\0"):
        return 0, None  # all zeros: beanstalkd crashed right after creating it (#546)
    else:
        return None, f"unknown version: {version}"
    pos = 4
    jobs = replay.jobs
    while True:
        if pos + name_struct.size > n:
            if data[pos:].rstrip(b"\0"):
                return version, f"offset {pos}: unexpected end of file in a record"
            break  # a short read ends the file, as in beanstalkd
        (namelen,) = name_struct.unpack_from(data, pos)
        if namelen < 0 or namelen > MAX_TUBE:
            return version, f"offset {pos}: tube name length {namelen} out of range"
        fixed = pos + name_struct.size + namelen
        if fixed + rec_struct.size > n:
            if data[pos:].rstrip(b"\0"):
                return version, f"offset {pos}: unexpected end of file in a record"
            break
        (job_id, pri, delay, ttr, body_size, created, deadline,
         rc, tc, lc, bc, kc, code) = rec_struct.unpack_from(data, fixed)
        if not job_id:
            break  # the preallocated zeros
        end = fixed + rec_struct.size
        body = b""
        if namelen:
            if body_size < 2 or end + body_size > n:
                return version, f"offset {pos}: job {job_id}: body of {body_size} bytes is cut short"
            body = data[end : end + body_size]
            end += body_size
        replay.records += 1
        replay.max_id = max(replay.max_id, job_id)
        rec = jobs.get(job_id)
        if code == S_INVALID:
            jobs.pop(job_id, None)
        elif code in (S_READY, S_RESERVED, S_BURIED, S_DELAYED):
            if rec is None and not namelen:
                pass  # short record of a job whose full record was in a removed file
            else:
                replay.max_stamp += 1
                state = CODE_STATE[S_READY if code == S_RESERVED else code]
                if rec is None:
                    rec = JobRecord(job_id, data[pos + name_struct.size : fixed], state, pri,
                                    delay * scale, ttr * scale, created * scale, deadline * scale, body)
                    jobs[job_id] = rec
                # beanstalkd copies the whole Jobrec of every record over the job
                rec.state = state
                rec.pri = pri
                rec.delay = delay * scale
                rec.ttr = ttr * scale
                rec.created_at = created * scale
                rec.deadline = deadline * scale
                rec.reserve_ct, rec.timeout_ct, rec.release_ct, rec.bury_ct, rec.kick_ct = rc, tc, lc, bc, kc
                rec.stamp = replay.max_stamp
                if namelen:
                    rec.body = body
                rec.file = 0
        else:
            return version, f"offset {pos}: job {job_id}: unknown state {code}"
        pos = end
    return version, None


# ---------------------------------------------------------------------- files


def _default_falloc(fd: int, offset: int, length: int) -> None:
    """Reserve blocks so later writes into the file cannot fail for space."""
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        # No fallocate on this file system: write zeros, as beanstalkd does.
        block = bytes(65536)
        pos = offset
        end = offset + length
        while pos < end:
            pos += os.pwrite(fd, block[: min(len(block), end - pos)], pos)


class _File:
    __slots__ = ("seq", "path", "fd", "size", "used", "live")

    def __init__(self, seq: int, path: str, fd: Optional[int], size: int, used: int) -> None:
        self.seq = seq
        self.path = path
        self.fd = fd
        self.size = size  # bytes on disk (preallocated, or truncated to used once closed)
        self.used = used  # end of the records
        self.live: dict[int, int] = {}  # job id -> bytes of its latest full record here

    def __repr__(self) -> str:
        return f"<_File {self.seq} used={self.used} size={self.size} live={len(self.live)}>"


def _stderr(message: str) -> None:
    print(f"beanstalk-py: {message}", file=sys.stderr, flush=True)


class Binlog:
    """The log of one directory.  Single-threaded except :meth:`sync`.

    Use: ``records, next_id = log.open()``; load them into the engine; then
    ``log.bind(engine.jobs)`` (compaction reads live jobs from that mapping)
    and call the ``append_*`` methods before each reply.  ``fsync_ms`` None
    means never fsync (``-F``); 0 means before every reply (``-f 0``).
    """

    def __init__(
        self,
        directory: str,
        file_size: int = DEFAULT_FILE_SIZE,
        fsync_ms: Optional[int] = 50,
        *,
        log: Callable[[str], None] = _stderr,
        falloc: Callable[[int, int, int], None] = _default_falloc,
    ) -> None:
        self.dir = directory
        self.file_size = file_size
        self.fsync = fsync_ms is not None
        self.fsync_ns = (fsync_ms or 0) * 1_000_000
        self._log = log
        self._falloc = falloc
        self._lock_fd: Optional[int] = None
        self._dir_fd: Optional[int] = None
        self._closed: deque[_File] = deque()  # written files before the current one, oldest first
        self._cur: Optional[_File] = None
        self._spares: deque[_File] = deque()  # allocated ahead, after the current one
        self._spare_slots = 0
        self._where: dict[int, _File] = {}  # live job id -> file of its latest full record
        self._jobs: Optional[Mapping[int, "Job"]] = None
        self._live_bytes = 0
        self._disk_bytes = 0
        self._next_seq = 1
        self._max_id = 0
        self._stamp = 1
        self._debt = 0  # bytes written since compaction last ran
        self.records_written = 0
        self.records_migrated = 0
        self.jobs_restored = 0
        # fsync bookkeeping, shared with the thread running sync()
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._retired: list[int] = []  # fds of files left since the last sync
        self._dir_dirty = False
        self._written = 0  # records written
        self._covered = 0  # records covered by the latest sync started
        self._durable = 0  # records covered by the latest sync finished
        self._last_sync = time.monotonic_ns()
        self._syncing = False
        self._warned: dict[str, int] = {}

    # ------------------------------------------------------------------ stats

    @property
    def oldest_index(self) -> int:
        if self._closed:
            return self._closed[0].seq
        return self._cur.seq if self._cur is not None else 0

    @property
    def current_index(self) -> int:
        return self._cur.seq if self._cur is not None else 0

    @property
    def max_size(self) -> int:
        return self.file_size

    @property
    def disk_bytes(self) -> int:
        """Bytes of all our files as allocated (preallocation included)."""
        return self._disk_bytes

    @property
    def live_bytes(self) -> int:
        return self._live_bytes

    @property
    def live_jobs(self) -> int:
        return len(self._where)

    def files(self) -> list[tuple[int, int, int, int]]:
        """``(seq, size, used, live jobs)`` per file, oldest first (for tests)."""
        out = [(f.seq, f.size, f.used, len(f.live)) for f in self._closed]
        if self._cur is not None:
            out.append((self._cur.seq, self._cur.size, self._cur.used, len(self._cur.live)))
        out.extend((f.seq, f.size, f.used, len(f.live)) for f in self._spares)
        return out

    # ------------------------------------------------------------------ start-up

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def lock(self) -> None:
        """Take DIR/lock for the life of the process (BinlogLockError if not)."""
        path = self._path("lock")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BinlogLockError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise BinlogLockError(
                    f"{self.dir} is in use: another process (beanstalk-py or beanstalkd) "
                    f"holds the lock on {path}"
                ) from exc
            raise BinlogLockError(f"cannot lock {path}: {exc.strerror}") from exc
        self._lock_fd = fd

    def open(self) -> tuple[list[JobRecord], int]:
        """Lock, replay, migrate if needed, open a new file.

        Returns the live jobs (ordered by their order stamp; reserved jobs
        come back ready) and the next job id to issue.  Raises
        :class:`BinlogLockError` (exit 10) or :class:`BinlogOpenError` (exit 1).
        """
        if self._lock_fd is None:
            self.lock()
        try:
            return self._open()
        except BinlogError:
            raise
        except OSError as exc:
            raise BinlogOpenError(f"{exc.filename or self.dir}: {exc.strerror}") from exc

    def _open(self) -> tuple[list[JobRecord], int]:
        self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        own: list[tuple[int, str]] = []
        foreign: list[tuple[int, str]] = []
        for name in os.listdir(self.dir):
            for prefix, into in ((FILE_PREFIX, own), (V7_PREFIX, foreign)):
                if name.startswith(prefix) and _NUMBERED.fullmatch(name[len(prefix):]):
                    into.append((int(name[len(prefix):]), name))
        own.sort()
        foreign.sort()
        replay = _Replay()
        problems: list[str] = []
        migrated: list[str] = []  # foreign files read (removed after migration)
        unreadable: list[str] = []
        for _n, name in foreign:
            with open(self._path(name), "rb") as fh:
                data = fh.read()
            version, problem = replay_v7(data, replay)
            if problem is not None:
                problems.append(f"{name}: {problem}")
            if version is None:
                unreadable.append(name)
            else:
                migrated.append(name)
        own_files: list[tuple[int, str, int, Scan]] = []
        damaged = False
        for seq, name in own:
            with open(self._path(name), "rb") as fh:
                data = fh.read()
            scan = replay_own(data, seq, replay)
            if scan.version is not None and scan.version > VERSION:
                raise BinlogOpenError(
                    f"{name} was written by a newer beanstalk-py (format {scan.version}); refusing to start"
                )
            if scan.problem is not None:
                damaged = True
                problems.append(f"{name}: {scan.problem}; skipped {scan.skipped} bytes after the last complete record")
            own_files.append((seq, name, len(data), scan))
        for text in problems:
            self._log(text)
        if problems:
            self._log("errors reading the binlog: every complete record before them was kept; "
                      "starting with what could be read")

        records = sorted(replay.jobs.values(), key=lambda r: (r.stamp, r.id))
        for rec in records:
            if rec.state == RESERVED:
                rec.state = READY  # a reservation does not survive a restart
        self._max_id = replay.max_id
        self._stamp = replay.max_stamp + 1
        self._next_seq = (own[-1][0] if own else 0) + 1
        self._cur = self._create_file(0)
        checkpoint = bool(migrated or unreadable or damaged)
        if checkpoint:
            # Write every live job into the new file(s), make that durable,
            # then remove the files it came from.
            for rec in records:
                self._write_full_record(rec)
                self.records_migrated += 1
            self._sync_all()
            for _seq, name, _size, _scan in own_files:
                self._unlink(name)
            for name in migrated:
                self._unlink(name)
            for name in unreadable:
                os.replace(self._path(name), self._path(name + ".unreadable"))
                self._log(f"{name} renamed to {name}.unreadable (beanstalk-py cannot read it)")
            self._fsync_dir()
            if migrated:
                self._log(
                    f"migrated {len(records)} jobs from beanstalkd binlog files "
                    f"{migrated[0]}..{migrated[-1]} into {FILE_PREFIX}{self._cur.seq}; "
                    "the beanstalkd files were removed (one-way: beanstalkd cannot read the new files)"
                )
        else:
            # Keep the files as they are; register which live jobs each holds.
            by_seq: dict[int, _File] = {}
            empty: list[str] = []
            for seq, name, size, scan in own_files:
                if scan.end <= HEADER_SIZE:
                    empty.append(name)  # no record at all: nothing to replay, safe to drop
                    continue
                f = _File(seq, self._path(name), None, size, scan.end)
                by_seq[seq] = f
                self._closed.append(f)
                self._disk_bytes += size
            for rec in records:
                f = by_seq[rec.file]
                f.live[rec.id] = rec.size
                self._where[rec.id] = f
                self._live_bytes += rec.size
            for f in self._closed:
                if f.size > f.used:  # the zeros preallocated by a run that did not stop cleanly
                    try:
                        os.truncate(f.path, f.used)
                        self._disk_bytes -= f.size - f.used
                        f.size = f.used
                    except OSError as exc:
                        self._log(f"truncate {f.path}: {exc.strerror}")
            self._make_room(0, len(self._where))
            if self.fsync:
                self._sync_all()
            for name in empty:
                self._unlink(name)
            self._gc()
        for rec in records:
            rec.file = self._where[rec.id].seq
        self.jobs_restored = len(records)
        return records, replay.max_id + 1

    def bind(self, jobs: Mapping[int, "Job"]) -> None:
        """Give compaction the engine's live jobs (id -> Job)."""
        self._jobs = jobs

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        self._dir_dirty = True

    # ------------------------------------------------------------------ writing

    # Compaction runs at the start of an append, never after its record: the
    # engine changes its memory only once the append has returned, and a copy
    # made from memory in between would carry the job's old state *after*
    # the record of its new one.  At the start, memory matches every record.

    def append_put(self, job: "Job") -> None:
        """A new job: one FULL record.  Sets ``job.file`` and ``job.wal_stamp``."""
        if self._closed:
            self._maintain()
        off = time.time_ns() - time.monotonic_ns()
        stamp = self._stamp
        self._stamp = stamp + 1
        state = job.state
        deadline = job.deadline + off if state == DELAYED else 0
        f, size = self._write_full(
            job.id, job.tube.name, STATE_CODE[state], job.pri, job.delay * _NS, job.ttr * _NS,
            job.created_at + off, deadline, stamp, job.reserve_ct, job.timeout_ct,
            job.release_ct, job.bury_ct, job.kick_ct, job.body, 1,
        )
        job.file = f.seq
        job.wal_stamp = stamp
        self._debt += size

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
        if self._closed:
            self._maintain()
        if state is None:
            state = job.state
        if state == DELAYED:
            deadline = (job.deadline if deadline is None else deadline) + time.time_ns() - time.monotonic_ns()
        else:
            deadline = 0
        rc, tc, lc, bc, kc = job.reserve_ct, job.timeout_ct, job.release_ct, job.bury_ct, job.kick_ct
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
        payload = _UPDATE.pack(
            T_UPDATE, STATE_CODE[state], job.id, job.pri if pri is None else pri,
            (job.delay if delay is None else delay) * _NS, deadline, stamp, rc, tc, lc, bc, kc,
        )
        self._write((_REC.pack(len(payload), zlib.crc32(payload)), payload), UPDATE_SIZE, 0)
        job.wal_stamp = stamp
        self._debt += UPDATE_SIZE

    def append_delete(self, job: "Job") -> None:
        """The job is gone: one DELETE record (space was reserved at put)."""
        if self._closed:
            self._maintain()
        job_id = job.id
        payload = _DELETE.pack(T_DELETE, job_id)
        self._write((_REC.pack(len(payload), zlib.crc32(payload)), payload), DELETE_SIZE, -1)
        f = self._where.pop(job_id, None)
        if f is not None:
            self._live_bytes -= f.live.pop(job_id)
        self._debt += DELETE_SIZE

    def _write_full_record(self, rec: JobRecord) -> None:
        f, _size = self._write_full(
            rec.id, rec.tube, STATE_CODE[rec.state], rec.pri, rec.delay, rec.ttr,
            rec.created_at, rec.deadline if rec.state == DELAYED else 0, rec.stamp,
            rec.reserve_ct, rec.timeout_ct, rec.release_ct, rec.bury_ct, rec.kick_ct,
            rec.body, 0 if rec.id in self._where else 1,
        )
        rec.file = f.seq

    def _move(self, job: "Job") -> int:
        """Compaction: the job's current state as a FULL record in the current file."""
        off = time.time_ns() - time.monotonic_ns()
        state = job.state
        f, size = self._write_full(
            job.id, job.tube.name, STATE_CODE[state], job.pri, job.delay * _NS, job.ttr * _NS,
            job.created_at + off, job.deadline + off if state == DELAYED else 0, job.wal_stamp,
            job.reserve_ct, job.timeout_ct, job.release_ct, job.bury_ct, job.kick_ct, job.body, 0,
        )
        job.file = f.seq
        return size

    def _write_full(
        self, job_id: int, tube: bytes, code: int, pri: int, delay: int, ttr: int,
        created: int, deadline: int, stamp: int, rc: int, tc: int, lc: int, bc: int, kc: int,
        body: bytes, d_live: int,
    ) -> tuple[_File, int]:
        head = _FULL.pack(T_FULL, code, len(tube), job_id, pri, delay, ttr, created, deadline,
                          stamp, rc, tc, lc, bc, kc)
        crc = zlib.crc32(body, zlib.crc32(tube, zlib.crc32(head)))
        length = FULL_FIXED + len(tube) + len(body)
        total = length + 8
        f = self._write((_REC.pack(length, crc), head, tube, body), total, d_live)
        where = self._where
        old = where.get(job_id)
        if old is not None:
            self._live_bytes -= old.live.pop(job_id)
        f.live[job_id] = total
        where[job_id] = f
        self._live_bytes += total
        if job_id > self._max_id:
            self._max_id = job_id
        return f, total

    def _write(self, bufs: tuple, total: int, d_live: int) -> _File:
        """Write one record at the end of the current file.

        Space invariant: the files already allocated (the rest of the current
        one and the spares) hold at least one UPDATE-sized slot per live job,
        so that every live job can always be deleted (a DELETE is smaller
        than a slot, and a slot lost to the end of a file was not counted).
        Writes other than deletes first make sure the invariant still holds
        after them, allocating files if needed (BinlogFull if the disk says no).
        """
        cur = self._cur
        if cur is None:
            raise BinlogIOError("the binlog is closed")
        free = cur.size - cur.used - total
        if free < 0 or (d_live >= 0 and free // SLOT + self._spare_slots < len(self._where) + d_live):
            self._make_room(total, len(self._where) + d_live)
            cur = self._cur
        off = cur.used
        try:
            written = os.pwritev(cur.fd, bufs, off)  # type: ignore[arg-type]
        except OSError as exc:
            self._undo(cur, off, total)
            raise self._failure("write", cur.path, exc) from exc
        if written != total:
            self._undo(cur, off, total)
            raise self._failure("write", cur.path, OSError(errno.EIO, "short write"))
        cur.used = off + total
        self._written += 1
        self.records_written += 1
        return cur

    def _undo(self, f: _File, off: int, total: int) -> None:
        """Zero what a failed write may have left, so replay ends cleanly there."""
        try:
            os.pwrite(f.fd, bytes(total), off)  # type: ignore[arg-type]
        except OSError:
            pass

    def _make_room(self, total: int, need: int) -> None:
        """Make the current file take ``total`` bytes and leave ``need`` slots.

        All allocation happens before anything changes: if the disk says no,
        BinlogFull leaves the layout as it was (at most with extra spare
        files, which only add to the reserve).  Moving to the next file loses
        the slots left at the end of the current one, so that move is made
        only once the files after it hold enough.
        """
        cur = self._cur
        assert cur is not None
        free = cur.size - cur.used
        if total <= free:
            have = (free - total) // SLOT + self._spare_slots
            if have < need:
                self._add_spare(need - have)
            return
        if not self._spares:
            self._add_spare(0, total)
        nxt = self._spares[0]
        next_free = max(nxt.size - nxt.used, total)  # grown for a record bigger than -s
        have = (next_free - total) // SLOT + self._spare_slots - (nxt.size - nxt.used) // SLOT
        if have < need:
            self._add_spare(need - have)
        if nxt.size - nxt.used < total:
            before = (nxt.size - nxt.used) // SLOT
            self._grow(nxt, nxt.used + total)
            self._spare_slots += (nxt.size - nxt.used) // SLOT - before
        self._spares.popleft()
        self._spare_slots -= (nxt.size - nxt.used) // SLOT
        self._retire(cur)
        self._closed.append(cur)
        self._cur = nxt

    def _retire(self, f: _File) -> None:
        """Done writing ``f``: give back its preallocated tail; keep its fd until synced."""
        fd = f.fd
        assert fd is not None
        if f.size > f.used:
            try:
                os.ftruncate(fd, f.used)
                self._disk_bytes -= f.size - f.used
                f.size = f.used
            except OSError as exc:
                self._warn("ftruncate", f"ftruncate {f.path}: {exc.strerror}")
        if self.fsync:
            with self._lock:  # atomically: a sync sees it as current or as retired
                f.fd = None
                self._retired.append(fd)
        else:
            f.fd = None
            os.close(fd)

    def _add_spare(self, slots: int, record: int = 0) -> None:
        """Allocate a file after the others, for ``slots`` slots or one ``record``."""
        f = self._create_file(HEADER_SIZE + max(slots * SLOT, record))
        self._spares.append(f)
        self._spare_slots += (f.size - f.used) // SLOT

    def _grow(self, f: _File, size: int) -> None:
        try:
            self._falloc(f.fd, 0, size)  # type: ignore[arg-type]
        except OSError as exc:
            raise self._failure("preallocate", f.path, exc) from exc
        self._disk_bytes += size - f.size
        f.size = size

    def _create_file(self, min_size: int) -> _File:
        seq = self._next_seq
        path = self._path(f"{FILE_PREFIX}{seq}")
        size = max(self.file_size, min_size, HEADER_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._failure("create", path, exc) from exc
        try:
            self._falloc(fd, 0, size)
            header = encode_header(seq, self._max_id, self._stamp)
            if os.pwrite(fd, header, 0) != len(header):
                raise OSError(errno.EIO, "short write")
        except OSError as exc:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise self._failure("preallocate", path, exc) from exc
        self._next_seq = seq + 1
        self._disk_bytes += size
        self._dir_dirty = True
        return _File(seq, path, fd, size, HEADER_SIZE)

    def _failure(self, what: str, path: str, exc: OSError) -> BinlogError:
        text = f"{what} {path}: {exc.strerror or exc}"
        self._warn(what, text)
        if exc.errno in _FULL_ERRNOS:
            return BinlogFull(text)
        return BinlogIOError(text)

    def _warn(self, kind: str, text: str) -> None:
        now = time.monotonic_ns()
        if now - self._warned.get(kind, -(10**18)) >= 1_000_000_000:
            self._warned[kind] = now
            self._log(text)

    # ------------------------------------------------------------------ compaction

    def _maintain(self) -> None:
        """GC and compaction, paid for by the bytes written since the last call."""
        closed = self._closed
        budget = 2 * self._debt
        self._debt = 0
        if not closed[0].live:
            self._gc()
        if len(closed) >= 2 and self._disk_bytes >= 3 * self._live_bytes and self._jobs is not None:
            self._compact(budget)

    def _gc(self) -> None:
        """Unlink head files that hold no live job's latest full record."""
        closed = self._closed
        while closed and not closed[0].live:
            f = closed[0]
            try:
                os.unlink(f.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._warn("unlink", f"unlink {f.path}: {exc.strerror}")
                return
            closed.popleft()
            self._disk_bytes -= f.size
            self._dir_dirty = True

    def _compact(self, budget: int) -> None:
        """Copy live jobs out of the head file, at most ~``budget`` bytes (one job at least)."""
        closed = self._closed
        jobs = self._jobs
        assert jobs is not None
        moved = 0
        while len(closed) >= 2 and self._disk_bytes >= 3 * self._live_bytes:
            head = closed[0]
            if not head.live:
                self._gc()
                if closed and closed[0] is head:
                    return  # could not unlink
                continue
            job_id = next(iter(head.live))
            job = jobs.get(job_id)
            if job is None:  # not a live job of the engine: forget it
                self._live_bytes -= head.live.pop(job_id)
                self._where.pop(job_id, None)
                continue
            try:
                moved += self._move(job)
            except BinlogError:
                return  # no room now; try again after a later write
            self.records_migrated += 1
            if moved >= budget:
                return

    # ------------------------------------------------------------------ fsync

    @property
    def written(self) -> int:
        """Records written so far (a count that only grows)."""
        return self._written

    @property
    def durable(self) -> int:
        """Records made durable by the last finished :meth:`sync`: a reply
        that needed records up to ``written`` may go once ``durable`` has
        caught up with it (group commit under ``-f 0``)."""
        return self._durable

    @property
    def syncing(self) -> bool:
        """A :meth:`sync` is running (start no second one; ask again when it ends)."""
        return self._syncing

    def sync_due(self, now: int) -> bool:
        """Whether :meth:`sync` should run now (``now``: time.monotonic_ns()).

        True when records were written since the last sync started and, for
        ``-f N``, N ms have passed since then (always, for ``-f 0``).  Never
        with ``-F``.
        """
        if not self.fsync or self._written == self._covered:
            return False
        return now - self._last_sync >= self.fsync_ns

    def sync_deadline(self) -> Optional[int]:
        """When (monotonic ns) unsynced records become due, or None if none are pending."""
        if not self.fsync or self._written == self._covered:
            return None
        return self._last_sync + self.fsync_ns

    @property
    def fsync_always(self) -> bool:
        """``-f 0``: replies must wait for :meth:`sync`."""
        return self.fsync and self.fsync_ns == 0

    def sync(self) -> bool:
        """fsync everything written so far (blocking; safe in a worker thread).

        Returns False if an fsync failed (the data may not be on disk).
        """
        with self._sync_lock:
            with self._lock:
                self._syncing = True
                target = self._covered = self._written
                self._last_sync = time.monotonic_ns()
                retired = self._retired
                self._retired = []
                cur = self._cur
                fd = cur.fd if cur is not None else None
                dir_dirty = self._dir_dirty
                self._dir_dirty = False
            ok = True
            try:
                for old in retired:
                    ok = self._fsync(old, "binlog file") and ok
                    os.close(old)
                if fd is not None:
                    ok = self._fsync(fd, cur.path if cur is not None else "binlog") and ok
                if dir_dirty:
                    ok = self._fsync_dir() and ok
            finally:
                self._syncing = False
            self._durable = target
            return ok

    def _fsync(self, fd: int, what: str) -> bool:
        try:
            os.fsync(fd)
            return True
        except OSError as exc:
            self._warn("fsync", f"fsync {what}: {exc.strerror}")
            return False

    def _fsync_dir(self) -> bool:
        if self._dir_fd is None:
            return True
        return self._fsync(self._dir_fd, self.dir)

    def _sync_all(self) -> None:
        """fsync every open file and the directory (start-up, before removing files)."""
        for f in [self._cur, *self._spares]:
            if f is not None and f.fd is not None:
                os.fsync(f.fd)
        with self._lock:
            retired = self._retired
            self._retired = []
        for fd in retired:
            os.fsync(fd)
            os.close(fd)
        self._fsync_dir()
        self._dir_dirty = False
        self._covered = self._durable = self._written

    # ------------------------------------------------------------------ closing

    def abandon(self) -> None:
        """Drop every descriptor without syncing or tidying: what a SIGKILL leaves (tests)."""
        fds = [f.fd for f in (self._cur, *self._spares) if f is not None and f.fd is not None]
        fds += self._retired + [fd for fd in (self._dir_fd, self._lock_fd) if fd is not None]
        for fd in fds:
            os.close(fd)
        self._retired = []
        self._cur = None
        self._spares.clear()
        self._dir_fd = self._lock_fd = None

    def close(self) -> None:
        """Sync (unless -F), drop unused spares, trim the current file, unlock."""
        with self._sync_lock:
            cur = self._cur
            if cur is not None:
                if self.fsync:
                    try:
                        self._sync_all()
                    except OSError as exc:
                        self._log(f"fsync at exit: {exc.strerror}")
                for f in self._spares:
                    if f.fd is not None:
                        os.close(f.fd)
                    try:
                        os.unlink(f.path)
                    except OSError:
                        pass
                self._spares.clear()
                self._spare_slots = 0
                if cur.fd is not None:
                    try:
                        os.ftruncate(cur.fd, cur.used)
                    except OSError:
                        pass
                    os.close(cur.fd)
                    cur.fd = None
                self._cur = None
            with self._lock:
                for fd in self._retired:
                    os.close(fd)
                self._retired = []
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
