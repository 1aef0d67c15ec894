"""The trio side of store mode: one front end's Redis connections, as tasks.

:class:`StoreService` runs in the server's nursery, started before the
drivers (``Server(store_tasks=...)``), and owns three things:

* the **command connection** (:class:`~.resp.TrioRedis`): every FCALL the
  connections of one pass queued leaves in one write; after each chunk of
  replies the dispatcher delivers the answers that completed, which wakes
  the client connections they belong to (conn.py ``awaiting``);
* the **inbox connection**: a blocking pop (``BLMPOP``) on this front end's
  inbox list, so a job that a put on another front end hands to one of our
  waiters arrives at once, with no polling;
* the **tick task**: while a session of this front end waits in a reserve,
  ``bs_tick`` runs the timers due by the Redis clock (one clock for every
  front end) at the time Redis says the next one is due, and at least every
  :data:`WAIT_POLL_S`, since another front end may add an earlier timer
  meanwhile (a delayed put, a pause).  With nobody waiting there is no tick:
  every Function runs the timers already due before it does anything else.
* the **count task**: command counts (``cmd-*``) are sent with the batches
  at most every 100 ms; this sends what an idle front end still holds;
* the **lease task**: the front end's lease in Redis (``bs_lease``), taken
  before serving and renewed every :data:`LEASE_RENEW_S`.  A front end that
  stops renewing (SIGKILL, a crash, a pause) is reclaimed after
  :data:`LEASE_S` by the next renewal or tick of any front end: its
  sessions' reserved jobs go back to ready in reserve order (not counted as
  timeouts or releases, as a closed connection's), its waiters are dropped,
  its use/watch counts let go, its inbox deleted (functions.lua).

Losing Redis, or the lease, is survived in-process (:meth:`StoreService.run`):
the store gives up what Redis held for this front end's sessions
(:meth:`~.store.RedisStore.reset`: every client is hung up, as after a crash
of this front end, and reconnects; jobs they held come back when the old
identity's lease runs out), takes a new front-end identity, and reconnects:
to the same address, or with ``redis+sentinel://`` to whichever primary the
Sentinels name now (a failover).  The listening sockets stay open meanwhile;
clients that connect wait for their first reply until Redis is back.  Only
if it is not back within :data:`RECONNECT_S` (or cannot be reached within
:data:`CONNECT_TIMEOUT_S` at start) does the front end exit (status 2), so a
supervisor restarts it.  A front end whose lease ran out (SIGSTOP, a swap
storm, a partition longer than :data:`LEASE_S`) goes the same way: its
clients' jobs were given to others meanwhile, so it hangs them up and starts
afresh rather than serving them stale state.

``--durability replica:N:MS``: both connections end every write with
``WAIT N MS`` and hold the replies until N replicas confirm (resp.py), so a
client is told INSERTED, DELETED... only for a change a failover keeps.
"""

from __future__ import annotations

from typing import Callable

import trio

from ..log import warn
from .address import StoreAddress
from .resp import RedisError, RedisLost, Reply, TrioRedis, first_redis_error, is_error, sentinel_primary
from .store import COUNT_FLUSH_NS, INBOX_BATCH, WAIT_POLL_NS, RedisStore

# How long start-up waits for Redis to accept and load the library (Redis
# and the front ends may start together: it is tried again meanwhile).
CONNECT_TIMEOUT_S = 10.0
# After Redis was lost, how long the front end keeps trying before it exits.
# Above Sentinel's whole failover with its default down-after-milliseconds
# (30 s) plus the ~2 s the failover itself took here (design/scale-out.md).
RECONNECT_S = 60.0
# Between two attempts: soon enough to catch a 2 s failover, not a busy loop;
# while the front end keeps failing, it says so at most every LOG_EVERY_S.
RETRY_S = 0.2
LOG_EVERY_S = 10.0
# Timers another front end may have added are noticed this often while one
# of our sessions waits (a design bound: the reply may be up to this late;
# 50 bs_tick calls a second per front end with waiters).
WAIT_POLL_S = WAIT_POLL_NS / 1e9
# A front end's lease: how long Redis keeps its state after its last renewal.
# 5 s (the design's figure): 5 missed renewals, far above a renewal's round
# trip (~0.1 ms loopback) or a GC pause, yet short next to a TTR (beanstalkd's
# default is 120 s), so a crash costs its clients' jobs ~5-6 s.
LEASE_S = 5.0
LEASE_US = int(LEASE_S * 1_000_000)
# Renewed this often: one bs_lease a second per front end.  Every renewal
# (and every tick) also reclaims expired front ends, so a dead front end's
# jobs are back 4-6 s after its death: measured 4.7 s after a SIGKILL
# (test_redis_daemon.py), 4 s at best (renewed just before) .. LEASE_S + 1 s.
LEASE_RENEW_S = 1.0
# At shutdown, how long the last calls (the sessions' closes, which give
# their reserved jobs back) may take to reach Redis.
FLUSH_TIMEOUT_S = 2.0


