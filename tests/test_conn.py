"""Deterministic tests of conn.Connection over engine.Engine: no sockets, no sleeps.

Each test drives connections through ``Rig`` (tests/rig.py) the way server.py
does: bytes in with ``receive_data(data, now)``, replies out with
``take_output()``, and finished blocked reserves delivered with ``settle``.
Some tests here also look at engine state; test_counters.py uses the rig only.
"""

from __future__ import annotations

import pytest

from beanstalk_py.conn import OUTPUT_HIGH_WATER
from beanstalk_py.engine import NS
from beanstalk_py.job import READY, RESERVED
from rig import T0, Rig, list_of, settle, yaml_of


@pytest.fixture
def rig() -> Rig:
    return Rig()


# --------------------------------------------------------------------- replies per command


def test_put_and_peek(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"put 5 0 10 3\r\nabc\r\n") == b"INSERTED 1\r\n"
    assert rig.send(c, b"put 0 0 10 0\r\n\r\n") == b"INSERTED 2\r\n"
    assert rig.send(c, b"peek 1\r\n") == b"FOUND 1 3\r\nabc\r\n"
    assert rig.send(c, b"peek 2\r\n") == b"FOUND 2 0\r\n\r\n"
    assert rig.send(c, b"peek 3\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"peek-ready\r\n") == b"FOUND 2 0\r\n\r\n"
    assert rig.send(c, b"peek-delayed\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"peek-buried\r\n") == b"NOT_FOUND\r\n"


def test_put_body_may_contain_crlf(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"put 0 0 10 6\r\na\r\nb\r\n\r\n") == b"INSERTED 1\r\n"
    assert rig.send(c, b"peek 1\r\n") == b"FOUND 1 6\r\na\r\nb\r\n\r\n"


def test_put_delayed_then_ready_on_tick(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"put 0 3 10 1\r\nd\r\n") == b"INSERTED 1\r\n"
    assert rig.send(c, b"peek-delayed\r\n") == b"FOUND 1 1\r\nd\r\n"
    assert rig.send(c, b"peek-ready\r\n") == b"NOT_FOUND\r\n"
    assert rig.engine.next_wakeup() == T0 + 3 * NS
    rig.tick(T0 + 3 * NS)
    assert rig.send(c, b"peek-ready\r\n", T0 + 3 * NS) == b"FOUND 1 1\r\nd\r\n"


def test_put_errors(rig: Rig) -> None:
    c = rig.conn()
    # EXPECTED_CRLF uses up an id; the leftover bytes are parsed as a command.
    assert rig.send(c, b"put 0 0 1 1\r\nxyz\r\n") == b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n"
    # A bad put line does not skip its body.
    assert rig.send(c, b"put 0 0 1 1x\r\nstats-job 1\r\n") == b"BAD_FORMAT\r\nNOT_FOUND\r\n"
    assert rig.send(c, b"put -1 0 1 1\r\n") == b"BAD_FORMAT\r\n"
    assert rig.send(c, b"put 0 0 1 1\r\nq\r\n") == b"INSERTED 2\r\n"


def test_job_too_big_discards_body() -> None:
    rig = Rig(max_job_size=10)
    c = rig.conn()
    assert rig.send(c, b"put 0 0 1 10\r\n0123456789\r\n") == b"INSERTED 1\r\n"
    # 11 bytes: the header, then exactly 13 bytes are thrown away before the reply.
    assert rig.send(c, b"put 0 0 1 11\r\n") == b""
    assert rig.send(c, b"put 0 0 1\n") == b""  # inside the discarded 13 bytes
    assert rig.send(c, b"X\r\n") == b"JOB_TOO_BIG\r\n"  # 10 + 3 = 13: no CRLF check
    fields = yaml_of(rig.send(c, b"stats\r\n"))
    assert fields["cmd-put"] == "2"
    assert fields["max-job-size"] == "10"
    assert fields["total-jobs"] == "1"


def test_draining_put(rig: Rig) -> None:
    c = rig.conn()
    rig.drain()
    assert rig.send(c, b"put 0 0 1 1\r\nx\r\n") == b"DRAINING\r\n"
    # The id was used up; other commands still work.
    assert rig.send(c, b"peek 1\r\n") == b"NOT_FOUND\r\n"
    fields = yaml_of(rig.send(c, b"stats\r\n"))
    assert fields["draining"] == "true"
    assert fields["cmd-put"] == "1"
    assert fields["total-jobs"] == "0"
    assert rig.send(c, b"put 0 0 1 1\r\nx\r\n") == b"DRAINING\r\n"  # one way, as in 1.12
    assert yaml_of(rig.send(c, b"stats\r\n"))["cmd-put"] == "2"


def test_reserve_delete_release_bury_kick_touch(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 7 0 10 2\r\nhi\r\n")
    assert rig.send(c, b"reserve\r\n") == b"RESERVED 1 2\r\nhi\r\n"
    assert rig.send(c, b"touch 1\r\n") == b"TOUCHED\r\n"
    assert rig.send(c, b"touch 99\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"release 1 3 0\r\n") == b"RELEASED\r\n"
    assert rig.send(c, b"release 1 3 0\r\n") == b"NOT_FOUND\r\n"  # no longer reserved
    assert rig.send(c, b"reserve-with-timeout 0\r\n") == b"RESERVED 1 2\r\nhi\r\n"
    assert rig.send(c, b"bury 1 9\r\n") == b"BURIED\r\n"
    assert rig.send(c, b"bury 1 9\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"peek-buried\r\n") == b"FOUND 1 2\r\nhi\r\n"
    stats = yaml_of(rig.send(c, b"stats-job 1\r\n"))
    assert (stats["state"], stats["pri"], stats["releases"], stats["buries"]) == ("buried", "9", "1", "1")
    assert rig.send(c, b"kick 10\r\n") == b"KICKED 1\r\n"
    assert rig.send(c, b"kick 10\r\n") == b"KICKED 0\r\n"
    assert rig.send(c, b"reserve-with-timeout 0\r\n") == b"RESERVED 1 2\r\nhi\r\n"
    assert rig.send(c, b"bury 1 0\r\n") == b"BURIED\r\n"
    assert rig.send(c, b"kick-job 1\r\n") == b"KICKED\r\n"
    assert rig.send(c, b"kick-job 1\r\n") == b"NOT_FOUND\r\n"  # ready now
    stats = yaml_of(rig.send(c, b"stats-job 1\r\n"))
    assert (stats["state"], stats["kicks"], stats["reserves"]) == ("ready", "2", "3")
    assert rig.send(c, b"delete 1\r\n") == b"DELETED\r\n"
    assert rig.send(c, b"delete 1\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"stats-job 1\r\n") == b"NOT_FOUND\r\n"


def test_release_with_delay_and_kick_delayed(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 0 0 10 1\r\na\r\n")
    rig.send(c, b"reserve\r\n")
    assert rig.send(c, b"release 1 0 30\r\n") == b"RELEASED\r\n"
    stats = yaml_of(rig.send(c, b"stats-job 1\r\n", T0 + NS // 2))
    assert (stats["state"], stats["delay"], stats["time-left"]) == ("delayed", "30", "29")
    assert rig.send(c, b"kick 1\r\n") == b"KICKED 1\r\n"
    assert rig.send(c, b"peek-ready\r\n") == b"FOUND 1 1\r\na\r\n"


def test_reserve_job(rig: Rig) -> None:
    a, b = rig.conn(), rig.conn()
    rig.send(a, b"use other\r\nput 0 100 10 1\r\nz\r\n")
    # Any tube, any state but reserved; the delay does not matter.
    assert rig.send(b, b"reserve-job 1\r\n") == b"RESERVED 1 1\r\nz\r\n"
    assert rig.send(a, b"reserve-job 1\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(a, b"delete 1\r\n") == b"NOT_FOUND\r\n"  # reserved by b
    assert rig.send(b, b"delete 1\r\n") == b"DELETED\r\n"


def test_tubes_use_watch_ignore(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"list-tube-used\r\n") == b"USING default\r\n"
    assert rig.send(c, b"use foo\r\n") == b"USING foo\r\n"
    assert rig.send(c, b"list-tube-used\r\n") == b"USING foo\r\n"
    assert rig.send(c, b"watch bar\r\n") == b"WATCHING 2\r\n"
    assert rig.send(c, b"watch bar\r\n") == b"WATCHING 2\r\n"
    assert list_of(rig.send(c, b"list-tubes-watched\r\n")) == ["default", "bar"]
    assert list_of(rig.send(c, b"list-tubes\r\n")) == ["default", "foo", "bar"]
    assert rig.send(c, b"ignore nosuch\r\n") == b"WATCHING 2\r\n"
    assert rig.send(c, b"ignore default\r\n") == b"WATCHING 1\r\n"
    assert rig.send(c, b"ignore bar\r\n") == b"NOT_IGNORED\r\n"
    assert list_of(rig.send(c, b"list-tubes-watched\r\n")) == ["bar"]
    assert rig.send(c, b"use -x\r\n") == b"BAD_FORMAT\r\n"
    assert rig.send(c, b"watch a*b\r\n") == b"BAD_FORMAT\r\n"
    stats = yaml_of(rig.send(c, b"stats-tube foo\r\n"))
    assert (stats["name"], stats["current-using"], stats["current-watching"]) == ("foo", "1", "0")
    assert rig.send(c, b"stats-tube nosuch\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"stats-tube -bad\r\n") == b"BAD_FORMAT\r\n"
    # The unused, unwatched, empty default tube still exists; foo goes with its user.
    assert rig.send(c, b"use default\r\n") == b"USING default\r\n"
    assert "foo" not in list_of(rig.send(c, b"list-tubes\r\n"))


def test_pause_tube(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 0 0 10 1\r\np\r\n")
    assert rig.send(c, b"pause-tube nosuch 10\r\n") == b"NOT_FOUND\r\n"
    assert rig.send(c, b"pause-tube default 10\r\n") == b"PAUSED\r\n"
    stats = yaml_of(rig.send(c, b"stats-tube default\r\n", T0 + NS // 2))
    assert (stats["pause"], stats["pause-time-left"], stats["cmd-pause-tube"]) == ("10", "9", "1")
    assert rig.send(c, b"reserve-with-timeout 0\r\n") == b"TIMED_OUT\r\n"
    # A waiting reserve is served when the pause ends.
    assert rig.send(c, b"reserve\r\n") == b""
    assert c.blocked
    rig.tick(T0 + 10 * NS - 1)
    assert c.take_output() == b""
    rig.tick(T0 + 10 * NS)
    assert c.take_output() == b"RESERVED 1 1\r\np\r\n"
    assert not c.blocked


def test_stats_counters(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 0 0 10 1\r\na\r\nput 2000 0 10 1\r\nb\r\npeek 1\r\nreserve-with-timeout 0\r\n")
    fields = yaml_of(rig.send(c, b"stats\r\n", T0 + 5 * NS))
    expected = {
        "current-jobs-urgent": "0",  # the urgent job is reserved now
        "current-jobs-ready": "1",
        "current-jobs-reserved": "1",
        "cmd-put": "2",
        "cmd-peek": "1",
        "cmd-reserve-with-timeout": "1",
        "cmd-stats": "1",
        "total-jobs": "2",
        "current-connections": "1",
        "current-producers": "1",
        "current-workers": "1",
        "total-connections": "1",
        "uptime": "5",
        "draining": "false",
        "id": "0123456789abcdef",
        "version": '"1.12"',
    }
    assert {k: fields[k] for k in expected} == expected


def test_unknown_and_bad_format(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"STATS\r\n") == b"UNKNOWN_COMMAND\r\n"
    assert rig.send(c, b"\r\n") == b"UNKNOWN_COMMAND\r\n"
    assert rig.send(c, b"stats \r\n") == b"BAD_FORMAT\r\n"
    assert rig.send(c, b"reservex\r\n") == b"BAD_FORMAT\r\n"
    assert rig.send(c, b"peek 1\x002\r\n") == b"BAD_FORMAT\r\n"
    assert rig.send(c, b"x" * 300 + b"\r\nlist-tube-used\r\n") == b"BAD_FORMAT\r\nUSING default\r\n"


def test_pipelined_commands_in_one_feed(rig: Rig) -> None:
    c = rig.conn()
    out = rig.send(c, b"use t\r\nput 0 0 1 1\r\nx\r\npeek-ready\r\nlist-tube-used\r\n")
    assert out == b"USING t\r\nINSERTED 1\r\nFOUND 1 1\r\nx\r\nUSING t\r\n"


def test_byte_at_a_time(rig: Rig) -> None:
    c = rig.conn()
    out = b""
    for byte in b"put 0 0 1 3\r\nabc\r\npeek 1\r\n":
        out += rig.send(c, bytes([byte]))
    assert out == b"INSERTED 1\r\nFOUND 1 3\r\nabc\r\n"


def test_quit_closes_and_ignores_the_rest(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"stats-job 1\r\nquitxyz\r\nlist-tube-used\r\n") == b"NOT_FOUND\r\n"
    assert c.closing
    assert rig.send(c, b"list-tube-used\r\n") == b""


def test_eof_runs_buffered_commands_then_closes(rig: Rig) -> None:
    c = rig.conn()
    c.receive_data(b"list-tube-used\r\nlist-tube-u", T0)
    assert not c.closing
    c.receive_eof(T0)
    assert c.closing
    assert c.take_output() == b"USING default\r\n"


# --------------------------------------------------------------------- blocking reserve


def test_blocked_reserve_completed_by_other_connections_put(rig: Rig) -> None:
    worker, producer = rig.conn(), rig.conn()
    # Commands after the reserve wait behind it.
    assert rig.send(worker, b"reserve\r\nlist-tube-used\r\n") == b""
    assert worker.blocked
    assert worker.wants_input  # still reading, to notice a hang-up
    fields = yaml_of(rig.send(producer, b"stats\r\n"))
    assert fields["current-waiting"] == "1"
    assert rig.send(producer, b"put 0 0 10 2\r\nok\r\n", T0 + NS) == b"INSERTED 1\r\n"
    # settle() delivered the job, and the held-back command ran after it.
    assert rig.engine.take_completed() == []
    assert worker.take_output() == b"RESERVED 1 2\r\nok\r\nUSING default\r\n"
    assert not worker.blocked
    stats = yaml_of(rig.send(producer, b"stats-job 1\r\n", T0 + NS))
    assert stats["state"] == "reserved"
    assert stats["time-left"] == "10"


def test_blocked_reserve_watches_other_tube(rig: Rig) -> None:
    worker, producer = rig.conn(), rig.conn()
    rig.send(worker, b"watch jobs\r\nignore default\r\n")
    assert rig.send(worker, b"reserve\r\n") == b""
    assert rig.send(producer, b"put 0 0 10 1\r\nd\r\n") == b"INSERTED 1\r\n"
    assert worker.take_output() == b""
    assert rig.send(producer, b"use jobs\r\nput 0 0 10 1\r\nj\r\n") == b"USING jobs\r\nINSERTED 2\r\n"
    assert worker.take_output() == b"RESERVED 2 1\r\nj\r\n"


def test_waiters_served_one_job_each(rig: Rig) -> None:
    workers = [rig.conn() for _ in range(3)]
    for w in workers:
        assert rig.send(w, b"reserve\r\n") == b""
    producer = rig.conn()
    rig.send(producer, b"put 0 0 10 1\r\na\r\nput 0 0 10 1\r\nb\r\nput 0 0 10 1\r\nc\r\n")
    replies = sorted(w.take_output() for w in workers)
    assert replies == [b"RESERVED 1 1\r\na\r\n", b"RESERVED 2 1\r\nb\r\n", b"RESERVED 3 1\r\nc\r\n"]


def test_reserve_with_timeout_expires(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"reserve-with-timeout 1\r\npeek 1\r\n") == b""
    assert c.blocked
    assert rig.engine.next_wakeup() == T0 + NS
    rig.tick(T0 + NS - 1)
    assert c.take_output() == b""
    rig.tick(T0 + 2 * NS)
    assert c.take_output() == b"TIMED_OUT\r\nNOT_FOUND\r\n"
    assert not c.blocked
    assert yaml_of(rig.send(c, b"stats\r\n", T0 + 2 * NS))["current-waiting"] == "0"


def test_reserve_with_timeout_zero_answers_at_once(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"reserve-with-timeout 0\r\n") == b"TIMED_OUT\r\n"
    assert not c.blocked


def test_deadline_soon_immediately_with_ttr_1(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 0 0 1 1\r\na\r\n")
    assert rig.send(c, b"reserve\r\n") == b"RESERVED 1 1\r\na\r\n"
    assert rig.send(c, b"reserve\r\n") == b"DEADLINE_SOON\r\n"
    assert rig.send(c, b"reserve-with-timeout 5\r\n") == b"DEADLINE_SOON\r\n"
    # DEADLINE_SOON does not release the job.
    assert yaml_of(rig.send(c, b"stats-job 1\r\n"))["state"] == "reserved"


def test_deadline_soon_while_waiting(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 0 0 3 1\r\na\r\n")
    assert rig.send(c, b"reserve\r\n") == b"RESERVED 1 1\r\na\r\n"
    assert rig.send(c, b"reserve\r\n") == b""  # 3 s left: outside the 1 s margin
    assert c.blocked
    rig.tick(T0 + 2 * NS - 1)
    assert c.take_output() == b""
    rig.tick(T0 + 2 * NS)
    assert c.take_output() == b"DEADLINE_SOON\r\n"
    assert not c.blocked
    # Then the TTR ends: the job goes back to ready with a timeout counted.
    rig.tick(T0 + 3 * NS)
    stats = yaml_of(rig.send(c, b"stats-job 1\r\n", T0 + 3 * NS))
    assert (stats["state"], stats["timeouts"]) == ("ready", "1")
    assert yaml_of(rig.send(c, b"stats\r\n", T0 + 3 * NS))["job-timeouts"] == "1"


def test_ttr_expiry_hands_job_to_waiter(rig: Rig) -> None:
    a, b = rig.conn(), rig.conn()
    rig.send(a, b"put 0 0 2 1\r\nt\r\n")
    assert rig.send(a, b"reserve\r\n") == b"RESERVED 1 1\r\nt\r\n"
    assert rig.send(b, b"reserve\r\n") == b""
    rig.tick(T0 + 2 * NS)
    assert b.take_output() == b"RESERVED 1 1\r\nt\r\n"
    assert rig.send(a, b"delete 1\r\n", T0 + 2 * NS) == b"NOT_FOUND\r\n"
    assert rig.send(b, b"delete 1\r\n", T0 + 2 * NS) == b"DELETED\r\n"


def test_touch_postpones_ttr(rig: Rig) -> None:
    c = rig.conn()
    rig.send(c, b"put 0 0 5 1\r\na\r\nreserve\r\n")
    assert rig.send(c, b"touch 1\r\n", T0 + 4 * NS) == b"TOUCHED\r\n"
    rig.tick(T0 + 6 * NS)
    stats = yaml_of(rig.send(c, b"stats-job 1\r\n", T0 + 6 * NS))
    assert (stats["state"], stats["time-left"]) == ("reserved", "3")


def test_eof_while_waiting_times_out(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"reserve\r\n") == b""
    c.receive_eof(T0)
    settle(rig.engine, T0)
    assert c.take_output() == b"TIMED_OUT\r\n"
    assert c.closing
    assert not c.blocked


# Regression: a reserve run after EOF used to queue its TIMED_OUT in engine.completed
# while later commands answered first.  Reference 1.12, same bytes then
# shutdown(SHUT_WR), answers TIMED_OUT, TIMED_OUT, INSERTED 1: command order.
def test_reserve_after_eof_answers_in_order(rig: Rig) -> None:
    c = rig.conn()
    assert rig.send(c, b"reserve\r\nreserve\r\nput 0 0 1 1\r\nx\r\n") == b""
    c.receive_eof(T0)
    settle(rig.engine, T0)
    assert c.take_output() == b"TIMED_OUT\r\nTIMED_OUT\r\nINSERTED 1\r\n"


def test_reserve_after_eof_behind_high_water_answers_in_order(rig: Rig) -> None:
    size = 60_000
    c = rig.conn()
    rig.send(c, b"put 0 100 60 %d\r\n%s\r\n" % (size, b"B" * size))  # delayed: nothing to reserve
    c.receive_data(b"peek 1\r\n" * 10 + b"reserve\r\nlist-tube-used\r\n", T0)
    assert c.out_size >= OUTPUT_HIGH_WATER
    out = c.take_output()
    c.receive_eof(T0)  # arrives while commands are still held back
    while True:
        settle(rig.engine, T0)
        chunk = c.take_output()
        if not chunk:
            break
        out += chunk
        c.process(T0)
    found = b"FOUND 1 %d\r\n%s\r\n" % (size, b"B" * size)
    assert out == found * 10 + b"TIMED_OUT\r\nUSING default\r\n"


# --------------------------------------------------------------------- closing


def test_close_returns_reserved_job(rig: Rig) -> None:
    a, b = rig.conn(), rig.conn()
    rig.send(a, b"put 0 0 60 1\r\nr\r\n")
    assert rig.send(a, b"reserve\r\n") == b"RESERVED 1 1\r\nr\r\n"
    job = rig.engine.jobs[1]
    assert job.state == RESERVED
    a.close(T0)
    settle(rig.engine, T0)
    assert job.state == READY
    assert job.timeout_ct == 0  # a hang-up is not a timeout
    fields = yaml_of(rig.send(b, b"stats\r\n"))
    assert fields["current-connections"] == "1"
    assert fields["current-jobs-ready"] == "1"
    assert fields["job-timeouts"] == "0"


def test_close_hands_job_to_waiting_connection(rig: Rig) -> None:
    a, b = rig.conn(), rig.conn()
    rig.send(a, b"put 0 0 60 1\r\nr\r\nreserve\r\n")
    assert rig.send(b, b"reserve\r\n") == b""
    a.close(T0)
    settle(rig.engine, T0)
    assert b.take_output() == b"RESERVED 1 1\r\nr\r\n"


def test_close_while_waiting_leaves_no_waiter(rig: Rig) -> None:
    a, b = rig.conn(), rig.conn()
    assert rig.send(a, b"reserve\r\n") == b""
    a.close(T0)
    settle(rig.engine, T0)
    assert rig.send(b, b"put 0 0 60 1\r\nr\r\n") == b"INSERTED 1\r\n"
    assert rig.engine.take_completed() == []
    assert a.take_output() == b""
    assert rig.send(b, b"peek-ready\r\n") == b"FOUND 1 1\r\nr\r\n"


# --------------------------------------------------------------------- output high-water mark


def test_output_high_water_mark_pauses_and_resumes(rig: Rig) -> None:
    size = 60_000
    c = rig.conn()
    assert rig.send(c, b"put 0 0 60 %d\r\n%s\r\n" % (size, b"B" * size)) == b"INSERTED 1\r\n"
    reply = b"FOUND 1 %d\r\n%s\r\n" % (size, b"B" * size)
    count = 3000
    c.receive_data(b"peek 1\r\n" * count, T0)
    # It stopped soon after the output passed the mark, with most commands unrun.
    assert OUTPUT_HIGH_WATER <= c.out_size < OUTPUT_HIGH_WATER + len(reply)
    assert not c.wants_input
    assert c.parser.buffered > 0
    first = c.take_output()
    assert len(first) % len(reply) == 0
    done = len(first) // len(reply)
    assert 0 < done < count
    assert c.take_output() == b""  # nothing ran meanwhile
    assert c.wants_input
    # As server.py does once its send finished: process() resumes where it stopped.
    rounds = 1
    while True:
        c.process(T0)
        chunk = c.take_output()
        if not chunk:
            break
        assert len(chunk) < OUTPUT_HIGH_WATER + len(reply)
        assert len(chunk) % len(reply) == 0
        done += len(chunk) // len(reply)
        rounds += 1
    assert done == count
    assert rounds > count * len(reply) // (OUTPUT_HIGH_WATER + len(reply))
    assert c.parser.buffered == 0
    assert c.wants_input
    fields = yaml_of(rig.send(c, b"stats\r\n"))
    assert fields["cmd-peek"] == str(count)


def test_output_high_water_mark_holds_without_process(rig: Rig) -> None:
    size = 60_000
    c = rig.conn()
    rig.send(c, b"put 0 0 60 %d\r\n%s\r\n" % (size, b"B" * size))
    c.receive_data(b"peek 1\r\n" * 1000, T0)
    held = c.out_size
    buffered = c.parser.buffered
    # Still over the mark: process() does nothing more.
    c.process(T0)
    assert (c.out_size, c.parser.buffered) == (held, buffered)
    c.take_output()
    c.process(T0)
    assert c.out_size >= OUTPUT_HIGH_WATER
    assert c.parser.buffered < buffered
