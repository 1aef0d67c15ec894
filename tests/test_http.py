"""The operations plane over real sockets: every endpoint and error code, /metrics
and the JSON API against `stats` / `stats-tube` after a greenstalk workload,
paging with cursors, and clear / move / kick / pause with dry runs."""

from __future__ import annotations

import signal
import time
from typing import Any, Iterator

import greenstalk
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Daemon
from http_rig import Http, start_with_http

pytestmark = pytest.mark.daemon

TUBE_ACTIONS = ("kick", "clear", "move", "pause")


@pytest.fixture
def plane() -> Iterator[tuple[Daemon, Http]]:
    daemon, http = start_with_http()
    try:
        yield daemon, http
    finally:
        assert daemon.stop() == 0


def client(daemon: Daemon, tube: str = "default") -> greenstalk.Client:
    return greenstalk.Client(daemon.address, use=tube, watch=tube)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _workload(daemon: Daemon) -> tuple[greenstalk.Client, ...]:
    """Jobs in every state in two tubes, a pause, and a worker blocked in a reserve."""
    p, w = client(daemon, "mail"), client(daemon, "mail")
    for i in range(5):
        p.put(f"mail {i}", priority=100 + i)
    p.put("later", delay=300)
    p.put("urgent", priority=5)
    job = w.reserve(timeout=1)
    w.bury(job)
    w.delete(w.reserve(timeout=1))
    held = w.reserve(timeout=1)
    assert held.body.startswith("mail")
    images = client(daemon, "images")
    images.put(b"\x89PNG".decode("latin-1"))
    images.pause_tube("images", 60)
    # All left open: the worker holds its reserved job, and a close would
    # race with the `stats` that follows.
    return p, w, images


def _without_clock(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in ("rusage-utime", "rusage-stime", "uptime")}


