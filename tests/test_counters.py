"""Every stats counter and every way a blocked reserve is woken, without beanstalkd.

These tests reach the server only through ``Rig`` (tests/rig.py): bytes in,
bytes out, the clock.  They stand alone where the differential suite
(compat_tests/) skips because beanstalkd is not installed, and they are what
caught, among the unit tests, a miscounted ``cmd-peek-ready`` and a ``kick``
that no longer woke a waiting reserve.

The expected values are beanstalkd 1.12's: every case of ``CMD_CASES`` (reply
and counter moves), the drain case and the scenarios that need no clock were
run against the real daemon when this file was written (through a stand-in
for ``Rig`` over sockets), and gave exactly these replies and values, except
where a test says otherwise.
"""

from __future__ import annotations

import pytest

from rig import NS, T0, Rig, list_of, yaml_of

PUT = b"put 0 0 100 1\r\nx\r\n"
HELD = [PUT, b"reserve\r\n"]  # the connection holds job 1
BURIED = [PUT, b"reserve\r\n", b"bury 1 0\r\n"]  # job 1 buried
DELAYED = [b"put 0 100 100 1\r\nx\r\n"]  # job 1 delayed
NF = b"NOT_FOUND\r\n"
BAD = b"BAD_FORMAT\r\n"
FOUND_1 = b"FOUND 1 1\r\nx\r\n"
RESERVED_1 = b"RESERVED 1 1\r\nx\r\n"
OK_REPLY = b"OK "  # a YAML reply: only its first bytes are compared

# --------------------------------------------------------------------- cmd-* counters
#
# (name, setup sent first on the same connection, the command, its whole reply,
# the one cmd-* counter it moves or None).  beanstalkd counts a command once its
# arguments parse (NOT_FOUND and the like included), and a few malformed forms
# too: a put header with trailing garbage or too big a body, pause-tube with a
# bad tube name; `kick 5x` is not malformed at all (strtoul stops at the x).

