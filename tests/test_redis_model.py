"""The Redis store against the in-memory engine, the specification.

Random sequences of client commands (several connections, blocking and
timed reserves, puts whose bodies come later or are bad, hang-ups) and clock
steps drive two servers through :class:`~beanstalk_py.conn.Connection`: one
on the :class:`~beanstalk_py.engine.Engine`, one on a
:class:`~beanstalk_py.redisstore.store.RedisStore` over a real redis-server
with the test's clock.  Every connection must get the same bytes from both,
``stats`` included (connection counters are per front end, and there is one).

After each step both are ticked at the step's time: the engine runs timers
only in ``tick``, the Redis library before each call, and ticking both after
every step keeps them at the same instants.
"""

from __future__ import annotations

import re
import resource
from typing import Any, Iterator
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_rig import RedisServer, StoreRig, redis_server  # noqa: F401  (fixture)

from beanstalk_py import stats as stats_module
from beanstalk_py.conn import Connection
from beanstalk_py.engine import NS, Engine
from beanstalk_py.stats import ServerInfo

T0 = 1_000 * NS
TUBES = ["default", "a", "b"]
CONNS = 3


def _Usage() -> resource.struct_rusage:
    """A fixed getrusage() (a real struct_rusage: the compiled stats module checks the type)."""
    return resource.struct_rusage((0.25, 0.5) + (0,) * 14)


def _body(data: bytes) -> bytes:
    return b"%d\r\n%s\r\n" % (len(data), data)


ids = st.integers(1, 5)
pris = st.sampled_from([0, 1, 1023, 1024, 70000])
tubes = st.sampled_from(TUBES)
bodies = st.sampled_from([b"", b"x", b"hello", b"a b", b"\r\n\x00"])

put = st.builds(lambda p, d, t, b: b"put %d %d %d " % (p, d, t) + _body(b), pris,
               st.sampled_from([0, 0, 0, 1, 2]), st.sampled_from([0, 1, 2, 3, 60]), bodies)
# The commands that move jobs between states come several times: they are
# what the orders (ready, delayed, buried, waiters, close) are made of.
worker = st.one_of(
    st.just(b"reserve-with-timeout 0\r\n"),
    st.just(b"reserve-with-timeout 0\r\n"),
    st.builds(lambda i, p: b"bury %d %d\r\n" % (i, p), ids, pris),
    st.builds(lambda i, p: b"bury %d %d\r\n" % (i, p), st.integers(1, 3), pris),
    st.builds(lambda n: b"kick %d\r\n" % n, st.sampled_from([1, 1, 2, 10])),
    st.sampled_from([b"peek-ready\r\n", b"peek-delayed\r\n", b"peek-buried\r\n"]),
)
command = st.one_of(
    put, put, worker, worker, worker,
    st.just(b"put 0 0 60 2\r\nabc\r\n"),  # bad CRLF: EXPECTED_CRLF, its id used up
    st.builds(lambda t: b"reserve-with-timeout %d\r\n" % t, st.sampled_from([0, 0, 1, 2])),
    st.just(b"reserve\r\n"),
    st.builds(lambda i: b"reserve-job %d\r\n" % i, ids),
    st.builds(lambda i: b"delete %d\r\n" % i, ids),
    st.builds(lambda i, p, d: b"release %d %d %d\r\n" % (i, p, d), ids, pris, st.sampled_from([0, 0, 1])),
    st.builds(lambda i, p: b"bury %d %d\r\n" % (i, p), ids, pris),
    st.builds(lambda i: b"touch %d\r\n" % i, ids),
    st.builds(lambda n: b"kick %d\r\n" % n, st.sampled_from([1, 2, 10])),
    st.builds(lambda i: b"kick-job %d\r\n" % i, ids),
    st.builds(lambda i: b"peek %d\r\n" % i, ids),
    st.sampled_from([b"peek-ready\r\n", b"peek-delayed\r\n", b"peek-buried\r\n", b"list-tubes\r\n",
                     b"list-tube-used\r\n", b"list-tubes-watched\r\n", b"stats\r\n", b"bogus\r\n"]),
    st.builds(lambda i: b"stats-job %d\r\n" % i, ids),
    st.builds(lambda t: b"stats-tube %s\r\n" % t.encode(), st.sampled_from(TUBES + ["c"])),
    st.builds(lambda t: b"use %s\r\n" % t.encode(), tubes),
    st.builds(lambda t: b"watch %s\r\n" % t.encode(), tubes),
    st.builds(lambda t: b"ignore %s\r\n" % t.encode(), tubes),
    st.builds(lambda t, d: b"pause-tube %s %d\r\n" % (t.encode(), d), tubes, st.sampled_from([0, 1, 2])),
)

send = st.tuples(st.just("send"), st.integers(0, CONNS - 1), st.lists(command, min_size=1, max_size=6),
                 st.integers(0, 40))  # a cut: the tail of the bytes comes in the next step
advance = st.tuples(st.just("advance"), st.sampled_from([250_000_000, NS, NS, 2 * NS, 61 * NS]))
hangup = st.tuples(st.just("close"), st.integers(0, CONNS - 1))
# A few plain puts first, so that ids 1..n usually exist (as test_protocol_fuzz does).
head = st.integers(0, 4).map(lambda n: [("send", 0, [b"put 0 0 60 1\r\n%d\r\n" % i for i in range(n)], 0)])
steps = st.builds(lambda first, rest: first + rest, head,
                  st.lists(st.one_of(send, send, send, send, advance, hangup), min_size=5, max_size=40))


