"""python -m bench: run workloads against one server, or beanstalk-py and beanstalkd side by side."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from typing import Optional

from . import servers
from .workloads import BINLOG_WORKLOADS, WORKLOADS

ALL = list(WORKLOADS) + list(BINLOG_WORKLOADS)


def run_one(server: servers.Server, workload: str, duration: float) -> dict:
    """One fresh server, one workload; adds the server's CPU use beside the load's."""
    server.start()
    try:
        cpu0 = server.cpu_seconds()
        metrics = WORKLOADS[BINLOG_WORKLOADS.get(workload, workload)](server.port, duration)
        metrics["server_cpu_s"] = server.cpu_seconds() - cpu0
    finally:
        server.stop()
    load_capacity = duration * len(servers.load_cpus())
    metrics["load_saturated"] = metrics["load_cpu_s"] > 0.9 * load_capacity
    return metrics


def compare(workloads: list[str], rounds: int, duration: float, aa: bool) -> dict:
    """A B A B with fresh servers; medians per server and the median of per-round ratios."""
    results: dict = {}
    for workload in workloads:
        binlog = workload in BINLOG_WORKLOADS
        make_a = servers.beanstalkd if aa else servers.beanstalk_py
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        for _ in range(rounds):
            runs["a"].append(run_one(make_a(binlog), workload, duration))
            runs["b"].append(run_one(servers.beanstalkd(binlog), workload, duration))
        entry: dict = {"rounds": runs}
        for metric in ("ops_per_s", "p50_us", "p99_us", "p999_us"):
            a = [r[metric] for r in runs["a"]]
            b = [r[metric] for r in runs["b"]]
            ratios = [x / y for x, y in zip(a, b) if y]
            entry[metric] = {
                "a_median": statistics.median(a),
                "b_median": statistics.median(b),
                "ratio_median": statistics.median(ratios) if ratios else None,
            }
        entry["load_saturated"] = any(r["load_saturated"] for r in runs["a"] + runs["b"])
        results[workload] = entry
        _print_row(workload, entry)
    return results


def _print_row(workload: str, entry: dict) -> None:
    ops = entry["ops_per_s"]
    p50 = entry["p50_us"]
    warn = "  (load side saturated: treat as a lower bound)" if entry["load_saturated"] else ""
    print(
        f"{workload:18} {ops['a_median']:>11.0f} {ops['b_median']:>11.0f} {ops['ratio_median'] or 0:>6.2f}x"
        f" {p50['a_median']:>9.0f} {p50['b_median']:>9.0f} {p50['ratio_median'] or 0:>6.2f}x{warn}",
        flush=True,
    )


def chart(results: dict, path: str, labels: tuple[str, str]) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'): no chart"
    names = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = range(len(names))
    for offset, key, label in ((-0.2, "a_median", labels[0]), (0.2, "b_median", labels[1])):
        left.bar([x + offset for x in xs], [results[n]["ops_per_s"][key] for n in names], 0.4, label=label)
        right.bar([x + offset for x in xs], [results[n]["p50_us"][key] for n in names], 0.4, label=label)
    for axis, title in ((left, "throughput (ops/s, higher is better)"), (right, "p50 latency (us, lower is better)")):
        axis.set_xticks(list(xs), names, rotation=30, ha="right")
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path)
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--target", help="HOST:PORT of a running server (loopback only)")
    parser.add_argument("--compare", action="store_true", help="beanstalk-py vs beanstalkd, A B A B")
    parser.add_argument("--aa", action="store_true", help="beanstalkd against itself (noise)")
    parser.add_argument("--workload", action="append", choices=ALL, help="repeatable; default all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--out", default="bench/results", help="directory for JSON and PNG")
    args = parser.parse_args(argv)
    workloads = args.workload or ALL
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.target:
        host, _, port = args.target.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            parser.error("--target must be a loopback address")
        out = {}
        for workload in workloads:
            if workload in BINLOG_WORKLOADS:
                continue
            out[workload] = WORKLOADS[workload](int(port), args.duration)
            print(f"{workload:18} {out[workload]['ops_per_s']:>11.0f} ops/s  p50 {out[workload]['p50_us']:.0f} us", flush=True)
        path = os.path.join(args.out, f"target-{stamp}.json")
    elif args.compare or args.aa:
        labels = ("beanstalkd", "beanstalkd") if args.aa else ("beanstalk-py", "beanstalkd")
        print(f"{'workload':18} {labels[0]+' ops/s':>11} {labels[1]+' ops/s':>11} {'ratio':>7}"
              f" {'p50 us':>9} {'p50 us':>9} {'ratio':>7}")
        out = compare(workloads, args.rounds, args.duration, args.aa)
        path = os.path.join(args.out, f"{'aa' if args.aa else 'compare'}-{stamp}.json")
        note = chart(out, path.replace(".json", ".png"), labels)
        if note:
            print(note)
    else:
        parser.error("give --target HOST:PORT, --compare or --aa")
    with open(path, "w") as handle:
        json.dump({"date": stamp, "results": out}, handle, indent=1, default=str)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
