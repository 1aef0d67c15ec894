"""`admin export/import --store` and `admin migrate` between a binlog
directory and a Redis store: a queue goes from a `-b` daemon into a store, is
served by a front end, goes back into a fresh `-b` directory and is served
there, with the same ids, states, priorities, time left and serving order
(ready by (pri, id), buried in bury order, delayed by deadline).

The redis-server is tests/redis_rig.py's (a free port, stopped by pid;
skipped with the reason where it is not installed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import greenstalk
import pytest

from conftest import Daemon, start_beanstalk_py
from redis_rig import RedisServer, redis_server  # noqa: F401  (fixture)
from setup_conn import Conn

if TYPE_CHECKING:
    from beanstalk_py.redisstore.resp import BlockingRedis

pytestmark = pytest.mark.daemon

# The admin command, then its peak resident memory since exec (VmHWM, KiB:
# ru_maxrss would include the forking test process's, kept across execve).
_MAXRSS = ("import sys\n"
           "from beanstalk_py.admin import main\n"
           "code = main(sys.argv[1:])\n"
           "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
           "sys.stderr.write('maxrss %s\\n' % hwm)\n"
           "sys.exit(code)\n")


def admin(*args: str, stdin: bytes = b"", maxrss: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", _MAXRSS] if maxrss else [sys.executable, "-m", "beanstalk_py", "admin"]
    return subprocess.run([*argv, *args], input=stdin, capture_output=True, timeout=120)


def redis(server: RedisServer) -> "BlockingRedis":
    from beanstalk_py.redisstore.resp import BlockingRedis

    return BlockingRedis("127.0.0.1", server.port)


@pytest.fixture
def store_url(redis_server: RedisServer) -> str:  # noqa: F811
    """The module's redis-server, emptied for this test."""
    client = redis(redis_server)
    try:
        client.execute("FLUSHALL")
    finally:
        client.close()
    return redis_server.url


def store_keys(server: RedisServer) -> list[bytes]:
    client = redis(server)
    try:
        keys = client.execute("KEYS", "*")
        assert isinstance(keys, list)
        return sorted(keys)
    finally:
        client.close()


def client(daemon: Daemon, use: str = "default", watch: str = "default") -> greenstalk.Client[bytes]:
    return greenstalk.Client((daemon.host, daemon.port), encoding=None, use=use, watch=watch)


# ---------------------------------------------------------------------- the queue


TUBES = ("mail", "bin")


def fill(daemon: Daemon) -> Conn:
    """mail: 1 (pri 10), 2 (pri 5), 3 (pri 10) ready; 4 delayed 100 s, 5
    delayed 50 s; 7 buried, then 6 (bury order 7, 6); 8 reserved by the
    returned connection (ready after a restart); bin: 9 ready, a body that is
    not UTF-8; 10 and 11 put and deleted (the next id is 12)."""
    c = Conn(daemon)
    c.ask(b"use mail\r\n", b"USING mail\r\n")
    for n, (pri, delay, body) in enumerate([(10, 0, b"a"), (5, 0, b"b"), (10, 0, b"c\r\nc"), (20, 100, b"d"),
                                            (20, 50, b"e"), (7, 0, b"f"), (8, 0, b"g"), (9, 0, b"h")], 1):
        c.ask(b"put %d %d 60 %d\r\n%s\r\n" % (pri, delay, len(body), body), b"INSERTED %d\r\n" % n)
    c.ask(b"reserve-job 7\r\n", b"RESERVED 7 1\r\ng\r\n")
    c.ask(b"bury 7 8\r\n", b"BURIED\r\n")
    c.ask(b"reserve-job 6\r\n", b"RESERVED 6 1\r\nf\r\n")
    c.ask(b"bury 6 70\r\n", b"BURIED\r\n")
    c.ask(b"use bin\r\n", b"USING bin\r\n")
    c.ask(b"put 0 0 120 4\r\n\x00\xff\xfe\r\r\n", b"INSERTED 9\r\n")
    for n in (10, 11):
        c.ask(b"put 1 0 60 1\r\nx\r\n", b"INSERTED %d\r\n" % n)
        c.ask(b"delete %d\r\n" % n, b"DELETED\r\n")
    c.ask(b"reserve-job 8\r\n", b"RESERVED 8 1\r\nh\r\n")
    return c


