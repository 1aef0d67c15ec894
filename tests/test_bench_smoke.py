"""Smoke test of the benchmark harness: one short workload against a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_target_runs_and_writes_json(server, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--target", f"127.0.0.1:{server.port}",
         "--workload", "latency", "--workload", "put-pipelined-1", "--duration", "0.5",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    files = list(tmp_path.glob("target-*.json"))
    assert len(files) == 1
    results = json.loads(files[0].read_text())["results"]
    assert results["latency"]["ops_per_s"] > 0 and results["latency"]["p50_us"] > 0
    assert results["put-pipelined-1"]["ops_per_s"] > 1000
