"""A client of the daemon's HTTP API (``--url``), on the standard library only.

``--url`` is ``http://HOST:PORT``, ``https://HOST:PORT`` (a TLS proxy in
front) or ``unix:PATH`` (``--http unix:PATH``: http.client over an AF_UNIX
socket); a path after the port is a prefix (a proxy serving the API under
it).  The token, if any, comes from ``--token``, ``--token-file`` or
``$BEANSTALK_PY_TOKEN`` and is sent as ``Authorization: Bearer``.

One connection is kept alive for every request of a command (an export
asks once per job).  Each answer other than 200 becomes an
:class:`~.client.AdminError` with the server's own message and the exit
code of the admin tool: 401/403/409/503 refused (4), 404 not found (1),
400 usage (2); no connection is 3.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional
from urllib.parse import quote, urlencode, urlsplit

from ..private_file import PrivateFileError, read_private_file
from .client import AdminError, CannotConnect, NotFound, ServerError, UsageError, connect_unix

ENV_TOKEN = "BEANSTALK_PY_TOKEN"
MAX_PAGE = 500  # the server's largest page of jobs
TUBE_PAGE = 1000  # and of tubes
# A bulk write answers once every job is done (slices of 256, about 1 ms each
# without -b): its answer is waited for this long, or --timeout if longer.
WRITE_TIMEOUT = 300.0
IDLE_REUSE = 1.0  # a POST goes on a fresh connection after this long idle (the server closes idle connections after 2 s)
TOKEN_HINT = f"--token-file FILE, --token TOKEN or ${ENV_TOKEN}"


@dataclass(frozen=True)
class Endpoint:
    """Where the HTTP API listens."""

    scheme: str  # "http", "https" or "unix"
    host: str  # for TCP; "localhost" (the Host header) for unix
    port: int
    prefix: str  # a path prefix ("" or "/beanstalk"), never ending in "/"
    socket_path: str  # for unix
    text: str  # as given, for messages


def parse_url(text: str) -> Endpoint:
    """``http://HOST[:PORT][/PREFIX]``, ``https://...`` or ``unix:PATH``; UsageError otherwise."""
    bad = UsageError(f"--url {text}: expected http://HOST:PORT, https://HOST:PORT or unix:PATH "
                     "(the daemon's --http address)")
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]  # unix:///run/beanstalk-py/http.sock
        if not path:
            raise bad
        return Endpoint("unix", "localhost", 0, "", path, f"unix:{path}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if parts.query or parts.fragment or parts.username is not None or parts.password is not None:
        raise UsageError(f"--url {text}: no user, query or fragment (give a token with {TOKEN_HINT})")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return Endpoint(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), "", text.rstrip("/"))


def read_token_file(path: str) -> str:
    """The token alone on the first line that is not blank or a ``#`` comment;
    the file must be readable by its owner only (chmod 600), as the daemon's."""
    try:
        data = read_private_file(path, "--token-file", 65536)
    except PrivateFileError as exc:
        raise UsageError(str(exc)) from None
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 1:
            raise UsageError(f"--token-file {path}: expected the token alone on a line")
        return words[0]
    raise UsageError(f"--token-file {path}: no token in the file")


