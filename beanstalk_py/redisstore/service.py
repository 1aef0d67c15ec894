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

A front end that finds its lease gone (it was stopped or cut off for longer
than the lease: SIGSTOP, a swap storm, a partition) does not go on serving:
its clients' jobs were given to others and Redis refuses its sessions'
reserves.  It raises :class:`LeaseLost`, which ends the server with exit
status 2 and a message saying so (as a lost Redis connection does), so that
a supervisor (systemd ``Restart=on-failure``) starts it afresh under a new
front-end id.  Its clients see their connections close, as for a crash, and
reconnect; a job they were working on may be reserved by another client by
then (at-least-once, as after a TTR), and their delete of it is NOT_FOUND.

If Redis cannot be reached or loaded at start, or the connection is lost
later, :class:`~.resp.RedisError` ends the server (main.py says why and
exits): reconnecting, and Sentinel, are later steps of issue 11.
"""

from __future__ import annotations

from typing import Callable

import trio

from .address import StoreAddress
from .resp import RedisError, Reply, TrioRedis, is_error
from .store import COUNT_FLUSH_NS, INBOX_BATCH, WAIT_POLL_NS, RedisStore

# How long start-up waits for Redis to accept and load the library.
CONNECT_TIMEOUT_S = 10.0
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
    """This front end's lease ran out and its state was reclaimed: exit."""


class StoreService:
    """The Redis connections and periodic work of one front end."""

    def __init__(self, store: RedisStore, command: TrioRedis, address: StoreAddress,
                 settle: Callable[[], None]) -> None:
        self.store = store
        self.command = command
        self.inbox = TrioRedis(address.host, address.port, address.db)
        self.address = address
        self.settle = settle  # main.py sets it once the dispatcher exists
        self._someone_waits = trio.Event()
        self._alive = False
        # For the tests and the report: how often each task ran.
        self.ticks = 0
        self.inbox_pops = 0
        self.lease_renewals = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, load the library, then serve until cancelled."""
        command, store = self.command, self.store
        with trio.move_on_after(CONNECT_TIMEOUT_S) as connecting:
            await command.connect()
            await self.inbox.connect()
        if connecting.cancelled_caught:
            raise RedisError(f"redis at {self.address} did not accept a connection within {CONNECT_TIMEOUT_S:g} s")
        command.on_replies = lambda: self.settle()
        store.on_wait = self._wake_ticks
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(command.run)
                nursery.start_soon(self.inbox.run)
                loaded = trio.Event()
                failure: list[str] = []

                def started(error: object) -> None:
                    if error is not None:
                        failure.append(str(error))
                    loaded.set()

                store.start(started)
                with trio.move_on_after(CONNECT_TIMEOUT_S):
                    await loaded.wait()
                if failure or not loaded.is_set():
                    why = failure[0] if failure else f"no answer within {CONNECT_TIMEOUT_S:g} s"
                    raise RedisError(f"redis at {self.address} could not load the store's functions "
                                     f"(Redis 7.0 or later is needed): {why}")
                # Hold a lease before serving anyone.
                if await self._lease(first=True) != 1:
                    raise LeaseLost(f"redis at {self.address} refused this front end's lease")
                self._alive = True
                nursery.start_soon(self._lease_loop)
                nursery.start_soon(self._inbox_loop)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._count_loop)
                task_status.started()
        except OSError as exc:
            raise RedisError(f"lost the connection to redis at {self.address}: {exc}") from None
        finally:
            self._alive = False
            command.close()
            self.inbox.close()

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
                raise RedisError(f"inbox: {reply}")
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
                    raise RedisError(f"lease: {reply}")
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
