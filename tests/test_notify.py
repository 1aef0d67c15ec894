"""systemd notify (READY, STATUS, EXTEND_TIMEOUT_USEC, WATCHDOG, STOPPING) from the
real daemon, read from a test NOTIFY_SOCKET; and the Notifier in-process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from beanstalk_py.binlog import Binlog
from beanstalk_py.conn import Connection
from beanstalk_py.engine import Engine
from beanstalk_py.notify import Notifier, status_line
from beanstalk_py.stats import ServerInfo
from conftest import Daemon, beanstalk_py_argv, free_port
from test_server import ask

WATCHDOG_USEC = 400_000  # pings due every 200 ms


class Receiver:
    """A unix datagram socket standing in for systemd's; a thread keeps every
    message with its arrival time (time.monotonic())."""

    def __init__(self, directory: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"beanstalk-py-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(directory / "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, match: Callable[[str], bool], timeout: float, after: int = 0) -> tuple[int, float, str]:
        """The first message from index ``after`` on that matches: (index, time, text)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.snapshot()
            for index in range(after, len(messages)):
                if match(messages[index][1]):
                    return index, *messages[index]
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching message within {timeout} s; got {messages[after:]}")
            time.sleep(0.005)

    def pings(self, start: float, end: float) -> list[float]:
        return [t for t, text in self.snapshot() if start <= t < end and "WATCHDOG=1" in text.split("\n")]

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()


def lines(text: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in text.split("\n"))


def is_ready(text: str) -> bool:
    return lines(text).get("READY") == "1"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rec = Receiver(tmp_path)
    yield rec
    rec.close()


def notify_env(rec: Receiver, **extra: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": rec.address, "WATCHDOG_USEC": str(WATCHDOG_USEC), **extra}


def launch(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start without conftest's readiness probe: READY is what is under test."""
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, **env))


