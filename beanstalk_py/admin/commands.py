"""The one-shot admin commands.  Most talk the beanstalk protocol and nothing
else, so they work against beanstalkd 1.12 as well; ``jobs``, ``move`` and
``clear`` with ``--url`` use the daemon's HTTP API (:mod:`.api`) instead.

Each command takes the :class:`Context` and its parsed arguments, writes its
result on stdout and returns an exit code; failures raise
:class:`~.client.AdminError` (the message goes to stderr).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Optional

from .api import Api, Endpoint, tube_path
from .client import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    AdminError,
    Address,
    Client,
    NotFound,
    ServerError,
    UsageError,
)
from .render import (
    JOB_COLUMNS,
    JOB_TEXT,
    STATS_TEXT,
    TUBE_COLUMNS,
    TUBE_TEXT,
    body_fields,
    job_cells,
    own_share,
    table,
    typed,
)

STATES = ("ready", "delayed", "buried")
DEFAULT_JOBS = 100  # jobs listed without --limit
# What /proc/PID/cmdline must show before `drain` signals a process.
DAEMON_NAMES = frozenset({"beanstalkd", "beanstalk-py"})


@dataclass
class Context:
    """Where the daemon is and how to answer (the global options)."""

    address: Address
    timeout: float = 5.0
    json: bool = False
    endpoint: Optional[Endpoint] = None  # --url
    token: Optional[str] = None
    address_given: bool = False  # --addr or --unix, not the default

    def client(self) -> Client:
        return Client(self.address, self.timeout).connect()

    def api(self, what: str) -> Api:
        """The HTTP API client, or the usage error that ``what`` needs --url."""
        if self.endpoint is None:
            raise UsageError(f"{what} needs {HTTP_NEEDED}")
        return Api(self.endpoint, self.token, self.timeout)


HTTP_NEEDED = ("the daemon's HTTP listener: give --url URL (its --http address, http://HOST:PORT or "
               "unix:PATH); the beanstalk protocol cannot list or move jobs")


def emit(text: str) -> None:
    print(text, file=sys.stdout)


def emit_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=sys.stdout)


def emit_bytes(data: bytes) -> None:
    """Bodies go out byte for byte, whatever the locale's encoding."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def need_tube(client: Client, tube: str) -> dict[str, str]:
    """stats-tube, or NotFound: `use` would create a tube that does not exist."""
    stats = client.stats_tube(tube)
    if stats is None:
        raise NotFound(f"no tube {tube!r} on {client.where}")
    return stats


# ---------------------------------------------------------------------- reading


