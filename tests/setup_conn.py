"""Setting up queue state for the admin tests over a raw protocol connection."""

from __future__ import annotations

from conftest import Daemon


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
