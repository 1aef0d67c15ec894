"""What the admin tests share: the two servers to run against, and a raw
protocol connection that sets up queue state."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from conftest import Daemon, start_beanstalk_py, start_reference

STARTERS: dict[str, Callable[..., Daemon]] = {"beanstalk-py": start_beanstalk_py, "beanstalkd": start_reference}


@pytest.fixture(params=list(STARTERS))
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    started = STARTERS[request.param]()
    try:
        yield started
    finally:
        started.stop()


class Conn:
    """A raw protocol connection for setting up state: each command's reply is checked."""

    def __init__(self, daemon: Daemon) -> None:
        self.sock = daemon.connect()
        self.buf = b""

    def ask(self, data: bytes, expect: bytes) -> None:
        self.sock.sendall(data)
        while len(self.buf) < len(expect):
            chunk = self.sock.recv(65536)
            assert chunk, "server closed"
            self.buf += chunk
        got, self.buf = self.buf[: len(expect)], self.buf[len(expect):]
        assert got == expect, (data, got)

    def close(self) -> None:
        """quit, read to EOF: the server has counted the connection out when this returns."""
        self.sock.sendall(b"quit\r\n")
        while self.sock.recv(65536):
            pass
        self.sock.close()
