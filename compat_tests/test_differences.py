"""Where beanstalk-py differs from beanstalkd 1.12 on purpose: one test per difference.

Each test is parametrized over both daemons.  The ``beanstalk-py`` case
asserts beanstalk-py's documented behaviour; the ``reference`` case shows
that beanstalkd 1.12 really behaves the other way (and skips, saying so, when
a timing-dependent quirk does not show up in this run).

1. A 223-character line + CRLF: beanstalkd's fixed 224-byte windows miss the
   CRLF and swallow the next command too; beanstalk-py answers BAD_FORMAT once
   and runs the next command.
2. A bare CR (not followed by LF) inside a line: beanstalkd only looks at the
   first CR, so it keeps waiting for a line end; beanstalk-py ends the line at
   the first CRLF.
3. Waiting reservers: beanstalk-py serves them strictly in arrival order;
   beanstalkd is only roughly FIFO.
4. `stats` quotes `hostname`, `os` and `platform` (as beanstalkd 1.13 does).
5. TTR expiry always happens in beanstalk-py; beanstalkd 1.12 sometimes loses
   it (spec section 0 item 6).
6. A command that arrives just after a TTR ends sees the job released in
   beanstalk-py; beanstalkd applies timers before it waits, not after it
   wakes, so that command may still see the job reserved (this test runs
   against beanstalk-py only: see its docstring).
"""

from __future__ import annotations

import os
import select
import time
from typing import Iterator

import pytest

from conftest import Daemon, start_beanstalk_py, start_reference
from wire import Wire, yaml_fields

FLAVOURS = ["beanstalk-py", "reference"]


@pytest.fixture(params=FLAVOURS)
def daemon(request) -> Iterator[Daemon]:
    start = start_beanstalk_py if request.param == "beanstalk-py" else start_reference
    started = start()
    started.flavour = request.param  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        started.stop()


def is_py(daemon: Daemon) -> bool:
    return daemon.flavour == "beanstalk-py"  # type: ignore[attr-defined]


def connect(daemon: Daemon) -> Wire:
    """A connection the server has accepted (one round trip that moves no counter)."""
    wire = Wire(daemon.connect())
    assert wire.one(b"\r\n") == b"UNKNOWN_COMMAND\r\n"
    return wire


# ----------------------------------------------------------------- difference 1


def test_223_character_line(daemon: Daemon) -> None:
    w = connect(daemon)
    w.send(b"x" * 223 + b"\r\nlist-tube-used\r\n")
    first = w.read_item(2.0)
    assert first == b"BAD_FORMAT\r\n"
    rest = w.quiet(0.3)
    if is_py(daemon):
        assert rest == b"USING default\r\n"
    else:
        assert rest == b"", "the reference swallows the command after a 223-character line"
    # Either way the connection is in step again afterwards.
    assert w.one(b"use after\r\n") == b"USING after\r\n"


# ----------------------------------------------------------------- difference 2


@pytest.mark.parametrize("line", [b"use foo\rbar", b"stats\r", b"put 0 0 1\r1"])
def test_bare_cr_inside_a_line(daemon: Daemon, line: bytes) -> None:
    w = connect(daemon)
    w.send(line + b"\r\nlist-tube-used\r\n")
    if is_py(daemon):
        assert w.read(2) == [b"BAD_FORMAT\r\n", b"USING default\r\n"]
    else:
        assert w.quiet(0.3) == b"", "the reference waits for a CR that is followed by LF"


# ----------------------------------------------------------------- difference 3


def _block(waiter: Wire, observer: Wire, expect_waiting: int) -> None:
    """Send a reserve and wait until the server counts the waiter as waiting."""
    waiter.send(b"reserve\r\n")
    deadline = time.monotonic() + 3
    while yaml_fields(observer.one(b"stats\r\n"))["current-waiting"] != str(expect_waiting):
        assert time.monotonic() < deadline, "the reserve never started waiting"
        time.sleep(0.005)


def test_waiters_served_in_arrival_order(daemon: Daemon) -> None:
    producer = connect(daemon)
    waiters = [connect(daemon) for _ in range(6)]
    for k, waiter in enumerate(waiters, 1):
        _block(waiter, producer, k)
    order = []
    for n in range(len(waiters)):
        assert producer.one(b"put 0 0 100 1\r\n%d\r\n" % n).startswith(b"INSERTED")
        ready, _, _ = select.select([w.sock for w in waiters], [], [], 2.0)
        assert len(ready) == 1, "exactly one waiter gets each job"
        index = [w.sock for w in waiters].index(ready[0])
        assert waiters[index].read_item(1.0).startswith(b"RESERVED")
        order.append(index)
    if is_py(daemon):
        assert order == list(range(6))
    elif order == list(range(6)):
        pytest.skip("the reference happened to serve its waiters in FIFO order this time")


