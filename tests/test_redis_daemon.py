"""`beanstalk-py --store redis://...` as real daemons, driven by greenstalk
over real sockets: one front end, two front ends on one redis-server, a
front end stopped, killed or paused past its lease while its clients hold
jobs, and the start-up failures (no hiredis, no Redis).

The redis-server is tests/redis_rig.py's (a free port, stopped by pid;
skipped with the reason where redis-server is not installed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import greenstalk
import pytest

from conftest import Daemon, listening_socket, start_beanstalk_py
from redis_rig import RedisServer, redis_server, store_url  # noqa: F401  (fixtures)

# How soon a put on one front end reaches a reserve blocked on another.
# Measured on the 2-core test machine: 1-3 ms (BLMPOP on the inbox); the
# bound leaves room for a loaded CI machine.
CROSS_FE_BOUND_S = 0.25


@pytest.fixture
def front_ends(store_url: str) -> Iterator[list[Daemon]]:
    """Two front ends on one store."""
    daemons = [start_beanstalk_py("--store", store_url) for _ in range(2)]
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


def client(daemon: Daemon, **kwargs: object) -> greenstalk.Client:
    return greenstalk.Client((daemon.host, daemon.port), **kwargs)  # type: ignore[arg-type]


def reserve_in_thread(worker: greenstalk.Client, timeout: int) -> tuple[threading.Thread, dict]:
    """A reserve blocked in another thread; the result and its wait in the dict."""
    result: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            result["job"] = worker.reserve(timeout=timeout)
        except greenstalk.TimedOutError:
            result["job"] = None
        except ConnectionError as exc:  # its front end died
            result["error"] = exc
        result["waited"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_greenstalk_against_one_front_end(store_url: str) -> None:
    daemon = start_beanstalk_py("--store", store_url)
    try:
        with client(daemon, use="jobs", watch=["jobs"]) as c:
            assert c.put(b"first", priority=10) == 1
            assert c.put(b"second", priority=5) == 2
            assert c.put(b"later", delay=60) == 3
            assert c.peek(1).body == "first"
            job = c.reserve(timeout=1)
            assert (job.id, job.body) == (2, "second")  # (pri, id) order
            c.touch(job)
            assert c.stats_job(job)["state"] == "reserved"
            c.release(job, priority=20)
            job = c.reserve(timeout=1)
            assert job.id == 1
            c.bury(job)
            assert c.stats_tube("jobs")["current-jobs-buried"] == 1
            assert c.peek_buried().id == 1
            assert c.kick(10) == 1
            # greenstalk buries at priority 65536: the released job (20) comes first.
            assert c.reserve(timeout=1).id == 2
            c.delete(2)
            job = c.reserve(timeout=1)
            assert job.id == 1 and c.stats_job(job)["kicks"] == 1
            c.delete(job)
            c.kick_job(3)  # the delayed job, ready at once
            assert c.reserve(timeout=1).id == 3
            c.delete(3)
            started = time.monotonic()
            with pytest.raises(greenstalk.TimedOutError):
                c.reserve(timeout=1)
            # The waiter's own timer, run when Redis says it is due.
            assert 0.95 < time.monotonic() - started < 1.3
            assert c.watch("other") == 2
            assert sorted(c.watching()) == ["jobs", "other"]
            assert c.ignore("other") == 1
            assert c.using() == "jobs"
            assert "jobs" in c.tubes()
            with pytest.raises(greenstalk.NotFoundError):
                c.delete(99)
            stats = c.stats()
            assert (stats["total-jobs"], stats["current-jobs-ready"], stats["current-connections"]) == (3, 0, 1)
            assert stats["cmd-put"] == 3 and stats["cmd-delete"] == 4
    finally:
        assert daemon.stop() == 0


def test_pipelined_commands_and_quit_get_every_reply(store_url: str) -> None:
    """Replies owed by the store (Laters) go out before the connection
    closes, and each in its command's place."""
    daemon = start_beanstalk_py("--store", store_url)
    try:
        with daemon.connect() as sock:
            sock.sendall(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nlist-tube-used\r\npeek 2\r\nquit\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data == b"INSERTED 1\r\nINSERTED 2\r\nUSING default\r\nFOUND 2 1\r\nb\r\n"
    finally:
        daemon.stop()


def test_two_front_ends_serve_one_set_of_tubes(front_ends: list[Daemon]) -> None:
    a, b = front_ends
    with client(a, use="t") as producer, client(b, watch=["t"]) as worker, client(b) as other:
        assert producer.put(b"one") == 1
        job = worker.reserve(timeout=1)
        assert (job.id, job.body) == (1, "one")
        worker.delete(job)

        # A reserve blocked on B is served at once by a put on A.
        thread, result = reserve_in_thread(worker, timeout=10)
        time.sleep(0.2)  # B's reserve is registered as a waiter
        producer.put(b"two")
        thread.join()
        assert result["job"].body == "two"
        assert result["waited"] < 0.2 + CROSS_FE_BOUND_S
        worker.delete(result["job"])

        # A delayed put on A reaches the waiter on B when its delay ends
        # (B ticks the Redis timers while one of its sessions waits).
        thread, result = reserve_in_thread(worker, timeout=10)
        producer.put(b"three", delay=1)
        thread.join()
        assert result["job"].body == "three"
        assert 0.95 < result["waited"] < 1.0 + CROSS_FE_BOUND_S
        worker.release(result["job"], delay=0)
        # The released job is visible from A at once.
        assert producer.peek_ready().id == 3
        assert other.stats_tube("t")["current-jobs-ready"] == 1

        # stats on both: job and command counters for the whole store
        # (cmd-* sent every 100 ms), connections of each front end.
        time.sleep(0.25)
        sa, sb = producer.stats(), worker.stats()
        for name in ("total-jobs", "current-jobs-ready", "current-tubes", "cmd-put", "cmd-reserve",
                     "cmd-release"):
            assert sa[name] == sb[name], name
        assert (sa["total-jobs"], sa["cmd-put"], sa["cmd-release"]) == (3, 3, 1)
        assert (sa["current-connections"], sb["current-connections"]) == (1, 2)
        assert (sa["current-producers"], sb["current-producers"]) == (1, 0)
        assert (sa["current-workers"], sb["current-workers"]) == (0, 1)
        assert sa["pid"] != sb["pid"]


def test_a_stopped_front_end_gives_its_reservations_back_at_once(front_ends: list[Daemon]) -> None:
    a, b = front_ends
    with client(b) as survivor:
        survivor.put(b"held", ttr=60)
        holder = client(a)
        assert holder.reserve(timeout=1).id == 1
        assert a.stop() == 0  # SIGTERM: the driver closes its clients, the closes reach Redis
        holder.close()
        job = survivor.reserve(timeout=1)
        assert job.id == 1 and survivor.stats_job(job)["timeouts"] == 0


def test_a_killed_front_end_is_reclaimed_after_its_lease(front_ends: list[Daemon]) -> None:
    """SIGKILL: no close reaches Redis.  After the front end's lease
    (service.LEASE_S, 5 s) the survivor's next call reclaims it: the job its
    client held comes back (no timeout counted), and its waiter is dropped,
    so a put meant for it, handed to it before the lease ran out, comes back
    too.  The survivor serves both long before their 60 s TTR."""
    from beanstalk_py.redisstore.service import LEASE_RENEW_S, LEASE_S

    a, b = front_ends
    with client(b, watch=["default", "w"]) as survivor:
        survivor.put(b"held", ttr=60)
        holder, waiter = client(a), client(a, watch=["w"])
        assert holder.reserve(timeout=1).id == 1
        thread, waited = reserve_in_thread(waiter, timeout=100)
        time.sleep(0.2)  # the reserve on A is a waiter in Redis
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait()
        killed_at = time.monotonic()
        holder.close()
        thread.join(timeout=5)
        assert "error" in waited  # the dead front end's client saw its socket close
        waiter.close()

        survivor.use("w")
        survivor.put(b"for the dead waiter", ttr=60)
        assert survivor.stats_job(2)["state"] == "reserved"  # handed to A's waiter: A's lease holds
        first = survivor.reserve(timeout=10)
        first_at = time.monotonic() - killed_at
        second = survivor.reserve(timeout=10)
        # A renewed its lease at most LEASE_RENEW_S before the kill, so it ran
        # out LEASE_S - LEASE_RENEW_S .. LEASE_S after it; B, with a waiter,
        # ticks every 20 ms, so the reclaim follows within a tick.
        assert LEASE_S - LEASE_RENEW_S - 0.1 < first_at < LEASE_S + CROSS_FE_BOUND_S
        assert time.monotonic() - killed_at < LEASE_S + CROSS_FE_BOUND_S
        # Reserve order: job 1 was reserved before job 2.
        assert (first.id, second.id) == (1, 2)
        for job in (first, second):
            stats = survivor.stats_job(job)
            assert (stats["reserves"], stats["timeouts"], stats["releases"]) == (2, 0, 0)
        # A's waiter is gone, and its clients' use/watch counts with it.
        w, default = survivor.stats_tube("w"), survivor.stats_tube("default")
        assert (w["current-waiting"], w["current-watching"], w["current-using"]) == (0, 1, 1)
        assert (default["current-watching"], default["current-using"]) == (1, 0)
        print(f"reclaimed {first_at:.2f} s after SIGKILL")


def test_a_front_end_that_lost_its_lease_starts_afresh(front_ends: list[Daemon]) -> None:
    """SIGSTOP past the lease: meanwhile B reclaims A (B's lease renewal is
    a call); once continued, A finds its lease gone, hangs up its clients
    (their state went to others) and serves again under a new identity,
    without exiting.  Its client's job went back (not as a timeout)."""
    import signal

    from beanstalk_py.redisstore.service import LEASE_S

    a, b = front_ends
    with client(b) as survivor:
        survivor.put(b"held", ttr=60)
        holder = client(a)
        assert holder.reserve(timeout=1).id == 1
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        try:
            job = survivor.reserve(timeout=int(LEASE_S) + 3)
            assert job.id == 1 and survivor.stats_job(job)["timeouts"] == 0
        finally:
            a.proc.send_signal(signal.SIGCONT)
        with pytest.raises((ConnectionError, greenstalk.Error, OSError)):
            holder.stats()  # hung up (or its reply never comes: the socket is closed)
        holder.close()
        time.sleep(0.5)
        assert a.proc.poll() is None
        with client(a) as again:  # the same front end, afresh
            again.put(b"after")
            assert again.reserve(timeout=2).body == "after"


def test_without_hiredis_the_message_names_the_extra(tmp_path: Path, store_url: str) -> None:
    (tmp_path / "hiredis.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "beanstalk_py", "-p", "0", "--store", store_url],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "pip install 'beanstalk-py[redis]'" in proc.stderr


def test_an_unreachable_redis_is_a_clear_exit() -> None:
    with socket.socket() as sock:  # a port nothing listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        listener = listening_socket()
        daemon = Daemon([sys.executable, "-m", "beanstalk_py", "--store", f"redis://127.0.0.1:{port}/0"],
                        listener=listener)
        # Tried for CONNECT_TIMEOUT_S (Redis may be starting too), then a clear exit.
        with pytest.raises(RuntimeError, match="cannot connect to redis at 127.0.0.1.*gave up after trying for 10 s"):
            daemon.start(timeout=30)
        assert daemon.proc is not None and daemon.proc.returncode == 2


def test_the_http_plane_says_what_store_mode_cannot_do_yet(store_url: str) -> None:
    """--http beside --store: the probes answer (a load balancer's), every
    query is a 501 naming store mode, never an empty queue."""
    import json
    import urllib.error
    import urllib.request

    from conftest import free_port

    http_port = free_port()
    daemon = start_beanstalk_py("--store", store_url, "--http", f"127.0.0.1:{http_port}")
    try:
        with client(daemon) as c:
            c.put(b"x")
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 10
        while True:  # the plane starts once the drivers serve
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as answer:
                    assert answer.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for path in ("/api/v1/stats", "/api/v1/tubes", "/api/v1/jobs/1", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"{base}{path}", timeout=5)
            assert caught.value.code == 501, path
            assert "not available with --store redis yet" in json.loads(caught.value.read())["error"]
    finally:
        assert daemon.stop() == 0


def test_a_front_end_rides_out_a_redis_restart() -> None:
    """Redis goes away and comes back on the same address (empty: no
    persistence): the front end hangs up its clients, reconnects, and serves
    new ones without a restart of its own; `stats` id changes with the store."""
    own = RedisServer().start()
    daemon = start_beanstalk_py("--store", own.url)
    try:
        with client(daemon) as c:
            c.put(b"x")
            first_id = c.stats()["id"]
            own.stop()
            own = RedisServer(port=own.port).start()
            with pytest.raises((ConnectionError, greenstalk.Error, OSError)):
                c.stats()
        deadline = time.monotonic() + 10
        while True:
            try:
                with client(daemon) as again:
                    assert again.put(b"y") == 1  # an empty store counts from 1 again...
                    assert again.stats()["id"] != first_id  # ...under another stats id
                    break
            except (ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0
        own.stop()


def test_a_front_end_killed_under_load_loses_and_repeats_nothing_acknowledged(front_ends: list[Daemon]) -> None:
    """Producers and workers on both front ends; A is SIGKILLed mid-run; its
    clients reconnect to B and go on.  Every put told INSERTED is deleted in
    the end (jobs A's workers held come back after its lease), and no job is
    handed out again after a DELETED was told for it."""
    a, b = front_ends
    from beanstalk_py.redisstore.service import LEASE_S

    acked: list[int] = []
    deleted: dict[int, float] = {}
    unsure: set[int] = set()  # a delete sent when the front end died: it may have happened
    late: list[int] = []  # reserved again after its delete was acknowledged
    stop = threading.Event()
    killed_at = [float("inf")]
    errors: list[str] = []

    def connect(first: Daemon) -> greenstalk.Client:
        for daemon in (first, b, b, b):  # A, then B once A is gone
            try:
                return client(daemon)
            except OSError:
                time.sleep(0.05)
        raise AssertionError("no front end answered")

    def producer(start: Daemon) -> None:
        c = connect(start)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                acked.append(c.put(b"job %d" % n, ttr=60))
            except (OSError, ConnectionError, greenstalk.Error) as exc:
                errors.append(f"put: {exc!r}")
                c = connect(b)
            time.sleep(0.002)

    def worker(start: Daemon) -> None:
        c = connect(start)
        while True:
            try:
                job = c.reserve(timeout=1)
            except greenstalk.TimedOutError:
                # Drained, and the dead front end's jobs are back (its lease ran out).
                if stop.is_set() and time.monotonic() - killed_at[0] > LEASE_S + 1.5:
                    return
                continue
            except (OSError, ConnectionError, greenstalk.Error) as exc:
                errors.append(f"reserve: {exc!r}")
                c = connect(b)
                continue
            if job.id in deleted:
                late.append(job.id)
            try:
                c.delete(job)
                deleted[job.id] = time.monotonic()
            except (OSError, ConnectionError, greenstalk.Error) as exc:
                errors.append(f"delete: {exc!r}")
                unsure.add(job.id)
                c = connect(b)

    threads = [threading.Thread(target=producer, args=(fe,), daemon=True) for fe in (a, b)]
    threads += [threading.Thread(target=worker, args=(fe,), daemon=True) for fe in (a, b)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    assert a.proc is not None
    a.proc.kill()
    a.proc.wait()
    killed_at[0] = time.monotonic()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=LEASE_S + 20)
    assert not any(thread.is_alive() for thread in threads)
    assert any("put" in e or "reserve" in e or "delete" in e for e in errors)  # A's clients saw it die
    assert len(acked) == len(set(acked)) > 200
    lost = set(acked) - set(deleted) - unsure
    assert not lost, f"lost: {sorted(lost)[:5]}"
    assert late == []
