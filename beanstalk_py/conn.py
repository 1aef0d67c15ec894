"""One client connection as a sans-IO state machine (beanstalkd's conn.c plus dispatch).

Bytes in via :meth:`Connection.receive_data`, replies out via
:meth:`Connection.take_output`.  The connection runs every complete request
already buffered, in order, and stops while the client is blocked in a
reserve (as the reference does: later commands wait behind it) or while its
unsent output is large (so a client that never reads cannot grow memory).
It reaches the queue only through the :class:`~.store.Store` seam, with
plain arguments, and formats replies from the plain values it gets back.
The I/O driver decides when to read, write and wake it up.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Generic, Optional, Protocol, TypeVar, Union

from .protocol import (
    EXPECTED_CRLF,
    K_DELETE,
    K_NONE,
    K_OTHER,
    K_PUT_JOB,
    K_RESERVE,
    K_RESERVE_WITH_TIMEOUT,
    Parser,
    Req,
    Request,
)
from .stats import ServerInfo, Stat, render_tube_list, render_yaml, server_stats
from .store import (
    BURIED,
    DELAYED,
    NOT_IGNORED,
    READY,
    TIMED_OUT,
    Answer,
    Completion,
    JobView,
    Later,
    Outcome,
    Session,
    Store,
)
from .wal import WalError

# Stop running commands while this much output waits to be sent.
OUTPUT_HIGH_WATER = 256 * 1024
# While blocked in a reserve, read on only to notice a hang-up, holding at
# most this much of what the client pipelines behind it.
BLOCKED_INPUT_CAP = 65536
# Most bytes a driver moves for one connection in one step while a big body
# streams in (one recv_into its buffer, see body_window) or out (one send of
# a slice of the job's bytes) before it serves other sockets again.
# Measured (issue 12, bench big-bodies, 3 rounds each, twice): a MiB of fresh
# body costs about 1 ms to take in (page faults and the copy), so one step of
# 4 MiB holds the loop about 4 ms; with 4 MiB against 1 MiB, ingest went from
# 0.66-1.15x to 1.49-1.73x beanstalkd and egress from 0.72-1.49x to
# 0.97-1.00x, and no other client waited longer (worst 5-9 ms, both).
IO_CHUNK = 4 << 20
# A reply whose job body is at least this big is queued as two pieces, its
# header and then the job's own bytes, which the driver sends from memoryview
# slices (take_chunk): never formatted into one copy.  Measured: formatting
# a reply copies the body, 6 us at 64 KiB, 60 us at 256 KiB, and 40-50 ms of
# page faults and copying at 50 MiB (held in one step, beside a second send()
# of about 5 us).  Above the default -z (65535), so only raised limits see it.
BIG_REPLY = 128 * 1024

NOT_FOUND = b"NOT_FOUND\r\n"
DRAINING = b"DRAINING\r\n"
# Replies when the binlog cannot record a change (the reference's choices).
OUT_OF_MEMORY = b"OUT_OF_MEMORY\r\n"
INTERNAL_ERROR = b"INTERNAL_ERROR\r\n"

S = TypeVar("S", bound=Session)
T = TypeVar("T")


class Waker(Protocol):
    """The I/O driver's handle on a connection: send its new output soon."""

    def wake(self) -> None: ...

    def hang_up(self) -> None:
        """Close the connection soon, whatever it is doing (waiting for input too)."""


class _NoDriver:
    """Until a driver wires the connection (and in sans-IO tests, which take
    the output themselves), there is nobody to wake."""

    def wake(self) -> None:
        pass

    def hang_up(self) -> None:
        pass


def _job_reply(word: bytes, job: JobView) -> bytes:
    body = job.body
    return b"%s %d %d\r\n%s" % (word, job.id, len(body) - 2, body)


def _ok(payload: bytes) -> bytes:
    return b"OK %d\r\n%s\r\n" % (len(payload), payload)


