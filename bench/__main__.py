"""python -m bench: benchmark one running server, or beanstalk-py against beanstalkd side by side.

  python -m bench --target 127.0.0.1:11300 [--workload NAME ...]
  python -m bench --compare [--rounds 3] [--workload NAME ...] [--duration 3]
  python -m bench --aa                      # beanstalkd against itself: the noise
  python -m bench --scrape [--rounds 3]     # beanstalk-py watched (/metrics, console) vs not
  python -m bench --store-compare [--rounds 3]  # --store redis:// (1 and 2 front ends) vs beanstalkd
                                                # and in-memory beanstalk-py

See bench/README.md for what each workload measures and how to read the results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
import time
from typing import Optional

from . import loadgen, report, scrape, servers, storemode
from .workloads import WORKLOADS, Ctx, Unavailable

HERE = os.path.dirname(os.path.abspath(__file__))
# --scrape's default: the two 50-connection workloads ("put50" and "prd50").
SCRAPE_WORKLOADS = ["put-pipelined-50", "prd-25x25"]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--target", metavar="HOST:PORT", help="a running server on a loopback address")
    mode.add_argument("--compare", action="store_true", help="beanstalk-py against beanstalkd, A B A B")
    mode.add_argument("--aa", action="store_true", help="beanstalkd against beanstalkd (shows the noise)")
    mode.add_argument("--scrape", action="store_true",
                      help="beanstalk-py with --http, /metrics scraped every second and the console open, "
                           "against the same without them, A B A B (default workloads: "
                           f"{', '.join(SCRAPE_WORKLOADS)})")
    mode.add_argument("--store-compare", action="store_true",
                      help="beanstalk-py --store redis:// on a private redis-server (one and two front ends) "
                           "against beanstalkd and in-memory beanstalk-py (default workloads: "
                           f"{', '.join(storemode.STORE_WORKLOADS)}); needs redis-server on PATH")
    mode.add_argument("--report", metavar="JSON", help="print the table and redraw the chart of a saved run")
    p.add_argument("--workload", action="append", choices=list(WORKLOADS), metavar="NAME",
                   help=f"repeatable; default: all. One of: {', '.join(WORKLOADS)}")
    p.add_argument("--rounds", type=int, default=3, help="A B rounds per workload (default 3)")
    p.add_argument("--duration", type=float, default=3.0, help="counted seconds per phase (default 3)")
    p.add_argument("--warmup", type=float, default=0.5, help="uncounted seconds before each phase (0.5)")
    p.add_argument("--jobs", type=int, default=1_000_000, help="jobs for the memory workload (1,000,000)")
    p.add_argument("--limit", type=float, default=60.0,
                   help="bound in seconds on untimed phases: tube creation, set-up, memory fill (60)")
    p.add_argument("--loadgen", choices=["auto", "c", "python"], default="auto",
                   help="load generator: C (compiled on demand with gcc) or pure Python; auto = C if possible")
    p.add_argument("--load-procs", type=int, default=0,
                   help="most load processes per workload (default: one per load CPU)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to CPUs")
    p.add_argument("--pid", type=int, help="--target: the server's PID (default: looked up from the port)")
    p.add_argument("--beanstalkd", help="path of the reference beanstalkd (default: from PATH)")
    p.add_argument("--candidate", metavar="CMD",
                   help="command line of the server to compare instead of beanstalk-py, with {port} "
                        "where the port goes (e.g. 'beanstalkd -l 127.0.0.1 -p {port} -z 100000')")
    p.add_argument("--store-front-ends", type=lambda v: [int(n) for n in v.split(",")], default=[1, 2],
                   metavar="N[,N]", help="--store-compare: front-end counts to run (default 1,2)")
    p.add_argument("--redis-cpu", choices=["server", "load", "any"], default="server",
                   help="--store-compare: where redis-server runs: on the server's CPU with the front "
                        "ends (default), on the load's, or unpinned")
    p.add_argument("--sides", type=lambda v: v.split(","), metavar="KEY[,KEY]",
                   help="--store-compare: only these sides (beanstalkd, memory, store1, store2)")
    p.add_argument("--binlog-base", help="where the binlog workloads make their temp dirs (default: $TMPDIR)")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="directory for JSON and PNG")
    p.add_argument("--chart", help="path of the PNG chart (default: next to the JSON)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.jobs < 1 or args.limit <= 0:
        p.error("--rounds, --duration, --jobs and --limit must be positive")
    if args.candidate and "{port}" not in args.candidate:
        p.error("--candidate needs {port} in its command line")
    if args.target:
        host, _, port = args.target.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            p.error("--target must be 127.0.0.1:PORT (the load generators connect to loopback only)")
        if not port.isdigit():
            p.error("--target needs HOST:PORT")
        args.port = int(port)
    return args


def host_info(gen: loadgen.Generator, server_cpus, load_cpus) -> dict:
    return {
        "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "loadgen": gen.kind, "server_cpus": sorted(server_cpus or []), "load_cpus": sorted(load_cpus or []),
    }


def run_workload(name: str, ctx: Ctx, load_cpu_count: int) -> dict:
    """One workload against one server; metrics plus the phases where the load saturated."""
    metrics = WORKLOADS[name].run(ctx)
    return {"metrics": metrics, "saturated": report.saturated_phases(metrics, load_cpu_count)}


def headline(name: str, metrics: dict) -> str:
    key = (WORKLOADS[name].throughput or WORKLOADS[name].latency)[0]
    lat = WORKLOADS[name].latency[0] if WORKLOADS[name].latency else None
    text = f"{key}={report.fmt(metrics.get(key))}"
    if lat and lat != key:
        text += f" {lat}={report.fmt(metrics.get(lat))}"
    return text + (f" server={report.fmt(metrics.get('server_cpu_pct'))}%"
                   f" load={report.fmt(metrics.get('load_cpu_pct'))}%")


def candidate(args: argparse.Namespace) -> tuple[str, list[str]]:
    """(label, argv) of the server measured against beanstalkd."""
    if args.candidate:
        return "candidate", shlex.split(args.candidate)
    return "beanstalk-py", servers.beanstalk_py_argv()


def replay(args: argparse.Namespace) -> int:
    """--report: the table (and A/A noise) of a saved comparison, and its chart again."""
    with open(args.report) as handle:
        doc = json.load(handle)
    if doc.get("mode") == "store-compare":
        print(f"# store-compare of {doc['date']} ({doc.get('elapsed_s', '?')} s), "
              f"load generator: {doc['host']['loadgen']}, versions: {doc.get('versions')}")
        storemode.print_tables(doc["results"], storemode.sides_of(doc))
        return 0
    if doc.get("mode") not in ("compare", "aa", "scrape"):
        print(json.dumps(doc.get("results", {}), indent=1))
        return 0
    labels = tuple(doc["labels"])
    print(f"# {doc['mode']} of {doc['date']} ({doc.get('elapsed_s', '?')} s), "
          f"load generator: {doc['host']['loadgen']}, versions: {doc.get('versions')}"
          f"{report.builds_text(doc.get('builds'))}")
    print(report.table(doc["results"], labels))
    if doc["mode"] == "aa":
        print(report.noise_text(report.noise(doc["results"])))
    if doc["mode"] == "scrape":
        print(scrape.summary_text(doc["results"], WORKLOADS, labels))
    png = args.chart or args.report[:-5] + ".png"
    rounds = doc["settings"]["rounds"]
    title = (f"{labels[0]} vs {labels[1]}: medians of {rounds} rounds, bars = min-max "
             f"({doc['date'][:10]}, {doc['host']['loadgen']} load generator)")
    note = report.chart(doc["results"], png, labels, title)
    print(note if note else f"wrote {png}")
    return 0


def compare(args: argparse.Namespace, gen: loadgen.Generator, workloads: list[str]) -> tuple[dict, tuple]:
    server_cpus, load_cpus = servers.cpu_split(not args.no_pin)
    if load_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, load_cpus)  # keep the harness itself off the server's CPU
    if args.scrape:
        # The same command line on both sides: only the watching differs.
        watched = servers.beanstalk_py_http_argv()
        sides = {"a": ("watched", watched), "b": ("plain", watched)}
        labels = ("watched", "plain")
    else:
        ref = servers.beanstalkd_argv(args.beanstalkd)
        sides = {"a": ("beanstalkd", ref) if args.aa else candidate(args), "b": ("beanstalkd", ref)}
        labels = ("beanstalkd-A", "beanstalkd-B") if args.aa else (sides["a"][0], "beanstalkd")
    procs = args.load_procs or max(1, len(load_cpus or os.sched_getaffinity(0)))
    results: dict = {}
    for name in workloads:
        workload = WORKLOADS[name]
        entry = {"workload": name, "summary_text": workload.summary, "binlog": workload.binlog,
                 "runs": {"a": [], "b": []}, "unsupported": {"a": None, "b": None}}
        for rnd in range(1, args.rounds + 1):
            for side in ("a", "b"):
                label = labels[0 if side == "a" else 1]
                if entry["unsupported"][side]:
                    continue
                server = servers.Server(sides[side][0], sides[side][1], binlog=workload.binlog,
                                        binlog_base=args.binlog_base, cpus=server_cpus,
                                        extra=workload.server_args)
                t0 = time.monotonic()
                try:
                    server.start()
                except servers.Unsupported as exc:
                    entry["unsupported"][side] = str(exc)
                    print(f"  {name} round {rnd} {label}: unsupported ({exc})", flush=True)
                    continue
                except Exception as exc:
                    server.stop()
                    entry["runs"][side].append({"round": rnd, "error": f"start: {exc}"})
                    print(f"  {name} round {rnd} {label}: FAILED to start: {exc}", flush=True)
                    continue
                try:
                    ctx = Ctx(port=server.port, pid=server.pid, gen=gen, duration=args.duration,
                              warmup=args.warmup, load_cpus=load_cpus, procs=procs, jobs=args.jobs,
                              limit=args.limit)
                    watched = args.scrape and side == "a" and server.http_port is not None
                    scraper = scrape.Scraper(server.http_port) if watched and server.http_port else None
                    with scraper or contextlib.nullcontext():
                        run = {"round": rnd, **run_workload(name, ctx, len(load_cpus or [0]))}
                    if scraper is not None:
                        run["metrics"].update(scraper.figures())
                    if not server.alive():
                        raise RuntimeError(f"the server exited during the run: {server.log_tail()}")
                    if run["metrics"].get("errors"):
                        run["warning"] = f"{run['metrics']['errors']} errors (see load/server logs)"
                    entry["runs"][side].append(run)
                    print(f"  {name} round {rnd} {label}: {headline(name, run['metrics'])}"
                          f"{' [load saturated: ' + ','.join(run['saturated']) + ']' if run['saturated'] else ''}"
                          f"{' [' + run['warning'] + ']' if 'warning' in run else ''}"
                          f" ({time.monotonic() - t0:.1f} s)", flush=True)
                except Exception as exc:  # one failed run is reported, not fatal
                    entry["runs"][side].append({"round": rnd, "error": str(exc)})
                    print(f"  {name} round {rnd} {label}: FAILED: {exc}", flush=True)
                finally:
                    server.stop()
        report.summarize(entry)
        results[name] = entry
    return results, labels


def target(args: argparse.Namespace, gen: loadgen.Generator, workloads: list[str]) -> tuple[dict, Optional[int]]:
    pid = args.pid or servers.find_listener_pid(args.port)
    print(f"# target 127.0.0.1:{args.port}, server PID {pid or 'unknown (no server CPU or memory figures)'}, "
          f"load generator: {gen.kind}", flush=True)
    results: dict = {}
    procs = args.load_procs or 1
    for name in workloads:
        workload = WORKLOADS[name]
        if workload.binlog:
            results[name] = {"skipped": "needs a server started with -b: use --compare"}
            print(f"{name:17} skipped: {results[name]['skipped']}", flush=True)
            continue
        ctx = Ctx(port=args.port, pid=pid, gen=gen, duration=args.duration, warmup=args.warmup,
                  procs=procs, jobs=args.jobs, limit=args.limit)
        try:
            run = run_workload(name, ctx, len(os.sched_getaffinity(0)))
            results[name] = run["metrics"]
            results[name]["saturated"] = run["saturated"]
            print(f"{name:17} {headline(name, run['metrics'])}"
                  f"{' [load saturated: ' + ','.join(run['saturated']) + ']' if run['saturated'] else ''}",
                  flush=True)
        except Unavailable as exc:
            results[name] = {"skipped": str(exc)}
            print(f"{name:17} skipped: {exc}", flush=True)
        except Exception as exc:
            results[name] = {"error": str(exc)}
            print(f"{name:17} FAILED: {exc}", flush=True)
    return results, pid


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.report:
        return replay(args)
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    gen = loadgen.choose(args.loadgen)
    if gen.note:
        print(f"note: {gen.note}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    doc: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "settings": {k: v for k, v in vars(args).items() if k not in ("out", "chart")}}
    if args.target:
        workloads = args.workload or [n for n, w in WORKLOADS.items() if w.on_target]
        doc["mode"] = "target"
        doc["host"] = host_info(gen, None, None)
        doc["results"], doc["server_pid"] = target(args, gen, workloads)
        path = os.path.join(args.out, f"target-{stamp}.json")
        failed = any("error" in r for r in doc["results"].values())
    elif args.store_compare:
        if not servers.redis_available():
            print("redis-server is not installed (apt-get install -y redis-server)", file=sys.stderr)
            return 2
        workloads = args.workload or storemode.STORE_WORKLOADS
        server_cpus, load_cpus = servers.cpu_split(not args.no_pin)
        doc["mode"] = "store-compare"
        doc["host"] = host_info(gen, server_cpus, load_cpus)
        chosen = storemode.sides(args)
        doc["versions"] = {"beanstalk-py": servers.version(servers.beanstalk_py_argv()),
                           "redis-server": servers.version(["redis-server"])}
        if any(side.key == "beanstalkd" for side in chosen):
            doc["versions"]["beanstalkd"] = servers.version(servers.beanstalkd_argv(args.beanstalkd))
        print(f"# store-compare: {len(workloads)} workload(s) x {args.rounds} round(s), "
              f"{args.duration:g} s + {args.warmup:g} s warm-up per phase, load generator: {gen.kind}, "
              f"server side (beanstalkd, or redis-server and the front ends) on CPUs "
              f"{sorted(server_cpus or []) or 'any'}, load CPUs {sorted(load_cpus or []) or 'any'}",
              flush=True)
        results = storemode.run(args, gen, workloads, server_cpus, load_cpus, chosen)
        doc["sides"] = [{"key": s.key, "label": s.label, "front_ends": s.front_ends} for s in chosen]
        doc["results"] = results
        print()
        storemode.print_tables(results, chosen)
        path = os.path.join(args.out, f"store-compare-{stamp}.json")
        failed = any("error" in r for e in results.values() for runs in e["runs"].values() for r in runs)
    else:
        workloads = args.workload or (SCRAPE_WORKLOADS if args.scrape else list(WORKLOADS))
        server_cpus, load_cpus = servers.cpu_split(not args.no_pin)
        doc["mode"] = "aa" if args.aa else "scrape" if args.scrape else "compare"
        doc["host"] = host_info(gen, server_cpus, load_cpus)
        if args.scrape:
            doc["versions"] = {"beanstalk-py": servers.version(servers.beanstalk_py_argv())}
            doc["builds"] = {"beanstalk-py": servers.build(servers.beanstalk_py_argv())}
        else:
            ref = servers.beanstalkd_argv(args.beanstalkd)
            doc["versions"] = {"beanstalkd": servers.version(ref)}
        if not args.aa and not args.scrape:
            label, argv_a = candidate(args)
            doc["versions"][label] = servers.version(argv_a) if not args.candidate else args.candidate
            # "compiled" or "pure" (mypyc or not), as each side's -v says (None: beanstalkd).
            doc["builds"] = {label: servers.build(argv_a), "beanstalkd": servers.build(ref)}
        print(f"# {doc['mode']}: {len(workloads)} workload(s) x {args.rounds} round(s), "
              f"{args.duration:g} s + {args.warmup:g} s warm-up per phase, load generator: {gen.kind}, "
              f"server CPUs {sorted(server_cpus or []) or 'any'}, load CPUs {sorted(load_cpus or []) or 'any'}"
              f"{report.builds_text(doc.get('builds'))}", flush=True)
        results, labels = compare(args, gen, workloads)
        doc["labels"] = labels
        doc["results"] = results
        print()
        print(report.table(results, labels))
        if args.aa:
            doc["noise"] = report.noise(results)
            print(report.noise_text(doc["noise"]))
        if args.scrape:
            print(scrape.summary_text(results, WORKLOADS, labels))
        print("ratio = median over rounds of (" + labels[0] + " / " + labels[1] +
              ") in the same round; per-round = the smallest and largest of those ratios")
        path = os.path.join(args.out, f"{doc['mode']}-{stamp}.json")
        png = args.chart or path[:-5] + ".png"
        title = (f"{labels[0]} vs {labels[1]}: medians of {args.rounds} rounds, bars = min-max "
                 f"({doc['date'][:10]}, {gen.kind} load generator)")
        note = report.chart(results, png, labels, title)
        print(note if note else f"wrote {png}")
        failed = False
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    report.write_json(path, doc)
    print(f"wrote {path} ({doc['elapsed_s']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