class LeaseLost(RedisError):
    """This front end's lease ran out and its state was reclaimed: start afresh."""


class StoreService:
    """The Redis connections and periodic work of one front end."""

    def __init__(self, store: RedisStore, command: TrioRedis, address: StoreAddress,
                 settle: Callable[[], None], durability: tuple[int, int] = (0, 0)) -> None:
        self.store = store
        self.command = command
        replicas, wait_ms = durability
        # The inbox's pops are writes too: with --durability replica they wait alike.
        self.inbox = TrioRedis(address.host, address.port, credentials=command.credentials,
                               replicas=replicas, wait_ms=wait_ms or 100)
        self.address = address
        self.settle = settle  # main.py sets it once the dispatcher exists
        self._someone_waits = trio.Event()
        self._alive = False
        self._set_up = False  # this attempt queued its set-up calls (a failure then resets)
        # For the tests and the report: how often each task ran.
        self.ticks = 0
        self.inbox_pops = 0
        self.lease_renewals = 0
        self.connections = 0  # to Redis, the first included

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, load the library, take a lease, then serve until
        cancelled; after a loss, hang up, reconnect and serve again."""
        started: list[bool] = []

        def ready() -> None:
            if not started:
                started.append(True)
                task_status.started()

        give_up_at = trio.current_time() + CONNECT_TIMEOUT_S
        logged_at = -1e9
        store = self.store
        while True:
            self._set_up = False
            try:
                await self._connected(ready)
                raise AssertionError("_connected only returns by raising")  # pragma: no cover
            except RedisError as exc:
                failure: RedisError = exc
            finally:
                served, self._alive = self._alive, False
                self.command.close()
                self.inbox.close()
                self.inbox.pipe.fail_all(RedisLost("reconnecting"))  # its one caller, the inbox task, is gone
            if self._lost_for_good(failure):
                raise failure
            now = trio.current_time()
            if served or self._set_up:
                # Replies it owed are lost with the connection: give up this
                # identity and everyone on it (reset hangs them up).
                hung_up = store.reset()
            if served:
                give_up_at = now + RECONNECT_S
                logged_at = now
                warn(f"store: {failure}; hung up {hung_up} client(s) (jobs they held come back within "
                     f"{LEASE_S:g} s); reconnecting for up to {RECONNECT_S:g} s")
            elif now >= give_up_at:
                waited = RECONNECT_S if started else CONNECT_TIMEOUT_S
                raise RedisError(f"{failure} (gave up after trying for {waited:g} s)")
            elif now - logged_at >= LOG_EVERY_S:
                logged_at = now
                warn(f"store: {failure}; trying again")
            await trio.sleep(RETRY_S)

    @staticmethod
    def _lost_for_good(failure: RedisError) -> bool:
        """Errors another attempt will not cure (a refused AUTH, a Redis
        without Functions): they end the front end with their message."""
        return not isinstance(failure, (RedisLost, LeaseLost))

    async def _connected(self, ready: Callable[[], None]) -> None:
        """One connection's life: find the primary, connect both
        connections, load, take a lease, serve; raises when it ends."""
        command, store, address = self.command, self.store, self.address
        with trio.move_on_after(CONNECT_TIMEOUT_S) as connecting:
            host, port = address.host, address.port
            if address.sentinel:
                host, port = await sentinel_primary(address.sentinels, address.master, command.credentials)
            await command.connect(host, port)
            await self.inbox.connect(host, port)
        if connecting.cancelled_caught:
            raise RedisLost(f"redis at {address} did not answer within {CONNECT_TIMEOUT_S:g} s")
        self.connections += 1
        command.on_replies = lambda: self.settle()
        store.on_wait = self._wake_ticks
        loaded = trio.Event()
        failure: list[str] = []
        leased: list[Reply] = []

        def set_up(error: object) -> None:
            if error is not None:
                failure.append(str(error))

        def took_lease(reply: Reply) -> None:
            leased.append(reply)
            loaded.set()

        # Ahead of anything clients asked while Redis was away.
        command.pipe.call_first([*store.setup_calls(set_up), store.lease_call(LEASE_US, True, took_lease)])
        self._set_up = True
        command.wake()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(command.run)
                nursery.start_soon(self.inbox.run)
                with trio.move_on_after(CONNECT_TIMEOUT_S):
                    await loaded.wait()
                if not loaded.is_set():
                    raise RedisLost(f"redis at {host}:{port} did not answer within {CONNECT_TIMEOUT_S:g} s")
                if failure:
                    raise RedisError(f"redis at {host}:{port} could not load the store's functions "
                                     f"(Redis 7.0 or later is needed): {failure[0]}")
                if leased[0] != 1:
                    raise LeaseLost(f"redis at {host}:{port} refused this front end's lease: {leased[0]!r}")
                self._alive = True
                nursery.start_soon(self._lease_loop)
                nursery.start_soon(self._inbox_loop)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._count_loop)
                if self.connections > 1:
                    warn(f"store: connected to redis at {host}:{port} (front end {store.fe}, "
                         f"stats id {store.epoch})")
                ready()
        except OSError as exc:
            raise RedisLost(f"lost the connection to redis at {host}:{port}: {exc}") from None
        except BaseExceptionGroup as group:
            lost = first_redis_error(group)  # whichever task saw the loss first says why
            if lost is None:
                raise
            raise lost from None

    async def flush(self) -> None:
        """Wait (bounded) until every queued call was answered: at shutdown,
        after the drivers closed their connections, so that their reserved
        jobs are given back now rather than at their TTR."""
        pipe = self.command.pipe
        with trio.move_on_after(FLUSH_TIMEOUT_S):
            while self._alive and pipe.in_flight:
                self.command.wake()
                await trio.sleep(0.001)

    # ------------------------------------------------------------------ tasks

    async def _inbox_loop(self) -> None:
        """Deliveries to our waiters, as Redis pushes them (BLMPOP needs Redis 7.0)."""
        key = self.store.inbox_key
        while True:
            reply = await self.inbox.execute(b"BLMPOP", 0, 1, key, b"LEFT", b"COUNT", INBOX_BATCH)
            if isinstance(reply, RedisError) or is_error(reply):
                raise RedisLost(f"inbox: {reply}")
            self.inbox_pops += 1
            if reply:
                assert isinstance(reply, list)
                self.store.take_deliveries(reply[1])
                self.settle()

    async def _count_loop(self) -> None:
        while True:
            await trio.sleep(COUNT_FLUSH_NS / 1e9)
            self.store.flush_counts()

    async def _lease_loop(self) -> None:
        """Renew the lease every second; exit (LeaseLost) once it is gone."""
        renewed = trio.current_time()  # monotonic: it counts a SIGSTOP too
        while True:
            await trio.sleep(LEASE_RENEW_S)
            # Asked at a time by our clock: Redis's can only be later, so
            # past LEASE_S since the last renewal was sent it is certainly
            # lost; say so without waiting for Redis to confirm.
            asked = trio.current_time()
            if asked - renewed >= LEASE_S:
                raise LeaseLost(self._lost_message(asked - renewed))
            reply = await self._lease(first=False)
            if reply != 1:
                if isinstance(reply, RedisError) or is_error(reply):
                    raise RedisLost(f"lease: {reply}")
                raise LeaseLost(self._lost_message(trio.current_time() - renewed))
            self.lease_renewals += 1
            renewed = asked

    def _lost_message(self, since: float) -> str:
        return (f"front end {self.store.fe} lost its lease in redis at {self.address} "
                f"(last renewed {since:.1f} s ago, lease {LEASE_S:g} s: was the process stopped?); "
                "its clients' jobs were given back to the other front ends; exiting so that it "
                "restarts clean")

    async def _lease(self, first: bool) -> Reply:
        return await self._call(lambda answered: self.store.request_lease(LEASE_US, first, answered))

    def _wake_ticks(self) -> None:
        self._someone_waits.set()

    async def _tick_loop(self) -> None:
        store = self.store
        while True:
            if not store.waiting_ct:
                self._someone_waits = trio.Event()
                await self._someone_waits.wait()
            reply = await self._tick()
            self.ticks += 1
            delay = WAIT_POLL_S
            if isinstance(reply, list) and len(reply) == 2 and reply[1] >= 0:
                redis_now, due = reply
                delay = min(delay, max(0, due - redis_now) / 1e6)
            await trio.sleep(delay)

    async def _tick(self) -> Reply:
        return await self._call(self.store.request_tick)

    async def _call(self, request: Callable[[Callable[[Reply], None]], None]) -> Reply:
        """Queue one store call with the batches and wait for its reply."""
        done = trio.Event()
        box: list[Reply] = []

        def answered(reply: Reply) -> None:
            box.append(reply)
            done.set()

        request(answered)
        await done.wait()
        return box[0]
