"""The store seam: what the protocol layer (and later an HTTP plane) asks of the
queue, at the level of beanstalk commands.

The connection layer (:mod:`.conn`) calls a :class:`Store` with plain
arguments and gets plain values back: job ids, counts, tube names, a
:class:`JobView` (id and body), stats as :class:`~.stats.Stat` lists.  It
never sees the store's jobs, tubes or timers, and identifies a client by the
:class:`Session` handle the store gave it, never by its own objects.

The in-memory :class:`~.engine.Engine` answers every call at once, so the hot
path stays one synchronous pass over a batch of commands.  Its one result
that comes later is a blocked reserve: :meth:`Store.reserve` returns None,
the connection stops taking commands (as the reference's does), and the
outcome is handed back through :meth:`Store.take_completed` to the
:class:`SessionOwner` the session was opened for.

A store that answers over the network returns a :class:`Later` from any
command instead of its value: the connection keeps that reply's place in
its output and goes on with the commands behind it (so a pipelining client
keeps several commands outstanding), and the store hands the completed
``Later`` back through the same :meth:`Store.take_completed`.  Replies go
out in command order.  Only a reserve stops the commands behind it.

Tube-addressed operations (``*_tube``, ``tube_jobs``, ``clear_tube``,
``move_jobs``, and ``delete_job``) need no session, so an operator's tool can call them without
faking a client or counting a connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Optional, Protocol, Sequence, TypeVar, Union

if TYPE_CHECKING:
    from .stats import Stat
    from .wal import Durability

# Job states, as the reference names them in stats-job.
READY = "ready"
RESERVED = "reserved"
BURIED = "buried"
DELAYED = "delayed"
STATES = (READY, RESERVED, BURIED, DELAYED)

# job_state of a job deleted lately (kept only when the store remembers deletes).
DELETED = "deleted"

# Upper bounds (ns) of the put-to-reserve wait histogram's buckets; one more
# bucket (+Inf) follows.  From 1 ms (a worker already waiting) to an hour.
WAIT_BUCKETS_NS: tuple[int, ...] = tuple(int(s * 1e9) for s in (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600))


@dataclass(frozen=True)
class TubeInsight:
    """What the operations plane shows of a tube beyond stats-tube."""

    puts: int  # jobs put into the tube (stats-tube total-jobs)
    reserves: int  # reserves of jobs in the tube
    deletes: int  # deletes (stats-tube cmd-delete)
    oldest_ready_age_ns: Optional[int]  # since the oldest ready job was put; None: none ready
    wait_counts: tuple[int, ...]  # first reserves by wait since ready, per WAIT_BUCKETS_NS bucket and +Inf
    wait_sum_ns: int  # the sum of those waits


class NotAvailable(Exception):
    """This store cannot do that yet (the operations plane answers 501).

    Raised at once, never as an empty answer, so an operator is not shown
    an empty queue that is not empty."""


# Outcomes of a reserve other than a job.
TIMED_OUT = "TIMED_OUT"
DEADLINE_SOON = "DEADLINE_SOON"
# ignore of the last watched tube.
NOT_IGNORED = -1


class JobView(Protocol):
    """What a reply shows of a job: its id and its body (with the trailing CRLF)."""

    @property
    def id(self) -> int: ...

    @property
    def body(self) -> bytes: ...


T = TypeVar("T")


class Later(Generic[T]):
    """A command's answer that a store gives later (over the network).

    The store returns it; the caller sets :attr:`owner` (who gets the
    completion) and :attr:`fill` (its own note of where the answer goes).
    Once the store has the value it calls :meth:`complete` and hands
    ``(later.owner, later)`` back through ``take_completed``.
    """

    __slots__ = ("value", "done", "owner", "fill")

    def __init__(self) -> None:
        self.value: Optional[T] = None
        self.done = False
        self.owner: Optional["SessionOwner"] = None  # set by the caller
        self.fill: Optional[object] = None  # the caller's; the store never reads it

    def complete(self, value: T) -> None:
        self.value = value
        self.done = True


# What a store command returns: the value now, or a Later for it.
Answer = Union[T, Later[T]]

Outcome = Union[JobView, str]  # a reserved job, TIMED_OUT or DEADLINE_SOON
# What take_completed hands back: a reserve that finished waiting, or a Later.
Completion = Union[Outcome, Later]


class SessionOwner(Protocol):
    """Who a session's delayed outcomes go to (the connection)."""

    def deliver(self, completion: Completion, now: int) -> None: ...

    def hang_up(self) -> None:
        """The store lost this session's state (a shared store's connection
        was lost): close the client without another reply."""


