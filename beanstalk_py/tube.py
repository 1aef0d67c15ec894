"""Tubes: named queues with ready, delayed and buried jobs (beanstalkd's tube.c)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Optional

from sortedcontainers import SortedKeyList

from .job import Job, delay_key, ready_key

if TYPE_CHECKING:
    from .engine import Client


class Tube:
    """A tube and its per-tube counters.

    ``ready`` is ordered by (priority, id) and ``delayed`` by (deadline, id),
    both O(log n) to insert and remove; ``buried`` is a FIFO kept in a dict so
    any buried job leaves in O(1).  ``waiters`` holds the clients blocked in a
    reserve that watch this tube, in arrival order.
    """

    __slots__ = (
        "name",
        "ready",
        "delayed",
        "buried",
        "waiters",
        "reserved_ct",
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
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.ready: SortedKeyList = SortedKeyList(key=ready_key)
        self.delayed: SortedKeyList = SortedKeyList(key=delay_key)
        # OrderedDict, not dict: finding the first entry of a plain dict that
        # is emptied from the front walks every deleted slot (quadratic churn).
        self.buried: OrderedDict[Job, None] = OrderedDict()
        self.waiters: OrderedDict["Client", None] = OrderedDict()
        self.reserved_ct = 0
        self.urgent_ct = 0
        self.total_jobs_ct = 0
        self.delete_ct = 0
        self.pause_ct = 0
        self.using_ct = 0
        self.watching_ct = 0
        self.pause = 0  # ns; 0 when not paused
        self.unpause_at = 0  # ns
        self.pause_timer: Optional[tuple] = None
        # Key of this tube's head in the engine's index of reservable tubes.
        self.index_key: Optional[int] = None

    @property
    def paused(self) -> bool:
        return self.pause != 0

    def job_count(self) -> int:
        return len(self.ready) + len(self.delayed) + len(self.buried) + self.reserved_ct

    def first_buried(self) -> Optional[Job]:
        for job in self.buried:
            return job
        return None

    def __repr__(self) -> str:
        return f"<Tube {self.name!r}>"
