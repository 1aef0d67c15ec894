"""The store's operator operations on single jobs (move, bury, reprioritize)
and what the operations plane reads beyond stats: job_state, tube_insight,
tube_counters, recovered_jobs.  Driven through the protocol with the Rig, so
the jobs are made and served the way clients make and serve them."""

from __future__ import annotations

import re

from rig import NS, T0, Rig

from beanstalk_py.engine import OLDEST_GROUPS, Engine
from beanstalk_py.store import DELETED, WAIT_BUCKETS_NS


def put(rig: Rig, conn, body: bytes = b"x", pri: int = 100, delay: int = 0, now: int = T0) -> int:
    reply = rig.send(conn, b"put %d %d 60 %d\r\n%s\r\n" % (pri, delay, len(body), body), now)
    match = re.fullmatch(rb"INSERTED (\d+)\r\n", reply)
    assert match, reply
    return int(match.group(1))


def stat(rig: Rig, conn, command: bytes, key: str, now: int = T0) -> str:
    reply = rig.send(conn, command + b"\r\n", now).decode()
    found = re.search(rf"^{re.escape(key)}: (.*)$", reply, re.M)
    assert found, reply
    return found.group(1).strip()


def test_job_state_follows_the_job_and_remembers_deletes_when_asked() -> None:
    rig = Rig()
    rig.engine = Engine(remember_deleted=2)
    conn = rig.conn()
    first, second, third = (put(rig, conn) for _ in range(3))
    engine = rig.engine
    assert engine.job_state(first) == "ready"
    assert rig.send(conn, b"reserve\r\n").startswith(b"RESERVED %d " % first)
    assert engine.job_state(first) == "reserved"
    assert rig.send(conn, b"bury %d 1\r\n" % first) == b"BURIED\r\n"
    assert engine.job_state(first) == "buried"
    for job in (first, second, third):
        assert rig.send(conn, b"delete %d\r\n" % job) == b"DELETED\r\n"
    # Only the last two deletes are remembered.
    assert [engine.job_state(job) for job in (first, second, third)] == [None, DELETED, DELETED]
    assert engine.job_state(9999) is None


def test_deletes_are_not_remembered_by_default() -> None:
    rig = Rig()
    conn = rig.conn()
    job = put(rig, conn)
    rig.send(conn, b"delete %d\r\n" % job)
    assert rig.engine.job_state(job) is None


def test_move_job_keeps_id_and_state_and_wakes_a_waiter_on_the_target() -> None:
    rig = Rig()
    producer, worker = rig.conn(), rig.conn()
    rig.send(producer, b"use a\r\n")
    job = put(rig, producer, b"hello")
    delayed = put(rig, producer, b"later", delay=100)
    rig.send(worker, b"watch b\r\nignore default\r\n")
    assert rig.send(worker, b"reserve\r\n") == b""  # waits on b
    assert rig.engine.move_job(job, b"b", T0)
    assert rig.send(worker, b"") == b"RESERVED %d 5\r\nhello\r\n" % job
    assert rig.engine.move_job(delayed, b"b", T0)
    assert stat(rig, producer, b"stats-job %d" % delayed, "tube") == "b"
    assert stat(rig, producer, b"stats-job %d" % delayed, "state") == "delayed"
    assert not rig.engine.move_job(job, b"c", T0)  # reserved: its holder owns it
    assert not rig.engine.move_job(delayed, b"b", T0)  # already there
    assert not rig.engine.move_job(12345, b"b", T0)
    rig.send(producer, b"use default\r\n")
    assert b"a" not in rig.engine.tubes  # emptied and unused: freed, as beanstalkd frees tubes


def test_bury_job_buries_ready_and_delayed_jobs_and_counts_the_bury() -> None:
    rig = Rig()
    conn = rig.conn()
    ready = put(rig, conn)
    delayed = put(rig, conn, delay=30)
    assert rig.engine.bury_job(ready, T0)
    assert rig.engine.bury_job(delayed, T0)
    assert stat(rig, conn, b"stats-job %d" % ready, "state") == "buried"
    assert stat(rig, conn, b"stats-job %d" % ready, "buries") == "1"
    assert stat(rig, conn, b"stats-tube default", "current-jobs-buried") == "2"
    assert stat(rig, conn, b"stats-tube default", "current-jobs-delayed") == "0"
    # The delay timer is gone: nothing comes back ready later.
    rig.tick(T0 + 60 * NS)
    assert stat(rig, conn, b"stats-job %d" % delayed, "state") == "buried"
    # Kick order is bury order.
    assert rig.send(conn, b"kick 1\r\n") == b"KICKED 1\r\n"
    assert stat(rig, conn, b"stats-job %d" % ready, "state") == "ready"
    assert not rig.engine.bury_job(delayed, T0)  # already buried


