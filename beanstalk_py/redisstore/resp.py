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

import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Awaitable, Callable, Optional, Sequence, Union

try:
    import hiredis
except ImportError:  # pragma: no cover - checked by the caller (main.py)
    hiredis = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import ssl

    import trio

Arg = Union[bytes, str, int]
# What a reply parses to: bytes, int, None, a list of replies, or a ReplyError.
Reply = object
Callback = Callable[[Reply], None]

MISSING_HIREDIS = ("the Redis store needs the hiredis package: "
                   "pip install 'beanstalk-py[redis]' (or pip install hiredis)")


class RedisError(Exception):
    """An error reply, or the connection to Redis failed."""


class RedisLost(RedisError):
    """The connection is no use any more: closed, reset, or the server
    stopped being a writable primary (READONLY after a failover demoted it)."""


# Error replies that mean "this connection no longer reaches the primary":
# the replies still owed are given up (fail_all) and the front end reconnects.
_LOST_PREFIXES = (b"READONLY", b"MASTERDOWN")
_WAIT_MARK: "Callback" = lambda reply: None  # noqa: E731 - the pipeline's own WAIT


class _Unheld:
    """A callback answered as soon as its reply comes, even while replies
    wait for replicas: the front end's own calls (set-up, lease, ticks),
    which no client is told about, and which must not stall behind a WAIT."""

    __slots__ = ("callback",)

    def __init__(self, callback: "Callback") -> None:
        self.callback = callback

    def __call__(self, reply: "Reply") -> None:
        self.callback(reply)


def first_redis_error(group: BaseExceptionGroup[BaseException]) -> Optional[RedisError]:
    """The RedisError that ended a nursery (the others' tasks were cancelled), if one did."""
    found: Optional[BaseException] = group.subgroup(lambda exc: isinstance(exc, RedisError))
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if isinstance(found, RedisError) else None


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


# hiredis's own encoder (C): 1.1 us per put's FCALL (11 arguments, a 100-byte
# body) against 3.1 us for encode() above (timeit, this VM).  It refuses what
# encode() takes beyond bytes, str and int (a bool, a list): those go through
# encode().
_pack = hiredis.pack_command if hiredis is not None else encode


def pack(args: Sequence[Arg]) -> bytes:
    try:
        return _pack(args)  # type: ignore[arg-type]
    except TypeError:
        return encode(args)


def is_error(reply: Reply) -> bool:
    return hiredis is not None and isinstance(reply, hiredis.ReplyError)


class Pipeline:
    """Commands out, replies in, callbacks answered in order; no sockets."""

    __slots__ = ("_out", "_waiting", "_reader", "sent_batches", "sent_commands", "on_flush",
                 "_wait_cmd", "_replicas", "_held", "wants_write", "waits")

    def __init__(self, replicas: int = 0, wait_ms: int = 100) -> None:
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
        # --durability replica:N:MS: every batch ends with WAIT N MS and its
        # replies are held until a WAIT says N replicas have the writes (one
        # that says fewer is sent again: a change is never answered before).
        self._replicas = replicas
        self._wait_cmd = encode((b"WAIT", replicas, wait_ms)) if replicas else b""
        self._held: list[tuple[Callback, Reply]] = []
        self.wants_write = False  # a WAIT to send again: the driver should write
        self.waits = 0  # WAITs that had to be sent again (replicas slow or gone)

    def call(self, args: Sequence[Arg], callback: Optional[Callback] = None, held: bool = True) -> None:
        """Queue one command; ``callback`` gets its reply (None: ignore it).
        ``held=False``: answered at once even under --durability replica."""
        self._out.append(pack(args))
        self._waiting.append(callback if held or callback is None else _Unheld(callback))

    def call_first(self, calls: Sequence[tuple[Sequence[Arg], Optional[Callback]]]) -> None:
        """Queue ``calls``, in order, ahead of everything queued and not yet
        sent: a new connection's set-up before what clients asked meanwhile
        (answered as they come, not held for replicas)."""
        assert len(self._out) == len(self._waiting), "only before anything was sent"
        self._out[0:0] = [pack(args) for args, _ in calls]
        self._waiting.extendleft(None if callback is None else _Unheld(callback) for _, callback in reversed(calls))

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
        if self._replicas and out[-1] is not self._wait_cmd:  # (not twice: one asked again is last)
            out.append(self._wait_cmd)
            self._waiting.append(_WAIT_MARK)
        self.wants_write = False
        data = b"".join(out)
        out.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Parse replies and answer their callbacks, oldest command first."""
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        replicas = self._replicas
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if type(reply) is hiredis.ReplyError and str(reply).encode().startswith(_LOST_PREFIXES):
                # Not answered: fail_all gives it up with the rest.
                raise RedisLost(f"redis is no longer the primary: {reply}")
            next_callback = waiting.popleft()
            if next_callback is None:
                continue
            callback: Callback = next_callback
            if not replicas or type(callback) is _Unheld:
                callback(reply)
            elif callback is _WAIT_MARK:
                self._waited(reply)
            else:
                self._held.append((callback, reply))

    def _waited(self, reply: Reply) -> None:
        """A WAIT's reply: enough replicas have everything before it, or ask again."""
        if isinstance(reply, int) and reply >= self._replicas:
            held = self._held
            self._held = []
            for callback, answer in held:
                callback(answer)
            return
        self.waits += 1
        self._out.append(self._wait_cmd)
        self._waiting.append(_WAIT_MARK)
        self.wants_write = True

    def fail_all(self, error: RedisError) -> None:
        """The connection broke: every unanswered command gets ``error``
        (with --durability replica, also those answered but not yet confirmed)."""
        self._out.clear()
        waiting = self._waiting
        self._waiting = deque()
        self._reader = hiredis.Reader()
        held = self._held
        self._held = []
        self.wants_write = False
        for answer, _ in held:
            answer(error)
        for pending in waiting:
            if pending is not None and pending is not _WAIT_MARK:
                pending(error)


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


