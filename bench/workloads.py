"""The workloads: what each one sends, and which figures it reports.

Every workload turns the phases reported by the load processes
(bench/loadgen.py) into a flat dict of metrics.  ``METRICS`` says, per
workload, which of them the table and the chart show, which way is better and
from which phase each comes (so that a saturated load side can be flagged on
exactly the figures it may have capped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from . import loadgen
from .loadgen import Phase

BODY_SIZE = 100
PIPELINE_DEPTH = 100    # puts in flight per connection in the pipelined workloads
PRD_BACKLOG = 1000      # producers pause while this many jobs wait to be reserved
IDLE_CONNS = 2000
IDLE_TUBES = 10
TUBES = 10000
FILL_DEPTH = 1000       # puts in flight while filling the memory workload


@dataclass
class Ctx:
    """What a workload needs to know about one run."""

    port: int
    pid: Optional[int]             # the server's PID, for its CPU time and RSS (None: unknown)
    gen: loadgen.Generator
    duration: float = 3.0
    warmup: float = 0.5
    load_cpus: Optional[set[int]] = None
    procs: int = 1                 # most load processes to use
    jobs: int = 1_000_000          # memory workload
    limit: float = 60.0            # bound on untimed phases (create, watch, set-up, fill)
    ports: Optional[list[int]] = None  # several front ends (store mode): the load split over them

    def flags(self) -> list[str]:
        return ["-s", str(BODY_SIZE), "-w", str(self.warmup), "-d", str(self.duration),
                "-L", str(self.limit)]

    def timeout(self, phases_timed: int, phases_untimed: int = 0) -> float:
        return phases_timed * (self.warmup + self.duration) + phases_untimed * self.limit + 30

    def run(self, shares: list[list[str]], timeout: float) -> dict[str, Phase]:
        return loadgen.run(self.gen, self.port, [s + self.flags() for s in shares],
                           server_pid=self.pid, cpus=self.load_cpus, timeout=timeout, ports=self.ports)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str = "higher"  # "higher", "lower" or "" (informational)
    phase: str = ""         # phase it is measured in (for the saturation flag)


def _lat(phase: Optional[Phase], prefix: str = "") -> dict:
    out = {}
    for name, p in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999)):
        out[f"{prefix}{name}_us"] = phase.pct_us(p) if phase else None
    return out


def _cpu(phases: dict[str, Phase], names: list[str]) -> dict:
    """Load and server CPU (% of one CPU) per phase, and the saturation flags."""
    out: dict = {"phase_cpu": {}}
    for name in names:
        ph = phases.get(name)
        if ph is None:
            continue
        out["phase_cpu"][name] = {
            "load_cpu_pct": round(ph.load_cpu_pct, 1),
            "load_peak_pct": round(ph.load_peak_pct, 1),
            "server_cpu_pct": None if ph.server_cpu_pct is None else round(ph.server_cpu_pct, 1),
            "wall_s": round(ph.wall_s, 3),
        }
    main = out["phase_cpu"].get(names[0], {})
    out["load_cpu_pct"] = max((v["load_cpu_pct"] for v in out["phase_cpu"].values()), default=None)
    out["server_cpu_pct"] = main.get("server_cpu_pct")
    return out


def _errors(phases: dict[str, Phase]) -> int:
    return sum(ph.errors for ph in phases.values())


# ---------------------------------------------------------------- workloads

def put_pipelined(conns: int) -> Callable[[Ctx], dict]:
    def run(ctx: Ctx) -> dict:
        procs = max(1, min(ctx.procs, conns))
        shares = [["-m", "put", "-c", str(n), "-P", str(PIPELINE_DEPTH)]
                  for n in loadgen.split(conns, procs) if n]
        phases = ctx.run(shares, ctx.timeout(1))
        ph = phases["put"]
        return {"puts_per_s": ph.rate, **_lat(ph), "errors": _errors(phases),
                **_cpu(phases, ["put"])}
    return run


def prd(producers: int, consumers: int) -> Callable[[Ctx], dict]:
    def run(ctx: Ctx) -> dict:
        procs = max(1, min(ctx.procs, producers, consumers))
        shares = []
        for p, k in zip(loadgen.split(producers, procs), loadgen.split(consumers, procs)):
            shares.append(["-m", "prd", "-r", str(p), "-k", str(k), "-P", "1",
                           "-B", str(max(1, PRD_BACKLOG // procs))])
        phases = ctx.run(shares, ctx.timeout(1))
        ph = phases["prd"]
        return {"jobs_per_s": ph.rate, "ops_per_s": ph.per_s(ph.cmds), **_lat(ph), "consumer_timeouts": ph.timeouts, "errors": _errors(phases),
                **_cpu(phases, ["prd"])}
    return run


def latency(ctx: Ctx) -> dict:
    phases = ctx.run([["-m", "latency"]], ctx.timeout(1))
    ph = phases["latency"]
    out = {"ops_per_s": ph.rate, **_lat(ph)}
    for cmd in ("put", "reserve", "delete"):
        out[f"{cmd}_p50_us"] = phases[f"latency.{cmd}"].pct_us(0.5)
    return {**out, "errors": _errors(phases), **_cpu(phases, ["latency"])}


def idle(conns: int) -> Callable[[Ctx], dict]:
    def run(ctx: Ctx) -> dict:
        phases = ctx.run([["-m", "idle", "-c", str(conns), "-n", str(IDLE_TUBES), "-I", "64"]],
                         ctx.timeout(2, 1))
        setup, probe, active = phases["setup"], phases["probe"], phases["active"]
        return {
            "setup_conns_per_s": setup.rate, "conns_ok": setup.count, "setup_s": setup.secs,
            **_lat(probe, "probe_"), "active_ops_per_s": active.rate, **_lat(active, "active_"),
            "errors": _errors(phases), **_cpu(phases, ["active", "setup", "probe"]),
        }

    return run


def tubes(ctx: Ctx) -> dict:
    phases = ctx.run([["-m", "tubes", "-n", str(TUBES), "-c", "1", "-P", str(PIPELINE_DEPTH)]],
                     ctx.timeout(2, 2))
    create, put, watch, drain = (phases[n] for n in ("create", "put", "watch", "drain"))
    return {
        "create_tubes_per_s": create.rate, "tubes_created": create.count,
        "put_ops_per_s": put.rate, **_lat(put, "put_"),
        "watch_per_s": watch.rate, "drain_jobs_per_s": drain.rate, "drained_jobs": drain.count,
        **_lat(drain, "drain_"), "errors": _errors(phases),
        **_cpu(phases, ["put", "create", "watch", "drain"]),
    }


def memory(ctx: Ctx) -> dict:
    """RSS growth per job: VmRSS before and after putting ctx.jobs jobs of 100 bytes."""
    from .servers import rss_bytes

    if ctx.pid is None:
        raise Unavailable("the server's PID is unknown (give --pid), so its RSS cannot be read")
    before = rss_bytes(ctx.pid)
    phases = ctx.run([["-m", "fill", "-N", str(ctx.jobs), "-P", str(FILL_DEPTH)]], ctx.timeout(0, 1))
    time.sleep(0.3)  # let the last replies' work settle
    after = rss_bytes(ctx.pid)
    fill = phases["fill"]
    jobs = fill.count
    if before is None or after is None or not jobs:
        raise RuntimeError("could not read the server's RSS or no job was inserted")
    return {
        "bytes_per_job": (after - before) / jobs, "jobs": jobs,
        "rss_before_mib": before / 2**20, "rss_after_mib": after / 2**20,
        "fill_puts_per_s": fill.rate, "errors": _errors(phases), **_cpu(phases, ["fill"]),
    }


def big_bodies(ctx: Ctx) -> dict:
    """Five 50 MiB puts, then their reserves, with a small-request probe alongside (bench/bigbody.py)."""
    import json
    import subprocess
    import sys

    from .servers import proc_cpu_s, peak_rss_bytes

    cpu0 = proc_cpu_s(ctx.pid) if ctx.pid else None
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bench.bigbody", "--port", str(ctx.port),
                           "--pid", str(ctx.pid or 0)],
                          capture_output=True, timeout=ctx.limit * 5, cwd=loadgen.HERE.parent,
                          preexec_fn=loadgen._pin(ctx.load_cpus))
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"bench.bigbody exited {done.returncode}: {done.stderr.decode(errors='replace')[-800:]}")
    out = json.loads(done.stdout.decode().splitlines()[-1])
    cpu1 = proc_cpu_s(ctx.pid) if ctx.pid else None
    peak = peak_rss_bytes(ctx.pid) if ctx.pid else None
    out["server_cpu_pct"] = None if cpu0 is None or cpu1 is None else round(100 * (cpu1 - cpu0) / wall, 1)
    out["peak_rss_mib"] = None if peak is None else peak / 2**20
    out["errors"] = out.pop("probe_errors")
    out["phase_cpu"] = {}
    out["load_cpu_pct"] = None
    return out


class Unavailable(RuntimeError):
    """The workload cannot run in this setting (reported, not fatal)."""


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[Ctx], dict]
    summary: str
    binlog: bool = False       # both servers get -b <temp dir> (default fsync policy)
    server_args: tuple[str, ...] = ()  # more flags for both servers
    on_target: bool = True     # part of the default set for --target
    throughput: tuple[str, ...] = ()
    latency: tuple[str, ...] = ()


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("put-pipelined-1", put_pipelined(1), "1 connection, 100 puts in flight",
             throughput=("puts_per_s",), latency=("p50_us", "p99_us")),
    Workload("put-pipelined-50", put_pipelined(50), "50 connections, 100 puts in flight each",
             throughput=("puts_per_s",), latency=("p50_us", "p99_us")),
    Workload("prd-1x1", prd(1, 1), "1 producer + 1 consumer, request/response",
             throughput=("jobs_per_s",), latency=("p50_us", "p99_us")),
    Workload("prd-25x25", prd(25, 25), "25 producers + 25 consumers, request/response",
             throughput=("jobs_per_s",), latency=("p50_us", "p99_us")),
    Workload("latency", latency, "1 connection: put, reserve, delete, one at a time",
             throughput=("ops_per_s",), latency=("p50_us", "p99_us", "p999_us")),
    Workload("idle-2000", idle(IDLE_CONNS), "2,000 connections: set-up, a probe while idle, all active",
             throughput=("setup_conns_per_s", "active_ops_per_s"),
             latency=("probe_p50_us", "probe_p99_us", "active_p50_us")),
    Workload("idle-5000", idle(5000), "idle-2000 with 5,000 connections: must work with no errors",
             throughput=("setup_conns_per_s", "active_ops_per_s"),
             latency=("probe_p50_us", "active_p50_us")),
    Workload("tubes-10000", tubes, "10,000 tubes: create, put to random tubes, drain all",
             throughput=("create_tubes_per_s", "put_ops_per_s", "drain_jobs_per_s"),
             latency=("put_p50_us", "drain_p50_us")),
    Workload("binlog-put", put_pipelined(1), "put-pipelined-1 with -b (default fsync)", binlog=True,
             on_target=False, throughput=("puts_per_s",), latency=("p50_us", "p99_us")),
    Workload("binlog-prd", prd(1, 1), "prd-1x1 with -b (default fsync)", binlog=True,
             on_target=False, throughput=("jobs_per_s",), latency=("p50_us", "p99_us")),
    Workload("big-bodies", big_bodies, "-z 100 MiB: five 50 MiB puts then reserves, a probe alongside",
             on_target=False, server_args=("-z", str(100 * 2**20)),
             throughput=("ingest_mib_s", "egress_mib_s"), latency=("stall_max_ms",)),
    Workload("memory", memory, "RSS per job after putting 1,000,000 jobs of 100 bytes",
             on_target=False, throughput=("fill_puts_per_s",), latency=("bytes_per_job",)),
]}

# Table rows per workload: (metric, label, better, phase it comes from).
_PUT = [Metric("puts_per_s", "puts/s", "higher", "put"), Metric("p50_us", "put p50 us", "lower", "put"),
        Metric("p99_us", "put p99 us", "lower", "put"), Metric("p999_us", "put p999 us", "lower", "put")]
_PRD = [Metric("jobs_per_s", "jobs/s", "higher", "prd"), Metric("ops_per_s", "commands/s", "higher", "prd"),
        Metric("p50_us", "cmd p50 us", "lower", "prd"), Metric("p99_us", "cmd p99 us", "lower", "prd"),
        Metric("p999_us", "cmd p999 us", "lower", "prd")]
_IDLE = [Metric("setup_conns_per_s", "set-up conns/s", "higher", "setup"),
         Metric("conns_ok", "connections open", "higher", "setup"),
         Metric("probe_p50_us", "idle probe p50 us", "lower", "probe"),
         Metric("probe_p99_us", "idle probe p99 us", "lower", "probe"),
         Metric("probe_p999_us", "idle probe p999 us", "lower", "probe"),
         Metric("active_ops_per_s", "all active puts/s", "higher", "active"),
         Metric("active_p50_us", "active p50 us", "lower", "active"),
         Metric("active_p99_us", "active p99 us", "lower", "active")]
METRICS: dict[str, list[Metric]] = {
    "put-pipelined-1": _PUT,
    "put-pipelined-50": _PUT,
    "prd-1x1": _PRD,
    "prd-25x25": _PRD,
    "latency": [Metric("ops_per_s", "commands/s", "higher", "latency"),
                Metric("p50_us", "p50 us", "lower", "latency"),
                Metric("p99_us", "p99 us", "lower", "latency"),
                Metric("p999_us", "p999 us", "lower", "latency"),
                Metric("put_p50_us", "put p50 us", "lower", "latency"),
                Metric("reserve_p50_us", "reserve p50 us", "lower", "latency"),
                Metric("delete_p50_us", "delete p50 us", "lower", "latency")],
    "idle-2000": _IDLE,
    "idle-5000": _IDLE,
    "tubes-10000": [Metric("create_tubes_per_s", "create tubes/s", "higher", "create"),
                    Metric("put_ops_per_s", "random-tube puts/s", "higher", "put"),
                    Metric("put_p50_us", "put p50 us", "lower", "put"),
                    Metric("watch_per_s", "watch/s", "higher", "watch"),
                    Metric("drain_jobs_per_s", "drain jobs/s", "higher", "drain"),
                    Metric("drain_p50_us", "drain cmd p50 us", "lower", "drain")],
    "binlog-put": _PUT,
    "binlog-prd": _PRD,
    "big-bodies": [Metric("ingest_mib_s", "ingest MiB/s", "higher"),
                   Metric("egress_mib_s", "egress MiB/s", "higher"),
                   Metric("ingest_stall_max_ms", "probe max ms, in", "lower"),
                   Metric("ingest_probe_p99_ms", "probe p99 ms, in", "lower"),
                   Metric("egress_stall_max_ms", "probe max ms, out", "lower"),
                   Metric("egress_probe_p99_ms", "probe p99 ms, out", "lower"),
                   Metric("server_cpu_ms_in", "server CPU ms/body in", "lower"),
                   Metric("server_cpu_ms_out", "server CPU ms/body out", "lower"),
                   Metric("peak_rss_mib", "peak RSS, MiB", "lower")],
    "memory": [Metric("bytes_per_job", "RSS bytes/job", "lower", "fill"),
               Metric("fill_puts_per_s", "fill puts/s", "higher", "fill"),
               Metric("rss_after_mib", "RSS after, MiB", "lower", "fill")],
}
COMMON = [Metric("server_cpu_pct", "server CPU %", ""), Metric("load_cpu_pct", "load CPU % (max)", "")]
# --store-compare adds these: the whole server side's CPU per job (every
# process: beanstalkd, or Redis and the front ends), and Redis's and the
# front ends' shares of it.  A job is a put in put-*, a deleted job in prd-*
# and a put+reserve+delete (three commands) in latency.
STORE_COMMON = [Metric("server_us_per_job", "server CPU us/job", "lower"),
                Metric("redis_us_per_job", "redis CPU us/job", "lower"),
                Metric("fe_us_per_job", "front-end CPU us/job", "lower"),
                Metric("redis_cpu_pct", "redis CPU %", ""),
                Metric("fe_cpu_pct", "front-end CPU %", "")]
# Jobs per unit of each workload's throughput figure (the first of .throughput).
JOBS_PER_UNIT = {"latency": 1 / 3}
