"""Jobs: the unit of work, and the orderings the queues keep them in (beanstalkd's job.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .store import BURIED, DELAYED, READY, RESERVED

if TYPE_CHECKING:
    from .session import MemorySession, Timer
    from .tube import Tube

__all__ = ["BURIED", "DELAYED", "READY", "RESERVED", "Job", "ready_key", "delay_key", "bury_key"]

URGENT_THRESHOLD = 1024


class Job:
    """One job.  ``body`` keeps its trailing CRLF so replies send it as is.

    Laid out for memory, which a backlog of waiting jobs is made of
    (measured with ``python -m bench --workload memory``: 485 bytes per job
    of 100 bytes before, against beanstalkd's 299):

    * ``delay`` and ``ttr`` are the seconds the client gave: CPython shares
      the int objects of small numbers (TTRs of 60 or 120), where nanosecond
      values took a 32-byte int each;
    * the five stats counters live in one list made at the first reserve,
      release, bury, kick or timeout, instead of five slots in every job.

    Slots by owner, as beanstalkd's dat.h splits ``Jobrec`` from bookkeeping:
    the first group is what the binlog records; the second is the engine's
    in-memory bookkeeping; the last is written by the binlog itself.
    """

    __slots__ = (
        # persistent: written to the binlog
        "id",
        "pri",
        "delay",
        "ttr",
        "body",
        "tube",
        "state",
        "created_at",
        "counts",
        # in memory only: the engine's
        "deadline",
        "reserver",
        "timer",
        # the binlog's placement of the job's records
        "file",
        "wal_stamp",
    )

    def __init__(
        self,
        job_id: int,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        tube: "Tube",
        created_at: int,
    ) -> None:
        # Typed Any on purpose, so the compiled build keeps it as an object:
        # the engine's id table and the ready queue key on this very object
        # (as an int field mypyc would store it unboxed and make a new
        # 32-byte int at every read: 421 against 389 bytes per queued job).
        self.id: Any = job_id
        self.pri = pri
        self.delay = delay  # seconds, as given at put or release
        self.ttr = ttr  # seconds, at least 1
        self.body = body
        self.tube = tube
        self.state = READY
        self.created_at = created_at  # monotonic ns
        self.counts: Optional[list[int]] = None  # see _count
        # ns while delayed or reserved; the bury order while buried (see bury_key)
        self.deadline = 0
        self.reserver: Optional["MemorySession"] = None  # while reserved
        self.timer: Optional["Timer"] = None  # its delay or TTR timer
        self.file = 0  # binlog file sequence holding the latest full record
        self.wal_stamp = 0  # binlog order of the last state change (buried FIFO order)

    # The five stats counters live in ``counts``, read as 0 until first set.
    # Written out as properties (not made by a factory) so mypyc compiles them.
    def _count(self, index: int, value: int) -> None:
        counts = self.counts
        if counts is None:
            counts = self.counts = [0, 0, 0, 0, 0]
        counts[index] = value

    @property
    def reserve_ct(self) -> int:
        counts = self.counts
        return 0 if counts is None else counts[0]

    @reserve_ct.setter
    def reserve_ct(self, value: int) -> None:
        self._count(0, value)

    @property
    def timeout_ct(self) -> int:
        counts = self.counts
        return 0 if counts is None else counts[1]

    @timeout_ct.setter
    def timeout_ct(self, value: int) -> None:
        self._count(1, value)

    @property
    def release_ct(self) -> int:
        counts = self.counts
        return 0 if counts is None else counts[2]

    @release_ct.setter
    def release_ct(self, value: int) -> None:
        self._count(2, value)

    @property
    def bury_ct(self) -> int:
        counts = self.counts
        return 0 if counts is None else counts[3]

    @bury_ct.setter
    def bury_ct(self, value: int) -> None:
        self._count(3, value)

    @property
    def kick_ct(self) -> int:
        counts = self.counts
        return 0 if counts is None else counts[4]

    @kick_ct.setter
    def kick_ct(self, value: int) -> None:
        self._count(4, value)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.state} pri={self.pri} tube={self.tube.name!r}>"


def ready_key(job: Job) -> int:
    """Ready order: lower priority first, then lower id (the id, not arrival, breaks ties)."""
    return (job.pri << 64) | job.id


def delay_key(job: Job) -> tuple[int, int]:
    """Delayed order: earliest deadline first, then lower id."""
    return (job.deadline, job.id)


def bury_key(job: Job) -> int:
    """Buried order: first buried first.  A buried job has no deadline, so
    ``deadline`` holds the engine's bury sequence number (no extra slot per job)."""
    return job.deadline
