"""Load generators: raw non-blocking sockets in worker processes, no client library.

Each workload runs its connections in ``procs`` processes (pinned to the load
CPUs), every process drives its share with one selectors loop for
``duration`` seconds and reports counts, latencies and its own CPU time.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Callable

from .servers import load_cpus

BODY = b"x" * 100
PUT = b"put 0 0 120 %d\r\n%s\r\n" % (len(BODY), BODY)


@dataclass
class Share:
    port: int
    conns: int
    duration: float
    depth: int = 100
    producers: int = 0


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _pin_load() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, load_cpus())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _put_pipelined(share: Share) -> dict:
    """Keep ``depth`` puts in flight on every connection; count the replies."""
    _pin_load()
    batch = PUT * share.depth
    sel = selectors.DefaultSelector()
    pending = {}
    for _ in range(share.conns):
        sock = _connect(share.port)
        sock.sendall(batch)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        pending[sock] = [share.depth, time.perf_counter()]
    done = 0
    lat: list[float] = []
    cpu0 = _cpu()
    end = time.perf_counter() + share.duration
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            data = sock.recv(262144)
            if not data:
                raise RuntimeError("server closed the connection")
            replies = data.count(b"\n")
            state = pending[sock]
            state[0] -= replies
            done += replies
            if state[0] <= 0:
                now = time.perf_counter()
                lat.append(now - state[1])
                sock.setblocking(True)
                sock.sendall(batch)
                sock.setblocking(False)
                state[0] += share.depth
                state[1] = now
    return {"ops": done, "lat": lat, "cpu": _cpu() - cpu0}


def _prd(share: Share) -> dict:
    """Producers put one job at a time; consumers reserve then delete, one request at a time."""
    _pin_load()
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, list] = {}
    for i in range(share.conns):
        sock = _connect(share.port)
        role = "p" if i < share.producers else "c"
        state[sock] = [role, b"", time.perf_counter()]
        sel.register(sock, selectors.EVENT_READ)
        if role == "p":
            sock.sendall(PUT)
        else:
            sock.sendall(b"reserve-with-timeout 1\r\n")
    jobs = 0
    lat: list[float] = []
    cpu0 = _cpu()
    end = time.perf_counter() + share.duration
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            st = state[sock]
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("server closed the connection")
            st[1] += data
            buf = st[1]
            now = time.perf_counter()
            if st[0] == "p":
                if buf.endswith(b"\r\n"):
                    st[1] = b""
                    lat.append(now - st[2])
                    st[2] = now
                    sock.sendall(PUT)
            elif buf.startswith(b"RESERVED"):
                head, _, rest = buf.partition(b"\r\n")
                size = int(head.split()[2])
                if len(rest) >= size + 2:
                    lat.append(now - st[2])
                    st[1] = b"D" + head.split()[1]
                    st[2] = now
                    sock.sendall(b"delete %s\r\n" % head.split()[1])
            elif buf.startswith(b"D"):
                if buf.endswith(b"DELETED\r\n"):
                    lat.append(now - st[2])
                    jobs += 1
                    st[1] = b""
                    st[2] = now
                    sock.sendall(b"reserve-with-timeout 1\r\n")
            elif buf.endswith(b"TIMED_OUT\r\n"):
                st[1] = b""
                st[2] = now
                sock.sendall(b"reserve-with-timeout 1\r\n")
    return {"ops": jobs, "lat": lat, "cpu": _cpu() - cpu0}


def _latency(share: Share) -> dict:
    """One connection: put, reserve, delete, each waiting for its reply."""
    _pin_load()
    sock = _connect(share.port)
    lat: list[float] = []
    rounds = 0
    cpu0 = _cpu()

    def ask(data: bytes, done: Callable[[bytes], bool]) -> bytes:
        start = time.perf_counter()
        sock.sendall(data)
        buf = b""
        while not done(buf):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed the connection")
            buf += chunk
        lat.append(time.perf_counter() - start)
        return buf

    end = time.perf_counter() + share.duration
    while time.perf_counter() < end:
        ask(PUT, lambda b: b.endswith(b"\r\n"))
        reply = ask(b"reserve\r\n", lambda b: b.endswith(BODY + b"\r\n"))
        job_id = reply.split()[1]
        ask(b"delete %s\r\n" % job_id, lambda b: b.endswith(b"\r\n"))
        rounds += 1
    return {"ops": rounds * 3, "lat": lat, "cpu": _cpu() - cpu0}


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _run(fn: Callable[[Share], dict], shares: list[Share]) -> dict:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(shares)) as pool:
        results = pool.map(fn, shares)
    lat = sorted(x for r in results for x in r["lat"])
    duration = shares[0].duration

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6 if lat else 0.0

    return {
        "ops_per_s": sum(r["ops"] for r in results) / duration,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "load_cpu_s": sum(r["cpu"] for r in results),
    }


def put_pipelined(port: int, duration: float, conns: int) -> dict:
    procs = max(1, min(len(load_cpus()), conns))
    return _run(_put_pipelined, [Share(port, n, duration) for n in _split(conns, procs) if n])


def prd(port: int, duration: float, producers: int, consumers: int) -> dict:
    procs = max(1, len(load_cpus()))
    shares = []
    for p, c in zip(_split(producers, procs), _split(consumers, procs)):
        if p + c:
            shares.append(Share(port, p + c, duration, producers=p))
    return _run(_prd, shares)


def latency(port: int, duration: float) -> dict:
    return _run(_latency, [Share(port, 1, duration)])


WORKLOADS: dict[str, Callable[[int, float], dict]] = {
    "put-pipelined-1": lambda port, d: put_pipelined(port, d, 1),
    "put-pipelined-50": lambda port, d: put_pipelined(port, d, 50),
    "prd-1x1": lambda port, d: prd(port, d, 1, 1),
    "prd-25x25": lambda port, d: prd(port, d, 25, 25),
    "latency": latency,
}
# Workloads that need the binlog on both servers.
BINLOG_WORKLOADS = {"binlog-put": "put-pipelined-1", "binlog-prd": "prd-1x1"}
