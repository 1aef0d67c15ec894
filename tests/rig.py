"""The sans-IO test rig: a server with no sockets, driven by bytes and a clock.

``Rig`` is the one interface the unit tests (test_conn.py, test_counters.py)
use to reach the server: bytes in and bytes out per connection (``send``),
the clock (``tick``), a connection going away (``close``) and SIGUSR1
(``drain``).  Tests built on it do not touch the engine's API, which can change
underneath them; only this file follows it.

Each connection is driven the way server.py does: bytes in with
``receive_data(data, now)``, replies out with ``take_output()``, and finished
blocked reserves delivered from ``engine.take_completed()`` with ``conn.deliver``
(see ``settle``, a copy of ``Hub.settle`` without the I/O wake-ups).

Importable from every test file in tests/: pytest puts a test file's own
directory (tests/ has no __init__.py) on sys.path, as it does for
compat_tests/wire.py.
"""

from __future__ import annotations

import re

from beanstalk_py.conn import Connection
from beanstalk_py.engine import Engine
from beanstalk_py.protocol import Parser
from beanstalk_py.stats import ServerInfo

NS = 1_000_000_000  # the clock counts nanoseconds
T0 = 1_000 * NS  # the rig's start time: ``now`` of every call that gives none


def settle(engine: Engine, now: int) -> None:
    """Deliver finished reserves to their connections, as Dispatcher.settle does."""
    while True:
        batch = engine.take_completed()
        if not batch:
            return
        for owner, outcome in batch:
            owner.deliver(outcome, now)


class Rig:
    """One engine and any number of connections on it."""

    def __init__(self, max_job_size: int = 65535) -> None:
        self.engine = Engine(max_job_size=max_job_size)
        self.info = ServerInfo(started_at=T0, instance_id="0123456789abcdef")

    def conn(self) -> Connection:
        """A new client connection (accepted: it counts in current-connections)."""
        return Connection(self.engine, self.info)

    def send(self, conn: Connection, data: bytes, now: int = T0) -> bytes:
        """Bytes from the client; returns what the server has to send back to it."""
        conn.receive_data(data, now)
        settle(self.engine, now)
        return conn.take_output()

    def tick(self, now: int) -> None:
        """Run the timers due at ``now`` (delays, TTRs, timeouts, pauses)."""
        self.engine.tick(now)
        settle(self.engine, now)

    def close(self, conn: Connection, now: int = T0) -> None:
        """The client's socket closed (hang-up): what the server does then."""
        conn.close(now)
        settle(self.engine, now)

    def drain(self) -> None:
        """Drain mode, as on SIGUSR1."""
        self.engine.drain()


def yaml_of(reply: bytes) -> dict[str, str]:
    """Parse an ``OK <n>\\r\\n<yaml>\\r\\n`` reply into its key: value pairs."""
    match = re.fullmatch(rb"OK (\d+)\r\n(.*)\r\n", reply, re.S)
    assert match, reply
    body = match.group(2)
    assert int(match.group(1)) == len(body)
    assert body.startswith(b"---\n")
    fields = {}
    for line in body[4:].decode().splitlines():
        key, value = line.split(": ", 1)
        fields[key] = value
    return fields


def list_of(reply: bytes) -> list[str]:
    match = re.fullmatch(rb"OK (\d+)\r\n(.*)\r\n", reply, re.S)
    assert match, reply
    body = match.group(2)
    assert int(match.group(1)) == len(body)
    lines = body.decode().splitlines()
    assert lines[0] == "---"
    assert all(line.startswith("- ") for line in lines[1:])
    return [line[2:] for line in lines[1:]]


def drain(parser: Parser) -> list[tuple]:
    """Every request the parser has, taking put bodies as the connection does."""
    out: list[tuple] = []
    while (request := parser.next_request()) is not None:
        out.append(request)
        if request[0] == "put":
            body = parser.take_body(request[4])
            if body is not None:
                out.append(body)
    return out