class Credentials:
    """How to reach a Redis server beyond its address: AUTH, database, TLS."""

    __slots__ = ("username", "password", "db", "ssl_context")

    def __init__(self, db: int = 0, username: str = "", password: str = "",
                 ssl_context: Optional["ssl.SSLContext"] = None) -> None:
        self.db = db
        self.username = username
        self.password = password
        self.ssl_context = ssl_context

    def setup_commands(self) -> list[tuple[Arg, ...]]:
        """What a new connection sends before anything else."""
        commands: list[tuple[Arg, ...]] = []
        if self.password:
            commands.append((b"AUTH", self.username, self.password) if self.username else (b"AUTH", self.password))
        if self.db:
            commands.append((b"SELECT", self.db))
        return commands


async def open_redis_stream(host: str, port: int, credentials: Credentials) -> "trio.abc.Stream":
    """A connected (and, with a context, TLS-wrapped) stream to one server."""
    import trio

    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise RedisLost(f"cannot connect to redis at {host}:{port}: {exc.strerror or exc}") from None
    try:
        inner = stream
        assert isinstance(inner, trio.SocketStream)
        inner.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if credentials.ssl_context is not None:
            tls = trio.SSLStream(stream, credentials.ssl_context, server_hostname=host)
            await tls.do_handshake()
            stream = tls
    except (OSError, trio.BrokenResourceError) as exc:
        await trio.aclose_forcefully(stream)
        raise RedisLost(f"TLS with redis at {host}:{port} failed: {exc}") from None
    return stream


async def ask(stream: "trio.abc.Stream", commands: Sequence[Sequence[Arg]]) -> list[Reply]:
    """Send ``commands`` and read their replies (set-up and Sentinel questions,
    not the pipelined traffic).  RedisLost if the server hangs up."""
    import trio

    reader = hiredis.Reader()
    try:
        await stream.send_all(b"".join(encode(command) for command in commands))
        replies: list[Reply] = []
        while len(replies) < len(commands):
            reply = reader.gets()
            if reply is not False:
                replies.append(reply)
                continue
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                raise RedisLost("redis closed the connection")
            reader.feed(bytes(chunk))
    except (OSError, trio.BrokenResourceError) as exc:
        raise RedisLost(f"redis connection failed: {exc}") from None
    return replies


