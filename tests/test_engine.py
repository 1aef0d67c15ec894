"""Unit tests of the queue engine with an injected clock: no sleeps, no sockets."""

from __future__ import annotations

import random

import pytest

from beanstalk_py.engine import DEADLINE_SOON, NOT_IGNORED, NS, TIMED_OUT, WIDE_WATCH, Engine
from beanstalk_py.job import BURIED, DELAYED, READY, RESERVED
from beanstalk_py.session import MemorySession

T0 = 1_000 * NS


class Owner:
    """Stands in for a connection: the session's completed reserves go here."""

    session: MemorySession

    def deliver(self, outcome, now: int) -> None:
        raise AssertionError("the tests read outcomes with completed()")


def new_client(engine: Engine) -> MemorySession:
    owner = Owner()
    owner.session = engine.open_session(owner)
    return owner.session


def completed(engine: Engine) -> list:
    """Reserves finished since the last call: (session, outcome) pairs."""
    return [(owner.session, outcome) for owner, outcome in engine.take_completed()]


def put(engine: Engine, client, pri: int = 0, delay: int = 0, ttr: int = 60, body: bytes = b"x", now: int = T0):
    job_id = engine.begin_put(client)
    assert engine.put(client, job_id, pri, delay, ttr, body + b"\r\n", now)
    return engine.jobs[job_id]


def test_priority_then_id_order() -> None:
    e = Engine()
    c = new_client(e)
    a = put(e, c, pri=5)
    b = put(e, c, pri=1)
    d = put(e, c, pri=5)
    assert [e.reserve(c, 0, T0) for _ in range(3)] == [b, a, d]
    assert e.reserve(c, 0, T0) == TIMED_OUT


def test_unsigned_priority() -> None:
    e = Engine()
    c = new_client(e)
    big = put(e, c, pri=2**32 - 1)
    small = put(e, c, pri=0)
    assert e.reserve(c, 0, T0) is small
    assert e.reserve(c, 0, T0) is big


def test_released_job_keeps_its_id_rank() -> None:
    e = Engine()
    c = new_client(e)
    first = put(e, c)
    e.reserve(c, 0, T0)
    second = put(e, c)
    assert e.release(c, first.id, 0, 0, T0)
    assert e.reserve(c, 0, T0) is first
    assert second.state == READY


def test_delay_becomes_ready_on_tick() -> None:
    e = Engine()
    c = new_client(e)
    job = put(e, c, delay=5)
    assert job.state == DELAYED
    assert e.next_wakeup() == T0 + 5 * NS
    e.tick(T0 + 5 * NS - 1)
    assert job.state == DELAYED
    e.tick(T0 + 5 * NS)
    assert job.state == READY


def test_ttr_expiry_is_never_lost() -> None:
    e = Engine()
    c = new_client(e)
    job = put(e, c, ttr=60)
    assert e.reserve(c, 0, T0) is job
    deadline = T0 + 60 * NS
    e.tick(deadline - 1)
    assert job.state == RESERVED
    e.tick(deadline)  # exactly at the deadline: the reference can miss this one
    assert job.state == READY
    assert job.timeout_ct == 1 and e.timeout_ct == 1
    assert not c.reserved


def test_ttr_minimum_is_one_second() -> None:
    e = Engine()
    c = new_client(e)
    job = put(e, c, ttr=0)
    assert job.ttr == 1
    reserved = e.reserve(c, -1, 0)
    assert reserved is not None and job.deadline == NS


def test_touch_moves_deadline() -> None:
    e = Engine()
    c = new_client(e)
    job = put(e, c, ttr=10)
    e.reserve(c, 0, T0)
    assert e.touch(c, job.id, T0 + 9 * NS)
    e.tick(T0 + 15 * NS)
    assert job.state == RESERVED
    e.tick(T0 + 19 * NS)
    assert job.state == READY


def test_waiter_gets_job_from_put() -> None:
    e = Engine()
    worker, producer = new_client(e), new_client(e)
    assert e.reserve(worker, -1, T0) is None
    assert worker.waiting and e.waiting_ct == 1
    job = put(e, producer)
    assert completed(e) == [(worker, job)]
    assert job.reserver is worker and not worker.waiting


def test_waiters_served_in_arrival_order() -> None:
    e = Engine()
    producer = new_client(e)
    workers = [new_client(e) for _ in range(6)]
    for w in workers:
        assert e.reserve(w, -1, T0) is None
    for _ in workers:
        put(e, producer)
    assert [client for client, _ in completed(e)] == workers


