"""python -m bench.tls: the TLS port against the plain port of one beanstalk-py.

beanstalkd has no TLS, so this compares beanstalk-py with itself: one daemon
with ``--tls-listen`` beside its plain port, pinned to the first CPU, and the
same Python client workloads (``load`` processes on the other CPU) run
against the plain port and the TLS port alternately, A B A B.  Reported per
workload: operations per second, and the server's CPU per operation (the
cost TLS adds to the daemon, whatever the client's own TLS cost does to
throughput); the ratio is TLS / plain, medians over rounds.

Workloads: ``put``, pipelined puts of 100 bytes on one connection (batches of
100); ``prd``, put-reserve-delete round trips by producer/consumer pairs.
The certificate is a throwaway self-signed one made with ``openssl``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

from .servers import REPO, cpu_split, free_port, ping, proc_cpu_s

BODY = b"x" * 100
PUT = b"put 0 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)


def _connect(port: int, context: Optional[ssl.SSLContext]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(sock, server_hostname="127.0.0.1") if context is not None else sock


def _read_lines(sock: socket.socket, buf: bytearray, count: int) -> None:
    while buf.count(b"\r\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed")
        buf += chunk


def _puts(port: int, tls: bool, seconds: float, result: "multiprocessing.Queue[int]") -> None:
    sock = _connect(port, _client_context() if tls else None)
    batch = PUT * 100
    done = 0
    buf = bytearray()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.sendall(batch)
        _read_lines(sock, buf, 100)
        lines = buf.split(b"\r\n")
        done += 100
        del buf[: sum(len(line) + 2 for line in lines[:100])]
    sock.close()
    result.put(done)


def _prd_pair(port: int, tls: bool, seconds: float, result: "multiprocessing.Queue[int]") -> None:
    context = _client_context() if tls else None
    producer, worker = _connect(port, context), _connect(port, context)
    done = 0
    buf = bytearray()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        producer.sendall(PUT)
        buf.clear()
        _read_lines(producer, buf, 1)
        worker.sendall(b"reserve\r\n")
        buf.clear()
        while len(buf) < 2 or not buf.endswith(BODY + b"\r\n"):
            buf += worker.recv(65536)
        job_id = int(bytes(buf).split(b" ", 2)[1])
        worker.sendall(b"delete %d\r\n" % job_id)
        buf.clear()
        _read_lines(worker, buf, 1)
        done += 1
    producer.close()
    worker.close()
    result.put(done)


def _client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a throwaway self-signed certificate
    return ctx


def _run(kind: str, port: int, tls: bool, seconds: float, pairs: int, load_cpus: Optional[set[int]],
         server_pid: int) -> tuple[float, float]:
    """(operations per second, server CPU microseconds per operation)."""
    queue: "multiprocessing.Queue[int]" = multiprocessing.Queue()
    target = _puts if kind == "put" else _prd_pair
    procs = [multiprocessing.Process(target=target, args=(port, tls, seconds, queue))
             for _ in range(1 if kind == "put" else pairs)]
    cpu0 = proc_cpu_s(server_pid) or 0.0
    start = time.monotonic()
    for proc in procs:
        proc.start()
        if load_cpus:
            os.sched_setaffinity(proc.pid, load_cpus)
    total = sum(queue.get(timeout=seconds + 30) for _ in procs)
    for proc in procs:
        proc.join()
    wall = time.monotonic() - start
    cpu = (proc_cpu_s(server_pid) or 0.0) - cpu0
    return total / wall, cpu / max(total, 1) * 1e6


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    p.add_argument("--pairs", type=int, default=4, help="producer/consumer pairs for prd")
    p.add_argument("--io", choices=("epoll", "tasks"), default="epoll",
                   help="driver of the plain port (tasks: the streams driver TLS runs on, "
                        "so the ratio is the cost of TLS alone)")
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args(argv)
    server_cpus, load_cpus = cpu_split(not args.no_pin)
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        port, tls_port = free_port(), free_port()
        argv_server = [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", str(port),
                       "--tls-listen", f"127.0.0.1:{tls_port}", "--tls-cert", cert, "--tls-key", key]
        env = dict(os.environ, BEANSTALK_PY_IO=args.io)
        server = subprocess.Popen(argv_server, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  preexec_fn=(lambda: os.sched_setaffinity(0, server_cpus)) if server_cpus else None)
        try:
            deadline = time.monotonic() + 15
            while not ping(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"# bench.tls: {args.rounds} rounds x {args.duration:g} s, plain port on the {args.io} "
                  f"driver, server CPUs {server_cpus}, load CPUs {load_cpus}, prd pairs {args.pairs}")
            for kind in ("put", "prd"):
                rates: dict[str, list[float]] = {"plain": [], "tls": []}
                costs: dict[str, list[float]] = {"plain": [], "tls": []}
                ratios, cost_ratios = [], []
                for _ in range(args.rounds):
                    for side, the_port in (("plain", port), ("tls", tls_port)):
                        rate, cost = _run(kind, the_port, side == "tls", args.duration, args.pairs,
                                          load_cpus, server.pid)
                        rates[side].append(rate)
                        costs[side].append(cost)
                        print(f"  {kind} {side}: {rate:,.0f} ops/s, server {cost:.1f} us CPU/op")
                    ratios.append(rates["tls"][-1] / rates["plain"][-1])
                    cost_ratios.append(costs["tls"][-1] / costs["plain"][-1])
                print(f"{kind}: plain {statistics.median(rates['plain']):,.0f} ops/s, "
                      f"TLS {statistics.median(rates['tls']):,.0f} ops/s, ratio {statistics.median(ratios):.2f}x; "
                      f"server CPU/op plain {statistics.median(costs['plain']):.1f} us, "
                      f"TLS {statistics.median(costs['tls']):.1f} us, ratio {statistics.median(cost_ratios):.2f}x")
        finally:
            server.terminate()
            server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
