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
* With ``--store``, the store's own tasks (its Redis connections, see
  redisstore/service.py) start first, in an outer nursery, and stop last:
  after the drivers closed their connections, the calls that give their
  clients' reserved jobs back are flushed to Redis before the end.
* With ``--http``, the operations plane (:mod:`.http`) is one more sibling,
  started once the drivers serve; its requests run between their passes.
* Under systemd (``NOTIFY_SOCKET``, :mod:`.notify`): ``READY=1`` once every
  driver has started, a task refreshing ``STATUS=``, a task sending
  ``WATCHDOG=1`` (from this trio loop, so a wedged loop stops pinging), and
  ``STOPPING=1`` on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import socket
import ssl
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

import trio

from .dispatch import Dispatcher, now_ns
from .epoll_loop import EpollLoop
from .notify import Notifier, status_line
from .streams import listener_for, serve
from .store import Later
from .wal import Durability

if TYPE_CHECKING:
    from .http.listener import HttpListener

# How often STATUS= is refreshed (sent only when its text changed).
STATUS_INTERVAL_S = 2.0


class StoreTasks(Protocol):
    """A network store's own tasks (its connections, inbox and ticks)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...

    async def flush(self) -> None:
        """Send what the drivers' last calls queued (bounded in time)."""


class Server:
    """Serves one dispatcher's store on its listeners until cancelled.

    ``epoll``: the epoll driver and its listeners (it may already have served
    clients during start-up); ``stream_listeners``: sockets for the streams
    driver; ``tls_listeners``: sockets it serves with TLS, each with its context.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        epoll: Optional[EpollLoop] = None,
        stream_listeners: Sequence[socket.socket] = (),
        tls_listeners: Sequence[tuple[socket.socket, ssl.SSLContext]] = (),
        tls_handshake_timeout: float = 10.0,
        stop_requested: Optional[Callable[[], bool]] = None,
        notifier: Optional[Notifier] = None,
        http: Optional["HttpListener"] = None,
        store_tasks: Optional[StoreTasks] = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self.epoll = epoll
        self.stream_listeners = list(stream_listeners)
        self.tls_listeners = list(tls_listeners)
        self.tls_handshake_timeout = tls_handshake_timeout
        # Whether SIGTERM/SIGINT already arrived, before the signal task ran.
        self._stop_requested = stop_requested or (lambda: False)
        self._timer_scope: Optional[trio.CancelScope] = None
        self._timer_at: Optional[int] = None
        self.stopped_by: Optional[int] = None
        self.notifier = notifier if notifier is not None else Notifier()
        self._status_sent: Optional[str] = None
        self.http = http
        self.store_tasks = store_tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tasks = self.store_tasks
        if tasks is None:
            await self._serve(task_status)
            return
        async with trio.open_nursery() as outer:
            await outer.start(tasks.run)  # connected and loaded before any client is served
            try:
                await self._serve(task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await tasks.flush()
                outer.cancel_scope.cancel()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
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
                for sock, context in self.tls_listeners:
                    nursery.start_soon(serve, listener_for(sock, dispatcher, context), dispatcher,
                                       self.tls_handshake_timeout)
                if self.http is not None:
                    # After the drivers, which already serve (the binlog was
                    # replayed before the server was made).
                    await nursery.start(self.http.run, dispatcher)
                notifier = self.notifier
                if notifier.enabled:
                    # The log is replayed and every listener's driver has
                    # started (the sockets listen since they were bound).
                    self._status_sent = self.status_text()
                    notifier.ready(self._status_sent)
                    nursery.start_soon(self._status_loop)
                    if notifier.watchdog_interval is not None:
                        nursery.start_soon(self._watchdog_loop, notifier.watchdog_interval)
                task_status.started()
        finally:
            dispatcher.close_spare()

    async def _signals(self, cancel_scope: trio.CancelScope) -> None:
        wanted = [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT]
        with trio.open_signal_receiver(*wanted) as signals:
            if self._stop_requested():
                self.notifier.stopping()
                cancel_scope.cancel()
                return
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    self.store.drain()  # one way, as in beanstalkd
                    self._send_status()
                    continue
                self.stopped_by = signum
                self.notifier.stopping()
                cancel_scope.cancel()
                return

    # ------------------------------------------------------------------ systemd

    def status_text(self) -> Optional[str]:
        """The STATUS= line, from a snapshot (which changes no counter)."""
        snapshot = self.store.snapshot(now_ns())
        if isinstance(snapshot, Later):
            return None  # a remote store's answer would come later: skip this round
        return status_line({stat.name: stat.value for stat in snapshot})

    def _send_status(self) -> None:
        if not self.notifier.enabled:
            return
        text = self.status_text()
        if text is not None and text != self._status_sent:
            self._status_sent = text
            self.notifier.status(text)

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(STATUS_INTERVAL_S)
            self._send_status()

    async def _watchdog_loop(self, interval: float) -> None:
        """WATCHDOG=1 every ``interval`` s.  A task of this trio run, beside the
        drivers: when a command wedges the loop (or the process), it stops."""
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

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
