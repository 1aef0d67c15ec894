"""The operations plane under weight: writes with -b survive SIGKILL, and heavy
listing and clearing do not stall the beanstalk clients served on the same thread."""

from __future__ import annotations

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