def cmd_stats(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        stats = client.stats()
    if ctx.json:
        emit_json(typed(stats, STATS_TEXT))
    else:
        for key, value in stats.items():
            emit(f"{key}: {value}")
    return EXIT_OK


def tube_rows(client: Client, limit: Optional[int] = None) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """(tube, stats-tube) sorted by name, the admin's own connection left out,
    at most ``limit`` of them; and the names of all tubes."""
    names = sorted(client.list_tubes())
    shown = names if limit is None else names[: max(0, limit)]
    stats = client.stats_tubes(shown)
    return [(name, own_share(name, stats[name])) for name in shown if name in stats], names


def cmd_tubes(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        rows, _names = tube_rows(client)
    if ctx.json:
        emit_json([typed(stats, TUBE_TEXT) for _name, stats in rows])
    else:
        for line in table(TUBE_COLUMNS, rows):
            emit(line)
    return EXIT_OK


def show_job(ctx: Context, args: argparse.Namespace, job_id: int, body: bytes) -> None:
    if ctx.json:
        emit_json({"id": job_id, **body_fields(body)})
    elif args.raw:
        emit_bytes(body)
    else:
        emit_bytes(b"id: %d\n%s\n" % (job_id, body))


def cmd_peek(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        found = client.peek(f"peek {args.id}")
    if found is None:
        raise NotFound(f"job {args.id} not found")
    show_job(ctx, args, *found)
    return EXIT_OK


def cmd_peek_state(ctx: Context, args: argparse.Namespace) -> int:
    state = args.command.split("-", 1)[1]
    with ctx.client() as client:
        need_tube(client, args.tube)
        client.use(args.tube)
        found = client.peek(f"peek-{state}")
    if found is None:
        raise NotFound(f"no {state} job in tube {args.tube!r}")
    show_job(ctx, args, *found)
    return EXIT_OK


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        stats = client.stats_job(args.id)
    if stats is None:
        if ctx.json:
            emit_json({"id": args.id, "state": "unknown"})
        else:
            emit("unknown")
        return EXIT_NOT_FOUND
    if ctx.json:
        emit_json(typed(stats, JOB_TEXT))
    else:
        emit(stats.get("state", "unknown"))
    return EXIT_OK


# ---------------------------------------------------------------------- acting


def cmd_kick(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        need_tube(client, args.tube)
        client.use(args.tube)
        kicked = client.kick(args.count)
    emit(f"kicked {kicked}")
    return EXIT_OK


def cmd_kick_job(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        if not client.kick_job(args.id):
            raise NotFound(f"job {args.id} not found, or not buried or delayed")
    emit(f"kicked job {args.id}")
    return EXIT_OK


def cmd_delete(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        if not client.delete(args.id):
            raise NotFound(f"job {args.id} not found (or reserved by another client)")
    emit(f"deleted job {args.id}")
    return EXIT_OK


def cmd_pause(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        if not client.pause_tube(args.tube, args.seconds):
            raise NotFound(f"no tube {args.tube!r} on {client.where}")
    emit(f"tube {args.tube} paused for {args.seconds} s" if args.seconds else f"tube {args.tube} unpaused")
    return EXIT_OK


def cmd_put(ctx: Context, args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        note("reading the job body from the terminal; end it with Ctrl-D")
    body = sys.stdin.buffer.read()
    with ctx.client() as client:
        client.use(args.tube)
        job_id, buried = client.put(body, args.pri, args.delay, args.ttr)
    if buried:
        note(f"job {job_id} was buried at once: the server had no memory to queue it")
    emit(str(job_id))
    return EXIT_OK


# ---------------------------------------------------------------------- drain


def _is_local(address: Address) -> bool:
    """True when the daemon's address is one of this machine's: binding to it works."""
    if isinstance(address, str):
        return True
    host, _port = address
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind((sockaddr[0], 0, *sockaddr[2:]))
                return True
            except OSError:
                continue
    return False


def daemon_cmdline(pid: int) -> Optional[list[str]]:
    """The command line of a process of this machine, None if there is none."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def looks_like_daemon(argv: list[str]) -> bool:
    """``beanstalkd ...``, ``beanstalk-py ...``, ``python -m beanstalk_py ...``."""
    head = argv[:3]
    return any(os.path.basename(arg) in DAEMON_NAMES for arg in head) or "beanstalk_py" in head


def cmd_drain(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        stats = client.stats()
        where = client.where
        pid_text = stats.get("pid", "")
        if not pid_text.isdigit() or int(pid_text) <= 1:
            raise AdminError(f"{where} reports pid {pid_text!r}: refusing to signal it")
        pid = int(pid_text)
        if stats.get("draining") == "true":
            emit(f"already draining: pid {pid} at {where}")
            return EXIT_OK
        if not _is_local(ctx.address):
            raise AdminError(f"{where} is not an address of this machine: drain sends SIGUSR1 to the "
                             "daemon's process, so run it where the daemon runs")
        argv = daemon_cmdline(pid)
        if argv is None:
            raise AdminError(f"{where} reports pid {pid}, but no such process runs here "
                             "(another machine or container?): not signalled")
        if not looks_like_daemon(argv):
            raise AdminError(f"pid {pid} from {where} is {' '.join(argv)[:80]!r}, not beanstalk-py or "
                             "beanstalkd: not signalled")
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError as exc:
            if exc.errno == errno.EPERM:
                raise AdminError(f"not allowed to signal pid {pid}: run as the daemon's user or root") from None
            raise AdminError(f"cannot signal pid {pid}: {exc.strerror}") from None
        deadline = time.monotonic() + ctx.timeout
        while client.stats().get("draining") != "true":
            if time.monotonic() > deadline:
                raise AdminError(f"sent SIGUSR1 to pid {pid}, but {where} is not draining after {ctx.timeout:g} s")
            time.sleep(0.02)
    emit(f"draining: pid {pid} at {where} now answers puts with DRAINING")
    return EXIT_OK


# ---------------------------------------------------------------------- clear


class Progress:
    """A one-line bar on stderr, drawn only when stderr is a terminal, at most 10 times a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.label = label
        self.enabled = sys.stderr.isatty() and total > 0
        self._drawn = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._drawn < 0.1:
            return
        self._drawn = now
        share = min(1.0, done / self.total)
        filled = int(share * 30)
        bar = "#" * filled + "." * (30 - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total}")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _bulk_body(args: argparse.Namespace) -> dict[str, object]:
    body: dict[str, object] = {"state": args.state, "dry_run": bool(args.dry_run)}
    if args.limit is None:
        body["all"] = True
    else:
        body["count"] = args.limit
    return body


def _jobs_word(count: int, state: str) -> str:
    return f"{count} {state} jobs"


def cmd_clear(ctx: Context, args: argparse.Namespace) -> int:
    """With --url, one call of the clear endpoint; else over the protocol."""
    if ctx.endpoint is None:
        return clear_by_protocol(ctx, args)
    with ctx.api("clear") as api:
        if args.limit == 0:
            api.get(tube_path(args.tube))  # 404 for an unknown tube, as the server would
            count = 0
        else:
            count = _count_of(api.post(tube_path(args.tube, "clear"), _bulk_body(args)), api.where)
    if args.dry_run:
        emit(f"would delete {_jobs_word(count, args.state)} from tube {args.tube} (dry run)")
    else:
        emit(f"deleted {_jobs_word(count, args.state)} from tube {args.tube}")
    return EXIT_OK


def _count_of(answer: object, where: str) -> int:
    count = answer.get("count") if isinstance(answer, dict) else None
    if not isinstance(count, int):
        raise ServerError(f"{where}: the answer has no count")
    return count


def cmd_move(ctx: Context, args: argparse.Namespace) -> int:
    if args.source == args.target:
        raise UsageError(f"move: FROM and TO are the same tube ({args.source})")
    with ctx.api("move") as api:
        if args.limit == 0:
            api.get(tube_path(args.source))
            count = 0
        else:
            body = {**_bulk_body(args), "to": args.target}
            count = _count_of(api.post(tube_path(args.source, "move"), body), api.where)
    what = f"{_jobs_word(count, args.state)} from tube {args.source} to tube {args.target}"
    emit(f"would move {what} (dry run)" if args.dry_run else f"moved {what}")
    return EXIT_OK


def cmd_jobs(ctx: Context, args: argparse.Namespace) -> int:
    """A tube's jobs in serving order, a page after another up to --limit."""
    state = args.state or "ready"
    limit = DEFAULT_JOBS if args.limit is None else args.limit
    rows: list[tuple[str, dict[str, str]]] = []
    more = False
    with ctx.api("jobs") as api:
        # One more than asked, to say whether more are left.
        for job in api.jobs(args.tube, state, limit + 1, args.page):
            if len(rows) == limit:
                more = True
                break
            if ctx.json:
                print(json.dumps(job, ensure_ascii=False), file=sys.stdout)
            rows.append((str(job["id"]), job_cells(job)))
    if not ctx.json and rows:
        for line in table(JOB_COLUMNS, rows):
            emit(line)
    if not rows:
        note(f"no {state} jobs in tube {args.tube}")
    elif more:
        sys.stdout.flush()
        note(f"more {state} jobs in tube {args.tube} than the {limit} shown (--limit N)")
    return EXIT_OK


def clear_by_protocol(ctx: Context, args: argparse.Namespace) -> int:
    """peek-STATE then delete, again and again: reserved jobs are never seen by
    a peek, so never deleted.  Bounded by the jobs in that state when it
    started (or --limit), so producers cannot keep it running."""
    state = args.state
    with ctx.client() as client:
        stats = need_tube(client, args.tube)
        present = int(stats.get(f"current-jobs-{state}", "0"))
        bound = present if args.limit is None else min(present, args.limit)
        if args.dry_run:
            emit(f"would delete {_jobs_word(bound, state)} from tube {args.tube} (dry run)")
            return EXIT_OK
        client.use(args.tube)
        progress = Progress(bound, f"clearing {state} jobs of {args.tube}")
        deleted = 0
        missed = 0  # peeked, then reserved or deleted by someone else before our delete
        last: Optional[int] = None
        while deleted < bound and deleted + missed < 2 * bound:
            found = client.peek(f"peek-{state}")
            if found is None:
                break
            job_id = found[0]
            if client.delete(job_id):
                deleted += 1
            else:
                missed += 1
                if job_id == last:
                    break  # the same job again and again: leave it
            last = job_id
            progress.update(deleted)
        progress.update(deleted, final=True)
    emit(f"deleted {deleted} {state} jobs from tube {args.tube}")
    if missed:
        note(f"{missed} jobs were taken by other clients between peek and delete")
    return EXIT_OK
