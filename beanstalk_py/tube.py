"""Tubes: named queues with ready, delayed, reserved and buried jobs (beanstalkd's tube.c)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Optional

from sortedcontainers import SortedKeyList

from .job import Job, bury_key, delay_key
from .ready import ReadyQueue

if TYPE_CHECKING:
    from .session import MemorySession, Timer


class Tube:
    """A tube and its per-tube counters.

    ``ready`` is ordered by (priority, id) (see ready.py), ``delayed`` by (deadline, id) and
    ``buried`` by bury order (FIFO), each O(log n) to insert and remove and
    O(1) for its first job.  ``waiters`` holds the sessions blocked in a
    reserve that watch this tube, in arrival order.
    """

    __slots__ = (
        "name",
        "ready",
        "delayed",
        "buried",
        "reserved",
        "waiters",
        "urgent_ct",
        "total_jobs_ct",
        "delete_ct",
        "pause_ct",
        "using_ct",
        "watching_ct",
        "pause",
        "unpause_at",
        "pause_timer",
        "index_key",
        "reserve_ct",
        "wait_counts",
        "wait_sum",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.ready = ReadyQueue()
        self.delayed: SortedKeyList = SortedKeyList(key=delay_key)
        self.buried: SortedKeyList = SortedKeyList(key=bury_key)
        self.reserved: dict[Job, None] = {}  # held by some session; listed by an operator
        self.waiters: OrderedDict["MemorySession", None] = OrderedDict()
        self.urgent_ct = 0  # ready jobs with pri < 1024
        self.total_jobs_ct = 0
        self.delete_ct = 0
        self.pause_ct = 0
        self.using_ct = 0
        self.watching_ct = 0
        self.pause = 0  # ns; 0 when not paused
        self.unpause_at = 0  # ns
        self.pause_timer: Optional["Timer"] = None
        # Key of this tube's head in the engine's index of reservable tubes.
        self.index_key: Optional[int] = None
        # Not in stats-tube (whose fields are the reference's): the operations
        # plane's rates and put-to-reserve wait histogram (store.TubeInsight).
        self.reserve_ct = 0
        self.wait_counts: Optional[list[int]] = None  # per WAIT_BUCKETS_NS bucket, +Inf last
        self.wait_sum = 0  # ns

    def job_count(self) -> int:
        return len(self.ready) + len(self.delayed) + len(self.buried) + len(self.reserved)

    def __repr__(self) -> str:
        return f"<Tube {self.name!r}>"
