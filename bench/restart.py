"""python -m bench.restart: how long a restart with a binlog takes, against beanstalkd.

For each server (beanstalk-py and beanstalkd, alternately, A B A B): start it
with ``-b`` in an empty directory, put ``--jobs`` jobs of ``--size`` bytes
(pipelined, 1,000 a batch, spread over 10 tubes), SIGKILL it, start it again
on the same directory and time from the exec to its first reply (a
``stats``, polled every 5 ms), then check that every job is back
(``current-jobs-ready``).  The binlog files are each server's own format.
Reported: seconds to the first reply, medians over rounds, and the ratio
beanstalk-py / beanstalkd (lower is better).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

from .servers import REPO, beanstalk_py_argv, beanstalkd_argv, cpu_split, free_port, proc_cpu_s

BATCH = 1000
TUBES = 10


def _read_replies(sock: socket.socket, count: int, buf: bytearray) -> None:
    while buf.count(b"\r\n") < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    lines = buf.split(b"\r\n")
    if any(not line.startswith((b"INSERTED", b"USING")) for line in lines[:count]):
        raise RuntimeError(f"unexpected reply: {lines[:3]!r}")
    del buf[:]
    buf += b"\r\n".join(lines[count:])


def fill(port: int, jobs: int, size: int) -> None:
    """Put ``jobs`` jobs of ``size`` bytes, spread over the tubes, pipelined."""
    body = b"x" * size
    put = b"put 0 0 120 %d\r\n%s\r\n" % (size, body)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        buf = bytearray()
        done = 0
        tube = 0
        while done < jobs:
            count = min(BATCH, jobs - done)
            sock.sendall(b"use t%d\r\n" % tube + put * count)
            _read_replies(sock, count + 1, buf)
            done += count
            tube = (tube + 1) % TUBES


def first_reply(port: int, started: float, timeout: float) -> tuple[float, int]:
    """Seconds from ``started`` to the first `stats` reply, and current-jobs-ready."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(b"stats\r\n")
                data = b""
                while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                elapsed = time.monotonic() - started
                for line in data.split(b"\n"):
                    if line.startswith(b"current-jobs-ready:"):
                        return elapsed, int(line.split()[1])
                raise RuntimeError(f"no stats in {data[:100]!r}")
        except (ConnectionRefusedError, ConnectionResetError):
            time.sleep(0.005)
    raise RuntimeError(f"no reply within {timeout:.0f} s")


def one_round(argv: list[str], jobs: int, size: int, cpus: Optional[set[int]], base: Optional[str],
              timeout: float) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="bench-restart-", dir=base)
    port = free_port()
    command = [a.replace("{port}", str(port)) for a in argv] + ["-b", directory]

    def start() -> subprocess.Popen:
        def pin() -> None:
            if cpus and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, cpus)
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, preexec_fn=pin, cwd=REPO)

    proc = start()
    try:
        first_reply(port, time.monotonic(), 30)
        t0 = time.monotonic()
        fill(port, jobs, size)
        fill_s = time.monotonic() - t0
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        disk = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
        started = time.monotonic()
        proc = start()
        seconds, ready = first_reply(port, started, timeout)
        cpu = proc_cpu_s(proc.pid)  # CPU of the restart (and one stats): steadier than the clock on a busy machine
        if ready != jobs:
            raise RuntimeError(f"{ready} of {jobs} jobs came back")
        return {"restart_s": seconds, "cpu_s": cpu if cpu is not None else float("nan"),
                "fill_s": fill_s, "binlog_mb": disk / 1e6}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200, help="body bytes (default 200)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a restart may take")
    parser.add_argument("--binlog-base", help="where the binlog directories go (default: the temp dir)")
    parser.add_argument("--only", choices=("beanstalk-py", "beanstalkd"), help="one server alone")
    parser.add_argument("--candidate", metavar="CMD",
                        help="command line of the server to restart instead of beanstalk-py, with {port} "
                             "where the port goes (e.g. a compiled build: 'VENV/bin/beanstalk-py -l 127.0.0.1 "
                             "-p {port}'; the servers run in the repository, so 'VENV/bin/python -m "
                             "beanstalk_py' would import its sources)")
    parser.add_argument("--beanstalkd", metavar="CMD",
                        help="command line of the reference instead of beanstalkd from PATH, with {port} "
                             "(e.g. another build of beanstalk-py, for an A/B)")
    args = parser.parse_args(argv)
    for option in ("candidate", "beanstalkd"):
        if getattr(args, option) and "{port}" not in getattr(args, option):
            parser.error(f"--{option} needs {{port}} in its command line")
    server_cpus, _ = cpu_split(True)
    sides = [("beanstalk-py", shlex.split(args.candidate) if args.candidate else beanstalk_py_argv()),
             ("beanstalkd", shlex.split(args.beanstalkd) if args.beanstalkd else beanstalkd_argv())]
    if args.only:
        sides = [side for side in sides if side[0] == args.only]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sides}
    for rnd in range(1, args.rounds + 1):
        for name, command in sides:
            run = one_round(command, args.jobs, args.size, server_cpus, args.binlog_base, args.timeout)
            results[name].append(run)
            print(f"round {rnd} {name}: first reply {run['restart_s']:.2f} s after start, CPU {run['cpu_s']:.2f} s "
                  f"({args.jobs:,} jobs, binlog {run['binlog_mb']:.0f} MB, filled in {run['fill_s']:.1f} s)",
                  flush=True)
    medians = {name: statistics.median(run["restart_s"] for run in runs) for name, runs in results.items()}
    for name, value in medians.items():
        cpu = statistics.median(run["cpu_s"] for run in results[name])
        print(f"{name}: median {value:.2f} s (CPU {cpu:.2f} s)")
    if len(medians) == 2:
        print(f"ratio beanstalk-py / beanstalkd: {medians['beanstalk-py'] / medians['beanstalkd']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
