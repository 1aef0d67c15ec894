"""Big job bodies (issue 12): received in place, sent without copies, and never
holding the server while they stream in or out.

The sans-IO half drives the parser and a connection the way the drivers do
(``body_window`` / ``recv_into`` / ``body_received``, ``take_chunk``); the daemon
half runs both I/O drivers (and, where the replies are compared, beanstalkd)
over real sockets, and checks progress and ordering, never timings.
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Iterator, Optional

import pytest

from beanstalk_py.conn import BIG_REPLY, IO_CHUNK
from beanstalk_py.protocol import EXPECTED_CRLF, IN_PLACE_BODY, JOB_TOO_BIG, Parser
from conftest import Daemon, start_beanstalk_py, start_reference
from rig import T0, Rig, drain

SIZE = 3 * IN_PLACE_BODY + 12345  # a body taken the in-place way


def body_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def fill_windows(parser: Parser, data: bytes, pieces: random.Random, limit: int) -> bytes:
    """Read ``data`` as a driver does: into body windows while there are any
    (at most ``limit`` bytes each, in pieces of random size, as recv_into
    returns them); returns what is left for feed()."""
    pos = 0
    while (window := parser.body_window(limit)) is not None:
        count = min(len(window), len(data) - pos, pieces.randint(1, 5000))
        window[:count] = data[pos:pos + count]
        parser.body_received(count)
        pos += count
    return data[pos:]


# ----------------------------------------------------------------- the parser


def test_big_body_fed_in_many_small_pieces() -> None:
    body = body_of(SIZE)
    stream = b"put 1 2 3 %d\r\n%s\r\nstats\r\n" % (SIZE, body)
    parser = Parser(10 * SIZE)
    pieces = random.Random(7)
    got: list[tuple] = []
    pos = 0
    while pos < len(stream):
        step = pieces.randint(1, 3000)
        parser.feed(stream[pos:pos + step])
        pos += step
        got += drain(parser)
    assert got == [("put", 1, 2, 3, SIZE), ("body", body + b"\r\n"), ("stats",)]
    assert parser.buffered == 0


def test_big_body_read_into_windows_then_its_crlf_by_feed() -> None:
    body = body_of(SIZE, seed=2)
    parser = Parser(10 * SIZE)
    parser.feed(b"put 0 0 1 %d\r\n%s" % (SIZE, body[:1000]))
    assert drain(parser) == [("put", 0, 0, 1, SIZE)]
    rest = fill_windows(parser, body[1000:] + b"\r\npeek 1\r\n", random.Random(3), limit=7000)
    # Windows stop before the CRLF: that, and what follows, come through feed.
    assert rest == b"\r\npeek 1\r\n"
    assert parser.next_request() is None
    parser.feed(rest)
    assert drain(parser) == [("body", body + b"\r\n"), ("peek", 1)]
    assert parser.body_window(IO_CHUNK) is None


def test_window_not_reported_is_handed_out_again() -> None:
    """A read that was cancelled (or failed) fills nothing: the same bytes are asked for again."""
    parser = Parser(10 * SIZE)
    parser.feed(b"put 0 0 1 %d\r\n" % SIZE)
    drain(parser)
    first = parser.body_window(4096)
    assert first is not None and len(first) == 4096
    again = parser.body_window(4096)
    assert again is not None and len(again) == 4096
    with pytest.raises(ValueError):
        first[0]  # released: the buffer may grow again
    again[:] = b"a" * 4096
    parser.body_received(4096)
    third = parser.body_window(10)
    assert third is not None and len(third) == 10


def test_big_body_without_its_crlf_is_expected_crlf() -> None:
    body = body_of(SIZE + 2, seed=4)  # the "CRLF" is two random bytes
    assert body[-2:] != b"\r\n"
    for windows in (False, True):
        parser = Parser(10 * SIZE)
        parser.feed(b"put 0 0 1 %d\r\n" % SIZE)
        assert drain(parser) == [("put", 0, 0, 1, SIZE)]
        rest = body + b"stats\r\n"
        if windows:
            rest = fill_windows(parser, rest, random.Random(5), limit=50_000)
        parser.feed(rest)
        assert drain(parser) == [("body-bad-crlf",), ("stats",)]


def test_oversized_body_is_thrown_away_in_pieces() -> None:
    limit = IN_PLACE_BODY
    size = 5 * IN_PLACE_BODY
    parser = Parser(limit)
    # The discarded bytes look like commands: none may run.
    junk = (b"put 0 0 1 1\r\nx\r\n" * size)[:size]
    stream = b"put 0 0 1 %d\r\n%s\r\nput 0 0 1 1\r\ny\r\n" % (size, junk)
    got: list[tuple] = []
    pieces = random.Random(6)
    pos = 0
    while pos < len(stream):
        assert parser.body_window(IO_CHUNK) is None  # nothing is kept of it
        step = pieces.randint(1, 40_000)
        parser.feed(stream[pos:pos + step])
        pos += step
        got += drain(parser)
    assert got == [("put-too-big",), ("reply", JOB_TOO_BIG), ("put-job", 0, 0, 1, b"y\r\n")]


# ----------------------------------------------------------------- the connection


def test_connection_receives_in_place_and_replies_with_the_jobs_own_bytes() -> None:
    rig = Rig(max_job_size=10 * SIZE)
    c = rig.conn()
    body = body_of(SIZE, seed=8)
    c.receive_data(b"put 0 0 60 %d\r\n%s" % (SIZE, body[:5000]), T0)
    rest = body[5000:] + b"\r\n"
    pos = 0
    while (window := c.body_window()) is not None:
        assert len(window) <= IO_CHUNK
        count = min(len(window), 4321)
        window[:count] = rest[pos:pos + count]
        c.body_received(count)
        pos += count
    assert c.take_output() == b""
    c.receive_data(rest[pos:], T0)
    assert c.take_chunk() == b"INSERTED 1\r\n"
    c2 = rig.conn()
    c2.receive_data(b"peek-ready\r\nreserve\r\nstats-job 1\r\n", T0)
    chunks = []
    while True:  # as a driver sends: a piece at a time, resuming held-back commands
        chunk = c2.take_chunk()
        if chunk:
            chunks.append(chunk)
        elif c2.resumable:
            c2.process(T0)
        else:
            break
    assert chunks[0] == b"FOUND 1 %d\r\n" % SIZE
    assert chunks[1] == body + b"\r\n"
    assert chunks[2] == b"RESERVED 1 %d\r\n" % SIZE
    assert chunks[3] is chunks[1]  # the job's own bytes, sent twice, never copied
    assert chunks[4].startswith(b"OK ") and len(chunks) == 5
    assert c2.out == [] and c2.out_size == 0


def test_take_output_still_gives_everything_joined() -> None:
    rig = Rig(max_job_size=10 * BIG_REPLY)
    c = rig.conn()
    body = body_of(BIG_REPLY, seed=9)
    c.receive_data(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body), T0)
    c.receive_data(b"peek 1\r\npeek 2\r\n", T0)
    assert c.take_output() == b"INSERTED 1\r\nFOUND 1 %d\r\n%s\r\nNOT_FOUND\r\n" % (len(body), body)


# ----------------------------------------------------------------- over sockets

BIG = 16 << 20  # bytes: several kernel socket buffers, many IO_CHUNKs


@pytest.fixture(params=["epoll", "tasks", "beanstalkd"])
def daemon(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A server with -z 32 MiB: beanstalk-py on each driver, and the reference."""
    if request.param == "beanstalkd":
        started = start_reference("-z", str(2 * BIG))
    else:
        monkeypatch.setenv("BEANSTALK_PY_IO", "tasks" if request.param == "tasks" else "")
        started = start_beanstalk_py("-z", str(2 * BIG))
    try:
        yield started
    finally:
        started.stop()


