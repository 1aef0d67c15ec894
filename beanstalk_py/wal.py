"""The seams of durability: what the store asks of a write-ahead log, and what
the I/O drivers ask of the fsync policy (beanstalkd's dat.h ``wal*`` declarations).

The in-memory store (:mod:`.engine`) logs through :class:`WriteAheadLog` and
never imports the binlog; the drivers and the sync task wait through
:class:`Durability` and never see the log.  :mod:`.binlog` implements both;
:data:`NO_DURABILITY` stands in when there is no ``-b``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, NamedTuple, Optional, Protocol

if TYPE_CHECKING:
    from .job import Job


class WalError(Exception):
    """The log could not record a change; the command that needed it fails
    and the job stays exactly as it was."""


class WalFull(WalError):
    """No space could be allocated (disk full, quota, out of descriptors)."""


class WalIOError(WalError):
    """A write failed (EIO, or the log is closed)."""


class WalStats(NamedTuple):
    """The binlog figures of ``stats``."""

    oldest_index: int
    current_index: int
    records_migrated: int
    records_written: int
    max_size: int


class WriteAheadLog(Protocol):
    """What the store calls before it changes a job's durable state.

    Every ``append_*`` either writes its record or raises :class:`WalError`
    having changed nothing; the caller changes its memory only after the
    append returned.  ``deadline`` values are on the store's monotonic clock.
    """

    def bind(self, jobs: Mapping[int, "Job"]) -> None:
        """The store's live jobs by id (compaction copies them forward)."""

    def append_put(self, job: "Job") -> None: ...

    def append_update(
        self,
        job: "Job",
        state: Optional[str] = None,
        pri: Optional[int] = None,
        delay: Optional[int] = None,
        deadline: Optional[int] = None,
        bump: Optional[str] = None,
    ) -> None: ...

    def append_move(self, job: "Job", tube: bytes) -> None:
        """The job changes tube (an operator's move): a full record in ``tube``."""

    def append_delete(self, job: "Job") -> None: ...

    def stats(self) -> WalStats: ...


class Durability(Protocol):
    """The fsync policy as the I/O drivers and the sync task see it."""

    @property
    def periodic(self) -> bool:
        """``-f N`` with N > 0: a sync task runs :meth:`sync` when :meth:`sync_deadline` passes."""

    def must_sync(self) -> bool:
        """``-f 0``: replies waiting to go acknowledge records not yet on disk."""

    def sync_deadline(self) -> Optional[int]:
        """When (monotonic ns) unsynced records become due, or None if none are pending."""

    def sync_due(self, now: int) -> bool: ...

    @property
    def syncing(self) -> bool:
        """A :meth:`sync` runs now (in a worker thread): start no second one."""

    @property
    def interval_ns(self) -> int:
        """``-f N`` in ns: how long the sync task sleeps when nothing is pending."""

    def sync(self) -> bool:
        """fsync what was written (blocking; safe in a worker thread); False on failure."""


class _NoDurability:
    """No ``-b``: nothing is ever written, so nothing waits."""

    periodic = False
    syncing = False
    interval_ns = 0

    def must_sync(self) -> bool:
        return False

    def sync_deadline(self) -> Optional[int]:
        return None

    def sync_due(self, now: int) -> bool:
        return False

    def sync(self) -> bool:
        return True


NO_DURABILITY: Durability = _NoDurability()
