"""Our binlog file format: records, their one encoder each, and the scanner
(what beanstalkd keeps in file.c: ``readrec``, ``filewrjobshort``/``full``).

The log (:mod:`.log`) writes every record through these encoders and replay
reads them back through :class:`Scan`, so the round-trip tests check the bytes
a real file holds.  Nothing here does I/O.

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
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator, NamedTuple, Optional, Protocol, Union

from ..job import BURIED, DELAYED, READY, RESERVED

DEFAULT_FILE_SIZE = 10485760

MAGIC = b"bspy-wal"
VERSION = 1
FILE_PREFIX = "bspy-binlog."

T_FULL, T_UPDATE, T_DELETE = 1, 2, 3
S_INVALID, S_READY, S_RESERVED, S_BURIED, S_DELAYED = 0, 1, 2, 3, 4
STATE_CODE = {READY: S_READY, RESERVED: S_RESERVED, BURIED: S_BURIED, DELAYED: S_DELAYED}
CODE_STATE = {code: state for state, code in STATE_CODE.items()}
_STATES = ("", READY, RESERVED, BURIED, DELAYED)  # CODE_STATE as a tuple, for codes 1-4

_HEAD = struct.Struct("<8sIIQQQ")
HEADER_SIZE = 48
_REC = struct.Struct("<II")  # the frame: payload length, crc32(payload)
_FULL = struct.Struct("<BBBxQIqqqqQIIIII")
_UPDATE = struct.Struct("<BBxxQIqqQIIIII")
_DELETE = struct.Struct("<BxxxQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# FULL and UPDATE payloads after their type byte (the scanner reads that byte alone).
_FULL_BODY = struct.Struct("<BBxQIqqqqQIIIII")
_UPDATE_BODY = struct.Struct("<BxxQIqqQIIIII")
_UPDATE_LEN = _UPDATE.size  # 60
_DELETE_LEN = _DELETE.size  # 12
FRAME = _REC.size  # 8
FULL_FIXED = _FULL.size  # 76
UPDATE_SIZE = FRAME + _UPDATE.size  # 68: one "slot" of reserved space (see space.py)
DELETE_SIZE = FRAME + _DELETE.size  # 20
MAX_TUBE = 200
NS = 1_000_000_000  # records keep delay and TTR in ns; jobs keep seconds


class JobRecord:
    """A job as the log knows it.  Times are wall-clock ns (``time.time_ns``),
    delay and TTR ns.  Replay yields these; FULL records are encoded from them."""

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
        self.size = size  # bytes of that full record, frame included

    @property
    def counters(self) -> tuple[int, int, int, int, int]:
        return (self.reserve_ct, self.timeout_ct, self.release_ct, self.bury_ct, self.kick_ct)

    def fields(self) -> tuple[object, ...]:
        """Everything but file placement: what a restart must give back."""
        return (
            self.id, self.tube, self.state, self.pri, self.delay, self.ttr,
            self.created_at, self.deadline, self.body, self.stamp, self.counters,
        )

    def __repr__(self) -> str:
        return f"<JobRecord {self.id} {self.state} pri={self.pri} tube={self.tube!r} stamp={self.stamp}>"


class Update(NamedTuple):
    """An UPDATE record: what a state change leaves (tube, TTR, body and
    creation time stay as the job's latest FULL record has them)."""

    id: int
    state: str
    pri: int
    delay: int  # ns
    deadline: int  # wall-clock ns; only kept for delayed jobs
    stamp: int
    counters: tuple[int, int, int, int, int]


# What Scan yields per record: FULL, UPDATE, DELETE (the job id).
Entry = Union[JobRecord, Update, int]


# ---------------------------------------------------------------------- encoding


def encode_header(seq: int, max_id: int, stamp: int) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, HEADER_SIZE, seq, max_id, stamp)
    return head + _U32.pack(zlib.crc32(head)) + b"\0\0\0\0"


def encode_full(rec: JobRecord) -> tuple[bytes, bytes, bytes, bytes]:
    """One FULL record as the buffers of one ``pwritev``: frame, fixed fields,
    tube, body (the body is not copied; join them for the bytes).

    Sets ``rec.size`` to the record's length, frame included.
    ``rec.deadline`` is kept only for delayed jobs.
    """
    tube = rec.tube
    body = rec.body
    code = STATE_CODE[rec.state]
    head = _FULL.pack(
        T_FULL, code, len(tube), rec.id, rec.pri, rec.delay, rec.ttr, rec.created_at,
        rec.deadline if code == S_DELAYED else 0, rec.stamp,
        rec.reserve_ct, rec.timeout_ct, rec.release_ct, rec.bury_ct, rec.kick_ct,
    )
    crc32 = zlib.crc32
    length = FULL_FIXED + len(tube) + len(body)
    rec.size = FRAME + length
    return _REC.pack(length, crc32(body, crc32(tube, crc32(head)))), head, tube, body


