"""A small blocking beanstalk client for the admin command line.

Synchronous on purpose: the admin tool runs one command at a time against one
daemon, and a socket with a timeout is the whole of what it needs.  Every
reply is read exactly as the protocol frames it (a CRLF line, then
``<bytes>`` + CRLF of data after ``OK``, ``FOUND`` and ``RESERVED``), and any
other shape is a :class:`ServerError`, never a guess.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Iterable, Optional, Union

DEFAULT_PORT = 11300
DEFAULT_HOST = "127.0.0.1"
MAX_LINE = 1024  # no reply line of beanstalkd 1.12 comes near this
MAX_PRI = 2**32 - 1
_BODY_REPLIES = {b"OK": 1, b"FOUND": 2, b"RESERVED": 2}  # reply word -> index of <bytes>
# beanstalkd's NAME_CHARS; a name must not start with '-' and is at most 200 bytes.
_TUBE_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")

_MEANING = {
    b"DRAINING": " (the server is in drain mode and takes no new jobs)",
    b"JOB_TOO_BIG": " (the body is larger than the server's max-job-size)",
    b"OUT_OF_MEMORY": " (the server has no memory or binlog space left)",
}

# Exit codes of `beanstalk-py admin`.
EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_FAILED = 4  # the server refused (DRAINING, JOB_TOO_BIG, ...) or drain was refused


class AdminError(Exception):
    """An error that ends the command: its message is one line for stderr."""

    exit_code = EXIT_FAILED


class NotFound(AdminError):
    exit_code = EXIT_NOT_FOUND


class UsageError(AdminError):
    exit_code = EXIT_USAGE


class CannotConnect(AdminError):
    exit_code = EXIT_CONNECT


class ServerError(AdminError):
    """An unexpected reply (DRAINING, OUT_OF_MEMORY, BAD_FORMAT...) or a broken frame."""


Address = Union[tuple[str, int], str]  # (host, port) or a unix socket path


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``:PORT``, ``[V6]:PORT`` or ``[V6]``."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            raise UsageError(f"--addr {text}: expected HOST:PORT or [IPV6]:PORT")
        host, rest = text[1:end], text[end + 2 :]
        port_text: Optional[str] = rest if text[end + 1 :] else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise UsageError(f"--addr {text}: write an IPv6 address as [ADDR]:PORT")
    else:
        port_text = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--addr {text}: bad port {port_text!r}")
        port = int(port_text)
    return host or DEFAULT_HOST, port


def describe(address: Address) -> str:
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_tube(name: str) -> str:
    """Refuse names the server would refuse, before they reach a command line."""
    if not _TUBE_NAME.fullmatch(name):
        raise UsageError(
            f"invalid tube name {name!r}: 1-200 of A-Z a-z 0-9 - + / ; . $ _ ( ), not starting with '-'"
        )
    return name


def parse_yaml(body: bytes) -> dict[str, str]:
    """The flat YAML dictionary of stats, stats-tube and stats-job, in order.

    Double-quoted values are unquoted (1.12 quotes ``version``; beanstalk-py
    also ``hostname``, ``os``, ``platform``).
    """
    out: dict[str, str] = {}
    for row in body.decode("utf-8", "replace").splitlines():
        if row == "---" or not row:
            continue
        key, sep, value = row.partition(": ")
        if not sep:
            key, value = row.rstrip(":"), ""
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
    return out


def parse_yaml_list(body: bytes) -> list[str]:
    """The YAML list of list-tubes: ``- name`` per line."""
    return [row[2:] for row in body.decode("utf-8", "replace").splitlines() if row.startswith("- ")]


@dataclass
class Reply:
    line: bytes  # without CRLF
    body: Optional[bytes] = None

    @property
    def word(self) -> bytes:
        return self.line.split(b" ", 1)[0]

    @property
    def args(self) -> list[bytes]:
        return self.line.split(b" ")[1:]

    def text(self) -> str:
        return self.line.decode("ascii", "replace")


def connect_unix(path: str, timeout: Optional[float]) -> socket.socket:
    """A connected unix stream socket with ``timeout`` (closed again if the connect fails)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


