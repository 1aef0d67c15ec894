"""The trio layer: accepts connections, moves bytes, runs the one timer (beanstalkd's serv.c).

All protocol and queue logic lives in the sans-IO :class:`~.conn.Connection`
and :class:`~.engine.Engine`; this module only reads, writes and waits.

* On Linux one task serves every connection through epoll (epoll_loop.py);
  elsewhere, or with BEANSTALK_PY_IO=tasks, one task per connection.  Either
  way a connection runs every complete command in its buffer and its replies
  go out with one send (measured: one send per command caps a trio server at
  ~0.67x beanstalkd on pipelined puts; batching lifts the ceiling to ~7x).
* A connection blocked in a reserve waits in ``recv`` inside a cancel scope;
  when the engine hands it a job (or its wait ends) the scope is cancelled and
  the task sends the reply.  trio guarantees a cancelled ``recv`` read nothing.
* One timer task sleeps until the engine's earliest timer; other tasks move
  its deadline when they add an earlier one.
"""

from __future__ import annotations

import signal
import socket
from typing import Callable, Optional

import trio

from .conn import Connection
from .engine import Engine
from .epoll_loop import EpollLoop
from .hub import Hub, default_io_mode, now_ns
from .listen import set_nodelay
from .options import report_internal_error
from .stats import ServerInfo

RECV_SIZE = 65536


class _ConnIO:
    """I/O-side handle of one connection: how to wake its task."""

    __slots__ = ("scope",)

    def __init__(self) -> None:
        self.scope: Optional[trio.CancelScope] = None

    def wake(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


class Server(Hub):
    """Serves one engine on one or more listening sockets until cancelled.

    ``epoll_loop``: a loop that already served clients during start-up
    (early.py); it is taken over with its connections.
    """

    def __init__(
        self,
        engine: Engine,
        info: ServerInfo,
        listeners: list[socket.socket],
        verbose: int = 0,
        io_mode: Optional[str] = None,
        epoll_loop: Optional[EpollLoop] = None,
        stop_requested: Optional[Callable[[], bool]] = None,
    ) -> None:
        super().__init__(engine, info, listeners, verbose)
        # Whether SIGTERM/SIGINT already arrived, before the signal task ran.
        self._stop_requested = stop_requested or (lambda: False)
        self._timer_scope: Optional[trio.CancelScope] = None
        self._timer_at: Optional[int] = None
        self.stopped_by: Optional[int] = None
        self.io_mode = "epoll" if epoll_loop is not None else (io_mode or default_io_mode())
        self._epoll_loop = epoll_loop

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.open_spare()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery.cancel_scope)
                nursery.start_soon(self._timer_loop)
                wal = self.engine.wal
                if wal is not None and wal.fsync and not wal.fsync_always:
                    nursery.start_soon(self._sync_loop, wal)
                if self.io_mode == "epoll":
                    loop = self._epoll_loop or EpollLoop(self, now_ns)
                    loop.hub = self
                    nursery.start_soon(loop.run)
                else:
                    for sock in self.listeners:
                        listener = trio.socket.from_stdlib_socket(sock)
                        nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            self.close_spare()

    async def _signals(self, cancel_scope: trio.CancelScope) -> None:
        wanted = [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT]
        with trio.open_signal_receiver(*wanted) as signals:
            if self._stop_requested():
                cancel_scope.cancel()
                return
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    self.engine.draining = True  # one way, as in beanstalkd
                    continue
                self.stopped_by = signum
                cancel_scope.cancel()
                return

    # ------------------------------------------------------------------ timers

    def _trio_deadline(self, when: Optional[int]) -> float:
        if when is None:
            return float("inf")
        # +1 us so we never wake a hair before the engine's clock says it is due.
        return trio.current_time() + (when - now_ns() + 1000) / 1e9

    def timers_changed(self) -> None:
        # Only ever move the timer earlier.  A later (or no) next timer leaves
        # the old deadline; the timer task then wakes once for nothing and
        # recomputes.  Measured: moving a trio deadline on every reserve and
        # delete (each adds or drops a TTR timer) cost several us per request.
        wake = self.engine.next_wakeup()
        if wake is not None and (self._timer_at is None or wake < self._timer_at):
            self._timer_at = wake
            if self._timer_scope is not None:
                self._timer_scope.deadline = self._trio_deadline(wake)

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope() as scope:
                self._timer_scope = scope
                self._timer_at = self.engine.next_wakeup()
                scope.deadline = self._trio_deadline(self._timer_at)
                await trio.sleep_forever()
            self._timer_scope = None
            now = now_ns()
            self.engine.tick(now)
            self.settle(now)

    async def _sync_loop(self, wal) -> None:
        """-f N: fsync at most every N ms, in a worker thread, off the reply path.

        Unlike beanstalkd, which only fsyncs when a later command writes, the
        tail of a burst is synced too once its interval has passed.
        """
        while True:
            deadline = wal.sync_deadline()
            if deadline is None:
                await trio.sleep(wal.fsync_ns / 1e9)
                continue
            delay = (deadline - now_ns()) / 1e9
            if delay > 0:
                await trio.sleep(delay)
            if wal.sync_due(now_ns()) and not wal.syncing:
                await trio.to_thread.run_sync(wal.sync)

    # ------------------------------------------------------------------ sockets

    async def _accept_loop(self, listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                sock, _addr = await listener.accept()
            except OSError as exc:
                if self.accept_failed(listener._sock, exc):  # type: ignore[attr-defined]
                    await trio.sleep(0.05)  # descriptors may free up meanwhile
                continue
            set_nodelay(sock)
            nursery.start_soon(self._serve_connection, sock)

    async def _serve_connection(self, sock: trio.socket.SocketType) -> None:
        fd = sock.fileno()
        if self.verbose:
            print(f"accept {fd}", flush=True)
        engine = self.engine
        conn = Connection(engine, self.info)
        io = _ConnIO()
        conn.io = io
        now = now_ns()
        try:
            while True:
                if conn.out:
                    wal = engine.wal
                    if wal is not None and wal.fsync_always and wal.written > wal.durable:
                        # -f 0: acknowledge only what is on disk.
                        await trio.to_thread.run_sync(wal.sync)
                    data = conn.take_output()
                    view = memoryview(data)
                    while view:
                        sent = await sock.send(view)
                        view = view[sent:]
                    if conn.held_back and not conn.out and not conn.blocked and not conn.closing:
                        # Resume commands held back by the output high-water mark.
                        now = now_ns()
                        conn.process(now)
                        self.settle(now)
                    continue
                if conn.closing:
                    break
                if conn.blocked:
                    with trio.CancelScope() as scope:
                        io.scope = scope
                        if conn.wants_input:
                            data = await sock.recv(RECV_SIZE)
                        else:
                            await trio.sleep_forever()
                    io.scope = None
                    if scope.cancelled_caught:
                        continue
                else:
                    data = await sock.recv(RECV_SIZE)
                now = now_ns()
                engine.tick(now)
                if data:
                    conn.receive_data(data, now)
                else:
                    conn.receive_eof(now)
                self.settle(now)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:  # a bug must cost one connection, not the server
            report_internal_error(fd)
        finally:
            io.scope = None
            now = now_ns()
            conn.close(now)
            self.settle(now)
            sock.close()
            if self.verbose:
                print(f"close {fd}", flush=True)

