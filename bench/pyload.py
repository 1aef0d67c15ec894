"""The pure-Python load generator: the fallback when no C compiler is at hand.

``python -m bench.pyload`` takes the same flags as bench/loadgen.c, speaks the
same READY / start-time protocol with the harness and prints the same JSON, so
bench/loadgen.py runs either one the same way.  It uses raw non-blocking
sockets and one ``selectors`` loop per process; no client library.

It is slower than the C one (pipelined replies are counted in bulk with
``bytes.count`` to keep up): the harness's load-saturation warning says when
it, rather than the server, set the pace.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import selectors
import signal
import socket
import sys
import time
from collections import deque
from typing import Optional

NBUCKETS = 1280
CHUNK = 256  # requests per pipelined batch while creating or watching tubes

PUT, PRODUCER, CONSUMER, TUBE_PUT, CREATE, WATCH, DRAIN, FILL = range(8)
PUTTING = (PUT, PRODUCER, TUBE_PUT, FILL)


def bucket_of(ns: int) -> int:
    """Log-linear bucket (32 per power of two) of a duration in ns; same as loadgen.c."""
    if ns < 32:
        return max(ns, 0)
    e = ns.bit_length() - 1
    return min((e - 4) * 32 + (ns >> (e - 5)) - 32, NBUCKETS - 1)


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds, or -1 when unknown."""
    if pid <= 0:
        return -1.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase:
    def __init__(self, name: str, server_pid: int) -> None:
        self.name = name
        self.count = self.cmds = self.errors = self.timeouts = 0
        self.secs = self.wall_s = self.cpu_s = 0.0
        self.server_cpu_s = -1.0
        self.hist: dict[int, int] = {}
        self._pid = server_pid
        self._meter: Optional[tuple[int, float, float]] = None

    def add(self, ns: int, n: int = 1) -> None:
        b = bucket_of(ns)
        self.hist[b] = self.hist.get(b, 0) + n

    def start_meter(self) -> None:
        self._meter = (time.monotonic_ns(), self_cpu_s(), proc_cpu_s(self._pid))

    def stop_meter(self) -> None:
        assert self._meter is not None
        t0, cpu0, srv0 = self._meter
        self.wall_s = (time.monotonic_ns() - t0) / 1e9
        self.cpu_s = self_cpu_s() - cpu0
        srv = proc_cpu_s(self._pid)
        self.server_cpu_s = srv - srv0 if srv >= 0 and srv0 >= 0 else -1.0

    def as_dict(self) -> dict:
        return {
            "name": self.name, "count": self.count, "cmds": self.cmds, "errors": self.errors,
            "timeouts": self.timeouts, "secs": self.secs, "wall_s": self.wall_s,
            "cpu_s": self.cpu_s, "server_cpu_s": self.server_cpu_s,
            "hist": sorted(self.hist.items()),
        }


