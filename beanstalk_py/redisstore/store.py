"""The Redis store: a :class:`~..store.Store` whose queue lives in Redis.

Every command becomes one ``FCALL`` of the library in ``functions.lua``
(atomic, one hash slot) and answers with a :class:`~..store.Later`, which
completes when the reply arrives and is handed back through
:meth:`RedisStore.take_completed`.  Calls go through a
:class:`~.resp.Pipeline`, so whatever the connections of one loop pass ask
for leaves in one write (the design's batching rule: 21-37 us of Redis CPU
per put+reserve+delete batched, 177 us one round trip each).

What stays in the front end (this process):

* ``use``, ``watch`` and ``ignore`` are answered here at once; the tube
  counts they move are written behind (``bs_ref``), in order with the
  commands that follow, so they cost no round trip on a worker's path;
* connection counters (``current-connections``, producers, workers,
  waiting, ``total-connections``), as the issue says for store mode;
* command counters are added up here and sent with the next ``stats`` or
  every :data:`COUNT_FLUSH_NS` (``bs_count``).

Ids: 1.12 uses an id up at a put *header*, even if the body then fails.
:meth:`RedisStore.begin_put` returns 0 ("assigned at put") and remembers
the header; if the body follows before anything else is queued (always,
when the client sent them together) the put itself takes the id with one
call.  Otherwise the id is taken on its own (``bs_take_id``) before the next
queued call, so ids follow 1.12's order either way.

Blocked reserves: ``bs_reserve`` registers a waiter in Redis; whichever call
later makes a job ready for it (a put on any front end, a release, a timer)
reserves it for the oldest waiter and pushes the outcome onto this front
end's inbox list.  In the daemon (``service=True``) a dedicated connection
pops that list with a blocking pop and the timers are ticked by the Redis
clock (:mod:`.service`); in the tests' rig the inbox is read at the end of
each batch while any session of this front end waits.

DEADLINE_SOON is decided inside Redis, not here: each session's held jobs
are a zset by TTR deadline (``o:<owner>``), so ``bs_reserve`` and the
waiter's timer compare the soonest deadline with the same clock that runs
the TTRs, as the engine does with its one clock.

Times: with ``clock="redis"`` (the daemon) every function reads the Redis
primary's TIME, one clock for all front ends.  ``clock="caller"`` (tests)
sends the ``now`` each call was given, in microseconds, so the store can be
driven through the same instants as the in-memory engine.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence, TypeVar, Union

from ..log import warn
from ..stats import COUNTED_COMMANDS, Kind, Stat, job_stat_list, trunc_div, tube_stat_list
from ..store import (BURIED, DEADLINE_SOON, DELAYED, NOT_IGNORED, READY, RESERVED, TIMED_OUT, Completion,
                     Cursor, JobView, Later, NotAvailable, Outcome, SessionOwner, Store, TubeInsight)
from ..swaplist import SwapList
from ..wal import NO_DURABILITY, Durability
from .resp import Arg, Pipeline, RedisError, Reply, is_error

US = 1_000_000  # Redis-side times are microseconds
NS_PER_US = 1000
ANCHOR = "{bs}"  # the one declared key of every call: all keys share its slot
INBOX_BATCH = 1000  # deliveries taken per read of the inbox
# Command counts go to Redis at least this often (and with every `stats`).
COUNT_FLUSH_NS = 100_000_000
# While a session of this front end waits in a reserve, tick at least this
# often: a delay, TTR or pause set by another front end may end meanwhile.
# A design bound (the waiter's reply may come up to this late), not measured.
WAIT_POLL_NS = 20_000_000

# What the operations plane is told for what this store cannot do yet.
NOT_YET = "not available with --store redis yet"

T = TypeVar("T")
_STATES = {READY: "ready", DELAYED: "delayed", BURIED: "buried"}


def library_source() -> str:
    """The Lua library loaded with FUNCTION LOAD REPLACE."""
    return resources.files(__package__).joinpath("functions.lua").read_text()


class Transport(Protocol):
    """What the store needs of a Redis connection: its pipeline, and a way
    to have what was queued written (at once, or at the next checkpoint)."""

    @property
    def pipe(self) -> Pipeline: ...

    def wake(self) -> None: ...


class RedisJob:
    """A job as a reply shows it: its id and body (with the trailing CRLF)."""

    __slots__ = ("id", "body")

    def __init__(self, job_id: int, body: bytes) -> None:
        self.id = job_id
        self.body = body

    def __repr__(self) -> str:
        return f"<RedisJob {self.id}>"


class RedisSession:
    """One client's tubes (kept here) and its place in Redis (``key``)."""

    __slots__ = ("owner", "key", "use", "watch", "producer", "worker", "waiting", "reserving", "taken",
                 "probing")

    def __init__(self, owner: SessionOwner, key: str) -> None:
        self.owner = owner
        self.key = key  # "<front end>:<n>": the owner of its jobs and waits in Redis
        self.use = b"default"
        self.watch: SwapList[bytes] = SwapList()
        self.watch.append(b"default")
        self.producer = False
        self.worker = False
        self.waiting = False  # registered as a waiter in Redis
        self.reserving: Optional[Later[Outcome]] = None  # its reserve, until answered
        self.taken = False  # an id taken for a put header, kept in Redis for the put
        # reserve-jobs sent while not a worker: one that finds its job makes
        # the client a worker from its place in the command order (stats)
        self.probing: list[Later[Optional[JobView]]] = []


