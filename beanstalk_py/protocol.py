"""Sans-IO parser for the beanstalkd text protocol (the role of beanstalkd's prot.c).

Bytes go in with :meth:`Parser.feed`; :meth:`Parser.next_request` hands back
one request tuple at a time.  Nothing here knows about sockets, jobs or tubes,
so the same parser serves every I/O driver, the tests and any future front end.

A request is a plain tuple (measured: a NamedTuple costs 206 ns to build
against 32 ns for a literal, about 1.5% of a reserve+delete in the core), so
its kinds are named once, in :class:`Req`, with the shape of each beside it.
Arguments are already validated with the reference's exact rules (see
``COMPAT.md`` for where we differ).  Which stats counter each kind moves is
the connection's business (:data:`~.conn.COUNTED`), not the parser's.
"""

from __future__ import annotations

import io
import re
from typing import Callable, Final, Optional

# The reference's line buffer: a command line is accepted only when its CRLF
# lies entirely inside the first 224 bytes (11 + 201 + 12 in beanstalkd).
LINE_LIMIT = 224
MAX_TUBE_NAME = 200

BAD_FORMAT = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND = b"UNKNOWN_COMMAND\r\n"
JOB_TOO_BIG = b"JOB_TOO_BIG\r\n"
EXPECTED_CRLF = b"EXPECTED_CRLF\r\n"

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
NS = 1_000_000_000

NAME_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
)
# C isspace() in the "C" locale, used by strtol/strtoul.
_C_SPACE = b" \t\n\v\f\r"



class Req:
    """Request kinds: the first item of every request tuple, and its shape."""

    REPLY: Final = "reply"  # (REPLY, payload): the parser already knows the answer
    PUT: Final = "put"  # (PUT, pri, delay, ttr, size): a header; then Parser.take_body
    PUT_JOB: Final = "put-job"  # (PUT_JOB, pri, delay, ttr, body): header and body both
    # buffered and well formed, what pipelining producers send (see _PUT_FRAME)
    BODY: Final = "body"  # (BODY, body): the body of a put, with its CRLF
    BODY_BAD_CRLF: Final = "body-bad-crlf"  # (BODY_BAD_CRLF,)
    PUT_BAD_FORMAT: Final = "put-bad-format"  # (PUT_BAD_FORMAT,): counted as a put
    PUT_TOO_BIG: Final = "put-too-big"  # (PUT_TOO_BIG,): counted at the header; its
    # JOB_TOO_BIG comes as a REPLY once the body has been thrown away
    PAUSE_BAD_NAME: Final = "pause-tube-bad-name"  # (PAUSE_BAD_NAME,): counted as pause-tube
    PEEK: Final = "peek"  # (PEEK, id); likewise reserve-job, delete, kick-job, touch, stats-job
    RESERVE_WITH_TIMEOUT: Final = "reserve-with-timeout"  # (.., seconds: int, may be < 0)
    RELEASE: Final = "release"  # (RELEASE, id, pri, delay)
    BURY: Final = "bury"  # (BURY, id, pri)
    KICK: Final = "kick"  # (KICK, bound)
    PAUSE_TUBE: Final = "pause-tube"  # (PAUSE_TUBE, name, delay)
    USE: Final = "use"  # (USE, name); likewise watch, ignore, stats-tube
    # (name,) alone: peek-ready, peek-delayed, peek-buried, reserve, stats,
    # list-tubes, list-tube-used, list-tubes-watched, quit


Request = tuple  # (kind, *arguments) as listed in Req

# What Parser.next_kind returns: the commands of a put-reserve-delete round
# trip come as an integer kind with their arguments in the parser's fields
# (``arg``, ``pri``/``delay``/``ttr``, ``body``), with no request tuple and no
# string-keyed table between the parser and the connection's handler; every
# other request is K_OTHER, its tuple in ``Parser.request``.
# Measured (issue 12, in process, put+reserve+delete one request at a time
# through Connection and Engine, min of 7 x 20,000 jobs, 3 A/B runs): with
# conn.process's direct calls, pure 11.8 -> 9.5 us per job, compiled 7.0 ->
# 5.9 us.
K_NONE: Final = 0  # no complete request buffered
K_OTHER: Final = 1  # Parser.request holds the request tuple
K_PUT_JOB: Final = 2  # a put with its body: pri, delay, ttr, body
K_RESERVE: Final = 3  # reserve
K_RESERVE_WITH_TIMEOUT: Final = 4  # arg: the timeout (may be < 0, see _parse_reserve_with_timeout)
K_DELETE: Final = 5  # arg: the job id

