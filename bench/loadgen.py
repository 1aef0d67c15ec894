"""Run load processes and merge what they report.

Two interchangeable generators speak one protocol (described at the top of
bench/loadgen.c): the C one, compiled on demand with gcc into a cache
directory, and the pure-Python one in bench/pyload.py, used when no compiler
is available (or on request with ``--loadgen python``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
C_SOURCE = HERE / "loadgen.c"
NBUCKETS = 1280


@dataclass
class Generator:
    kind: str  # "c" or "python"
    argv: list[str]
    note: str = ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "beanstalk-py-bench"


def build_c() -> tuple[Optional[str], str]:
    """Compile bench/loadgen.c once per source version; (path, "") or (None, why not)."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        return None, "no C compiler (gcc) found"
    source = C_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"beanstalk-py-bench-{os.getuid()}"):
        exe = folder / f"loadgen-{digest}"
        if os.access(exe, os.X_OK):
            return str(exe), ""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        tmp = folder / f".loadgen-{digest}.{os.getpid()}"
        try:
            done = subprocess.run(
                [compiler, "-O2", "-Wall", "-o", str(tmp), str(C_SOURCE)],
                capture_output=True, text=True, timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"compiling loadgen.c failed: {exc}"
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            return None, f"compiling loadgen.c failed: {done.stderr.strip()[:500]}"
        os.replace(tmp, exe)  # atomic: concurrent builds of the same source are harmless
        return str(exe), ""
    return None, "no writable cache directory for the compiled load generator"


def python_generator(note: str = "") -> Generator:
    return Generator("python", [sys.executable, "-m", "bench.pyload"], note)


def choose(kind: str = "auto") -> Generator:
    """The C generator when it can be built (unless kind == "python"), else the Python one."""
    if kind == "python":
        return python_generator()
    exe, why = build_c()
    if exe is not None:
        return Generator("c", [exe])
    if kind == "c":
        raise RuntimeError(why)
    return python_generator(f"{why}; using the slower pure-Python load generator")


# ---------------------------------------------------------------- histograms

def bucket_ns(i: int) -> float:
    """Middle of histogram bucket ``i`` in ns (inverse of bucket_of in loadgen.c / pyload.py)."""
    if i < 64:
        return float(i)
    e, sub = i // 32 + 4, i % 32 + 32
    shift = e - 5
    return float((sub << shift) + (1 << shift) / 2)


def percentile_us(hist: dict[int, int], p: float) -> Optional[float]:
    total = sum(hist.values())
    if not total:
        return None
    target = max(1, math.ceil(p * total))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= target:
            return bucket_ns(bucket) / 1000.0
    return bucket_ns(max(hist)) / 1000.0


# ---------------------------------------------------------------- running

@dataclass
class Phase:
    """One phase merged over every load process."""

    name: str
    count: int = 0
    cmds: int = 0
    errors: int = 0
    timeouts: int = 0
    rate: float = 0.0        # sum over processes of count / counted seconds
    secs: float = 0.0        # longest counted window
    wall_s: float = 0.0
    load_cpu_s: float = 0.0  # summed over processes
    load_peak_pct: float = 0.0  # busiest single process, % of one CPU
    server_cpu_s: Optional[float] = None
    hist: dict[int, int] = field(default_factory=dict)

    @property
    def load_cpu_pct(self) -> float:
        return 100.0 * self.load_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def server_cpu_pct(self) -> Optional[float]:
        if self.server_cpu_s is None or self.wall_s <= 0:
            return None
        return 100.0 * self.server_cpu_s / self.wall_s

    def pct_us(self, p: float) -> Optional[float]:
        return percentile_us(self.hist, p)

    def per_s(self, value: int) -> float:
        return value / self.secs if self.secs > 0 else 0.0


class LoadError(RuntimeError):
    pass


def _pin(cpus: Optional[set[int]]):
    def setup() -> None:
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)
    return setup


def run(gen: Generator, port: int, shares: list[list[str]], *, server_pid: Optional[int],
        cpus: Optional[set[int]], timeout: float, ports: Optional[list[int]] = None) -> dict[str, Phase]:
    """Start one load process per share (its flags), start them together, merge their phases.

    ``ports``: several servers (store-mode front ends), share i on ports[i % n].
    Every process is ours and is stopped by its PID if it overruns ``timeout``.
    """
    procs: list[subprocess.Popen] = []
    errs = []
    sel = selectors.DefaultSelector()
    try:
        for index, flags in enumerate(shares):
            err = tempfile.TemporaryFile()
            errs.append(err)
            share_port = ports[index % len(ports)] if ports else port
            argv = gen.argv + ["-p", str(share_port), "-S", str(server_pid or 0)] + flags
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    preexec_fn=_pin(cpus), cwd=HERE.parent)
            procs.append(proc)
            sel.register(proc.stdout, selectors.EVENT_READ, proc)
        # Wait until every process has connected, then give them one start time.
        deadline = time.monotonic() + 30
        waiting = set(procs)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError("load processes did not connect within 30 s")
            for key, _ in sel.select(left):
                proc = key.data
                line = proc.stdout.readline()
                if line.strip() != b"READY":
                    raise LoadError(f"load process failed to start: {_stderr(errs[procs.index(proc)])}")
                sel.unregister(proc.stdout)
                waiting.discard(proc)
        start = time.monotonic() + 0.05
        for proc in procs:
            proc.stdin.write(f"{start:.9f}\n".encode())
            proc.stdin.flush()  # communicate() closes it
        results = []
        deadline = time.monotonic() + timeout
        for proc, err in zip(procs, errs):
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise LoadError(f"load process {proc.pid} overran {timeout:.0f} s")
            if proc.returncode != 0:
                raise LoadError(f"load process exited {proc.returncode}: {_stderr(err)}")
            lines = [l for l in out.decode().splitlines() if l.startswith("{")]
            if not lines:
                raise LoadError(f"load process printed no result: {_stderr(err)}")
            results.append(json.loads(lines[-1]))
    finally:
        sel.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for err in errs:
            err.close()
    return merge(results)


def _stderr(handle) -> str:
    handle.seek(0)
    return handle.read().decode(errors="replace").strip()[-800:]


def merge(results: list[dict]) -> dict[str, Phase]:
    phases: dict[str, Phase] = {}
    for index, result in enumerate(results):
        for raw in result["phases"]:
            ph = phases.setdefault(raw["name"], Phase(raw["name"]))
            ph.count += raw["count"]
            ph.cmds += raw["cmds"]
            ph.errors += raw["errors"]
            ph.timeouts += raw["timeouts"]
            if raw["secs"] > 0:
                ph.rate += raw["count"] / raw["secs"]
            ph.secs = max(ph.secs, raw["secs"])
            ph.wall_s = max(ph.wall_s, raw["wall_s"])
            ph.load_cpu_s += raw["cpu_s"]
            if raw["wall_s"] > 0:
                ph.load_peak_pct = max(ph.load_peak_pct, 100.0 * raw["cpu_s"] / raw["wall_s"])
            if index == 0 and raw["server_cpu_s"] >= 0:
                ph.server_cpu_s = raw["server_cpu_s"]
            for bucket, n in raw["hist"]:
                ph.hist[bucket] = ph.hist.get(bucket, 0) + n
    return phases


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
