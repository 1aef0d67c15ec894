"""Jobs: the unit of work, and the orderings the queues keep them in (beanstalkd's job.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .tube import Tube

# Job states, as the reference names them in stats-job.
READY = "ready"
RESERVED = "reserved"
BURIED = "buried"
DELAYED = "delayed"

URGENT_THRESHOLD = 1024


class Job:
    """One job.  ``body`` keeps its trailing CRLF so replies send it as is."""

    __slots__ = (
        "id",
        "pri",
        "delay",
        "ttr",
        "body",
        "tube",
        "state",
        "created_at",
        "deadline",
        "reserver",
        "timer",
        "reserve_ct",
        "timeout_ct",
        "release_ct",
        "bury_ct",
        "kick_ct",
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
        self.id = job_id
        self.pri = pri
        self.delay = delay  # ns
        self.ttr = ttr  # ns
        self.body = body
        self.tube = tube
        self.state = READY
        self.created_at = created_at
        self.deadline = 0  # ns; meaningful while delayed or reserved
        self.reserver: Optional[Any] = None
        self.timer: Optional[tuple] = None
        self.reserve_ct = 0
        self.timeout_ct = 0
        self.release_ct = 0
        self.bury_ct = 0
        self.kick_ct = 0
        self.file = 0  # binlog file sequence holding the latest full record
        self.wal_stamp = 0  # binlog order of the last state change (buried FIFO order)

    @property
    def body_size(self) -> int:
        return len(self.body) - 2

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.state} pri={self.pri} tube={self.tube.name!r}>"


def ready_key(job: Job) -> int:
    """Ready order: lower priority first, then lower id (the id, not arrival, breaks ties)."""
    return (job.pri << 64) | job.id


def delay_key(job: Job) -> tuple[int, int]:
    """Delayed order: earliest deadline first, then lower id."""
    return (job.deadline, job.id)
