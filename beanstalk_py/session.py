"""What the in-memory store knows of one client (the engine half of beanstalkd's conn.c).

The connection layer holds a :class:`MemorySession` only as an opaque
:class:`~.store.Session` handle; every field here is the engine's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .swaplist import SwapList

if TYPE_CHECKING:
    from .job import Job
    from .store import SessionOwner
    from .tube import Tube

# A timer entry of the engine's sorted timer list: (when, seq, kind, object).
Timer = tuple[int, int, int, object]


class MemorySession:
    """One client's tubes, reserved jobs and blocked reserve."""

    __slots__ = (
        "owner",
        "use",
        "watch",
        "reserved",
        "producer",
        "worker",
        "waiting",
        "wait_seq",
        "wide",
        "timeout_timer",
        "soon_timer",
    )

    def __init__(self, owner: "SessionOwner", default: "Tube") -> None:
        self.owner = owner  # gets the outcome of a reserve that waited
        self.use = default  # the tube puts go to
        self.watch: SwapList["Tube"] = SwapList()  # tubes reserves take from, in list order
        self.watch.append(default)
        self.reserved: dict["Job", None] = {}  # jobs this client holds, in reserve order
        self.producer = False  # has put a job (counted once in current-producers)
        self.worker = False  # has reserved (counted once in current-workers)
        self.waiting = False  # blocked in a reserve
        self.wait_seq = 0  # when it started waiting: the oldest waiter is served first
        self.wide = False  # waits in the engine-wide list (watches many tubes)
        self.timeout_timer: Optional[Timer] = None  # reserve-with-timeout's end
        self.soon_timer: Optional[Timer] = None  # DEADLINE_SOON for a held job
