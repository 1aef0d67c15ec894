"""Large bodies: how fast big jobs go in and out, and how long other clients wait meanwhile.

The ``big-bodies`` workload (issue 12's "large bodies" row): the server runs
with ``-z 100 MiB``; one connection puts five jobs of 50 MiB, one after the
other (each put waits for its INSERTED), then reserves and deletes them, one
at a time, reading every reply into a preallocated buffer.  Meanwhile a probe
process on its own connection (its own tube) does a small put,
``reserve-with-timeout 0`` and delete, one request at a time, every 2 ms, and
times each round trip.

Reported: ingest MiB/s (body bytes over the time from the first put's first
byte to the last INSERTED), egress MiB/s (from each reserve's request to the
last byte of its reply, summed over the five), and the probe's worst and p99
round trip while the bodies stream in and while they stream out: the longest
any other client was kept waiting.

Run standalone against a running server (started with ``-z 104857600`` or
more): ``python -m bench.bigbody --port 11300``.  It prints one JSON line.
The probe is a second process (``--probe``) so that it never waits for the
mover's interpreter; both use the one system-wide monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Optional

MIB = 1 << 20
BIG_SIZE = 50 * MIB      # one body
BIG_COUNT = 5            # bodies put, then reserved
MAX_JOB_SIZE = 100 * MIB  # the servers' -z
PROBE_INTERVAL = 0.002   # seconds between the probe's rounds


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Reader:
    """Replies off one blocking socket: lines, and bodies into a given buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def line(self) -> bytes:
        while True:
            pos = self.buf.find(b"\r\n")
            if pos >= 0:
                line = bytes(self.buf[:pos])
                del self.buf[: pos + 2]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk

    def body_into(self, view: memoryview) -> None:
        have = min(len(self.buf), len(view))
        view[:have] = self.buf[:have]
        del self.buf[:have]
        while have < len(view):
            n = self.sock.recv_into(view[have:])
            if not n:
                raise ConnectionError("server closed the connection")
            have += n

    def ask(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.line()


# ---------------------------------------------------------------- the probe

def probe(port: int, interval: float) -> int:
    """Small put/reserve/delete round trips until stdin closes; prints the samples."""
    sock = _connect(port)
    r = _Reader(sock)
    for request, want in ((b"use probe\r\n", b"USING probe"), (b"watch probe\r\n", b"WATCHING 2"),
                          (b"ignore default\r\n", b"WATCHING 1")):
        got = r.ask(request)
        if got != want:
            raise RuntimeError(f"probe: {request!r} -> {got!r}")
    print("READY", flush=True)
    samples: list[tuple[int, int]] = []  # (send time ns, round trip ns)
    errors = 0
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], interval)
        if ready:
            break  # the mover is done (stdin closed)
        for request in (b"put 0 0 60 5\r\nprobe\r\n", b"reserve-with-timeout 0\r\n", None):
            if request is None:
                request = b"delete %d\r\n" % job_id
            t0 = time.monotonic_ns()
            sock.sendall(request)
            reply = r.line()
            if reply.startswith(b"RESERVED "):
                job_id = int(reply.split()[1])
                r.line()  # the body
            elif reply.startswith(b"INSERTED "):
                job_id = int(reply.split()[1])
            elif reply != b"DELETED":
                errors += 1
            samples.append((t0, time.monotonic_ns() - t0))
    sock.close()
    print(json.dumps({"samples": samples, "errors": errors}), flush=True)
    return 0


# ---------------------------------------------------------------- the mover

