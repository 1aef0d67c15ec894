"""RESP (the Redis protocol) without I/O, and the two drivers that move its bytes.

:class:`Pipeline` is sans-IO, in the style of :mod:`..protocol`: callers
queue commands with a callback, :meth:`Pipeline.data_to_send` hands back
every queued command as one buffer, and bytes fed to
:meth:`Pipeline.receive_data` are parsed by ``hiredis.Reader`` (a C parser,
itself sans-IO) and answer the callbacks in order.  One connection's replies
come back in command order, so a FIFO of callbacks is all the bookkeeping.

Batching is the design rule (design/scale-out.md, section 6, measured on
this 2-core VM): put+reserve+delete cost Redis 177 us of CPU per job when
every command was its own round trip, 21-37 us when a front end wrote all the
commands of one loop pass at once.  So nothing here writes per command:
:class:`BlockingRedis` (tests, tools) sends a whole batch with one
``sendall``, and :class:`TrioRedis` writes whatever accumulated since its
last write with one ``send``.

Encoding by hand costs 1.4-2.9 us per call with hiredis parsing replies;
coredis on trio cost 100-300 us per call (measured, same section).
"""

from __future__ import annotations

import socket
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

try:
    import hiredis
except ImportError:  # pragma: no cover - checked by the caller (main.py)
    hiredis = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import trio

Arg = Union[bytes, str, int]
# What a reply parses to: bytes, int, None, a list of replies, or a ReplyError.
Reply = object
Callback = Callable[[Reply], None]

MISSING_HIREDIS = ("the Redis store needs the hiredis package: "
                   "pip install 'beanstalk-py[redis]' (or pip install hiredis)")


class RedisError(Exception):
    """An error reply, or the connection to Redis failed."""


