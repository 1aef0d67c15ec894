"""The Redis store behind real Connections, on a real redis-server: batching,
replies in order, blocked reserves, hang-ups, errors, and two front ends on
one Redis (each a RedisStore with its own inbox)."""

from __future__ import annotations

from typing import Iterator

import pytest

from redis_rig import RedisServer, StoreRig, redis_server  # noqa: F401  (fixture)

from beanstalk_py.conn import Connection
from beanstalk_py.engine import NS
from beanstalk_py.stats import ServerInfo

T0 = 1_000 * NS
INFO = ServerInfo(started_at=T0, instance_id="0123456789abcdef", pid=1)


@pytest.fixture
def rig(redis_server: RedisServer) -> Iterator[StoreRig]:  # noqa: F811
    store_rig = StoreRig(redis_server)
    try:
        yield store_rig
    finally:
        store_rig.close()


def send(rig: StoreRig, conn: Connection, data: bytes, now: int = T0) -> bytes:
    conn.receive_data(data, now)
    rig.settle(now)
    return conn.take_output()


def test_one_write_per_pass_for_every_connection(rig: StoreRig) -> None:
    conns = [Connection(rig.store, INFO) for _ in range(50)]
    rig.settle(T0)
    pipe = rig.client.pipe
    batches, commands = pipe.sent_batches, pipe.sent_commands
    for conn in conns:  # one loop pass: every connection's put
        conn.receive_data(b"put 0 0 60 1\r\nx\r\n", T0)
    assert pipe.queued == 50
    rig.settle(T0)
    assert pipe.sent_batches - batches == 1
    # The 50 puts, and the command counts when they are due (every 100 ms).
    assert pipe.sent_commands - commands in (50, 51)
    assert sorted(conn.take_output() for conn in conns) == sorted(b"INSERTED %d\r\n" % i for i in range(1, 51))


def test_pipelined_replies_keep_their_order(rig: StoreRig) -> None:
    conn = Connection(rig.store, INFO)
    data = b"put 0 0 60 1\r\na\r\nput 5 0 60 1\r\nb\r\npeek 1\r\nbogus\r\nuse t\r\ndelete 2\r\nlist-tube-used\r\n"
    conn.receive_data(data, T0)
    assert conn.take_output() == b""  # nothing is known before Redis answers
    rig.settle(T0)
    assert conn.take_output() == (b"INSERTED 1\r\nINSERTED 2\r\nFOUND 1 1\r\na\r\nUNKNOWN_COMMAND\r\n"
                                  b"USING t\r\nDELETED\r\nUSING t\r\n")


def test_a_blocked_reserve_gets_a_later_put_and_holds_back_what_follows(rig: StoreRig) -> None:
    worker, producer = Connection(rig.store, INFO), Connection(rig.store, INFO)
    assert send(rig, worker, b"reserve\r\nlist-tube-used\r\n") == b""
    assert worker.blocked and rig.store.waiting_ct == 1
    assert send(rig, producer, b"put 0 0 60 2\r\nhi\r\n") == b"INSERTED 1\r\n"
    assert worker.take_output() == b"RESERVED 1 2\r\nhi\r\nUSING default\r\n"
    assert rig.store.waiting_ct == 0


def test_a_hang_up_gives_jobs_back_and_a_half_close_times_out(rig: StoreRig) -> None:
    holder, waiter = Connection(rig.store, INFO), Connection(rig.store, INFO)
    send(rig, holder, b"put 0 0 60 1\r\nx\r\nreserve\r\n")
    assert send(rig, waiter, b"reserve-with-timeout 10\r\n") == b""
    holder.close(T0)
    rig.settle(T0)
    assert waiter.take_output() == b"RESERVED 1 1\r\nx\r\n"
    assert send(rig, waiter, b"reserve\r\n") == b""
    waiter.receive_eof(T0)
    rig.settle(T0)
    assert waiter.take_output() == b"TIMED_OUT\r\n"


