"""python -m bench --store-compare: store mode against beanstalkd and in-memory beanstalk-py.

Four sides, fresh processes for every run, in this order each round:
beanstalkd, in-memory beanstalk-py, and beanstalk-py with ``--store`` on a
private redis-server with one and with two front ends (``--store-front-ends``).
The whole server side is pinned as the harness pins a server: beanstalkd,
or Redis and every front end, on the first CPU; the load on the others.
With two front ends the load processes are spread over both front ends (a
workload with one connection, put-pipelined-1 and latency, uses the first).

Besides the usual figures each run reports the CPU per job of the whole
server side (``server CPU us/job``) and, in store mode, Redis's and the
front ends' shares of it.  Redis's CPU is read by the load generator over
the timed phase (``/proc/PID/stat`` of redis-server, as for any server); the
front ends' is read by the harness around the run.  A job is a put in
put-*, a deleted job in prd-*, a put+reserve+delete in latency.

The tables are the usual A/B tables, one per pair: each store side against
beanstalkd and against in-memory beanstalk-py, and in-memory beanstalk-py
against beanstalkd; an overview of the medians and the issue 11 targets first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Optional

from . import loadgen, report, servers
from .workloads import JOBS_PER_UNIT, STORE_COMMON, WORKLOADS, Ctx

# The default workloads: put1, put50, prd50 and latency (issue 11).
STORE_WORKLOADS = ["put-pipelined-1", "put-pipelined-50", "prd-25x25", "latency"]
# Issue 11's targets for one front end, on a 2-core machine.
TARGET_RATIO = 0.5          # prd-25x25 and pipelined put, against beanstalkd
TARGET_REDIS_US = 40.0      # Redis CPU per put+reserve+delete


@dataclass(frozen=True)
class Side:
    key: str
    label: str
    front_ends: int = 0             # 0: not store mode
    argv: Optional[list[str]] = None


def sides(args: argparse.Namespace) -> list[Side]:
    """The sides to run, in run order (``--sides`` picks some by key or label)."""
    wanted = set(args.sides or ())

    def chosen(key: str, label: str) -> bool:
        return not wanted or key in wanted or label in wanted

    out = []
    if chosen("beanstalkd", "beanstalkd"):
        out.append(Side("beanstalkd", "beanstalkd", argv=servers.beanstalkd_argv(args.beanstalkd)))
    if chosen("memory", "beanstalk-py"):
        out.append(Side("memory", "beanstalk-py", argv=servers.beanstalk_py_argv()))
    out += [Side(f"store{n}", f"store-{n}fe", front_ends=n) for n in args.store_front_ends
            if chosen(f"store{n}", f"store-{n}fe")]
    return out


def job_rate(name: str, metrics: dict) -> Optional[float]:
    """Jobs per second in the timed phase (see the module's docstring)."""
    value = metrics.get(WORKLOADS[name].throughput[0])
    return None if not value else value * JOBS_PER_UNIT.get(name, 1.0)


def per_job_us(pct: Optional[float], rate: Optional[float]) -> Optional[float]:
    return None if pct is None or not rate else pct / 100.0 * 1e6 / rate


def run_one(side: Side, name: str, rnd: int, args: argparse.Namespace, gen: loadgen.Generator,
            server_cpus, load_cpus, procs: int) -> dict:
    workload = WORKLOADS[name]
    setup: Optional[servers.StoreSetup] = None
    server: Optional[servers.Server] = None
    try:
        if side.front_ends:
            redis_cpus = {"server": server_cpus, "load": load_cpus,
                          "any": (server_cpus or set()) | (load_cpus or set())}[args.redis_cpu]
            setup = servers.StoreSetup(side.label, side.front_ends, cpus=server_cpus,
                                       extra=workload.server_args, redis_cpus=redis_cpus).start()
            ports = setup.ports
            ctx = Ctx(port=ports[0], ports=ports if len(ports) > 1 else None, pid=setup.redis.pid,
                      gen=gen, duration=args.duration, warmup=args.warmup, load_cpus=load_cpus,
                      procs=max(procs, len(ports)), jobs=args.jobs, limit=args.limit)
        else:
            assert side.argv is not None
            server = servers.Server(side.label, side.argv, cpus=server_cpus, extra=workload.server_args)
            server.start()
            ctx = Ctx(port=server.port, pid=server.pid, gen=gen, duration=args.duration,
                      warmup=args.warmup, load_cpus=load_cpus, procs=procs, jobs=args.jobs, limit=args.limit)
        fe0 = setup.fe_cpu_s() if setup else None
        t0 = time.monotonic()
        metrics = WORKLOADS[name].run(ctx)
        wall = time.monotonic() - t0
        rate = job_rate(name, metrics)
        if setup is not None:
            if not setup.alive():
                raise RuntimeError(f"a store-mode process exited during the run: {setup.log_tail()}")
            fe1 = setup.fe_cpu_s()
            redis_pct = metrics.get("server_cpu_pct")  # the load generator watched redis-server
            fe_pct = None if fe0 is None or fe1 is None else 100.0 * (fe1 - fe0) / wall
            metrics["redis_cpu_pct"] = redis_pct
            metrics["fe_cpu_pct"] = fe_pct
            metrics["redis_us_per_job"] = per_job_us(redis_pct, rate)
            metrics["fe_us_per_job"] = per_job_us(fe_pct, rate)
            metrics["server_cpu_pct"] = (None if redis_pct is None or fe_pct is None
                                         else redis_pct + fe_pct)
        else:
            assert server is not None
            if not server.alive():
                raise RuntimeError(f"the server exited during the run: {server.log_tail()}")
        metrics["server_us_per_job"] = per_job_us(metrics.get("server_cpu_pct"), rate)
        run = {"round": rnd, "metrics": metrics,
               "saturated": report.saturated_phases(metrics, len(load_cpus or [0]))}
        if metrics.get("errors"):
            run["warning"] = f"{metrics['errors']} errors (see load/server logs)"
        return run
    finally:
        if setup is not None:
            setup.stop()
        if server is not None:
            server.stop()


def headline(name: str, m: dict) -> str:
    key = WORKLOADS[name].throughput[0]
    text = (f"{key}={report.fmt(m.get(key))} p50={report.fmt(m.get('p50_us'))}us"
            f" server={report.fmt(m.get('server_us_per_job'))}us/job")
    if m.get("redis_us_per_job") is not None:
        text += (f" (redis {report.fmt(m.get('redis_us_per_job'))}, "
                 f"front ends {report.fmt(m.get('fe_us_per_job'))})")
    return text + f" load={report.fmt(m.get('load_cpu_pct'))}%"


def run(args: argparse.Namespace, gen: loadgen.Generator, workloads: list[str],
        server_cpus, load_cpus, chosen: list[Side]) -> dict:
    import os

    if load_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, load_cpus)
    procs = args.load_procs or max(1, len(load_cpus or os.sched_getaffinity(0)))
    results: dict = {}
    for name in workloads:
        entry: dict = {"workload": name, "runs": {s.key: [] for s in chosen}}
        for rnd in range(1, args.rounds + 1):
            for side in chosen:
                t0 = time.monotonic()
                try:
                    one = run_one(side, name, rnd, args, gen, server_cpus, load_cpus, procs)
                except Exception as exc:  # one failed run is reported, not fatal
                    entry["runs"][side.key].append({"round": rnd, "error": str(exc)})
                    print(f"  {name} round {rnd} {side.label}: FAILED: {exc}", flush=True)
                    continue
                entry["runs"][side.key].append(one)
                print(f"  {name} round {rnd} {side.label}: {headline(name, one['metrics'])}"
                      f"{' [load saturated: ' + ','.join(one['saturated']) + ']' if one['saturated'] else ''}"
                      f"{' [' + one['warning'] + ']' if 'warning' in one else ''}"
                      f" ({time.monotonic() - t0:.1f} s)", flush=True)
        results[name] = entry
    return results


