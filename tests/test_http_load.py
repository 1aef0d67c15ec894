"""The operations plane under weight: writes with -b survive SIGKILL, and heavy
listing and clearing do not stall the beanstalk clients served on the same thread."""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import greenstalk
import pytest

from conftest import start_beanstalk_py
from http_rig import start_with_http

pytestmark = pytest.mark.daemon

# Worst put-reserve-delete round trip allowed while the plane works hard.
# Measured on the 2-core test machine: about 20-40 ms (the longest slice);
# generous, as the machine is shared and noisy.
WORST_REPLY_S = 1.0


def _put_many(daemon, tube: bytes, count: int, delay: int = 0) -> None:
    """Pipelined puts on one connection (fast), every reply read."""
    with daemon.connect() as sock:
        sock.sendall(b"use " + tube + b"\r\n" + b"put 0 %d 60 4\r\nbody\r\n" % delay * count)
        expected = len(b"USING " + tube + b"\r\n")
        reply = b""
        while reply.count(b"\r\n") < count + 1:
            chunk = sock.recv(1 << 20)
            assert chunk
            reply += chunk
        assert len(reply) > expected and b"INSERTED" in reply


def test_clear_and_move_survive_sigkill(tmp_path: Path) -> None:
    directory = str(tmp_path)
    daemon, http = start_with_http("-b", directory)
    try:
        _put_many(daemon, b"c", 300)
        worker = greenstalk.Client(daemon.address, watch="c")
        for _ in range(20):
            worker.bury(worker.reserve(timeout=1))
        worker.close()
        _put_many(daemon, b"m", 50)
        _put_many(daemon, b"m", 10, delay=3600)
        moved_id = http.json("/api/v1/tubes/m/jobs?limit=1")["jobs"][0]["id"]
        assert http.post("/api/v1/tubes/c/clear", {"state": "ready", "all": True}).json == {"count": 280}
        assert http.post("/api/v1/tubes/m/move", {"state": "ready", "all": True, "to": "m2"}).json == {"count": 50}
        assert http.post("/api/v1/tubes/m/move", {"state": "delayed", "all": True, "to": "m2"}).json == {"count": 10}
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()
    finally:
        daemon.stop()
    again = start_beanstalk_py("-b", directory)
    try:
        client = greenstalk.Client(again.address)
        c, m2 = client.stats_tube("c"), client.stats_tube("m2")
        assert (c["current-jobs-ready"], c["current-jobs-buried"]) == (0, 20)
        assert (m2["current-jobs-ready"], m2["current-jobs-delayed"]) == (50, 10)
        with pytest.raises(greenstalk.NotFoundError):
            client.stats_tube("m")
        assert client.stats_job(moved_id)["tube"] == "m2"  # moved jobs keep their ids
    finally:
        assert again.stop() == 0


def test_heavy_listing_and_clearing_do_not_stall_beanstalk_clients() -> None:
    daemon, http = start_with_http()
    try:
        _put_many(daemon, b"big", 30000)
        report: dict[str, float] = {}
        failures: list[BaseException] = []

        def heavy() -> None:
            try:
                started = time.monotonic()
                after, pages = "", 0
                while True:
                    page = http.json(f"/api/v1/tubes/big/jobs?limit=500{'&after=' + after if after else ''}")
                    pages += 1
                    if not page["next"]:
                        break
                    after = page["next"]
                report["list_s"] = time.monotonic() - started
                report["pages"] = pages
                started = time.monotonic()
                report["cleared"] = http.post("/api/v1/tubes/big/clear", {"state": "ready", "all": True}).json["count"]
                report["clear_s"] = time.monotonic() - started
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        client = greenstalk.Client(daemon.address, use="work", watch="work")
        thread = threading.Thread(target=heavy)
        worst, trips = 0.0, 0
        thread.start()
        while thread.is_alive():
            started = time.monotonic()
            client.put("x")
            client.delete(client.reserve(timeout=5))
            worst = max(worst, time.monotonic() - started)
            trips += 1
        thread.join()
        assert not failures, failures
        assert report["pages"] == 60 and report["cleared"] == 30000
        print(f"\n{trips} round trips, worst {worst * 1000:.1f} ms while listing 30,000 jobs "
              f"({report['list_s'] * 1000:.0f} ms) and clearing them ({report['clear_s'] * 1000:.0f} ms)")
        assert trips > 10
        assert worst < WORST_REPLY_S
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------------- bounds (listener.py)