def test_a_redis_error_fails_the_command_not_the_connection(rig: StoreRig) -> None:
    conn = Connection(rig.store, INFO)
    send(rig, conn, b"put 0 0 60 1\r\nx\r\n")
    rig.client.execute("FUNCTION", "DELETE", "bs")
    assert send(rig, conn, b"delete 1\r\nlist-tube-used\r\n") == b"NOT_FOUND\r\nUSING default\r\n"
    assert rig.store.errors == 1


def test_two_front_ends_share_one_queue(redis_server: RedisServer) -> None:  # noqa: F811
    a = StoreRig(redis_server, fe_id="A")
    b = StoreRig(redis_server, fe_id="B", flush=False)
    try:
        on_a, on_b = Connection(a.store, INFO), Connection(b.store, INFO)
        waiter_b = Connection(b.store, INFO)
        # Put on A, reserve on B.
        assert send(a, on_a, b"use jobs\r\nput 0 0 60 3\r\none\r\n") == b"USING jobs\r\nINSERTED 1\r\n"
        assert send(b, on_b, b"watch jobs\r\nreserve-with-timeout 0\r\n") == b"WATCHING 2\r\nRESERVED 1 3\r\none\r\n"
        # A waiter on B, served by a put on A: the job reaches B through its inbox.
        assert send(b, waiter_b, b"watch jobs\r\nignore default\r\nreserve\r\n") == b"WATCHING 2\r\nWATCHING 1\r\n"
        assert send(a, on_a, b"put 0 0 60 3\r\ntwo\r\n") == b"INSERTED 2\r\n"
        b.store.tick(T0)
        b.settle(T0)
        assert waiter_b.take_output() == b"RESERVED 2 3\r\ntwo\r\n"
        # B's client holds job 1: A cannot delete it; a header on A takes its id first.
        assert send(a, on_a, b"delete 1\r\nput 0 0 60 1\r\n") == b"NOT_FOUND\r\n"
        assert send(b, on_b, b"put 0 0 60 1\r\nb\r\n") == b"INSERTED 4\r\n"
        assert send(a, on_a, b"a\r\n") == b"INSERTED 3\r\n"
        # The tube is seen from both front ends; stats-tube counts both clients.
        assert b"current-watching: 2" in send(a, on_a, b"stats-tube jobs\r\n")
    finally:
        a.close()
        b.close()


async def test_the_trio_transport_writes_one_batch_per_checkpoint(redis_server: RedisServer) -> None:  # noqa: F811
    import trio

    from beanstalk_py.redisstore.resp import BlockingRedis, TrioRedis
    from beanstalk_py.redisstore.store import RedisStore

    flusher = BlockingRedis("127.0.0.1", redis_server.port, db=3)
    flusher.execute("FLUSHDB")
    client = TrioRedis("127.0.0.1", redis_server.port, db=3)
    await client.connect()
    store = RedisStore(client, fe_id="T")

    def deliver() -> None:
        for owner, completion in store.take_completed():
            owner.deliver(completion, T0)

    client.on_replies = deliver
    store.start()
    conns = [Connection(store, INFO) for _ in range(20)]
    for conn in conns:  # all before the writer runs: one write
        conn.receive_data(b"put 0 0 60 1\r\nx\r\n", T0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        with trio.fail_after(5):
            while client.pipe.in_flight:
                await trio.sleep(0.005)
        assert client.pipe.sent_batches == 1
        assert sorted(conn.take_output() for conn in conns) == sorted(b"INSERTED %d\r\n" % i for i in range(1, 21))
        conns[0].receive_data(b"peek 20\r\n", T0)
        with trio.fail_after(5):
            while client.pipe.in_flight:
                await trio.sleep(0.005)
        assert conns[0].take_output() == b"FOUND 20 1\r\nx\r\n"
        assert client.pipe.sent_batches == 2
        nursery.cancel_scope.cancel()
    client.close()
    assert flusher.execute("EXISTS", "{bs}:j:20") == 1  # in database 3 (SELECT went first)
    flusher.close()