def tube_path(tube: str, *rest: str) -> str:
    """``/api/v1/tubes/NAME[/...]``, a ``/`` in the name sent as ``%2F``."""
    return "/".join(("/api/v1/tubes", quote(tube, safe=""), *rest))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = connect_unix(self.socket_path, self.timeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Api:
    """Requests to one HTTP listener.  Use as a context manager."""

    def __init__(self, endpoint: Endpoint, token: Optional[str], timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout
        self.where = endpoint.text
        self._conn: Optional[http.client.HTTPConnection] = None
        self._last = 0.0  # when the connection last answered

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ transport

    def _connect(self) -> http.client.HTTPConnection:
        end = self.endpoint
        conn: http.client.HTTPConnection
        if end.scheme == "unix":
            conn = _UnixConnection(end.socket_path, self.timeout)
        elif end.scheme == "https":
            conn = http.client.HTTPSConnection(end.host, end.port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(end.host, end.port, timeout=self.timeout)
        try:
            conn.connect()
        except socket.timeout:
            conn.close()
            raise CannotConnect(f"cannot connect to {self.where}: timed out after {self.timeout:g} s") from None
        except ssl.SSLError as exc:
            conn.close()
            raise CannotConnect(f"cannot connect to {self.where}: TLS: {exc.reason or exc}") from None
        except socket.gaierror as exc:
            conn.close()
            raise CannotConnect(f"cannot connect to {self.where}: {exc.strerror}") from None
        except OSError as exc:
            conn.close()
            raise CannotConnect(f"cannot connect to {self.where}: {_reason(exc)}") from None
        return conn

    def _exchange(self, method: str, path: str, data: Optional[bytes],
                  read_timeout: float) -> tuple[int, str, bytes]:
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        # A kept-alive connection the server has closed fails on first use: a GET
        # is asked again on a new one; a POST is sent only on a fresh or busy one.
        reused = self._conn is not None
        if reused and method != "GET" and time.monotonic() - self._last > IDLE_REUSE:
            self.close()
            reused = False
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            try:
                conn.request(method, self.endpoint.prefix + path, body=data, headers=headers)
                if conn.sock is not None:
                    conn.sock.settimeout(read_timeout)
                response = conn.getresponse()
                body = response.read()
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
            except socket.timeout:
                self.close()
                raise CannotConnect(f"{self.where}: no answer to {method} {path} within {read_timeout:g} s"
                                    + ("; the server may still be doing it" if method == "POST" else "")) from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1 and method == "GET":
                    reused = False
                    continue
                raise CannotConnect(f"{self.where}: connection lost: {_reason(exc)}") from None
            except http.client.HTTPException as exc:
                self.close()
                raise UsageError(f"{self.where} does not answer HTTP ({type(exc).__name__}): --url takes the "
                                 "daemon's --http address, not its beanstalk port") from None
            except OSError as exc:
                self.close()
                raise CannotConnect(f"{self.where}: connection lost: {_reason(exc)}") from None
            self._last = time.monotonic()
            if response.will_close:
                self.close()
            return response.status, response.getheader("content-type", ""), body
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Optional[dict[str, Any]] = None) -> Any:
        """The JSON of a 200 answer; any other answer raises an AdminError."""
        data = json.dumps(body).encode() if body is not None else None
        read_timeout = max(self.timeout, WRITE_TIMEOUT) if method == "POST" else self.timeout
        status, kind, raw = self._exchange(method, path, data, read_timeout)
        value: Any = None
        if kind.split(";")[0].strip().lower() == "application/json":
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
        if status == 200:
            if value is None:
                raise ServerError(f"{self.where}{path}: the answer is not JSON: is --url the daemon's "
                                  "--http address?")
            return value
        raise self._error(status, method, path, value)

    def _error(self, status: int, method: str, path: str, value: Any) -> AdminError:
        message = value.get("error") if isinstance(value, dict) else None
        if not isinstance(message, str):
            message = http.client.responses.get(status, "error").lower()
        if status == 401:
            if self.token is None:
                return AdminError(f"{self.where} asks for a token (401): give {TOKEN_HINT}")
            return AdminError(f"{self.where} did not accept the token (401): check {TOKEN_HINT}")
        if status == 403:
            return AdminError(f"{self.where} refused {method} {path} (403): {message}")
        if status == 404:
            if message == "no such path":
                return UsageError(f"{self.where}{path.split('?')[0]}: no such path: is --url the daemon's --http address "
                                  "(beanstalk-py with the HTTP API)?")
            return NotFound(message)
        if status == 409:
            return AdminError(f"refused (409): {message}")
        if status == 400:
            return UsageError(f"{self.where} refused the request (400): {message}")
        if status == 503:
            done = value.get("count") if isinstance(value, dict) else None
            more = f"; {done} jobs were done before it stopped" if isinstance(done, int) and done else ""
            return AdminError(f"{self.where} could not do it (503): {message}{more}")
        return ServerError(f"{self.where} answered {status} to {method} {path}: {message}")

    def get(self, path: str, **query: Any) -> Any:
        params = {key: value for key, value in query.items() if value is not None}
        return self.request("GET", path + ("?" + urlencode(params) if params else ""))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    # ------------------------------------------------------------------ pages

    def tube_names(self) -> list[str]:
        """Every tube, by name, page after page."""
        names: list[str] = []
        after: Optional[str] = None
        while True:
            page = _dict(self.get("/api/v1/tubes", limit=TUBE_PAGE, after=after), self.where, "tubes")
            for tube in _list(page, "tubes", self.where):
                if isinstance(tube, dict) and isinstance(tube.get("name"), str):
                    names.append(tube["name"])
            following = page.get("next")
            if not isinstance(following, str) or not following or following == after:
                return names
            after = following

    def jobs(self, tube: str, state: str, limit: Optional[int] = None,
             page: int = MAX_PAGE) -> Iterator[dict[str, Any]]:
        """A tube's jobs in ``state`` in serving order, following ``next`` cursors,
        at most ``limit`` of them (None: all)."""
        after: Optional[str] = None
        left = limit
        while left is None or left > 0:
            size = min(page, MAX_PAGE) if left is None else min(page, MAX_PAGE, left)
            data = _dict(self.get(tube_path(tube, "jobs"), state=state, limit=size, after=after),
                         self.where, "jobs")
            for job in _list(data, "jobs", self.where):
                if not isinstance(job, dict) or not isinstance(job.get("id"), int):
                    raise ServerError(f"{self.where}: a job without an id in a page of {tube}")
                if left is not None:
                    if left <= 0:
                        break
                    left -= 1
                yield job
            following = data.get("next")
            if not isinstance(following, str) or not following or following == after:
                return
            after = following


def _dict(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ServerError(f"{where}: the {what} answer is not a JSON object")
    return value


def _list(value: dict[str, Any], key: str, where: str) -> list[Any]:
    found = value.get(key)
    if not isinstance(found, list):
        raise ServerError(f"{where}: the answer has no {key!r} list")
    return found