class RedisStore:
    """All queue state in Redis; this front end's sessions and counters here."""

    # Every answer is a Later: the HTTP plane (which cannot wait for one
    # yet) refuses its calls with a 501 instead of making them (http/api.py).
    answers_later = True

    def __init__(self, transport: Transport, *, max_job_size: int = 65535, clock: str = "redis",
                 fe_id: Optional[str] = None, service: bool = False) -> None:
        self.max_job_size = max_job_size
        self.transport = transport
        self.pipe = transport.pipe
        self.pipe.on_flush = self._before_send
        self.fe = fe_id or os.urandom(6).hex()
        self._caller_clock = clock == "caller"
        # A StoreService (the daemon) pops the inbox on its own connection
        # and ticks by the Redis clock; without one, batches read the inbox.
        self._service = service
        # Called when a session of this front end starts waiting (the
        # service's tick task sleeps while none does).
        self.on_wait: Callable[[], None] = _nothing
        self._draining = False
        self._completed: list[tuple[SessionOwner, Completion]] = []
        self._sessions: dict[str, RedisSession] = {}
        self._session_seq = 0
        self._header: Optional[RedisSession] = None  # a put header whose id is not taken yet
        self._counts: dict[str, int] = {}
        self._counts_sent_at = 0
        self._inbox = f"{{bs}}:in:{self.fe}"
        self._reserves_in_batch = 0
        self._next_tick: Optional[int] = None
        self._last_now = 0
        self._probing: set[RedisSession] = set()  # sessions with a RedisSession.probing reserve-job
        self.conn_ct = 0
        self.total_conn_ct = 0
        self.producer_ct = 0
        self.worker_ct = 0
        self.waiting_ct = 0
        self.errors = 0
        self.epoch = ""  # the store's stats id (bs_init), "" until connected
        self._resetting = False

    # ------------------------------------------------------------------ set-up

    def start(self, done: Optional[Callable[[Optional[str]], None]] = None) -> None:
        """Load the library and make the default tube (queued; sent with the
        first batch).  ``done`` gets None once both succeeded, else the error."""
        for args, callback in self.setup_calls(done):
            self.pipe.call(args, callback)
        self.transport.wake()

    def setup_calls(self, done: Optional[Callable[[Optional[str]], None]] = None
                    ) -> list[tuple[Sequence[Arg], Callable[[Reply], None]]]:
        """The calls that begin each connection to Redis: load the library
        (FUNCTION LOAD REPLACE: the primary after a failover has it already,
        one restarted empty has not) and ``bs_init``, whose reply is the
        epoch shown as ``stats`` id.  ``done`` as for :meth:`start`."""
        failed: list[str] = []

        def loaded(reply: Reply) -> None:
            if isinstance(reply, RedisError) or is_error(reply):
                failed.append(f"FUNCTION LOAD: {reply}")
                self._check(reply)

        def initialised(reply: Reply) -> None:
            if isinstance(reply, RedisError) or is_error(reply):
                failed.append(f"bs_init: {reply}")
                self._check(reply)
            elif isinstance(reply, bytes):
                self.epoch = reply.decode()
            if done is not None:
                done(failed[0] if failed else None)

        return [((b"FUNCTION", b"LOAD", b"REPLACE", library_source()), loaded),
                ((b"FCALL", b"bs_init", 1, ANCHOR, self._now(0)), initialised)]

    def lease_call(self, ttl_us: int, first: bool, callback: Callable[[Reply], None]
                   ) -> tuple[Sequence[Arg], Callable[[Reply], None]]:
        """:meth:`request_lease` as a call for :meth:`setup_calls`' list."""
        return (b"FCALL", b"bs_lease", 1, ANCHOR, self._now(0), self.fe, ttl_us, 1 if first else 0), callback

    def reset(self) -> int:
        """The connection to Redis was lost (or this front end's lease):
        whatever Redis holds for this front end's sessions is given up.

        Every reply still owed fails, every client connection is hung up
        (it reconnects, as after a crash of this front end: its reserved jobs
        come back when the old identity's lease runs out, at-least-once), and
        the store takes a new front-end identity for the next connection.
        Returns how many clients were hung up."""
        self._resetting = True
        try:
            self.pipe.fail_all(RedisError("the connection to redis was lost"))
        finally:
            self._resetting = False
        self._completed.clear()
        self._probing.clear()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._header = None
        self._next_tick = None
        self._reserves_in_batch = 0
        self.fe = os.urandom(6).hex()
        self._inbox = f"{{bs}}:in:{self.fe}"
        for session in sessions:
            session.reserving = None
            session.owner.hang_up()
        return len(sessions)

    @property
    def inbox_key(self) -> str:
        """This front end's list of deliveries (the service pops it)."""
        return self._inbox

    def request_tick(self, callback: Callable[[Reply], None]) -> None:
        """Run the timers due by the Redis clock; ``callback`` gets
        ``[redis now us, next timer us or -1]`` (the service's tick task)."""
        self._fcall("tick", 0, (), callback, held=False)

    def request_lease(self, ttl_us: int, first: bool, callback: Callable[[Reply], None]) -> None:
        """Take (``first``) or renew this front end's lease for ``ttl_us`` by
        the Redis clock; ``callback`` gets 1, or 0 if it was lost (it ran out
        and this front end's state was reclaimed: see functions.lua)."""
        self._fcall("lease", 0, (self.fe, ttl_us, 1 if first else 0), callback, held=False)

    def _check(self, reply: Reply) -> None:
        if isinstance(reply, RedisError) or is_error(reply):
            self._error("set-up", reply)

    # ------------------------------------------------------------------ plumbing

    def _now(self, now: int) -> Arg:
        if not self._caller_clock:
            return b""
        # Calls the seam gives no time (delete, bury, peek...) run at the
        # latest time seen, so the test clock never goes back.
        if now > self._last_now:
            self._last_now = now
        return self._last_now // NS_PER_US

    def _fcall(self, name: str, now: int, args: Sequence[Arg], callback: Optional[Callable[[Reply], None]],
               held: bool = True) -> None:
        if self._header is not None:
            self._take_header_id()
        self.pipe.call((b"FCALL", b"bs_" + name.encode(), 1, ANCHOR, self._now(now), *args), callback, held)
        self.transport.wake()

    def _later(self, name: str, now: int, args: Sequence[Arg], convert: Callable[[Reply], T],
               failed: T) -> Later[T]:
        """One call whose converted reply completes a Later (``failed`` on an error)."""
        later: Later[T] = Later()

        def done(reply: Reply) -> None:
            if isinstance(reply, RedisError) or is_error(reply):
                self._error(name, reply)
                later.complete(failed)
            else:
                later.complete(convert(reply))
            if later.owner is not None:
                self._completed.append((later.owner, later))

        self._fcall(name, now, args, done)
        return later

    def _error(self, what: str, reply: object) -> None:
        if self._resetting:
            return  # one message for the lost connection says it all (service.py)
        self.errors += 1
        warn(f"redis store: {what}: {reply}")

    def _before_send(self) -> None:
        """Last calls of a batch: a pending put header's id, counts, the inbox."""
        if self._header is not None:
            self._take_header_id()
        if self._counts and time.monotonic_ns() - self._counts_sent_at >= COUNT_FLUSH_NS:
            self._send_counts()
        if (self.waiting_ct or self._reserves_in_batch) and not self._service:
            self._reserves_in_batch = 0
            self.pipe.call((b"LPOP", self._inbox, INBOX_BATCH), self._on_inbox)

    def _take_header_id(self) -> None:
        """The put header's id is used up now, before anything queued after it."""
        session = self._header
        assert session is not None
        self._header = None
        session.taken = True
        self.pipe.call((b"FCALL", b"bs_take_id", 1, ANCHOR, self._now(0), session.key), self._check)

    def flush_counts(self) -> None:
        """Send the command counts not sent yet (the service, every
        :data:`COUNT_FLUSH_NS`, so an idle front end's counts are not held back)."""
        if self._counts:
            self._send_counts()
            self.transport.wake()

    def _send_counts(self) -> None:
        args: list[Arg] = []
        for name, delta in self._counts.items():
            args += (name, delta)
        self._counts = {}
        self._counts_sent_at = time.monotonic_ns()
        self.pipe.call((b"FCALL", b"bs_count", 1, ANCHOR, self._now(0), *args), self._check)

    def _on_inbox(self, reply: Reply) -> None:
        if isinstance(reply, RedisError) or is_error(reply):
            self._error("inbox", reply)
            return
        if not reply:
            return
        assert isinstance(reply, list)
        self.take_deliveries(reply)
        if len(reply) == INBOX_BATCH:
            self.pipe.call((b"LPOP", self._inbox, INBOX_BATCH), self._on_inbox)
            self.transport.wake()

    def take_deliveries(self, items: list[bytes]) -> None:
        """Outcomes popped from the inbox: each finishes its session's reserve."""
        for item in items:
            key, outcome, rest = (item.split(b" ", 2) + [b""])[:3]
            session = self._sessions.get(key.decode())
            if session is None or session.reserving is None:
                continue  # closed meanwhile: bs_close gave its job back
            if outcome == b"job":
                job_id, body = rest.split(b" ", 1)
                self._finish_wait(session, RedisJob(int(job_id), body))
            else:
                self._finish_wait(session, TIMED_OUT if outcome == b"TIMED_OUT" else DEADLINE_SOON)

    def _finish_wait(self, session: RedisSession, outcome: Outcome) -> None:
        later = session.reserving
        assert later is not None
        session.reserving = None
        if session.waiting:
            session.waiting = False
            self.waiting_ct -= 1
        later.complete(outcome)
        if later.owner is not None:
            self._completed.append((later.owner, later))

    def _ref(self, now: int, *changes: Arg) -> None:
        """Tube use/watch counts, written behind (nobody waits for the reply)."""
        self._fcall("ref", now, (self.fe, *changes), self._check)

    # ------------------------------------------------------------------ the seam: process

    @property
    def durability(self) -> Durability:
        return NO_DURABILITY

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        self._draining = True

    def open_session(self, owner: SessionOwner) -> RedisSession:
        self._session_seq += 1
        session = RedisSession(owner, f"{self.fe}:{self._session_seq}")
        self._sessions[session.key] = session
        self.conn_ct += 1
        self.total_conn_ct = (self.total_conn_ct + 1) & 0xFFFFFFFF
        self._ref(0, b"default", b"using", 1, b"default", b"watching", 1)
        return session

    def close_session(self, session: RedisSession, now: int) -> None:
        """Its reserved jobs go back (in Redis, in reserve order), then its tubes."""
        if self._header is session:
            self._take_header_id()
        if session.waiting:
            session.waiting = False
            self.waiting_ct -= 1
        session.reserving = None
        if self._sessions.pop(session.key, None) is not None:
            self._fcall("close", now, (session.key, session.use, *session.watch.items), self._check)
        # else: hung up by reset(); the old identity's lease gives its jobs back
        self.conn_ct -= 1
        if session.producer:
            self.producer_ct -= 1
        if session.worker:
            self.worker_ct -= 1

    def count(self, command: str) -> None:
        counts = self._counts
        name = "cmd-" + command
        counts[name] = counts.get(name, 0) + 1

    def tick(self, now: int) -> None:
        """Run the timers due in Redis when a waiter of ours may be concerned
        (the tests' clock: every time they tick).  With a service, its tick
        task does this by the Redis clock instead."""
        if self._service:
            return
        if self._caller_clock or (self.waiting_ct and self._next_tick is not None
                                  and now >= self._next_tick):
            self._next_tick = now + WAIT_POLL_NS
            self._fcall("tick", now, (), self._check)

    def next_wakeup(self) -> Optional[int]:
        if self.waiting_ct and not self._caller_clock and not self._service:
            return self._next_tick
        return None

    def take_completed(self) -> list[tuple[SessionOwner, Completion]]:
        completed = self._completed
        if completed:
            self._completed = []
        return completed

    # ------------------------------------------------------------------ producers

    def begin_put(self, session: RedisSession) -> int:
        if not session.producer:
            session.producer = True
            self.producer_ct += 1
        if self._header is not None:
            self._take_header_id()  # that put never came (its body was bad)
        session.taken = False
        self._header = session
        return 0

    def put(self, session: RedisSession, job_id: int, pri: int, delay: int, ttr: int,
            body: bytes, now: int) -> Union[int, Later[int]]:
        taken = session.taken
        session.taken = False
        if self._header is session:
            self._header = None  # the put takes the id itself: one call
        if self._draining:
            if not taken:
                self.pipe.call((b"FCALL", b"bs_take_id", 1, ANCHOR, self._now(now), b""), self._check)
                self.transport.wake()
            return 0
        return self._later("put", now, (session.use, pri, delay, ttr, body, session.key if taken else b""),
                           _int, 0)

    def put_job(self, name: bytes, pri: int, delay: int, ttr: int, body: bytes, now: int) -> Union[int, Later[int]]:
        if self._draining:
            return 0
        return self._later("put", now, (name, pri, delay, ttr, body + b"\r\n", b""), _int, 0)

    def use(self, session: RedisSession, name: bytes) -> bytes:
        old = session.use
        if name != old:
            session.use = name
            self._ref(0, name, b"using", 1, old, b"using", -1)
        return name

    # ------------------------------------------------------------------ workers

    def _set_worker(self, session: RedisSession) -> None:
        if not session.worker:
            session.worker = True
            self.worker_ct += 1

    def reserve(self, session: RedisSession, timeout: int, now: int) -> Later[Outcome]:
        self._set_worker(session)
        later: Later[Outcome] = Later()
        session.reserving = later
        if timeout:
            # It may wait, and a later call of this batch may then hand it a job:
            # read the inbox at the end of the batch.  (A zero timeout never
            # waits; measured: an inbox read per batch was a 4th command per job
            # for put/reserve/delete one at a time.)
            self._reserves_in_batch += 1

        def done(reply: Reply) -> None:
            if isinstance(reply, list):
                self._finish_wait(session, RedisJob(reply[0], reply[1]))
            elif reply == b"WAIT":
                if session.reserving is not later:
                    return  # the session closed meanwhile
                session.waiting = True
                self.waiting_ct += 1
                if self.waiting_ct == 1:
                    self.on_wait()
                if not self._caller_clock:
                    wake = now + WAIT_POLL_NS
                    if self._next_tick is None or wake < self._next_tick:
                        self._next_tick = wake
                if getattr(session.owner, "eof", False):
                    # The client half-closed before the store answered: a
                    # reserve that would block times out at once, as in conn.py.
                    self.cancel_wait(session)
            elif reply == b"DEADLINE_SOON":
                self._finish_wait(session, DEADLINE_SOON)
            else:
                if reply != b"TIMED_OUT":
                    self._error("reserve", reply)
                self._finish_wait(session, TIMED_OUT)

        self._fcall("reserve", now, (session.key, self.fe, timeout, *session.watch.items), done)
        return later

    def cancel_wait(self, session: RedisSession, notify: bool = True) -> None:
        """The client half-closed while waiting: TIMED_OUT, unless Redis
        already handed it an outcome (then that comes through the inbox).
        The reply always comes through take_completed (``notify`` is moot:
        the reserve's Later holds its place)."""
        if not session.waiting:
            return

        def done(reply: Reply) -> None:
            if reply == 1 and session.reserving is not None:
                self._finish_wait(session, TIMED_OUT)

        self._fcall("unwait", 0, (session.key,), done)

    def reserve_job(self, session: RedisSession, job_id: int, now: int) -> Later[Optional[JobView]]:
        probing = not session.worker

        def convert(reply: Reply) -> Optional[JobView]:
            job = _job(reply)
            if probing:
                session.probing.remove(later)
                if not session.probing:
                    self._probing.discard(session)
            if job is not None and not session.worker and session.key in self._sessions:
                self._set_worker(session)
            return job

        later = self._later("reserve_job", now, (session.key, job_id), convert, None)
        if probing:
            session.probing.append(later)
            self._probing.add(session)
        return later

    def delete(self, session: RedisSession, job_id: int) -> Later[bool]:
        return self._later("delete", 0, (session.key, job_id), _bool, False)

    def delete_job(self, job_id: int) -> Later[bool]:
        return self._later("delete", 0, (b"", job_id), _bool, False)

    def release(self, session: RedisSession, job_id: int, pri: int, delay: int, now: int) -> Later[bool]:
        return self._later("release", now, (session.key, job_id, pri, delay), _bool, False)

    def bury(self, session: RedisSession, job_id: int, pri: int) -> Later[bool]:
        return self._later("bury", 0, (session.key, job_id, pri), _bool, False)

    def touch(self, session: RedisSession, job_id: int, now: int) -> Later[bool]:
        return self._later("touch", now, (session.key, job_id), _bool, False)

    def watch(self, session: RedisSession, name: bytes) -> int:
        if session.watch.append(name):
            self._ref(0, name, b"watching", 1)
        return len(session.watch)

    def ignore(self, session: RedisSession, name: bytes) -> int:
        if name in session.watch:
            if len(session.watch) < 2:
                return NOT_IGNORED
            session.watch.remove(name)
            self._ref(0, name, b"watching", -1)
        return len(session.watch)

    def used_tube(self, session: RedisSession) -> bytes:
        return session.use

    def watched_tubes(self, session: RedisSession) -> list[bytes]:
        return list(session.watch.items)

    # ------------------------------------------------------------------ other commands

    def kick(self, session: RedisSession, bound: int, now: int) -> Later[int]:
        return self._later("kick", now, (session.use, bound), _int, 0)

    def kick_tube(self, name: bytes, bound: int, now: int) -> Later[int]:
        return self._later("kick", now, (name, bound), _int, 0)

    def kick_job(self, job_id: int, now: int) -> Later[bool]:
        return self._later("kick_job", now, (job_id,), _bool, False)

    def peek(self, job_id: int) -> Later[Optional[JobView]]:
        return self._later("peek", 0, (job_id,), _job, None)

    def peek_used(self, session: RedisSession, state: str) -> Later[Optional[JobView]]:
        return self.peek_tube(session.use, state)

    def peek_tube(self, name: bytes, state: str) -> Later[Optional[JobView]]:
        return self._later("peek_tube", 0, (name, _STATES[state]), _job, None)

    def pause_tube(self, name: bytes, delay: int, now: int) -> Later[bool]:
        return self._later("pause", now, (name, delay), _bool, False)

    def tube_names(self) -> Later[list[bytes]]:
        return self._later("list_tubes", 0, (), _names, [])

    def snapshot(self, now: int) -> Later[list[Stat]]:
        args: list[Arg] = []
        for name, delta in self._counts.items():
            args += (name, delta)
        self._counts = {}
        self._counts_sent_at = time.monotonic_ns()
        # This front end's counters as they are now, when the command runs,
        # not when Redis answers (later commands may have moved them); but a
        # reserve-job sent before it makes its client a worker only when
        # answered, which is before this reply.
        gauge = Kind.GAUGE
        workers = self.worker_ct
        probes = [list(session.probing) for session in self._probing if not session.worker]
        local = [
            Stat("current-connections", self.conn_ct, gauge),
            Stat("current-producers", self.producer_ct, gauge),
            Stat("current-workers", 0, gauge),
            Stat("current-waiting", self.waiting_ct, gauge),
            Stat("total-connections", self.total_conn_ct, Kind.COUNTER),
            Stat("draining", self._draining, gauge),
        ]

        def convert(reply: Reply) -> list[Stat]:
            made = sum(1 for laters in probes if any(later.value is not None for later in laters))
            local[2] = Stat("current-workers", workers + made, gauge)
            return self._snapshot(reply, local)

        return self._later("stats", now, args, convert, [])

    def _snapshot(self, reply: Reply, local: list[Stat]) -> list[Stat]:
        assert isinstance(reply, list)
        tubes = reply[0]
        if reply[1]:
            self.epoch = reply[1].decode()
        fields = {reply[i].decode(): int(reply[i + 1]) for i in range(2, len(reply), 2)}
        gauge, counter = Kind.GAUGE, Kind.COUNTER
        out = [
            Stat("current-jobs-urgent", fields.get("urgent", 0), gauge),
            Stat("current-jobs-ready", fields.get("ready", 0), gauge),
            Stat("current-jobs-reserved", fields.get("reserved", 0), gauge),
            Stat("current-jobs-delayed", fields.get("delayed", 0), gauge),
            Stat("current-jobs-buried", fields.get("buried", 0), gauge),
        ]
        out.extend(Stat(f"cmd-{name}", fields.get(f"cmd-{name}", 0), counter) for name in COUNTED_COMMANDS)
        out += [
            Stat("job-timeouts", fields.get("timeouts", 0), counter),
            Stat("total-jobs", fields.get("total", 0), counter),
            Stat("max-job-size", self.max_job_size, Kind.INFO),
            Stat("current-tubes", tubes, gauge),
            Stat("id", self.epoch, Kind.INFO),  # the store's: one for every front end
        ]
        return out + local

    def tube_stats(self, name: bytes, now: int) -> Later[Optional[list[Stat]]]:
        def convert(reply: Reply) -> Optional[list[Stat]]:
            if reply is None:
                return None
            assert isinstance(reply, list)
            (urgent, ready, reserved, delayed, buried, total, using, watching, waiting, deletes,
             pauses, pause, unpause_at, at) = reply
            if pause and unpause_at > at:
                pause_s, left = pause // US, (unpause_at - at) // US
            else:
                pause_s = left = 0
            return tube_stat_list(name.decode("ascii"), urgent, ready, reserved, delayed, buried, total,
                                  using, watching, waiting, deletes, pauses, pause_s, left)

        return self._later("stats_tube", now, (name,), convert, None)

    def job_stats(self, job_id: int, now: int) -> Later[Optional[list[Stat]]]:
        return self._later("stats_job", now, (job_id,), _job_stats, None)

    # ------------------------------------------------------------------ operators
    # What only the operations plane (--http) asks, beyond the protocol: not
    # built for Redis yet.  They fail loudly (the plane answers 501), never
    # as an empty queue.  peek_tube, kick_tube, kick_job, delete_job and
    # put_job are real (above): the protocol's commands share them.

    def tube_jobs(self, name: bytes, state: str, limit: int,
                  after: Optional[Cursor] = None) -> tuple[Sequence[JobView], Optional[Cursor]]:
        raise NotAvailable(f"listing a tube's jobs is {NOT_YET}")

    def search_jobs(self, name: bytes, state: str, needle: bytes, limit: int, scan: int,
                    after: Optional[Cursor] = None) -> tuple[Sequence[JobView], Optional[Cursor], int]:
        raise NotAvailable(f"searching job bodies is {NOT_YET}")

    def clear_tube(self, name: bytes, state: str, limit: int) -> int:
        raise NotAvailable(f"clearing a tube is {NOT_YET}")

    def move_jobs(self, source: bytes, target: bytes, state: str, limit: int, now: int) -> int:
        raise NotAvailable(f"moving jobs is {NOT_YET}")

    def move_job(self, job_id: int, target: bytes, now: int) -> bool:
        raise NotAvailable(f"moving a job is {NOT_YET}")

    def bury_job(self, job_id: int, now: int) -> bool:
        raise NotAvailable(f"an operator's bury is {NOT_YET}")

    def reprioritize_job(self, job_id: int, pri: int, now: int) -> bool:
        raise NotAvailable(f"reprioritizing a job is {NOT_YET}")

    def job_state(self, job_id: int) -> Optional[str]:
        raise NotAvailable(f"job states for /status are {NOT_YET}")

    def tube_insight(self, name: bytes, now: int) -> Optional[TubeInsight]:
        raise NotAvailable(f"tube insight is {NOT_YET}")

    def tube_counters(self) -> list[tuple[bytes, int, int, int]]:
        raise NotAvailable(f"tube rates are {NOT_YET}")

    def recovered_jobs(self) -> int:
        raise NotAvailable(f"recovered-job counts are {NOT_YET}")


# ---------------------------------------------------------------------- replies


def _nothing() -> None:
    pass


def _int(reply: Reply) -> int:
    assert isinstance(reply, int)
    return reply


def _bool(reply: Reply) -> bool:
    return reply == 1


def _job(reply: Reply) -> Optional[JobView]:
    if reply is None:
        return None
    assert isinstance(reply, list)
    return RedisJob(reply[0], reply[1])


def _names(reply: Reply) -> list[bytes]:
    assert isinstance(reply, list)
    return reply


def _job_stats(reply: Reply) -> Optional[list[Stat]]:
    if reply is None:
        return None
    assert isinstance(reply, list)
    (job_id, tube, state, pri, created, delay, ttr, deadline, reserves, timeouts, releases, buries,
     kicks, now) = reply
    state = state.decode()
    time_left = trunc_div(deadline - now, US) if state in (RESERVED, DELAYED) else 0
    return job_stat_list(job_id, tube.decode("ascii"), state, pri, trunc_div(now - created, US), delay, ttr,
                         time_left, 0, reserves, timeouts, releases, buries, kicks)


if TYPE_CHECKING:
    def _is_a_store(store: RedisStore) -> Store[RedisSession]:
        return store  # mypy checks RedisStore against the seam