def encode(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = b"%d" % arg
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def is_error(reply: Reply) -> bool:
    return hiredis is not None and isinstance(reply, hiredis.ReplyError)


class Pipeline:
    """Commands out, replies in, callbacks answered in order; no sockets."""

    __slots__ = ("_out", "_waiting", "_reader", "sent_batches", "sent_commands", "on_flush")

    def __init__(self) -> None:
        if hiredis is None:
            raise RedisError(MISSING_HIREDIS)
        self._out: list[bytes] = []
        self._waiting: deque[Optional[Callback]] = deque()
        self._reader = hiredis.Reader()
        # For the figures in the tests and the bench: writes and commands sent.
        self.sent_batches = 0
        self.sent_commands = 0
        # Called as a batch is taken, to add its last commands (the store's inbox read).
        self.on_flush: Optional[Callable[[], None]] = None

    def call(self, args: Sequence[Arg], callback: Optional[Callback] = None) -> None:
        """Queue one command; ``callback`` gets its reply (None: ignore it)."""
        self._out.append(encode(args))
        self._waiting.append(callback)

    def call_first(self, args: Sequence[Arg]) -> None:
        """Queue a command ahead of everything queued and not yet sent (a
        new connection's SELECT); its reply is ignored."""
        assert len(self._out) == len(self._waiting), "only before anything was sent"
        self._out.insert(0, encode(args))
        self._waiting.appendleft(None)

    @property
    def queued(self) -> int:
        """Commands queued and not yet taken by :meth:`data_to_send`."""
        return len(self._out)

    @property
    def in_flight(self) -> int:
        """Commands whose replies have not arrived (queued ones included)."""
        return len(self._waiting)

    def data_to_send(self) -> bytes:
        """Everything queued, as one buffer (empty when nothing is)."""
        out = self._out
        if not out:
            return b""
        if self.on_flush is not None:
            self.on_flush()
        self.sent_batches += 1
        self.sent_commands += len(out)
        data = b"".join(out)
        out.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Parse replies and answer their callbacks, oldest command first."""
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            callback = waiting.popleft()
            if callback is not None:
                callback(reply)

    def fail_all(self, error: RedisError) -> None:
        """The connection broke: every unanswered command gets ``error``."""
        self._out.clear()
        waiting = self._waiting
        self._waiting = deque()
        self._reader = hiredis.Reader()
        for callback in waiting:
            if callback is not None:
                callback(error)


class BlockingRedis:
    """A pipeline on a blocking socket: queue commands, then :meth:`flush` them.

    For tests and tools; the daemon uses :class:`TrioRedis`.
    """

    def __init__(self, host: str, port: int, db: int = 0, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pipe = Pipeline()
        if db:
            self.execute("SELECT", db)

    def flush(self) -> None:
        """Send every queued command in one write and read until all are answered."""
        data = self.pipe.data_to_send()
        if data:
            self.sock.sendall(data)
        while self.pipe.in_flight:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RedisError("redis closed the connection")
            self.pipe.receive_data(chunk)

    def wake(self) -> None:
        """Nothing to do: :meth:`flush` writes what was queued."""

    def execute(self, *args: Arg) -> Reply:
        """One command, answered now; an error reply is raised."""
        box: list[Reply] = []
        self.pipe.call(args, box.append)
        self.flush()
        if is_error(box[0]):
            raise RedisError(str(box[0]))
        return box[0]

    def close(self) -> None:
        self.sock.close()


class TrioRedis:
    """A pipeline on a trio socket: one write per pass for all that was queued.

    :meth:`wake` (called by the store after queueing) lets the writer task
    run at the caller's next checkpoint, so every command queued in one loop
    pass leaves in one ``send``; the reader task parses replies as they come.
    ``on_replies`` runs after each chunk of replies was handled (the store
    hands its completions to the connections there).
    """

    def __init__(self, host: str, port: int, db: int = 0,
                 on_replies: Optional[Callable[[], None]] = None) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.pipe = Pipeline()
        self.on_replies = on_replies or (lambda: None)
        self._sock: Optional["trio.socket.SocketType"] = None
        self._wanted: Optional["trio.Event"] = None

    async def connect(self) -> None:
        """Connect (RedisError naming the address if that fails)."""
        import trio

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            infos = await trio.socket.getaddrinfo(self.host, self.port, family, socket.SOCK_STREAM)
            sock = trio.socket.socket(infos[0][0], socket.SOCK_STREAM)
            try:
                await sock.connect(infos[0][4])
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise RedisError(f"cannot connect to redis at {self.host}:{self.port}: "
                             f"{exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._wanted = trio.Event()
        if self.db:
            self.pipe.call_first(("SELECT", self.db))

    def wake(self) -> None:
        """Commands were queued: write them at the next checkpoint."""
        if self._wanted is not None:
            self._wanted.set()

    async def execute(self, *args: Arg) -> Reply:
        """Queue one command (written with the rest of the pass) and wait for its reply."""
        import trio

        box: list[Reply] = []
        done = trio.Event()

        def answered(reply: Reply) -> None:
            box.append(reply)
            done.set()

        self.pipe.call(args, answered)
        self.wake()
        await done.wait()
        return box[0]

    async def run(self) -> None:
        """Write and read until cancelled (or the connection fails)."""
        import trio

        assert self._sock is not None, "connect() first"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader)
            await self._writer()

    async def _writer(self) -> None:
        import trio

        sock = self._sock
        assert sock is not None
        while True:
            assert self._wanted is not None
            await self._wanted.wait()
            self._wanted = trio.Event()
            data = self.pipe.data_to_send()
            view = memoryview(data)
            while view:
                sent = await sock.send(view)
                view = view[sent:]

    async def _reader(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            chunk = await sock.recv(1 << 16)
            if not chunk:
                self.pipe.fail_all(RedisError("redis closed the connection"))
                self.on_replies()
                raise RedisError("redis closed the connection")
            self.pipe.receive_data(chunk)
            self.on_replies()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