class Connection(Generic[S]):
    """Protocol state of one client; holds a store :class:`~.store.Session`."""

    __slots__ = (
        "store",
        "info",
        "parser",
        "session",
        "out",
        "out_size",
        "closing",
        "eof",
        "_put",
        "held_back",
        "io",
        "_queue",
        "_reserving",
    )

    def __init__(self, store: Store[S], info: ServerInfo) -> None:
        self.store = store
        self.info = info
        self.parser = Parser(store.max_job_size)
        self.session: S = store.open_session(self)
        self.out: list[bytes] = []
        self.out_size = 0
        self.closing = False  # quit seen or input ended: close once output is sent
        self.eof = False
        self._put: Optional[tuple[int, int, int, int]] = None  # id, pri, delay, ttr
        # True when process() stopped at the output high-water mark with
        # requests possibly still buffered: the I/O layer resumes it after
        # sending (and only then: an idle extra call costs ~2 us per reply).
        self.held_back = False
        self.io: Waker = _NoDriver()  # set by the I/O driver that serves it
        # Replies behind one the store gives later (a Later), in order; None
        # while every reply so far is in ``out`` (always, with the in-memory store).
        self._queue: Optional[deque[Union[bytes, _Slot]]] = None
        # A reserve the store answers later: the commands behind it wait.
        self._reserving: Optional[Later[Outcome]] = None

    # ------------------------------------------------------------------ I/O side

    @property
    def blocked(self) -> bool:
        """True while a reserve waits: buffered commands stay unprocessed."""
        return self.session.waiting or self._reserving is not None

    @property
    def awaiting(self) -> bool:
        """True while the store owes this connection something: a blocked
        reserve, or any reply it answers later (a Later).  The driver then
        waits for the store's wake-up as well as for input.  As cheap as
        :attr:`blocked` (two attribute tests; a reserve the store answers
        later is itself one of the deferred replies), so the in-memory hot
        path, which never defers, pays nothing for it."""
        return self._queue is not None or self.session.waiting

    @property
    def outstanding(self) -> bool:
        """Replies the store has not given yet: a closing connection stays
        open until they are sent (a client that pipelines ``put`` and ``quit``
        gets its INSERTED, as from beanstalkd)."""
        return self._queue is not None

    @property
    def wants_input(self) -> bool:
        """Whether reading more is useful (bounded buffering while blocked)."""
        if self.closing or self.eof:
            return False
        if self.out_size >= OUTPUT_HIGH_WATER:
            return False
        if self.session.waiting or self._reserving is not None:
            return self.parser.buffered < BLOCKED_INPUT_CAP
        return True

    @property
    def resumable(self) -> bool:
        """Output drained after process() stopped at the high-water mark:
        call :meth:`process` again to run what is still buffered."""
        return self.held_back and not self.out and not self.blocked and not self.closing

    def receive_data(self, data: bytes | bytearray, now: int) -> None:
        self.parser.feed(data)
        self.process(now)

    def receive_eof(self, now: int) -> None:
        """The client shut down its sending side (or closed)."""
        self.eof = True
        if self.session.waiting:
            self.store.cancel_wait(self.session)  # answered with TIMED_OUT
        else:
            self.process(now)

    def deliver(self, completion: Completion, now: int) -> None:
        """A blocked reserve finished (job handed over, timeout, deadline soon),
        or a store's Later completed: answer it in its place, run what waited
        behind it, and have the driver send it."""
        if isinstance(completion, Later):
            self._fill(completion)
        else:
            self._write_outcome(completion)
        self.process(now)
        self.io.wake()

    def hang_up(self) -> None:
        """The store lost this client's state (store.py SessionOwner): no
        reply it still owes will come, so none is sent; the driver closes."""
        self.closing = True
        self.eof = True
        self._queue = None
        self._reserving = None
        self.out.clear()
        self.out_size = 0
        self.io.hang_up()

    def take_output(self) -> bytes:
        """All the output, in one piece (see :meth:`take_chunk` for drivers)."""
        data = b"".join(self.out) if len(self.out) != 1 else self.out[0]
        self.out.clear()
        self.out_size = 0
        return data

    def take_chunk(self) -> bytes:
        """The next piece of output to send, as drivers take it: all of it,
        joined, as :meth:`take_output` gives it (a pipelined batch goes out in
        one send), unless it holds a big job body (:data:`BIG_REPLY`).  Then
        the replies before that body, joined, or the body alone, as the job's
        own bytes: the driver sends it in :data:`IO_CHUNK` slices of a
        memoryview, so it is never copied."""
        out = self.out
        if len(out) == 1 or self.out_size < BIG_REPLY:
            return self.take_output()
        count = 0
        size = 0
        for data in out:
            if len(data) >= BIG_REPLY:
                break
            count += 1
            size += len(data)
        if count == 0:
            data = out.pop(0)
            self.out_size -= len(data)
            return data
        data = b"".join(out[:count]) if count > 1 else out[0]
        del out[:count]
        self.out_size -= size
        return data

    def body_window(self) -> Optional[memoryview]:
        """Where the driver reads next with ``recv_into``, while a big put
        body streams in (see :meth:`.Parser.body_window`): at most
        :data:`IO_CHUNK` bytes of the body's own buffer.  None: read with
        ``recv`` and hand the bytes to :meth:`receive_data` as usual (which
        also brings a big body's last two bytes, so it completes, is checked
        and runs on that path)."""
        return self.parser.body_window(IO_CHUNK)

    def body_received(self, count: int) -> None:
        """``count`` bytes (not 0: that is the end of input, for
        :meth:`receive_eof`) were read into the last :meth:`body_window`."""
        self.parser.body_received(count)

    def process(self, now: int) -> None:
        """Run buffered requests until blocked, closing, or output is large."""
        parser = self.parser
        store = self.store
        session = self.session
        self.held_back = False
        while not session.waiting and self._reserving is None and not self.closing:
            if self.out_size >= OUTPUT_HIGH_WATER:
                self.held_back = True
                return  # the I/O layer calls process() again once output drains
            # The round trip's commands come as integer kinds and are run by
            # direct calls; the rest as tuples through _DISPATCH.
            # Measured (issue 12, in process through Connection and Engine,
            # put + reserve-with-timeout + delete one request at a time, min
            # of 7 x 20,000 jobs, 3 A/B runs): pure 11.8 -> 9.5 us per job,
            # compiled 7.0 -> 5.9 us.
            kind = parser.next_kind()
            try:
                if kind == K_PUT_JOB:
                    store.count("put")
                    self._put_job(parser.pri, parser.delay, parser.ttr, parser.body, now)
                elif kind == K_RESERVE_WITH_TIMEOUT:
                    store.count("reserve-with-timeout")
                    self._reserve(parser.arg, now)
                elif kind == K_DELETE:
                    store.count("delete")
                    self._delete(parser.arg)
                elif kind == K_RESERVE:
                    store.count("reserve")
                    self._reserve(-1, now)
                elif kind == K_NONE:
                    if self.eof:
                        self.closing = True  # every complete command has run
                    return
                else:
                    request = parser.request
                    handler, counted = _DISPATCH[request[0]]
                    if counted is not None:
                        store.count(counted)
                    handler(self, request, now)
            except WalError:
                # The log could not record the change: the job is as it was.
                self._send(_wal_error_reply(kind, parser.request))

    def close(self, now: int) -> None:
        """Release store state: reserved jobs go back to ready."""
        self.store.close_session(self.session, now)

    # ------------------------------------------------------------------ replies

    def _send(self, data: bytes) -> None:
        queue = self._queue
        if queue is None:
            self.out.append(data)
            self.out_size += len(data)
        else:
            queue.append(data)  # behind a reply the store has not given yet

    def _answer(self, result: Answer[T], reply: Callable[[T], bytes]) -> None:
        """The reply to ``result``, or its place if the store answers later."""
        if isinstance(result, Later):
            self._defer(result, reply)
        else:
            self._send(reply(result))

    def _defer(self, later: Later[T], reply: Callable[[T], bytes]) -> None:
        slot = _Slot(reply)
        later.owner = self
        later.fill = slot
        if self._queue is None:
            self._queue = deque()
        self._queue.append(slot)

    def _fill(self, later: Later[Any]) -> None:
        """A Later completed: its reply takes its place; what is ready goes out."""
        slot = later.fill
        assert isinstance(slot, _Slot), "a Later this connection did not defer"
        slot.data = slot.reply(later.value)
        if later is self._reserving:
            self._reserving = None
        queue = self._queue
        assert queue is not None
        out = self.out
        while queue:
            head = queue[0]
            if isinstance(head, _Slot):
                if head.data is None:
                    return
                data = head.data
            else:
                data = head
            queue.popleft()
            out.append(data)
            self.out_size += len(data)
        self._queue = None

    def _write_outcome(self, outcome: Outcome) -> None:
        if isinstance(outcome, str):
            self._send(b"TIMED_OUT\r\n" if outcome is TIMED_OUT else b"DEADLINE_SOON\r\n")
        else:
            self._send_job(b"RESERVED", outcome)

    def _send_job(self, word: bytes, job: JobView) -> None:
        """A job reply; a big body goes as its own piece (see BIG_REPLY)."""
        body = job.body
        if len(body) < BIG_REPLY:
            self._send(b"%s %d %d\r\n%s" % (word, job.id, len(body) - 2, body))
        else:
            self._send(b"%s %d %d\r\n" % (word, job.id, len(body) - 2))
            self._send(body)

    def _answer_job(self, result: Answer[Optional[JobView]], word: bytes,
                    reply: Callable[[Optional[JobView]], bytes]) -> None:
        """:meth:`_answer` for a job or NOT_FOUND: sent with :meth:`_send_job`
        when the store answers at once (``reply`` formats a later answer)."""
        if isinstance(result, Later):
            self._defer(result, reply)
        elif result is None:
            self._send(NOT_FOUND)
        else:
            self._send_job(word, result)

    # ------------------------------------------------------------------ commands

    def _on_reply(self, request: Request, now: int) -> None:
        self._send(request[1])

    def _on_nothing(self, request: Request, now: int) -> None:
        pass  # counted only (an oversized put's header)

    def _on_bad_format(self, request: Request, now: int) -> None:
        self._send(b"BAD_FORMAT\r\n")

    def _on_put(self, request: Request, now: int) -> None:
        _, pri, delay, ttr, size = request
        self._put = (self.store.begin_put(self.session), pri, delay, ttr)
        body = self.parser.take_body(size)
        if body is not None:
            _DISPATCH[body[0]][0](self, body, now)

    def _on_put_job(self, request: Request, now: int) -> None:
        _, pri, delay, ttr, body = request
        self._put_job(pri, delay, ttr, body, now)

    def _put_job(self, pri: int, delay: int, ttr: int, body: bytes, now: int) -> None:
        store = self.store
        session = self.session
        # WalError: not stored, the id stays used (OUT_OF_MEMORY, see process)
        job_id = store.put(session, store.begin_put(session), pri, delay, ttr, body, now)
        # _answer inlined on the two commands of a pipelined put and of a
        # reserve/delete round trip: measured in process, the generic call
        # cost 3% of put+reserve+delete (9.35 -> 9.65 us).
        if isinstance(job_id, Later):
            self._defer(job_id, _inserted)
        else:
            self._send(b"INSERTED %d\r\n" % job_id if job_id else DRAINING)

    def _on_body(self, request: Request, now: int) -> None:
        put = self._put
        assert put is not None, "a body without its put header"
        self._put = None
        job_id, pri, delay, ttr = put
        self._answer(self.store.put(self.session, job_id, pri, delay, ttr, request[1], now), _inserted)

    def _on_bad_body(self, request: Request, now: int) -> None:
        self._put = None
        self._send(EXPECTED_CRLF)

    def _on_peek(self, request: Request, now: int) -> None:
        self._answer_job(self.store.peek(request[1]), b"FOUND", _found)

    def _on_peek_ready(self, request: Request, now: int) -> None:
        self._answer_job(self.store.peek_used(self.session, READY), b"FOUND", _found)

    def _on_peek_delayed(self, request: Request, now: int) -> None:
        self._answer_job(self.store.peek_used(self.session, DELAYED), b"FOUND", _found)

    def _on_peek_buried(self, request: Request, now: int) -> None:
        self._answer_job(self.store.peek_used(self.session, BURIED), b"FOUND", _found)

    def _reserve(self, timeout: int, now: int) -> None:
        outcome = self.store.reserve(self.session, timeout, now)
        if outcome is None:
            if self.eof:
                # The client has half-closed: a reserve that would block times
                # out at once, answered in order with the commands around it.
                self.store.cancel_wait(self.session, notify=False)
                self._send(b"TIMED_OUT\r\n")
        elif isinstance(outcome, Later):
            self._reserving = outcome
            self._defer(outcome, _reserved)
        else:
            self._write_outcome(outcome)

    def _on_reserve(self, request: Request, now: int) -> None:
        self._reserve(-1, now)

    def _on_reserve_with_timeout(self, request: Request, now: int) -> None:
        self._reserve(request[1], now)

    def _on_reserve_job(self, request: Request, now: int) -> None:
        self._answer_job(self.store.reserve_job(self.session, request[1], now), b"RESERVED", _reserved_job)

    def _on_delete(self, request: Request, now: int) -> None:
        self._delete(request[1])

    def _delete(self, job_id: int) -> None:
        ok = self.store.delete(self.session, job_id)
        if isinstance(ok, Later):  # _answer inlined, see _on_put_job
            self._defer(ok, _deleted)
        else:
            self._send(b"DELETED\r\n" if ok else NOT_FOUND)

    def _on_release(self, request: Request, now: int) -> None:
        _, job_id, pri, delay = request
        self._answer(self.store.release(self.session, job_id, pri, delay, now), _released)

    def _on_bury(self, request: Request, now: int) -> None:
        self._answer(self.store.bury(self.session, request[1], request[2]), _buried)

    def _on_kick(self, request: Request, now: int) -> None:
        self._answer(self.store.kick(self.session, request[1], now), _kicked)

    def _on_kick_job(self, request: Request, now: int) -> None:
        self._answer(self.store.kick_job(request[1], now), _kicked_job)

    def _on_touch(self, request: Request, now: int) -> None:
        self._answer(self.store.touch(self.session, request[1], now), _touched)

    def _on_stats(self, request: Request, now: int) -> None:
        info = self.info

        def reply(snapshot: list[Stat]) -> bytes:
            return _ok(render_yaml(server_stats(snapshot, info, now)))

        self._answer(self.store.snapshot(now), reply)

    def _on_stats_job(self, request: Request, now: int) -> None:
        self._answer(self.store.job_stats(request[1], now), _stats_or_not_found)

    def _on_stats_tube(self, request: Request, now: int) -> None:
        self._answer(self.store.tube_stats(request[1], now), _stats_or_not_found)

    def _on_use(self, request: Request, now: int) -> None:
        self._answer(self.store.use(self.session, request[1]), _using)

    def _on_watch(self, request: Request, now: int) -> None:
        self._answer(self.store.watch(self.session, request[1]), _watching)

    def _on_ignore(self, request: Request, now: int) -> None:
        self._answer(self.store.ignore(self.session, request[1]), _ignored)

    def _on_list_tubes(self, request: Request, now: int) -> None:
        self._answer(self.store.tube_names(), _tube_list)

    def _on_list_tube_used(self, request: Request, now: int) -> None:
        self._answer(self.store.used_tube(self.session), _using)

    def _on_list_tubes_watched(self, request: Request, now: int) -> None:
        self._answer(self.store.watched_tubes(self.session), _tube_list)

    def _on_pause_tube(self, request: Request, now: int) -> None:
        self._answer(self.store.pause_tube(request[1], request[2], now), _paused)

    def _on_quit(self, request: Request, now: int) -> None:
        self.closing = True