# id -> (tube, state, pri, ttr, body) once a restart gave job 8 back
EXPECTED = {
    1: ("mail", "ready", 10, 60, b"a"), 2: ("mail", "ready", 5, 60, b"b"),
    3: ("mail", "ready", 10, 60, b"c\r\nc"), 4: ("mail", "delayed", 20, 60, b"d"),
    5: ("mail", "delayed", 20, 60, b"e"), 6: ("mail", "buried", 70, 60, b"f"),
    7: ("mail", "buried", 8, 60, b"g"), 8: ("mail", "ready", 9, 60, b"h"),
    9: ("bin", "ready", 0, 120, b"\x00\xff\xfe\r"),
}
DELAYS = {4: 100, 5: 50}
# What the tube serves: ready by (pri, id), then (kicked one at a time) buried
# in bury order, then delayed by deadline.
ORDER = {"mail": [2, 8, 1, 3, 7, 6, 5, 4], "bin": [9]}
NEXT_ID = 12


def check_jobs(daemon: Daemon, slack: int) -> None:
    """Every job as EXPECTED (time left within ``slack`` seconds of the
    original delay), the heads of the queues, and the next id."""
    c = client(daemon)
    try:
        for job_id, (tube, state, pri, ttr, body) in EXPECTED.items():
            stats = c.stats_job(job_id)
            assert (stats["tube"], stats["state"], stats["pri"], stats["ttr"]) == (tube, state, pri, ttr), job_id
            assert c.peek(job_id).body == body
            if job_id in DELAYS:
                assert DELAYS[job_id] - slack <= stats["time-left"] <= DELAYS[job_id], (job_id, stats)
        with pytest.raises(greenstalk.NotFoundError):
            c.peek(10)
        c.use("mail")
        assert c.peek_ready().id == 2
        assert c.peek_buried().id == 7  # buried first, though its id is larger
        assert c.peek_delayed().id == 5
        for tube, ready, buried, delayed in (("mail", 4, 2, 2), ("bin", 1, 0, 0)):
            counts = c.stats_tube(tube)
            assert (counts["current-jobs-ready"], counts["current-jobs-buried"], counts["current-jobs-delayed"],
                    counts["current-jobs-reserved"]) == (ready, buried, delayed, 0), tube
    finally:
        c.close()


def serving_order(daemon: Daemon, tube: str) -> list[int]:
    """Takes the tube's jobs as workers would: every ready one, then kicks
    one at a time (buried first, then delayed); deletes them.  Destructive."""
    c = client(daemon, watch=tube, use=tube)
    order: list[int] = []
    try:
        while True:
            try:
                job = c.reserve(timeout=0)
            except greenstalk.TimedOutError:
                if c.kick(1) == 0:
                    return order
                continue
            order.append(job.id)
            c.delete(job)
    finally:
        c.close()


def put_gets(daemon: Daemon, job_id: int) -> None:
    c = client(daemon, use="mail")
    try:
        assert c.put(b"new", priority=2**31) == job_id
        c.delete(job_id)
    finally:
        c.close()


# ---------------------------------------------------------------------- round trip