class Session(Protocol):
    """A client's handle: opaque to the caller, passed back on every call."""

    @property
    def waiting(self) -> bool:
        """Blocked in a reserve: the connection takes no further commands."""


S = TypeVar("S", bound=Session)

# An operator's page cursor: the serving-order key of the last job shown.
Cursor = tuple[int, int]


class Store(Protocol[S]):
    """A beanstalkd queue at the level of its commands.

    Times (``now``) are monotonic ns; ``delay``, ``ttr`` and ``timeout`` are
    seconds as the client gave them.  ``S`` is the store's session handle
    type.  Any command that changes a job's durable
    state may raise :class:`~.wal.WalError` having changed nothing.
    """

    max_job_size: int

    @property
    def durability(self) -> "Durability":
        """The fsync policy replies wait for (the I/O drivers' side of the log)."""

    @property
    def draining(self) -> bool: ...

    def drain(self) -> None:
        """SIGUSR1: refuse puts from now on (one way, as in beanstalkd)."""

    # sessions
    def open_session(self, owner: SessionOwner) -> S: ...

    def close_session(self, session: S, now: int) -> None:
        """The connection went away: its reserved jobs become ready again."""

    def count(self, command: str) -> None:
        """One more ``cmd-<command>`` in stats."""

    # timers and finished waits
    def tick(self, now: int) -> None: ...

    def next_wakeup(self) -> Optional[int]: ...

    def take_completed(self) -> list[tuple[SessionOwner, Completion]]:
        """Reserves that finished waiting and Laters completed since the last
        call, each session's in the order it issued them."""

    # producer commands
    def begin_put(self, session: S) -> int:
        """A put header was read: the id taken for it now (used up even if the
        put fails, as in 1.12), or 0 when the store assigns ids at put."""

    def put(self, session: S, job_id: int, pri: int, delay: int, ttr: int,
            body: bytes, now: int) -> Answer[int]:
        """Store a job in the session's used tube: its id, or 0 while draining."""

    def use(self, session: S, name: bytes) -> Answer[bytes]: ...

    # worker commands
    def reserve(self, session: S, timeout: int, now: int) -> Union[Optional[Outcome], Later[Outcome]]:
        """A job, TIMED_OUT or DEADLINE_SOON now; None: the session now waits
        (its outcome comes through take_completed); or a Later of the outcome."""

    def cancel_wait(self, session: S, notify: bool = True) -> None: ...

    def reserve_job(self, session: S, job_id: int, now: int) -> Answer[Optional[JobView]]: ...

    def delete(self, session: S, job_id: int) -> Answer[bool]: ...

    def release(self, session: S, job_id: int, pri: int, delay: int, now: int) -> Answer[bool]: ...

    def bury(self, session: S, job_id: int, pri: int) -> Answer[bool]: ...

    def touch(self, session: S, job_id: int, now: int) -> Answer[bool]: ...

    def watch(self, session: S, name: bytes) -> Answer[int]: ...

    def ignore(self, session: S, name: bytes) -> Answer[int]:
        """The watch count, or NOT_IGNORED for the last watched tube."""

    def used_tube(self, session: S) -> Answer[bytes]: ...

    def watched_tubes(self, session: S) -> Answer[list[bytes]]: ...

    # other commands
    def kick(self, session: S, bound: int, now: int) -> Answer[int]: ...

    def kick_job(self, job_id: int, now: int) -> Answer[bool]: ...

    def peek(self, job_id: int) -> Answer[Optional[JobView]]: ...

    def peek_used(self, session: S, state: str) -> Answer[Optional[JobView]]:
        """What ``peek-<state>`` shows: the session's used tube's next job in
        ``state`` (ready, delayed or buried)."""

    def peek_tube(self, name: bytes, state: str) -> Answer[Optional[JobView]]:
        """The same for tube ``name``, with no session."""

    def pause_tube(self, name: bytes, delay: int, now: int) -> Answer[bool]: ...

    def tube_names(self) -> Answer[list[bytes]]: ...

    def snapshot(self, now: int) -> Answer[list["Stat"]]:
        """The store's part of ``stats``; reading it changes no counter."""

    def tube_stats(self, name: bytes, now: int) -> Answer[Optional[list["Stat"]]]: ...

    def job_stats(self, job_id: int, now: int) -> Answer[Optional[list["Stat"]]]: ...

    # tube-addressed operations (no session)
    def kick_tube(self, name: bytes, bound: int, now: int) -> Answer[int]: ...

    def tube_jobs(self, name: bytes, state: str, limit: int,
                  after: Optional[Cursor] = None) -> Answer[tuple[Sequence[JobView], Optional[Cursor]]]:
        """Up to ``limit`` jobs in the order the queue serves them, after ``after``;
        the cursor for the next page, or None at the end."""

    def search_jobs(self, name: bytes, state: str, needle: bytes, limit: int, scan: int,
                    after: Optional[Cursor] = None
                    ) -> Answer[tuple[Sequence[JobView], Optional[Cursor], int]]:
        """Like :meth:`tube_jobs`, only jobs whose body holds ``needle``, looking at
        no more than ``scan`` jobs: the matches, the cursor to scan on from (None
        at the end), and how many jobs were looked at."""

    def delete_job(self, job_id: int) -> Answer[bool]:
        """An operator's delete of a job that is not reserved (False: no such
        job, or a client holds it and would lose its own delete)."""

    def clear_tube(self, name: bytes, state: str, limit: int) -> Answer[int]:
        """Delete up to ``limit`` jobs of tube ``name`` in ``state`` (not reserved ones)."""

    def move_jobs(self, source: bytes, target: bytes, state: str, limit: int, now: int) -> Answer[int]:
        """Move up to ``limit`` jobs in ``state`` (not reserved) to another tube."""

    def put_job(self, name: bytes, pri: int, delay: int, ttr: int, body: bytes, now: int) -> Answer[int]:
        """Put a job (``body`` without the protocol's trailing CRLF) into tube
        ``name``: its id, or 0 while draining.  Counts no command or connection."""

    # job-addressed operations (no session; never a reserved job, whose holder owns it)
    def move_job(self, job_id: int, target: bytes, now: int) -> Answer[bool]:
        """Move one ready, delayed or buried job to another tube, keeping its id and state."""

    def bury_job(self, job_id: int, now: int) -> Answer[bool]:
        """Bury a ready or delayed job (counted in its buries, logged as bury)."""

    def reprioritize_job(self, job_id: int, pri: int, now: int) -> Answer[bool]:
        """Give a ready, delayed or buried job a new priority (logged)."""

    # what the operations plane reads beyond the protocol's stats
    def job_state(self, job_id: int) -> Answer[Optional[str]]:
        """A job's state, :data:`DELETED` if it was deleted lately (when the
        store remembers deletes), or None if unknown."""

    def tube_insight(self, name: bytes, now: int) -> Answer[Optional[TubeInsight]]: ...

    def tube_counters(self) -> Answer[list[tuple[bytes, int, int, int]]]:
        """(name, puts, reserves, deletes) of every tube: what rates are made of."""

    def recovered_jobs(self) -> Answer[int]:
        """Jobs restored from the write-ahead log at start-up."""
