"""What every I/O path shares, with no trio in it: one engine, its listeners,
delivering finished reserves, and the policy for failed accepts.

It has no trio so that start-up can serve clients before trio is imported
(see early.py); :class:`~.server.Server` extends it with the trio tasks.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Optional

from .conn import Connection
from .engine import Engine
from .options import warn
from .stats import ServerInfo

# Accept errors that mean "out of descriptors or memory": refuse one and go on.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# Accept errors about one client that went away: try the next one.
_RETRY_ERRORS = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR}


# The clock every layer is given (the engine takes ``now`` as an argument).
# The C function itself, not a wrapper: the loop reads it several times per request.
now_ns = time.monotonic_ns


def default_io_mode() -> str:
    """"epoll" on Linux (faster, see epoll_loop.py), else one task per connection.

    BEANSTALK_PY_IO=tasks forces the portable path (the test suite runs both).
    """
    wanted = os.environ.get("BEANSTALK_PY_IO", "")
    if wanted in ("epoll", "tasks"):
        return wanted
    return "epoll" if hasattr(select, "epoll") else "tasks"


class Hub:
    """One engine served on one or more listening sockets."""

    def __init__(
        self,
        engine: Engine,
        info: ServerInfo,
        listeners: list[socket.socket],
        verbose: int = 0,
    ) -> None:
        self.engine = engine
        self.info = info
        self.listeners = listeners
        self.verbose = verbose
        self._spare_fd: Optional[int] = None
        self._warned_at = -1e9

    def timers_changed(self) -> None:
        """The engine's next timer may have moved earlier (the trio server overrides)."""

    def settle(self, now: int) -> None:
        """Deliver finished reserves to their connections and wake their I/O."""
        engine = self.engine
        while engine.completed:
            batch = engine.completed
            engine.completed = []
            for client, outcome in batch:
                conn: Connection = client.owner
                conn.deliver(outcome, now)
                conn.io.wake()  # type: ignore[attr-defined]
        self.timers_changed()

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
        """Handle a failed accept for every I/O path; True when out of resources.

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
            warn(f"accept(): {os.strerror(exc.errno)}; refusing new connections")
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
