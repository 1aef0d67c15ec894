"""Serving during start-up imports (early.py), and the hand-over to trio."""

from __future__ import annotations

import socket
import sys
import types
from typing import Iterator

import pytest
import trio

from beanstalk_py.early import import_while_serving
from beanstalk_py.engine import Engine
from beanstalk_py.epoll_loop import EpollLoop
from beanstalk_py.hub import Hub, now_ns
from beanstalk_py.server import Server
from beanstalk_py.stats import ServerInfo

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="epoll is Linux only")


@pytest.fixture
def early_loop() -> Iterator[tuple[EpollLoop, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    engine = Engine()
    hub = Hub(engine, ServerInfo(started_at=now_ns()), [listener])
    loop = EpollLoop(hub, now_ns)
    client = socket.create_connection(listener.getsockname())
    loop.serve_ready()  # accepts the client
    assert len(loop.clients) == 1
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


def test_a_command_is_answered_before_the_next_module_runs(early_loop, tmp_path, monkeypatch) -> None:
    loop, client = early_loop
    seen: list[bytes] = []
    # The module reads the client's socket while it is being imported: the
    # reply must already be there, sent by the pass run when it was looked for.
    monkeypatch.setitem(sys.modules, "_early_probe", types.SimpleNamespace(check=lambda: seen.append(_recv_now(client))))
    _write_module(tmp_path, "early_mod_a", "import _early_probe\n_early_probe.check()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    client.sendall(b"put 0 0 60 2\r\nhi\r\n")
    import_while_serving(loop.serve_ready, ["early_mod_a"])
    assert seen == [b"INSERTED 1\r\n"]
    sys.modules.pop("early_mod_a", None)


def test_timers_fire_between_imports(early_loop, tmp_path, monkeypatch) -> None:
    loop, client = early_loop
    client.sendall(b"reserve-with-timeout 0\r\n")
    loop.serve_ready()
    assert _recv_now(client) == b"TIMED_OUT\r\n"
    client.sendall(b"reserve-with-timeout 1\r\n")
    loop.serve_ready()
    assert _recv_now(client) == b""
    # Pretend a second passed while a module was imported.
    monkeypatch.setattr(loop, "now_ns", lambda: now_ns() + 2_000_000_000)
    _write_module(tmp_path, "early_mod_b", "X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_while_serving(loop.serve_ready, ["early_mod_b"])
    assert _recv_now(client) == b"TIMED_OUT\r\n"
    sys.modules.pop("early_mod_b", None)


def test_the_finder_is_removed_even_when_an_import_fails(early_loop) -> None:
    loop, _client = early_loop
    before = list(sys.meta_path)
    with pytest.raises(ModuleNotFoundError):
        import_while_serving(loop.serve_ready, ["no_such_module_for_early_test"])
    assert sys.meta_path == before


async def test_trio_takes_over_the_early_connections(early_loop) -> None:
    loop, client = early_loop
    client.sendall(b"watch t\r\nreserve-with-timeout 5\r\n")
    loop.serve_ready()
    assert _recv_now(client) == b"WATCHING 2\r\n"  # the reserve now waits
    hub = loop.hub
    server = Server(hub.engine, hub.info, hub.listeners, epoll_loop=loop)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        with trio.socket.from_stdlib_socket(socket.create_connection(hub.listeners[0].getsockname())) as other:
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
    listener = loop.hub.listeners[0]
    loop.fd_ceiling = 0  # every new client is over the ceiling
    second = socket.create_connection(listener.getsockname())
    third = socket.create_connection(listener.getsockname())
    for _ in range(3):
        loop.serve_ready()
    assert len(loop.clients) == 2  # the second got in, then accepting paused
    first.sendall(b"quit\r\n")
    for _ in range(3):
        loop.serve_ready()
    assert len(loop.clients) == 2  # the first left, the third got in
    third.sendall(b"list-tube-used\r\n")
    loop.serve_ready()
    assert _recv_now(third) == b"USING default\r\n"
    second.close()
    third.close()