class Client:
    def __init__(self, daemon: Daemon) -> None:
        self.sock = daemon.connect()
        self.sock.settimeout(30)
        self.buf = bytearray()

    def line(self) -> bytes:
        while (pos := self.buf.find(b"\r\n")) < 0:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "server closed"
            self.buf += chunk
        line = bytes(self.buf[:pos])
        del self.buf[:pos + 2]
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "server closed"
            self.buf += chunk
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def ask(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.line()

    def round_trip(self) -> None:
        """A small put, reserve and delete in the client's own tube."""
        job = self.ask(b"put 0 0 60 2\r\nhi\r\n")
        assert job.startswith(b"INSERTED ")
        reply = self.ask(b"reserve-with-timeout 0\r\n")
        assert reply.startswith(b"RESERVED ") and self.exactly(4) == b"hi\r\n"
        assert self.ask(b"delete %s\r\n" % reply.split()[1]) == b"DELETED"


def other_client(daemon: Daemon) -> Client:
    other = Client(daemon)
    assert other.ask(b"use other\r\n") == b"USING other"
    assert other.ask(b"watch other\r\n") == b"WATCHING 2"
    assert other.ask(b"ignore default\r\n") == b"WATCHING 1"
    return other


@pytest.mark.daemon
def test_other_client_is_served_while_a_big_body_streams_in(daemon: Daemon) -> None:
    big, other = Client(daemon), other_client(daemon)
    body = body_of(BIG, seed=10)
    big.sock.sendall(b"put 0 0 60 %d\r\n" % BIG)
    step = BIG // 8
    for start in range(0, BIG, step):
        # A piece of the body in flight (the server reads it meanwhile), then
        # the other client's commands: each answered before the put is.
        sender = threading.Thread(target=big.sock.sendall, args=(body[start:start + step],))
        sender.start()
        other.round_trip()
        sender.join()
    other.round_trip()
    inserted = big.ask(b"\r\n")
    assert inserted.startswith(b"INSERTED ")
    reply = big.ask(b"reserve-with-timeout 0\r\n")
    assert reply == b"RESERVED %s %d" % (inserted.split()[1], BIG)
    assert big.exactly(BIG + 2) == body + b"\r\n"


@pytest.mark.daemon
def test_other_client_is_served_while_a_big_reply_waits_for_its_reader(daemon: Daemon) -> None:
    big, other = Client(daemon), other_client(daemon)
    body = body_of(BIG, seed=11)
    assert big.ask(b"put 0 0 60 %d\r\n%s\r\n" % (BIG, body)) == b"INSERTED 1"
    # The reply is far bigger than the socket buffers and nobody reads it:
    # the server must go on serving everyone else meanwhile.
    big.sock.sendall(b"reserve-with-timeout 0\r\npeek 1\r\n")
    for _ in range(20):
        other.round_trip()
    assert big.line() == b"RESERVED 1 %d" % BIG
    assert big.exactly(BIG + 2) == body + b"\r\n"
    assert big.line() == b"FOUND 1 %d" % BIG
    assert big.exactly(BIG + 2) == body + b"\r\n"
    other.round_trip()


@pytest.mark.daemon
def test_big_body_without_its_crlf(daemon: Daemon) -> None:
    big = Client(daemon)
    body = body_of(BIG, seed=12)
    big.sock.sendall(b"put 0 0 60 %d\r\n" % (BIG - 2))
    for start in range(0, BIG, 1 << 20):
        big.sock.sendall(body[start:start + (1 << 20)])  # ends in two random bytes, not CRLF
    assert big.line() + b"\r\n" == EXPECTED_CRLF
    # The failed put used up id 1, as in 1.12.
    assert big.ask(b"put 0 0 60 1\r\nx\r\n") == b"INSERTED 2"
    assert big.ask(b"peek-ready\r\n") == b"FOUND 2 1"


@pytest.mark.daemon
def test_too_big_body_is_drained(monkeypatch: pytest.MonkeyPatch) -> None:
    for driver in ("", "tasks"):
        monkeypatch.setenv("BEANSTALK_PY_IO", driver)
        server: Optional[Daemon] = None
        try:
            server = start_beanstalk_py("-z", str(1 << 20))
            check_too_big(server)
        finally:
            if server is not None:
                server.stop()


@pytest.mark.daemon
def test_too_big_body_is_drained_by_the_reference() -> None:
    server = start_reference("-z", str(1 << 20))
    try:
        check_too_big(server)
    finally:
        server.stop()


def check_too_big(server: Daemon) -> None:
    big = Client(server)
    size = 8 << 20
    junk = (b"put 0 0 1 1\r\nx\r\n" * size)[:size]  # must not be read as commands
    big.sock.sendall(b"put 0 0 60 %d\r\n" % size)
    other = other_client(server)
    for start in range(0, size, 1 << 20):
        big.sock.sendall(junk[start:start + (1 << 20)])
        other.round_trip()
    assert big.ask(b"\r\nput 0 0 60 1\r\ny\r\n") + b"\r\n" == JOB_TOO_BIG
    inserted = big.line()
    assert inserted.startswith(b"INSERTED ")
    assert big.ask(b"peek-ready\r\n") == b"FOUND %s 1" % inserted.split()[1]
    sock: socket.socket = big.sock
    sock.close()
