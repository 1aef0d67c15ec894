"""TrioRedis's own I/O against a scripted fake server (no redis-server needed).

Store mode reads and writes a plain TCP connection to Redis on its
descriptor (resp.py): a reset connection must still end ``run`` with
RedisLost, which the service reconnects after, and replies must still be
answered in order across reads.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest
import trio

pytest.importorskip("hiredis")

from beanstalk_py.redisstore.resp import RedisLost, TrioRedis  # noqa: E402

ROLE_MASTER = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"


def fake_redis(script) -> tuple[int, threading.Thread]:
    """A one-connection server on a free port that runs ``script(conn)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        conn.recv(1024)  # ROLE
        conn.sendall(ROLE_MASTER)
        script(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_a_reset_connection_ends_run_with_redis_lost() -> None:
    def reset(conn: socket.socket) -> None:
        conn.recv(1024)  # the PING below
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST, not FIN: ECONNRESET on the client

    port, thread = fake_redis(reset)

    async def main() -> None:
        client = TrioRedis("127.0.0.1", port)
        await client.connect()
        client.pipe.call((b"PING",), None)
        client.wake()
        with trio.fail_after(5):
            with pytest.raises(RedisLost):
                await client.run()
        client.close()

    trio.run(main)
    thread.join(5)


def test_replies_split_over_reads_answer_in_order() -> None:
    def answer(conn: socket.socket) -> None:
        got = b""
        while got.count(b"PING") < 3:
            got += conn.recv(1024)
        for piece in (b"+PO", b"NG\r\n:2\r\n$", b"1\r\nx\r\n"):
            conn.sendall(piece)
            threading.Event().wait(0.02)
        conn.recv(1024)  # until the client closes

    port, thread = fake_redis(answer)
    replies: list[object] = []

    async def main() -> None:
        client = TrioRedis("127.0.0.1", port)
        await client.connect()
        for _ in range(3):
            client.pipe.call((b"PING",), replies.append)
        client.wake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(5):
                while len(replies) < 3:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        client.close()

    trio.run(main)
    thread.join(5)
    assert replies == [b"PONG", 2, b"x"]