def pairs(chosen: list[Side]) -> list[tuple[Side, Side]]:
    by_key = {s.key: s for s in chosen}
    out = []
    for side in chosen:
        if side.front_ends:
            for ref in ("beanstalkd", "memory"):
                if ref in by_key:
                    out.append((side, by_key[ref]))
    if "memory" in by_key and "beanstalkd" in by_key:
        out.append((by_key["memory"], by_key["beanstalkd"]))
    return out


def pair_results(results: dict, a: Side, b: Side) -> dict:
    out = {}
    for name, entry in results.items():
        pair = {"workload": name, "runs": {"a": entry["runs"].get(a.key, []), "b": entry["runs"].get(b.key, [])},
                "unsupported": {"a": None, "b": None}}
        report.summarize(pair, STORE_COMMON)
        out[name] = pair
    return out


def _median(entry: dict, key: str, metric: str) -> Optional[float]:
    values = [r["metrics"].get(metric) for r in entry["runs"].get(key, []) if "metrics" in r]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def overview(results: dict, chosen: list[Side]) -> str:
    """Medians per side, one column each: throughput, p50 and CPU per job."""
    head = f"{'workload':17} {'metric':22}" + "".join(f" {s.label:>13}" for s in chosen)
    lines = [head, "-" * len(head)]
    for name, entry in results.items():
        rows = [(WORKLOADS[name].throughput[0], METRIC_LABEL.get(WORKLOADS[name].throughput[0], "throughput")),
                ("p50_us", "p50 us"), ("server_us_per_job", "server CPU us/job"),
                ("redis_us_per_job", "redis CPU us/job"), ("fe_us_per_job", "front-end CPU us/job")]
        first = True
        for key, label in rows:
            values = [_median(entry, s.key, key) for s in chosen]
            if all(v is None for v in values):
                continue
            lines.append(f"{name if first else '':17} {label:22}" + "".join(f" {report.fmt(v):>13}" for v in values))
            first = False
    return "\n".join(lines)


