"""Three `beanstalk-py --store redis://...` front ends on one redis-server,
as real daemons over real sockets: what one client does on one front end is
what a client of another front end sees, in beanstalkd's order.

* a put on A is reserved on B;
* three waiters on three front ends are served oldest first;
* a reserve takes the best (pri, id) across the tubes it watches, whichever
  front ends put them, and a waiter watching two tubes is woken by either;
* a pause set on A holds a reserve on B until it ends;
* a TTR that ends for a job reserved on A hands it to a reserve waiting on B.

The redis-server is tests/redis_rig.py's (one per module, emptied before
each test; skipped with the reason where redis-server is not installed).
"""

from __future__ import annotations

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

import pytest

from conftest import Daemon, listening_socket
from redis_rig import RedisServer, redis_server, store_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.daemon

# How late a reply may come when another front end's call made it due: a
# put or release reaches a waiter through its front end's inbox (a blocking
# pop, 1-3 ms measured); a timer another front end owns is seen by the
# waiter's front end within its tick (store.WAIT_POLL_NS, 20 ms).  Room for
# a loaded 2-core CI machine.
CROSS_FE_BOUND_S = 0.25


class Client:
    """One raw protocol connection: send a command, read one reply."""

    def __init__(self, daemon: Daemon) -> None:
        self.sock = socket.create_connection((daemon.host, daemon.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, line: bytes, body: Optional[bytes] = None) -> None:
        data = line + b"\r\n"
        if body is not None:
            data += body + b"\r\n"
        self.sock.sendall(data)

    def reply(self, timeout: float = 5.0) -> bytes:
        """One reply line, with its body (if any) after a space."""
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return b"<EOF>"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        words = line.split()
        if words and words[0] in (b"RESERVED", b"FOUND", b"OK"):
            size = int(words[-1])
            while len(self.buf) < size + 2:
                self.buf += self.sock.recv(65536)
            body, self.buf = self.buf[:size], self.buf[size + 2:]
            return line + b" " + body
        return line

    def ask(self, line: bytes, body: Optional[bytes] = None, timeout: float = 5.0) -> bytes:
        self.send(line, body)
        return self.reply(timeout)

    def put(self, body: bytes, pri: int = 0, delay: int = 0, ttr: int = 60) -> int:
        reply = self.ask(b"put %d %d %d %d" % (pri, delay, ttr, len(body)), body)
        assert reply.startswith(b"INSERTED "), reply
        return int(reply.split()[1])

    def fields(self, line: bytes) -> dict[str, str]:
        reply = self.ask(line)
        assert reply.startswith(b"OK "), reply
        out = {}
        for row in reply.split(b"\n")[1:]:
            key, _, value = row.decode().partition(": ")
            if key:
                out[key] = value
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fes(store_url: str) -> Iterator[list[Daemon]]:
    """Three front ends on one store, started side by side."""
    daemons = [Daemon([sys.executable, "-m", "beanstalk_py", "--store", store_url], listener=listening_socket())
               for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(d.start) for d in daemons]:
                future.result()
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients opened by a test (``connect``), closed after it."""
    opened: list[Client] = []
    yield opened
    for c in opened:
        c.close()


def connect(clients: list[Client], daemon: Daemon) -> Client:
    c = Client(daemon)
    clients.append(c)
    return c


def wait_until_waiting(observer: Client, tube: bytes, count: int) -> None:
    """Until Redis counts ``count`` waiters on ``tube`` (stats-tube is the
    store's, for every front end; `stats` current-waiting is this front end's)."""
    deadline = time.monotonic() + 5
    while observer.fields(b"stats-tube " + tube)["current-waiting"] != str(count):
        assert time.monotonic() < deadline, f"never {count} waiting on {tube!r}"
        time.sleep(0.005)


def test_put_on_a_reserve_on_b(fes: list[Daemon], clients: list[Client]) -> None:
    a, b, c = fes
    producer, worker, observer = connect(clients, a), connect(clients, b), connect(clients, c)
    job = producer.put(b"hello", pri=7, ttr=30)
    assert job == 1
    assert worker.ask(b"reserve-with-timeout 0") == b"RESERVED 1 5 hello"
    stats = observer.fields(b"stats-job 1")
    assert (stats["state"], stats["pri"], stats["ttr"], stats["reserves"]) == ("reserved", "7", "30", "1")
    # Only its holder, on B, may delete it.
    assert producer.ask(b"delete 1") == b"NOT_FOUND"
    assert worker.ask(b"delete 1") == b"DELETED"
    assert observer.ask(b"peek 1") == b"NOT_FOUND"
    # Ids come from one counter, whichever front end puts.
    assert [producer.put(b"x"), observer.put(b"y"), worker.put(b"z")] == [2, 3, 4]


def test_three_waiters_on_three_front_ends_are_served_oldest_first(fes: list[Daemon],
                                                                    clients: list[Client]) -> None:
    """Waiters on C, A, B (in that order); three puts, one at a time, from B:
    each goes to the oldest waiter left, whatever front end it is on."""
    a, b, c = fes
    producer, observer = connect(clients, b), connect(clients, a)
    waiters = [connect(clients, fe) for fe in (c, a, b)]
    for n, waiter in enumerate(waiters, 1):
        waiter.send(b"reserve-with-timeout 10")
        wait_until_waiting(observer, b"default", n)
    for n, waiter in enumerate(waiters):
        started = time.monotonic()
        job = producer.put(b"job%d" % n)
        assert waiter.reply() == b"RESERVED %d 4 job%d" % (job, n)
        assert time.monotonic() - started < CROSS_FE_BOUND_S
        # No other waiter got anything.
        wait_until_waiting(observer, b"default", len(waiters) - n - 1)
    for waiter in waiters:
        assert waiter.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"


def test_a_reserve_takes_the_best_job_across_its_tubes(fes: list[Daemon], clients: list[Client]) -> None:
    """Puts from A and C into t1, t2 and default; a worker on B watching t1
    and t2 reserves by (pri, id) across both, never from default."""
    a, b, c = fes
    on_a, on_c, worker = connect(clients, a), connect(clients, c), connect(clients, b)
    assert worker.ask(b"watch t1") == b"WATCHING 2"
    assert worker.ask(b"watch t2") == b"WATCHING 3"
    assert worker.ask(b"ignore default") == b"WATCHING 2"
    placed = []
    for client, tube, pri in ((on_a, b"t1", 50), (on_c, b"t2", 10), (on_a, b"t1", 10),
                              (on_c, b"default", 0), (on_a, b"t2", 0), (on_c, b"t1", 10)):
        assert client.ask(b"use " + tube) == b"USING " + tube
        placed.append((pri, client.put(b"%s/%d" % (tube, pri), pri=pri), tube))
    expected = sorted(job for job in placed if job[2] != b"default")
    got = []
    for _ in expected:
        reply = worker.ask(b"reserve-with-timeout 0")
        assert reply.startswith(b"RESERVED "), reply
        got.append(int(reply.split()[1]))
    assert got == [job_id for _pri, job_id, _tube in expected]
    assert worker.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"


def test_a_waiter_watching_two_tubes_is_woken_by_either(fes: list[Daemon], clients: list[Client]) -> None:
    a, b, c = fes
    waiter, producer, observer = connect(clients, b), connect(clients, c), connect(clients, a)
    for tube in (b"t1", b"t2"):
        waiter.ask(b"watch " + tube)
    waiter.ask(b"ignore default")
    for tube in (b"t2", b"t1"):
        waiter.send(b"reserve")
        wait_until_waiting(observer, b"t1", 1)
        assert observer.fields(b"stats-tube t2")["current-waiting"] == "1"  # one waiter, in both
        producer.ask(b"use " + tube)
        job = producer.put(tube)
        assert waiter.reply() == b"RESERVED %d 2 %s" % (job, tube)
        assert observer.fields(b"stats-tube t1")["current-waiting"] == "0"
        assert observer.fields(b"stats-tube t2")["current-waiting"] == "0"
        assert waiter.ask(b"delete %d" % job) == b"DELETED"


def test_a_pause_on_a_holds_a_reserve_on_b(fes: list[Daemon], clients: list[Client]) -> None:
    a, b, c = fes
    pauser, worker, producer = connect(clients, a), connect(clients, b), connect(clients, c)
    job = producer.put(b"held")
    assert pauser.ask(b"pause-tube default 1") == b"PAUSED"
    paused_at = time.monotonic()
    assert worker.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"
    assert producer.fields(b"stats-tube default")["pause"] == "1"
    reply = worker.ask(b"reserve", timeout=5)
    waited = time.monotonic() - paused_at
    assert reply == b"RESERVED %d 4 held" % job
    # The pause ends by the Redis clock, seen by B's tick: >= 1 s, a tick late at most.
    assert 0.95 <= waited < 1.0 + CROSS_FE_BOUND_S, waited
    # A pause ended at once (0) on C frees a reserve waiting on B at once too.
    assert pauser.ask(b"pause-tube default 100") == b"PAUSED"
    second = producer.put(b"second")
    worker.send(b"reserve-with-timeout 10")
    wait_until_waiting(producer, b"default", 1)
    started = time.monotonic()
    assert producer.ask(b"pause-tube default 0") == b"PAUSED"
    assert worker.reply() == b"RESERVED %d 6 second" % second
    assert time.monotonic() - started < CROSS_FE_BOUND_S


def test_a_ttr_ending_on_a_hands_the_job_to_a_waiter_on_b(fes: list[Daemon], clients: list[Client]) -> None:
    a, b, c = fes
    holder, waiter, observer = connect(clients, a), connect(clients, b), connect(clients, c)
    job = observer.put(b"slow", ttr=1)
    assert holder.ask(b"reserve-with-timeout 0") == b"RESERVED %d 4 slow" % job
    reserved_at = time.monotonic()
    waiter.send(b"reserve-with-timeout 5")
    assert waiter.reply(timeout=5) == b"RESERVED %d 4 slow" % job
    waited = time.monotonic() - reserved_at
    # TTR 1 s by the Redis clock, run by B's tick while it waits.
    assert 0.95 <= waited < 1.0 + CROSS_FE_BOUND_S, waited
    stats = observer.fields(b"stats-job %d" % job)
    assert (stats["state"], stats["reserves"], stats["timeouts"]) == ("reserved", "2", "1")
    assert observer.fields(b"stats")["job-timeouts"] == "1"
    # The first holder lost it: its delete, touch and release are NOT_FOUND.
    for command in (b"touch %d", b"release %d 0 0", b"delete %d"):
        assert holder.ask(command % job) == b"NOT_FOUND"
    assert waiter.ask(b"delete %d" % job) == b"DELETED"


def test_a_ttr_ending_with_nobody_waiting_is_seen_on_every_front_end(fes: list[Daemon],
                                                                      clients: list[Client]) -> None:
    """No waiter ticks: the next call on any front end runs the due timer first."""
    a, b, c = fes
    holder, other, observer = connect(clients, a), connect(clients, b), connect(clients, c)
    job = observer.put(b"x", ttr=1)
    assert holder.ask(b"reserve-with-timeout 0").startswith(b"RESERVED %d " % job)
    assert other.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"
    time.sleep(1.05)
    assert observer.fields(b"stats-job %d" % job)["state"] == "ready"
    assert other.ask(b"reserve-with-timeout 0").startswith(b"RESERVED %d " % job)



def test_pipelined_puts_go_to_waiters_on_three_front_ends_in_order(fes: list[Daemon],
                                                                  clients: list[Client]) -> None:
    """Three puts in one packet (one batch, one write to Redis): each goes to
    the oldest waiter left, in put order."""
    a, b, c = fes
    producer, observer = connect(clients, a), connect(clients, c)
    waiters = [connect(clients, fe) for fe in (b, c, a)]
    for n, waiter in enumerate(waiters, 1):
        waiter.send(b"reserve")
        wait_until_waiting(observer, b"default", n)
    producer.sock.sendall(b"".join(b"put 0 0 60 2\r\nj%d\r\n" % n for n in range(3)))
    assert [producer.reply() for _ in range(3)] == [b"INSERTED 1", b"INSERTED 2", b"INSERTED 3"]
    assert [waiter.reply() for waiter in waiters] == [b"RESERVED %d 2 j%d" % (n + 1, n) for n in range(3)]


def test_kick_on_a_hands_jobs_to_waiters_on_b_and_c_oldest_first(fes: list[Daemon],
                                                                  clients: list[Client]) -> None:
    """Buried jobs kicked on A: the first kicked (the oldest burial) goes to
    the oldest waiter (on C), the next to the next (on B), as 1.12 does."""
    a, b, c = fes
    kicker, older, newer = connect(clients, a), connect(clients, c), connect(clients, b)
    first, second = kicker.put(b"one", pri=5), kicker.put(b"two", pri=1)
    for job in (second, first):  # buried in that order: `second` is the oldest burial
        assert kicker.ask(b"reserve-job %d" % job).startswith(b"RESERVED %d " % job)
        assert kicker.ask(b"bury %d 10" % job) == b"BURIED"
    for n, waiter in enumerate((older, newer), 1):
        waiter.send(b"reserve-with-timeout 10")
        wait_until_waiting(kicker, b"default", n)
    assert kicker.ask(b"kick 5") == b"KICKED 2"
    assert older.reply() == b"RESERVED %d 3 two" % second
    assert newer.reply() == b"RESERVED %d 3 one" % first
    for waiter, job in ((older, second), (newer, first)):
        stats = kicker.fields(b"stats-job %d" % job)
        assert (stats["state"], stats["kicks"], stats["buries"], stats["reserves"]) == ("reserved", "1", "1", "2")


def test_a_closed_connection_on_a_gives_its_jobs_to_a_waiter_on_b(fes: list[Daemon],
                                                                   clients: list[Client]) -> None:
    """Its jobs go back in the order it reserved them: the waiter gets the
    first one it reserved (the worse priority), the other stays ready."""
    a, b, c = fes
    producer, waiter = connect(clients, c), connect(clients, b)
    holder = Client(a)
    try:
        worse, better = producer.put(b"worse", pri=1023), producer.put(b"better", pri=1)
        assert holder.ask(b"reserve-job %d" % worse).startswith(b"RESERVED")
        assert holder.ask(b"reserve-job %d" % better).startswith(b"RESERVED")
        waiter.send(b"reserve-with-timeout 10")
        wait_until_waiting(producer, b"default", 1)
    finally:
        holder.close()
    assert waiter.reply() == b"RESERVED %d 5 worse" % worse
    assert producer.fields(b"stats-job %d" % better)["state"] == "ready"
    assert waiter.ask(b"reserve-with-timeout 0") == b"RESERVED %d 6 better" % better
    for job in (worse, better):
        stats = producer.fields(b"stats-job %d" % job)
        assert (stats["reserves"], stats["timeouts"], stats["releases"]) == ("2", "0", "0")


def test_a_waiter_that_hangs_up_on_b_leaves_the_job_for_the_next(fes: list[Daemon],
                                                                 clients: list[Client]) -> None:
    """A waiter on B closes; a put on A meanwhile goes to the waiter on C or
    comes back from the closed one: either way C gets it, nothing is lost."""
    a, b, c = fes
    producer, survivor = connect(clients, a), connect(clients, c)
    gone = Client(b)
    gone.send(b"reserve")
    wait_until_waiting(producer, b"default", 1)
    survivor.send(b"reserve-with-timeout 10")
    wait_until_waiting(producer, b"default", 2)
    gone.close()
    job = producer.put(b"for whoever waits")
    assert survivor.reply() == b"RESERVED %d 17 for whoever waits" % job
    assert producer.fields(b"stats-tube default")["current-waiting"] == "0"
