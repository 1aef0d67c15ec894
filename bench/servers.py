"""Start and stop the servers under test: beanstalk-py and the real beanstalkd.

Each run gets a fresh server on a free loopback port, pinned to CPU 0 when the
machine has more than one core (the load runs on the others), and is stopped
by its PID when the run ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

SERVER_CPU = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pin_server() -> None:
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {SERVER_CPU})


def load_cpus() -> set[int]:
    """CPUs for the load generator: every CPU but the server's, when there are several."""
    cpus = set(range(os.cpu_count() or 1))
    if len(cpus) > 1:
        cpus.discard(SERVER_CPU)
    return cpus


@dataclass
class Server:
    """One server process started for one run."""

    name: str
    argv: list[str]
    port: int
    proc: Optional[subprocess.Popen] = None
    tmpdir: Optional[str] = None
    extra: list[str] = field(default_factory=list)

    def start(self, timeout: float = 10.0) -> "Server":
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_pin_server
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"\r\n")
                    if probe.recv(64) == b"UNKNOWN_COMMAND\r\n":
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def beanstalk_py(binlog: bool = False) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", str(port)]
    server = Server("beanstalk-py", argv, port)
    if binlog:
        server.tmpdir = tempfile.mkdtemp(prefix="bench-bspy-")
        argv += ["-b", server.tmpdir]
    return server


def beanstalkd(binlog: bool = False) -> Server:
    binary = shutil.which("beanstalkd")
    if binary is None:
        raise RuntimeError("beanstalkd is not installed (apt-get install -y beanstalkd)")
    port = free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port)]
    server = Server("beanstalkd", argv, port)
    if binlog:
        server.tmpdir = tempfile.mkdtemp(prefix="bench-bsd-")
        argv += ["-b", server.tmpdir]
    return server