CMD_CASES = [
    ("put", [], PUT, b"INSERTED 1\r\n", "cmd-put"),
    ("put-expected-crlf", [], b"put 0 0 100 1\r\nxyz\r\n", b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n", "cmd-put"),
    ("put-trailing-garbage", [], b"put 0 0 100 1x\r\n", BAD, "cmd-put"),
    ("put-trailing-space", [], b"put 0 0 100 1 \r\n", BAD, "cmd-put"),
    ("put-bad-number", [], b"put x 0 100 1\r\n", BAD, None),
    ("put-missing-field", [], b"put 0 0 100\r\n", BAD, None),
    ("put-too-big", [], b"put 0 0 100 65536\r\n" + b"a" * 65536 + b"\r\n", b"JOB_TOO_BIG\r\n", "cmd-put"),
    ("put-too-big-and-garbage", [], b"put 0 0 100 65536x\r\n" + b"a" * 65536 + b"\r\n", b"JOB_TOO_BIG\r\n",
     "cmd-put"),
    ("peek", [PUT], b"peek 1\r\n", FOUND_1, "cmd-peek"),
    ("peek-not-found", [], b"peek 9\r\n", NF, "cmd-peek"),
    ("peek-bad-format", [], b"peek x\r\n", BAD, None),
    ("peek-ready", [PUT], b"peek-ready\r\n", FOUND_1, "cmd-peek-ready"),
    ("peek-ready-not-found", [], b"peek-ready\r\n", NF, "cmd-peek-ready"),
    ("peek-ready-bad-format", [], b"peek-ready \r\n", BAD, None),
    ("peek-delayed", DELAYED, b"peek-delayed\r\n", FOUND_1, "cmd-peek-delayed"),
    ("peek-delayed-not-found", [], b"peek-delayed\r\n", NF, "cmd-peek-delayed"),
    ("peek-delayed-bad-format", [], b"peek-delayed \r\n", BAD, None),
    ("peek-buried", BURIED, b"peek-buried\r\n", FOUND_1, "cmd-peek-buried"),
    ("peek-buried-not-found", [], b"peek-buried\r\n", NF, "cmd-peek-buried"),
    ("peek-buried-bad-format", [], b"peek-buried \r\n", BAD, None),
    ("reserve", [PUT], b"reserve\r\n", RESERVED_1, "cmd-reserve"),
    ("reserve-blocks", [], b"reserve\r\n", b"", "cmd-reserve"),
    ("reserve-deadline-soon", [b"put 0 0 1 1\r\nx\r\n", b"reserve\r\n"], b"reserve\r\n", b"DEADLINE_SOON\r\n",
     "cmd-reserve"),
    ("reserve-bad-format", [], b"reserve \r\n", BAD, None),
    ("reserve-with-timeout", [PUT], b"reserve-with-timeout 0\r\n", RESERVED_1, "cmd-reserve-with-timeout"),
    ("reserve-with-timeout-timed-out", [], b"reserve-with-timeout 0\r\n", b"TIMED_OUT\r\n",
     "cmd-reserve-with-timeout"),
    ("reserve-with-timeout-blocks", [], b"reserve-with-timeout 10\r\n", b"", "cmd-reserve-with-timeout"),
    ("reserve-with-timeout-abc", [], b"reserve-with-timeout abc\r\n", b"TIMED_OUT\r\n", "cmd-reserve-with-timeout"),
    ("reserve-with-timeout-bad-format", [], b"reserve-with-timeout 99999999999999999999\r\n", BAD, None),
    ("reserve-job", [PUT], b"reserve-job 1\r\n", RESERVED_1, None),  # 1.12 has no cmd-reserve-job
    ("reserve-job-not-found", [], b"reserve-job 9\r\n", NF, None),
    ("reserve-job-bad-format", [], b"reserve-job x\r\n", BAD, None),
    ("delete", [PUT], b"delete 1\r\n", b"DELETED\r\n", "cmd-delete"),
    ("delete-not-found", [], b"delete 9\r\n", NF, "cmd-delete"),
    ("delete-bad-format", [], b"delete x\r\n", BAD, None),
    ("release", HELD, b"release 1 0 0\r\n", b"RELEASED\r\n", "cmd-release"),
    ("release-delayed", HELD, b"release 1 0 5\r\n", b"RELEASED\r\n", "cmd-release"),
    ("release-not-found", [PUT], b"release 1 0 0\r\n", NF, "cmd-release"),
    ("release-bad-format", [], b"release x 0 0\r\n", BAD, None),
    ("use", [], b"use foo\r\n", b"USING foo\r\n", "cmd-use"),
    ("use-bad-name", [], b"use -x\r\n", BAD, None),
    ("watch", [], b"watch foo\r\n", b"WATCHING 2\r\n", "cmd-watch"),
    ("watch-bad-name", [], b"watch -x\r\n", BAD, None),
    ("ignore", [b"watch foo\r\n"], b"ignore foo\r\n", b"WATCHING 1\r\n", "cmd-ignore"),
    ("ignore-unwatched", [], b"ignore nothere\r\n", b"WATCHING 1\r\n", "cmd-ignore"),
    ("ignore-not-ignored", [], b"ignore default\r\n", b"NOT_IGNORED\r\n", "cmd-ignore"),
    ("ignore-bad-name", [], b"ignore -x\r\n", BAD, None),
    ("bury", HELD, b"bury 1 0\r\n", b"BURIED\r\n", "cmd-bury"),
    ("bury-not-found", [PUT], b"bury 1 0\r\n", NF, "cmd-bury"),
    ("bury-bad-format", [], b"bury x 0\r\n", BAD, None),
    ("kick-delayed", DELAYED, b"kick 5\r\n", b"KICKED 1\r\n", "cmd-kick"),
    ("kick-buried", BURIED, b"kick 5\r\n", b"KICKED 1\r\n", "cmd-kick"),
    ("kick-nothing", [], b"kick 5\r\n", b"KICKED 0\r\n", "cmd-kick"),
    ("kick-trailing-garbage", DELAYED, b"kick 5x\r\n", b"KICKED 1\r\n", "cmd-kick"),
    ("kick-bad-format", [], b"kick x\r\n", BAD, None),
    ("kick-job", DELAYED, b"kick-job 1\r\n", b"KICKED\r\n", None),  # 1.12 has no cmd-kick-job
    ("kick-job-not-found", [], b"kick-job 9\r\n", NF, None),
    ("kick-job-bad-format", [], b"kick-job x\r\n", BAD, None),
    ("touch", HELD, b"touch 1\r\n", b"TOUCHED\r\n", "cmd-touch"),
    ("touch-not-found", [PUT], b"touch 1\r\n", NF, "cmd-touch"),
    ("touch-bad-format", [], b"touch x\r\n", BAD, None),
    ("stats", [], b"stats\r\n", OK_REPLY, "cmd-stats"),
    ("stats-bad-format", [], b"stats \r\n", BAD, None),
    ("stats-job", [PUT], b"stats-job 1\r\n", OK_REPLY, "cmd-stats-job"),
    ("stats-job-not-found", [], b"stats-job 9\r\n", NF, "cmd-stats-job"),
    ("stats-job-bad-format", [], b"stats-job x\r\n", BAD, None),
    ("stats-tube", [], b"stats-tube default\r\n", OK_REPLY, "cmd-stats-tube"),
    ("stats-tube-not-found", [], b"stats-tube nothere\r\n", NF, "cmd-stats-tube"),
    ("stats-tube-bad-name", [], b"stats-tube -x\r\n", BAD, None),
    ("list-tubes", [], b"list-tubes\r\n", OK_REPLY, "cmd-list-tubes"),
    ("list-tubes-bad-format", [], b"list-tubes \r\n", BAD, None),
    ("list-tube-used", [], b"list-tube-used\r\n", b"USING default\r\n", "cmd-list-tube-used"),
    ("list-tube-used-bad-format", [], b"list-tube-used \r\n", BAD, None),
    ("list-tubes-watched", [], b"list-tubes-watched\r\n", OK_REPLY, "cmd-list-tubes-watched"),
    ("list-tubes-watched-bad-format", [], b"list-tubes-watched \r\n", BAD, None),
    ("pause-tube", [], b"pause-tube default 0\r\n", b"PAUSED\r\n", "cmd-pause-tube"),
    ("pause-tube-not-found", [], b"pause-tube nothere 0\r\n", NF, "cmd-pause-tube"),
    ("pause-tube-bad-name", [], b"pause-tube -abc 0\r\n", BAD, "cmd-pause-tube"),
    ("pause-tube-no-delay", [], b"pause-tube default\r\n", BAD, None),
    ("pause-tube-bad-delay", [], b"pause-tube default x\r\n", BAD, None),
    ("quit", [], b"quit\r\n", b"", None),
    ("unknown-command", [], b"nonsense\r\n", b"UNKNOWN_COMMAND\r\n", None),
    ("empty-line", [], b"\r\n", b"UNKNOWN_COMMAND\r\n", None),
    ("line-too-long", [], b"x" * 300 + b"\r\n", BAD, None),
    ("nul-in-line", [], b"stats\x00\r\n", BAD, None),
]

CMD_FIELDS = [
    "cmd-put", "cmd-peek", "cmd-peek-ready", "cmd-peek-delayed", "cmd-peek-buried", "cmd-reserve",
    "cmd-reserve-with-timeout", "cmd-delete", "cmd-release", "cmd-use", "cmd-watch", "cmd-ignore", "cmd-bury",
    "cmd-kick", "cmd-touch", "cmd-stats", "cmd-stats-job", "cmd-stats-tube", "cmd-list-tubes",
    "cmd-list-tube-used", "cmd-list-tubes-watched", "cmd-pause-tube",
]


def stats(rig: Rig, now: int = T0) -> dict[str, str]:
    """A `stats` from a connection of its own (opened and closed again)."""
    observer = rig.conn()
    try:
        return yaml_of(rig.send(observer, b"stats\r\n", now))
    finally:
        rig.close(observer, now)


def counters(fields: dict[str, str]) -> dict[str, int]:
    return {key: int(value) for key, value in fields.items() if key.startswith("cmd-")}


def test_the_cases_cover_every_cmd_counter() -> None:
    assert sorted(counters(stats(Rig()))) == sorted(CMD_FIELDS)
    assert {case[4] for case in CMD_CASES} - {None} == set(CMD_FIELDS)


@pytest.mark.parametrize("name,setup,command,reply,counter", CMD_CASES, ids=[case[0] for case in CMD_CASES])
def test_command_moves_only_its_own_counter(name, setup, command, reply, counter) -> None:
    rig = Rig()
    c, observer = rig.conn(), rig.conn()
    for line in setup:
        assert not rig.send(c, line).startswith((b"BAD_FORMAT", b"UNKNOWN", b"NOT_FOUND")), line
    before = counters(yaml_of(rig.send(observer, b"stats\r\n")))
    out = rig.send(c, command)
    after = counters(yaml_of(rig.send(observer, b"stats\r\n")))
    if reply == OK_REPLY:
        assert out.startswith(OK_REPLY) and out.endswith(b"\r\n"), out
    else:
        assert out == reply
    expected = dict(before)
    expected["cmd-stats"] += 1  # the observer's second `stats`
    if counter is not None:
        expected[counter] += 1
    assert after == expected


def test_put_while_draining_counts_put_and_the_producer() -> None:
    rig = Rig()
    c = rig.conn()
    rig.drain()
    before = stats(rig)
    assert rig.send(c, PUT) == b"DRAINING\r\n"
    after = stats(rig)
    assert after["cmd-put"] == "1" and after["cmd-stats"] == "2"
    assert after["current-producers"] == "1" and after["total-jobs"] == "0"
    assert counters(after) == dict(counters(before), **{"cmd-put": 1, "cmd-stats": 2})


# --------------------------------------------------------------------- other stats fields


def pick(fields: dict[str, str], *keys: str) -> dict[str, str]:
    return {key: fields[key] for key in keys}


JOB_COUNTS = (
    "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
    "current-jobs-buried", "total-jobs",
)


def counts(*values: int) -> dict[str, str]:
    return dict(zip(JOB_COUNTS, map(str, values)))


def test_job_state_counts() -> None:
    rig = Rig()
    c = rig.conn()
    assert pick(stats(rig), *JOB_COUNTS, "job-timeouts") == dict(counts(0, 0, 0, 0, 0, 0), **{"job-timeouts": "0"})
    rig.send(c, b"put 0 0 100 1\r\na\r\n")  # 1: urgent
    rig.send(c, b"put 1023 0 100 1\r\nb\r\n")  # 2: urgent (pri < 1024)
    rig.send(c, b"put 1024 0 100 1\r\nc\r\n")  # 3: ready, not urgent
    rig.send(c, b"put 0 100 100 1\r\nd\r\n")  # 4: delayed (not urgent while delayed)
    assert pick(stats(rig), *JOB_COUNTS) == counts(2, 3, 0, 1, 0, 4)
    assert rig.send(c, b"reserve\r\n") == b"RESERVED 1 1\r\na\r\n"
    assert pick(stats(rig), *JOB_COUNTS) == counts(1, 2, 1, 1, 0, 4)
    rig.send(c, b"put 5 0 100 1\r\ne\r\n")  # 5
    assert rig.send(c, b"reserve\r\n") == b"RESERVED 5 1\r\ne\r\n"
    assert rig.send(c, b"bury 5 5\r\n") == b"BURIED\r\n"
    assert pick(stats(rig), *JOB_COUNTS) == counts(1, 2, 1, 1, 1, 5)
    assert rig.send(c, b"kick 1\r\n") == b"KICKED 1\r\n"  # buried first: 5 is urgent again
    assert pick(stats(rig), *JOB_COUNTS) == counts(2, 3, 1, 1, 0, 5)
    assert rig.send(c, b"kick 1\r\n") == b"KICKED 1\r\n"  # then the delayed 4 (pri 0)
    assert pick(stats(rig), *JOB_COUNTS) == counts(3, 4, 1, 0, 0, 5)
    assert rig.send(c, b"delete 3\r\n") == b"DELETED\r\n"
    assert rig.send(c, b"release 1 2000 0\r\n") == b"RELEASED\r\n"  # back ready, now not urgent
    assert pick(stats(rig), *JOB_COUNTS) == counts(3, 4, 0, 0, 0, 5)
    assert rig.send(c, b"put 0 0 100 1\r\nf\r\n") == b"INSERTED 6\r\n"
    assert pick(stats(rig), *JOB_COUNTS) == counts(4, 5, 0, 0, 0, 6)


def test_job_timeouts_and_the_job_back_in_ready() -> None:
    rig = Rig()
    c = rig.conn()
    rig.send(c, b"put 0 0 2 1\r\na\r\n")
    rig.send(c, b"put 0 0 5 1\r\nb\r\n")
    rig.send(c, b"reserve\r\n")
    rig.send(c, b"reserve\r\n")
    rig.tick(T0 + 2 * NS - 1)
    assert pick(stats(rig, T0 + 2 * NS - 1), "job-timeouts", "current-jobs-reserved") == {
        "job-timeouts": "0", "current-jobs-reserved": "2"}
    rig.tick(T0 + 5 * NS)
    assert pick(stats(rig, T0 + 5 * NS), "job-timeouts", "current-jobs-reserved", "current-jobs-ready") == {
        "job-timeouts": "2", "current-jobs-reserved": "0", "current-jobs-ready": "2"}


def test_current_tubes() -> None:
    rig = Rig()
    a, b = rig.conn(), rig.conn()
    assert stats(rig)["current-tubes"] == "1"  # default
    rig.send(a, b"use foo\r\n")
    rig.send(b, b"watch bar\r\n")
    rig.send(b, b"watch foo\r\n")
    assert stats(rig)["current-tubes"] == "3"
    rig.send(a, PUT)  # a job in foo keeps it alive
    rig.send(a, b"use default\r\n")
    rig.send(b, b"ignore bar\r\n")  # bar is freed
    rig.send(b, b"ignore foo\r\n")
    assert stats(rig)["current-tubes"] == "2"
    rig.send(a, b"delete 1\r\n")  # foo is freed with its last job
    assert stats(rig)["current-tubes"] == "1"
    rig.send(a, b"stats-tube nothere\r\n")  # looking does not make a tube
    rig.send(a, b"pause-tube nothere 10\r\n")
    assert stats(rig)["current-tubes"] == "1"
    rig.send(b, b"watch gone\r\n")
    assert stats(rig)["current-tubes"] == "2"
    rig.close(b)  # closing frees what only it watched
    assert stats(rig)["current-tubes"] == "1"


def test_connection_counts() -> None:
    rig = Rig()
    conns = [rig.conn() for _ in range(4)]
    observer = rig.conn()
    fields = yaml_of(rig.send(observer, b"stats\r\n"))
    assert pick(fields, "current-connections", "total-connections") == {
        "current-connections": "5", "total-connections": "5"}
    rig.close(conns[0])
    assert rig.send(conns[1], b"quit\r\n") == b""
    rig.close(conns[1])
    fields = yaml_of(rig.send(observer, b"stats\r\n"))
    assert pick(fields, "current-connections", "total-connections") == {
        "current-connections": "3", "total-connections": "5"}


def test_producer_and_worker_counts() -> None:
    rig = Rig()
    a, b, c, d, e, f = (rig.conn() for _ in range(6))
    keys = ("current-producers", "current-workers")
    assert rig.send(a, b"put 0 0 1 1 \r\n") == BAD  # counted as a put, yet not a producer
    assert rig.send(b, b"put 0 0 1 1\r\nxyz\r\n").startswith(b"EXPECTED_CRLF")  # a producer
    assert rig.send(c, b"reserve-job 99\r\n") == NF  # not a worker
    assert rig.send(d, b"reserve-with-timeout 0\r\n") == b"TIMED_OUT\r\n"  # a worker
    assert rig.send(e, b"reserve \r\n") == BAD  # not a worker
    assert rig.send(f, b"reserve\r\n") == b""  # a worker, waiting
    assert pick(stats(rig), *keys) == {"current-producers": "1", "current-workers": "2"}
    assert rig.send(a, PUT) == b"INSERTED 2\r\n"  # a producer now, and once only (f gets job 2)
    assert rig.send(a, PUT) == b"INSERTED 3\r\n"
    assert rig.send(c, b"reserve-job 3\r\n") == b"RESERVED 3 1\r\nx\r\n"  # a worker now
    assert pick(stats(rig), *keys) == {"current-producers": "2", "current-workers": "3"}
    rig.close(b)
    rig.close(d)
    rig.close(f)
    assert pick(stats(rig), *keys) == {"current-producers": "1", "current-workers": "1"}


def test_current_waiting_and_stats_tube_waiting() -> None:
    rig = Rig()
    p, w1, w2 = rig.conn(), rig.conn(), rig.conn()
    rig.send(w2, b"watch foo\r\n")
    assert rig.send(w1, b"reserve\r\n") == b""
    assert rig.send(w2, b"reserve-with-timeout 3\r\n") == b""
    assert stats(rig)["current-waiting"] == "2"
    assert yaml_of(rig.send(p, b"stats-tube default\r\n"))["current-waiting"] == "2"
    assert yaml_of(rig.send(p, b"stats-tube foo\r\n"))["current-waiting"] == "1"
    assert rig.send(p, PUT) == b"INSERTED 1\r\n"
    assert rig.send(w1, b"") == RESERVED_1
    assert stats(rig)["current-waiting"] == "1"
    rig.tick(T0 + 3 * NS)
    assert rig.send(w2, b"", T0 + 3 * NS) == b"TIMED_OUT\r\n"
    assert stats(rig, T0 + 3 * NS)["current-waiting"] == "0"
    assert yaml_of(rig.send(p, b"stats-tube foo\r\n", T0 + 3 * NS))["current-waiting"] == "0"
    # A waiter that goes away is no longer counted.
    assert rig.send(w2, b"reserve\r\n", T0 + 3 * NS) == b""
    assert stats(rig, T0 + 3 * NS)["current-waiting"] == "1"
    rig.close(w2, T0 + 3 * NS)
    assert stats(rig, T0 + 3 * NS)["current-waiting"] == "0"


def test_draining() -> None:
    rig = Rig()
    assert stats(rig)["draining"] == "false"
    rig.drain()
    assert stats(rig)["draining"] == "true"


# --------------------------------------------------------------------- stats-tube


def tube_stats(rig: Rig, conn, name: bytes, now: int = T0) -> dict[str, str]:
    return yaml_of(rig.send(conn, b"stats-tube " + name + b"\r\n", now))


def test_stats_tube_job_counts_are_per_tube() -> None:
    rig = Rig()
    p, w = rig.conn(), rig.conn()
    rig.send(p, b"use t\r\n")
    for line in (b"put 1 0 100 1\r\na\r\n", b"put 2000 0 100 1\r\nb\r\n", b"put 0 100 100 1\r\nc\r\n",
                 b"put 5 0 100 1\r\nd\r\n", b"put 6 0 100 1\r\ne\r\n"):
        assert rig.send(p, line).startswith(b"INSERTED")
    rig.send(p, b"use other\r\n")
    rig.send(p, PUT)  # 6, elsewhere
    rig.send(w, b"watch t\r\n")
    rig.send(w, b"ignore default\r\n")
    assert rig.send(w, b"reserve\r\n").startswith(b"RESERVED 1 ")
    assert rig.send(w, b"reserve\r\n").startswith(b"RESERVED 4 ")
    assert rig.send(w, b"bury 4 0\r\n") == b"BURIED\r\n"
    assert rig.send(w, b"delete 5\r\n") == b"DELETED\r\n"
    assert rig.send(w, b"delete 6\r\n") == b"DELETED\r\n"  # counted in `other`
    assert rig.send(w, b"delete 99\r\n") == NF  # counted in no tube
    fields = tube_stats(rig, p, b"t")
    assert fields == {
        "name": "t", "current-jobs-urgent": "0", "current-jobs-ready": "1", "current-jobs-reserved": "1",
        "current-jobs-delayed": "1", "current-jobs-buried": "1", "total-jobs": "5", "current-using": "0",
        "current-watching": "1", "current-waiting": "0", "cmd-delete": "1", "cmd-pause-tube": "0",
        "pause": "0", "pause-time-left": "0",
    }
    other = tube_stats(rig, p, b"other")
    assert pick(other, "total-jobs", "cmd-delete", "current-using", "current-watching") == {
        "total-jobs": "1", "cmd-delete": "1", "current-using": "1", "current-watching": "0"}
    default = tube_stats(rig, p, b"default")  # w still uses default
    assert pick(default, "total-jobs", "cmd-delete", "current-using", "current-watching") == {
        "total-jobs": "0", "cmd-delete": "0", "current-using": "1", "current-watching": "1"}


def test_stats_tube_using_and_watching() -> None:
    rig = Rig()
    a, b, c = rig.conn(), rig.conn(), rig.conn()
    rig.send(a, b"use shared\r\n")
    rig.send(b, b"watch shared\r\n")
    rig.send(c, b"use shared\r\n")
    rig.send(c, b"watch shared\r\n")
    rig.send(c, b"watch shared\r\n")  # twice: still one watcher
    fields = tube_stats(rig, a, b"shared")
    assert pick(fields, "current-using", "current-watching") == {"current-using": "2", "current-watching": "2"}
    rig.close(b)
    rig.send(c, b"use default\r\n")
    fields = tube_stats(rig, a, b"shared")
    assert pick(fields, "current-using", "current-watching") == {"current-using": "1", "current-watching": "1"}
    assert pick(tube_stats(rig, a, b"default"), "current-using", "current-watching") == {
        "current-using": "1", "current-watching": "2"}


def test_stats_tube_pause_fields() -> None:
    rig = Rig()
    c = rig.conn()
    keys = ("cmd-pause-tube", "pause", "pause-time-left")
    assert rig.send(c, b"pause-tube default 10\r\n") == b"PAUSED\r\n"
    assert pick(tube_stats(rig, c, b"default"), *keys) == {
        "cmd-pause-tube": "1", "pause": "10", "pause-time-left": "10"}
    now = T0 + 3 * NS + NS // 2
    rig.tick(now)
    assert pick(tube_stats(rig, c, b"default", now), *keys) == {
        "cmd-pause-tube": "1", "pause": "10", "pause-time-left": "6"}  # 6.5 s, truncated
    assert rig.send(c, b"pause-tube default 4\r\n", now) == b"PAUSED\r\n"  # a new pause from now
    assert pick(tube_stats(rig, c, b"default", now), *keys) == {
        "cmd-pause-tube": "2", "pause": "4", "pause-time-left": "4"}
    assert rig.send(c, b"pause-tube nothere 4\r\n", now) == NF  # counted globally only
    rig.tick(now + 4 * NS)
    assert pick(tube_stats(rig, c, b"default", now + 4 * NS), *keys) == {
        "cmd-pause-tube": "2", "pause": "0", "pause-time-left": "0"}
    assert rig.send(c, b"pause-tube default 0\r\n", now + 4 * NS) == b"PAUSED\r\n"
    assert pick(tube_stats(rig, c, b"default", now + 4 * NS), *keys) == {
        "cmd-pause-tube": "3", "pause": "0", "pause-time-left": "0"}
    assert stats(rig, now + 4 * NS)["cmd-pause-tube"] == "4"


# --------------------------------------------------------------------- stats-job


JOB_KEYS = ("state", "pri", "age", "delay", "ttr", "time-left", "reserves", "timeouts", "releases", "buries",
            "kicks")


def job_stats(rig: Rig, conn, job_id: int, now: int) -> dict[str, str]:
    return yaml_of(rig.send(conn, b"stats-job %d\r\n" % job_id, now))


def job_row(state, pri, age, delay, ttr, time_left, reserves, timeouts, releases, buries, kicks):
    values = (state, pri, age, delay, ttr, time_left, reserves, timeouts, releases, buries, kicks)
    return dict(zip(JOB_KEYS, map(str, values)))


def test_stats_job_through_a_life() -> None:
    rig = Rig()
    p, w = rig.conn(), rig.conn()
    rig.send(p, b"use jobs\r\n")
    assert rig.send(p, b"put 5 0 10 1\r\na\r\n") == b"INSERTED 1\r\n"
    fields = job_stats(rig, p, 1, T0)
    assert pick(fields, "id", "tube", "file") == {"id": "1", "tube": "jobs", "file": "0"}
    assert pick(fields, *JOB_KEYS) == job_row("ready", 5, 0, 0, 10, 0, 0, 0, 0, 0, 0)

    def at(seconds: float) -> int:
        now = T0 + int(seconds * NS)
        rig.tick(now)
        return now

    rig.send(w, b"watch jobs\r\n")
    assert rig.send(w, b"reserve\r\n", at(1)) == b"RESERVED 1 1\r\na\r\n"  # deadline 11 s
    assert pick(job_stats(rig, p, 1, at(3.5)), *JOB_KEYS) == job_row("reserved", 5, 3, 0, 10, 7, 1, 0, 0, 0, 0)
    assert rig.send(w, b"release 1 7 2\r\n", at(4)) == b"RELEASED\r\n"  # ready at 6 s
    assert pick(job_stats(rig, p, 1, at(5.5)), *JOB_KEYS) == job_row("delayed", 7, 5, 2, 10, 0, 1, 0, 1, 0, 0)
    assert pick(job_stats(rig, p, 1, at(6)), *JOB_KEYS) == job_row("ready", 7, 6, 2, 10, 0, 1, 0, 1, 0, 0)
    assert rig.send(w, b"reserve\r\n", at(6)) == b"RESERVED 1 1\r\na\r\n"
    assert rig.send(w, b"bury 1 3\r\n", at(6)) == b"BURIED\r\n"
    assert pick(job_stats(rig, p, 1, at(6)), *JOB_KEYS) == job_row("buried", 3, 6, 2, 10, 0, 2, 0, 1, 1, 0)
    assert rig.send(p, b"kick 1\r\n", at(7)) == b"KICKED 1\r\n"
    assert pick(job_stats(rig, p, 1, at(7)), *JOB_KEYS) == job_row("ready", 3, 7, 2, 10, 0, 2, 0, 1, 1, 1)
    assert rig.send(w, b"reserve\r\n", at(8)) == b"RESERVED 1 1\r\na\r\n"  # deadline 18 s
    assert rig.send(w, b"touch 1\r\n", at(9)) == b"TOUCHED\r\n"  # deadline 19 s
    assert pick(job_stats(rig, p, 1, at(18.5)), *JOB_KEYS) == job_row("reserved", 3, 18, 2, 10, 0, 3, 0, 1, 1, 1)
    assert pick(job_stats(rig, p, 1, at(19)), *JOB_KEYS) == job_row("ready", 3, 19, 2, 10, 0, 3, 1, 1, 1, 1)
    assert rig.send(w, b"reserve\r\n", at(20)) == b"RESERVED 1 1\r\na\r\n"
    assert rig.send(w, b"release 1 3 100\r\n", at(20)) == b"RELEASED\r\n"
    assert rig.send(p, b"kick-job 1\r\n", at(21)) == b"KICKED\r\n"  # kick-job counts in kicks too
    assert pick(job_stats(rig, p, 1, at(21)), *JOB_KEYS) == job_row("ready", 3, 21, 100, 10, 0, 4, 1, 2, 1, 2)
    assert rig.send(p, b"delete 1\r\n", at(21)) == b"DELETED\r\n"
    assert rig.send(p, b"stats-job 1\r\n", at(21)) == NF


def test_stats_job_of_a_delayed_put() -> None:
    rig = Rig()
    c = rig.conn()
    assert rig.send(c, b"put 2000 30 60 1\r\na\r\n") == b"INSERTED 1\r\n"
    assert pick(job_stats(rig, c, 1, T0), *JOB_KEYS) == job_row("delayed", 2000, 0, 30, 60, 30, 0, 0, 0, 0, 0)
    rig.tick(T0 + 10 * NS)
    assert pick(job_stats(rig, c, 1, T0 + 10 * NS), *JOB_KEYS) == job_row(
        "delayed", 2000, 10, 30, 60, 20, 0, 0, 0, 0, 0)


# --------------------------------------------------------------------- waking a blocked reserve
#
# Each trigger sets up its jobs with ``before`` (producer p, another client o),
# then a client w blocks in reserve (or reserve-with-timeout) and ``wake`` must
# hand it exactly job 1 (body b"x").  ``now`` is where the clock stands.

WAITS = [b"reserve\r\n", b"reserve-with-timeout 1000\r\n"]


def _put(rig, p, o):
    return T0


def _wake_put(rig, p, o, w, now):
    assert rig.send(p, PUT, now) == b"INSERTED 1\r\n"


def _held_by_p(rig, p, o):
    assert rig.send(p, PUT) == b"INSERTED 1\r\n"
    assert rig.send(p, b"reserve\r\n") == RESERVED_1
    return T0


def _wake_release(rig, p, o, w, now):
    assert rig.send(p, b"release 1 0 0\r\n", now) == b"RELEASED\r\n"


def _buried(rig, p, o):
    _held_by_p(rig, p, o)
    assert rig.send(p, b"bury 1 0\r\n") == b"BURIED\r\n"
    return T0


def _delayed(rig, p, o):
    assert rig.send(p, b"put 0 5 100 1\r\nx\r\n") == b"INSERTED 1\r\n"
    return T0


def _wake_kick(rig, p, o, w, now):
    assert rig.send(p, b"kick 1\r\n", now) == b"KICKED 1\r\n"


def _wake_kick_job(rig, p, o, w, now):
    assert rig.send(p, b"kick-job 1\r\n", now) == b"KICKED\r\n"


def _wake_tick_5s(rig, p, o, w, now):
    rig.tick(now + 5 * NS - 1)
    assert rig.send(w, b"", now + 5 * NS - 1) == b""  # not a moment early
    rig.tick(now + 5 * NS)


def _held_by_o(rig, p, o):
    assert rig.send(p, b"put 0 0 5 1\r\nx\r\n") == b"INSERTED 1\r\n"
    assert rig.send(o, b"reserve\r\n") == RESERVED_1
    return T0


def _wake_close(rig, p, o, w, now):
    rig.close(o, now)


def _paused(rig, p, o):
    assert rig.send(p, PUT) == b"INSERTED 1\r\n"
    assert rig.send(p, b"pause-tube default 5\r\n") == b"PAUSED\r\n"
    return T0


def _wake_unpause(rig, p, o, w, now):
    assert rig.send(p, b"pause-tube default 0\r\n", now) == b"PAUSED\r\n"


TRIGGERS = {
    "put": (_put, _wake_put),
    "release": (_held_by_p, _wake_release),
    "kick-buried": (_buried, _wake_kick),
    "kick-delayed": (_delayed, _wake_kick),
    "kick-job-buried": (_buried, _wake_kick_job),
    "kick-job-delayed": (_delayed, _wake_kick_job),
    "delay-ends": (_delayed, _wake_tick_5s),
    "ttr-of-another-client": (_held_by_o, _wake_tick_5s),
    "holder-closes": (_held_by_o, _wake_close),
    "pause-ends": (_paused, _wake_tick_5s),
    "pause-tube-0": (_paused, _wake_unpause),
}


@pytest.mark.parametrize("wait", WAITS, ids=["reserve", "reserve-with-timeout"])
@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
def test_waiter_is_woken(trigger: str, wait: bytes) -> None:
    before, wake = TRIGGERS[trigger]
    rig = Rig()
    p, o, w = rig.conn(), rig.conn(), rig.conn()
    now = before(rig, p, o)
    assert rig.send(w, wait, now) == b""
    assert stats(rig, now)["current-waiting"] == "1"
    wake(rig, p, o, w, now)
    assert rig.send(w, b"") == RESERVED_1
    fields = stats(rig, now + 5 * NS)
    assert pick(fields, "current-waiting", "current-jobs-reserved") == {
        "current-waiting": "0", "current-jobs-reserved": "1"}
    assert yaml_of(rig.send(w, b"stats-job 1\r\n", now + 5 * NS))["state"] == "reserved"


def test_release_with_a_delay_wakes_nobody_until_the_delay_ends() -> None:
    rig = Rig()
    p, w = rig.conn(), rig.conn()
    _held_by_p(rig, p, None)
    assert rig.send(w, b"reserve\r\n") == b""
    assert rig.send(p, b"release 1 0 3\r\n") == b"RELEASED\r\n"
    assert rig.send(w, b"") == b""
    rig.tick(T0 + 3 * NS)
    assert rig.send(w, b"", T0 + 3 * NS) == RESERVED_1


def test_waiters_are_served_oldest_first() -> None:
    """Strictly in arrival order: beanstalk-py's documented choice (COMPAT.md,
    compat_tests/test_differences.py); beanstalkd 1.12 is only roughly FIFO."""
    rig = Rig()
    p = rig.conn()
    waiters = [rig.conn() for _ in range(4)]
    for i, w in enumerate(waiters):
        assert rig.send(w, WAITS[i % 2]) == b""
    assert rig.send(p, b"put 0 0 100 1\r\na\r\n") == b"INSERTED 1\r\n"
    assert [rig.send(w, b"") for w in waiters] == [b"RESERVED 1 1\r\na\r\n", b"", b"", b""]
    # The served one queues again, behind the others.
    assert rig.send(waiters[0], b"reserve\r\n") == b""
    for job_id, body in ((2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")):
        assert rig.send(p, b"put 0 0 100 1\r\n%s\r\n" % body) == b"INSERTED %d\r\n" % job_id
    assert [rig.send(w, b"") for w in waiters] == [
        b"RESERVED 5 1\r\ne\r\n", b"RESERVED 2 1\r\nb\r\n", b"RESERVED 3 1\r\nc\r\n", b"RESERVED 4 1\r\nd\r\n"]


def test_waiter_watching_two_tubes() -> None:
    """Woken by a job in either watched tube, and not by one in another tube; a
    reserve with jobs ready in both gets the best (pri, id) across them."""
    rig = Rig()
    p, w = rig.conn(), rig.conn()
    for line in (b"watch t1\r\n", b"watch t2\r\n", b"ignore default\r\n"):
        rig.send(w, line)
    assert rig.send(w, b"reserve\r\n") == b""
    assert rig.send(p, PUT) == b"INSERTED 1\r\n"  # default: not watched
    assert rig.send(p, b"use t2\r\nput 9 0 100 1\r\ny\r\n") == b"USING t2\r\nINSERTED 2\r\n"
    assert rig.send(w, b"") == b"RESERVED 2 1\r\ny\r\n"
    for tube, pri in ((b"t1", 50), (b"t2", 10), (b"t1", 10), (b"t2", 0), (b"t1", 0)):
        rig.send(p, b"use %s\r\nput %d 0 100 1\r\nz\r\n" % (tube, pri))  # jobs 3-7
    got = [rig.send(w, b"reserve\r\n")[:11] for _ in range(5)]
    assert got == [b"RESERVED 6 ", b"RESERVED 7 ", b"RESERVED 4 ", b"RESERVED 5 ", b"RESERVED 3 "]


def test_waiters_on_different_tubes() -> None:
    rig = Rig()
    p, w1, w2 = rig.conn(), rig.conn(), rig.conn()
    rig.send(w1, b"watch a\r\nignore default\r\n")
    rig.send(w2, b"watch b\r\nignore default\r\n")
    assert rig.send(w1, b"reserve\r\n") == b""
    assert rig.send(w2, b"reserve\r\n") == b""
    assert rig.send(p, b"use b\r\nput 0 0 100 1\r\nB\r\n") == b"USING b\r\nINSERTED 1\r\n"
    assert (rig.send(w1, b""), rig.send(w2, b"")) == (b"", b"RESERVED 1 1\r\nB\r\n")


@pytest.mark.parametrize("how", ["delayed", "buried"])
def test_kick_hands_the_first_kicked_job_to_the_waiter(how: str) -> None:
    """beanstalkd 1.12 dispatches each job as kick makes it ready: the waiter gets
    the first kicked (pri 1023), not the best (pri 1)."""
    rig = Rig()
    p, b, w = rig.conn(), rig.conn(), rig.conn()
    if how == "delayed":
        rig.send(p, b"put 1023 100 100 1\r\na\r\n")
        rig.send(p, b"put 1 100 100 1\r\nb\r\n")
    else:
        rig.send(p, b"put 1023 0 100 1\r\na\r\n")
        rig.send(p, b"put 1 0 100 1\r\nb\r\n")
        assert rig.send(b, b"reserve-job 1\r\nreserve-job 2\r\n").count(b"RESERVED") == 2
        assert rig.send(b, b"bury 1 1023\r\nbury 2 1\r\n") == b"BURIED\r\nBURIED\r\n"  # 1 first
    assert rig.send(w, b"reserve-with-timeout 5\r\n") == b""
    assert rig.send(p, b"kick 2\r\n") == b"KICKED 2\r\n"
    assert rig.send(w, b"") == b"RESERVED 1 1\r\na\r\n"
    assert rig.send(w, b"reserve-with-timeout 0\r\n") == b"RESERVED 2 1\r\nb\r\n"


def test_closing_holder_hands_the_first_reserved_job_to_the_waiter() -> None:
    rig = Rig()
    p, b, w = rig.conn(), rig.conn(), rig.conn()
    rig.send(p, b"put 1023 0 100 1\r\na\r\nput 1 0 100 1\r\nb\r\n")
    assert rig.send(b, b"reserve-job 1\r\nreserve-job 2\r\n").count(b"RESERVED") == 2
    assert rig.send(w, b"reserve\r\n") == b""
    rig.close(b)
    assert rig.send(w, b"") == b"RESERVED 1 1\r\na\r\n"


def test_list_commands_reflect_use_and_watch() -> None:
    """list-tubes / list-tube-used / list-tubes-watched after use, watch and ignore."""
    rig = Rig()
    c = rig.conn()
    rig.send(c, b"use u\r\nwatch w\r\nignore default\r\n")
    assert list_of(rig.send(c, b"list-tubes\r\n")) == ["default", "u", "w"]
    assert rig.send(c, b"list-tube-used\r\n") == b"USING u\r\n"
    assert list_of(rig.send(c, b"list-tubes-watched\r\n")) == ["w"]
