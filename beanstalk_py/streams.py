"""The streams driver: one trio task per connection, on any ``trio.abc.Stream``.

It serves a listener through ``trio.serve_listeners``, so a plain TCP or unix
listener, or the same wrapped in ``trio.SSLListener`` for TLS, are served by
the same code.  It is the portable driver (systems without epoll, or
``BEANSTALK_PY_IO=tasks``); on Linux plain listeners go to the faster
:mod:`.epoll_loop`.  What it does with a connection is written once, in
:class:`~.dispatch.Dispatcher`; this module only moves bytes and waits.

A connection the store owes a reply (blocked in a reserve, or waiting for
any answer a network store gives later) waits in ``receive_some`` inside a
cancel scope; when the store hands it a job or an answer, :meth:`wake`
cancels the scope and the task sends the reply.  A closing connection with
replies still owed waits for them before it closes.  A cancelled receive on a
socket stream reads nothing, so no byte is lost.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Optional

import trio

from .conn import IO_CHUNK
from .dispatch import RECV_SIZE, Dispatcher, now_ns
from .tls import HandshakeLog, handshake


class _StreamWaker:
    """How the store's delivery wakes one connection's task."""

    __slots__ = ("scope", "whole")

    def __init__(self) -> None:
        self.scope: Optional[trio.CancelScope] = None
        self.whole: Optional[trio.CancelScope] = None  # the connection's whole life

    def wake(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    def hang_up(self) -> None:
        if self.whole is not None:
            self.whole.cancel()


class _AcceptPolicy(trio.abc.Listener[trio.SocketStream]):
    """A socket listener whose failed accepts follow the dispatcher's policy
    (refuse one client when out of descriptors, log once a second)."""

    def __init__(self, sock: socket.socket, dispatcher: Dispatcher) -> None:
        self._raw = sock
        self._inner = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._dispatcher = dispatcher

    async def accept(self) -> trio.SocketStream:
        while True:
            try:
                return await self._inner.accept()
            except OSError as exc:
                if self._dispatcher.accept_failed(self._raw, exc):
                    await trio.sleep(0.05)  # descriptors may free up meanwhile

    async def aclose(self) -> None:
        await self._inner.aclose()


def listener_for(
    sock: socket.socket, dispatcher: Dispatcher, ssl_context: Optional[ssl.SSLContext] = None
) -> trio.abc.Listener[Any]:
    """The trio listener for a bound, listening socket; with a context, its TLS wrapper."""
    plain = _AcceptPolicy(sock, dispatcher)
    if ssl_context is None:
        return plain
    return trio.SSLListener(plain, ssl_context, https_compatible=False)


async def serve(
    listener: trio.abc.Listener[Any], dispatcher: Dispatcher, handshake_timeout: float = 10.0
) -> None:
    """Serve every connection of ``listener`` until cancelled.

    A client past --max-connections is closed at once; a TLS client is served
    only once its handshake succeeded (see tls.py), so a failed one never
    reaches the store.
    """
    handshakes = HandshakeLog()

    async def handler(stream: trio.abc.Stream) -> None:
        if not dispatcher.admit():
            await trio.aclose_forcefully(stream)
            return
        if isinstance(stream, trio.SSLStream) and not await handshake(stream, handshake_timeout, handshakes):
            dispatcher.leave()
            await trio.aclose_forcefully(stream)
            return
        await serve_stream(stream, dispatcher)

    await trio.serve_listeners(handler, [listener])


def _fd_of(stream: trio.abc.Stream) -> int:
    inner: Any = stream
    while hasattr(inner, "transport_stream"):  # SSLStream and the like
        inner = inner.transport_stream
    sock = getattr(inner, "socket", None)
    return sock.fileno() if sock is not None else -1


async def serve_stream(stream: trio.abc.Stream, dispatcher: Dispatcher) -> None:
    """One connection from accept to close."""
    fd = _fd_of(stream)
    io = _StreamWaker()
    conn = dispatcher.open(fd, io)
    durability = dispatcher.durability
    whole = io.whole = trio.CancelScope()  # one per connection, not per read
    # A plain socket reads a big body straight into its buffer (TLS cannot:
    # its bytes go through receive_data, one more copy).
    sock = stream.socket if isinstance(stream, trio.SocketStream) else None
    try:
        with whole:
            while True:
                if conn.out:
                    if dispatcher.must_sync():
                        await trio.to_thread.run_sync(durability.sync)  # -f 0: only what is on disk
                    chunk = conn.take_chunk()
                    if len(chunk) <= IO_CHUNK:
                        await stream.send_all(chunk)
                    else:
                        # A job body (see Connection.take_chunk): IO_CHUNK
                        # slices, each send_all a checkpoint, so other tasks
                        # run between them.
                        with memoryview(chunk) as view:
                            for start in range(0, len(view), IO_CHUNK):
                                await stream.send_all(view[start:start + IO_CHUNK])
                    if not dispatcher.output_sent(conn, fd, now_ns()):
                        break
                    continue
                if conn.closing and not conn.outstanding:
                    break
                if conn.awaiting:
                    # The store owes it a reply (a blocked reserve, or a Later of a
                    # network store): wait for input and for the store's wake-up.
                    with trio.CancelScope() as scope:
                        io.scope = scope
                        if conn.wants_input:
                            data = await stream.receive_some(RECV_SIZE)
                        else:
                            await trio.sleep_forever()
                    io.scope = None
                    if scope.cancelled_caught:
                        continue
                else:
                    window = conn.body_window() if sock is not None else None
                    if window is None or sock is None:
                        data = await stream.receive_some(RECV_SIZE)
                    else:
                        # A big body: at most IO_CHUNK into its buffer, then a
                        # checkpoint (trio's recv_into), so other tasks run.
                        count = await sock.recv_into(window)
                        if count:
                            conn.body_received(count)
                            continue  # nothing to run before the body's last bytes
                        data = b""
                now = now_ns()
                dispatcher.store.tick(now)
                if not dispatcher.received(conn, fd, data, now):
                    break
                dispatcher.settle(now)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        io.scope = None
        dispatcher.close(conn, fd, now_ns())
        await trio.aclose_forcefully(stream)
