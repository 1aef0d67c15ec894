"""Smoke test of the harness's store mode (``python -m bench --store-compare``).

Tiny durations: it checks that the harness starts a private redis-server and
one and two front ends on it, spreads the load over both, measures something
sane (Redis CPU per job included), writes its JSON and stops what it started.
Runs only where redis-server is installed (.ci/run installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.bench,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")]


def test_store_compare_one_and_two_front_ends(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--store-compare", "--rounds", "1", "--sides", "memory,store1,store2",
         "--workload", "prd-25x25", "--workload", "latency", "--duration", "0.5", "--warmup", "0.2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store-1fe against beanstalk-py" in result.stdout
    assert "redis CPU us/job" in result.stdout
    files = list(tmp_path.glob("store-compare-*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert [s["key"] for s in doc["sides"]] == ["memory", "store1", "store2"]
    for workload, key in (("prd-25x25", "jobs_per_s"), ("latency", "ops_per_s")):
        runs = doc["results"][workload]["runs"]
        for side in ("memory", "store1", "store2"):
            (run,) = runs[side]
            assert "error" not in run, run
            m = run["metrics"]
            assert m[key] > 50, (workload, side, m[key])
            assert m["errors"] == 0
            assert m["server_us_per_job"] > 0
            if side == "memory":
                assert m.get("redis_us_per_job") is None
            else:
                assert m["redis_us_per_job"] > 0 and m["fe_us_per_job"] > 0
    # the saved run prints again
    replay = subprocess.run([sys.executable, "-m", "bench", "--report", str(files[0])],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert replay.returncode == 0, replay.stderr
    assert "store-2fe" in replay.stdout