def _timed_get(http, path: str):
    started = time.monotonic()
    reply = http.get(path)
    return reply, time.monotonic() - started


def _closed_after(socks: list[socket.socket], started: float, limit: float = 6.0) -> list[float]:
    """Seconds from ``started`` until the server closed each of ``socks`` (EOF or reset)."""
    left = {sock.fileno(): sock for sock in socks}
    closed = {}
    while left and time.monotonic() - started < limit:
        readable, _, _ = select.select(list(left.values()), [], [], 0.05)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                closed[sock.fileno()] = time.monotonic() - started
                del left[sock.fileno()]
    assert not left, f"{len(left)} connections still open after {limit} s"
    return [closed[sock.fileno()] for sock in socks]


def test_held_open_connections_and_slow_heads_do_not_stop_healthz() -> None:
    daemon, http = start_with_http()
    port = http.port
    silent: list[socket.socket] = []
    slow: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for _ in range(40):
            silent.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            slow.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        head = b"GET /api/v1/stats HTTP/1.1\r\nHost: localhost\r\n\r\n"
        stop = threading.Event()

        def drip() -> None:  # one byte of a request head a second, on every slow connection
            for index in range(len(head)):
                for sock in slow:
                    try:
                        sock.send(head[index:index + 1])
                    except OSError:
                        pass
                if stop.wait(1.0):
                    return

        dripping = threading.Thread(target=drip)
        dripping.start()
        worst = 0.0
        try:
            while time.monotonic() - opened < 1.7:
                reply, took = _timed_get(http, "/healthz")
                assert reply.status == 200
                worst = max(worst, took)
                time.sleep(0.05)
            # The head timeout (2 s) closes both kinds.
            closed = _closed_after(silent + slow, opened)
        finally:
            stop.set()
            dripping.join()
        assert worst < 1.0, worst
        assert all(1.8 < took < 3.5 for took in closed), (min(closed), max(closed))
        print(f"\n/healthz worst {worst * 1000:.1f} ms beside 40 silent and 40 slow heads; "
              f"all 80 closed {min(closed):.2f}-{max(closed):.2f} s after they opened")
    finally:
        for sock in silent + slow:
            sock.close()
        assert daemon.stop() == 0


def test_past_the_connection_cap_the_probes_still_answer() -> None:
    """--http-max-connections N: the next 32 connections are accepted into a lane that
    answers only /healthz and /readyz (503 to the rest); past those, the backlog."""
    daemon, http = start_with_http("--http-max-connections", "4")
    port = http.port
    held: list[socket.socket] = []
    try:
        opened = time.monotonic()
        held += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        time.sleep(0.2)  # accepted: the main lane is full
        reply, took = _timed_get(http, "/healthz")
        assert (reply.status, reply.json) == (200, {"status": "ok"}) and took < 1.0
        assert http.get("/readyz").json == {"status": "ready"}
        busy = http.get("/api/v1/stats")
        assert busy.status == 503 and busy.headers["retry-after"] == "1"
        assert "--http-max-connections" in busy.json["error"]
        # Fill the probe lane too: a probe now waits in the backlog until the head
        # timeout frees a slot (2 s after the held connections opened).
        held += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(32)]
        time.sleep(0.2)
        reply, took = _timed_get(http, "/healthz")
        assert reply.status == 200
        waited_until = time.monotonic() - opened
        assert took > 0.5 and 1.5 < waited_until < 4.0, (took, waited_until)
        # Once the held connections are gone, everything is served again.
        _closed_after(held, opened)
        assert http.get("/api/v1/stats").status == 200
        print(f"\npast cap + lane: /healthz answered {waited_until:.2f} s after the 36 held connections opened")
    finally:
        for sock in held:
            sock.close()
        assert daemon.stop() == 0
    assert daemon.proc is not None
    assert "--http-max-connections 4 reached" in daemon.proc.stderr.read().decode()
