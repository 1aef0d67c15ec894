"""The trio layer: drivers per listener, the one timer, fsync and signals (beanstalkd's serv.c).

All protocol and queue logic lives in the sans-IO :class:`~.conn.Connection`
and the store; what a driver does with a connection lives in
:class:`~.dispatch.Dispatcher`.  This module only starts tasks and waits.

* Each listener is served by a driver, a sibling task in one nursery: the
  epoll driver (Linux, plain sockets, :mod:`.epoll_loop`) or the streams
  driver (:mod:`.streams`: portable, and the one TLS would wrap).  Either
  way a connection runs every complete command in its buffer and its
  replies go out with one send (measured: one send per command caps a trio
  server at ~0.67x beanstalkd on pipelined puts; batching lifts it to ~7x).
* One timer task sleeps until the store's earliest timer; drivers move its
  deadline when they add an earlier one.
* With ``-f N`` (N > 0) one task fsyncs in a worker thread when records are due.
"""

from __future__ import annotations

import signal
import socket
from typing import Callable, Optional, Sequence

import trio

from .dispatch import Dispatcher, now_ns
from .epoll_loop import EpollLoop
from .streams import listener_for, serve
from .wal import Durability


class Server:
    """Serves one dispatcher's store on its listeners until cancelled.

    ``epoll``: the epoll driver and its listeners (it may already have served
    clients during start-up); ``stream_listeners``: sockets for the streams driver.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        epoll: Optional[EpollLoop] = None,
        stream_listeners: Sequence[socket.socket] = (),
        stop_requested: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self.epoll = epoll
        self.stream_listeners = list(stream_listeners)
        # Whether SIGTERM/SIGINT already arrived, before the signal task ran.
        self._stop_requested = stop_requested or (lambda: False)
        self._timer_scope: Optional[trio.CancelScope] = None
        self._timer_at: Optional[int] = None
        self.stopped_by: Optional[int] = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        dispatcher = self.dispatcher
        dispatcher.open_spare()
        dispatcher.timers_changed = self._timers_changed
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery.cancel_scope)
                nursery.start_soon(self._timer_loop)
                durability = dispatcher.durability
                if durability.periodic:
                    nursery.start_soon(self._sync_loop, durability)
                if self.epoll is not None:
                    nursery.start_soon(self.epoll.run)
                for sock in self.stream_listeners:
                    nursery.start_soon(serve, listener_for(sock, dispatcher), dispatcher)
                task_status.started()
        finally:
            dispatcher.close_spare()

    async def _signals(self, cancel_scope: trio.CancelScope) -> None:
        wanted = [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT]
        with trio.open_signal_receiver(*wanted) as signals:
            if self._stop_requested():
                cancel_scope.cancel()
                return
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    self.store.drain()  # one way, as in beanstalkd
                    continue
                self.stopped_by = signum
                cancel_scope.cancel()
                return

    # ------------------------------------------------------------------ timers

    def _trio_deadline(self, when: Optional[int]) -> float:
        if when is None:
            return float("inf")
        # +1 us so we never wake a hair before the store's clock says it is due.
        return trio.current_time() + (when - now_ns() + 1000) / 1e9

    def _timers_changed(self) -> None:
        # Only ever move the timer earlier.  A later (or no) next timer leaves
        # the old deadline; the timer task then wakes once for nothing and
        # recomputes.  Measured: moving a trio deadline on every reserve and
        # delete (each adds or drops a TTR timer) cost several us per request.
        wake = self.store.next_wakeup()
        if wake is not None and (self._timer_at is None or wake < self._timer_at):
            self._timer_at = wake
            if self._timer_scope is not None:
                self._timer_scope.deadline = self._trio_deadline(wake)

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope() as scope:
                self._timer_scope = scope
                self._timer_at = self.store.next_wakeup()
                scope.deadline = self._trio_deadline(self._timer_at)
                await trio.sleep_forever()
            self._timer_scope = None
            self.dispatcher.tick(now_ns())

    async def _sync_loop(self, durability: Durability) -> None:
        """-f N: fsync at most every N ms, in a worker thread, off the reply path.

        Unlike beanstalkd, which only fsyncs when a later command writes, the
        tail of a burst is synced too once its interval has passed.
        """
        while True:
            deadline = durability.sync_deadline()
            if deadline is None:
                await trio.sleep(durability.interval_ns / 1e9)
                continue
            delay = (deadline - now_ns()) / 1e9
            if delay > 0:
                await trio.sleep(delay)
            if durability.sync_due(now_ns()) and not durability.syncing:
                await trio.to_thread.run_sync(durability.sync)
