"""Group commit: which records are on disk, and the fsync that puts them there.

This is the only part of the binlog another thread runs: the server calls
:meth:`Sync.sync` in a worker thread (every ``-f N`` ms, or before replies
under ``-f 0``) while the main thread goes on writing records.  Everything
the two share sits here, behind two locks:

* ``lock`` guards the hand-over: the files left behind since the last sync
  (their descriptors stay open until a sync has covered them), which file is
  current, whether the directory changed, and the count a sync covers;
* ``sync_lock`` lets one sync run at a time, and :meth:`~.log.Binlog.close`
  holds it so that no sync runs on descriptors being closed.

The counters only grow: ``written`` records were written, ``durable`` of
them were covered by the last sync that finished.  A reply that needed
records up to ``written`` may go once ``durable`` has caught up (``-f 0``).
:class:`Sync` implements :class:`beanstalk_py.wal.Durability`, which is all
the I/O drivers see.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Callable, Iterable, Optional

if TYPE_CHECKING:
    from .space import _File


class Sync:
    """The fsync policy of one log: ``fsync_ms`` None never syncs (``-F``),
    0 syncs before every reply (``-f 0``), N at most every N ms."""

    def __init__(
        self,
        fsync_ms: Optional[int],
        clock: Callable[[], int],
        warn: Callable[[str, str], None],
        directory: str,
    ) -> None:
        self.enabled = fsync_ms is not None
        self.interval_ns = (fsync_ms or 0) * 1_000_000
        self.periodic = self.enabled and self.interval_ns > 0
        self.always = self.enabled and self.interval_ns == 0
        self._clock = clock
        self._warn = warn
        self.directory = directory
        self.dir_fd: Optional[int] = None  # the directory, fsynced after files come or go
        self.lock = threading.Lock()
        self.sync_lock = threading.Lock()
        self.current: Optional["_File"] = None  # the file being written (set under lock)
        self._retired: list[int] = []  # fds of files left since the last sync
        self._dir_dirty = False
        self.written = 0  # records written (main thread only)
        self._covered = 0  # records covered by the latest sync started
        self.durable = 0  # records covered by the latest sync finished
        self._last_sync = clock()
        self._syncing = False

    # ------------------------------------------------------------------ Durability

    @property
    def syncing(self) -> bool:
        """A :meth:`sync` is running (start no second one; ask again when it ends)."""
        return self._syncing

    def must_sync(self) -> bool:
        """``-f 0`` and records written that no finished sync covers."""
        return self.always and self.written > self.durable

    def sync_due(self, now: int) -> bool:
        """Whether :meth:`sync` should run now (``now``: the monotonic clock in ns).

        True when records were written since the last sync started and, for
        ``-f N``, N ms have passed since then (always, for ``-f 0``).  Never
        with ``-F``.
        """
        if not self.enabled or self.written == self._covered:
            return False
        return now - self._last_sync >= self.interval_ns

    def sync_deadline(self) -> Optional[int]:
        """When (monotonic ns) unsynced records become due, or None if none are pending."""
        if not self.enabled or self.written == self._covered:
            return None
        return self._last_sync + self.interval_ns

    def sync(self) -> bool:
        """fsync everything written so far (blocking; safe in a worker thread).

        Returns False if an fsync failed (the data may not be on disk).
        """
        with self.sync_lock:
            with self.lock:
                self._syncing = True
                target = self._covered = self.written
                self._last_sync = self._clock()
                retired = self._retired
                self._retired = []
                cur = self.current
                fd = cur.fd if cur is not None else None
                path = cur.path if cur is not None else "binlog"
                dir_dirty = self._dir_dirty
                self._dir_dirty = False
            ok = True
            try:
                for old in retired:
                    ok = self._fsync(old, "binlog file") and ok
                    os.close(old)
                if fd is not None:
                    ok = self._fsync(fd, path) and ok
                if dir_dirty:
                    ok = self.fsync_dir() and ok
            finally:
                self._syncing = False
            self.durable = target
            return ok

    # ------------------------------------------------------------------ the main thread's side

    def open_dir(self) -> None:
        self.dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def follow(self, f: Optional["_File"]) -> None:
        """``f`` is the file records go to now."""
        with self.lock:
            self.current = f

    def retire(self, f: "_File", successor: "_File") -> None:
        """``f`` is written to its end and ``successor`` takes over.

        Its descriptor waits for the next sync to cover and close it
        (atomically: a sync sees ``f`` as current or as retired), or closes
        now when nothing is ever synced.
        """
        fd = f.fd
        assert fd is not None
        if not self.enabled:
            f.fd = None
            os.close(fd)
            with self.lock:
                self.current = successor
            return
        with self.lock:
            f.fd = None
            self._retired.append(fd)
            self.current = successor

    def dir_changed(self) -> None:
        """A file was created or removed: the next sync fsyncs the directory too."""
        with self.lock:
            self._dir_dirty = True

    def fsync_dir(self) -> bool:
        if self.dir_fd is None:
            return True
        return self._fsync(self.dir_fd, self.directory)

    def sync_all(self, fds: Iterable[int]) -> None:
        """fsync ``fds`` (every open file), the retired files and the directory,
        at start-up and at exit (raises OSError on failure)."""
        for fd in fds:
            os.fsync(fd)
        with self.lock:
            retired = self._retired
            self._retired = []
        for fd in retired:
            os.fsync(fd)
            os.close(fd)
        self.fsync_dir()
        self._dir_dirty = False
        self._covered = self.durable = self.written

    def close(self) -> None:
        """Close what is left (the caller holds ``sync_lock``)."""
        with self.lock:
            self.current = None
            for fd in self._retired:
                os.close(fd)
            self._retired = []
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def abandon(self) -> None:
        """Drop the descriptors without syncing: what a SIGKILL leaves (tests)."""
        for fd in self._retired:
            os.close(fd)
        self._retired = []
        self.current = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def _fsync(self, fd: int, what: str) -> bool:
        try:
            os.fsync(fd)
            return True
        except OSError as exc:
            self._warn("fsync", f"fsync {what}: {exc.strerror}")
            return False