class EngineSide:
    def __init__(self, info: ServerInfo) -> None:
        self.engine = Engine()
        self.info = info

    def conn(self) -> Connection:
        return Connection(self.engine, self.info)

    def settle(self, now: int) -> None:
        while batch := self.engine.take_completed():
            for owner, completion in batch:
                owner.deliver(completion, now)

    def tick(self, now: int) -> None:
        self.engine.tick(now)
        self.settle(now)


class RedisSide:
    def __init__(self, server: RedisServer, info: ServerInfo) -> None:
        self.rig = StoreRig(server)
        self.info = info

    def conn(self) -> Connection:
        return Connection(self.rig.store, self.info)

    def settle(self, now: int) -> None:
        self.rig.settle(now)

    def tick(self, now: int) -> None:
        self.rig.store.tick(now)
        self.rig.settle(now)


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:  # noqa: F811
    yield redis_server


def _same_id(reply: bytes) -> bytes:
    """`stats` id: the process's instance id in memory, the store's epoch in Redis."""
    return re.sub(rb"\nid: [0-9a-f]+\n", b"\nid: X\n", reply)


def run(server: RedisServer, plan: list[tuple[Any, ...]]) -> None:
    info = ServerInfo(started_at=T0, instance_id="0123456789abcdef", pid=1)
    sides = [EngineSide(info), RedisSide(server, info)]
    conns = [[side.conn() for _ in range(CONNS)] for side in sides]
    held = [b""] * CONNS  # bytes cut off the end of a send, sent with the next one
    now = T0
    try:
        for step in plan:
            if step[0] == "advance":
                now += step[1]
                for side in sides:
                    side.tick(now)
                continue
            index = step[1]
            if step[0] == "close":
                for side, side_conns in zip(sides, conns):
                    side_conns[index].close(now)
                    side.settle(now)
                    side_conns[index] = side.conn()
                held[index] = b""
            else:
                data = held[index] + b"".join(step[2])
                cut = max(0, len(data) - step[3])
                data, held[index] = data[:cut], data[cut:]
                for side, side_conns in zip(sides, conns):
                    side_conns[index].receive_data(data, now)
                    side.settle(now)
            for side in sides:
                side.tick(now)
            replies = [[_same_id(conn.take_output()) for conn in side_conns] for side_conns in conns]
            assert replies[1] == replies[0], step
    finally:
        sides[1].rig.close()  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_the_redis_store_answers_as_the_engine(server: RedisServer, plan: list[tuple[Any, ...]]) -> None:
    with mock.patch.object(stats_module.resource, "getrusage", return_value=_Usage()):
        run(server, plan)


def test_a_scripted_session(server: RedisServer) -> None:
    """A fixed walk through the commands (what the property test shrinks towards)."""
    plan = [
        ("send", 0, [b"watch a\r\n", b"reserve\r\n"], 0),
        ("send", 1, [b"use a\r\n", b"put 5 0 2 " + _body(b"hi"), b"put 0 1 60 " + _body(b"later")], 0),
        ("send", 0, [b"bury 1 9\r\n", b"stats-job 1\r\n", b"reserve-with-timeout 2\r\n"], 0),
        ("advance", NS),
        ("send", 0, [b"release 2 0 0\r\n", b"list-tubes\r\n", b"stats-tube a\r\n"], 5),
        ("send", 2, [b"pause-tube a 2\r\n", b"use a\r\n", b"kick 5\r\n"], 0),
        ("send", 0, [b"reserve-with-timeout 1\r\n"], 0),
        ("advance", NS),
        ("close", 1),
        ("send", 2, [b"stats\r\n"], 0),
        ("advance", 2 * NS),
    ]
    with mock.patch.object(stats_module.resource, "getrusage", return_value=_Usage()):
        run(server, plan)


def test_bury_kick_and_close_orders(server: RedisServer) -> None:
    """Orders the random walk reaches rarely: bury FIFO, kick order, and a
    closing client's jobs going to waiters in its reserve order."""
    put = b"put %d 0 60 1\r\nx\r\n"
    plan = [
        ("send", 0, [put % 5, put % 1, put % 3, put % 7, b"reserve-with-timeout 0\r\n" * 3], 0),
        ("send", 0, [b"bury 3 0\r\n", b"bury 2 0\r\n", b"bury 1 0\r\n", b"peek-buried\r\n", b"kick 1\r\n",
                     b"peek-buried\r\n", b"stats-job 3\r\n"], 0),
        ("send", 0, [b"reserve-with-timeout 0\r\n" * 2, b"touch 3\r\n"], 0),  # holds 3, then 4
        ("send", 1, [b"reserve\r\n"], 0),
        ("send", 2, [b"reserve-with-timeout 5\r\n"], 0),
        ("close", 0),
        ("send", 1, [b"stats-job 3\r\n", b"stats-job 4\r\n"], 0),
        ("advance", 5 * NS),
    ]
    with mock.patch.object(stats_module.resource, "getrusage", return_value=_Usage()):
        run(server, plan)


def test_a_reserve_job_makes_a_worker_from_its_place_in_the_command_order(server: RedisServer) -> None:
    """Found by the random walk: a reserve-job answered later makes its client
    a worker for a `stats` sent behind it, even when a reserve queued behind
    that `stats` already counted the client (and not twice when before it)."""
    plan = [
        ("send", 0, [b"put 0 0 0 0\r\n\r\n", b"put 0 0 0 0\r\n\r\n"], 0),
        ("send", 1, [b"reserve-job 1\r\n", b"stats\r\n", b"reserve-with-timeout 0\r\n"], 0),
        ("send", 2, [b"reserve-job 2\r\n", b"reserve-with-timeout 0\r\n", b"stats\r\n"], 0),
        ("send", 0, [b"reserve-job 9\r\n", b"stats\r\n"], 0),  # not found: not a worker
    ]
    with mock.patch.object(stats_module.resource, "getrusage", return_value=_Usage()):
        run(server, plan)
