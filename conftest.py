"""Fixtures shared by tests/ and compat_tests/: real daemons on loopback ports.

``start_beanstalk_py`` and ``start_reference`` hand each daemon a listening
socket the test process bound itself (systemd socket activation: the socket
is the child's fd 3, with ``LISTEN_FDS=1`` and ``LISTEN_PID`` its own pid;
beanstalkd 1.12 and beanstalk-py both take it).  No port is ever chosen, freed
and bound again, so two daemons started at the same moment (the differential
tests start a pair) can never end up on the same port.  ``free_port`` remains
for the tests that pass ``-l``/``-p`` themselves.
"""

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

# Markers, given here by file or kind so test files need not carry them:
#   daemon  starts real daemons (compat_tests/, test_server.py, test_binlog_daemon.py)
#   bench   runs the benchmark harness (test_bench_smoke.py)
#   io      in-process files, sockets or threads (test_binlog.py, test_startup.py)
#   slow    over ~0.1 s: every hypothesis test, and SLOW_TESTS
#   unit    none of these: the sans-IO loop, `pytest -m unit` (~1.2 s of tests, ~2 s wall)
# A plain `pytest` (what CI runs) still runs them all.
DAEMON_FILES = {"test_server.py", "test_binlog_daemon.py", "test_notify.py", "test_admin.py",
                "test_admin_transfer.py", "test_admin_top.py", "test_http.py", "test_http_security.py",
                "test_http_load.py", "test_admin_http.py", "test_console.py",
                "test_console_browser.py", "test_http_tls.py", "test_http_replay.py",
                # start a redis-server (tests/redis_rig.py)
                "test_redis_functions.py", "test_redis_store.py", "test_redis_model.py", "test_redis_daemon.py"}
BENCH_FILES = {"test_bench_smoke.py"}
# Store mode always runs the streams driver (main.py), so the README's second
# pass, the daemon tests again with BEANSTALK_PY_IO=tasks, would only repeat
# these (~75 s of CI time): it skips them, saying so.
STORE_FILES = {"test_redis_functions.py", "test_redis_store.py", "test_redis_model.py", "test_redis_daemon.py",
               "test_redis_failover.py", "test_redis_auth.py", "test_redis_multi.py", "test_admin_store.py",
               "test_differential_redis.py", "test_greenstalk_redis.py"}
_TASKS_PASS = os.environ.get("BEANSTALK_PY_IO") == "tasks"
IO_FILES = {"test_binlog.py", "test_startup.py", "test_units.py"}
SLOW_TESTS = {
    "test_binlog.py::test_truncated_at_every_offset",
    "test_binlog.py::test_garbled_at_every_offset",
    "test_binlog.py::test_random_operations_crashes_and_full_disks",  # 10 seeds, ~0.1 s each
    "test_startup.py::test_timers_fire_while_importing",  # sleeps 1.6 s in an import
    "test_startup.py::test_clients_are_answered_while_a_slow_import_runs",
    "test_startup.py::test_sigterm_while_importing_stops_start_up",
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        path = item.path
        name = getattr(item, "originalname", item.name)
        marks = []
        if _TASKS_PASS and path.name in STORE_FILES:
            item.add_marker(pytest.mark.skip(reason="store mode always uses the streams driver, whatever "
                                                    "BEANSTALK_PY_IO says: the README's first pass runs this"))
        if item.get_closest_marker("daemon") or item.get_closest_marker("bench"):
            continue  # the test file marked itself (pytestmark)
        if path.name in BENCH_FILES:
            marks.append(pytest.mark.bench)
        elif path.parent.name == "compat_tests" or path.name in DAEMON_FILES:
            marks.append(pytest.mark.daemon)
        else:
            if path.name in IO_FILES:
                marks.append(pytest.mark.io)
            if (getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
                    or f"{path.name}::{name}" in SLOW_TESTS):
                marks.append(pytest.mark.slow)
        for mark in marks or [pytest.mark.unit]:
            item.add_marker(mark)


def free_port() -> int:
    """A port that was free a moment ago (racy: prefer ``listening_socket``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a fresh port and already listening."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(1024)
    return sock


# Run by /bin/sh in the child: the listening socket arrives as stdin (the only
# descriptor Popen can place without a preexec_fn, which is unsafe while other
# threads run); move it to fd 3, and exec the daemon with LISTEN_PID = $$,
# which exec keeps as the daemon's pid (and Popen.pid).
_ACTIVATE = 'exec 3<&0 0</dev/null; LISTEN_PID=$$; export LISTEN_PID; exec "$@"'


@dataclass
class Daemon:
    """A server process we started; stopped by PID when the test ends.

    With ``listener`` set, ``start`` passes that socket to the daemon by socket
    activation (and ``port`` is the socket's); otherwise ``argv`` says where
    to listen and ``port``/``unix_path`` must match it.
    """

    argv: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    unix_path: Optional[str] = None
    proc: Optional[subprocess.Popen] = None
    env: dict = field(default_factory=dict)
    listener: Optional[socket.socket] = None

    @property
    def address(self):
        return self.unix_path if self.unix_path else (self.host, self.port)

    def start(self, timeout: float = 10.0) -> "Daemon":
        env = dict(os.environ, **self.env)
        argv, stdin = self.argv, None
        if self.listener is not None:
            self.host, self.port = self.listener.getsockname()[:2]
            argv = ["/bin/sh", "-c", _ACTIVATE, "sh", *self.argv]
            env["LISTEN_FDS"] = "1"
            stdin = self.listener
        try:
            self.proc = subprocess.Popen(
                argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
        finally:
            if self.listener is not None:
                self.listener.close()  # the daemon holds the only copy now
                self.listener = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(f"{self.argv} exited {self.proc.returncode}: {err!r}")
            try:
                if self._probe(deadline):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.argv} did not start listening")

    def _probe(self, deadline: float) -> bool:
        """One exchange that moves no counter, ended by `quit` and read to EOF.

        An answer, not just a connection: the socket accepts into its backlog
        before the server runs.  And the server's EOF, not just the answer:
        the daemon counts the connection out (current-connections) before it
        closes it, so the next `stats` of a test cannot still count the probe.
        """
        with self.connect() as probe:
            probe.sendall(b"\r\nquit\r\n")  # UNKNOWN_COMMAND, then the server closes
            reply = b""
            while True:
                probe.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = probe.recv(64)
                if not chunk:
                    return reply == b"UNKNOWN_COMMAND\r\n"
                reply += chunk

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


def _check_no_address(extra: tuple[str, ...]) -> None:
    if any(arg.startswith(("-l", "-p")) for arg in extra):
        raise ValueError("start_*() choose the address; build a Daemon for -l/-p")


def start_beanstalk_py(*extra: str) -> Daemon:
    _check_no_address(extra)
    argv = [sys.executable, "-m", "beanstalk_py", *extra]
    return Daemon(argv, listener=listening_socket()).start()


def start_reference(*extra: str) -> Daemon:
    if REFERENCE_BINARY is None:
        pytest.skip("beanstalkd is not installed (apt-get install -y beanstalkd); .ci/run installs it")
    _check_no_address(extra)
    return Daemon([REFERENCE_BINARY, *extra], listener=listening_socket()).start()


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
