"""HTTP helpers for the operations-plane tests: a daemon started with ``--http``
and a small client on the standard library (``http.client``), over TCP or a unix socket.

Importable from tests/ as rig.py is.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional

from conftest import Daemon, free_port, start_beanstalk_py


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    data: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Http:
    """Requests to one listener; ``token`` adds ``Authorization: Bearer``."""

    def __init__(self, port: int = 0, unix: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 30.0) -> None:
        self.port = port
        self.unix = unix
        self.token = token
        self.timeout = timeout

    def with_token(self, token: Optional[str]) -> "Http":
        return Http(self.port, self.unix, token, self.timeout)

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict[str, str]] = None,
                raw: Optional[bytes] = None) -> Reply:
        if self.unix:
            conn: http.client.HTTPConnection = _UnixConnection(self.unix, self.timeout)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        if body is None and "raw" not in kwargs:
            body = {}
        return self.request("POST", path, body, **kwargs)

    def json(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, (path, reply)
        return reply.json

    def wait(self, timeout: float = 15.0) -> "Http":
        """Until /healthz answers (the listener starts once the beanstalk port serves)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/healthz").status in (200, 401):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def start_with_http(*extra: str) -> tuple[Daemon, Http]:
    """beanstalk-py with ``--http 127.0.0.1:PORT`` (and ``extra``), the listener up."""
    port = free_port()
    daemon = start_beanstalk_py("--http", f"127.0.0.1:{port}", *extra)
    try:
        return daemon, Http(port).wait()
    except BaseException:
        daemon.stop()
        raise


def yaml_dict(data: bytes) -> dict[str, str]:
    """The YAML of stats / stats-tube / stats-job as strings."""
    out = {}
    for line in data.decode().splitlines()[1:]:
        key, _, value = line.partition(": ")
        out[key] = value.strip('"')
    return out


def beanstalk(daemon: Daemon, command: bytes) -> bytes:
    """One command on a fresh connection; the reply's data (for OK replies) or its line."""
    with daemon.connect() as sock:
        sock.sendall(command + b"\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += sock.recv(65536)
        line, _, rest = reply.partition(b"\r\n")
        if not line.startswith(b"OK "):
            return line
        size = int(line.split()[1])
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        return rest[:size]
