"""What every I/O driver does with a connection, written once, with no trio in it.

Two drivers move bytes (:mod:`.epoll_loop` on Linux, :mod:`.streams` on trio
streams anywhere, and for TLS); the policy they share lives here, in
:class:`Dispatcher`: opening a :class:`~.conn.Connection` for an accepted
socket, feeding it what was read, resuming it once its output has drained,
delivering reserves that finished waiting, the ``-f 0`` gate before replies
leave, closing, logging, what an unexpected exception costs (one connection,
never the server) and what a failed ``accept`` costs.  It has no trio so
that start-up can serve clients before trio is imported (see startup.py).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any, Callable, Optional

from .conn import Connection, Waker
from .log import report_internal_error, warn
from .stats import ServerInfo
from .store import Store
from .wal import Durability

# Bytes asked of the kernel per read.  Measured (issue 4): 64 KiB lets one
# read take a whole pipelined batch of puts; smaller reads only add passes.
RECV_SIZE = 65536

# Accept errors that mean "out of descriptors or memory": refuse one and go on.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# Accept errors about one client that went away: try the next one.
_RETRY_ERRORS = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR}


# The clock every layer is given (the store takes ``now`` as an argument).
# The C function itself, not a wrapper: the loop reads it several times per request.
now_ns = time.monotonic_ns


def _nothing() -> None:
    pass


class Dispatcher:
    """One store served to many connections, whichever driver moves their bytes."""

    def __init__(
        self, store: Store[Any], info: ServerInfo, verbose: int = 0, max_connections: int = 0
    ) -> None:
        self.store = store
        self.info = info
        self.verbose = verbose
        self.max_connections = max_connections  # 0: no limit
        self.connections = 0  # admitted and not yet closed, over every listener
        self.refused = 0  # turned away by the limit since start
        self._refused_logged_at = -1e9
        # Called when the store's next timer may have moved earlier (the
        # server's timer task sets it once trio runs).
        self.timers_changed: Callable[[], None] = _nothing
        self._spare_fd: Optional[int] = None
        self._warned_at = -1e9

    @property
    def durability(self) -> Durability:
        return self.store.durability

    # ------------------------------------------------------------------ connections

    def admit(self) -> bool:
        """A socket was accepted: may it stay?  Past --max-connections it may
        not (the driver closes it at once); the refusal is counted and logged
        at most once a second.  An admitted socket holds its slot until
        :meth:`close` or :meth:`leave`."""
        if self.max_connections and self.connections >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._refused_logged_at >= 1.0:
                self._refused_logged_at = now
                warn(f"connection limit ({self.max_connections}) reached: refusing new clients "
                     f"({self.refused} refused since start)")
            return False
        self.connections += 1
        return True

    def leave(self) -> None:
        """An admitted socket went away before it became a connection (a failed TLS handshake)."""
        self.connections -= 1

    def open(self, fd: int, io: Waker) -> Connection[Any]:
        """A socket was accepted: its protocol state, woken through ``io``."""
        conn: Connection[Any] = Connection(self.store, self.info)
        conn.io = io
        if self.verbose:
            print(f"accept {fd}", flush=True)
        return conn

    def received(self, conn: Connection[Any], fd: int, data: bytes | bytearray, now: int) -> bool:
        """Bytes (or, when empty, the end of input) arrived: run what they complete.

        False after an unexpected exception: the driver closes the connection.
        """
        try:
            if data:
                conn.receive_data(data, now)
            else:
                conn.receive_eof(now)
        except Exception:  # a bug must cost one connection, not the server
            report_internal_error(fd)
            return False
        return True

    def output_sent(self, conn: Connection[Any], fd: int, now: int) -> bool:
        """All output went out: run commands the high-water mark held back.

        False after an unexpected exception: the driver closes the connection.
        """
        if conn.resumable:
            try:
                conn.process(now)
            except Exception:
                report_internal_error(fd)
                return False
            self.settle(now)
        return True

    def must_sync(self) -> bool:
        """``-f 0``: replies wait until the records they acknowledge are on disk."""
        return self.store.durability.must_sync()

    def close(self, conn: Connection[Any], fd: int, now: int) -> None:
        """The socket is going: reserved jobs go back, waiters may get them."""
        conn.close(now)
        self.connections -= 1
        if self.verbose:
            print(f"close {fd}", flush=True)
        self.settle(now)

    def settle(self, now: int) -> None:
        """Deliver finished reserves to their connections (which wake their driver)."""
        take = self.store.take_completed
        while True:
            batch = take()
            if not batch:
                break
            for owner, outcome in batch:
                owner.deliver(outcome, now)
        self.timers_changed()

    def tick(self, now: int) -> None:
        """Run the store's due timers and deliver what they finished."""
        self.store.tick(now)
        self.settle(now)

    # ------------------------------------------------------------------ accepts

    def open_spare(self) -> None:
        """Hold one descriptor in reserve, to refuse clients when none are left."""
        if self._spare_fd is None:
            self._spare_fd = _open_devnull()

    def close_spare(self) -> None:
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None

    def accept_failed(self, raw: socket.socket, exc: OSError) -> bool:
        """Handle a failed accept for every driver; True when out of resources.

        Out of descriptors: log (at most once a second), free the spare
        descriptor to accept the waiting client and close it at once, so it is
        refused instead of left hanging.  Transient errors are ignored; any
        other error is raised.
        """
        if exc.errno in _RETRY_ERRORS:
            return False
        if exc.errno not in _RESOURCE_ERRORS:
            raise exc
        now = time.monotonic()
        if now - self._warned_at > 1.0:
            warn(f"accept(): {os.strerror(exc.errno or 0)}; refusing new connections")
            self._warned_at = now
        if self._spare_fd is not None:
            self.close_spare()
            try:
                conn, _ = raw.accept()
                conn.close()
            except OSError:
                pass
            self.open_spare()
        return True


def _open_devnull() -> Optional[int]:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None
