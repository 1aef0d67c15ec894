"""greenstalk, a real beanstalkd client library, against a beanstalk-py daemon.

Every method greenstalk exposes is exercised, with its error paths, plus the
behaviours a client sees over time (delays, TTRs, pauses, drain mode, hang-ups)
and a many-client exchange.  Stats are checked by key name through greenstalk's
own YAML parsing.  Every socket has a timeout, so a hung server fails a test
instead of hanging the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import greenstalk
import pytest

from conftest import Daemon, start_beanstalk_py

SOCKET_TIMEOUT = 5.0

STATS_KEYS = [
    "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
    "current-jobs-buried", "cmd-put", "cmd-peek", "cmd-peek-ready", "cmd-peek-delayed",
    "cmd-peek-buried", "cmd-reserve", "cmd-reserve-with-timeout", "cmd-delete", "cmd-release",
    "cmd-use", "cmd-watch", "cmd-ignore", "cmd-bury", "cmd-kick", "cmd-touch", "cmd-stats",
    "cmd-stats-job", "cmd-stats-tube", "cmd-list-tubes", "cmd-list-tube-used",
    "cmd-list-tubes-watched", "cmd-pause-tube", "job-timeouts", "total-jobs", "max-job-size",
    "current-tubes", "current-connections", "current-producers", "current-workers",
    "current-waiting", "total-connections", "pid", "version", "rusage-utime", "rusage-stime",
    "uptime", "binlog-oldest-index", "binlog-current-index", "binlog-records-migrated",
    "binlog-records-written", "binlog-max-size", "draining", "id", "hostname", "os", "platform",
]  # fmt: skip
STATS_TUBE_KEYS = [
    "name", "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
    "current-jobs-delayed", "current-jobs-buried", "total-jobs", "current-using",
    "current-watching", "current-waiting", "cmd-delete", "cmd-pause-tube", "pause",
    "pause-time-left",
]  # fmt: skip
STATS_JOB_KEYS = [
    "id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file", "reserves",
    "timeouts", "releases", "buries", "kicks",
]  # fmt: skip


def client(daemon: Daemon, **kwargs) -> greenstalk.Client:
    """A greenstalk client on a socket with a timeout (greenstalk sets none itself)."""
    return greenstalk.Client(daemon.connect(), **kwargs)


def wait_for(predicate, limit: float = 3.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def c(server: Daemon):
    with client(server) as conn:
        yield conn


# --------------------------------------------------------------------- put / reserve / delete


def test_put_with_priority_delay_ttr(c: greenstalk.Client) -> None:
    first = c.put("hello")
    assert first >= 1
    second = c.put("urgent", priority=3, ttr=30)
    delayed = c.put("later", priority=7, delay=100, ttr=5)
    assert (first, second, delayed) == (first, first + 1, first + 2)
    stats = c.stats_job(first)
    assert list(stats) == STATS_JOB_KEYS
    assert stats["pri"] == greenstalk.DEFAULT_PRIORITY
    assert stats["ttr"] == greenstalk.DEFAULT_TTR
    assert (stats["state"], stats["tube"], stats["delay"], stats["time-left"]) == ("ready", "default", 0, 0)
    stats = c.stats_job(delayed)
    assert (stats["state"], stats["pri"], stats["delay"], stats["ttr"]) == ("delayed", 7, 100, 5)
    assert 98 <= stats["time-left"] <= 100
    # Lowest priority value first.
    job = c.reserve(timeout=0)
    assert (job.id, job.body) == (second, "urgent")
    assert c.stats_job(second)["reserves"] == 1
    c.delete(job)
    with pytest.raises(greenstalk.NotFoundError):
        c.delete(job)
    assert c.reserve(timeout=0).id == first
    c.delete(first)  # by id
    c.delete(delayed)  # a delayed job can be deleted too
    assert c.stats()["current-jobs-delayed"] == 0


def test_ttr_zero_is_raised_to_one(c: greenstalk.Client) -> None:
    job_id = c.put("x", ttr=0)
    assert c.stats_job(job_id)["ttr"] == 1


def test_binary_bodies_round_trip(server: Daemon) -> None:
    body = bytes(range(256)) + b"\r\n\x00\r\n" + b"end"
    with client(server, encoding=None) as c:
        job_id = c.put(body)
        assert c.peek(job_id).body == body
        assert c.reserve(timeout=0).body == body
        big = os.urandom(65535)  # the default max-job-size is allowed
        big_id = c.put(big)
        assert c.peek(big_id).body == big
        empty_id = c.put(b"")
        assert c.peek(empty_id).body == b""


def test_reserve_with_timeout_times_out(c: greenstalk.Client) -> None:
    with pytest.raises(greenstalk.TimedOutError):
        c.reserve(timeout=0)
    started = time.monotonic()
    with pytest.raises(greenstalk.TimedOutError):
        c.reserve(timeout=1)
    assert 0.9 <= time.monotonic() - started < 2.5
    stats = c.stats()
    assert stats["cmd-reserve-with-timeout"] == 2
    assert stats["current-waiting"] == 0


def test_blocking_reserve_is_woken_by_another_clients_put(server: Daemon) -> None:
    with client(server) as worker, client(server) as producer:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(worker.reserve)
            assert wait_for(lambda: producer.stats()["current-waiting"] == 1)
            assert producer.stats_tube("default")["current-waiting"] == 1
            job_id = producer.put("wake up")
            job = future.result(timeout=3)
        assert (job.id, job.body) == (job_id, "wake up")
        stats = producer.stats()
        assert (stats["cmd-reserve"], stats["current-waiting"], stats["current-jobs-reserved"]) == (1, 0, 1)
        assert (stats["current-workers"], stats["current-producers"]) == (1, 1)


def test_reserve_job(server: Daemon) -> None:
    with client(server) as a, client(server, use="elsewhere") as b:
        buried = b.put("b")
        b.reserve_job(buried)
        b.bury(greenstalk.Job(buried, "b"))
        delayed = b.put("d", delay=100)
        # Any tube, any state but reserved, whatever the watch list.
        job = a.reserve_job(delayed)
        assert (job.id, job.body) == (delayed, "d")
        assert a.stats_job(delayed)["state"] == "reserved"
        assert a.reserve_job(buried).id == buried
        with pytest.raises(greenstalk.NotFoundError):
            b.reserve_job(delayed)  # reserved by a
        with pytest.raises(greenstalk.NotFoundError):
            a.reserve_job(10_000)
        a.delete(delayed)
        a.delete(buried)


# --------------------------------------------------------------------- release / bury / kick / touch


def test_release_with_priority_and_delay(c: greenstalk.Client) -> None:
    job_id = c.put("r", priority=100)
    job = c.reserve(timeout=0)
    c.release(job, priority=5)
    stats = c.stats_job(job_id)
    assert (stats["state"], stats["pri"], stats["releases"]) == ("ready", 5, 1)
    with pytest.raises(greenstalk.NotFoundError):
        c.release(job)  # no longer reserved
    job = c.reserve(timeout=0)
    c.release(job, priority=6, delay=60)
    stats = c.stats_job(job_id)
    assert (stats["state"], stats["pri"], stats["delay"], stats["releases"]) == ("delayed", 6, 60, 2)
    assert c.peek_delayed().id == job_id
    with pytest.raises(greenstalk.TimedOutError):
        c.reserve(timeout=0)


def test_delayed_job_becomes_ready_after_about_one_second(c: greenstalk.Client) -> None:
    started = time.monotonic()
    job_id = c.put("soon", delay=1)
    with pytest.raises(greenstalk.NotFoundError):
        c.peek_ready()
    job = c.reserve(timeout=3)
    elapsed = time.monotonic() - started
    assert job.id == job_id
    assert 0.9 <= elapsed < 2.0
    stats = c.stats_job(job_id)
    assert (stats["state"], stats["delay"], stats["reserves"]) == ("reserved", 1, 1)


def test_bury_kick_and_kick_job(c: greenstalk.Client) -> None:
    ids = [c.put(f"job{i}") for i in range(3)]
    for expected in ids:
        job = c.reserve(timeout=0)
        assert job.id == expected
        c.bury(job, priority=expected)
    stats = c.stats_job(ids[0])
    assert (stats["state"], stats["buries"], stats["pri"]) == ("buried", 1, ids[0])
    with pytest.raises(greenstalk.NotFoundError):
        c.bury(greenstalk.Job(ids[0], ""))  # not reserved
    assert c.peek_buried().id == ids[0]  # oldest buried first
    assert c.stats()["current-jobs-buried"] == 3
    assert c.kick(2) == 2
    assert c.peek_buried().id == ids[2]
    c.kick_job(ids[2])
    with pytest.raises(greenstalk.NotFoundError):
        c.kick_job(ids[2])  # ready now
    with pytest.raises(greenstalk.NotFoundError):
        c.peek_buried()
    assert c.kick(10) == 0
    assert [c.stats_job(i)["kicks"] for i in ids] == [1, 1, 1]
    assert c.stats()["cmd-kick"] == 2


def test_kick_moves_delayed_jobs_when_none_are_buried(c: greenstalk.Client) -> None:
    ids = [c.put("d", delay=100 + i) for i in range(3)]
    assert c.peek_delayed().id == ids[0]
    assert c.kick(2) == 2
    tube = c.stats_tube("default")
    assert (tube["current-jobs-ready"], tube["current-jobs-delayed"]) == (2, 1)
    c.kick_job(ids[2])
    assert c.stats_tube("default")["current-jobs-delayed"] == 0
    assert c.stats_job(ids[0])["delay"] == 100  # kicking keeps the delay field


def test_touch_restarts_the_ttr(c: greenstalk.Client) -> None:
    job_id = c.put("t", ttr=5)
    job = c.reserve(timeout=0)
    time.sleep(1.1)
    assert c.stats_job(job_id)["time-left"] == 3
    c.touch(job)
    assert c.stats_job(job_id)["time-left"] == 4
    c.delete(job)
    with pytest.raises(greenstalk.NotFoundError):
        c.touch(job)
    assert c.stats()["cmd-touch"] == 2


# --------------------------------------------------------------------- tubes


def test_use_watch_ignore_and_lists(server: Daemon) -> None:
    with client(server, use="jobs", watch=["jobs", "other"]) as c:
        assert c.using() == "jobs"
        # Ignoring default moved the last entry into its slot, as the reference does (spec 1.7).
        assert c.watching() == ["other", "jobs"]
        assert c.watch("third") == 3
        assert c.watch("third") == 3
        assert c.ignore("nosuch") == 3
        assert c.ignore("third") == 2
        assert c.ignore("other") == 1
        with pytest.raises(greenstalk.NotIgnoredError):
            c.ignore("jobs")
        assert c.watching() == ["jobs"]
        c.use("next")
        assert c.using() == "next"
        assert sorted(c.tubes()) == ["default", "jobs", "next"]
        with pytest.raises(greenstalk.BadFormatError):
            c.use("-leading-dash")
        with pytest.raises(greenstalk.BadFormatError):
            c.watch("a*b")
        with pytest.raises(greenstalk.BadFormatError):
            c.use("x" * 201)
        c.use("x" * 200)
        assert c.using() == "x" * 200
        stats = c.stats()
        # NOT_IGNORED counts as an ignore; the BAD_FORMAT names count nothing.
        assert (stats["cmd-use"], stats["cmd-watch"], stats["cmd-ignore"]) == (3, 4, 5)
        assert (stats["cmd-list-tube-used"], stats["cmd-list-tubes-watched"], stats["cmd-list-tubes"]) == (3, 2, 1)


def test_jobs_go_to_the_used_tube_and_come_from_watched_ones(server: Daemon) -> None:
    with client(server, use="a") as producer, client(server, watch=["a", "b"]) as worker:
        a1 = producer.put("a1", priority=10)
        producer.use("b")
        b1 = producer.put("b1", priority=5)
        producer.use("c")
        producer.put("c1", priority=0)
        # The best job across watched tubes; tube c is not watched.
        assert worker.reserve(timeout=0).id == b1
        assert worker.reserve(timeout=0).id == a1
        with pytest.raises(greenstalk.TimedOutError):
            worker.reserve(timeout=0)
        assert producer.stats_tube("a")["total-jobs"] == 1
        assert worker.stats_job(b1)["tube"] == "b"
        # peek-* look at the used tube only.
        assert producer.peek_ready().body == "c1"
        producer.use("a")
        with pytest.raises(greenstalk.NotFoundError):
            producer.peek_ready()


def test_tube_is_freed_when_unused(server: Daemon) -> None:
    with client(server) as observer:
        with client(server, use="ephemeral"):
            assert "ephemeral" in observer.tubes()
            assert observer.stats_tube("ephemeral")["current-using"] == 1
        assert wait_for(lambda: "ephemeral" not in observer.tubes())
        with pytest.raises(greenstalk.NotFoundError):
            observer.stats_tube("ephemeral")
        assert observer.stats()["current-tubes"] == 1


def test_pause_tube_delays_reserve(c: greenstalk.Client) -> None:
    job_id = c.put("paused")
    c.pause_tube("default", 1)
    tube = c.stats_tube("default")
    assert (tube["pause"], tube["cmd-pause-tube"]) == (1, 1)
    assert tube["pause-time-left"] in (0, 1)
    assert c.peek_ready().id == job_id  # peeking still works
    with pytest.raises(greenstalk.TimedOutError):
        c.reserve(timeout=0)
    started = time.monotonic()
    job = c.reserve(timeout=3)
    elapsed = time.monotonic() - started
    assert job.id == job_id
    assert 0.7 <= elapsed < 2.0
    assert c.stats_tube("default")["pause"] == 0
    with pytest.raises(greenstalk.NotFoundError):
        c.pause_tube("nosuch", 1)
    assert c.stats()["cmd-pause-tube"] == 2


# --------------------------------------------------------------------- peek, stats


def test_peek_family(c: greenstalk.Client) -> None:
    for peek in (c.peek_ready, c.peek_delayed, c.peek_buried):
        with pytest.raises(greenstalk.NotFoundError):
            peek()
    with pytest.raises(greenstalk.NotFoundError):
        c.peek(1)
    ready = c.put("ready", priority=2)
    c.put("ready-later", priority=3)
    late = c.put("delayed-late", delay=200)
    early = c.put("delayed-early", delay=100)
    buried = c.put("buried", priority=0)
    c.bury(c.reserve(timeout=0))
    assert c.peek_ready().id == ready
    assert c.peek_delayed().id == early
    assert c.peek_buried().id == buried
    assert c.peek(late).body == "delayed-late"
    stats = c.stats()
    assert (stats["cmd-peek"], stats["cmd-peek-ready"], stats["cmd-peek-delayed"], stats["cmd-peek-buried"]) == (
        2,
        2,
        2,
        2,
    )


def test_peek_sees_jobs_reserved_by_others(server: Daemon) -> None:
    with client(server) as a, client(server) as b:
        job_id = a.put("mine")
        a.reserve(timeout=0)
        assert b.peek(job_id).body == "mine"
        assert b.stats_job(job_id)["state"] == "reserved"
        for action in (b.delete, b.touch, b.bury, b.release):
            with pytest.raises(greenstalk.NotFoundError):
                action(greenstalk.Job(job_id, ""))


def test_stats_fields(server: Daemon) -> None:
    with client(server) as c:
        c.put("u", priority=1)
        c.put("n", priority=2000)
        c.put("d", delay=100)
        stats = c.stats()
        assert list(stats) == STATS_KEYS
        assert set(stats) == set(greenstalk.Stats.__annotations__)
        expected = {
            "current-jobs-urgent": 1,
            "current-jobs-ready": 2,
            "current-jobs-reserved": 0,
            "current-jobs-delayed": 1,
            "current-jobs-buried": 0,
            "cmd-put": 3,
            "cmd-stats": 1,
            "total-jobs": 3,
            "max-job-size": 65535,
            "current-tubes": 1,
            "current-producers": 1,
            "current-workers": 0,
            "current-waiting": 0,
            "pid": server.proc.pid,
            "version": "1.12",
            "draining": "false",
            "binlog-max-size": 10485760,
            "binlog-current-index": 0,
        }
        assert {k: stats[k] for k in expected} == expected
        assert stats["total-connections"] >= 1  # the conftest's readiness probe counts too
        # The readiness probe's close may still be in flight.
        assert wait_for(lambda: c.stats()["current-connections"] == 1)
        assert len(stats["id"]) == 16 and int(stats["id"], 16) >= 0
        assert stats["platform"] == os.uname().machine
        assert stats["hostname"] == os.uname().nodename
        assert stats["os"] == os.uname().version
        assert 0 <= stats["uptime"] < 60
        for key in ("rusage-utime", "rusage-stime"):
            whole, frac = str(stats[key]).split(".")
            assert whole.isdigit() and len(frac) == 6 and frac.isdigit()
        tube = c.stats_tube("default")
        assert list(tube) == STATS_TUBE_KEYS
        assert set(tube) == set(greenstalk.StatsTube.__annotations__)
        assert (tube["name"], tube["current-jobs-urgent"], tube["total-jobs"]) == ("default", 1, 3)
        assert (tube["current-using"], tube["current-watching"], tube["pause"]) == (1, 1, 0)
        assert set(c.stats_job(1)) == set(greenstalk.StatsJob.__annotations__)
        with client(server) as other:
            other.reserve(timeout=0)
            assert c.stats()["current-workers"] == 1
            assert c.stats()["current-connections"] == 2
        assert wait_for(lambda: c.stats()["current-connections"] == 1)
        assert c.stats()["cmd-stats-tube"] == 1


def test_not_found_paths(c: greenstalk.Client) -> None:
    ghost = greenstalk.Job(424242, "")
    calls = [
        lambda: c.delete(ghost),
        lambda: c.release(ghost),
        lambda: c.bury(ghost),
        lambda: c.touch(ghost),
        lambda: c.kick_job(ghost),
        lambda: c.peek(ghost.id),
        lambda: c.stats_job(ghost),
        lambda: c.reserve_job(ghost.id),
        lambda: c.stats_tube("nosuch"),
        lambda: c.pause_tube("nosuch", 0),
        c.peek_ready,
        c.peek_delayed,
        c.peek_buried,
    ]
    for call in calls:
        with pytest.raises(greenstalk.NotFoundError):
            call()
    # Still in step after all those errors.
    assert c.using() == "default"


def test_unknown_command_and_bad_format_via_raw_send(c: greenstalk.Client) -> None:
    # greenstalk has no public raw-command method; _send_cmd is its one-line round trip.
    with pytest.raises(greenstalk.UnknownCommandError):
        c._send_cmd(b"frobnicate", b"OK")
    with pytest.raises(greenstalk.UnknownCommandError):
        c._send_cmd(b"STATS", b"OK")
    with pytest.raises(greenstalk.BadFormatError):
        c._send_cmd(b"stats ", b"OK")
    with pytest.raises(greenstalk.BadFormatError):
        c._send_cmd(b"delete -1", b"DELETED")
    with pytest.raises(greenstalk.BadFormatError):
        c._send_cmd(b"x" * 300, b"OK")  # over the 224-byte line limit
    with pytest.raises(greenstalk.BadFormatError):
        c.release(greenstalk.Job(1, ""), priority=2**32)  # priority out of u32 range
    assert c.kick(0) == 0
    assert c.using() == "default"


def test_job_too_big_with_z() -> None:
    daemon = start_beanstalk_py("-z", "10")
    try:
        with client(daemon) as c:
            assert c.stats()["max-job-size"] == 10
            c.put("x" * 10)
            with pytest.raises(greenstalk.JobTooBigError):
                c.put("x" * 11)
            # The oversized body was discarded: the connection is still in step.
            with pytest.raises(greenstalk.JobTooBigError):
                c.put("y" * 5000)
            assert c.put("ok") == 2
            stats = c.stats()
            assert (stats["cmd-put"], stats["total-jobs"]) == (4, 2)
    finally:
        daemon.stop()


# --------------------------------------------------------------------- time: TTR, deadline soon


def test_deadline_soon_with_ttr_1(c: greenstalk.Client) -> None:
    job_id = c.put("short", ttr=1)
    job = c.reserve(timeout=0)
    assert job.id == job_id
    with pytest.raises(greenstalk.DeadlineSoonError):
        c.reserve(timeout=5)
    with pytest.raises(greenstalk.DeadlineSoonError):
        c.reserve()
    # DEADLINE_SOON leaves the job reserved; it can still be deleted in time.
    assert c.stats_job(job_id)["state"] == "reserved"
    c.delete(job)


def test_ttr_expiry_returns_job_to_ready(server: Daemon) -> None:
    with client(server) as holder, client(server) as other:
        job_id = holder.put("slow", ttr=1)
        holder.reserve(timeout=0)
        started = time.monotonic()
        job = other.reserve(timeout=3)
        elapsed = time.monotonic() - started
        assert job.id == job_id
        assert 0.7 <= elapsed < 2.0
        stats = other.stats_job(job_id)
        assert (stats["timeouts"], stats["reserves"], stats["state"]) == (1, 2, "reserved")
        assert other.stats()["job-timeouts"] == 1
        with pytest.raises(greenstalk.NotFoundError):
            holder.delete(job_id)  # no longer the holder's
        other.delete(job)


def test_ttr_expiry_without_waiter(c: greenstalk.Client) -> None:
    job_id = c.put("x", ttr=1)
    c.reserve(timeout=0)
    assert wait_for(lambda: c.stats_job(job_id)["state"] == "ready", limit=2.5, step=0.05)
    stats = c.stats_job(job_id)
    assert (stats["timeouts"], stats["time-left"]) == (1, 0)
    assert c.stats()["current-jobs-reserved"] == 0


def test_closing_the_reserving_connection_releases_the_job(server: Daemon) -> None:
    with client(server) as worker2:
        worker1 = client(server)
        job_id = worker1.put("orphan")
        assert worker1.reserve(timeout=0).id == job_id
        assert worker2.stats_job(job_id)["state"] == "reserved"
        worker1.close()
        job = worker2.reserve(timeout=2)
        assert job.id == job_id
        stats = worker2.stats_job(job_id)
        assert (stats["reserves"], stats["timeouts"], stats["releases"]) == (2, 0, 0)
        assert worker2.stats()["job-timeouts"] == 0


def test_closing_a_waiting_connection_leaves_no_waiter(server: Daemon) -> None:
    with client(server) as observer:
        sock = server.connect()
        sock.sendall(b"reserve\r\n")
        assert wait_for(lambda: observer.stats()["current-waiting"] == 1)
        sock.close()
        assert wait_for(lambda: observer.stats()["current-waiting"] == 0)
        job_id = observer.put("for nobody")
        assert observer.stats_job(job_id)["state"] == "ready"


# --------------------------------------------------------------------- signals, sockets


def test_draining_after_sigusr1(server: Daemon) -> None:
    with client(server) as c, client(server) as worker:
        job_id = c.put("before")
        server.proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: c.stats()["draining"] == "true")
        with pytest.raises(greenstalk.DrainingError):
            c.put("after")
        # Everything else keeps working, reserve included.
        job = worker.reserve(timeout=1)
        assert job.id == job_id
        worker.delete(job)
        server.proc.send_signal(signal.SIGUSR1)  # a second signal does not leave drain mode
        time.sleep(0.1)
        with pytest.raises(greenstalk.DrainingError):
            c.put("still draining")
        stats = c.stats()
        assert (stats["draining"], stats["cmd-put"], stats["total-jobs"]) == ("true", 3, 1)
        # DRAINING used up ids: the next id is not reused.
        with pytest.raises(greenstalk.NotFoundError):
            c.peek(job_id + 1)
    assert server.proc.poll() is None


def test_unix_socket_server() -> None:
    directory = tempfile.mkdtemp(prefix="bpy-gs-")
    path = os.path.join(directory, "beanstalk.sock")
    daemon = Daemon([sys.executable, "-m", "beanstalk_py", "-l", f"unix:{path}"], unix_path=path)
    daemon.start()
    try:
        with greenstalk.Client(path) as c:  # greenstalk's own unix-socket support
            c._sock.settimeout(SOCKET_TIMEOUT)
            job_id = c.put("over unix", priority=9)
            job = c.reserve(timeout=1)
            assert (job.id, job.body) == (job_id, "over unix")
            c.delete(job)
            stats = c.stats()
            assert (stats["total-jobs"], stats["cmd-delete"]) == (1, 1)
            assert wait_for(lambda: c.stats()["current-connections"] == 1)
            assert repr(c) == f"greenstalk.Client(socket={path!r})"
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_tcp_address_form(server: Daemon) -> None:
    with greenstalk.Client(server.address) as c:
        c._sock.settimeout(SOCKET_TIMEOUT)
        assert c.put("tcp") == 1
        assert wait_for(lambda: c.stats()["current-connections"] == 1)


# --------------------------------------------------------------------- many clients


def test_many_producers_and_consumers_lose_and_duplicate_nothing(server: Daemon) -> None:
    producers, consumers, per_producer = 4, 4, 125
    total = producers * per_producer
    tube = "exchange"
    received: list[tuple[int, str]] = []
    lock = threading.Lock()
    produced: list[int] = []

    def produce(n: int) -> list[int]:
        with client(server, use=tube) as c:
            return [c.put(f"p{n}-{i}", priority=i % 7) for i in range(per_producer)]

    def consume(n: int) -> int:
        got = 0
        with client(server, watch=tube) as c:
            while True:
                job = c.reserve(timeout=5)
                c.delete(job)
                if job.body == "STOP":
                    return got
                with lock:
                    received.append((job.id, job.body))
                got += 1

    with ThreadPoolExecutor(producers + consumers) as pool:
        consumer_futures = [pool.submit(consume, n) for n in range(consumers)]
        producer_futures = [pool.submit(produce, n) for n in range(producers)]
        for future in producer_futures:
            produced += future.result(timeout=10)
        # Poison pills sort after every real job (lowest urgency, highest ids).
        with client(server, use=tube) as c:
            for _ in range(consumers):
                c.put("STOP", priority=2**32 - 1)
        counts = [future.result(timeout=10) for future in consumer_futures]

    assert len(produced) == len(set(produced)) == total
    ids = [job_id for job_id, _ in received]
    assert len(ids) == len(set(ids)) == total, "a job was lost or delivered twice"
    assert set(ids) == set(produced)
    assert sorted(body for _, body in received) == sorted(
        f"p{n}-{i}" for n in range(producers) for i in range(per_producer)
    )
    assert sum(counts) == total
    with client(server) as c:
        stats = c.stats()
        assert stats["total-jobs"] == total + consumers
        assert stats["cmd-delete"] == total + consumers
        assert (stats["current-jobs-ready"], stats["current-jobs-reserved"]) == (0, 0)
        assert stats["job-timeouts"] == 0
        assert wait_for(lambda: c.stats()["current-connections"] == 1)