class TrioRedis:
    """A pipeline on a trio stream: one write per pass for all that was queued.

    :meth:`wake` (called by the store after queueing) lets the writer task
    run at the caller's next checkpoint, so every command queued in one loop
    pass leaves in one ``send``; the reader task parses replies as they come.
    ``on_replies`` runs after each chunk of replies was handled (the store
    hands its completions to the connections there).

    The same object serves one connection after another (:meth:`connect` to
    the address of the moment: a failover moves the primary); what was
    queued while none was open is sent once one is, behind its set-up.
    """

    def __init__(self, host: str, port: int, db: int = 0,
                 on_replies: Optional[Callable[[], None]] = None, *,
                 credentials: Optional[Credentials] = None, replicas: int = 0, wait_ms: int = 100) -> None:
        self.host = host
        self.port = port
        self.credentials = credentials if credentials is not None else Credentials(db)
        self.pipe = Pipeline(replicas, wait_ms)
        self.on_replies = on_replies or (lambda: None)
        self._stream: Optional["trio.abc.Stream"] = None
        self._wanted: Optional["trio.Event"] = None
        self._fd = -1  # a plain TCP connection's descriptor (-1: TLS: through the stream)

    async def connect(self, host: Optional[str] = None, port: Optional[int] = None) -> None:
        """Connect (to ``host:port`` if given), authenticate, select the
        database and check the server is a primary: RedisLost naming the
        address if any of that fails (RedisError for a refused AUTH)."""
        import trio

        if host is not None and port is not None:
            self.host, self.port = host, port
        self.close()
        stream = await open_redis_stream(self.host, self.port, self.credentials)
        try:
            setup = self.credentials.setup_commands()
            replies = await ask(stream, [*setup, (b"ROLE",)])
            for command, reply in zip(setup, replies):
                if is_error(reply):
                    what = "AUTH" if command[0] == b"AUTH" else "SELECT"
                    raise RedisError(f"redis at {self.host}:{self.port} refused {what}: {reply}")
            role = replies[-1]
            if is_error(role):
                raise RedisError(f"redis at {self.host}:{self.port}: ROLE: {role}")
            if not (isinstance(role, list) and role and role[0] == b"master"):
                kind = role[0].decode() if isinstance(role, list) and role else "?"
                raise RedisLost(f"redis at {self.host}:{self.port} is a {kind}, not the primary")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self._stream = stream
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._wanted = trio.Event()
        if self.pipe.queued:
            self._wanted.set()

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
        """Write and read until cancelled; RedisLost when the connection fails."""
        import trio

        assert self._stream is not None, "connect() first"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._reader)
                await self._guarded(self._writer)
        except BaseExceptionGroup as group:
            lost = first_redis_error(group)
            if lost is None:
                raise
            raise lost from None

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        """``task``, its connection's failures raised as RedisLost.  Inside
        the task, not around the nursery: trio's nurseries wrap what their
        tasks raise in an ExceptionGroup, which ``except OSError`` around
        the nursery never caught (a reset connection, ECONNRESET, then
        escaped the service's first_redis_error as no RedisError)."""
        import trio

        try:
            await task()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise RedisLost(f"lost the connection to redis at {self.host}:{self.port}: {exc}") from None

    # A plain TCP connection (not TLS) is written and read with os.write and
    # os.read on its descriptor, waiting with trio.lowlevel.wait_writable /
    # wait_readable only when the kernel says EAGAIN.  trio's send_all and
    # receive_some end every call that moved bytes with one more checkpoint
    # (a pass of the loop) and receive_some first tries a recv that mostly
    # says EAGAIN.  Measured (one front end pinned with Redis on one CPU,
    # 3 alternating runs of 2 s, 2026-11-30): prd-25x25 3,839 -> 4,220
    # jobs/s (medians), front end 193 -> 171 us of CPU per job; latency:
    # recv calls 14.9 -> 11.6 per put+reserve+delete (throughput within noise).
    async def _writer(self) -> None:
        import trio

        stream = self._stream
        assert stream is not None
        while True:
            assert self._wanted is not None
            await self._wanted.wait()
            self._wanted = trio.Event()
            data = self.pipe.data_to_send()
            if not data:
                continue
            fd = self._fd
            if fd < 0:
                await stream.send_all(data)
                continue
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                with memoryview(data) as view:
                    while sent < len(view):
                        await trio.lowlevel.wait_writable(fd)
                        try:
                            sent += os.write(fd, view[sent:])
                        except BlockingIOError:
                            pass

    async def _reader(self) -> None:
        import trio

        stream = self._stream
        assert stream is not None
        pipe = self.pipe
        fd = self._fd
        while True:
            if fd < 0:
                chunk = bytes(await stream.receive_some(1 << 16))
            else:
                # Wait first: replies are rarely there already when the
                # reader comes back (it took all there were), so a read first
                # would mostly be an EAGAIN.  The wait is the checkpoint.
                await trio.lowlevel.wait_readable(fd)
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
            if not chunk:
                raise RedisLost(f"redis at {self.host}:{self.port} closed the connection")
            pipe.receive_data(chunk)
            if pipe.wants_write:
                self.wake()
            self.on_replies()

    def close(self) -> None:
        """Drop the connection (what is queued stays queued for the next)."""
        stream, self._stream = self._stream, None
        self._wanted = None
        self._fd = -1
        if stream is not None:
            import trio

            # Every stream here is a socket's, maybe in TLS (open_redis_stream).
            inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
            assert isinstance(inner, trio.SocketStream)
            inner.socket.close()


async def sentinel_primary(sentinels: Sequence[tuple[str, int]], master: str, credentials: Credentials,
                           timeout: float = 1.0) -> tuple[str, int]:
    """The primary's address for ``master``, asked of each Sentinel in turn
    (RedisLost naming each one's answer if none knows)."""
    import trio

    plain = Credentials(ssl_context=credentials.ssl_context)  # Sentinels: TLS alike, no AUTH or database
    why: list[str] = []
    for host, port in sentinels:
        with trio.move_on_after(timeout):
            try:
                stream = await open_redis_stream(host, port, plain)
            except RedisLost as exc:
                why.append(str(exc))
                continue
            try:
                reply = (await ask(stream, [(b"SENTINEL", b"get-master-addr-by-name", master)]))[0]
            except RedisLost as exc:
                why.append(f"sentinel {host}:{port}: {exc}")
                continue
            finally:
                await trio.aclose_forcefully(stream)
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            why.append(f"sentinel {host}:{port} does not know master {master!r}" if reply is None
                       else f"sentinel {host}:{port}: {reply}")
            continue
        why.append(f"sentinel {host}:{port}: no answer within {timeout:g} s")
    raise RedisLost("no sentinel named a primary: " + "; ".join(why))