class _Slot:
    """The place of a reply the store gives later, in a connection's output."""

    __slots__ = ("reply", "data")

    def __init__(self, reply: Callable[[Any], bytes]) -> None:
        self.reply = reply
        self.data: Optional[bytes] = None


# ---------------------------------------------------------------------- replies
# One function per reply shape: from a store's answer to the bytes 1.12 sends.


def _inserted(job_id: int) -> bytes:
    return b"INSERTED %d\r\n" % job_id if job_id else DRAINING


def _reserved(outcome: Outcome) -> bytes:
    if isinstance(outcome, str):
        return b"TIMED_OUT\r\n" if outcome is TIMED_OUT else b"DEADLINE_SOON\r\n"
    return _job_reply(b"RESERVED", outcome)


def _reserved_job(job: Optional[JobView]) -> bytes:
    return _job_reply(b"RESERVED", job) if job is not None else NOT_FOUND


def _found(job: Optional[JobView]) -> bytes:
    return _job_reply(b"FOUND", job) if job is not None else NOT_FOUND


def _deleted(ok: bool) -> bytes:
    return b"DELETED\r\n" if ok else NOT_FOUND


def _released(ok: bool) -> bytes:
    return b"RELEASED\r\n" if ok else NOT_FOUND


def _buried(ok: bool) -> bytes:
    return b"BURIED\r\n" if ok else NOT_FOUND


