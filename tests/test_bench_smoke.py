"""Smoke test of the benchmark harness (bench/): short workloads against a real daemon.

The benchmarks themselves are not run in CI; this only checks that the
harness runs, measures something sane and writes its JSON, with both load
generators (C when gcc is available, and the pure-Python fallback).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen, pyload, report  # noqa: E402


def run_bench(port: int, out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--target", f"127.0.0.1:{port}",
         "--workload", "put-pipelined-1", "--workload", "latency",
         "--duration", "1", "--warmup", "0.2", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = list(out.glob("target-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def check_results(doc: dict, min_puts: float) -> None:
    put = doc["results"]["put-pipelined-1"]
    assert put["puts_per_s"] > min_puts
    assert put["errors"] == 0
    assert 0 < put["p50_us"] <= put["p99_us"] <= put["p999_us"]
    lat = doc["results"]["latency"]
    assert lat["ops_per_s"] > 100
    assert lat["errors"] == 0
    assert 0 < lat["p50_us"] <= lat["p99_us"] <= lat["p999_us"] < 1_000_000
    for cmd in ("put", "reserve", "delete"):
        assert lat[f"{cmd}_p50_us"] > 0
    # the server's PID was found from its port, so its CPU time is reported
    assert put["server_cpu_pct"] is not None and put["server_cpu_pct"] > 0


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")
def test_bench_target_with_c_load_generator(server, tmp_path) -> None:
    doc = run_bench(server.port, tmp_path)
    assert doc["host"]["loadgen"] == "c"
    check_results(doc, min_puts=5000)


def test_bench_target_with_python_load_generator(server, tmp_path) -> None:
    doc = run_bench(server.port, tmp_path, "--loadgen", "python")
    assert doc["host"]["loadgen"] == "python"
    check_results(doc, min_puts=1000)


def test_histogram_buckets_round_trip() -> None:
    for ns in (0, 1, 31, 32, 63, 64, 65, 1000, 55_000, 12_345_678, 10**12):
        middle = loadgen.bucket_ns(pyload.bucket_of(ns))
        assert abs(middle - ns) <= max(1.0, ns * 0.02), ns
    hist: dict[int, int] = {}
    for us in range(1, 101):
        bucket = pyload.bucket_of(us * 1000)
        hist[bucket] = hist.get(bucket, 0) + 1
    assert 49 <= loadgen.percentile_us(hist, 0.5) <= 51
    assert 98 <= loadgen.percentile_us(hist, 0.99) <= 101


def test_summary_and_table_of_a_comparison(tmp_path) -> None:
    def run(rnd: int, puts: float) -> dict:
        return {"round": rnd, "saturated": [], "metrics": {"puts_per_s": puts, "p50_us": 100.0}}

    entry = {
        "workload": "put-pipelined-1",
        "runs": {"a": [run(1, 300.0), run(2, 500.0), {"round": 3, "error": "boom"}],
                 "b": [run(1, 100.0), run(2, 100.0), run(3, 100.0)]},
        "unsupported": {"a": None, "b": None},
    }
    report.summarize(entry)
    s = entry["summary"]["puts_per_s"]
    assert (s["a"], s["b"], s["ratio"], s["n"]) == (400.0, 100.0, 4.0, 2)
    binlog = {"workload": "binlog-put", "runs": {"a": [], "b": [run(1, 100.0)]},
              "unsupported": {"a": "exited 1 at start: -b is not implemented", "b": None}}
    report.summarize(binlog)
    text = report.table({"put-pipelined-1": entry, "binlog-put": binlog}, ("beanstalk-py", "beanstalkd"))
    assert "4.00x" in text and "unsupported" in text and "1 failed run(s): boom" in text
    # Which build each side ran (servers.build reads it from -v; beanstalkd has none).
    assert report.builds_text({"beanstalk-py": "compiled", "beanstalkd": None}) == ", build: beanstalk-py compiled"
    assert report.builds_text(None) == ""
