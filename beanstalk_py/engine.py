"""The queue engine: tubes, jobs, reservations and timers, with no I/O.

Every method that depends on time takes ``now`` (integer nanoseconds from any
monotonic clock), so tests drive a 60-second TTR without sleeping.  A blocked
reserve is engine state: the client is parked as a waiter with a deadline, and
when a job arrives the engine reserves it for the oldest eligible waiter and
appends ``(client, outcome)`` to :attr:`Engine.completed` for the I/O layer to
deliver.  The engine never formats protocol bytes.

Costs do not grow with what is idle: per-tube queues are sorted containers
(O(log n)), all timers (delays, TTRs, reserve timeouts, deadline-soon
warnings, pauses) live in one sorted list, and a reserve by a client watching
many tubes walks an index of tubes that have reservable jobs instead of its
whole watch list.

Durability: with a write-ahead log attached (:attr:`Engine.wal`, a
:class:`~.binlog.Binlog` or anything with its ``append_*`` methods), every
change of a job's durable state is logged *before* the engine changes its
memory, so before the caller can answer.  A :class:`~.binlog.BinlogError`
from the log leaves the job exactly as it was and propagates to the caller
(put, delete, release, bury), so the command fails and nothing acknowledged
is lost; kick stops at the first job it cannot log.  reserve-job of a
buried or delayed job is logged too (so that the job comes back ready) and
fails the same way.  Changes that no reply acknowledges (a TTR running out,
a connection closing) are logged on a best-effort basis: a failure only
loses counters.  Reserve and touch are not logged: a reserved job comes back
ready after a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Optional, Union

from sortedcontainers import SortedList

from .binlog import BinlogError
from .job import BURIED, DELAYED, READY, RESERVED, URGENT_THRESHOLD, Job, ready_key
from .swaplist import SwapList
from .tube import Tube

NS = 1_000_000_000
SAFETY_MARGIN = NS  # DEADLINE_SOON is sent this long before a TTR ends

# Outcomes of a reserve other than a job.
TIMED_OUT = "TIMED_OUT"
DEADLINE_SOON = "DEADLINE_SOON"
NOT_IGNORED = -1

# Timer kinds.
_T_DELAY, _T_TTR, _T_SOON, _T_TIMEOUT, _T_UNPAUSE = range(5)

# A client watching more tubes than this waits in one engine-wide list
# instead of registering with each tube, so blocking costs O(1) per tube
# change rather than O(watched tubes).
WIDE_WATCH = 32

Outcome = Union[Job, str]


class Client:
    """What the engine knows of one connection: its tubes, jobs and wait."""

    __slots__ = (
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
        "owner",
    )

    def __init__(self, default: Tube) -> None:
        self.use = default
        self.watch: SwapList[Tube] = SwapList()
        self.watch.append(default)
        self.reserved: dict[Job, None] = {}
        self.producer = False
        self.worker = False
        self.waiting = False
        self.wait_seq = 0
        self.wide = False
        self.timeout_timer: Optional[tuple] = None
        self.soon_timer: Optional[tuple] = None
        self.owner: Any = None  # the I/O layer's connection object


class Engine:
    """All queue state of one server."""

    def __init__(self, max_job_size: int = 65535) -> None:
        self.max_job_size = max_job_size
        self.wal: Any = None  # the write-ahead log, or None (no -b)
        self.jobs: dict[int, Job] = {}
        self.tubes: dict[bytes, Tube] = {}
        self.tube_list: SwapList[Tube] = SwapList()
        self.default = self._find_or_make(b"default")
        self.next_id = 1
        self.draining = False
        self.timers: SortedList = SortedList()
        self._timer_seq = 0
        # Index of tubes with a reservable head job: head ready_key -> tube.
        self._ready_index: SortedList = SortedList()
        self._index_tube: dict[int, Tube] = {}
        self.wide_waiters: OrderedDict[Client, None] = OrderedDict()
        self._wait_seq = 0
        self.completed: list[tuple[Client, Outcome]] = []
        # Counters shown by `stats`.
        self.cmd_counts: dict[str, int] = {}
        self.ready_ct = 0
        self.urgent_ct = 0
        self.reserved_ct = 0
        self.buried_ct = 0
        self.timeout_ct = 0
        self.total_jobs_ct = 0
        self.waiting_ct = 0
        self.conn_ct = 0
        self.total_conn_ct = 0
        self.producer_ct = 0
        self.worker_ct = 0

    # ------------------------------------------------------------------ clients

    def new_client(self) -> Client:
        client = Client(self.default)
        self.default.using_ct += 1
        self.default.watching_ct += 1
        self.conn_ct += 1
        self.total_conn_ct = (self.total_conn_ct + 1) & 0xFFFFFFFF
        return client

    def close_client(self, client: Client, now: int) -> None:
        """A connection went away: its reserved jobs become ready again."""
        if client.waiting:
            self._stop_waiting(client)
        # One job at a time, each offered to waiters as it comes back: the
        # reference's enqueue_job runs its dispatch for every job it queues.
        for job in list(client.reserved):
            self._unreserve(client, job)
            self._make_ready(job)
            self._log_quietly(job)
            self._dispatch(job.tube, now)
        for tube in list(client.watch):
            client.watch.remove(tube)
            tube.watching_ct -= 1
            self._maybe_free(tube)
        client.use.using_ct -= 1
        self._maybe_free(client.use)
        self.conn_ct -= 1
        if client.producer:
            self.producer_ct -= 1
        if client.worker:
            self.worker_ct -= 1

    def set_producer(self, client: Client) -> None:
        if not client.producer:
            client.producer = True
            self.producer_ct += 1

    def set_worker(self, client: Client) -> None:
        if not client.worker:
            client.worker = True
            self.worker_ct += 1

    def count(self, op: str) -> None:
        self.cmd_counts[op] = self.cmd_counts.get(op, 0) + 1

    # ------------------------------------------------------------------ tubes

    def _find_or_make(self, name: bytes) -> Tube:
        tube = self.tubes.get(name)
        if tube is None:
            tube = Tube(name)
            self.tubes[name] = tube
            self.tube_list.append(tube)
        return tube

    def _maybe_free(self, tube: Tube) -> None:
        """Drop a tube nothing refers to any more (its counters go with it)."""
        if (
            tube is self.default
            or tube.using_ct
            or tube.watching_ct
            or tube.job_count()
        ):
            return
        del self.tubes[tube.name]
        self.tube_list.remove(tube)
        if tube.pause_timer is not None:
            self.timers.remove(tube.pause_timer)
            tube.pause_timer = None

    def use(self, client: Client, name: bytes) -> Tube:
        tube = self._find_or_make(name)
        old = client.use
        old.using_ct -= 1
        client.use = tube
        tube.using_ct += 1
        if old is not tube:
            self._maybe_free(old)
        return tube

    def watch(self, client: Client, name: bytes) -> int:
        tube = self._find_or_make(name)
        if client.watch.append(tube):
            tube.watching_ct += 1
        return len(client.watch)

    def ignore(self, client: Client, name: bytes) -> int:
        """Returns the watch count, or NOT_IGNORED for the last watched tube."""
        tube = self.tubes.get(name)
        if tube is not None and tube in client.watch:
            if len(client.watch) < 2:
                return NOT_IGNORED
            client.watch.remove(tube)
            tube.watching_ct -= 1
            self._maybe_free(tube)
        return len(client.watch)

    def pause_tube(self, name: bytes, delay: int, now: int) -> bool:
        tube = self.tubes.get(name)
        if tube is None:
            return False
        tube.pause_ct += 1
        if tube.pause_timer is not None:
            self.timers.remove(tube.pause_timer)
            tube.pause_timer = None
        if delay == 0:
            # The reference stores a zero pause as 1 ns on a clock that has
            # moved on by the next command, so even a reserve pipelined in the
            # same packet finds the tube unpaused.  Our `now` is fixed for a
            # whole packet, so end the pause here and wake the waiters.
            tube.pause = 0
            tube.unpause_at = now
            self._reindex(tube)
            self._dispatch(tube, now)
            return True
        tube.pause = delay * NS
        tube.unpause_at = now + tube.pause
        tube.pause_timer = self._add_timer(tube.unpause_at, _T_UNPAUSE, tube)
        self._reindex(tube)
        return True

    def tube_waiting_count(self, tube: Tube) -> int:
        count = len(tube.waiters)
        for client in self.wide_waiters:
            if tube in client.watch:
                count += 1
        return count

    # ------------------------------------------------------------------ timers

    def _add_timer(self, when: int, kind: int, obj: Any) -> tuple:
        self._timer_seq += 1
        entry = (when, self._timer_seq, kind, obj)
        self.timers.add(entry)
        return entry

    def next_wakeup(self) -> Optional[int]:
        """When :meth:`tick` next has work to do, or None."""
        timers = self.timers
        return timers[0][0] if timers else None

    def tick(self, now: int) -> None:
        """Run every timer that is due: delays end, TTRs expire, waits time out."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            when, _seq, kind, obj = timers.pop(0)
            if kind == _T_DELAY:
                job: Job = obj
                job.timer = None
                job.tube.delayed.remove(job)
                self._make_ready(job)
                self._dispatch(job.tube, now)
            elif kind == _T_TTR:
                job = obj
                job.timer = None
                client = job.reserver
                self._unreserve(client, job)
                job.timeout_ct += 1
                self.timeout_ct += 1
                self._make_ready(job)
                self._log_quietly(job)
                if client.waiting:
                    self._schedule_soon(client)
                self._dispatch(job.tube, now)
            elif kind == _T_SOON:
                client = obj
                client.soon_timer = None
                self._stop_waiting(client)
                self.completed.append((client, DEADLINE_SOON))
            elif kind == _T_TIMEOUT:
                client = obj
                client.timeout_timer = None
                # As in the reference's conn_timeout: a held job inside the
                # safety margin turns the timeout into DEADLINE_SOON.
                soon = self._deadline_soon(client, now)
                self._stop_waiting(client)
                self.completed.append((client, DEADLINE_SOON if soon else TIMED_OUT))
            else:  # _T_UNPAUSE
                tube: Tube = obj
                tube.pause_timer = None
                tube.pause = 0
                self._reindex(tube)
                self._dispatch(tube, now)

    # ------------------------------------------------------------------ queues

    def _reindex(self, tube: Tube) -> None:
        """Keep the index of reservable tubes in step with ``tube``'s head."""
        ready = tube.ready
        new = ready_key(ready[0]) if ready and not tube.pause else None
        old = tube.index_key
        if new != old:
            if old is not None:
                self._ready_index.remove(old)
                del self._index_tube[old]
            if new is not None:
                self._ready_index.add(new)
                self._index_tube[new] = tube
            tube.index_key = new

    def _make_ready(self, job: Job) -> None:
        tube = job.tube
        job.state = READY
        tube.ready.add(job)
        self.ready_ct += 1
        if job.pri < URGENT_THRESHOLD:
            self.urgent_ct += 1
            tube.urgent_ct += 1
        if not tube.pause:
            # Only a new head changes the index: skip the lookup otherwise
            # (pipelined puts of one priority never move the head).
            key = (job.pri << 64) | job.id
            old = tube.index_key
            if old is None or key < old:
                if old is not None:
                    self._ready_index.remove(old)
                    del self._index_tube[old]
                self._ready_index.add(key)
                self._index_tube[key] = tube
                tube.index_key = key

    def _remove_ready(self, job: Job) -> None:
        tube = job.tube
        tube.ready.remove(job)
        self.ready_ct -= 1
        if job.pri < URGENT_THRESHOLD:
            self.urgent_ct -= 1
            tube.urgent_ct -= 1
        self._reindex(tube)

    def _make_delayed(self, job: Job, delay: int, now: int) -> None:
        job.state = DELAYED
        job.deadline = now + delay
        job.tube.delayed.add(job)
        job.timer = self._add_timer(job.deadline, _T_DELAY, job)

    def _remove_delayed(self, job: Job) -> None:
        job.tube.delayed.remove(job)
        if job.timer is not None:
            self.timers.remove(job.timer)
            job.timer = None

    def _make_buried(self, job: Job) -> None:
        job.state = BURIED
        job.reserver = None
        job.tube.buried[job] = None
        self.buried_ct += 1

    def _remove_buried(self, job: Job) -> None:
        del job.tube.buried[job]
        self.buried_ct -= 1

    def _reserve(self, client: Client, job: Job, now: int) -> None:
        job.state = RESERVED
        job.reserver = client
        job.reserve_ct += 1
        job.deadline = now + job.ttr * NS
        job.tube.reserved_ct += 1
        self.reserved_ct += 1
        client.reserved[job] = None
        job.timer = self._add_timer(job.deadline, _T_TTR, job)

    def _unreserve(self, client: Client, job: Job) -> None:
        del client.reserved[job]
        job.reserver = None
        job.tube.reserved_ct -= 1
        self.reserved_ct -= 1
        if job.timer is not None:
            self.timers.remove(job.timer)
            job.timer = None

    def _own_reserved(self, client: Client, job_id: int) -> Optional[Job]:
        job = self.jobs.get(job_id)
        if job is not None and job.state == RESERVED and job.reserver is client:
            return job
        return None

    # ------------------------------------------------------------------ waiting

    def _start_waiting(self, client: Client, timeout: int, now: int) -> None:
        client.waiting = True
        self._wait_seq += 1
        client.wait_seq = self._wait_seq
        self.waiting_ct += 1
        if len(client.watch) > WIDE_WATCH:
            client.wide = True
            self.wide_waiters[client] = None
        else:
            client.wide = False
            for tube in client.watch.items:
                tube.waiters[client] = None
        if timeout >= 0:
            client.timeout_timer = self._add_timer(now + timeout * NS, _T_TIMEOUT, client)
        self._schedule_soon(client)

    def _schedule_soon(self, client: Client) -> None:
        if client.soon_timer is not None:
            self.timers.remove(client.soon_timer)
            client.soon_timer = None
        if client.reserved:
            soonest = min(job.deadline for job in client.reserved)
            client.soon_timer = self._add_timer(soonest - SAFETY_MARGIN, _T_SOON, client)

    def _stop_waiting(self, client: Client) -> None:
        client.waiting = False
        self.waiting_ct -= 1
        if client.wide:
            del self.wide_waiters[client]
        else:
            for tube in client.watch.items:
                del tube.waiters[client]
        if client.timeout_timer is not None:
            self.timers.remove(client.timeout_timer)
            client.timeout_timer = None
        if client.soon_timer is not None:
            self.timers.remove(client.soon_timer)
            client.soon_timer = None

    def _oldest_waiter(self, tube: Tube) -> Optional[Client]:
        best: Optional[Client] = None
        for client in tube.waiters:
            best = client
            break
        for client in self.wide_waiters:
            if best is not None and client.wait_seq > best.wait_seq:
                break
            if tube in client.watch:
                best = client
                break
        return best

    def _dispatch(self, tube: Tube, now: int) -> None:
        """Hand ready jobs of ``tube`` to its waiters, oldest waiter first."""
        while tube.index_key is not None and (tube.waiters or self.wide_waiters):
            client = self._oldest_waiter(tube)
            if client is None:
                return
            job = tube.ready[0]
            self._stop_waiting(client)
            self._remove_ready(job)
            self._reserve(client, job, now)
            self.completed.append((client, job))

    def _best_ready_for(self, client: Client) -> Optional[Job]:
        watch = client.watch
        if len(watch) <= WIDE_WATCH:
            best: Optional[Tube] = None
            for tube in watch.items:
                key = tube.index_key
                if key is not None and (best is None or key < best.index_key):  # type: ignore[operator]
                    best = tube
            return best.ready[0] if best is not None else None
        index_tube = self._index_tube
        for key in self._ready_index:
            tube = index_tube[key]
            if tube in watch:
                return tube.ready[0]
        return None

    def _deadline_soon(self, client: Client, now: int) -> bool:
        if not client.reserved:
            return False
        soonest = min(job.deadline for job in client.reserved)
        return now >= soonest - SAFETY_MARGIN

    # ------------------------------------------------------------------ commands

    def allocate_id(self) -> int:
        """Ids are taken when a put header parses, so failed puts use one up."""
        job_id = self.next_id
        self.next_id += 1
        return job_id

    def put(
        self,
        client: Client,
        job_id: int,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        now: int,
    ) -> Job:
        """Store a job in the client's used tube.  ``delay``/``ttr`` in seconds."""
        tube = client.use
        job = Job(job_id, pri, delay, max(ttr, 1), body, tube, now)
        if delay:
            job.state = DELAYED
            job.deadline = now + delay * NS
        if self.wal is not None:
            self.wal.append_put(job)  # BinlogError: not stored (its id stays used)
        self.jobs[job_id] = job
        tube.total_jobs_ct += 1
        self.total_jobs_ct += 1
        if delay:
            self._make_delayed(job, delay * NS, now)
        else:
            self._make_ready(job)
            self._dispatch(tube, now)
        return job

    def reserve(self, client: Client, timeout: int, now: int) -> Optional[Outcome]:
        """A job, TIMED_OUT or DEADLINE_SOON now, or None: the client now waits.

        ``timeout`` is in seconds; a negative value waits for ever.
        """
        self.set_worker(client)
        if client.reserved and self._deadline_soon(client, now):
            if not any(tube.ready for tube in client.watch.items):
                return DEADLINE_SOON
        job = self._best_ready_for(client)
        if job is not None:
            self._remove_ready(job)
            self._reserve(client, job, now)
            return job
        if timeout == 0:
            # The reference answers a zero wait from its connection timer, which
            # checks the safety margin first: a held job inside it gives
            # DEADLINE_SOON even here (e.g. the only ready jobs are in a paused tube).
            return DEADLINE_SOON if self._deadline_soon(client, now) else TIMED_OUT
        self._start_waiting(client, timeout, now)
        return None

    def cancel_wait(self, client: Client, notify: bool = True) -> None:
        """The client half-closed while waiting: it gets TIMED_OUT.

        With ``notify=False`` the caller answers itself instead of through
        :attr:`completed` (so the reply keeps its place among later ones).
        """
        if client.waiting:
            self._stop_waiting(client)
            if notify:
                self.completed.append((client, TIMED_OUT))

    def reserve_job(self, client: Client, job_id: int, now: int) -> Optional[Job]:
        job = self.jobs.get(job_id)
        if job is None or job.state == RESERVED:
            return None
        if job.state != READY and self.wal is not None:
            # Logged so that the job comes back ready, not buried or delayed,
            # if the server stops while it is reserved.  BinlogError: the job
            # stays as it was (a reserve of a ready job needs no record).
            self.wal.append_update(job, RESERVED, bump="reserve")
        if job.state == READY:
            self._remove_ready(job)
        elif job.state == BURIED:
            self._remove_buried(job)
        else:
            self._remove_delayed(job)
        self.set_worker(client)
        self._reserve(client, job, now)
        return job

    def delete(self, client: Client, job_id: int) -> bool:
        job = self.jobs.get(job_id)
        if job is None:
            return False
        state = job.state
        if state == RESERVED and job.reserver is not client:
            return False
        if self.wal is not None:
            self.wal.append_delete(job)  # BinlogError: the job stays, unchanged
        if state == RESERVED:
            self._unreserve(client, job)
        elif state == READY:
            self._remove_ready(job)
        elif state == BURIED:
            self._remove_buried(job)
        else:
            self._remove_delayed(job)
        job.tube.delete_ct += 1
        del self.jobs[job_id]
        self._maybe_free(job.tube)
        return True

    def release(self, client: Client, job_id: int, pri: int, delay: int, now: int) -> bool:
        job = self._own_reserved(client, job_id)
        if job is None:
            return False
        if self.wal is not None:
            # Logged even with delay 0, so a new priority survives (#597).
            self.wal.append_update(
                job, DELAYED if delay else READY, pri, delay, now + delay * NS, bump="release"
            )
        job.release_ct += 1
        self._unreserve(client, job)
        job.pri = pri
        job.delay = delay
        if delay:
            self._make_delayed(job, delay * NS, now)
        else:
            self._make_ready(job)
            self._dispatch(job.tube, now)
        return True

    def bury(self, client: Client, job_id: int, pri: int) -> bool:
        job = self._own_reserved(client, job_id)
        if job is None:
            return False
        if self.wal is not None:
            self.wal.append_update(job, BURIED, pri, bump="bury")
        job.bury_ct += 1
        self._unreserve(client, job)
        job.pri = pri
        self._make_buried(job)
        return True

    def touch(self, client: Client, job_id: int, now: int) -> bool:
        job = self._own_reserved(client, job_id)
        if job is None:
            return False
        job.deadline = now + job.ttr * NS
        if job.timer is not None:
            self.timers.remove(job.timer)
        job.timer = self._add_timer(job.deadline, _T_TTR, job)
        return True

    def kick(self, client: Client, bound: int, now: int) -> int:
        """Kick buried jobs of the used tube, or if it has none, delayed ones."""
        tube = client.use
        kicked = 0
        if tube.buried:
            while kicked < bound and tube.buried:
                job = tube.first_buried()
                assert job is not None
                if not self._log_kick(job):
                    break
                self._remove_buried(job)
                self._make_ready(job)
                self._dispatch(tube, now)  # each kicked job goes to waiters at once, as in 1.12
                kicked += 1
        else:
            while kicked < bound and tube.delayed:
                job = tube.delayed[0]
                if not self._log_kick(job):
                    break
                self._remove_delayed(job)
                self._make_ready(job)
                self._dispatch(tube, now)
                kicked += 1
        return kicked

    def kick_job(self, job_id: int, now: int) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state not in (BURIED, DELAYED):
            return False
        if not self._log_kick(job):
            return False  # as the reference: NOT_FOUND when the log has no room
        if job.state == BURIED:
            self._remove_buried(job)
        else:
            self._remove_delayed(job)
        self._make_ready(job)
        self._dispatch(job.tube, now)
        return True

    def _log_kick(self, job: Job) -> bool:
        """Log a kick and count it; False (nothing changed) if the log failed."""
        if self.wal is not None:
            try:
                self.wal.append_update(job, READY, bump="kick")
            except BinlogError:
                return False
        job.kick_ct += 1
        return True

    def _log_quietly(self, job: Job) -> None:
        """Log a change no reply acknowledges; a failure only loses counters."""
        if self.wal is not None:
            try:
                self.wal.append_update(job)
            except BinlogError:
                pass

    # ------------------------------------------------------------------ durability

    def attach_wal(self, wal: Any) -> None:
        """Log every durable change to ``wal`` from now on (after :meth:`restore`)."""
        self.wal = wal
        wal.bind(self.jobs)

    def restore(self, records: Iterable[Any], next_id: int, now: int, wall_now: int) -> None:
        """Load jobs replayed from the log (:class:`~.binlog.JobRecord`).

        Record times are wall-clock ns; ``wall_now`` is the wall clock at
        ``now``.  Buried jobs stay buried (their ``buries`` unchanged, unlike
        beanstalkd 1.12), delayed ones keep their deadline (ready at once if
        it has passed), everything else is ready.  Records come in the order
        they were last changed, so buried jobs keep their kick order.  As in
        the reference, restored jobs do not count in ``total-jobs``.
        """
        for rec in records:
            tube = self._find_or_make(rec.tube)
            job = Job(rec.id, rec.pri, rec.delay // NS, rec.ttr // NS, rec.body, tube, rec.created_at - wall_now + now)
            job.reserve_ct = rec.reserve_ct
            job.timeout_ct = rec.timeout_ct
            job.release_ct = rec.release_ct
            job.bury_ct = rec.bury_ct
            job.kick_ct = rec.kick_ct
            job.file = rec.file
            job.wal_stamp = rec.stamp
            self.jobs[rec.id] = job
            if rec.state == BURIED:
                self._make_buried(job)
            elif rec.state == DELAYED and rec.deadline > wall_now:
                self._make_delayed(job, rec.deadline - wall_now, now)
            else:
                self._make_ready(job)
        if next_id > self.next_id:
            self.next_id = next_id

    def peek(self, job_id: int) -> Optional[Job]:
        return self.jobs.get(job_id)

    def peek_ready(self, client: Client) -> Optional[Job]:
        ready = client.use.ready
        return ready[0] if ready else None

    def peek_delayed(self, client: Client) -> Optional[Job]:
        delayed = client.use.delayed
        return delayed[0] if delayed else None

    def peek_buried(self, client: Client) -> Optional[Job]:
        return client.use.first_buried()

    def delayed_count(self) -> int:
        return sum(len(tube.delayed) for tube in self.tube_list.items)