def connect_blocking(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Conn:
    __slots__ = ("sock", "role", "inbuf", "out", "ring", "pending", "next", "total",
                 "paused", "finished", "dead", "writing")

    def __init__(self, sock: socket.socket, role: int) -> None:
        self.sock = sock
        self.role = role
        self.inbuf = b""
        self.out = bytearray()
        self.ring: deque[list[int]] = deque()  # [sent_ns, replies still owed]
        self.pending = 0
        self.next = 0
        self.total = 0
        self.paused = False
        self.finished = False
        self.dead = False
        self.writing = False

    def push(self, now: int, n: int) -> None:
        self.ring.append([now, n])
        self.pending += n


def parse_one(buf: bytes) -> Optional[tuple[bytes, int, int]]:
    """(first word, job id, length) of the first complete reply, or None."""
    nl = buf.find(b"\n")
    if nl < 0:
        return None
    words = buf[:nl].split()
    word = words[0] if words else b""
    used = nl + 1
    job = 0
    if word == b"RESERVED" and len(words) == 3:
        job = int(words[1])
        used += int(words[2]) + 2
        if len(buf) < used:
            return None
    return word, job, used


class Loop:
    """One selectors loop over a group of connections, for one phase."""

    def __init__(self, opts: argparse.Namespace, phase: Phase) -> None:
        self.o = opts
        self.ph = phase
        self.sel = selectors.DefaultSelector()
        self.now = time.monotonic_ns()
        self.count_from = self.count_until = 0
        self.finished = 0
        self.paused = 0
        self.put_not_reserved = 0
        self.rng = random.Random(os.getpid())
        self.put = put_command(opts.size)

    def counting(self) -> bool:
        return self.count_from <= self.now < self.count_until

    def finish(self, c: Conn) -> None:
        if not c.finished:
            c.finished = True
            self.finished += 1

    def lose(self, c: Conn, why: str) -> None:
        if c.dead:
            return
        print(f"pyload: connection lost: {why}", file=sys.stderr)
        c.dead = True
        self.ph.errors += 1
        self.sel.unregister(c.sock)
        self.finish(c)

    def flush(self, c: Conn) -> None:
        while c.out:
            try:
                sent = c.sock.send(c.out)
            except BlockingIOError:
                break
            except OSError as exc:
                self.lose(c, str(exc))
                return
            del c.out[:sent]
        want = bool(c.out)
        if want != c.writing:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.sel.modify(c.sock, events, c)
            c.writing = want

    def top_up(self, c: Conn) -> None:
        if c.dead or c.finished:
            return
        o = self.o
        role = c.role
        if role == PRODUCER:
            if self.put_not_reserved >= o.backlog:
                if not c.paused:
                    c.paused = True
                    self.paused += 1
                return
            if c.paused:
                c.paused = False
                self.paused -= 1
        if role in PUTTING:
            if c.pending * 2 > o.depth:
                return
            n = o.depth - c.pending
            if role == FILL:
                n = min(n, c.total - c.next)
            if n <= 0:
                return
            if role == TUBE_PUT:
                pick = self.rng.randrange
                c.out += b"".join(b"use t%d\r\n%s" % (pick(o.tubes), self.put) for _ in range(n))
            else:
                c.out += self.put * n
            if role == PRODUCER:
                self.put_not_reserved += n
            c.next += n
            c.push(self.now, n)
        elif role in (CREATE, WATCH):
            if c.pending:
                return
            if c.next >= c.total:
                self.finish(c)
                return
            end = min(c.total, c.next + CHUNK)
            if role == CREATE:
                c.out += b"".join(b"use t%d\r\n%s" % (i, self.put) for i in range(c.next, end))
            else:
                c.out += b"".join(b"watch t%d\r\n" % i for i in range(c.next, end))
            c.push(self.now, end - c.next)
            c.next = end
        else:  # CONSUMER, DRAIN
            if c.pending:
                return
            c.out += b"reserve-with-timeout 1\r\n" if role == CONSUMER else b"reserve-with-timeout 0\r\n"
            c.push(self.now, 1)
        self.flush(c)

    def settle(self, c: Conn, n: int) -> None:
        """``n`` replies arrived: pop them from the ring, record their latency."""
        counting = self.counting()
        ph = self.ph
        c.pending -= n
        while n and c.ring:
            head = c.ring[0]
            take = min(n, head[1])
            if counting:
                ph.add(self.now - head[0], take)
                ph.cmds += take
            head[1] -= take
            n -= take
            if not head[1]:
                c.ring.popleft()

    def on_data(self, c: Conn, data: bytes) -> None:
        buf = c.inbuf + data
        role = c.role
        if role in PUTTING or role in (CREATE, WATCH):
            cut = buf.rfind(b"\n") + 1
            c.inbuf = buf[cut:]
            done = buf[:cut]
            lines = done.count(b"\n")
            if not lines:
                return
            using = done.count(b"USING ") if role in (TUBE_PUT, CREATE) else 0
            good = done.count(b"WATCHING " if role == WATCH else b"INSERTED ")
            replies = lines - using
            self.ph.errors += replies - good
            if role != PRODUCER and self.counting():  # prd counts a job when it is deleted
                self.ph.count += good
            self.settle(c, replies)
            if role == FILL and c.next >= c.total and not c.pending:
                self.finish(c)
        else:  # CONSUMER, DRAIN: one request at a time
            while True:
                parsed = parse_one(buf)
                if parsed is None:
                    break
                word, job, used = parsed
                buf = buf[used:]
                counting = self.counting()
                self.settle(c, 1)
                if word == b"RESERVED":
                    if role == CONSUMER:
                        self.put_not_reserved -= 1
                    c.out += b"delete %d\r\n" % job
                    c.push(self.now, 1)
                    self.flush(c)
                elif word == b"DELETED":
                    if counting:
                        self.ph.count += 1
                elif word == b"TIMED_OUT":
                    self.ph.timeouts += 1
                    if role == DRAIN:
                        self.finish(c)
                else:
                    self.ph.errors += 1
            c.inbuf = buf
        self.top_up(c)

    def run(self, conns: list[Conn], count_from: int, stop_at: int) -> None:
        self.count_from, self.count_until = count_from, stop_at
        for c in conns:
            c.sock.setblocking(False)
            c.writing = False
            self.sel.register(c.sock, selectors.EVENT_READ, c)
        self.now = time.monotonic_ns()
        for c in conns:
            self.top_up(c)
        n = len(conns)
        while True:
            self.now = time.monotonic_ns()
            if self.now >= stop_at or self.finished >= n:
                break
            timeout = 0.001 if self.paused else min(0.05, (stop_at - self.now) / 1e9)
            events = self.sel.select(timeout)
            self.now = time.monotonic_ns()
            for key, mask in events:
                c = key.data
                if c.dead:
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(c)
                if mask & selectors.EVENT_READ and not c.dead:
                    try:
                        data = c.sock.recv(262144)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        self.lose(c, str(exc))
                        continue
                    if not data:
                        self.lose(c, "server closed the connection")
                        continue
                    self.on_data(c, data)
            if self.paused:
                for c in conns:
                    if self.put_not_reserved >= self.o.backlog:
                        break
                    if c.paused:
                        self.top_up(c)
        end = min(self.now, stop_at)
        self.ph.secs = max(0.0, (end - count_from) / 1e9)
        for c in conns:
            if not c.dead:
                self.sel.unregister(c.sock)
        self.sel.close()


def put_command(size: int) -> bytes:
    return b"put 0 0 120 %d\r\n%s\r\n" % (size, b"x" * size)


def run_timed(o: argparse.Namespace, conns: list[Conn], ph: Phase) -> None:
    ph.start_meter()
    start = time.monotonic_ns() + int(o.warmup * 1e9)
    Loop(o, ph).run(conns, start, start + int(o.duration * 1e9))
    ph.stop_meter()


def run_until_done(o: argparse.Namespace, conns: list[Conn], ph: Phase, limit: float) -> None:
    ph.start_meter()
    start = time.monotonic_ns()
    Loop(o, ph).run(conns, start, start + int(limit * 1e9))
    ph.stop_meter()


class Blocking:
    """One connection, one request at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def ask(self, request: bytes) -> tuple[bytes, int]:
        self.sock.sendall(request)
        while True:
            parsed = parse_one(self.buf)
            if parsed is not None:
                word, job, used = parsed
                self.buf = self.buf[used:]
                return word, job
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data


def latency_phase(o: argparse.Namespace, sock: socket.socket, prefix: str, out: list[Phase]) -> None:
    phs = [Phase(prefix + s, o.server_pid) for s in ("", ".put", ".reserve", ".delete")]
    out.extend(phs)
    conn = Blocking(sock)
    put = put_command(o.size)
    clock = time.monotonic_ns
    phs[0].start_meter()
    t0 = clock()
    start = t0 + int(o.warmup * 1e9)
    until = start + int(o.duration * 1e9)
    now, last = t0, start
    try:
        while now < until:
            a = clock()
            word, _ = conn.ask(put)
            if word != b"INSERTED":
                raise ConnectionError(f"put: {word!r}")
            b = clock()
            word, job = conn.ask(b"reserve\r\n")
            if word != b"RESERVED":
                raise ConnectionError(f"reserve: {word!r}")
            c = clock()
            word, _ = conn.ask(b"delete %d\r\n" % job)
            if word != b"DELETED":
                raise ConnectionError(f"delete: {word!r}")
            now = clock()
            if a >= start and now <= until:
                for ph, d in ((phs[1], b - a), (phs[2], c - b), (phs[3], now - c)):
                    ph.add(d)
                    phs[0].add(d)
                    ph.cmds += 1
                    ph.count += 1
                phs[0].cmds += 3
                phs[0].count += 3
                last = now
    except (OSError, ConnectionError) as exc:
        print(f"pyload: {prefix}: {exc}", file=sys.stderr)
        phs[0].errors += 1
    for ph in phs:
        ph.secs = (last - start) / 1e9
    phs[0].stop_meter()


def open_idle(o: argparse.Namespace, ph: Phase) -> list[socket.socket]:
    """Open o.conns connections, at most o.inflight at a time; each does use, watch, put."""
    ph.start_meter()
    sel = selectors.DefaultSelector()
    put = put_command(o.size)
    done: list[socket.socket] = []
    started = active = ended = 0
    owed: dict[socket.socket, list] = {}
    t0 = time.monotonic()
    deadline = t0 + o.limit
    while ended < o.conns and time.monotonic() < deadline:
        while active < o.inflight and started < o.conns:
            tube = started % o.tubes
            started += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", o.port))
            if err not in (0, 115):  # EINPROGRESS
                sock.close()
                ph.errors += 1
                ended += 1
                continue
            owed[sock] = [-1, b"use idle%d\r\nwatch idle%d\r\n%s" % (tube, tube, put), b""]
            sel.register(sock, selectors.EVENT_WRITE)
            active += 1
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            state = owed[sock]
            bad = False
            try:
                if state[0] == -1:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise OSError("connect failed")
                    sock.send(state[1])
                    state[0] = 3
                    sel.modify(sock, selectors.EVENT_READ)
                else:
                    data = sock.recv(4096)
                    if not data:
                        raise OSError("closed")
                    buf = state[2] + data
                    cut = buf.rfind(b"\n") + 1
                    state[2] = buf[cut:]
                    state[0] -= buf[:cut].count(b"\n")
                    ph.errors += buf[:cut].count(b"\n") - sum(
                        buf[:cut].count(w) for w in (b"USING ", b"WATCHING ", b"INSERTED "))
                    if state[0] <= 0:
                        sel.unregister(sock)
                        del owed[sock]
                        done.append(sock)
                        active -= 1
                        ended += 1
                        ph.count += 1
            except BlockingIOError:
                pass
            except OSError:
                bad = True
            if bad:
                ph.errors += 1
                sel.unregister(sock)
                del owed[sock]
                sock.close()
                active -= 1
                ended += 1
    ph.secs = time.monotonic() - t0
    for sock in owed:  # unfinished at the deadline
        sock.close()
        ph.errors += 1
    sel.close()
    ph.stop_meter()
    return done


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pyload", description=__doc__)
    p.add_argument("-m", dest="mode", default="put",
                   choices=["put", "prd", "latency", "idle", "tubes", "fill"])
    p.add_argument("-p", dest="port", type=int, default=11300)
    p.add_argument("-c", dest="conns", type=int, default=1)
    p.add_argument("-P", dest="depth", type=int, default=100)
    p.add_argument("-r", dest="producers", type=int, default=1)
    p.add_argument("-k", dest="consumers", type=int, default=1)
    p.add_argument("-B", dest="backlog", type=int, default=1000)
    p.add_argument("-n", dest="tubes", type=int, default=10000)
    p.add_argument("-I", dest="inflight", type=int, default=64)
    p.add_argument("-N", dest="jobs", type=int, default=1000000)
    p.add_argument("-s", dest="size", type=int, default=100)
    p.add_argument("-w", dest="warmup", type=float, default=0.5)
    p.add_argument("-d", dest="duration", type=float, default=3.0)
    p.add_argument("-L", dest="limit", type=float, default=60.0)
    p.add_argument("-S", dest="server_pid", type=int, default=0)
    o = p.parse_args(argv)
    if not (0 < o.duration <= 600 and 0 <= o.warmup <= 60 and 0 < o.limit <= 600):
        p.error("durations out of range")
    # safety net: whatever happens, this process ends
    signal.alarm(int(3 * (o.warmup + o.duration) + 3 * o.limit + 60))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    conns: list[Conn] = []
    sock = None
    if o.mode == "put":
        conns = [Conn(connect_blocking(o.port), PUT) for _ in range(o.conns)]
    elif o.mode == "prd":
        p_, k_ = 0, 0
        for _ in range(o.producers + o.consumers):
            producer = p_ < o.producers and (k_ >= o.consumers or p_ * o.consumers <= k_ * o.producers)
            conns.append(Conn(connect_blocking(o.port), PRODUCER if producer else CONSUMER))
            p_, k_ = (p_ + 1, k_) if producer else (p_, k_ + 1)
    elif o.mode == "latency":
        sock = connect_blocking(o.port)
    elif o.mode == "fill":
        conns = [Conn(connect_blocking(o.port), FILL)]
        conns[0].total = o.jobs
    print("READY", flush=True)
    line = sys.stdin.readline()
    if not line:
        return 3
    delay = float(line) - time.monotonic()
    if delay > 0:
        time.sleep(delay)

    cpu0, t0 = self_cpu_s(), time.monotonic()
    phases: list[Phase] = []

    def new(name: str) -> Phase:
        phases.append(Phase(name, o.server_pid))
        return phases[-1]

    if o.mode in ("put", "prd"):
        run_timed(o, conns, new(o.mode))
    elif o.mode == "latency":
        latency_phase(o, sock, "latency", phases)
    elif o.mode == "fill":
        run_until_done(o, conns, new("fill"), o.limit)
    elif o.mode == "idle":
        socks = open_idle(o, new("setup"))
        probe = connect_blocking(o.port)
        latency_phase(o, probe, "probe", phases)
        probe.close()
        o.depth = 1  # one request at a time on every connection
        conns = [Conn(s, PUT) for s in socks]
        run_timed(o, conns, new("active"))
    else:  # tubes
        creator = Conn(connect_blocking(o.port), CREATE)
        creator.total = o.tubes
        run_until_done(o, [creator], new("create"), o.limit)
        creator.sock.close()
        conns = [Conn(connect_blocking(o.port), TUBE_PUT) for _ in range(o.conns)]
        run_timed(o, conns, new("put"))
        watcher = Conn(connect_blocking(o.port), WATCH)
        watcher.total = o.tubes
        run_until_done(o, [watcher], new("watch"), o.limit)
        watcher.role, watcher.finished = DRAIN, False
        run_until_done(o, [watcher], new("drain"), o.duration)
        watcher.sock.close()
    result = {"cpu_s": self_cpu_s() - cpu0, "wall_s": time.monotonic() - t0,
              "phases": [ph.as_dict() for ph in phases]}
    print(json.dumps(result), flush=True)
    for c in conns:
        c.sock.close()
    if sock is not None:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