def test_reserve_timeout_and_zero() -> None:
    e = Engine()
    c = new_client(e)
    assert e.reserve(c, 0, T0) == TIMED_OUT
    assert e.reserve(c, 2, T0) is None
    e.tick(T0 + 2 * NS - 1)
    assert completed(e) == []
    e.tick(T0 + 2 * NS)
    assert completed(e) == [(c, TIMED_OUT)]
    assert not c.waiting and e.waiting_ct == 0


def test_deadline_soon_immediate_and_while_waiting() -> None:
    e = Engine()
    c = new_client(e)
    put(e, c, ttr=1)
    e.reserve(c, 0, T0)
    # ttr 1: inside the one-second margin at once.
    assert e.reserve(c, 5, T0) == DEADLINE_SOON
    e2 = Engine()
    c2 = new_client(e2)
    job = put(e2, c2, ttr=10)
    e2.reserve(c2, 0, T0)
    assert e2.reserve(c2, -1, T0) is None
    e2.tick(T0 + 9 * NS)
    assert completed(e2) == [(c2, DEADLINE_SOON)]
    assert job.state == RESERVED  # DEADLINE_SOON does not release the job


def test_close_releases_reserved_jobs_without_counting_timeouts() -> None:
    e = Engine()
    c, other = new_client(e), new_client(e)
    job = put(e, c)
    e.reserve(c, 0, T0)
    assert e.reserve(other, -1, T0) is None
    e.close_session(c, T0)
    assert completed(e) == [(other, job)]
    assert job.timeout_ct == 0


def test_delete_rules() -> None:
    e = Engine()
    a, b = new_client(e), new_client(e)
    ready = put(e, a)
    delayed = put(e, a, delay=10)
    reserved = put(e, a, pri=0)
    # b reserves `ready` (lowest id among pri 0)
    assert e.reserve(b, 0, T0) is ready
    assert not e.delete(a, ready.id)  # reserved by another connection
    assert e.delete(b, ready.id)
    assert e.delete(a, delayed.id)
    assert e.delete(b, reserved.id)  # ready job in any tube
    assert not e.delete(a, 999)
    assert e.next_wakeup() is None  # the delayed job's timer went with it


def test_bury_kick_and_kick_job() -> None:
    e = Engine()
    c = new_client(e)
    jobs = [put(e, c) for _ in range(3)]
    for job in jobs:
        e.reserve(c, 0, T0)
        assert e.bury(c, job.id, 7)
    assert [j.state for j in jobs] == [BURIED] * 3
    delayed = put(e, c, delay=100)
    assert e.peek_tube(b"default", BURIED) is jobs[0]
    assert e.kick(c, 2, T0) == 2  # buried first, never delayed in the same kick
    assert jobs[2].state == BURIED and delayed.state == DELAYED
    assert e.kick_job(jobs[2].id, T0)
    assert not e.kick_job(jobs[2].id, T0)
    assert e.kick(c, 10, T0) == 1  # now the delayed one
    assert delayed.state == READY and delayed.kick_ct == 1
    assert jobs[0].pri == 7 and jobs[0].bury_ct == 1


def test_reserve_job_any_state() -> None:
    e = Engine()
    c = new_client(e)
    delayed = put(e, c, delay=100)
    assert e.reserve_job(c, delayed.id, T0) is delayed
    assert e.reserve_job(c, delayed.id, T0) is None
    e.tick(T0 + 60 * NS)  # ttr over: back to ready even though it was delayed
    assert delayed.state == READY


def test_pause_holds_jobs_then_wakes_waiters() -> None:
    e = Engine()
    c = new_client(e)
    job = put(e, c)
    assert e.pause_tube(b"default", 10, T0)
    assert e.reserve(c, -1, T0) is None
    e.tick(T0 + 10 * NS - 1)
    assert completed(e) == []
    e.tick(T0 + 10 * NS)
    assert completed(e) == [(c, job)]
    assert not e.pause_tube(b"nothere", 1, T0)


def test_pause_zero_unpauses_at_once() -> None:
    e = Engine()
    c = new_client(e)
    put(e, c)
    e.pause_tube(b"default", 100, T0)
    assert e.reserve(c, -1, T0) is None
    e.pause_tube(b"default", 0, T0)
    e.tick(T0 + 1)
    assert len(completed(e)) == 1


def test_tubes_vanish_when_unused_and_list_order_swaps() -> None:
    e = Engine()
    c = new_client(e)
    for name in (b"a", b"b", b"c", b"d"):
        e.watch(c, name)
    assert [t.name for t in e.tube_list] == [b"default", b"a", b"b", b"c", b"d"]
    e.ignore(c, b"b")
    assert [t.name for t in e.tube_list] == [b"default", b"a", b"d", b"c"]
    assert [t.name for t in c.watch] == [b"default", b"a", b"d", b"c"]
    e.ignore(c, b"default")
    assert [t.name for t in c.watch] == [b"c", b"a", b"d"]
    assert b"default" in e.tubes  # default never goes away