def _touched(ok: bool) -> bytes:
    return b"TOUCHED\r\n" if ok else NOT_FOUND


def _paused(ok: bool) -> bytes:
    return b"PAUSED\r\n" if ok else NOT_FOUND


def _kicked(count: int) -> bytes:
    return b"KICKED %d\r\n" % count


def _kicked_job(ok: bool) -> bytes:
    return b"KICKED\r\n" if ok else NOT_FOUND


def _stats_or_not_found(stats: Optional[list[Stat]]) -> bytes:
    return _ok(render_yaml(stats)) if stats is not None else NOT_FOUND


def _using(name: bytes) -> bytes:
    return b"USING %s\r\n" % name


def _watching(count: int) -> bytes:
    return b"WATCHING %d\r\n" % count


def _ignored(count: int) -> bytes:
    return b"NOT_IGNORED\r\n" if count == NOT_IGNORED else b"WATCHING %d\r\n" % count


def _tube_list(names: list[bytes]) -> bytes:
    return _ok(render_tube_list(names))


Handler = Callable[[Connection, Request, int], None]

# The reply when the log cannot record a command's change (the reference's
# choices): put (not stored, its id stays used), release (still reserved) and
# reserve-job of a buried or delayed job (left as it was) answer
# OUT_OF_MEMORY; anything else (delete, bury: unchanged) INTERNAL_ERROR.
_WAL_ERROR_REPLY = {
    Req.PUT: OUT_OF_MEMORY,
    Req.PUT_JOB: OUT_OF_MEMORY,
    Req.BODY: OUT_OF_MEMORY,
    "release": OUT_OF_MEMORY,
    "reserve-job": OUT_OF_MEMORY,
}