def test_binlog_to_store_to_binlog(store_url: str, redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    source = start_beanstalk_py("-b", str(first))
    try:
        holder = fill(source)
        # A daemon still running on the directory: refused, nothing written.
        refused = admin("migrate", "--from-binlog", str(first), "--to-store", store_url)
        assert refused.returncode == 2 and b"is in use: a daemon holds" in refused.stderr, refused.stderr
        assert store_keys(redis_server) == []
        holder.close()
    finally:
        source.stop()

    result = admin("migrate", "--from-binlog", str(first), "--to-store", store_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(
        f"imported 9 jobs (5 ready, 2 delayed, 2 buried) from {first} into {store_url}\n")
    # A second run finds the jobs there.
    again = admin("migrate", "--from-binlog", str(first), "--to-store", store_url)
    assert again.returncode == 4 and b"the store holds 9 jobs; nothing was imported" in again.stderr

    # The store as a file: by id, bury order stated.
    exported = admin("export", "--store", store_url, "-")
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == f"exported 9 jobs (5 ready, 2 delayed, 2 buried) from {store_url}\n".encode()
    lines = [json.loads(line) for line in exported.stdout.decode().splitlines()]
    assert [line["id"] for line in lines] == list(range(1, 10))
    assert lines[5]["bury_seq"] > lines[6]["bury_seq"]  # 7 was buried before 6
    assert lines[8] == {"id": 9, "tube": "bin", "state": "ready", "pri": 0, "delay": 0, "ttr": 120,
                        "body": "AP/+DQ==", "body_b64": True}

    front = start_beanstalk_py("--store", store_url)
    try:
        check_jobs(front, slack=3)
        put_gets(front, NEXT_ID)  # no id of the binlog is used again, not even a deleted one's
        c = client(front)
        c.pause_tube("bin", 300)
        c.close()
    finally:
        front.stop()

    result = admin("migrate", "--from-store", store_url, "--to-binlog", str(second))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"migrated 9 jobs (5 ready, 2 delayed, 2 buried) from {store_url} into {second}; "
                             f"beanstalk-py -b {second} serves them, its next id above {NEXT_ID}\n").encode()
    assert b"1 paused tubes start unpaused: a binlog keeps no pauses (bin)" in result.stderr
    # Into a directory that has binlog files: refused.
    refused = admin("migrate", "--from-store", store_url, "--to-binlog", str(second))
    assert refused.returncode == 2 and b"holds binlog files already" in refused.stderr

    served = start_beanstalk_py("-b", str(second))
    try:
        check_jobs(served, slack=5)
        put_gets(served, NEXT_ID + 1)
        for tube, order in ORDER.items():
            assert serving_order(served, tube) == order, tube
    finally:
        served.stop()

    # The store still holds the queue: a front end serves it in the same order.
    front = start_beanstalk_py("--store", store_url)
    try:
        c = client(front)
        c.pause_tube("bin", 0)
        c.close()
        for tube, order in ORDER.items():
            assert serving_order(front, tube) == order, tube
    finally:
        front.stop()


# ---------------------------------------------------------------------- files


HANDWRITTEN = [
    {"id": 5, "tube": "mail", "state": "ready", "pri": 10, "delay": 0, "ttr": 60, "body": "hello"},
    {"id": 7, "tube": "mail", "state": "delayed", "pri": 20, "delay": 100, "ttr": 30, "body": "later"},
    {"id": 9, "tube": "mail", "state": "buried", "pri": 31, "delay": 0, "ttr": 60, "body": "b1", "bury_seq": 5},
    {"id": 3, "tube": "mail", "state": "buried", "pri": 31, "delay": 0, "ttr": 60, "body": "b0", "bury_seq": 9},
    {"id": 4, "tube": "bin", "state": "reserved", "pri": 0, "delay": 0, "ttr": 120, "body": "AP/+DQ==",
     "body_b64": True},
    {"tube": "mail", "pause": 50},
]


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_import_export_refusal_and_merge(store_url: str, redis_server: RedisServer,  # noqa: F811
                                         tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", HANDWRITTEN)
    result = admin("import", "--store", store_url, str(path))
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    assert result.stdout == (f"imported 5 jobs (2 ready, 1 delayed, 2 buried) from {path} into {store_url}\n"
                             ).encode()
    exported = admin("export", "--store", store_url, str(tmp_path / "out.jsonl"))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines[:5]] == [3, 4, 5, 7, 9]
    assert lines[1]["state"] == "ready"  # reserved in the file: a reservation does not move
    assert 99 <= lines[3].pop("delay") <= 100 and lines[3]["state"] == "delayed"
    assert lines[5]["tube"] == "mail" and 49 <= lines[5]["pause"] <= 50 and len(lines) == 6
    assert lines[0]["bury_seq"] > lines[4]["bury_seq"]  # 9 was buried before 3

    # The store holds jobs: refused, nothing written; --merge skips the ids it has.
    keys = store_keys(redis_server)
    refused = admin("import", "--store", store_url, str(path))
    assert (refused.returncode, refused.stdout) == (4, b"")
    assert refused.stderr == (f"beanstalk-py admin: {store_url}: the store holds 5 jobs; nothing was imported "
                              "(give --merge to add to them)\n").encode()
    assert store_keys(redis_server) == keys
    merged = admin("import", "--store", store_url, "--merge", "-", stdin=path.read_bytes())
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.endswith(b"; 5 skipped: their ids were in the store already\n")
    assert b"imported 0 jobs" in merged.stdout
    fresh = admin("import", "--store", store_url, "--merge", "--new-ids", str(path))
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith(b"imported 5 jobs (2 ready, 1 delayed, 2 buried)")

    front = start_beanstalk_py("--store", store_url)
    try:
        c = client(front, use="mail", watch="mail")
        assert c.stats_tube("mail")["pause-time-left"] >= 45
        assert c.peek_buried().id == 9
        ids = [c.put(b"x"), c.put(b"y")]
        assert ids == [15, 16]  # 10..14 went to the --new-ids copies
        assert c.peek(10).body == b"hello"  # the copies are in file order
        assert c.stats_job(14)["tube"] == "bin"
    finally:
        front.stop()


def test_bad_input_writes_nothing(store_url: str, redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    good = [{"id": n, "body": "ok"} for n in range(1, 3001)]  # more than one chunk before the bad line
    path = tmp_path / "bad.jsonl"
    for bad, message in (
        ("not json", "bad.jsonl:3001: not a JSON line"),
        ('{"id": 0, "body": "a"}', "bad.jsonl:3001: 'id' must be an integer from 1 to"),
        ('{"id": "7", "body": "a"}', "bad.jsonl:3001: 'id' must be an integer"),
        ('{"state": "buried", "bury_seq": -1, "body": "a"}', "bad.jsonl:3001: 'bury_seq' must be an integer"),
        ('{"tube": "no space", "body": "a"}', "bad.jsonl:3001: invalid tube name"),
        ('{"tube": "t", "pause": -5}', "bad.jsonl:3001: 'pause' must be an integer"),
        ('{"ttr": 1.5, "body": "a"}', "bad.jsonl:3001: 'ttr' must be an integer"),
    ):
        path.write_text("".join(json.dumps(line) + "\n" for line in good) + bad + "\n")
        result = admin("import", "--store", store_url, str(path))
        assert (result.returncode, result.stdout) == (2, b""), bad
        assert message in result.stderr.decode(), (bad, result.stderr)
        assert store_keys(redis_server) == [], bad
    for args, code, message in (
        (("import", "--store", "http://127.0.0.1:1/0", str(path)), 2, "--store needs redis://"),
        (("import", "--merge", str(path)), 2, "--merge and --new-ids go with --store"),
        (("export", "--store", store_url, "--binlog", str(tmp_path), "-"), 2, "one source"),
        (("migrate", "--from-store", store_url, "--to-store", store_url), 2, "from a binlog to a store or back"),
    ):
        result = admin(*args)
        assert (result.returncode, result.stdout) == (code, b""), args
        assert message in result.stderr.decode(), (args, result.stderr)
    write_lines(path, good[:1])
    closed = admin("--timeout", "1", "import", "--store", "redis://127.0.0.1:1/0", str(path))
    assert closed.returncode == 3 and b"redis at redis://127.0.0.1:1/0:" in closed.stderr, closed.stderr


def test_a_large_import_goes_in_chunks_with_bounded_memory(store_url: str,
                                                           redis_server: RedisServer) -> None:  # noqa: F811
    """20,000 jobs of 2 KB (40 MB of JSON) from stdin: 20 chunk calls, and the
    importer's peak memory grows by much less than the input."""
    body = "x" * 2000

    def lines(count: int) -> bytes:
        return "".join(json.dumps({"id": n, "tube": f"t{n % 7}", "pri": n % 3, "body": body}) + "\n"
                       for n in range(1, count + 1)).encode()

    def peak(result: subprocess.CompletedProcess) -> int:
        assert result.returncode == 0, result.stderr
        return int(result.stderr.decode().split("maxrss ")[1])  # KiB

    small = peak(admin("import", "--store", store_url, "-", stdin=lines(100), maxrss=True))
    client = redis(redis_server)
    try:
        client.execute("FLUSHALL")
        client.execute("CONFIG", "RESETSTAT")
        data = lines(20_000)
        result = admin("import", "--store", store_url, "-", stdin=data, maxrss=True)
        big = peak(result)
        print(f"import peak {small} KiB for 100 jobs, {big} KiB for 20,000 ({len(data) >> 10} KiB of input)")
        assert result.stdout.startswith(b"imported 20000 jobs (20000 ready, 0 delayed, 0 buried)")
        info = client.execute("INFO", "commandstats")
        assert isinstance(info, bytes)
        calls = info.decode()
        fcalls = int(calls.split("cmdstat_fcall:calls=")[1].split(",")[0])
        assert 21 <= fcalls <= 30, calls  # begin + 20 chunks of 1000 (+ a load of the library)
        # Bounded, not proportional: holding the 40 MB input (and its parsed
        # jobs) would take several times it; 1,000-job chunks took 5-10 MB
        # (peak RSS moves with the allocator, so the bound leaves room).
        assert big - small < len(data) // 1024 // 2, (small, big, len(data))
        assert client.execute("GET", "{bs}:id") == b"20000"
    finally:
        client.close()
    exported = admin("export", "--store", store_url, "-", maxrss=True)
    # Runs of 16 MB are spilled: the 41 MB of lines held whole, and sorted, would take more than that.
    assert peak(exported) - small < len(data) // 1024 * 3 // 4, (small, peak(exported))
    assert exported.stdout.count(b"\n") == 20_000
    assert [json.loads(line)["id"] for line in exported.stdout.splitlines()[:3]] == [1, 2, 3]


def test_export_order_and_repeats_across_spilled_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """by_id: runs of SORT_RUN lines spilled and merged; a job read twice
    (SCAN after a rehash) comes out once, as its last read."""
    from beanstalk_py.admin import storexfer

    monkeypatch.setattr(storexfer, "SORT_RUN", 3)
    monkeypatch.setattr(storexfer, "MAX_RUNS", 2)  # and the runs merged into one as they pile up
    entries = [(5, "ready", "a5"), (2, "buried", "b2"), (9, "ready", "c9"), (2, "ready", "d2"),
               (1, "delayed", "e1"), (12, "ready", "f12"), (5, "buried", "g5"), (3, "ready", "h3")]
    assert list(storexfer.by_id(iter(entries))) == [
        ("delayed", "e1"), ("ready", "d2"), ("ready", "h3"), ("buried", "g5"), ("ready", "c9"), ("ready", "f12")]
    assert list(storexfer.by_id(iter([]))) == []


def test_empty_store_both_ways(store_url: str, tmp_path: Path) -> None:
    exported = admin("export", "--store", store_url, "-")
    assert (exported.returncode, exported.stdout) == (0, b"")
    result = admin("migrate", "--from-store", store_url, "--to-binlog", str(tmp_path / "new"))
    assert result.returncode == 0, result.stderr
    served = start_beanstalk_py("-b", str(tmp_path / "new"))
    try:
        assert client(served).stats()["current-jobs-ready"] == 0
    finally:
        served.stop()
    (tmp_path / "empty").mkdir()
    result = admin("migrate", "--from-binlog", str(tmp_path / "empty"), "--to-store", store_url)
    assert result.returncode == 0 and result.stdout.startswith(b"imported 0 jobs"), result.stderr


def test_export_while_a_front_end_serves(store_url: str) -> None:
    """Puts and deletes go on through a front end while exports run: every
    long-lived job is in each export, once (SCAN's guarantee, repeats
    dropped); churn jobs may show or not, never twice."""
    front = start_beanstalk_py("--store", store_url)
    stop = threading.Event()
    try:
        c = client(front, use="keep")
        kept = [c.put(b"k%d" % n, priority=n % 5) for n in range(3000)]
        c.close()

        def churn() -> None:
            w = client(front, use="churn")
            while not stop.is_set():
                for job_id in [w.put(b"c" * 100) for _ in range(50)]:
                    w.delete(job_id)
            w.close()

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            for _ in range(4):
                result = admin("export", "--store", store_url, "-")
                assert result.returncode == 0, result.stderr
                jobs = [json.loads(line) for line in result.stdout.decode().splitlines()]
                ids = [job["id"] for job in jobs]
                assert ids == sorted(set(ids))  # by id, once each
                assert [job["id"] for job in jobs if job["tube"] == "keep"] == kept
        finally:
            stop.set()
            worker.join()
    finally:
        front.stop()