def stop(proc: subprocess.Popen) -> None:
    """Kill what a test started, by pid, if it is still running."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stderr is not None:
        proc.stderr.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ---------------------------------------------------------------------- daemon


def test_ready_only_once_the_port_answers(receiver: Receiver) -> None:
    """On READY=1 a client connects and is answered at once (the daemon binds
    the port itself here); READY comes once, with a STATUS line."""
    port = free_port()
    proc = launch(beanstalk_py_argv(port), notify_env(receiver))
    try:
        started = time.monotonic()
        # A client polling the port from the start: its first answer.
        first_answer: list[float] = []

        def poll() -> None:
            while time.monotonic() < started + 15 and not first_answer:
                try:
                    with connect(port) as sock:
                        if ask(sock, b"list-tube-used\r\n") == b"USING default\r\n":
                            first_answer.append(time.monotonic())
                except OSError:
                    time.sleep(0.002)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, ready_at, text = receiver.wait_for(is_ready, timeout=15)
        with connect(port) as sock:
            assert ask(sock, b"list-tube-used\r\n") == b"USING default\r\n"
        answered = time.monotonic()
        assert answered - ready_at < 2.0
        poller.join(timeout=15)
        assert first_answer
        fields = lines(text)
        assert fields["STATUS"] == "jobs: 0 ready, 0 reserved, 0 delayed, 0 buried; 0 connections"
        # The epoll driver may answer while trio is still imported, before READY.
        print(f"READY at {ready_at - started:.3f} s after exec; first answer to the poller at "
              f"{first_answer[0] - started:.3f} s; answer after READY {1000 * (answered - ready_at):.1f} ms")
        assert sum(is_ready(text) for _, text in receiver.snapshot()) == 1
    finally:
        stop(proc)


def test_status_watchdog_and_stopping(receiver: Receiver) -> None:
    port = free_port()
    daemon = Daemon(beanstalk_py_argv(port), port=port, env=notify_env(receiver)).start()
    try:
        index, ready_at, _ = receiver.wait_for(is_ready, timeout=15)
        # STATUS follows the queue: 3 ready, then one reserved and one buried.
        with daemon.connect() as producer, daemon.connect() as worker:
            for body in (b"a", b"b", b"c"):
                assert ask(producer, b"put 0 0 60 1\r\n" + body + b"\r\n").startswith(b"INSERTED")
            assert ask(worker, b"reserve\r\n", until=b"a\r\n").startswith(b"RESERVED")
            assert ask(worker, b"reserve\r\n", until=b"b\r\n").startswith(b"RESERVED")
            job = ask(worker, b"peek-ready\r\n", until=b"c\r\n").split()[1]
            assert ask(worker, b"bury 2 0\r\n") == b"BURIED\r\n"
            want = "jobs: 1 ready, 1 reserved, 0 delayed, 1 buried; 2 connections"
            receiver.wait_for(lambda text: lines(text).get("STATUS") == want, timeout=10, after=index)
            assert job == b"3"
        # The watchdog: every 200 ms (WATCHDOG_USEC / 2), counted over 1.5 s.
        start = time.monotonic()
        time.sleep(1.5)
        pings = receiver.pings(start, start + 1.5)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        print(f"{len(pings)} pings in 1.5 s; gaps {min(gaps):.3f}-{max(gaps):.3f} s, "
              f"median {sorted(gaps)[len(gaps) // 2]:.3f} s")
        assert 4 <= len(pings) <= 12
        assert 0.1 < sorted(gaps)[len(gaps) // 2] < 0.4
        assert receiver.pings(0, ready_at - 0.001) == []  # the watchdog starts with READY
        # STOPPING=1 on SIGTERM, then a clean exit.
        mark = len(receiver.snapshot())
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGTERM)
        receiver.wait_for(lambda text: lines(text).get("STOPPING") == "1", timeout=10, after=mark)
        assert daemon.proc.wait(timeout=10) == 0
    finally:
        daemon.stop()


def test_abstract_notify_socket(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path, abstract=True)
    try:
        daemon = Daemon([sys.executable, "-m", "beanstalk_py", "-l", f"unix:{tmp_path}/bs.sock"],
                        unix_path=f"{tmp_path}/bs.sock", env=notify_env(receiver)).start()
        try:
            receiver.wait_for(is_ready, timeout=15)
            receiver.wait_for(lambda text: text == "WATCHDOG=1", timeout=5)
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGTERM)
            receiver.wait_for(lambda text: lines(text).get("STOPPING") == "1", timeout=10)
            assert daemon.proc.wait(timeout=10) == 0
        finally:
            daemon.stop()
    finally:
        receiver.close()


def test_watchdog_pid_of_another_process_means_no_pings(receiver: Receiver) -> None:
    port = free_port()
    env = notify_env(receiver, WATCHDOG_PID=str(os.getpid()))  # ours, not the daemon's
    daemon = Daemon(beanstalk_py_argv(port), port=port, env=env).start()
    try:
        _, ready_at, _ = receiver.wait_for(is_ready, timeout=15)
        time.sleep(0.6)
        assert receiver.pings(0, time.monotonic()) == []
    finally:
        daemon.stop()


def make_binlog(directory: Path, jobs: int) -> None:
    """``jobs`` ready jobs in a binlog, put by a daemon (pipelined, no fsync)."""
    port = free_port()
    daemon = Daemon(beanstalk_py_argv(port, "-b", str(directory), "-F"), port=port).start()
    try:
        with daemon.connect() as sock:
            sock.settimeout(30)
            batch = 10_000
            for first in range(0, jobs, batch):
                count = min(batch, jobs - first)
                sock.sendall(b"put 0 0 60 5\r\nhello\r\n" * count)
                got = b""
                while got.count(b"\r\n") < count:
                    chunk = sock.recv(1 << 20)
                    assert chunk
                    got += chunk
                assert got.count(b"INSERTED") == count
    finally:
        assert daemon.stop() == 0


def test_binlog_replay_extends_the_start_then_ready(receiver: Receiver, tmp_path: Path) -> None:
    jobs = 100_000
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    make_binlog(binlog, jobs)
    size = sum(path.stat().st_size for path in binlog.glob("bspy-binlog.*"))
    port = free_port()
    proc = launch(beanstalk_py_argv(port, "-b", str(binlog)), notify_env(receiver))
    try:
        started = time.monotonic()
        index, ready_at, text = receiver.wait_for(is_ready, timeout=60)
        # The jobs were restored before READY...
        assert lines(text)["STATUS"] == f"jobs: {jobs} ready, 0 reserved, 0 delayed, 0 buried; 0 connections"
        # ...and start-up was extended before the replay, when it ended, and before the restore.
        before = [(t, lines(text)) for t, text in receiver.snapshot()[:index]]
        extends = [(t, fields) for t, fields in before if "EXTEND_TIMEOUT_USEC" in fields]
        assert len(extends) >= 3, before
        assert extends[0][1]["STATUS"].startswith("replaying the binlog: 0%")
        assert extends[-1][1]["STATUS"] == f"restoring {jobs} jobs"
        assert all(int(fields["EXTEND_TIMEOUT_USEC"]) >= 30_000_000 for _, fields in extends)
        print(f"{jobs} jobs, {size / 1e6:.1f} MB: first EXTEND at {extends[0][0] - started:.3f} s, "
              f"restore at {extends[-1][0] - started:.3f} s, READY at {ready_at - started:.3f} s "
              f"(replay {extends[-1][0] - extends[0][0]:.3f} s)")
        with connect(port) as sock:
            assert ask(sock, b"peek-ready\r\n", until=b"hello\r\n") == b"FOUND 1 5\r\nhello\r\n"
    finally:
        stop(proc)


# A command handler that wedges the whole process (as a stuck call into C
# would): `peek 4242` sleeps, on the thread that runs trio and the epoll loop.
WEDGE = (
    "import sys, time\n"
    "from beanstalk_py import conn\n"
    "orig, counted = conn._DISPATCH['peek']\n"
    "def wedge(self, request, now):\n"
    "    if request[1] == 4242: time.sleep(60)\n"
    "    return orig(self, request, now)\n"
    "conn._DISPATCH['peek'] = (wedge, counted)\n"
    "from beanstalk_py.main import main; sys.exit(main(sys.argv[1:]))"
)


def test_no_watchdog_pings_once_the_loop_is_wedged(receiver: Receiver) -> None:
    port = free_port()
    daemon = Daemon([sys.executable, "-c", WEDGE, "-l", "127.0.0.1", "-p", str(port)],
                    port=port, env=notify_env(receiver))
    daemon.start()
    try:
        receiver.wait_for(is_ready, timeout=15)
        with daemon.connect() as sock:
            assert ask(sock, b"peek 1\r\n") == b"NOT_FOUND\r\n"  # served, not wedged
            start = time.monotonic()
            time.sleep(0.6)
            assert len(receiver.pings(start, time.monotonic())) >= 2  # pinging while it serves
            sock.sendall(b"peek 4242\r\n")
            wedged = time.monotonic()
            time.sleep(1.5)
            # One ping may have been under way as the command arrived.
            late = receiver.pings(wedged + 0.05, time.monotonic())
            assert late == [], f"{len(late)} pings after the loop was wedged"
            assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        assert daemon.proc is not None
        stop(daemon.proc)


# ---------------------------------------------------------------------- in-process


def test_notifier_reads_and_removes_the_variables() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid()), "OTHER": "kept"}
    notifier = Notifier.from_environ(env)
    assert env == {"OTHER": "kept"}
    assert notifier.enabled and notifier.watchdog_interval == 15.0


@pytest.mark.parametrize("env, interval", [
    ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # not us
    ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "0"}, None),
    ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "400000"}, None),  # no socket: nothing at all
    ({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "400000"}, 0.2),
])
def test_watchdog_is_for_this_process_only(env: dict, interval: Optional[float]) -> None:
    assert Notifier.from_environ(dict(env)).watchdog_interval == interval


def test_nothing_is_sent_without_notify_socket() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.watchdog() is False


def test_a_failed_send_is_logged_once_and_never_raises(tmp_path: Path, capsys) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert capsys.readouterr().err.count("cannot notify the service manager") == 1


def test_messages_on_the_wire(receiver: Receiver) -> None:
    notifier = Notifier(receiver.address)
    notifier.extend_timeout(30, "replaying")
    notifier.ready("up")
    notifier.stopping()
    receiver.wait_for(lambda text: "STOPPING=1" in text, timeout=5)
    assert [text for _, text in receiver.snapshot()] == [
        "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=replaying", "READY=1\nSTATUS=up", "STOPPING=1\nSTATUS=stopping",
    ]
    notifier.close()


def test_status_line() -> None:
    stats = {"current-jobs-ready": 5, "current-jobs-reserved": 1, "current-jobs-delayed": 2,
             "current-jobs-buried": 0, "current-connections": 7, "draining": True}
    assert status_line(stats) == "jobs: 5 ready, 1 reserved, 2 delayed, 0 buried; 7 connections; draining"


def test_binlog_replay_reports_its_progress(tmp_path: Path) -> None:
    """Binlog.open(progress): before each file, in bytes, then once at the end."""

    def make_log() -> Binlog:
        return Binlog(str(tmp_path), 4096, None, clock=time.monotonic_ns, wall_clock=time.time_ns,
                      log=lambda message: None)

    wal = make_log()
    records, next_id = wal.open()
    engine = Engine()
    engine.restore(records, next_id, time.monotonic_ns(), time.time_ns())
    engine.attach_wal(wal, wal.durability)
    conn = Connection(engine, ServerInfo(started_at=time.monotonic_ns()))
    for _ in range(10):  # 10 jobs of 1000 bytes in files of 4096 bytes: several files
        conn.receive_data(b"put 0 0 60 1000\r\n" + b"x" * 1000 + b"\r\n", time.monotonic_ns())
    assert conn.take_output().count(b"INSERTED") == 10
    wal.close()
    sizes = [path.stat().st_size for path in sorted(tmp_path.glob("bspy-binlog.*"))]
    assert len(sizes) >= 3
    calls: list[tuple[int, int]] = []
    again = make_log()
    records, _ = again.open(lambda done, total: calls.append((done, total)))
    again.close()
    assert len(records) == 10
    total = sum(sizes)
    assert calls == [(sum(sizes[:i]), total) for i in range(len(sizes))] + [(total, total)]