def test_health_and_readiness_follow_draining(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    assert http.get("/healthz").json == {"status": "ok"}
    ready = http.get("/readyz")
    assert (ready.status, ready.json) == (200, {"status": "ready"})
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while http.get("/readyz").status != 503:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert http.get("/readyz").json == {"status": "draining"}
    assert http.get("/healthz").status == 200
    assert http.json("/api/v1/stats")["draining"] is True


def test_metrics_and_api_equal_stats_after_a_workload(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    clients = _workload(daemon)
    observer = client(daemon)
    mail, images, default = (observer.stats_tube(t) for t in ("mail", "images", "default"))
    stats = observer.stats()  # last: it counts the stats-tube commands
    # The first scrape (nothing cached yet) and the API, at the same moment as the stats above.
    metrics = http.get("/metrics")
    api_stats = http.json("/api/v1/stats")
    api_tubes = http.json("/api/v1/tubes")
    assert metrics.status == 200 and metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = _samples(metrics.data.decode())

    for state in ("urgent", "ready", "reserved", "delayed", "buried"):
        assert samples[("beanstalkd_current_jobs", (("state", state),))] == stats[f"current-jobs-{state}"]
    for key in [k for k in stats if k.startswith("cmd-")]:
        assert samples[("beanstalkd_commands_total", (("cmd", key[4:]),))] == stats[key], key
    for key, name in (("total-jobs", "beanstalkd_jobs_total"), ("current-tubes", "beanstalkd_current_tubes"),
                      ("current-connections", "beanstalkd_current_connections"),
                      ("current-waiting", "beanstalkd_current_waiting"),
                      ("total-connections", "beanstalkd_connections_total"),
                      ("job-timeouts", "beanstalkd_job_timeouts_total")):
        assert samples[(name, ())] == stats[key], key
    for tube, tube_stats in (("mail", mail), ("images", images), ("default", default)):
        for state in ("urgent", "ready", "reserved", "delayed", "buried"):
            assert samples[("beanstalkd_tube_current_jobs", (("state", state), ("tube", tube)))] == \
                tube_stats[f"current-jobs-{state}"]
        assert samples[("beanstalkd_tube_jobs_total", (("tube", tube),))] == tube_stats["total-jobs"]
        assert samples[("beanstalkd_tube_pause_seconds", (("tube", tube),))] == tube_stats["pause"]
    assert stats["current-jobs-buried"] == 1 and stats["current-jobs-reserved"] == 1 and images["pause"] == 60

    expected = {k: (v == "true" if k == "draining" else v) for k, v in stats.items()}
    assert _without_clock(api_stats) == _without_clock(expected)
    assert isinstance(api_stats["rusage-utime"], float) and isinstance(api_stats["pid"], int)
    by_name = {tube["name"]: tube for tube in api_tubes["tubes"]}
    assert api_tubes["next"] is None and sorted(by_name) == ["default", "images", "mail"]
    for name, tube_stats in (("mail", mail), ("images", images)):
        api_tube = http.json(f"/api/v1/tubes/{name}")
        listed = dict(by_name[name])
        assert abs(listed.pop("oldest-ready-age") - api_tube["oldest-ready-age"]) < 1  # the clock runs
        assert listed == {k: v for k, v in api_tube.items() if k != "oldest-ready-age"}
        for key in ("pause-time-left",):
            assert abs(api_tube.pop(key) - tube_stats.pop(key)) <= 1
        beyond = {key: api_tube.pop(key) for key in ("oldest-ready-age", "rates") if key in api_tube}
        assert api_tube == {k: v for k, v in tube_stats.items() if k != "pause-time-left"}
        assert beyond["oldest-ready-age"] is not None and beyond["oldest-ready-age"] >= 0
        rates = beyond["rates"]  # sampled every 10 s: the first sample is only a baseline
        assert {key: rates[key] for key in ("put", "reserve", "delete")} == {"put": 0, "reserve": 0, "delete": 0}
        assert [len(rates["history"][key]) for key in ("put", "reserve", "delete")] == [60, 60, 60]
    assert clients


def test_reading_moves_no_counter(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    clients = _workload(daemon)
    observer = client(daemon)
    before = observer.stats()
    for path in ("/metrics", "/api/v1/stats", "/api/v1/tubes", "/api/v1/tubes/mail",
                 "/api/v1/tubes/mail/jobs?state=buried", "/api/v1/tubes/mail/jobs?state=reserved",
                 "/api/v1/jobs/2", "/healthz", "/readyz", "/metrics"):
        assert http.get(path).status == 200, path
    after = observer.stats()
    assert after["cmd-stats"] == before["cmd-stats"] + 1  # the second `stats` alone
    changed = {k for k in before if before[k] != after[k]} - {"cmd-stats", "rusage-utime", "rusage-stime", "uptime"}
    assert changed == set()
    assert clients


def test_job_lists_page_with_cursors_across_a_deletion(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p = client(daemon, "pages")
    ids = [p.put(f"job {i}", priority=10 - i % 4) for i in range(10)]
    # Serving order: by priority, then id.
    order = sorted(ids, key=lambda i: (10 - (i - ids[0]) % 4, i))
    first = http.json("/api/v1/tubes/pages/jobs?state=ready&limit=4")
    assert [job["id"] for job in first["jobs"]] == order[:4] and first["next"]
    job = first["jobs"][0]
    assert set(job) == {"id", "pri", "state", "age", "time-left", "size", "preview", "preview_encoding"}
    assert job["state"] == "ready" and job["preview_encoding"] == "text" and job["preview"].startswith("job ")
    # Delete the job the cursor points at and the next one: the next page goes on after them.
    p.delete(order[3])
    p.delete(order[4])
    second = http.json(f"/api/v1/tubes/pages/jobs?state=ready&limit=4&after={first['next']}")
    third = http.json(f"/api/v1/tubes/pages/jobs?state=ready&limit=4&after={second['next']}")
    assert [j["id"] for j in second["jobs"] + third["jobs"]] == order[5:]
    assert third["next"] is None
    assert http.json("/api/v1/tubes/pages/jobs?limit=100")["next"] is None  # ready by default


def test_job_lists_by_state_and_the_page_cap(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p = client(daemon, "states")
    for i in range(520):
        p.put(f"{i}")
    w = client(daemon, "states")
    held = w.reserve(timeout=1)
    w.bury(w.reserve(timeout=1))
    p.put(bytes(range(256)).decode("latin-1"), delay=100)
    page = http.json("/api/v1/tubes/states/jobs?state=ready&limit=100000")
    assert len(page["jobs"]) == 500 and page["next"]
    reserved = http.json("/api/v1/tubes/states/jobs?state=reserved")["jobs"]
    assert [(j["id"], j["state"]) for j in reserved] == [(held.id, "reserved")] and reserved[0]["time-left"] > 0
    assert http.json("/api/v1/tubes/states/jobs?state=buried")["jobs"][0]["state"] == "buried"
    delayed = http.json("/api/v1/tubes/states/jobs?state=delayed")["jobs"][0]
    assert delayed["state"] == "delayed" and 0 < delayed["time-left"] <= 100
    for query in ("state=bogus", "limit=0", "limit=x", "after=garbage!", "limit=-1"):
        reply = http.get(f"/api/v1/tubes/states/jobs?{query}")
        assert reply.status == 400 and "error" in reply.json, query
    assert http.get("/api/v1/tubes/nope/jobs").status == 404


def test_one_job_with_its_body() -> None:
    daemon, http = start_with_http("-z", "200000")
    try:
        p = client(daemon)
        text = p.put("héllo wörld", priority=7, ttr=30)
        with daemon.connect() as sock:
            sock.sendall(b"put 1 0 60 3\r\n\xff\x00\x80\r\n")
            binary = int(sock.recv(100).split()[1])
        big = p.put("x" * 100000)
        job = http.json(f"/api/v1/jobs/{text}")
        assert job["id"] == text and job["tube"] == "default" and job["state"] == "ready"
        assert (job["pri"], job["ttr"], job["body"], job["encoding"], job["size"], job["truncated"]) == \
            (7, 30, "héllo wörld", "text", len("héllo wörld".encode()), False)
        assert set(client(daemon).stats_job(text)) <= set(job)
        assert http.json(f"/api/v1/jobs/{binary}")["encoding"] == "base64"
        assert http.json(f"/api/v1/jobs/{binary}")["body"] == "/wCA"
        preview = http.json("/api/v1/tubes/default/jobs")["jobs"]
        assert [j["preview_encoding"] for j in preview] == ["hex", "text", "text"]  # by priority
        assert preview[0]["preview"] == "ff0080" and len(preview[2]["preview"]) == 200
        capped = http.json(f"/api/v1/jobs/{big}")
        assert capped["truncated"] and capped["size"] == 100000 and len(capped["body"]) == 65536
        assert http.get("/api/v1/jobs/999").status == 404
        assert http.get("/api/v1/jobs/abc").status == 400
    finally:
        assert daemon.stop() == 0


def test_tube_writes_with_dry_runs(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p, w = client(daemon, "t"), client(daemon, "t")
    for i in range(8):
        p.put(f"{i}")
    for _ in range(5):
        w.bury(w.reserve(timeout=1))
    p.put("d", delay=500)
    stats = lambda tube: client(daemon).stats_tube(tube)  # noqa: E731

    def post(path: str, body: dict) -> Any:
        reply = http.post(path, body)
        assert reply.status == 200, (path, body, reply)
        return reply.json

    assert post("/api/v1/tubes/t/clear", {"state": "buried", "all": True, "dry_run": True}) == \
        {"dry_run": True, "count": 5}
    assert post("/api/v1/tubes/t/clear", {"state": "ready", "count": 100, "dry_run": True})["count"] == 3
    assert stats("t")["current-jobs-buried"] == 5 and stats("t")["current-jobs-ready"] == 3
    assert post("/api/v1/tubes/t/clear", {"state": "buried", "count": 2}) == {"count": 2}
    assert post("/api/v1/tubes/t/move", {"state": "buried", "all": True, "to": "t2", "dry_run": True})["count"] == 3
    assert stats("t")["current-jobs-buried"] == 3
    assert post("/api/v1/tubes/t/move", {"state": "buried", "all": True, "to": "t2"}) == {"count": 3}
    assert stats("t")["current-jobs-buried"] == 0 and stats("t2")["current-jobs-buried"] == 3
    assert post("/api/v1/tubes/t2/kick", {"count": 2, "dry_run": True}) == {"dry_run": True, "count": 2}
    assert post("/api/v1/tubes/t2/kick", {"count": 2}) == {"count": 2}
    assert stats("t2")["current-jobs-ready"] == 2 and stats("t2")["current-jobs-buried"] == 1
    assert post("/api/v1/tubes/t/kick", {"state": "delayed", "all": True}) == {"count": 1}
    assert post("/api/v1/tubes/t/pause", {"delay": 100, "dry_run": True})["dry_run"] is True
    assert stats("t")["pause"] == 0
    assert post("/api/v1/tubes/t/pause", {"delay": 100}) == {"count": 0, "delay": 100}
    assert stats("t")["pause"] == 100
    assert post("/api/v1/tubes/t/pause", {"delay": 0}) == {"count": 0, "delay": 0}
    # A worker blocked on t2 gets a job kicked to it (waiters are served at once).
    waiter = client(daemon, "t2")
    for _ in range(2):
        waiter.delete(waiter.reserve(timeout=1))
    with daemon.connect() as sock:
        sock.sendall(b"watch t2\r\nignore default\r\nreserve-with-timeout 10\r\n")
        time.sleep(0.2)
        assert post("/api/v1/tubes/t2/kick", {"all": True}) == {"count": 1}
        reply = b""
        while b"RESERVED" not in reply:
            reply += sock.recv(100)
    assert post("/api/v1/tubes/t/clear", {"state": "ready", "all": True}) == {"count": 4}
    daemon.stop()
    assert daemon.proc is not None
    log = daemon.proc.stderr.read().decode()
    assert "http: loopback (operator): clear tube t buried: 2 jobs" in log
    assert "http: loopback (operator): move tube t buried to t2: 3 jobs" in log
    assert "pause tube t for 100 s" in log
    assert "dry" not in log  # dry runs change nothing and are not logged


def test_job_writes(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p, w = client(daemon), client(daemon)
    a, b, c = p.put("a"), p.put("b", delay=100), p.put("c")
    held = w.reserve(timeout=1)
    assert held.id == a
    assert http.post(f"/api/v1/jobs/{b}/kick", {"dry_run": True}).json == {"dry_run": True, "count": 1}
    assert client(daemon).stats_job(b)["state"] == "delayed"
    assert http.post(f"/api/v1/jobs/{b}/kick").json == {"count": 1}
    assert client(daemon).stats_job(b)["state"] == "ready"
    conflict = http.post(f"/api/v1/jobs/{b}/kick")
    assert conflict.status == 409 and "ready" in conflict.json["error"]
    refused = http.post(f"/api/v1/jobs/{a}/delete")
    assert refused.status == 409 and "reserved" in refused.json["error"]
    assert http.post(f"/api/v1/jobs/{c}/delete", {"dry_run": True}).json["count"] == 1
    assert http.post(f"/api/v1/jobs/{c}/delete").json == {"count": 1}
    assert http.get(f"/api/v1/jobs/{c}").status == 404
    assert http.post(f"/api/v1/jobs/{c}/delete").status == 404
    w.delete(held)  # the worker's own delete still works


def test_errors(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    client(daemon, "e").put("x")

    def check(reply: Any, status: int) -> None:
        assert reply.status == status, reply
        assert reply.headers["content-type"] == "application/json" and "error" in reply.json

    check(http.get("/nothing"), 404)
    check(http.get("/api/v1/tubes/e/unknown"), 404)
    check(http.get("/api/v1/tubes/"), 404)
    check(http.post("/api/v1/jobs/1/fly"), 404)
    check(http.post("/api/v1/jobs/99/bury"), 404)
    check(http.post("/api/v1/tubes/nope/clear", {"state": "ready", "all": True}), 404)
    wrong = http.post("/metrics")
    check(wrong, 405)
    assert "GET" in wrong.headers["allow"]
    for action in TUBE_ACTIONS:
        reply = http.get(f"/api/v1/tubes/e/{action}")
        check(reply, 405)
        assert reply.headers["allow"] == "POST"
    check(http.post("/api/v1/tubes/e"), 405)
    check(http.get("/api/v1/jobs/1/kick"), 405)
    check(http.get("/api/v1/tubes/-bad"), 400)
    for body in ({"state": "ready"}, {"state": "ready", "count": 0}, {"state": "ready", "count": 1, "all": True},
                 {"state": "reserved", "all": True}, {"state": "nope", "all": True}, {"all": "yes", "state": "ready"},
                 {"state": "ready", "all": True, "dryrun": True}, {"state": "ready", "all": True, "dry_run": 1}):
        check(http.post("/api/v1/tubes/e/clear", body), 400)
    check(http.post("/api/v1/tubes/e/move", {"state": "ready", "all": True}), 400)
    check(http.post("/api/v1/tubes/e/move", {"state": "ready", "all": True, "to": "e"}), 400)
    check(http.post("/api/v1/tubes/e/move", {"state": "ready", "all": True, "to": "-x"}), 400)
    check(http.post("/api/v1/tubes/e/kick", {"state": "ready", "all": True}), 400)
    check(http.post("/api/v1/tubes/e/pause", {"delay": -1}), 400)
    check(http.post("/api/v1/tubes/e/pause", {"delay": 2**32}), 400)
    check(http.post("/api/v1/tubes/e/clear", raw=b"{not json", headers={"Content-Type": "application/json"}), 400)
    check(http.post("/api/v1/tubes/e/clear", raw=b"[1]", headers={"Content-Type": "application/json"}), 400)
    check(http.post("/api/v1/tubes/e/clear", raw=b'{"state": "ready", "all": true}',
                    headers={"Content-Type": "text/plain"}), 415)
    check(http.post("/api/v1/tubes/e/clear", raw=b"x" * 70000, headers={"Content-Type": "application/json"}), 413)
    check(http.get("/api/v1/tubes", headers={"Host": "evil.example"}), 403)
    assert client(daemon).stats_tube("e")["current-jobs-ready"] == 1  # nothing above changed it


def test_tube_names_with_a_slash_and_tube_pages(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    client(daemon, "a/b").put("x")
    assert http.json("/api/v1/tubes/a%2Fb")["name"] == "a/b"
    assert http.json("/api/v1/tubes/a%2Fb/jobs")["jobs"][0]["preview"] == "x"
    for name in ("t1", "t2", "t3"):
        client(daemon, name).put("y")
    first = http.json("/api/v1/tubes?limit=2")
    assert [t["name"] for t in first["tubes"]] == ["a/b", "default"] and first["next"] == "default"
    rest = http.json(f"/api/v1/tubes?limit=2&after={first['next']}")
    assert [t["name"] for t in rest["tubes"]] == ["t1", "t2"]
    assert http.json("/api/v1/tubes?after=t2")["tubes"][0]["name"] == "t3"


def test_single_job_bury_move_reprioritize(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p, w = client(daemon, "src"), client(daemon, "src")
    a, b, c = p.put("a", priority=500), p.put("b", priority=600), p.put("c", delay=100)
    held = w.reserve(timeout=1)
    assert held.id == a
    assert http.post(f"/api/v1/jobs/{b}/bury").json == {"count": 1}
    assert http.post(f"/api/v1/jobs/{c}/bury").json == {"count": 1}  # a delayed job too
    assert client(daemon).stats_job(b)["state"] == "buried" and client(daemon).stats_job(b)["buries"] == 1
    refused = http.post(f"/api/v1/jobs/{a}/bury")
    assert refused.status == 409 and "belongs to its worker" in refused.json["error"]
    assert http.post(f"/api/v1/jobs/{b}/move", {"to": "dst", "dry_run": True}).json == {"dry_run": True, "count": 1}
    assert http.post(f"/api/v1/jobs/{b}/move", {"to": "dst"}).json == {"count": 1}
    moved = client(daemon).stats_job(b)
    assert (moved["tube"], moved["state"]) == ("dst", "buried")
    assert http.post(f"/api/v1/jobs/{b}/move", {"to": "dst"}).status == 400  # the same tube
    assert http.post(f"/api/v1/jobs/{b}/move", {}).status == 400
    assert http.post(f"/api/v1/jobs/{b}/reprioritize", {"pri": 3}).json == {"count": 1}
    assert client(daemon).stats_job(b)["pri"] == 3
    assert http.post(f"/api/v1/jobs/{b}/reprioritize", {"pri": -1}).status == 400
    assert http.post(f"/api/v1/jobs/{b}/reprioritize", {"pri": 3, "pry": 1}).status == 400
    assert http.post(f"/api/v1/jobs/{b}/fly").status == 404
    w.delete(held)
    daemon.stop()
    assert daemon.proc is not None
    log = daemon.proc.stderr.read().decode()
    assert f"move job {b} to dst: 1 job" in log and f"reprioritize job {b} to priority 3: 1 job" in log


def test_bulk_by_ids_skips_jobs_that_moved_on(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p, w = client(daemon, "ids"), client(daemon, "ids")
    ids = [p.put(f"job {i}") for i in range(6)]
    for _ in range(4):
        w.bury(w.reserve(timeout=1))
    buried, ready = ids[:4], ids[4:]
    body = {"state": "buried", "ids": buried[:3] + ready[:1] + [999999]}
    assert http.post("/api/v1/tubes/ids/kick", {**body, "dry_run": True}).json == \
        {"dry_run": True, "count": 3, "skipped": 2}
    assert http.post("/api/v1/tubes/ids/kick", body).json == {"count": 3, "skipped": 2}
    assert client(daemon).stats_tube("ids")["current-jobs-buried"] == 1
    assert http.post("/api/v1/tubes/ids/move", {"state": "ready", "ids": ready, "to": "elsewhere"}).json == \
        {"count": 2, "skipped": 0}
    assert http.post("/api/v1/tubes/ids/clear", {"state": "buried", "ids": [buried[3]]}).json == \
        {"count": 1, "skipped": 0}
    assert client(daemon).stats_tube("elsewhere")["current-jobs-ready"] == 2
    for bad in ({"state": "ready", "ids": []}, {"state": "ready", "ids": ["1"]},
                {"state": "ready", "ids": [1], "all": True}, {"state": "ready", "ids": [True]}):
        assert http.post("/api/v1/tubes/ids/clear", bad).status == 400, bad


def test_put_through_the_api(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    made = http.post("/api/v1/tubes/fresh/jobs", {"body": "héllo", "pri": 7, "delay": 0, "ttr": 30})
    assert made.status == 200, made
    job = client(daemon, "fresh").reserve(timeout=1)
    assert (job.id, job.body) == (made.json["id"], "héllo")
    stats = client(daemon).stats_job(job.id)
    assert (stats["pri"], stats["ttr"], stats["tube"]) == (7, 30, "fresh")
    binary = http.post("/api/v1/tubes/fresh/jobs", {"body": "AAEC", "encoding": "base64"})
    assert http.json(f"/api/v1/jobs/{binary.json['id']}")["size"] == 3
    big = http.post("/api/v1/tubes/fresh/jobs", {"body": "x" * 70000})
    assert big.status in (413,), big
    for bad in ({}, {"body": 1}, {"body": "x", "pri": -1}, {"body": "x", "encoding": "rot13"},
                {"body": "!!", "encoding": "base64"}, {"body": "x", "ttr": "60"}):
        assert http.post("/api/v1/tubes/fresh/jobs", bad).status == 400, bad
    assert client(daemon).stats()["cmd-put"] == 0  # no protocol command was received


def test_search_bodies_in_bounded_scans(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p = client(daemon, "find")
    for i in range(30):
        p.put(f"order {i} {'needle' if i % 7 == 0 else 'hay'}")
    first = http.json("/api/v1/tubes/find/jobs?q=needle&limit=2")
    assert [job["preview"] for job in first["jobs"]] == ["order 0 needle", "order 7 needle"]
    assert first["scanned"] == 8 and first["next"] is not None
    rest = http.json(f"/api/v1/tubes/find/jobs?q=needle&limit=10&after={first['next']}")
    assert [job["preview"] for job in rest["jobs"]] == ["order 14 needle", "order 21 needle", "order 28 needle"]
    assert rest["next"] is None and rest["scanned"] == 22
    assert http.json("/api/v1/tubes/find/jobs?q=absent")["jobs"] == []


def test_metrics_beyond_stats(plane: tuple[Daemon, Http]) -> None:
    daemon, http = plane
    p, w = client(daemon, "waits"), client(daemon, "waits")
    p.put("old")
    time.sleep(0.3)
    p.put("new")
    w.delete(w.reserve(timeout=1))
    http.get("/nothing-here")
    samples = _samples(http.get("/metrics").data.decode())
    age = samples[("beanstalkd_tube_oldest_ready_age_seconds", (("tube", "waits"),))]
    assert 0 <= age < 5  # "new" is the one left ready
    assert samples[("beanstalkd_tube_wait_seconds_count", (("tube", "waits"),))] == 1
    assert samples[("beanstalkd_tube_wait_seconds_bucket", (("le", "+Inf"), ("tube", "waits")))] == 1
    assert samples[("beanstalkd_tube_wait_seconds_bucket", (("le", "0.1"), ("tube", "waits")))] == 0
    assert 0.3 <= samples[("beanstalkd_tube_wait_seconds_sum", (("tube", "waits"),))] < 5
    assert samples[("beanstalkd_jobs_recovered_total", ())] == 0
    assert samples[("beanstalkd_http_requests_total", (("code", "404"),))] == 1
