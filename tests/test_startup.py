"""Serving while trio is imported on another thread (startup.py), and the hand-over to trio."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from typing import Iterator

import pytest
import trio

from beanstalk_py.dispatch import Dispatcher, now_ns
from beanstalk_py.engine import Engine
from beanstalk_py.epoll_loop import EpollLoop
from beanstalk_py.server import Server
from beanstalk_py.startup import Startup, Stopped
from beanstalk_py.stats import ServerInfo

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="epoll is Linux only")


@pytest.fixture
def early_loop() -> Iterator[tuple[EpollLoop, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    dispatcher = Dispatcher(Engine(), ServerInfo(started_at=now_ns()))
    loop = EpollLoop(dispatcher, [listener], now_ns)
    client = socket.create_connection(listener.getsockname())
    loop.serve_pass()  # accepts the client
    assert len(loop.sockets) == 1
    yield loop, client
    client.close()
    loop.close()
    listener.close()


def _write_module(directory, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(body)


def _recv_now(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)


def test_clients_are_answered_while_a_slow_import_runs(early_loop, tmp_path, monkeypatch) -> None:
    loop, client = early_loop
    # The module takes 0.5 s to import; the reply must come long before that.
    _write_module(tmp_path, "slow_mod_a", "import time\ntime.sleep(0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    got: list[tuple[bytes, float]] = []

    def client_side() -> None:
        start = time.monotonic()
        client.sendall(b"put 0 0 60 2\r\nhi\r\n")
        client.settimeout(5)
        got.append((client.recv(100), time.monotonic() - start))

    talker = threading.Thread(target=client_side)
    talker.start()
    Startup().serve_while_importing(loop, ["slow_mod_a"])
    talker.join()
    assert "slow_mod_a" in sys.modules
    reply, took = got[0]
    assert reply == b"INSERTED 1\r\n"
    assert took < 0.4, took
    sys.modules.pop("slow_mod_a", None)


def test_timers_fire_while_importing(early_loop, tmp_path, monkeypatch) -> None:
    loop, client = early_loop
    _write_module(tmp_path, "slow_mod_b", "import time\ntime.sleep(1.6)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    client.sendall(b"reserve-with-timeout 1\r\n")
    Startup().serve_while_importing(loop, ["slow_mod_b"])
    assert _recv_now(client) == b"TIMED_OUT\r\n"
    sys.modules.pop("slow_mod_b", None)


def test_an_import_error_is_raised_on_the_main_thread(early_loop) -> None:
    loop, _client = early_loop
    with pytest.raises(ModuleNotFoundError):
        Startup().serve_while_importing(loop, ["no_such_module_for_startup_test"])


def test_sigterm_while_importing_stops_start_up(early_loop, tmp_path, monkeypatch) -> None:
    loop, _client = early_loop
    _write_module(tmp_path, "slow_mod_c", "import time\ntime.sleep(0.3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    startup = Startup()
    startup.note(signal.SIGTERM, None)  # as the handler would, mid-import
    with pytest.raises(Stopped):
        startup.serve_while_importing(loop, ["slow_mod_c"])
    sys.modules.pop("slow_mod_c", None)


def test_early_signals_are_noted_not_raised() -> None:
    startup = Startup()
    startup.note(signal.SIGUSR1, None)
    startup.check()  # draining is not stopping
    engine = Engine()
    startup.attach(engine)
    assert engine.draining  # noted before the store existed
    other = Engine()
    startup.attach(other)
    startup.note(signal.SIGUSR1, None)
    assert other.draining
    startup.note(signal.SIGTERM, None)  # must not raise where it lands
    with pytest.raises(Stopped):
        startup.check()


async def test_trio_takes_over_the_early_connections(early_loop) -> None:
    loop, client = early_loop
    client.sendall(b"watch t\r\nreserve-with-timeout 5\r\n")
    loop.serve_pass(0.1)
    assert _recv_now(client) == b"WATCHING 2\r\n"  # the reserve now waits
    server = Server(loop.dispatcher, epoll=loop)
    address = next(iter(loop.listeners.values())).getsockname()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        with trio.socket.from_stdlib_socket(socket.create_connection(address)) as other:
            await other.send(b"use t\r\nput 0 0 60 1\r\nx\r\n")
            reply = b""
            while reply.count(b"\r\n") < 2:
                reply += await other.recv(100)
            assert reply == b"USING t\r\nINSERTED 1\r\n"
        client.setblocking(False)
        waiting = trio.socket.from_stdlib_socket(client)
        got = b""
        with trio.fail_after(5):
            while not got.endswith(b"x\r\n"):
                got += await waiting.recv(100)
        assert got == b"RESERVED 1 1\r\nx\r\n"
        nursery.cancel_scope.cancel()


def test_accepting_pauses_at_the_fd_ceiling_until_a_client_leaves(early_loop) -> None:
    loop, first = early_loop
    listener = next(iter(loop.listeners.values()))
    loop.fd_ceiling = 0  # every new client is over the ceiling
    second = socket.create_connection(listener.getsockname())
    third = socket.create_connection(listener.getsockname())
    for _ in range(3):
        loop.serve_pass(0.05)
    assert len(loop.sockets) == 2  # the second got in, then accepting paused
    first.sendall(b"quit\r\n")
    for _ in range(3):
        loop.serve_pass(0.05)
    assert len(loop.sockets) == 2  # the first left, the third got in
    third.sendall(b"list-tube-used\r\n")
    loop.serve_pass(0.1)
    assert _recv_now(third) == b"USING default\r\n"
    second.close()
    third.close()


def test_a_long_replay_says_how_far_it_is(tmp_path, monkeypatch, capsys) -> None:
    """A line while the binlog replays (here after every file: the interval is
    set to 0) and one when a large restore is done."""
    from beanstalk_py import main as daemon_main
    from beanstalk_py.options import parse_args

    opts = parse_args(["-b", str(tmp_path), "-s", "4096"])
    wal = daemon_main.open_binlog(opts, Engine())
    writer = Engine()
    writer.attach_wal(wal, wal.durability)
    for _ in range(60):
        assert writer.put_job(b"t", 0, 0, 60, b"x" * 200, now_ns())
    wal.close()
    capsys.readouterr()
    monkeypatch.setattr(daemon_main, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(daemon_main, "LARGE_REPLAY_JOBS", 60)
    again = Engine()
    daemon_main.open_binlog(opts, again).close()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "replaying the binlog in" in line]
    assert len(lines) >= 2 and "% of 0.0 MB after 0 s" in lines[0], err
    assert f"restored 60 jobs from the binlog in {tmp_path}" in err
    assert again.recovered_jobs() == 60 and len(again.tube_counters()) == 2
