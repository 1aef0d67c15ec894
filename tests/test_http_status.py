"""GET /status/{token}: signing and verifying tokens, the key file, the route's
long poll and its cap in-process (a fake store, trio's mock clock), and a real
daemon: a job's whole life cycle as a page sees it, refused tokens, the long
poll, CORS, no bearer token and no Host check, the key file refused at start.

The daemon tests carry their own ``daemon`` marker (the rest are unit tests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import greenstalk
import pytest
import trio

from beanstalk_py.http.auth import HttpConfigError
from beanstalk_py.http.listener import READ_TIMEOUT_S
from beanstalk_py.http.settings import HttpSettings
from beanstalk_py.http.status import (MAX_WAIT_S, NOT_FOUND, cors_headers, load_status_secret, long_poll_cap,
                                      make_status_token, page_state, status_route, verify_status_token,
                                      wait_params)
from conftest import Daemon, free_port
from http_rig import Http, Reply, start_with_http

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"k3y-for-the-status-tests-0123456789"


def _readme_helper() -> Any:
    """make_status_token as a web app copies it (README): its source run on its
    own, with nothing from beanstalk_py, so the tests prove the copy works."""
    namespace: dict[str, Any] = {"base64": base64, "hashlib": hashlib, "hmac": hmac}
    exec(inspect.getsource(make_status_token), namespace)  # noqa: S102 - our own source
    return namespace["make_status_token"]


# ---------------------------------------------------------------------- tokens (unit)


def test_token_round_trip_and_format() -> None:
    helper = _readme_helper()
    for job_id in (1, 2, 99, 2**63, 10**19 + 7):
        token = make_status_token(SECRET, job_id)
        assert helper(SECRET, job_id) == token
        number, _, mac = token.partition(".")
        assert number == str(job_id) and len(mac) == 22 and "=" not in mac
        assert verify_status_token(SECRET, token) == job_id
    # Pinned by hand, so a change of the format cannot slip through both sides.
    mac = hmac.new(SECRET, b"beanstalk-py status v1 42", hashlib.sha256).digest()[:16]
    assert make_status_token(SECRET, 42) == "42." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def test_refused_tokens() -> None:
    token = make_status_token(SECRET, 7)
    mac = token.partition(".")[2]
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in (
        "", "7", "7.", ".", f".{mac}", f"7.{mac[:-1]}", f"7.{mac}A", f"7.{flipped}",
        f"8.{mac}",  # another id with this id's MAC
        f"07.{mac}", f"+7.{mac}", f" 7.{mac}", f"7.{mac} ", f"\u0667.{mac}", f"7.{mac}\n",
        f"0.{make_status_token(SECRET, 0).partition('.')[2]}",  # ids start at 1
        make_status_token(b"another-key-0123456789", 7),
        f"7.{base64.urlsafe_b64encode(b'x' * 16).decode().rstrip('=')}",
        "1" * 21 + f".{mac}",
    ):
        assert verify_status_token(SECRET, bad) is None, bad


def test_key_file(tmp_path: Path) -> None:
    path = tmp_path / "status.key"
    path.write_bytes(b"  " + SECRET + b"\n\n")
    path.chmod(0o600)
    assert load_status_secret(str(path)) == SECRET
    path.chmod(0o644)
    with pytest.raises(HttpConfigError, match=r"--http-status-secret .*mode 0644.*chmod 600"):
        load_status_secret(str(path))
    path.chmod(0o600)
    path.write_bytes(b"short-key-15byt\n")
    with pytest.raises(HttpConfigError, match=r"the key is 15 bytes; at least 16 are needed"):
        load_status_secret(str(path))
    path.write_bytes(b"x" * 4097)
    with pytest.raises(HttpConfigError, match="over 4096 bytes"):
        load_status_secret(str(path))
    with pytest.raises(HttpConfigError, match="--http-status-secret .*missing"):
        load_status_secret(str(tmp_path / "missing"))


def test_states_parameters_and_cors() -> None:
    assert [page_state(s) for s in ("ready", "delayed", "reserved", "buried", "deleted", None, "odd")] == \
        ["queued", "delayed", "working", "failed", "done", "unknown", "unknown"]
    assert wait_params(None, None) == (0, None)
    assert wait_params("5", "queued") == (5, "queued")
    assert wait_params("3600", "working") == (MAX_WAIT_S, "working")
    assert wait_params("5", "") == (5, None)  # a page's first ask: nothing seen yet
    for wait, seen in (("-1", None), ("1.5", None), ("x", None), ("\u0665", None), ("1", "ready"), ("1", "Done")):
        with pytest.raises(ValueError):
            wait_params(wait, seen)
    # The longest wait is answered before hypercorn's read timeout closes the connection.
    assert MAX_WAIT_S + 2 <= READ_TIMEOUT_S
    assert long_poll_cap(256) == 128 and long_poll_cap(10_000) == 256 and long_poll_cap(1) == 1
    assert cors_headers(("*",), "https://a.example") == {"Access-Control-Allow-Origin": "*"}
    listed = ("https://a.example", "https://b.example")
    assert cors_headers(listed, "https://b.example") == {"Access-Control-Allow-Origin": "https://b.example",
                                                         "Vary": "Origin"}
    assert cors_headers(listed, "https://evil.example") == {"Vary": "Origin"}
    assert cors_headers(listed, None) == {"Vary": "Origin"}


def test_readme_shows_the_helper_as_it_is() -> None:
    """Once README has the subsection, its helper is this one, line for line."""
    readme = (ROOT / "README.md").read_text()
    if "Job status for web pages" not in readme:
        pytest.skip("README has no job-status subsection yet")
    assert inspect.getsource(make_status_token) in readme


# ---------------------------------------------------------------------- the route in-process (unit)


class _Store:
    """job_state only: what the route asks of the store."""

    def __init__(self) -> None:
        self.states: dict[int, str] = {}
        self.lookups = 0

    def job_state(self, job_id: int) -> Optional[str]:
        self.lookups += 1
        return self.states.get(job_id)


class _Asgi:
    """One request to an ASGI app without a server; :meth:`leave` is the page going away."""

    def __init__(self, app: Any, path: str, query: str = "", method: str = "GET") -> None:
        self.app, self.path, self.query, self.method = app, path, query, method
        self.sent: list[dict[str, Any]] = []
        self._gone = trio.Event()
        self._asked = False

    def leave(self) -> None:
        self._gone.set()

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": self.method,
                 "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
                 "query_string": self.query.encode(), "root_path": "", "headers": [],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await self.app(scope, self._receive, self._send)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def _app(store: _Store, max_connections: int = 256) -> Any:
    from starlette.applications import Starlette

    settings = HttpSettings(spec="127.0.0.1:0", max_connections=max_connections)
    return Starlette(routes=[status_route(SimpleNamespace(store=store), SECRET, settings)])


async def test_long_poll_in_process(autojump_clock: trio.testing.MockClock) -> None:
    store = _Store()
    store.states[5] = "ready"
    app = _app(store)
    path = "/status/" + make_status_token(SECRET, 5)
    async with trio.open_nursery() as nursery:
        # Changes after 3 s: answered at the next look (every 0.2 s), not at 10 s.
        request = _Asgi(app, path, "wait=10&seen=queued")
        start = trio.current_time()
        nursery.start_soon(request.run)
        await trio.sleep(3.05)
        assert request.sent == []
        store.states[5] = "reserved"
        await trio.sleep(0.2)
        assert (request.status, request.body) == (200, b'{"state":"working"}')
        assert trio.current_time() - start < 3.3
    # No change: the current state after the wait, capped at MAX_WAIT_S.
    request = _Asgi(app, path, "wait=3600&seen=working")
    start, before = trio.current_time(), store.lookups
    await request.run()
    assert request.body == b'{"state":"working"}' and trio.current_time() - start == pytest.approx(MAX_WAIT_S)
    # One O(1) look per 0.2 s, and one each at the start and the end.
    assert store.lookups - before == pytest.approx(MAX_WAIT_S / 0.2, abs=4)
    # Seen differs from now, or no seen: answered at once.
    for query in ("wait=10&seen=queued", "wait=10", "seen=working"):
        request = _Asgi(app, path, query)
        start = trio.current_time()
        await request.run()
        assert request.body == b'{"state":"working"}' and trio.current_time() == start, query


async def test_long_poll_cap_and_a_page_that_leaves(autojump_clock: trio.testing.MockClock) -> None:
    store = _Store()
    app = _app(store, max_connections=4)  # two long polls at once
    path = "/status/" + make_status_token(SECRET, 9)  # unknown id: "unknown"
    waiting = [_Asgi(app, path, "wait=20&seen=unknown") for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for request in waiting:
            nursery.start_soon(request.run)
        await trio.sleep(1)
        over = _Asgi(app, path, "wait=20&seen=unknown")
        await over.run()
        assert over.status == 503 and (b"retry-after", b"1") in over.sent[0]["headers"]
        # A plain look is never refused.
        plain = _Asgi(app, path)
        await plain.run()
        assert (plain.status, plain.body) == (200, b'{"state":"unknown"}')
        # The first page goes away: its place is free within one look.
        waiting[0].leave()
        await trio.sleep(0.3)
        assert waiting[0].sent and waiting[1].sent == []
        again = _Asgi(app, path, "wait=1&seen=unknown")
        start = trio.current_time()
        await again.run()
        assert again.status == 200 and trio.current_time() - start == pytest.approx(1)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------- a real daemon


def _key_file(tmp_path: Path, data: bytes = SECRET + b"\n", mode: int = 0o600) -> str:
    path = tmp_path / "status.key"
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


@pytest.fixture
def status_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Http]]:
    daemon, http = start_with_http("--http-status-secret", _key_file(tmp_path))
    try:
        yield daemon, http
    finally:
        assert daemon.stop() == 0


def _token(job_id: int) -> str:
    """What the web app does after a put: the README's helper with the key file's bytes."""
    return _readme_helper()(SECRET, job_id)


def _state(http: Http, job_id: int, **kwargs: Any) -> str:
    reply = http.get(f"/status/{_token(job_id)}", **kwargs)
    assert reply.status == 200 and reply.headers["cache-control"] == "no-store", reply
    assert reply.headers["content-type"] == "application/json"
    state: str = reply.json["state"]
    assert reply.json == {"state": state}  # nothing else: no tube, no body
    return state


@pytest.mark.daemon
def test_a_jobs_life_as_a_page_sees_it(status_daemon: tuple[Daemon, Http]) -> None:
    daemon, http = status_daemon
    with greenstalk.Client(daemon.address, use="mail", watch="mail") as client:
        job_id = client.put("hello")
        assert _state(http, job_id) == "queued"
        job = client.reserve(timeout=1)
        assert job.id == job_id and _state(http, job_id) == "working"
        client.bury(job)
        assert _state(http, job_id) == "failed"
        client.kick_job(job_id)
        assert _state(http, job_id) == "queued"
        job = client.reserve(timeout=1)
        assert _state(http, job_id) == "working"
        client.delete(job)
        assert _state(http, job_id) == "done"
        later = client.put("later", delay=300)
        assert _state(http, later) == "delayed"
    assert _state(http, 987654) == "unknown"  # a valid token for an id never used
    # HEAD: the same headers, no body; any Host (no loopback rule for /status).
    head = http.request("HEAD", f"/status/{_token(later)}")
    assert (head.status, head.data, head.headers["cache-control"]) == (200, b"", "no-store")
    assert _state(http, later, headers={"Host": "app.example.com"}) == "delayed"
    assert http.get("/api/v1/stats", headers={"Host": "app.example.com"}).status == 403  # the rest keeps it
    assert http.get("/status/" + _token(later), headers={"Origin": "https://a.example"}).headers[
        "access-control-allow-origin"] == "*"  # the default --http-cors-origins


@pytest.mark.daemon
def test_refused_tokens_say_nothing(status_daemon: tuple[Daemon, Http]) -> None:
    daemon, http = status_daemon
    with greenstalk.Client(daemon.address) as client:
        first, second = client.put("a"), client.put("b")
    mac_of_second = _token(second).partition(".")[2]
    replies = [http.get(f"/status/{token}") for token in (
        f"{first}.{mac_of_second}",  # another id's token, for a job that exists
        f"{second}.{'A' * 22}",  # forged, for a job that exists
        f"{second + 1000}.{'A' * 22}",  # forged, for an id that does not exist
        _token(first)[:-1],  # truncated
        "not-a-token",
    )]
    for reply in replies:
        assert (reply.status, reply.json) == (404, NOT_FOUND)
        assert reply.headers["cache-control"] == "no-store"
    assert len({reply.data for reply in replies}) == 1
    refused = http.post(f"/status/{_token(first)}")
    assert refused.status == 405 and "GET" in refused.headers["allow"]


@pytest.mark.daemon
def test_long_poll(status_daemon: tuple[Daemon, Http]) -> None:
    daemon, http = status_daemon
    with greenstalk.Client(daemon.address) as client:
        job_id = client.put("x")
        found: list[Reply] = []
        poll = threading.Thread(target=lambda: found.append(
            http.get(f"/status/{_token(job_id)}?wait=10&seen=queued")))
        start = time.monotonic()
        poll.start()
        time.sleep(0.5)
        assert found == []
        job = client.reserve(timeout=1)
        poll.join(timeout=15)
        assert found[0].json == {"state": "working"}
        assert time.monotonic() - start < 3  # answered on the change, not after 10 s
        # No change: the state after the wait.
        start = time.monotonic()
        assert http.get(f"/status/{_token(job_id)}?wait=1&seen=working").json == {"state": "working"}
        assert 0.9 <= time.monotonic() - start < 3
        client.delete(job)
    assert http.get(f"/status/{_token(job_id)}?wait=10&seen=working").json == {"state": "done"}
    bad = http.get(f"/status/{_token(job_id)}?wait=soon")
    assert bad.status == 400 and "wait" in bad.json["error"]


@pytest.mark.daemon
def test_cors_and_no_bearer_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("operator-b81d4e0c93a27f55 operator\n")
    tokens.chmod(0o600)
    daemon, http = start_with_http("--http-status-secret", _key_file(tmp_path), "--http-tokens", str(tokens),
                                   "--http-cors-origins", "https://app.example,https://admin.example")
    try:
        with greenstalk.Client(daemon.address) as client:
            job_id = client.put("x")
        path = f"/status/{_token(job_id)}"
        assert http.get("/api/v1/stats").status == 401  # the rest needs a token
        allowed = http.get(path, headers={"Origin": "https://admin.example"})
        assert allowed.json == {"state": "queued"}  # no Authorization header sent
        assert allowed.headers["access-control-allow-origin"] == "https://admin.example"
        assert allowed.headers["vary"] == "Origin"
        other = http.get(path, headers={"Origin": "https://evil.example"})
        assert other.status == 200 and "access-control-allow-origin" not in other.headers
        assert other.headers["vary"] == "Origin"
        assert http.get(f"/status/{job_id}.{'A' * 22}").status == 404  # not a 401: no token asked
        preflight = http.request("OPTIONS", path, headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
        assert preflight.status == 204 and preflight.data == b""
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "GET" in preflight.headers["access-control-allow-methods"]
        refused = http.request("OPTIONS", path, headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert refused.status == 204 and "access-control-allow-origin" not in refused.headers
    finally:
        assert daemon.stop() == 0


@pytest.mark.daemon
def test_status_is_off_without_a_key() -> None:
    daemon, http = start_with_http()
    try:
        with greenstalk.Client(daemon.address) as client:
            job_id = client.put("x")
        reply = http.get(f"/status/{_token(job_id)}")
        assert (reply.status, reply.json) == (404, {"error": "no such path"})
    finally:
        assert daemon.stop() == 0


@pytest.mark.daemon
@pytest.mark.parametrize("data, mode, message", [
    (SECRET, 0o644, "mode 0644"),
    (b"too-short\n", 0o600, "the key is 9 bytes"),
])
def test_a_bad_key_file_stops_the_daemon(tmp_path: Path, data: bytes, mode: int, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "beanstalk_py", "-p", str(free_port()), "--http", f"127.0.0.1:{free_port()}",
         "--http-status-secret", _key_file(tmp_path, data, mode)],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert SECRET.decode() not in result.stderr


@pytest.mark.daemon
def test_long_polls_are_capped_and_a_closed_page_frees_its_place(tmp_path: Path) -> None:
    # --http-max-connections 2: one long poll at once (half the connections).
    daemon, http = start_with_http("--http-status-secret", _key_file(tmp_path), "--http-max-connections", "2")
    try:
        with greenstalk.Client(daemon.address) as client:
            job_id = client.put("x")
        path = f"/status/{_token(job_id)}?wait=20&seen=queued"
        page = socket.create_connection(("127.0.0.1", http.port))
        page.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        probe = f"/status/{_token(job_id)}?wait=1&seen=queued"
        while (over := http.get(probe)).status != 503:  # until the page's poll waits
            assert over.status == 200 and time.monotonic() < deadline
        assert over.headers["retry-after"] == "1" and over.headers["cache-control"] == "no-store"
        page.close()
        time.sleep(0.5)  # the poll sees the page go within one look (0.2 s)
        start = time.monotonic()
        assert http.get(f"/status/{_token(job_id)}?wait=1&seen=queued").json == {"state": "queued"}
        assert time.monotonic() - start >= 0.9
    finally:
        assert daemon.stop() == 0
    assert daemon.proc is not None and daemon.proc.stderr is not None
    errors = daemon.proc.stderr.read()
    assert b"Traceback" not in errors and b"Error" not in errors, errors