def _window(samples: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Round trips that overlap [start, end]."""
    return [rtt for t0, rtt in samples if t0 <= end and t0 + rtt >= start]


def _pct(values: list[int], p: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1e6


def _cpu_s(pid: Optional[int]) -> Optional[float]:
    """utime + stime of the server, in seconds (None: unknown)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms_per_body(before: Optional[float], after: Optional[float], count: int) -> Optional[float]:
    return None if before is None or after is None else (after - before) * 1000 / count


def run(port: int, size: int = BIG_SIZE, count: int = BIG_COUNT,
        interval: float = PROBE_INTERVAL, pid: Optional[int] = None) -> dict:
    """The whole workload against a server on ``port`` (PID ``pid``, for its
    CPU time per body when known); a flat dict of figures."""
    prober = subprocess.Popen(
        [sys.executable, "-m", "bench.bigbody", "--probe", "--port", str(port),
         "--interval", str(interval)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert prober.stdout is not None and prober.stdin is not None
        if prober.stdout.readline().strip() != b"READY":
            raise RuntimeError("the probe did not start")
        sock = _connect(port)
        r = _Reader(sock)
        if r.ask(b"use big\r\n") != b"USING big":
            raise RuntimeError("use big failed")
        body = bytes(range(256)) * (size // 256) + b"x" * (size % 256) + b"\r\n"
        header = b"put 0 0 600 %d\r\n" % size
        time.sleep(0.1)  # a few probe rounds before
        ids = []
        cpu_in = _cpu_s(pid)
        in_start = time.monotonic_ns()
        for _ in range(count):
            sock.sendall(header)
            sock.sendall(body)
            reply = r.line()
            if not reply.startswith(b"INSERTED "):
                raise RuntimeError(f"put of {size} bytes: {reply!r}"
                                   + (" (start the server with a larger -z)" if reply == b"JOB_TOO_BIG" else ""))
            ids.append(int(reply.split()[1]))
        in_end = time.monotonic_ns()
        cpu_in_end = _cpu_s(pid)
        time.sleep(0.1)
        for request, want in ((b"watch big\r\n", b"WATCHING 2"), (b"ignore default\r\n", b"WATCHING 1")):
            if r.ask(request) != want:
                raise RuntimeError(f"{request!r} failed")
        into = bytearray(size + 2)
        view = memoryview(into)
        out_ns = 0
        out_windows = []
        cpu_out = 0.0
        for _ in range(count):
            cpu0 = _cpu_s(pid)
            t0 = time.monotonic_ns()
            sock.sendall(b"reserve-with-timeout 10\r\n")
            reply = r.line()
            if not reply.startswith(b"RESERVED ") or int(reply.split()[2]) != size:
                raise RuntimeError(f"reserve: {reply!r}")
            r.body_into(view)
            t1 = time.monotonic_ns()
            out_ns += t1 - t0
            out_windows.append((t0, t1))
            cpu1 = _cpu_s(pid)
            if cpu0 is not None and cpu1 is not None:
                cpu_out += cpu1 - cpu0
            if into != body:  # outside the timed part
                raise RuntimeError("a reserved body differs from the one put")
            if r.ask(b"delete %s\r\n" % reply.split()[1]) != b"DELETED":
                raise RuntimeError("delete failed")
        time.sleep(0.1)
        sock.close()
        out, _ = prober.communicate(timeout=30)
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.wait()
    doc = json.loads([line for line in out.decode().splitlines() if line.startswith("{")][-1])
    samples = [(int(a), int(b)) for a, b in doc["samples"]]
    ingest = _window(samples, in_start, in_end)
    egress = [rtt for start, end in out_windows for rtt in _window(samples, start, end)]
    total = count * size
    return {
        "ingest_mib_s": total / MIB / ((in_end - in_start) / 1e9),
        "egress_mib_s": total / MIB / (out_ns / 1e9),
        "ingest_stall_max_ms": _pct(ingest, 1.0),
        "ingest_probe_p99_ms": _pct(ingest, 0.99),
        "egress_stall_max_ms": _pct(egress, 1.0),
        "egress_probe_p99_ms": _pct(egress, 0.99),
        "stall_max_ms": max(v for v in (_pct(ingest, 1.0), _pct(egress, 1.0), 0.0) if v is not None),
        # the server's CPU time (user + system, 10 ms ticks) per body
        "server_cpu_ms_in": _ms_per_body(cpu_in, cpu_in_end, count),
        "server_cpu_ms_out": _ms_per_body(0.0, cpu_out, count) if pid else None,
        "probe_rounds": len(ingest) + len(egress),
        "probe_errors": doc["errors"],
        "ingest_s": (in_end - in_start) / 1e9,
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bigbody", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, default=BIG_SIZE, help="bytes per body (50 MiB)")
    p.add_argument("--count", type=int, default=BIG_COUNT, help="bodies (5)")
    p.add_argument("--interval", type=float, default=PROBE_INTERVAL, help="probe pause, s (0.002)")
    p.add_argument("--pid", type=int, help="the server's PID, for its CPU time per body")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        return probe(args.port, args.interval)
    print(json.dumps(run(args.port, args.size, args.count, args.interval, args.pid)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
