"""A private redis-server for tests: started on a free loopback port in a temp
directory, with no persistence, and stopped by its pid.

Tests that need it take the ``redis_server`` fixture (one server per test
module, flushed between tests by ``redis_db``); where ``redis-server`` is not
installed they are skipped with the reason (``.ci/run`` installs it from apt).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import pytest

REDIS_BINARY = shutil.which("redis-server")
SKIP_REASON = "redis-server is not installed (apt-get install -y redis-server); .ci/run installs it"


def _stop(proc: Optional[subprocess.Popen]) -> None:
    """SIGTERM a process we started (SIGKILL after 10 s), then close its pipe."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc is not None and proc.stdout is not None:
        proc.stdout.close()


def _free_port() -> int:
    # redis-server takes no inherited socket, so a port is chosen and freed:
    # racy in principle; start() retries on a bind failure.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    """One redis-server process we started (and only we stop)."""

    port: int = 0  # 0: a free one; given: that one (a restart on the same address)
    extra: tuple[str, ...] = ()  # more redis-server options (replicaof, requirepass, TLS...)
    proc: Optional[subprocess.Popen] = None
    workdir: Optional[tempfile.TemporaryDirectory] = None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        if REDIS_BINARY is None:
            pytest.skip(SKIP_REASON)
        self.workdir = tempfile.TemporaryDirectory(prefix="bs-redis-")
        fixed = self.port
        for _attempt in range(1 if fixed else 5):
            self.port = fixed or _free_port()
            self.proc = subprocess.Popen(
                [REDIS_BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir.name, "--daemonize", "no",
                 "--maxmemory-policy", "noeviction", "--loglevel", "warning", *self.extra],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # most likely the port was taken meanwhile: try another
                if self._ping():
                    return self
                time.sleep(0.02)
            else:
                self.stop()
                raise RuntimeError("redis-server did not answer PING")
        raise RuntimeError(f"redis-server would not start: {self.proc.communicate()[0]!r}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
                return answer.startswith(b"+PONG") or answer.startswith(b"-NOAUTH")
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc)
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(redis_server: RedisServer) -> str:
    """The module's redis-server, emptied for this test (functions stay loaded)."""
    from beanstalk_py.redisstore.resp import BlockingRedis

    client = BlockingRedis("127.0.0.1", redis_server.port)
    try:
        client.execute("FLUSHALL")
    finally:
        client.close()
    return redis_server.url


class StoreRig:
    """A :class:`~beanstalk_py.redisstore.store.RedisStore` on a blocking
    client, on a flushed database, driven like tests/rig.py drives the engine:
    every call's ``now`` is sent as the store's clock (``clock="caller"``)."""

    def __init__(self, server: RedisServer, fe_id: str = "fe0", flush: bool = True,
                 max_job_size: int = 65535) -> None:
        from beanstalk_py.redisstore.resp import BlockingRedis
        from beanstalk_py.redisstore.store import RedisStore

        self.client = BlockingRedis("127.0.0.1", server.port)
        if flush:
            self.client.execute("FLUSHALL")
        self.store = RedisStore(self.client, clock="caller", fe_id=fe_id, max_job_size=max_job_size)
        self.store.start()
        self.client.flush()

    def settle(self, now: int) -> None:
        """Send what was queued, read the replies, deliver them; until quiet."""
        while True:
            self.client.flush()
            batch = self.store.take_completed()
            if not batch:
                if not self.client.pipe.queued:
                    return
                continue
            for owner, completion in batch:
                owner.deliver(completion, now)

    def close(self) -> None:
        self.client.close()


SENTINEL_BINARY = shutil.which("redis-sentinel")
SENTINEL_SKIP_REASON = ("redis-sentinel is not installed (apt-get install -y redis-sentinel); "
                        ".ci/run installs it")


@dataclass
class SentinelServer:
    """One redis-sentinel we started, watching one primary as ``master``,
    with a config file written fresh (Sentinel rewrites its own)."""

    primary_port: int
    master: str = "bsmaster"
    down_after_ms: int = 1000  # the design's failover figure: 2.1-2.2 s in all
    port: int = 0
    proc: Optional[subprocess.Popen] = None
    workdir: Optional[tempfile.TemporaryDirectory] = None

    def start(self, timeout: float = 10.0) -> "SentinelServer":
        if SENTINEL_BINARY is None:
            pytest.skip(SENTINEL_SKIP_REASON)
        self.workdir = tempfile.TemporaryDirectory(prefix="bs-sentinel-")
        self.port = _free_port()
        config = f"{self.workdir.name}/sentinel.conf"
        with open(config, "w") as out:
            # failover-timeout: Sentinel leaves a replica that replicates
            # through a proxy (the tests' cut) alone for this long.
            out.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir.name}\n"
                      f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} 1\n"
                      f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}\n"
                      f"sentinel failover-timeout {self.master} 60000\n"
                      f"sentinel parallel-syncs {self.master} 1\n")
        self.proc = subprocess.Popen([SENTINEL_BINARY, config, "--loglevel", "warning"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited: {self.proc.communicate()[0]!r}")
            if self.primary() is not None:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-sentinel did not answer")

    def ask(self, *words: str) -> bytes:
        command = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(command)
            time.sleep(0.02)
            return sock.recv(1 << 16)

    def primary(self) -> Optional[int]:
        """The port Sentinel names for the primary now (None: no answer)."""
        try:
            answer = self.ask("SENTINEL", "get-master-addr-by-name", self.master)
        except OSError:
            return None
        parts = answer.split(b"\r\n")
        return int(parts[4]) if len(parts) > 4 and parts[0] == b"*2" else None

    def settled_on(self, port: int) -> bool:
        """Sentinel names ``port`` as the primary and no failover is running.
        (Mid-failover it already names the promoted replica: an old primary
        restarted then may end up the primary again, empty.)"""
        answer = self.ask("SENTINEL", "master", self.master).split(b"\r\n")
        fields = {answer[i]: answer[i + 2] for i in range(2, len(answer) - 2, 4)}
        flags = fields.get(b"flags", b"")
        return fields.get(b"port") == str(port).encode() and flags == b"master"

    def replicas_known(self) -> int:
        answer = self.ask("SENTINEL", "replicas", self.master)
        return answer.count(b"\r\nip\r\n")

    def stop(self) -> None:
        _stop(self.proc)
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None
