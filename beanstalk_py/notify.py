"""systemd's notify protocol (sd_notify(3)) without a dependency: one datagram.

The service manager passes ``NOTIFY_SOCKET`` (a unix datagram socket: a path,
or an abstract name written ``@name``) to a ``Type=notify`` service, and
``WATCHDOG_USEC`` (and maybe ``WATCHDOG_PID``) when ``WatchdogSec=`` is set.
A message is newline-separated ``KEY=VALUE`` lines:

* ``READY=1`` (with ``STATUS=``): the log is replayed and every listener
  accepts (:meth:`~.server.Server.run`);
* ``STATUS=...``: one line for ``systemctl status``, refreshed by the server;
* ``EXTEND_TIMEOUT_USEC=N``: start-up is still progressing (binlog replay),
  give it N more microseconds;
* ``WATCHDOG=1``: still alive; the server sends it from a task of its trio
  loop, so a wedged loop stops sending it;
* ``STOPPING=1``: SIGTERM or SIGINT arrived.

As sd_notify's ``unset_environment``, the variables are removed from
``os.environ`` once read, so child processes do not inherit them.  Where
``NOTIFY_SOCKET`` is unset nothing is ever sent.  A failed send never raises
into the server: the first failure is logged, later ones are not.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, MutableMapping, Optional

from .log import warn

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends notify messages to ``address`` (None: a no-op notifier).

    ``watchdog_usec``: the service's watchdog timeout, when the watchdog is
    meant for this process; pings are due every half of it
    (:attr:`watchdog_interval`).
    """

    def __init__(self, address: Optional[str] = None, watchdog_usec: Optional[int] = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self._sock: Optional[socket.socket] = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Optional[MutableMapping[str, str]] = None) -> "Notifier":
        """Read (and remove) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        values = {name: env.pop(name, None) for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"] or None
        if address is not None and not address.startswith(("/", "@")):
            # systemd 254+ may pass vsock:CID:PORT (for VMs); not for a daemon on the host.
            warn(f"NOTIFY_SOCKET={address!r} is neither a path nor an @abstract name; not notifying")
            address = None
        return cls(address, _watchdog_usec(values["WATCHDOG_USEC"], values["WATCHDOG_PID"]))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> Optional[float]:
        """Seconds between two ``WATCHDOG=1`` (half the timeout), or None."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one message; False if nothing went out."""
        if self.address is None or not lines:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the server: a full queue drops the message (the
                # next WATCHDOG/STATUS comes soon), like any other failure.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                warn(f"cannot notify the service manager at NOTIFY_SOCKET={self.address}: "
                     f"{exc.strerror or exc} (reported once)")
            return False
        return True

    def ready(self, status: Optional[str]) -> bool:
        return self.send("READY=1", f"STATUS={status or 'serving'}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def extend_timeout(self, seconds: float, status: Optional[str] = None) -> bool:
        lines = [f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1e6))}"]
        if status is not None:
            lines.append(f"STATUS={status}")
        return self.send(*lines)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(usec: Optional[str], pid: Optional[str]) -> Optional[int]:
    """As sd_watchdog_enabled: a positive WATCHDOG_USEC, for our pid if WATCHDOG_PID is set."""
    if not usec:
        return None
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return value if value > 0 else None


def status_line(stats: Mapping[str, object]) -> str:
    """The ``STATUS=`` text from a stats snapshot (name -> value)."""
    text = (
        f"jobs: {stats.get('current-jobs-ready', 0)} ready, {stats.get('current-jobs-reserved', 0)} reserved, "
        f"{stats.get('current-jobs-delayed', 0)} delayed, {stats.get('current-jobs-buried', 0)} buried; "
        f"{stats.get('current-connections', 0)} connections"
    )
    if stats.get("draining"):
        text += "; draining"
    return text