# ----------------------------------------------------------------- difference 4


def test_stats_host_fields_quoted(daemon: Daemon) -> None:
    w = connect(daemon)
    fields = yaml_fields(w.one(b"stats\r\n"))
    uname = os.uname()
    expected = {"hostname": uname.nodename, "os": uname.version, "platform": uname.machine}
    for key, value in expected.items():
        if is_py(daemon):
            assert fields[key] == '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            assert fields[key] == value
    # Tube names stay unquoted in both (only 1.13 quotes them).
    assert w.one(b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
    assert yaml_fields(w.one(b"stats-job 1\r\n"))["tube"] == "default"
    assert yaml_fields(w.one(b"stats-tube default\r\n"))["name"] == "default"
    assert fields["version"] == '"1.12"'


# ----------------------------------------------------------------- difference 5


def _hold_until_expired(daemon: Daemon, observer: Wire, first_id: int, count: int,
                        workers: list) -> list:
    """``count`` idle workers each reserve a ttr-1 job; returns the jobs not released.

    Released jobs are deleted and the workers stay connected (in ``workers``),
    so a later round reserves only its own jobs.
    """
    new = [connect(daemon) for _ in range(count)]
    workers += new
    for n, worker in enumerate(new, first_id):
        assert observer.one(b"put 0 0 1 1\r\nx\r\n") == b"INSERTED %d\r\n" % n
        assert worker.one(b"reserve\r\n") == b"RESERVED %d 1\r\nx\r\n" % n
        time.sleep(0.003)  # spread the deadlines over different timer ticks
    time.sleep(1.4)
    lost = []
    for n in range(first_id, first_id + count):
        fields = yaml_fields(observer.one(b"stats-job %d\r\n" % n))
        if fields["state"] != "ready":
            lost.append((n, fields["state"], fields["time-left"]))
        else:
            assert fields["timeouts"] == "1"
            assert observer.one(b"delete %d\r\n" % n) == b"DELETED\r\n"
    return lost


def test_ttr_expiry_always_happens(daemon: Daemon) -> None:
    """Twenty idle workers each hold a ttr-1 job; every job must come back.

    The reference loses some 10-30% of such expiries; it gets up to three
    rounds of twenty to show it (all three without a loss: about 1 in 10^6).
    """
    observer = connect(daemon)
    workers: list = []
    if is_py(daemon):
        assert _hold_until_expired(daemon, observer, 1, 20, workers) == []
        assert yaml_fields(observer.one(b"stats\r\n"))["job-timeouts"] == "20"
        return
    for round_ in range(3):
        lost = _hold_until_expired(daemon, observer, 1 + 20 * round_, 20, workers)
        if lost:
            break
    else:
        pytest.skip("the reference expired every TTR in three rounds (its bug hits ~10-30% of expiries)")
    # The lost jobs stay reserved past their deadline (spec section 0 item 6);
    # time-left is truncated toward zero, so it shows 0 for the first second.
    assert all(state == "reserved" and int(left) <= 0 for _, state, left in lost), lost


# ----------------------------------------------------------------- difference 6


def test_command_just_after_a_ttr_sees_it_expired() -> None:
    """pheanstalk's testNoDeadlineSoonDuringDeleteJob, timed: one connection
    holds a ttr-1 job and polls it every 100 ms between other commands.

    beanstalk-py only: beanstalkd answers the first poll after the deadline
    with ``reserved`` in about one run of three here (its timers run before it
    waits), too rarely for a test that must not skip in CI.
    """
    daemon = start_beanstalk_py()
    try:
        wire = Wire(daemon.connect())
        assert wire.one(b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
        for n in range(2, 22):
            assert wire.one(b"put 10 0 60 1\r\ny\r\n") == b"INSERTED %d\r\n" % n
        assert wire.one(b"reserve-job 1\r\n") == b"RESERVED 1 1\r\nx\r\n"
        # The server read its clock before answering: its deadline is at most 1 s from here.
        start = time.monotonic()
        stale_after_deadline = []
        for n in range(2, 22):
            sent_at = time.monotonic() - start  # when the command left, not when it was answered
            state = yaml_fields(wire.one(b"stats-job 1\r\n"))["state"]
            if state != "reserved":
                break
            if sent_at > 1.001:
                stale_after_deadline.append(round(sent_at, 4))
            assert wire.one(b"delete %d\r\n" % n) == b"DELETED\r\n"
            time.sleep(0.1)
        assert state == "ready"
        assert stale_after_deadline == []
    finally:
        daemon.stop()