_BAD = (Req.REPLY, BAD_FORMAT)
_UNKNOWN = (Req.REPLY, UNKNOWN_COMMAND)
_PUT_BAD = (Req.PUT_BAD_FORMAT,)
_PUT_TOO_BIG = (Req.PUT_TOO_BIG,)
_BODY_BAD_CRLF = (Req.BODY_BAD_CRLF,)


def read_uint(text: bytes, start: int, maximum: int) -> tuple[int, int]:
    """Parse like beanstalkd's read_u32/read_u64: spaces, then digits only.

    Returns ``(value, end)``; ``end`` is -1 on failure.  No sign is accepted and
    the value must not exceed ``maximum``.
    """
    n = len(text)
    i = start
    while i < n and text[i] == 32:
        i += 1
    j = i
    while j < n and 48 <= text[j] <= 57:
        j += 1
    if j == i:
        return 0, -1
    value = int(text[i:j])
    if value > maximum:
        return 0, -1
    return value, j


def read_last_uint(text: bytes, start: int, maximum: int) -> int:
    """Parse the final number of a command: nothing may follow it."""
    value, end = read_uint(text, start, maximum)
    if end != len(text):
        return -1
    return value


def _c_strtol(text: bytes, bits: int, signed: bool) -> Optional[tuple[int, bool]]:
    """Emulate glibc strtol/strtoul on LP64: returns (value, any_digits) or None on ERANGE."""
    n = len(text)
    i = 0
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in b"+-":
        negative = text[i] == 45
        i += 1
    j = i
    while j < n and 48 <= text[j] <= 57:
        j += 1
    if j == i:
        return 0, False
    magnitude = int(text[i:j])
    if signed:
        limit = 2 ** (bits - 1)
        if (negative and magnitude > limit) or (not negative and magnitude > limit - 1):
            return None
        return (-magnitude if negative else magnitude), True
    if magnitude > 2**bits - 1:
        return None
    value = (-magnitude) % (2**bits) if negative else magnitude
    return value, True


def valid_tube_name(name: bytes) -> bool:
    """The reference's is_valid_tube: 1-200 name characters, no leading '-'."""
    return (
        0 < len(name) <= MAX_TUBE_NAME
        and name[0] != 45
        and NAME_CHARS.issuperset(name)
    )


# Fast path for the common put header (single spaces, plain digits); anything
# else goes through the general reader below.  Measured: the regex path parses
# a put header in about a third of the time of four read_uint calls.
_PUT_HEADER = rb"put ([0-9]{1,10}) ([0-9]{1,10}) ([0-9]{1,10}) ([0-9]{1,10})"
_PUT_FAST = re.compile(_PUT_HEADER)
# The same header with its CRLF, matched in place in the receive buffer.
# Measured (issue 4, 100-byte pipelined puts): framing header and body in one
# step, without first copying the line out, cut the parser's share per put
# from about 2.2 us to 0.8 us.
_PUT_FRAME = re.compile(_PUT_HEADER + rb"\r\n")


# Internal to the parser: a put header announcing more than max_job_size.
_TOO_BIG = "too-big"


def _parse_put(line: bytes, max_job_size: int) -> Request:
    match = _PUT_FAST.fullmatch(line)
    if match is not None:
        pri, delay, ttr, size = map(int, match.groups())
        if pri <= U32_MAX and delay <= U32_MAX and ttr <= U32_MAX and size <= U32_MAX:
            if size > max_job_size:
                return (_TOO_BIG, size + 2)
            return ("put", pri, delay, ttr, size)
    pri, end = read_uint(line, 4, U32_MAX)
    if end < 0:
        return _BAD
    delay, end = read_uint(line, end, U32_MAX)
    if end < 0:
        return _BAD
    ttr, end = read_uint(line, end, U32_MAX)
    if end < 0:
        return _BAD
    size, end = read_uint(line, end, U32_MAX)
    if end < 0:
        return _BAD
    if size > max_job_size:
        # The reference discards <size>+2 bytes before answering, even when
        # the header also has trailing garbage.
        return (_TOO_BIG, size + 2)
    if end != len(line):
        return _PUT_BAD
    return ("put", pri, delay, ttr, size)


Parse = Callable[[bytes, int], Request]


def _id_command(op: str, offset: int) -> Parse:
    def parse(line: bytes, _max: int) -> Request:
        value = read_last_uint(line, offset, U64_MAX)
        if value < 0:
            return _BAD
        return (op, value)

    return parse


def _exact(op: str, word: bytes) -> Parse:
    size = len(word)

    def parse(line: bytes, _max: int) -> Request:
        if len(line) != size:
            return _BAD
        return (op,)

    return parse


def _tube_command(op: str, offset: int) -> Parse:
    def parse(line: bytes, _max: int) -> Request:
        name = line[offset:]
        if not valid_tube_name(name):
            return _BAD
        return (op, name)

    return parse


def _parse_reserve_with_timeout(line: bytes, _max: int) -> Request:
    parsed = _c_strtol(line[21:], 64, signed=True)
    if parsed is None:
        return _BAD
    value = parsed[0] & 0xFFFFFFFF  # stored in a C int
    if value >= 2**31:
        value -= 2**32
    return ("reserve-with-timeout", value)


def _parse_release(line: bytes, _max: int) -> Request:
    job_id, end = read_uint(line, 8, U64_MAX)
    if end < 0:
        return _BAD
    pri, end = read_uint(line, end, U32_MAX)
    if end < 0:
        return _BAD
    delay = read_last_uint(line, end, U32_MAX)
    if delay < 0:
        return _BAD
    return ("release", job_id, pri, delay)


def _parse_bury(line: bytes, _max: int) -> Request:
    job_id, end = read_uint(line, 5, U64_MAX)
    if end < 0:
        return _BAD
    pri = read_last_uint(line, end, U32_MAX)
    if pri < 0:
        return _BAD
    return ("bury", job_id, pri)


def _parse_kick(line: bytes, _max: int) -> Request:
    parsed = _c_strtol(line[5:], 64, signed=False)
    if parsed is None or not parsed[1]:
        return _BAD
    return ("kick", parsed[0] & 0xFFFFFFFF)


def _parse_pause_tube(line: bytes, _max: int) -> Request:
    n = len(line)
    i = 10
    while i < n and line[i] == 32:
        i += 1
    j = i
    while j < n and line[j] in NAME_CHARS:
        j += 1
    if j == i:
        return _BAD
    delay = read_last_uint(line, j, U32_MAX)
    if delay < 0:
        return _BAD
    name = line[i:j]
    if not valid_tube_name(name):
        # Counted before the name check, as the reference does.
        return (Req.PAUSE_BAD_NAME,)
    return ("pause-tube", name, delay)


def _parse_quit(line: bytes, _max: int) -> Request:
    return ("quit",)


# The reference's which_cmd table: prefixes tried in this order (note the
# trailing spaces).  Grouped by first byte for speed; order within a group is
# the reference's order, and prefixes of different groups never overlap.
_COMMANDS: list[tuple[bytes, Parse]] = [
    (b"put ", _parse_put),
    (b"peek ", _id_command("peek", 5)),
    (b"peek-ready", _exact("peek-ready", b"peek-ready")),
    (b"peek-delayed", _exact("peek-delayed", b"peek-delayed")),
    (b"peek-buried", _exact("peek-buried", b"peek-buried")),
    (b"reserve-with-timeout ", _parse_reserve_with_timeout),
    (b"reserve-job ", _id_command("reserve-job", 12)),
    (b"reserve", _exact("reserve", b"reserve")),
    (b"delete ", _id_command("delete", 7)),
    (b"release ", _parse_release),
    (b"bury ", _parse_bury),
    (b"kick ", _parse_kick),
    (b"kick-job ", _id_command("kick-job", 9)),
    (b"touch ", _id_command("touch", 6)),
    (b"stats-job ", _id_command("stats-job", 10)),
    (b"stats-tube ", _tube_command("stats-tube", 11)),
    (b"stats", _exact("stats", b"stats")),
    (b"use ", _tube_command("use", 4)),
    (b"watch ", _tube_command("watch", 6)),
    (b"ignore ", _tube_command("ignore", 7)),
    (b"list-tubes-watched", _exact("list-tubes-watched", b"list-tubes-watched")),
    (b"list-tube-used", _exact("list-tube-used", b"list-tube-used")),
    (b"list-tubes", _exact("list-tubes", b"list-tubes")),
    (b"quit", _parse_quit),
    (b"pause-tube", _parse_pause_tube),
]

