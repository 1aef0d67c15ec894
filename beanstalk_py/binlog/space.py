"""The log's files and the space in them (beanstalkd's walg.c ``reserve`` and
``balance``, with a simpler rule): where the next record goes, and the
promise that a delete never needs space the disk may refuse.

* A disk that cannot give space fails the command (:class:`BinlogFull`), an
  I/O error fails it too (:class:`BinlogIOError`); nothing is half-written:
  the bytes of a failed record are zeroed again and the next record takes
  its place.
* Files are preallocated (``posix_fallocate``, or zeros where the file
  system has none), so writing into them cannot fail for space.  Closed
  files give their unused tail back.
* Slot invariant: the files already allocated (the rest of the current one
  and the spares after it) hold at least one UPDATE-sized slot per live job,
  so every live job can always be deleted (a DELETE is smaller than a slot,
  and a slot lost to the end of a file is not counted).  Writes other than
  deletes first make sure the invariant still holds after them, allocating
  files if needed, before anything changes.

:class:`Space` also keeps which file holds each live job's latest FULL
record (what compaction in :mod:`.log` reads).  The errors live here
because writing and allocating are what raise them.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..wal import WalError, WalFull, WalIOError
from .format import FILE_PREFIX, HEADER_SIZE, UPDATE_SIZE, JobRecord, encode_full

if TYPE_CHECKING:
    from .sync import Sync

SLOT = UPDATE_SIZE  # what a live job keeps reserved for its delete (and then some)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


class BinlogError(WalError):
    """A binlog operation failed; the command that needed it must fail."""


class BinlogFull(BinlogError, WalFull):
    """No space could be allocated (disk full, quota, out of descriptors)."""


class BinlogIOError(BinlogError, WalIOError):
    """A write failed (EIO...), or the log is closed."""


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
    """One of our files: open (fd) while current or spare, closed (None) before."""

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


class Space:
    """The files, oldest first: ``closed`` ones, the ``current`` one, ``spares``
    allocated ahead; and the live records they hold."""

    def __init__(
        self,
        directory: str,
        file_size: int,
        sync: "Sync",
        *,
        header: Callable[[int], bytes],
        falloc: Callable[[int, int, int], None],
        log: Callable[[str], None],
        warn: Callable[[str, str], None],
    ) -> None:
        self.dir = directory
        self.file_size = file_size
        self._sync = sync
        self._header = header  # file sequence -> its header, from the log's counters
        self._falloc = falloc
        self._log = log
        self._warn = warn  # rate-limited log, by kind
        self.closed: deque[_File] = deque()  # written files before the current one
        self.current: Optional[_File] = None
        self.spares: deque[_File] = deque()  # allocated ahead, after the current one
        self.spare_slots = 0
        self.where: dict[int, _File] = {}  # live job id -> file of its latest full record
        self.live_bytes = 0
        self.disk_bytes = 0
        self.next_seq = 1

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def files(self) -> list[tuple[int, int, int, int]]:
        """``(seq, size, used, live jobs)`` per file, oldest first (for tests)."""
        files = [*self.closed, *([self.current] if self.current is not None else []), *self.spares]
        return [(f.seq, f.size, f.used, len(f.live)) for f in files]

    def open_fds(self) -> list[int]:
        return [f.fd for f in (self.current, *self.spares) if f is not None and f.fd is not None]

    # ------------------------------------------------------------------ start-up

    def start(self) -> None:
        """Create the first file of this run (after every file found)."""
        self.current = self._create_file(0)
        self._sync.follow(self.current)

    def restore(self, found: list[tuple[int, str, int, int]], records: list[JobRecord]) -> None:
        """Keep the files found, ``(seq, name, size, end of records)`` each, oldest
        first, holding the latest full records of ``records``; give back the
        zeros a run that did not stop cleanly preallocated; reserve slots."""
        by_seq: dict[int, _File] = {}
        for seq, name, size, used in found:
            f = _File(seq, self.path(name), None, size, used)
            by_seq[seq] = f
            self.closed.append(f)
            self.disk_bytes += size
        for rec in records:
            f = by_seq[rec.file]
            f.live[rec.id] = rec.size
            self.where[rec.id] = f
            self.live_bytes += rec.size
        for f in self.closed:
            if f.size > f.used:
                try:
                    os.truncate(f.path, f.used)
                    self.disk_bytes -= f.size - f.used
                    f.size = f.used
                except OSError as exc:
                    self._log(f"truncate {f.path}: {exc.strerror}")
        self._make_room(0, len(self.where))

    # ------------------------------------------------------------------ writing

    def write_full(self, rec: JobRecord, live_change: int) -> _File:
        """Write ``rec`` as a FULL record; it is now its job's latest.

        ``live_change`` is 1 for a new job, 0 for one already live.  Sets
        ``rec.size`` and ``rec.file``.
        """
        bufs = encode_full(rec)
        total = rec.size
        f = self.write(bufs, total, live_change)
        job_id = rec.id
        where = self.where
        old = where.get(job_id)
        if old is not None:
            self.live_bytes -= old.live.pop(job_id)
        f.live[job_id] = total
        where[job_id] = f
        self.live_bytes += total
        rec.file = f.seq
        return f

    def forget(self, job_id: int) -> None:
        """The job is gone: its full record no longer keeps its file alive."""
        f = self.where.pop(job_id, None)
        if f is not None:
            self.live_bytes -= f.live.pop(job_id)

    def write(self, bufs: Sequence[bytes], total: int, live_change: int) -> _File:
        """Write one record of ``total`` bytes at the end of the current file.

        ``live_change`` is the number of live jobs the record adds: 1 for a
        put, 0 for other records, -1 for a delete, which alone may use the
        reserved slots and so never allocates.
        """
        cur = self.current
        if cur is None:
            raise BinlogIOError("the binlog is closed")
        free = cur.size - cur.used - total
        if free < 0 or (live_change >= 0 and free // SLOT + self.spare_slots < len(self.where) + live_change):
            cur = self._make_room(total, len(self.where) + live_change)
        fd = cur.fd
        assert fd is not None  # the current file stays open until close() or abandon()
        off = cur.used
        try:
            written = os.pwritev(fd, bufs, off)
        except OSError as exc:
            self._undo(fd, off, total)
            raise self.failure("write", cur.path, exc) from exc
        if written != total:
            self._undo(fd, off, total)
            raise self.failure("write", cur.path, OSError(errno.EIO, "short write"))
        cur.used = off + total
        self._sync.written += 1
        return cur

    def _undo(self, fd: int, off: int, total: int) -> None:
        """Zero what a failed write may have left, so replay ends cleanly there."""
        try:
            os.pwrite(fd, bytes(total), off)
        except OSError:
            pass

    # ------------------------------------------------------------------ allocation

    def _make_room(self, total: int, need: int) -> _File:
        """Make the current file take ``total`` bytes and leave ``need`` slots;
        returns the current file (the next one, if the record did not fit).

        All allocation happens before anything changes: if the disk says no,
        BinlogFull leaves the layout as it was (at most with extra spare
        files, which only add to the reserve).  Moving to the next file loses
        the slots left at the end of the current one, so that move is made
        only once the files after it hold enough.
        """
        cur = self.current
        assert cur is not None
        free = cur.size - cur.used
        if total <= free:
            have = (free - total) // SLOT + self.spare_slots
            if have < need:
                self._add_spare(need - have)
            return cur
        if not self.spares:
            self._add_spare(0, total)
        nxt = self.spares[0]
        next_free = max(nxt.size - nxt.used, total)  # grown for a record bigger than -s
        have = (next_free - total) // SLOT + self.spare_slots - (nxt.size - nxt.used) // SLOT
        if have < need:
            self._add_spare(need - have)
        if nxt.size - nxt.used < total:
            before = (nxt.size - nxt.used) // SLOT
            self._grow(nxt, nxt.used + total)
            self.spare_slots += (nxt.size - nxt.used) // SLOT - before
        self.spares.popleft()
        self.spare_slots -= (nxt.size - nxt.used) // SLOT
        self._retire(cur, nxt)
        self.closed.append(cur)
        self.current = nxt
        return nxt

    def _retire(self, f: _File, successor: _File) -> None:
        """Done writing ``f``: give back its preallocated tail; the sync keeps its fd."""
        fd = f.fd
        assert fd is not None
        if f.size > f.used:
            try:
                os.ftruncate(fd, f.used)
                self.disk_bytes -= f.size - f.used
                f.size = f.used
            except OSError as exc:
                self._warn("ftruncate", f"ftruncate {f.path}: {exc.strerror}")
        self._sync.retire(f, successor)

    def _add_spare(self, slots: int, record: int = 0) -> None:
        """Allocate a file after the others, for ``slots`` slots or one ``record``."""
        f = self._create_file(HEADER_SIZE + max(slots * SLOT, record))
        self.spares.append(f)
        self.spare_slots += (f.size - f.used) // SLOT

    def _grow(self, f: _File, size: int) -> None:
        fd = f.fd
        assert fd is not None  # spares are open
        try:
            self._falloc(fd, 0, size)
        except OSError as exc:
            raise self.failure("preallocate", f.path, exc) from exc
        self.disk_bytes += size - f.size
        f.size = size

    def _create_file(self, min_size: int) -> _File:
        seq = self.next_seq
        path = self.path(f"{FILE_PREFIX}{seq}")
        size = max(self.file_size, min_size, HEADER_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self.failure("create", path, exc) from exc
        try:
            self._falloc(fd, 0, size)
            header = self._header(seq)
            if os.pwrite(fd, header, 0) != len(header):
                raise OSError(errno.EIO, "short write")
        except OSError as exc:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise self.failure("preallocate", path, exc) from exc
        self.next_seq = seq + 1
        self.disk_bytes += size
        self._sync.dir_changed()
        return _File(seq, path, fd, size, HEADER_SIZE)

    def failure(self, what: str, path: str, exc: OSError) -> BinlogError:
        """The error a failed ``what`` raises: BinlogFull when the disk said no."""
        text = f"{what} {path}: {exc.strerror or exc}"
        self._warn(what, text)
        if exc.errno in _FULL_ERRNOS:
            return BinlogFull(text)
        return BinlogIOError(text)

    # ------------------------------------------------------------------ removal

    def gc(self) -> None:
        """Unlink head files that hold no live job's latest full record.

        Only the head may go: a DELETE in a middle file may be what keeps a
        job of an older file dead.
        """
        closed = self.closed
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
            self.disk_bytes -= f.size
            self._sync.dir_changed()

    def close(self) -> None:
        """Drop unused spares, trim and close the current file (at exit)."""
        cur = self.current
        for f in self.spares:
            if f.fd is not None:
                os.close(f.fd)
            try:
                os.unlink(f.path)
            except OSError:
                pass
        self.spares.clear()
        self.spare_slots = 0
        if cur is not None and cur.fd is not None:
            try:
                os.ftruncate(cur.fd, cur.used)
            except OSError:
                pass
            os.close(cur.fd)
            cur.fd = None
        self.current = None

    def abandon(self) -> None:
        """Drop the descriptors without tidying: what a SIGKILL leaves (tests)."""
        for fd in self.open_fds():
            os.close(fd)
        self.current = None
        self.spares.clear()
