"""Fixtures shared by tests/ and compat_tests/: real daemons on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import pytest

REFERENCE_BINARY = shutil.which("beanstalkd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Daemon:
    """A server process we started; stopped by PID when the test ends."""

    argv: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    unix_path: Optional[str] = None
    proc: Optional[subprocess.Popen] = None
    env: dict = field(default_factory=dict)

    @property
    def address(self):
        return self.unix_path if self.unix_path else (self.host, self.port)

    def start(self, timeout: float = 10.0) -> "Daemon":
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(f"{self.argv} exited {self.proc.returncode}: {err!r}")
            try:
                # Wait for an answer, not just a connection: the socket is
                # bound (and accepts into its backlog) before the server runs.
                with self.connect() as probe:
                    probe.sendall(b"\r\n")  # UNKNOWN_COMMAND: moves no counter
                    if probe.recv(64) == b"UNKNOWN_COMMAND\r\n":
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.argv} did not start listening")

    def connect(self) -> socket.socket:
        if self.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.unix_path)
        else:
            sock = socket.create_connection((self.host, self.port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(5)
        return sock

    def stop(self) -> Optional[int]:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def beanstalk_py_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", str(port), *extra]


def start_beanstalk_py(*extra: str) -> Daemon:
    port = free_port()
    return Daemon(beanstalk_py_argv(port, *extra), port=port).start()


def start_reference(*extra: str) -> Daemon:
    if REFERENCE_BINARY is None:
        pytest.skip("beanstalkd is not installed (apt-get install -y beanstalkd); .ci/run installs it")
    port = free_port()
    return Daemon([REFERENCE_BINARY, "-l", "127.0.0.1", "-p", str(port), *extra], port=port).start()


@pytest.fixture
def server() -> Iterator[Daemon]:
    """A fresh beanstalk-py daemon for one test."""
    daemon = start_beanstalk_py()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def reference() -> Iterator[Daemon]:
    """A fresh real beanstalkd for one test (skipped where it is not installed)."""
    daemon = start_reference()
    try:
        yield daemon
    finally:
        daemon.stop()