def encode_update(update: Update) -> bytes:
    """One UPDATE record (``UPDATE_SIZE`` bytes)."""
    job_id, state, pri, delay, deadline, stamp, (rc, tc, lc, bc, kc) = update
    code = STATE_CODE[state]
    payload = _UPDATE.pack(
        T_UPDATE, code, job_id, pri, delay, deadline if code == S_DELAYED else 0, stamp, rc, tc, lc, bc, kc,
    )
    return _REC.pack(_UPDATE_LEN, zlib.crc32(payload)) + payload


def encode_delete(job_id: int) -> bytes:
    """One DELETE record (``DELETE_SIZE`` bytes)."""
    payload = _DELETE.pack(T_DELETE, job_id)
    return _REC.pack(_DELETE_LEN, zlib.crc32(payload)) + payload


# ---------------------------------------------------------------------- reading


class Visitor(Protocol):
    """What :meth:`Scan.walk` hands each good record to, with its offsets."""

    def full(self, rec: JobRecord, pos: int, end: int) -> None: ...

    def update(self, update: Update, pos: int, end: int) -> None: ...

    def delete(self, job_id: int, pos: int, end: int) -> None: ...


class _Collect:
    """A visitor keeping ``(offset, end, type, value)`` tuples (for iteration)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, int, Entry]] = []

    def full(self, rec: JobRecord, pos: int, end: int) -> None:
        self.items.append((pos, end, T_FULL, rec))

    def update(self, update: Update, pos: int, end: int) -> None:
        self.items.append((pos, end, T_UPDATE, update))

    def delete(self, job_id: int, pos: int, end: int) -> None:
        self.items.append((pos, end, T_DELETE, job_id))


class Scan:
    """Reads one of our files: :meth:`walk` hands each record to a visitor;
    iterate for ``(offset, end, type, value)``.

    ``value`` is a :class:`JobRecord` for FULL records (``file``/``size``
    unset), an :class:`Update` for UPDATE and the id for DELETE.  After
    iteration, ``header`` is ``(seq, max_id, stamp)`` or None, ``end`` the
    offset after the last good record, ``problem`` a description of what
    stopped the scan early (None for a clean end) and ``skipped`` how many
    non-zero bytes were left unread.  Never raises on bad data.
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
        """The scan ended at ``pos``: a problem if anything but zeros follows."""
        data = self.data
        # Count the zeros rather than rstrip the whole file (a copy of up to
        # DEFAULT_FILE_SIZE bytes per file; 48 of 690 ms opening 300,000 jobs).
        if data.count(0, pos) == len(data) - pos:
            return
        last = pos + len(data[pos:].rstrip(b"\0"))
        self.problem = f"offset {pos}: {why}"
        self.skipped = last - pos

    def __iter__(self) -> Iterator[tuple[int, int, int, Entry]]:
        collect = _Collect()
        self.walk(collect)
        return iter(collect.items)

    def walk(self, visit: Union[Visitor, "Replay"]) -> None:
        """Every good record to ``visit``, in file order, up to the first bad one.

        A visitor rather than a generator: replay reads a million records at
        start-up, and a yield, a tuple and a type test per record cost about
        a fifth of the scan (measured with bench.restart, 500k jobs).  A
        :class:`Replay` is not called at all: the loop applies each record to
        it itself (see ``_records``)."""
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
        self.end = HEADER_SIZE
        self._records(visit)

    def _records(self, visit: Union[Visitor, "Replay"]) -> None:
        """The loop of :meth:`walk`, from the first record on.

        Shaped for speed (and for mypyc, which compiles this module): typed
        locals, fields unpacked from ``data`` at their offsets (no payload
        view but the one crc32 reads), tube and body sliced straight from
        ``data``, and a :class:`Replay` fed in the loop itself, its counters
        kept in locals: no call, no :class:`Update` and no bound method per
        record.  Opening 300,000 jobs (in process, CPU, medians of 5): pure
        0.69 -> 0.50 s, compiled (this module in HOT_MODULES) 0.68 -> 0.46 s;
        1,000,000 jobs, bench.restart: pure 4.68 -> 4.17 s, compiled
        4.44 -> 3.31 s to the first reply."""
        data = self.data
        n: int = len(data)
        pos: int = HEADER_SIZE
        view = memoryview(data)
        rec_unpack = _REC.unpack_from
        full_unpack = _FULL_BODY.unpack_from
        update_unpack = _UPDATE_BODY.unpack_from
        crc32 = zlib.crc32
        states = _STATES
        # A Replay is fed here; any other visitor is called (its counters
        # then go to a Replay nobody reads).
        visitor: Optional[Visitor]
        if isinstance(visit, Replay):
            replay, visitor = visit, None
        else:
            replay, visitor = Replay(), visit
        jobs = replay.jobs
        file_seq: int = replay.seq
        max_id: int = replay.max_id
        max_stamp: int = replay.max_stamp
        records: int = 0
        why = ""
        length: int
        crc: int
        end: int
        kind: int
        code: int
        tube_len: int
        job_id: int
        pri: int
        delay: int
        ttr: int
        created: int
        deadline: int
        stamp: int
        rc: int
        tc: int
        lc: int
        bc: int
        kc: int
        while True:
            if pos + FRAME > n:
                why = "torn record header at end of file"
                break
            length, crc = rec_unpack(data, pos)
            if length == 0:
                why = "record of length 0" if crc else "data after the end-of-log zeros"
                break
            end = pos + FRAME + length
            if end > n:
                why = f"record of {length} bytes runs past the end of the file (torn write?)"
                break
            if crc32(view[pos + FRAME : end]) != crc:
                why = "record checksum mismatch (torn or corrupt)"
                break
            kind = data[pos + FRAME]
            if kind == T_FULL and length >= FULL_FIXED + 3:
                (code, tube_len, job_id, pri, delay, ttr, created, deadline, stamp,
                 rc, tc, lc, bc, kc) = full_unpack(data, pos + FRAME + 1)
                tube_at = pos + FRAME + FULL_FIXED
                body_at = tube_at + tube_len
                if (
                    not 0 < code < 5 or not 0 < tube_len <= MAX_TUBE or end - body_at < 2
                    or data[end - 2] != 13 or data[end - 1] != 10 or not job_id
                ):
                    why = "malformed full record"
                    break
                rec = JobRecord(
                    job_id, data[tube_at:body_at], states[code], pri, delay, ttr, created, deadline,
                    data[body_at:end], stamp, rc, tc, lc, bc, kc,
                )
                if visitor is None:
                    rec.file = file_seq
                    rec.size = end - pos
                    jobs[job_id] = rec
                    records += 1
                    if job_id > max_id:
                        max_id = job_id
                    if stamp > max_stamp:
                        max_stamp = stamp
                else:
                    visitor.full(rec, pos, end)
            elif kind == T_UPDATE and length == _UPDATE_LEN:
                (code, job_id, pri, delay, deadline, stamp, rc, tc, lc, bc, kc) = update_unpack(data, pos + FRAME + 1)
                if not 0 < code < 5 or not job_id:
                    why = "malformed update record"
                    break
                if visitor is None:
                    records += 1
                    if job_id > max_id:
                        max_id = job_id
                    if stamp > max_stamp:
                        max_stamp = stamp
                    old = jobs.get(job_id)
                    if old is not None:  # else its full record was in a file already removed
                        old.state = states[code]
                        old.pri = pri
                        old.delay = delay
                        old.deadline = deadline
                        old.stamp = stamp
                        old.reserve_ct = rc
                        old.timeout_ct = tc
                        old.release_ct = lc
                        old.bury_ct = bc
                        old.kick_ct = kc
                else:
                    visitor.update(Update(job_id, states[code], pri, delay, deadline, stamp, (rc, tc, lc, bc, kc)),
                                   pos, end)
            elif kind == T_DELETE and length == _DELETE_LEN:
                job_id = _U64.unpack_from(data, pos + FRAME + 4)[0]
                if visitor is None:
                    records += 1
                    if job_id > max_id:
                        max_id = job_id
                    jobs.pop(job_id, None)
                else:
                    visitor.delete(job_id, pos, end)
            else:
                why = f"unknown record type {kind} of {length} bytes"
                break
            pos = end
        self.end = pos
        if visitor is None:
            replay.max_id = max_id
            replay.max_stamp = max_stamp
            replay.records += records
        self._stop(pos, why)


# ---------------------------------------------------------------------- replay


class Replay:
    """Jobs rebuilt from records, in file order (our files and beanstalkd's).

    Not a visitor: :meth:`Scan.walk` applies our records to it in its own loop
    (``Scan._records``), and ``migrate.replay_v7`` beanstalkd's.
    """

    def __init__(self) -> None:
        self.jobs: dict[int, JobRecord] = {}
        self.max_id = 0
        self.max_stamp = 0
        self.records = 0
        self.seq = 0  # the file being read (replay_own sets it)


def replay_own(data: bytes, seq: int, replay: Replay) -> Scan:
    """Apply one of our files to ``replay``; returns the finished :class:`Scan`."""
    scan = Scan(data)
    replay.seq = seq
    scan.walk(replay)
    if scan.header is not None:
        _, max_id, stamp = scan.header
        replay.max_id = max(replay.max_id, max_id)
        replay.max_stamp = max(replay.max_stamp, stamp - 1)
    return scan