def test_ignore_last_tube() -> None:
    e = Engine()
    c = new_client(e)
    assert e.ignore(c, b"default") == NOT_IGNORED
    assert e.ignore(c, b"nothere") == 1
    assert e.watch(c, b"x") == 2
    assert e.watch(c, b"x") == 2


def test_tube_survives_while_it_has_jobs() -> None:
    e = Engine()
    c = new_client(e)
    e.use(c, b"t")
    job = put(e, c)
    e.use(c, b"default")
    assert b"t" in e.tubes
    e.delete(c, job.id)
    assert b"t" not in e.tubes


def test_multi_tube_reserve_takes_global_best() -> None:
    e = Engine()
    c = new_client(e)
    e.use(c, b"abc")
    put(e, c, pri=999999)
    e.use(c, b"def")
    best = put(e, c, pri=99)
    e.watch(c, b"abc")
    e.watch(c, b"def")
    assert e.reserve(c, 0, T0) is best


@pytest.mark.parametrize("tubes", [3, WIDE_WATCH + 50])
def test_wide_and_narrow_watchers_agree(tubes: int) -> None:
    """A worker watching many tubes uses the tube index; results must match a scan."""
    rng = random.Random(tubes)
    e = Engine()
    producer, worker = new_client(e), new_client(e)
    names = [b"t%d" % i for i in range(tubes)]
    for name in names:
        e.watch(worker, name)
    jobs = []
    for _ in range(200):
        e.use(producer, rng.choice(names))
        jobs.append(put(e, producer, pri=rng.randrange(5)))
    expected = sorted(jobs, key=lambda j: (j.pri, j.id))
    got = [e.reserve(worker, 0, T0) for _ in jobs]
    assert got == expected
    # And blocked: a put to any watched tube reaches the waiting worker.
    assert e.reserve(worker, -1, T0) is None
    e.use(producer, names[-1])
    job = put(e, producer)
    assert completed(e)[-1] == (worker, job)


def test_wide_waiter_order_against_narrow_waiters() -> None:
    e = Engine()
    producer = new_client(e)
    wide = new_client(e)
    for i in range(WIDE_WATCH + 1):
        e.watch(wide, b"w%d" % i)
    narrow = new_client(e)
    assert e.reserve(wide, -1, T0) is None
    assert e.reserve(narrow, -1, T0) is None
    first = put(e, producer)
    second = put(e, producer)
    assert completed(e) == [(wide, first), (narrow, second)]


def test_counters() -> None:
    e = Engine()
    c = new_client(e)
    put(e, c, pri=10)
    put(e, c, pri=2000)
    put(e, c, delay=3)
    assert (e.ready_ct, e.urgent_ct, e.delayed_count(), e.total_jobs_ct) == (2, 1, 1, 3)
    job = e.reserve(c, 0, T0)
    assert (e.ready_ct, e.urgent_ct, e.reserved_ct) == (1, 0, 1)
    e.bury(c, job.id, 1)
    assert e.buried_ct == 1 and e.reserved_ct == 0
    assert e.default.total_jobs_ct == 3


def test_many_jobs_stay_fast_paths() -> None:
    """Sanity check of the O(log n) structures: 20k jobs in and out, in order."""
    e = Engine()
    c = new_client(e)
    rng = random.Random(1)
    for _ in range(20000):
        put(e, c, pri=rng.randrange(100))
    last = (-1, -1)
    while (job := e.reserve(c, 0, T0)) != TIMED_OUT:
        key = (job.pri, job.id)
        assert key > last
        last = key
        e.delete(c, job.id)
    assert not e.jobs


def test_job_counters_are_allocated_only_when_one_changes() -> None:
    e = Engine()
    c = new_client(e)
    waiting = put(e, c)
    handled = put(e, c)
    assert e.reserve(c, -1, 0) is not None
    assert e.release(c, waiting.id, 5, 0, 0)
    assert waiting.counts is not None and handled.counts is None  # memory: see Job
    assert (waiting.reserve_ct, waiting.release_ct, handled.reserve_ct) == (1, 1, 0)


# --------------------------------------------------------------------- tube-addressed operations


def _states(e: Engine, tube: bytes) -> dict:
    stats = {s.name: s.value for s in e.tube_stats(tube, T0) or []}
    return {k: stats.get(f"current-jobs-{k}") for k in ("ready", "delayed", "buried", "reserved")}