def test_reprioritize_reorders_ready_jobs_and_the_urgent_counts() -> None:
    rig = Rig()
    conn = rig.conn()
    low = put(rig, conn, pri=5000)
    high = put(rig, conn, pri=10)
    assert stat(rig, conn, b"stats", "current-jobs-urgent") == "1"
    assert rig.engine.reprioritize_job(low, 1, T0)
    assert rig.engine.reprioritize_job(high, 4000, T0)
    assert stat(rig, conn, b"stats", "current-jobs-urgent") == "1"
    assert stat(rig, conn, b"stats-tube default", "current-jobs-urgent") == "1"
    assert rig.send(conn, b"reserve\r\n").startswith(b"RESERVED %d " % low)
    assert not rig.engine.reprioritize_job(low, 7, T0)  # reserved
    assert stat(rig, conn, b"stats-job %d" % high, "pri") == "4000"


def test_insight_counts_reserves_and_first_reserve_waits() -> None:
    rig = Rig()
    conn = rig.conn()
    quick = put(rig, conn, now=T0)
    late = put(rig, conn, delay=10, now=T0)
    # quick waits 3 ms; late is due at T0+10 s and waits 2 s more.
    assert rig.send(conn, b"reserve\r\n", T0 + 3_000_000).startswith(b"RESERVED %d " % quick)
    rig.send(conn, b"release %d 100 0\r\n" % quick, T0 + 3_000_000)
    rig.tick(T0 + 12 * NS)
    # quick again (a second reserve: counted, but not as a wait), then late.
    assert rig.send(conn, b"reserve\r\n", T0 + 12 * NS).startswith(b"RESERVED %d " % quick)
    assert rig.send(conn, b"reserve\r\n", T0 + 12 * NS).startswith(b"RESERVED %d " % late)
    insight = rig.engine.tube_insight(b"default", T0 + 12 * NS)
    assert insight is not None
    assert (insight.puts, insight.reserves, insight.deletes) == (2, 3, 0)
    assert sum(insight.wait_counts) == 2
    assert insight.wait_counts[WAIT_BUCKETS_NS.index(5_000_000)] == 1  # 3 ms
    assert insight.wait_counts[WAIT_BUCKETS_NS.index(5 * NS)] == 1  # 2 s
    assert insight.wait_sum_ns == 3_000_000 + 2 * NS
    assert insight.oldest_ready_age_ns is None
    assert rig.engine.tube_counters() == [(b"default", 2, 3, 0)]
    assert rig.engine.tube_insight(b"nope", T0) is None


def test_oldest_ready_age_is_the_oldest_put_whatever_the_priority() -> None:
    rig = Rig()
    conn = rig.conn()
    put(rig, conn, pri=50, now=T0 + 1 * NS)
    put(rig, conn, pri=50, now=T0 + 2 * NS)
    put(rig, conn, pri=900, now=T0)  # served last, but the oldest
    put(rig, conn, pri=10, now=T0 + 3 * NS)
    insight = rig.engine.tube_insight(b"default", T0 + 10 * NS)
    assert insight is not None and insight.oldest_ready_age_ns == 10 * NS


def test_oldest_ready_age_looks_at_the_head_of_every_priority_up_to_the_bound() -> None:
    rig = Rig()
    conn = rig.conn()
    count = OLDEST_GROUPS
    for index in range(count):
        # Later puts get lower priorities, so the oldest job is served last.
        put(rig, conn, pri=count - index, now=T0 + index * NS)
    insight = rig.engine.tube_insight(b"default", T0 + count * NS)
    assert insight is not None and insight.oldest_ready_age_ns == count * NS


def test_oldest_ready_age_past_the_bound_of_priorities_is_a_lower_bound() -> None:
    rig = Rig()
    conn = rig.conn()
    count = OLDEST_GROUPS + 20
    for index in range(count):
        put(rig, conn, pri=count - index, now=T0 + index * NS)
    insight = rig.engine.tube_insight(b"default", T0 + count * NS)
    # The first OLDEST_GROUPS priorities are the latest puts; the oldest of them is the 21st put.
    assert insight is not None and insight.oldest_ready_age_ns == (count - 20) * NS


def test_tube_counters_survive_no_tube_and_list_every_tube() -> None:
    rig = Rig()
    conn = rig.conn()
    rig.send(conn, b"use one\r\n")
    job = put(rig, conn)
    rig.send(conn, b"delete %d\r\n" % job)
    assert sorted(rig.engine.tube_counters()) == [(b"default", 0, 0, 0), (b"one", 1, 0, 1)]