METRIC_LABEL = {"puts_per_s": "puts/s", "jobs_per_s": "jobs/s", "ops_per_s": "commands/s"}


def targets(results: dict, chosen: list[Side]) -> str:
    """Issue 11's targets, for each store side (medians of per-round ratios)."""
    by_key = {s.key: s for s in chosen}
    if "beanstalkd" not in by_key:
        return ""
    lines = []
    for side in chosen:
        if not side.front_ends:
            continue
        pr = pair_results(results, side, by_key["beanstalkd"])
        checks = []
        for name, key in (("prd-25x25", "jobs_per_s"), ("put-pipelined-50", "puts_per_s"),
                          ("put-pipelined-1", "puts_per_s")):
            s = pr.get(name, {}).get("summary", {}).get(key)
            if s and s["ratio"] is not None:
                ok = "met" if s["ratio"] >= TARGET_RATIO else "NOT met"
                checks.append(f"{name} {s['ratio']:.2f}x beanstalkd (>= {TARGET_RATIO}x: {ok})")
        for name in ("prd-25x25", "latency"):
            if name in results:
                us = _median(results[name], side.key, "redis_us_per_job")
                if us is not None:
                    ok = "met" if us <= TARGET_REDIS_US else "NOT met"
                    checks.append(f"redis {us:.1f} us/job in {name} (<= {TARGET_REDIS_US:g}: {ok})")
        if checks:
            lines.append(f"{side.label}: " + "; ".join(checks))
    return "\n".join(lines)


def print_tables(results: dict, chosen: list[Side]) -> None:
    print(overview(results, chosen))
    text = targets(results, chosen)
    if text:
        print()
        print(text)
    for a, b in pairs(chosen):
        print()
        print(f"## {a.label} against {b.label}")
        print(report.table(pair_results(results, a, b), (a.label, b.label), STORE_COMMON))
    print("ratio = median over rounds of (first / second) in the same round; "
          "per-round = the smallest and largest of those ratios")


def sides_of(doc: dict) -> list[Side]:
    """The sides of a saved run (for --report)."""
    return [Side(s["key"], s["label"], s["front_ends"]) for s in doc["sides"]]
