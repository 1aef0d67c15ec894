"""The Redis Functions library (beanstalk_py/redisstore/functions.lua), called
directly against a real redis-server, including orders of calls a front end
cannot produce (races between front ends made explicit).

Times are passed in microseconds (the library's test clock), so every timer
is exact.  Owners are client sessions ("fe:n"); "fe" names a front end's inbox.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from redis_rig import RedisServer, redis_server  # noqa: F401  (fixture)

from beanstalk_py.redisstore.resp import BlockingRedis, RedisError
from beanstalk_py.redisstore.store import library_source

S = 1_000_000  # one second, in the library's microseconds
T0 = 1_000 * S


class Lib:
    """FCALLs of the library, answered at once."""

    def __init__(self, client: BlockingRedis) -> None:
        self.client = client

    def __call__(self, name: str, now: int, *args: Any) -> Any:
        return self.client.execute("FCALL", "bs_" + name, 1, "{bs}", now, *args)

    def put(self, now: int, tube: str = "default", pri: int = 0, delay: int = 0, ttr: int = 60,
            body: bytes = b"x\r\n") -> int:
        return self("put", now, tube, pri, delay, ttr, body, "")

    def reserve(self, now: int, owner: str, *tubes: str, timeout: int = 0, fe: str = "fe") -> Any:
        return self("reserve", now, owner, fe, timeout, *(tubes or ("default",)))

    def inbox(self, fe: str = "fe") -> list[bytes]:
        return self.client.execute("LPOP", "{bs}:in:" + fe, 100) or []

    def job(self, job_id: int, now: int = T0) -> dict[str, Any]:
        reply = self("stats_job", now, job_id)
        if reply is None:
            return {}
        names = ["id", "tube", "state", "pri", "created", "delay", "ttr", "deadline", "reserves",
                 "timeouts", "releases", "buries", "kicks", "now"]
        out = dict(zip(names, reply))
        out["tube"] = out["tube"].decode()
        out["state"] = out["state"].decode()
        return out

    def counts(self, now: int = T0) -> dict[str, int]:
        reply = self("stats", now)
        out = {reply[i].decode(): int(reply[i + 1]) for i in range(2, len(reply), 2)}
        out["tubes"] = reply[0]  # reply[1] is the epoch
        return out

    def tubes(self, now: int = T0) -> list[str]:
        return [name.decode() for name in self("list_tubes", now)]


@pytest.fixture
def lib(redis_server: RedisServer) -> Iterator[Lib]:  # noqa: F811
    client = BlockingRedis("127.0.0.1", redis_server.port)
    client.execute("FLUSHALL")
    client.execute("FUNCTION", "LOAD", "REPLACE", library_source())
    library = Lib(client)
    library("init", T0)
    try:
        yield library
    finally:
        client.close()


def test_library_loads_and_all_keys_share_one_slot(lib: Lib) -> None:
    lib.put(T0, "a")
    lib.reserve(T0, "fe:1", "a")
    keys = lib.client.execute("KEYS", "*")
    # The hash tag {bs} is what a cluster hashes: every key is in its slot.
    assert keys and all(key.startswith(b"{bs}:") for key in keys)


def test_ids_count_up_and_ready_order_is_pri_then_id_across_tubes(lib: Lib) -> None:
    # Ids 1..12 cross a digit boundary: the padded members keep numeric order.
    ids = [lib.put(T0, "a" if i % 2 else "b", pri=5) for i in range(12)]
    assert ids == list(range(1, 13))
    urgent = lib.put(T0, "b", pri=1)
    got = [lib.reserve(T0, "fe:1", "a", "b")[0] for _ in range(13)]
    assert got == [urgent, *range(1, 13)]
    assert lib.reserve(T0, "fe:1", "a", "b") == b"TIMED_OUT"


def test_reserve_returns_the_body_and_a_ttr_deadline(lib: Lib) -> None:
    job_id = lib.put(T0, ttr=0, body=b"hello\r\n")  # ttr 0 counts as 1, as in 1.12
    assert lib.reserve(T0, "fe:1") == [job_id, b"hello\r\n"]
    job = lib.job(job_id)
    assert (job["state"], job["ttr"], job["deadline"], job["reserves"]) == ("reserved", 1, T0 + S, 1)


def test_delay_ends_exactly_at_its_deadline_in_deadline_then_id_order(lib: Lib) -> None:
    late = lib.put(T0, delay=2)
    early = lib.put(T0, delay=1)
    also_early = lib.put(T0, delay=1)
    assert lib("peek_tube", T0, "default", "delayed")[0] == early
    assert lib.reserve(T0 + S - 1, "fe:1") == b"TIMED_OUT"
    assert lib.reserve(T0 + S, "fe:1")[0] == early
    assert lib.reserve(T0 + S, "fe:1")[0] == also_early
    assert lib.job(late, T0 + S)["state"] == "delayed"
    assert lib.counts(T0 + 2 * S)["ready"] == 1


def test_ttr_expiry_gives_the_job_back_and_the_late_owner_loses_it(lib: Lib) -> None:
    job_id = lib.put(T0, ttr=2)
    lib.reserve(T0, "fe:1")
    # A race a single client cannot make: its release arrives after the TTR ran out.
    assert lib("release", T0 + 2 * S, "fe:1", job_id, 0, 0) == 0
    job = lib.job(job_id, T0 + 2 * S)
    assert (job["state"], job["timeouts"], job["releases"]) == ("ready", 1, 0)
    assert lib.counts(T0 + 2 * S)["timeouts"] == 1
    # Another owner now takes it; the first one's delete is refused.
    assert lib.reserve(T0 + 2 * S, "fe:2")[0] == job_id
    assert lib("delete", T0 + 2 * S, "fe:1", job_id) == 0
    assert lib("delete", T0 + 2 * S, "fe:2", job_id) == 1
    assert lib.job(job_id) == {}


def test_touch_moves_the_deadline(lib: Lib) -> None:
    job_id = lib.put(T0, ttr=2)
    lib.reserve(T0, "fe:1")
    assert lib("touch", T0 + S, "fe:1", job_id) == 1
    assert lib("touch", T0 + S, "fe:2", job_id) == 0  # not its job
    assert lib.job(job_id, T0 + 2 * S + S // 2)["state"] == "reserved"
    assert lib.job(job_id, T0 + 3 * S)["state"] == "ready"


def test_bury_order_and_kick_buried_before_delayed(lib: Lib) -> None:
    a, b, c = lib.put(T0), lib.put(T0), lib.put(T0)
    delayed = lib.put(T0, delay=100)
    for job_id in (a, b, c):
        assert lib.reserve(T0, "fe:1")[0] == job_id
    # Buried in the order c, a, b: kicked in that order, whatever the ids.
    for job_id in (c, a, b):
        assert lib("bury", T0, "fe:1", job_id, 7) == 1
    assert lib("peek_tube", T0, "default", "buried")[0] == c
    assert lib("kick", T0, "default", 2) == 2
    assert lib.job(c)["state"] == lib.job(a)["state"] == "ready"
    assert lib.job(b)["state"] == "buried"
    assert lib.job(c)["pri"] == 7 and lib.job(c)["kicks"] == 1
    assert lib("kick", T0, "default", 10) == 1  # only the buried one, not the delayed
    assert lib("kick", T0, "default", 10) == 1  # now the delayed one
    assert lib.job(delayed)["state"] == "ready"
    assert lib("kick", T0, "nosuch", 10) == 0


def test_kick_job_only_of_buried_or_delayed(lib: Lib) -> None:
    ready, delayed = lib.put(T0), lib.put(T0, delay=5)
    assert lib("kick_job", T0, ready) == 0
    assert lib("kick_job", T0, delayed) == 1
    assert lib("kick_job", T0, 999) == 0
    assert lib.counts()["delayed"] == 0 and lib.counts()["ready"] == 2


def test_pause_hides_a_tube_until_it_ends(lib: Lib) -> None:
    lib.put(T0, "a", pri=9)
    paused_job = lib.put(T0, "b", pri=1)
    assert lib("pause", T0, "b", 2) == 1
    assert lib("pause", T0, "nosuch", 2) == 0
    assert lib.reserve(T0, "fe:1", "b") == b"TIMED_OUT"
    first = lib.reserve(T0, "fe:1", "a", "b")[0]
    assert first != paused_job
    assert lib.reserve(T0 + 2 * S, "fe:1", "a", "b")[0] == paused_job


def test_oldest_waiter_first_across_front_ends_and_best_job_across_its_tubes(lib: Lib) -> None:
    assert lib.reserve(T0, "A:1", "a", timeout=-1, fe="A") == b"WAIT"
    assert lib.reserve(T0, "B:1", "a", "b", timeout=-1, fe="B") == b"WAIT"
    assert lib.reserve(T0, "C:1", "b", timeout=-1, fe="C") == b"WAIT"
    j1 = lib.put(T0, "b", pri=3, body=b"one\r\n")  # B:1 waited before C:1
    assert lib.inbox("B") == [b"B:1 job %d one\r\n" % j1]
    j2 = lib.put(T0, "a", body=b"two\r\n")
    assert lib.inbox("A") == [b"A:1 job %d two\r\n" % j2]
    assert lib.inbox("C") == []
    assert lib.job(j1)["state"] == "reserved"
    # A reserve over two tubes takes the best (pri, id) across them.
    assert lib("unwait", T0, "C:1") == 1
    lib.put(T0, "a", pri=5)
    best = lib.put(T0, "b", pri=4)
    assert lib.reserve(T0, "D:1", "a", "b", fe="D")[0] == best


def test_unwait_after_the_job_was_handed_over(lib: Lib) -> None:
    """The client hangs up while a put on another front end already gave it a
    job: unwait says so (0) and the job is in the inbox (then close gives it back)."""
    lib.reserve(T0, "A:1", timeout=-1, fe="A")
    job_id = lib.put(T0)
    assert lib("unwait", T0, "A:1") == 0
    assert lib.inbox("A") == [b"A:1 job %d x\r\n" % job_id]
    lib("close", T0, "A:1", "default", "default")
    assert lib.job(job_id)["state"] == "ready"
    lib("delete", T0, "", job_id)
    assert lib.reserve(T0, "A:2", timeout=-1, fe="A") == b"WAIT"
    assert lib("unwait", T0, "A:2") == 1
    assert lib("unwait", T0, "A:2") == 0


def test_waiter_timeout_and_deadline_soon(lib: Lib) -> None:
    lib.reserve(T0, "A:1", timeout=3, fe="A")
    lib("tick", T0 + 3 * S - 1)
    assert lib.inbox("A") == []
    lib("tick", T0 + 3 * S)
    assert lib.inbox("A") == [b"A:1 TIMED_OUT"]
    # A waiter holding a job hears DEADLINE_SOON a second before its TTR.
    held = lib.put(T0, ttr=5)
    lib.reserve(T0, "A:1", fe="A")
    assert lib.reserve(T0, "A:1", timeout=-1, fe="A") == b"WAIT"
    lib("tick", T0 + 4 * S - 1)
    assert lib.inbox("A") == []
    lib("tick", T0 + 4 * S)
    assert lib.inbox("A") == [b"A:1 DEADLINE_SOON"]
    # Inside the margin, with nothing ready, reserve answers at once.
    assert lib.reserve(T0 + 4 * S, "A:1", timeout=-1) == b"DEADLINE_SOON"
    assert lib.job(held, T0 + 4 * S)["state"] == "reserved"


def test_close_gives_jobs_back_in_reserve_order_to_waiters(lib: Lib) -> None:
    low, high = lib.put(T0, pri=5), lib.put(T0, pri=1)
    assert lib.reserve(T0, "A:1")[0] == high
    assert lib.reserve(T0, "A:1")[0] == low
    lib("touch", T0 + S, "A:1", high)  # deadline order is now low, high: not what counts
    lib.reserve(T0, "B:1", timeout=-1, fe="B")
    lib.reserve(T0, "B:2", timeout=-1, fe="B")
    lib("close", T0 + S, "A:1", "default", "default")
    # high came back first and went to the oldest waiter.
    assert lib.inbox("B") == [b"B:1 job %d x\r\n" % high, b"B:2 job %d x\r\n" % low]


def test_a_taken_id_is_used_by_the_put_that_follows(lib: Lib) -> None:
    assert lib("take_id", T0, "fe:1") == 1  # header read, body not yet
    assert lib.put(T0) == 2  # another client's put meanwhile
    assert lib("put", T0, "default", 0, 0, 60, b"late\r\n", "fe:1") == 1
    assert lib("take_id", T0, "") == 3  # a put whose body was bad: the id is gone
    assert lib.put(T0) == 4


def test_tubes_are_freed_and_the_list_keeps_swap_remove_order(lib: Lib) -> None:
    lib("ref", T0, "fe", "a", "watching", 1, "b", "using", 1, "c", "watching", 1)
    assert lib.tubes() == ["default", "a", "b", "c"]
    lib("ref", T0, "fe", "a", "watching", -1)
    assert lib.tubes() == ["default", "c", "b"]  # the last moved into a's place
    job_id = lib.put(T0, "b")
    lib("ref", T0, "fe", "b", "using", -1)
    assert "b" in lib.tubes()  # it still holds a job
    lib("delete", T0, "", job_id)
    assert lib.tubes() == ["default", "c"]
    assert lib("stats_tube", T0, "b") is None


def test_stats_tube_counts(lib: Lib) -> None:
    lib("ref", T0, "fe", "a", "using", 1, "a", "watching", 2)
    lib.put(T0, "a", pri=1)
    lib.put(T0, "a", pri=2000, delay=3)
    lib("pause", T0, "a", 10)
    lib.reserve(T0, "A:1", "a", timeout=-1, fe="A")
    reply = lib("stats_tube", T0 + S, "a")
    assert reply == [1, 1, 0, 1, 0, 2, 1, 2, 1, 0, 1, 10 * S, T0 + 10 * S, T0 + S]


def test_counters_and_command_counts(lib: Lib) -> None:
    lib.put(T0, pri=1)
    lib.put(T0, delay=1)
    lib("count", T0, "cmd-put", 2)
    counts = lib.counts()
    assert counts["total"] == 2 and counts["urgent"] == 1 and counts["delayed"] == 1
    assert counts["cmd-put"] == 2 and counts["tubes"] == 1


def test_due_timers_run_at_most_a_bounded_number_per_call(lib: Lib) -> None:
    pipe = lib.client.pipe
    for _ in range(1500):
        pipe.call(("FCALL", "bs_put", 1, "{bs}", T0, "default", 0, 1, 60, b"x\r\n", ""))
    lib.client.flush()
    assert lib.counts(T0 + S)["ready"] == 1000  # the first call ran 1000 timers
    assert lib.counts(T0 + S)["ready"] == 1500  # the next ran the rest


def test_wrong_arguments_are_an_error_not_a_partial_change(lib: Lib) -> None:
    with pytest.raises(RedisError):
        lib("put", T0, "default", "x", 0, 60, b"a\r\n", "")
    assert lib.counts().get("total", 0) == 0
    assert lib.client.execute("GET", "{bs}:id") is None


# ---------------------------------------------------------------------- front-end leases

LEASE = 5 * S  # what the daemon asks for (service.LEASE_S)


def lease(lib: Lib, now: int, fe: str, first: bool = False) -> int:
    return lib("lease", now, fe, LEASE, 1 if first else 0)


def test_an_expired_lease_gives_jobs_back_in_reserve_order_and_drops_waiters(lib: Lib) -> None:
    """Front end A stops renewing (killed): the first tick or lease renewal
    after its lease ends, from any front end, reclaims what A's sessions held,
    waited for and used."""
    assert lease(lib, T0, "A", first=True) == 1
    assert lease(lib, T0, "B", first=True) == 1
    # A's sessions use and watch tubes (B's too: only A's counts go).
    lib("ref", T0, "A", "w", "watching", 2, "default", "using", 3, "gone", "using", 1)
    lib("ref", T0, "B", "w", "watching", 1)
    low, high, other = lib.put(T0, pri=5), lib.put(T0, pri=1), lib.put(T0, pri=9)
    assert lib.reserve(T0, "A:1")[0] == high
    assert lib.reserve(T0, "A:2")[0] == low
    assert lib.reserve(T0, "A:1")[0] == other
    lib("touch", T0 + S, "A:1", high)  # deadline order differs: reserve order counts
    assert lib.reserve(T0 + S, "A:3", "w", timeout=-1, fe="A") == b"WAIT"
    assert lib.reserve(T0 + S, "A:4", "w", timeout=60, fe="A") == b"WAIT"
    assert lib.reserve(T0 + S, "B:1", timeout=-1, fe="B") == b"WAIT"
    assert lib.reserve(T0 + S, "B:2", timeout=-1, fe="B") == b"WAIT"

    # Just before the end of A's lease nothing moves (B renewed at T0 + 4 s).
    assert lease(lib, T0 + 4 * S, "B") == 1
    assert lib("tick", T0 + LEASE - 1)
    assert lib.job(high, T0 + LEASE - 1)["state"] == "reserved"
    assert lib.inbox("B") == []

    lib("tick", T0 + LEASE)
    # high came back first, then low (A:2 reserved it second), then other:
    # to B's waiters oldest first, and the third job stays ready.
    assert lib.inbox("B") == [b"B:1 job %d x\r\n" % high, b"B:2 job %d x\r\n" % low]
    job = lib.job(other, T0 + LEASE)
    # A reclaim is neither a timeout nor a release (as a closed connection's jobs).
    assert (job["state"], job["reserves"], job["timeouts"], job["releases"]) == ("ready", 1, 0, 0)
    assert lib.counts(T0 + LEASE)["reserved"] == 2
    # A's waiters are gone: a put to their tube stays ready; their timers too.
    waiting = lib.put(T0 + LEASE, "w")
    assert lib.job(waiting, T0 + LEASE)["state"] == "ready"
    using, watching, waiting = lib("stats_tube", T0 + LEASE, "w")[6:9]
    assert (using, watching, waiting) == (0, 1, 0)
    assert lib("stats_tube", T0 + LEASE, "default")[6] == 0
    assert "gone" not in lib.tubes(T0 + LEASE)  # nothing refers to it any more
    assert lib.client.execute("ZCARD", "{bs}:timers") == 2  # B's two jobs' TTRs only
    assert lib.client.execute("EXISTS", "{bs}:in:A", "{bs}:fr:A", "{bs}:fw:A", "{bs}:tr:A") == 0
    assert lib.client.execute("ZRANGE", "{bs}:fes", 0, -1) == [b"B"]

    # A wakes up (it was paused): its lease is lost and its calls are refused.
    assert lease(lib, T0 + LEASE + S, "A") == 0
    assert lease(lib, T0 + LEASE + S, "A", first=True) == 0
    with pytest.raises(RedisError, match="LEASELOST"):
        lib.reserve(T0 + LEASE + S, "A:1", timeout=-1, fe="A")
    with pytest.raises(RedisError, match="LEASELOST"):
        lib("reserve_job", T0 + LEASE + S, "A:1", other)
    with pytest.raises(RedisError, match="LEASELOST"):
        lib("ref", T0 + LEASE + S, "A", "w", "watching", -1)
    with pytest.raises(RedisError, match="LEASELOST"):
        lib("close", T0 + LEASE + S, "A:1", "default", "default")
    assert lib("release", T0 + LEASE + S, "A:1", other, 0, 0) == 0  # not its job any more


def test_a_renewed_lease_is_never_reclaimed(lib: Lib) -> None:
    assert lease(lib, T0, "A", first=True) == 1
    lib("ref", T0, "A", "default", "using", 2, "default", "watching", 2)  # two sessions open
    job_id = lib.put(T0)
    assert lib.reserve(T0, "A:1")[0] == job_id
    assert lib.reserve(T0, "A:2", timeout=-1, fe="A") == b"WAIT"
    for second in range(1, 20):  # renewed every second, as the service does
        assert lease(lib, T0 + second * S, "A") == 1
    lib("tick", T0 + 20 * S)
    assert lib.job(job_id, T0 + 20 * S)["state"] == "reserved"
    queued = lib.put(T0 + 20 * S)
    assert lib.inbox("A") == [b"A:2 job %d x\r\n" % queued]
    assert lib.client.execute("EXISTS", "{bs}:dead:A") == 0
    # The sessions' own closes still work, and empty the reclaim index.
    lib("close", T0 + 20 * S, "A:1", "default", "default")
    lib("close", T0 + 20 * S, "A:2", "default", "default")
    assert lib.client.execute("EXISTS", "{bs}:fr:A", "{bs}:fw:A", "{bs}:tr:A") == 0


def test_reclaim_is_bounded_per_call(lib: Lib) -> None:
    """250 jobs and 30 waiters of a dead front end: each call reclaims at most
    100 (waiters first), and the jobs still come back in reserve order."""
    assert lease(lib, T0, "A", first=True) == 1
    pipe = lib.client.pipe
    for _ in range(250):
        pipe.call(("FCALL", "bs_put", 1, "{bs}", T0, "default", 0, 0, 600, b"x\r\n", ""))
    for n in range(250):
        pipe.call(("FCALL", "bs_reserve", 1, "{bs}", T0, f"A:{n % 7}", "A", 0, "default"))
    for n in range(30):
        pipe.call(("FCALL", "bs_reserve", 1, "{bs}", T0, f"A:w{n}", "A", -1, "w"))
    lib.client.flush()
    assert lib.counts(T0)["reserved"] == 250
    after = T0 + LEASE
    lib("tick", after)  # 30 waiters + 70 jobs
    assert lib.client.execute("ZCARD", "{bs}:w:w") == 0
    assert lib.client.execute("ZCARD", "{bs}:fr:A") == 250 - 70
    assert lib.counts(after)["ready"] == 70  # commands do not reclaim: ticks and leases do
    lib("tick", after)
    assert lib.counts(after)["ready"] == 70 + 100
    lib("lease", after, "B", LEASE, 1)  # another front end's renewal reclaims too
    assert lib.counts(after)["ready"] == 250
    assert lib("peek_tube", after, "default", "ready")[0] == 1
    assert lib.client.execute("ZRANGE", "{bs}:fes", 0, -1) == [b"B"]  # A is gone
    # Given back in reserve order: ids 1..250 reserved in id order, all pri 0.
    got = [lib.reserve(after, "B:1")[0] for _ in range(250)]
    assert got == list(range(1, 251))