def _wal_error_reply(kind: int, request: Request) -> bytes:
    if kind == K_PUT_JOB:
        return OUT_OF_MEMORY
    if kind == K_OTHER:
        return _WAL_ERROR_REPLY.get(request[0], INTERNAL_ERROR)
    return INTERNAL_ERROR  # reserve, delete


# Request kind -> (handler, the stats command it counts or None): commands are
# counted here, once, as they are dispatched.  Shared by all connections:
# measured with tracemalloc, a per-connection table of bound methods made each
# connection take 4.1 KB instead of 1.3 KB (and 31 more allocations to accept it).
_DISPATCH: dict[str, tuple[Handler, Optional[str]]] = {
    Req.REPLY: (Connection._on_reply, None),
    Req.PUT: (Connection._on_put, "put"),
    Req.PUT_JOB: (Connection._on_put_job, "put"),
    Req.PUT_BAD_FORMAT: (Connection._on_bad_format, "put"),
    Req.PUT_TOO_BIG: (Connection._on_nothing, "put"),
    Req.BODY: (Connection._on_body, None),
    Req.BODY_BAD_CRLF: (Connection._on_bad_body, None),
    Req.PAUSE_BAD_NAME: (Connection._on_bad_format, "pause-tube"),
    "peek": (Connection._on_peek, "peek"),
    "peek-ready": (Connection._on_peek_ready, "peek-ready"),
    "peek-delayed": (Connection._on_peek_delayed, "peek-delayed"),
    "peek-buried": (Connection._on_peek_buried, "peek-buried"),
    "reserve": (Connection._on_reserve, "reserve"),
    "reserve-with-timeout": (Connection._on_reserve_with_timeout, "reserve-with-timeout"),
    "reserve-job": (Connection._on_reserve_job, "reserve-job"),
    "delete": (Connection._on_delete, "delete"),
    "release": (Connection._on_release, "release"),
    "bury": (Connection._on_bury, "bury"),
    "kick": (Connection._on_kick, "kick"),
    "kick-job": (Connection._on_kick_job, "kick-job"),
    "touch": (Connection._on_touch, "touch"),
    "stats": (Connection._on_stats, "stats"),
    "stats-job": (Connection._on_stats_job, "stats-job"),
    "stats-tube": (Connection._on_stats_tube, "stats-tube"),
    "use": (Connection._on_use, "use"),
    "watch": (Connection._on_watch, "watch"),
    "ignore": (Connection._on_ignore, "ignore"),
    "list-tubes": (Connection._on_list_tubes, "list-tubes"),
    "list-tube-used": (Connection._on_list_tube_used, "list-tube-used"),
    "list-tubes-watched": (Connection._on_list_tubes_watched, "list-tubes-watched"),
    "pause-tube": (Connection._on_pause_tube, "pause-tube"),
    "quit": (Connection._on_quit, None),
}