class Client:
    """One connection to a beanstalk server; every read and write has ``timeout``.

    Use as a context manager.  Knows which tube it uses, so callers can ask
    for ``use`` freely and only changes are sent.
    """

    def __init__(self, address: Address, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self.where = describe(address)
        self.used = "default"
        self._buf = bytearray()
        self._sock: Optional[socket.socket] = None

    # ------------------------------------------------------------------ connection

    def connect(self) -> "Client":
        try:
            if isinstance(self.address, str):
                sock = connect_unix(self.address, self.timeout)
            else:
                sock = socket.create_connection(self.address, timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except socket.timeout:
            raise CannotConnect(f"cannot connect to {self.where}: timed out after {self.timeout:g} s") from None
        except socket.gaierror as exc:
            raise CannotConnect(f"cannot connect to {self.where}: {exc.strerror}") from None
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise CannotConnect(f"cannot connect to {self.where}: {reason}") from None
        self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(b"quit\r\n")
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ framing

    def send(self, data: bytes) -> None:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise CannotConnect(f"{self.where}: no progress sending for {self.timeout:g} s") from None
        except OSError as exc:
            raise CannotConnect(f"{self.where}: connection lost: {(exc.strerror or str(exc)).lower()}") from None

    def _fill(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(1 << 16)
        except socket.timeout:
            raise CannotConnect(f"{self.where}: no reply within {self.timeout:g} s") from None
        except OSError as exc:
            raise CannotConnect(f"{self.where}: connection lost: {(exc.strerror or str(exc)).lower()}") from None
        if not chunk:
            raise CannotConnect(f"{self.where}: the server closed the connection")
        self._buf += chunk

    def read_reply(self) -> Reply:
        if self._sock is None:
            raise CannotConnect(f"{self.where}: not connected")
        buf = self._buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_LINE:
                raise ServerError(f"{self.where}: reply line longer than {MAX_LINE} bytes")
            self._fill()
        line = bytes(buf[:end])
        del buf[: end + 2]
        index = _BODY_REPLIES.get(line.split(b" ", 1)[0])
        if index is None:
            return Reply(line)
        parts = line.split(b" ")
        if len(parts) != index + 1 or not parts[index].isdigit():
            raise ServerError(f"{self.where}: malformed reply {line[:80]!r}")
        size = int(parts[index])
        while len(buf) < size + 2:
            self._fill()
        if buf[size : size + 2] != b"\r\n":
            raise ServerError(f"{self.where}: reply data of {size} bytes not followed by CRLF")
        body = bytes(buf[:size])
        del buf[: size + 2]
        return Reply(line, body)

    def call(self, line: str, body: Optional[bytes] = None) -> Reply:
        self.send(_frame(line, body))
        return self.read_reply()

    def pipeline(self, lines: Iterable[str], batch: int = 100) -> list[Reply]:
        """Many bodiless commands, sent ``batch`` at a time: one round trip per batch."""
        pending = list(lines)
        replies: list[Reply] = []
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            self.send(b"".join(_frame(line) for line in chunk))
            replies.extend(self.read_reply() for _ in chunk)
        return replies

    # ------------------------------------------------------------------ commands

    def expect(self, reply: Reply, *words: bytes, command: str) -> Reply:
        if reply.word not in words:
            why = _MEANING.get(reply.word, "")
            raise ServerError(f"{self.where}: {command!r} answered {reply.text()}{why}")
        return reply

    def stats(self) -> dict[str, str]:
        reply = self.expect(self.call("stats"), b"OK", command="stats")
        assert reply.body is not None
        return parse_yaml(reply.body)

    def list_tubes(self) -> list[str]:
        reply = self.expect(self.call("list-tubes"), b"OK", command="list-tubes")
        assert reply.body is not None
        return parse_yaml_list(reply.body)

    def stats_tube(self, tube: str) -> Optional[dict[str, str]]:
        return self._yaml_or_none(self.call(f"stats-tube {check_tube(tube)}"), "stats-tube")

    def stats_tubes(self, tubes: list[str]) -> dict[str, dict[str, str]]:
        """stats-tube of each (pipelined); tubes gone since list-tubes are left out."""
        replies = self.pipeline(f"stats-tube {check_tube(tube)}" for tube in tubes)
        out: dict[str, dict[str, str]] = {}
        for tube, reply in zip(tubes, replies):
            found = self._yaml_or_none(reply, "stats-tube")
            if found is not None:
                out[tube] = found
        return out

    def stats_job(self, job_id: int) -> Optional[dict[str, str]]:
        return self._yaml_or_none(self.call(f"stats-job {job_id}"), "stats-job")

    def _yaml_or_none(self, reply: Reply, command: str) -> Optional[dict[str, str]]:
        self.expect(reply, b"OK", b"NOT_FOUND", command=command)
        if reply.body is None:
            return None
        return parse_yaml(reply.body)

    def use(self, tube: str) -> None:
        if tube != self.used:
            self.expect(self.call(f"use {check_tube(tube)}"), b"USING", command="use")
            self.used = tube

    def put(self, body: bytes, pri: int, delay: int, ttr: int) -> tuple[int, bool]:
        """Returns ``(id, buried)``: the server buries a job it has no memory to queue."""
        reply = self.call(f"put {pri} {delay} {ttr} {len(body)}", body)
        self.expect(reply, b"INSERTED", b"BURIED", command="put")
        return int(reply.args[0]), reply.word == b"BURIED"

    def peek(self, command: str) -> Optional[tuple[int, bytes]]:
        """``peek ID`` or ``peek-ready``/``-delayed``/``-buried`` (of the used tube)."""
        reply = self.expect(self.call(command), b"FOUND", b"NOT_FOUND", command=command)
        if reply.body is None:
            return None
        return int(reply.args[0]), reply.body

    def delete(self, job_id: int) -> bool:
        reply = self.call(f"delete {job_id}")
        return self.expect(reply, b"DELETED", b"NOT_FOUND", command="delete").word == b"DELETED"

    def kick(self, bound: int) -> int:
        reply = self.expect(self.call(f"kick {bound}"), b"KICKED", command="kick")
        return int(reply.args[0])

    def kick_job(self, job_id: int) -> bool:
        reply = self.call(f"kick-job {job_id}")
        return self.expect(reply, b"KICKED", b"NOT_FOUND", command="kick-job").word == b"KICKED"

    def pause_tube(self, tube: str, seconds: int) -> bool:
        reply = self.call(f"pause-tube {check_tube(tube)} {seconds}")
        return self.expect(reply, b"PAUSED", b"NOT_FOUND", command="pause-tube").word == b"PAUSED"

    def reserve_job(self, job_id: int) -> bool:
        reply = self.call(f"reserve-job {job_id}")
        return self.expect(reply, b"RESERVED", b"NOT_FOUND", command="reserve-job").word == b"RESERVED"

    def bury(self, job_id: int, pri: int) -> bool:
        reply = self.call(f"bury {job_id} {pri}")
        return self.expect(reply, b"BURIED", b"NOT_FOUND", command="bury").word == b"BURIED"


def _frame(line: str, body: Optional[bytes] = None) -> bytes:
    data = line.encode("ascii") + b"\r\n"
    if body is not None:
        data += body + b"\r\n"
    return data
