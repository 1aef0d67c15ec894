"""Raw-socket client helpers for the differential tests.

:class:`Wire` sends exact bytes and collects whole reply *items*: one reply
line, plus the body that follows ``OK``, ``FOUND`` and ``RESERVED`` lines.
Every read has a deadline, so a server that stays silent makes a test fail
(or record a marker) instead of hanging.

:func:`mask` blanks the ``stats`` values that legitimately differ between two
daemons (pid, uptime, rusage, random id, host facts) so transcripts can be
compared byte for byte.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Iterable, Optional

# Markers recorded in a transcript instead of a reply.
EOF = b"<EOF>"  # the server closed the connection
SILENCE = b"<SILENCE>"  # nothing (complete) arrived before the deadline

_BODY_WORDS = (b"OK ", b"FOUND ", b"RESERVED ")

# `stats` fields whose values differ between any two daemons.  hostname, os
# and platform are also quoted by beanstalk-py (as beanstalkd 1.13 does), an
# intended difference that test_differences.py checks on its own.
STATS_VOLATILE = ("pid", "uptime", "rusage-utime", "rusage-stime", "id", "hostname", "os", "platform")


class FramingError(AssertionError):
    """A reply whose announced length does not match the bytes that follow."""


class Wire:
    """One client connection speaking raw bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    # ----------------------------------------------------------------- basics

    def send(self, data: bytes) -> "Wire":
        self.sock.sendall(data)
        return self

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False when the deadline passed or EOF was seen."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    # ----------------------------------------------------------------- replies

    def _take_item(self) -> Optional[bytes]:
        """Split one complete reply item off the buffer, or None if incomplete."""
        pos = self.buf.find(b"\r\n")
        if pos < 0:
            return None
        line = self.buf[:pos]
        end = pos + 2
        if line.startswith(_BODY_WORDS):
            try:
                size = int(line.rsplit(b" ", 1)[1])
            except ValueError:
                size = -1
            if size >= 0:
                end = pos + 2 + size + 2
                if len(self.buf) < end:
                    return None
                if self.buf[end - 2 : end] != b"\r\n":
                    raise FramingError(f"{line!r}: body is not followed by CRLF: {self.buf[:end]!r}")
        item, self.buf = self.buf[:end], self.buf[end:]
        return item

    def read_item(self, timeout: float = 2.0) -> bytes:
        """One reply item, or EOF / SILENCE markers (never blocks past ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._take_item()
            if item is not None:
                return item
            if not self._fill(deadline):
                if self.eof and not self.buf:
                    return EOF
                if self.eof:
                    leftover, self.buf = self.buf, b""
                    return b"<PARTIAL " + leftover + b">"
                return SILENCE

    def read(self, count: int, timeout: float = 2.0) -> list[bytes]:
        """Collect ``count`` items; stops early (with a marker) on EOF or silence."""
        deadline = time.monotonic() + timeout
        items: list[bytes] = []
        while len(items) < count:
            item = self.read_item(max(0.0, deadline - time.monotonic()))
            items.append(item)
            if item in (EOF, SILENCE) or item.startswith(b"<PARTIAL"):
                break
        return items

    def ask(self, data: bytes, count: int = 1, timeout: float = 2.0) -> list[bytes]:
        self.send(data)
        return self.read(count, timeout)

    def one(self, data: bytes, timeout: float = 2.0) -> bytes:
        """Send ``data`` and return the single reply item."""
        return self.ask(data, 1, timeout)[0]

    def quiet(self, wait: float = 0.3) -> bytes:
        """Whatever arrives within ``wait`` seconds (b"" if the server stays silent)."""
        deadline = time.monotonic() + wait
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data + (EOF if self.eof else b"")

    def closed(self, timeout: float = 2.0) -> bool:
        """True once the server closes the connection with nothing more to say."""
        return self.read_item(timeout) == EOF


# --------------------------------------------------------------------- masking

_STATS_RE = re.compile(
    rb"^(" + b"|".join(re.escape(k.encode()) for k in STATS_VOLATILE) + rb"): .*$", re.M
)


def is_stats(item: bytes) -> bool:
    return item.startswith(b"OK ") and b"\r\n---\ncurrent-jobs-urgent: " in item[:40]


def mask_item(item: bytes, extra: Iterable[str] = ()) -> bytes:
    """Blank volatile values of a ``stats`` reply (and any ``extra`` YAML keys)."""
    if not item.startswith(b"OK "):
        return item
    head, _, rest = item.partition(b"\r\n")
    body = rest[:-2]
    if is_stats(item):
        body = _STATS_RE.sub(rb"\1: <masked>", body)
    for key in extra:
        body = re.sub(rb"^(" + re.escape(key.encode()) + rb"): .*$", rb"\1: <masked>", body, flags=re.M)
    # The length changes with the masking; the reader already checked framing.
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def mask(transcript, extra: Iterable[str] = ()):
    """Mask every item of a (possibly nested) transcript of bytes."""
    extra = tuple(extra)
    if isinstance(transcript, bytes):
        return mask_item(transcript, extra)
    if isinstance(transcript, (list, tuple)):
        return [mask(t, extra) for t in transcript]
    return transcript


def yaml_fields(item: bytes) -> dict[str, str]:
    """The ``key: value`` pairs of an OK reply, values as text."""
    _, _, rest = item.partition(b"\r\n")
    fields: dict[str, str] = {}
    for line in rest[:-2].decode().splitlines()[1:]:
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields
