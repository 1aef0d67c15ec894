"""Prometheus text of a snapshot: parsed with prometheus_client, every sample
equals the `stats` / `stats-tube` value it names, and rendering moves no counter."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from beanstalk_py.metrics import render
from beanstalk_py.stats import server_stats
from rig import T0, Rig, yaml_of


def _workload() -> Rig:
    rig = Rig()
    p, w = rig.conn(), rig.conn()
    rig.send(p, b"use mail\r\n" + b"put 5 0 60 1\r\na\r\n" * 3 + b"put 2000 30 60 1\r\nd\r\n")
    rig.send(p, b'use "odd\r\n')  # a bad name: BAD_FORMAT, counted as nothing
    rig.send(w, b"watch mail\r\nreserve\r\nbury 1 7\r\nreserve\r\ndelete 2\r\npause-tube mail 10\r\n")
    return rig


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _render(rig: Rig, limit: int = 1000) -> str:
    engine = rig.engine
    tubes = {name: engine.tube_stats(name, T0) for name in engine.tube_names()}
    return render(server_stats(engine.snapshot(T0), rig.info, T0), tubes, limit)


def test_every_sample_equals_stats_and_scraping_moves_no_counter() -> None:
    rig = _workload()
    c = rig.conn()
    before = yaml_of(rig.send(c, b"stats\r\n"))
    samples = _samples(_render(rig))
    after = yaml_of(rig.send(c, b"stats\r\n"))
    # Only the second `stats` command itself moved a counter.
    assert int(after["cmd-stats"]) == int(before["cmd-stats"]) + 1
    assert {k: v for k, v in after.items() if k not in ("cmd-stats", "rusage-utime", "rusage-stime")} == \
        {k: v for k, v in before.items() if k not in ("cmd-stats", "rusage-utime", "rusage-stime")}
    stats = before
    for state in ("urgent", "ready", "reserved", "delayed", "buried"):
        assert samples[("beanstalkd_current_jobs", (("state", state),))] == int(stats[f"current-jobs-{state}"])
    for key in [k for k in stats if k.startswith("cmd-")]:
        assert samples[("beanstalkd_commands_total", (("cmd", key[4:]),))] == int(stats[key])
    assert samples[("beanstalkd_jobs_total", ())] == int(stats["total-jobs"]) == 4
    assert samples[("beanstalkd_current_connections", ())] == int(stats["current-connections"])
    assert samples[("beanstalkd_connections_total", ())] == int(stats["total-connections"])
    assert samples[("beanstalkd_draining", ())] == 0
    assert samples[("beanstalkd_build_info", (("version", "1.12"),))] == 1
    mail = yaml_of(rig.send(c, b"stats-tube mail\r\n"))
    for state in ("urgent", "ready", "reserved", "delayed", "buried"):
        assert samples[("beanstalkd_tube_current_jobs", (("state", state), ("tube", "mail")))] == \
            int(mail[f"current-jobs-{state}"])
    assert samples[("beanstalkd_tube_commands_total", (("cmd", "delete"), ("tube", "mail")))] == 1
    assert samples[("beanstalkd_tube_pause_seconds", (("tube", "mail"),))] == 10
    assert samples[("beanstalkd_tube_current_watching", (("tube", "mail"),))] == 1


def test_tube_series_are_capped_and_flagged() -> None:
    rig = Rig()
    c = rig.conn()
    for i in range(5):
        rig.send(c, b"watch t%d\r\n" % i)
    samples = _samples(_render(rig, limit=3))
    assert samples[("beanstalkd_tube_series_truncated", ())] == 1
    tubes = {dict(labels)["tube"] for (name, labels) in samples if name == "beanstalkd_tube_jobs_total"}
    assert tubes == {"default", "t0", "t1"}  # the first three names in order
    assert _samples(_render(rig))[("beanstalkd_tube_series_truncated", ())] == 0