_BY_FIRST_BYTE: dict[int, list[tuple[bytes, Parse]]] = {}
for _prefix, _fn in _COMMANDS:
    _BY_FIRST_BYTE.setdefault(_prefix[0], []).append((_prefix, _fn))
del _prefix, _fn


def parse_line(line: bytes, max_job_size: int) -> Request:
    """Turn one command line (without its CRLF) into a request tuple."""
    if not line:
        return _UNKNOWN
    if 0 in line:  # the reference compares strlen() with the line length
        return _BAD
    candidates = _BY_FIRST_BYTE.get(line[0])
    if candidates:
        for prefix, fn in candidates:
            if line.startswith(prefix):
                return fn(line, max_job_size)
    return _UNKNOWN


# Parser states.
_LINE, _DISCARD_LINE, _BODY, _SKIP = range(4)

# A put body (with its CRLF) at least this big, not yet buffered when its
# header is read, is received in place: into one buffer that becomes the job's
# bytes, never re-concatenated (see Parser.body_window).  Twice the drivers'
# read size: a body one or two reads bring in whole keeps the one-step path.
# Measured (issue 12, five 50 MiB puts): growing the line buffer and slicing
# the body out of it made 3 copies of each body, 243 MiB/s and a 207 ms stall
# of every other client (epoll driver).
IN_PLACE_BODY = 128 * 1024