def test_tube_jobs_pages_in_serving_order_with_a_cursor() -> None:
    e = Engine()
    c = new_client(e)
    jobs = [put(e, c, pri=p) for p in (5, 1, 5, 0, 3)]
    order = sorted(jobs, key=lambda j: (j.pri, j.id))
    page, cursor = e.tube_jobs(b"default", READY, 2)
    assert page == order[:2] and cursor is not None
    e.delete(c, order[1].id)  # the cursor's job may go; the next page still follows it
    page2, cursor2 = e.tube_jobs(b"default", READY, 2, cursor)
    assert page2 == order[2:4]
    page3, cursor3 = e.tube_jobs(b"default", READY, 2, cursor2)
    assert page3 == order[4:] and cursor3 is None
    assert e.tube_jobs(b"nope", READY, 5) == ([], None)


def test_tube_jobs_by_state() -> None:
    e = Engine()
    c = new_client(e)
    delayed = [put(e, c, delay=d) for d in (30, 10, 20)]
    buried = [put(e, c) for _ in range(3)]
    for job in (buried[2], buried[0], buried[1]):
        assert e.reserve_job(c, job.id, T0) is job
        assert e.bury(c, job.id, 0)
    held = put(e, c)
    e.reserve_job(c, held.id, T0)
    assert e.tube_jobs(b"default", DELAYED, 10)[0] == [delayed[1], delayed[2], delayed[0]]
    first, cursor = e.tube_jobs(b"default", BURIED, 2)
    assert first == [buried[2], buried[0]]  # in bury order, as kick takes them
    assert e.tube_jobs(b"default", BURIED, 2, cursor) == ([buried[1]], None)
    assert e.tube_jobs(b"default", RESERVED, 10)[0] == [held]


def test_clear_tube_deletes_by_state_and_is_bounded() -> None:
    e = Engine()
    c = new_client(e)
    for _ in range(5):
        put(e, c)
    put(e, c, delay=10)
    assert e.clear_tube(b"default", READY, 3) == 3
    assert _states(e, b"default")["ready"] == 2
    assert e.clear_tube(b"default", READY, 100) == 2
    assert e.clear_tube(b"default", RESERVED, 100) == 0  # never from under a worker
    assert _states(e, b"default") == {"ready": 0, "delayed": 1, "buried": 0, "reserved": 0}
    stats = {s.name: s.value for s in e.tube_stats(b"default", T0) or []}
    assert stats["cmd-delete"] == 5


def test_delete_job_needs_no_session_and_spares_reserved_jobs() -> None:
    e = Engine()
    c = new_client(e)
    ready, held = put(e, c), put(e, c)
    assert e.reserve_job(c, held.id, T0) is held
    assert e.delete_job(ready.id) and ready.id not in e.jobs
    assert not e.delete_job(held.id) and held.state == RESERVED  # its holder would lose it
    assert not e.delete_job(999)
    assert e.conn_ct == 1
    stats = {s.name: s.value for s in e.tube_stats(b"default", T0) or []}
    assert stats["cmd-delete"] == 1


def test_kick_tube_and_peek_tube_need_no_session() -> None:
    e = Engine()
    c = new_client(e)
    e.use(c, b"t")
    job = put(e, c, delay=60)
    assert e.peek_tube(b"t", DELAYED) is job
    assert e.conn_ct == 1
    assert e.kick_tube(b"t", 10, T0) == 1
    assert e.peek_tube(b"t", READY) is job and job.kick_ct == 1
    assert e.kick_tube(b"missing", 10, T0) == 0
    assert e.conn_ct == 1  # no session was opened for it


def test_move_jobs_keeps_ids_and_wakes_the_target_waiter() -> None:
    e = Engine()
    producer, worker = new_client(e), new_client(e)
    e.use(producer, b"src")
    a, b = put(e, producer, pri=2), put(e, producer, pri=1)
    later = put(e, producer, delay=30)
    e.watch(worker, b"dst")
    e.ignore(worker, b"default")
    assert e.reserve(worker, -1, T0) is None
    assert e.move_jobs(b"src", b"dst", READY, 10, T0) == 2
    assert completed(e) == [(worker, b)]  # the best job went to the waiter
    assert a.tube.name == b"dst" and a.state == READY
    assert e.move_jobs(b"src", b"dst", DELAYED, 10, T0) == 1
    assert later.tube.name == b"dst" and later.state == DELAYED
    e.tick(T0 + 30 * NS)
    assert later.state == READY
    assert b"src" in e.tubes  # the producer still uses it
    assert e.move_jobs(b"src", b"src", READY, 10, T0) == 0
