"""The servers under test: beanstalk-py and the real beanstalkd, one fresh process per run.

Each server gets a free loopback port and, when the machine has more than one
CPU, is pinned to the first CPU this process may use while the load runs on
the others.  It is stopped by its PID (SIGTERM, then SIGKILL) when the run
ends, and its temporary binlog directory is removed.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent


class Unsupported(RuntimeError):
    """The server refused the command line (for instance a flag it does not implement)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_split(pin: bool = True) -> tuple[Optional[set[int]], Optional[set[int]]]:
    """(server CPUs, load CPUs): the first usable CPU for the server, the rest for the load."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def _child_setup(cpus: Optional[set[int]]):
    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:  # room for 2,000+ connections
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return setup


def proc_cpu_s(pid: int) -> Optional[float]:
    """utime + stime of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> Optional[int]:
    """VmRSS of a process, from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes(pid: int) -> Optional[int]:
    """VmHWM (the peak resident set) of a process, from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when a server on ``port`` answers (an empty line gets UNKNOWN_COMMAND)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as probe:
            probe.sendall(b"\r\n")
            return probe.recv(64).startswith(b"UNKNOWN_COMMAND")
    except OSError:
        return False


class Server:
    """One server process started for one run."""

    def __init__(self, name: str, argv: list[str], binlog: bool = False,
                 binlog_base: Optional[str] = None, cpus: Optional[set[int]] = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.name = name
        self.port = free_port()
        # {http_port}: a second port, for --http (the --scrape workloads).
        self.http_port = free_port() if any("{http_port}" in a for a in argv) else None
        self.argv = [a.replace("{port}", str(self.port)).replace("{http_port}", str(self.http_port))
                     for a in argv] + list(extra)
        self.cpus = cpus
        self.binlog_dir: Optional[str] = None
        if binlog:
            self.binlog_dir = tempfile.mkdtemp(prefix=f"bench-{name}-binlog-", dir=binlog_base)
            self.argv += ["-b", self.binlog_dir]
        self.proc: Optional[subprocess.Popen] = None
        self._log = tempfile.TemporaryFile()

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> "Server":
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=_child_setup(self.cpus), cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                log = self.log_tail()
                self.stop()
                raise Unsupported(f"{self.name} exited {code} at start: {log or '(no output)'}")
            if ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> Optional[float]:
        return proc_cpu_s(self.proc.pid) if self.alive() else None

    def rss(self) -> Optional[int]:
        return rss_bytes(self.proc.pid) if self.alive() else None

    def log_tail(self, limit: int = 300) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        return " | ".join(text.splitlines()[-3:])[-limit:]

    def stop(self) -> Optional[int]:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        if self.binlog_dir is not None:
            shutil.rmtree(self.binlog_dir, ignore_errors=True)
            self.binlog_dir = None
        self._log.close()
        return code


def beanstalk_py_argv() -> list[str]:
    return [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", "{port}"]


def beanstalk_py_http_argv() -> list[str]:
    """beanstalk-py with its operations plane on a loopback port of its own."""
    return beanstalk_py_argv() + ["--http", "127.0.0.1:{http_port}"]


def beanstalkd_argv(binary: Optional[str] = None) -> list[str]:
    binary = binary or shutil.which("beanstalkd")
    if binary is None:
        raise RuntimeError("beanstalkd is not installed (apt-get install -y beanstalkd)")
    return [binary, "-l", "127.0.0.1", "-p", "{port}"]


def version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv[:1] + (argv[1:3] if argv[1:2] == ["-m"] else []) + ["-v"],
                              capture_output=True, text=True, timeout=20, cwd=REPO)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def build(argv: list[str]) -> Optional[str]:
    """Which build of beanstalk-py ``argv`` runs: "compiled" or "pure", from the
    ``build ...`` line of its ``-v`` (None for a server without one, as beanstalkd)."""
    try:
        done = subprocess.run(argv[:1] + (argv[1:3] if argv[1:2] == ["-m"] else []) + ["-v"],
                              capture_output=True, text=True, timeout=20, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        if line.startswith("build "):
            return line.split()[1]
    return None


def find_listener_pid(port: int) -> Optional[int]:
    """Best effort: the PID of the process listening on 127.0.0.1:port (via /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


# ---------------------------------------------------------------- store mode

def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class RedisServer:
    """A private redis-server for one store-mode run: a free loopback port, a
    temporary directory, no persistence, noeviction; stopped by its PID."""

    def __init__(self, cpus: Optional[set[int]] = None, binary: Optional[str] = None) -> None:
        self.binary = binary or shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.cpus = cpus
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.workdir: Optional[str] = None
        self._log = tempfile.TemporaryFile()

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.workdir = tempfile.mkdtemp(prefix="bench-redis-")
        for _attempt in range(5):  # a free port is chosen and freed first: retry if taken meanwhile
            self.port = free_port()
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir, "--daemonize", "no",
                 "--maxmemory-policy", "noeviction", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                preexec_fn=_child_setup(self.cpus), cwd=self.workdir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._ping():
                    return self
                time.sleep(0.02)
            else:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
        self.stop()
        raise RuntimeError("redis-server would not start (port taken five times?)")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> Optional[float]:
        return proc_cpu_s(self.proc.pid) if self.alive() else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class StoreSetup:
    """One redis-server and ``front_ends`` beanstalk-py front ends on it
    (``--store redis://...``), all pinned to ``cpus`` (the server's CPU: the
    whole store-mode server side gets what beanstalkd gets)."""

    def __init__(self, name: str, front_ends: int, cpus: Optional[set[int]] = None,
                 extra: tuple[str, ...] = (), redis_cpus: Optional[set[int]] = None) -> None:
        self.name = name
        self.cpus = cpus
        self.redis = RedisServer(redis_cpus if redis_cpus is not None else cpus)
        self.count = front_ends
        self.extra = extra
        self.front_ends: list[Server] = []

    def start(self) -> "StoreSetup":
        self.redis.start()
        try:
            for i in range(self.count):
                fe = Server(f"{self.name}-fe{i + 1}", beanstalk_py_argv() + ["--store", self.redis.url],
                            cpus=self.cpus, extra=self.extra)
                self.front_ends.append(fe)
                fe.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def ports(self) -> list[int]:
        return [fe.port for fe in self.front_ends]

    def alive(self) -> bool:
        return self.redis.alive() and all(fe.alive() for fe in self.front_ends)

    def fe_cpu_s(self) -> Optional[float]:
        """utime + stime of every front end, summed."""
        times = [fe.cpu_s() for fe in self.front_ends]
        return None if any(t is None for t in times) else sum(times)  # type: ignore[misc]

    def log_tail(self) -> str:
        return " / ".join(f"{fe.name}: {fe.log_tail()}" for fe in self.front_ends if not fe.alive())

    def stop(self) -> None:
        for fe in self.front_ends:
            fe.stop()
        self.redis.stop()