class Parser:
    """Frames the byte stream into requests; never buffers more than it must.

    * A command line longer than the limit is dropped as it streams in (only
      a trailing CR is kept to spot a CRLF split across reads).
    * A put body larger than ``max_job_size`` is counted down, never stored.
    """

    __slots__ = (
        "max_job_size", "_buf", "_state", "_need", "_body", "_filled", "_grown", "_window",
        "request", "arg", "pri", "delay", "ttr", "body",
    )

    def __init__(self, max_job_size: int = 65535) -> None:
        self.max_job_size = max_job_size
        self._buf = bytearray()
        self._state = _LINE
        self._need = 0
        # A big body received in place (None otherwise): its bytes so far are
        # the first ``_filled`` of the buffer, which is ``_grown`` long, and
        # ``_window`` is the slice last handed out by body_window.
        self._body: Optional[io.BytesIO] = None
        self._filled = 0
        self._grown = 0
        self._window: Optional[memoryview] = None
        # The last request next_kind framed (see K_OTHER and the K_* kinds).
        self.request: Request = _UNKNOWN
        self.arg = 0
        self.pri = 0
        self.delay = 0
        self.ttr = 0
        self.body = b""

    def feed(self, data: bytes | bytearray) -> None:
        state = self._state
        body = self._body
        if body is not None:
            # The rest of a big body (from a driver that cannot read in
            # place, or its last two bytes), then what follows it.
            self._drop_window()
            filled = self._filled
            take = min(len(data), self._need - filled)
            body.seek(filled)
            body.write(memoryview(data)[:take])
            self._filled = filled + take
            if filled + take > self._grown:
                self._grown = filled + take
            if take == len(data):
                return
            data = data[take:]
        elif state == _SKIP:
            # Throw the oversized body away as it arrives.
            take = min(len(data), self._need)
            self._need -= take
            data = data[take:]
            if self._need:
                return
        elif state == _DISCARD_LINE and not self._buf:
            pos = data.find(b"\r\n")
            if pos < 0:
                if data.endswith(b"\r"):
                    self._buf += b"\r"
                return
        self._buf += data

    @property
    def streaming_body(self) -> bool:
        """A big put body is being received in place (see body_window)."""
        return self._body is not None

    @property
    def buffered(self) -> int:
        """Bytes held for requests not yet returned (bounded by design)."""
        return len(self._buf)

    def take_body(self, size: int) -> Optional[Request]:
        """After a ``put``: its body request if already buffered, else None
        (the parser then waits for it); a pipelined put thus costs one call."""
        self._state = _BODY
        need = self._need = size + 2
        buf = self._buf
        if need >= IN_PLACE_BODY and len(buf) < need:
            # Everything buffered is the start of this body (it is not all
            # there): it moves into the body's own buffer, and the rest goes
            # there too as it arrives (feed, body_window).
            body = io.BytesIO()
            body.write(buf)
            self._body = body
            self._filled = self._grown = len(buf)
            buf.clear()
            return None
        return self._frame_body()

    def body_window(self, limit: int) -> Optional[memoryview]:
        """Where the next bytes of a big body go, for ``recv_into``: a writable
        slice of at most ``limit`` bytes of the body's own buffer, or None
        when no big body is coming in (read with ``recv`` and :meth:`feed`).

        The last two bytes (the CRLF) are never in a window: they come
        through :meth:`feed`, so a body is completed, checked and run only on
        the ordinary path.  Report what was read with :meth:`body_received`;
        a window not reported is simply handed out again.

        The buffer grows by one window at a time rather than being allocated
        at the announced size: measured on this machine, making a 50 MiB
        buffer at once (``bytearray(n)`` zero-fills it) took 89 ms of page
        faults in one step, while growing it a window at a time spreads the same
        faults at about 1 ms per MiB.  And it is an ``io.BytesIO`` because its
        ``getvalue()`` hands over its own ``bytes`` when exactly full (30 us
        for 50 MiB), where ``bytes(bytearray)`` copied the body again, with
        fresh page faults: 20-50 ms in one step.
        """
        body = self._body
        if body is None:
            return None
        self._drop_window()
        filled = self._filled
        end = min(self._need - 2, filled + limit)
        if end <= filled:
            return None
        if end > self._grown:
            body.seek(end - 1)
            body.write(b"\0")  # grows the buffer to ``end`` (zero-filled)
            self._grown = end
        window = body.getbuffer()[filled:end]
        self._window = window
        return window

    def body_received(self, count: int) -> None:
        """``count`` bytes were read into the last :meth:`body_window`."""
        self._drop_window()
        self._filled += count

    def _drop_window(self) -> None:
        # The buffer cannot grow or hand over its bytes while a slice of it
        # is exported.
        window = self._window
        if window is not None:
            self._window = None
            window.release()

    def _frame_body(self) -> Optional[Request]:
        """The body the last put header announced, once all of it is buffered."""
        need = self._need
        body = self._body
        if body is not None:
            if self._filled < need:
                return None
            self._drop_window()
            self._body = None
            self._state = _LINE
            data = body.getvalue()  # the buffer itself, not a copy (see body_window)
            if data[-2:] != b"\r\n":
                return _BODY_BAD_CRLF
            return (Req.BODY, data)
        buf = self._buf
        if len(buf) < need:
            return None
        whole = bytes(buf[:need])
        del buf[:need]
        self._state = _LINE
        if whole[-2:] != b"\r\n":
            return _BODY_BAD_CRLF
        return (Req.BODY, whole)

    def next_request(self) -> Optional[Request]:
        """The next request as a tuple (see :class:`Req`), or None."""
        kind = self.next_kind()
        if kind == K_OTHER:
            return self.request
        if kind == K_NONE:
            return None
        if kind == K_PUT_JOB:
            return (Req.PUT_JOB, self.pri, self.delay, self.ttr, self.body)
        if kind == K_RESERVE:
            return ("reserve",)
        if kind == K_RESERVE_WITH_TIMEOUT:
            return (Req.RESERVE_WITH_TIMEOUT, self.arg)
        return ("delete", self.arg)

    def next_kind(self) -> int:
        """Frame the next request: a K_* kind, its arguments in the fields."""
        if self._state != _LINE:
            return self._other(self._next_request())
        buf = self._buf
        if not buf:
            return K_NONE  # the usual end of a batch: every command has run
        first = buf[0]
        if first == 112 and buf.startswith(b"put "):  # p
            match = _PUT_FRAME.match(buf)
            if match is not None:
                pri_s, delay_s, ttr_s, size_s = match.groups()
                size = int(size_s)
                start = match.end()
                end = start + size + 2
                if (
                    size <= self.max_job_size
                    and len(buf) >= end
                    and buf[end - 2] == 13 and buf[end - 1] == 10
                ):
                    pri = int(pri_s)
                    delay = int(delay_s)
                    ttr = int(ttr_s)
                    if pri <= U32_MAX and delay <= U32_MAX and ttr <= U32_MAX:
                        self.body = bytes(buf[start:end])
                        del buf[:end]
                        self.pri = pri
                        self.delay = delay
                        self.ttr = ttr
                        return K_PUT_JOB
            # Anything else about a put (a partial body, a bad CRLF, too
            # big, odd spacing) takes the general path.
            return self._other(self._next_request())
        pos = buf.find(b"\r\n", 0, LINE_LIMIT)
        if pos < 0:
            return self._other(self._next_request())
        # reserve, reserve-with-timeout and delete with plain digits, framed
        # here without parse_line's prefix table, closures and digit loops;
        # anything else (spaces, signs, NUL, overflow) takes the general path,
        # which gives the same answers byte for byte.
        if first == 114:  # r
            if pos == 7:
                if buf.startswith(b"reserve"):
                    del buf[:9]
                    return K_RESERVE
            elif 21 < pos <= 39 and buf.startswith(b"reserve-with-timeout "):
                digits = buf[21:pos]
                if digits.isdigit():  # at most 18 digits: no overflow (strtol)
                    value = int(digits) & 0xFFFFFFFF  # stored in a C int
                    if value >= 2**31:
                        value -= 2**32
                    del buf[: pos + 2]
                    self.arg = value
                    return K_RESERVE_WITH_TIMEOUT
        elif first == 100:  # d
            if 7 < pos <= 26 and buf.startswith(b"delete "):
                digits = buf[7:pos]
                if digits.isdigit():  # at most 19 digits: below U64_MAX
                    del buf[: pos + 2]
                    self.arg = int(digits)
                    return K_DELETE
        return self._other(self._next_request())

    def _other(self, request: Optional[Request]) -> int:
        if request is None:
            return K_NONE
        self.request = request
        return K_OTHER

    def _next_request(self) -> Optional[Request]:
        buf = self._buf
        state = self._state
        if state == _LINE:
            # A put whose body is already buffered was framed by next_kind.
            pos = buf.find(b"\r\n", 0, LINE_LIMIT)
            if pos >= 0:
                line = bytes(buf[:pos])
                del buf[: pos + 2]
                request = parse_line(line, self.max_job_size)
                if request[0] == _TOO_BIG:
                    # The reference counts the put when its header is read;
                    # JOB_TOO_BIG follows once the body has been thrown away
                    # (which may never happen if the client goes away).
                    self._state = _SKIP
                    self._need = request[1]
                    return _PUT_TOO_BIG
                return request
            if len(buf) < LINE_LIMIT:
                return None
            # Too long: drop it up to the next CRLF, then answer once.
            self._state = state = _DISCARD_LINE
        if state == _DISCARD_LINE:
            pos = buf.find(b"\r\n")
            if pos < 0:
                keep_cr = buf.endswith(b"\r")
                buf.clear()
                if keep_cr:
                    buf += b"\r"
                return None
            del buf[: pos + 2]
            self._state = _LINE
            return _BAD
        if state == _BODY:
            return self._frame_body()
        # _SKIP
        return self._finish_skip()

    def _finish_skip(self) -> Optional[Request]:
        buf = self._buf
        if self._need:
            take = min(len(buf), self._need)
            del buf[:take]
            self._need -= take
            if self._need:
                return None
        self._state = _LINE
        return (Req.REPLY, JOB_TOO_BIG)
