"""Moving queues: ``export`` reads a binlog directory (``--binlog``) or asks the
daemon's HTTP API (``--url``), ``import`` puts jobs back, both as JSON lines,
one job a line::

    {"id": 7, "tube": "mail", "state": "delayed", "pri": 1024, "delay": 58, "ttr": 60, "body": "..."}

``delay`` is the time a delayed job has left (0 otherwise); a body that is not
UTF-8 is base64 with ``"body_b64": true``.

The export reads the files only, through the same scanner and replay the
daemon uses at start-up (:mod:`beanstalk_py.binlog`), and never opens
``DIR/lock``: a daemon running on the directory keeps its lock and is not
disturbed.  What it sees is a prefix of the log (the records written before
each file was read); a file the daemon removes meanwhile (compaction) makes it
read the directory again.

Over the HTTP API the export pages every tube in every state (the ids
only), then asks ``/api/v1/jobs/{id}`` for each job's fields and whole body
and writes what the binlog export would.  A body over the API's 64 KiB is
read with ``peek`` on ``--addr``/``--unix``, once that daemon is known to be
the same one (the ``id`` of ``stats``).  The import uses plain puts, so it works against any
beanstalkd 1.12 server.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional, Union

from ..binlog.format import FILE_PREFIX, NS, VERSION, JobRecord, Replay, replay_own
from ..binlog.migrate import V7_PREFIX, replay_v7
from ..store import BURIED, DELAYED, READY, RESERVED
from .api import Api
from .client import EXIT_OK, MAX_PRI, AdminError, Client, NotFound, ServerError, UsageError, check_tube
from .commands import Context, Progress, emit, note
from .render import body_fields, decode_body

_NUMBERED = re.compile(r"[0-9]+")
READ_ATTEMPTS = 5
BATCH = 200  # jobs per round trip when importing
BATCH_BYTES = 1 << 20
IMPORT_DEFAULTS = {"state": READY, "pri": 1024, "delay": 0, "ttr": 60}


# ---------------------------------------------------------------------- export


def read_binlog(directory: str) -> tuple[list[JobRecord], list[str]]:
    """The live jobs of a binlog directory (ours and beanstalkd's ``binlog.N``),
    by id, and the problems met (torn tails...).  Reads, never writes or locks."""
    replay, problems = replay_binlog(directory)
    return sorted(replay.jobs.values(), key=lambda rec: rec.id), problems


def replay_binlog(directory: str) -> tuple[Replay, list[str]]:
    """What :func:`read_binlog` reads, as the :class:`Replay` (its ``max_id``
    is the highest id the directory ever issued, deleted jobs included)."""
    if not os.path.isdir(directory):
        raise UsageError(f"--binlog {directory}: not a directory")
    for _attempt in range(READ_ATTEMPTS):
        try:
            return _read_once(directory)
        except FileNotFoundError:
            continue  # removed by the daemon between listing and reading: list again
        except PermissionError as exc:
            raise AdminError(f"cannot read {exc.filename}: permission denied") from None
    raise AdminError(f"{directory}: files kept changing while being read ({READ_ATTEMPTS} attempts)")


def _read_once(directory: str) -> tuple[Replay, list[str]]:
    own: list[tuple[int, str]] = []
    foreign: list[tuple[int, str]] = []
    for name in os.listdir(directory):
        for prefix, into in ((FILE_PREFIX, own), (V7_PREFIX, foreign)):
            if name.startswith(prefix) and _NUMBERED.fullmatch(name[len(prefix):]):
                into.append((int(name[len(prefix):]), name))
    replay = Replay()
    problems: list[str] = []
    # The order of Binlog.open: beanstalkd's files (not yet migrated) first, then ours.
    for _n, name in sorted(foreign):
        version, problem = replay_v7(_read(directory, name), replay)
        if problem is not None:
            problems.append(f"{name}: {problem}")
        elif version is None:
            problems.append(f"{name}: not a readable beanstalkd binlog file")
    for seq, name in sorted(own):
        scan = replay_own(_read(directory, name), seq, replay)
        if scan.version is not None and scan.version > VERSION:
            raise AdminError(f"{name} was written by a newer beanstalk-py (format {scan.version})")
        if scan.problem is not None:
            problems.append(f"{name}: {scan.problem}; the records before it were read")
    return replay, problems


def _read(directory: str, name: str) -> bytes:
    with open(os.path.join(directory, name), "rb") as fh:
        return fh.read()


def export_record(rec: JobRecord, now_wall_ns: int) -> dict[str, object]:
    """One job as it would come back after a restart: a reservation does not
    survive one (ready), and a delayed job whose time has come is ready."""
    state, delay = rec.state, 0
    if state == RESERVED:
        state = READY
    elif state == DELAYED:
        left = rec.deadline - now_wall_ns
        if left > 0:
            delay = -(-left // NS)  # whole seconds, rounded up: never early
        else:
            state = READY
    body = rec.body[:-2] if rec.body.endswith(b"\r\n") else rec.body
    return {
        "id": rec.id,
        "tube": rec.tube.decode("ascii", "replace"),
        "state": state,
        "pri": rec.pri,
        "delay": delay,
        "ttr": rec.ttr // NS,
        **body_fields(body),
    }


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    if getattr(args, "store", None) is not None:
        if args.binlog is not None:
            raise UsageError("export takes one source: --store or --binlog, not both")
        from .storexfer import export_store

        return export_store(ctx, args)
    if args.binlog is not None:
        source = args.binlog
        found, problems = read_binlog(args.binlog)
        for problem in problems:
            note(f"warning: {problem}")
        now = time.time_ns()
        records = [export_record(rec, now) for rec in found]
    elif ctx.endpoint is not None:
        source = ctx.endpoint.text
        records = export_api(ctx)
    else:
        raise UsageError("export needs --binlog DIR (the daemon's binlog directory, read without disturbing "
                         "it) or --url URL (the daemon's HTTP listener, its --http address)")
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    counts = _count(str(record["state"]) for record in records)
    if args.file == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        note(f"exported {len(records)} jobs ({counts}) from {source}")
    else:
        try:
            with open(args.file, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise UsageError(f"cannot write {args.file}: {exc.strerror}") from None
        emit(f"exported {len(records)} jobs ({counts}) from {source} to {args.file}")
    return EXIT_OK


# ---------------------------------------------------------------------- export over HTTP

EXPORT_STATES = (READY, DELAYED, BURIED, RESERVED)


def api_record(job: dict[str, object], body: bytes) -> dict[str, object]:
    """A job of ``/api/v1/jobs/{id}`` as :func:`export_record` writes it from a
    binlog: reserved as ready; ``delay`` rounded up (stats-job's ``time-left``
    is whole seconds, cut: the job waits at least that plus a fraction)."""
    state, delay = str(job["state"]), 0
    if state == RESERVED:
        state = READY
    elif state == DELAYED:
        left = job.get("time-left")
        delay = (left if isinstance(left, int) and left > 0 else 0) + 1
    return {"id": job["id"], "tube": job["tube"], "state": state, "pri": job["pri"], "delay": delay,
            "ttr": job["ttr"], **body_fields(body)}


def api_body(job: dict[str, object]) -> Optional[bytes]:
    """The whole body of ``/api/v1/jobs/{id}``, None when the API cut it."""
    text = job.get("body")
    if not isinstance(text, str):
        raise ServerError(f"job {job.get('id')}: the answer has no body")
    if job.get("truncated") is True:
        return None
    if job.get("encoding") == "base64":
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            raise ServerError(f"job {job.get('id')}: the body is not valid base64") from None
    return text.encode("utf-8")


class _Peeker:
    """Bodies over the API's cap, read with ``peek`` from ``--addr``/``--unix``,
    once that daemon is known to be the one behind ``--url``."""

    def __init__(self, ctx: Context, api: Api) -> None:
        self.ctx = ctx
        self.api = api
        self.client: Optional[Client] = None

    def body(self, job_id: int, size: object) -> Optional[bytes]:
        if not self.ctx.address_given:
            raise UsageError(f"job {job_id} has a body of {size} bytes, more than the HTTP API gives (64 KiB): "
                             "give --addr or --unix too (such bodies are then read with peek), or use "
                             "export --binlog DIR")
        if self.client is None:
            self.client = self.ctx.client()
            theirs = self.api.get("/api/v1/stats")
            ours = self.client.stats()
            if not isinstance(theirs, dict) or str(theirs.get("id")) != ours.get("id"):
                raise UsageError(f"{self.client.where} is not the daemon behind {self.api.where} (their stats "
                                 "ids differ): give the --addr of the same daemon")
        found = self.client.peek(f"peek {job_id}")
        return None if found is None else found[1]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def export_api(ctx: Context) -> list[dict[str, object]]:
    """Every job the HTTP API shows, by id.  Not a snapshot of a busy queue:
    a job that changes tube or state while the pages are read may be missed,
    and one deleted before its turn is left out."""
    records: list[dict[str, object]] = []
    with ctx.api("export") as api:
        ids: set[int] = set()
        for tube in api.tube_names():
            for state in EXPORT_STATES:
                try:
                    ids.update(job["id"] for job in api.jobs(tube, state))
                except NotFound:
                    break  # the tube went away (its last job deleted) meanwhile
        progress = Progress(len(ids), "exporting")
        peeker = _Peeker(ctx, api)
        try:
            for done, job_id in enumerate(sorted(ids), 1):
                try:
                    job = api.get(f"/api/v1/jobs/{job_id}")
                except NotFound:
                    continue  # deleted meanwhile
                if not isinstance(job, dict) or not all(key in job for key in ("state", "tube", "pri", "ttr")):
                    raise ServerError(f"{api.where}: job {job_id}: the answer lacks stats-job fields")
                body = api_body(job)
                if body is None:
                    body = peeker.body(job_id, job.get("size"))
                    if body is None:
                        continue
                records.append(api_record(job, body))
                progress.update(done)
            progress.update(len(ids), final=True)
        finally:
            peeker.close()
    return records


def _count(states: Iterable[str]) -> str:
    tally = {READY: 0, DELAYED: 0, BURIED: 0}
    for state in states:
        tally[state] = tally.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in tally.items())


# ---------------------------------------------------------------------- import


class ImportJob(NamedTuple):
    line: int
    tube: str
    state: str
    pri: int
    delay: int
    ttr: int
    body: bytes
    id: Optional[int] = None  # kept by an import into a store (--store); puts give new ids
    bury_seq: Optional[int] = None  # a buried job's place in its tube's kick order (smaller first)


class ImportPause(NamedTuple):
    """A line ``{"tube": T, "pause": SECONDS}``: the tube's pause has that long left."""

    line: int
    tube: str
    seconds: int


# Ids and bury orders a store import keeps are Redis scores and Lua numbers
# (doubles): whole numbers up to 2**53 are exact.
MAX_STORE_INT = 2**53


def _int_field(record: dict[str, object], key: str, where: str, high: int) -> int:
    value = record.get(key, IMPORT_DEFAULTS[key])
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise UsageError(f"{where}: {key!r} must be an integer from 0 to {high}")
    return value


def parse_jobs(data: bytes, name: str) -> list[ImportJob]:
    """Every line checked before anything is put: a bad file imports nothing."""
    return [item for item in parse_items(data, name) if isinstance(item, ImportJob)]


def parse_items(data: bytes, name: str) -> list[Union[ImportJob, ImportPause]]:
    """The jobs and pauses of a whole file, every line checked."""
    items = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        item = parse_line(raw, number, name)
        if item is not None:
            items.append(item)
    return items


def parse_line(raw: bytes, number: int, name: str, store: bool = False) -> Union[ImportJob, ImportPause, None]:
    """One line of an export: a job, a tube's pause, or None (a blank line).
    ``store``: the ids and bury orders are checked too (a store import keeps them)."""
    if not raw.strip():
        return None
    where = f"{name}:{number}"
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: not a JSON line: {exc}") from None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: not a JSON object")
    tube = record.get("tube", "default")
    if not isinstance(tube, str):
        raise UsageError(f"{where}: \"tube\" must be a string")
    try:
        check_tube(tube)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    if "pause" in record and "body" not in record:
        seconds = record["pause"]
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_PRI:
            raise UsageError(f"{where}: 'pause' must be an integer from 0 to {MAX_PRI}")
        return ImportPause(number, tube, seconds)
    state = record.get("state", READY)
    if state == RESERVED:
        state = READY  # a reservation belongs to a connection; it cannot be moved
    if state not in (READY, DELAYED, BURIED):
        raise UsageError(f"{where}: \"state\" must be ready, delayed, buried or reserved")
    try:
        body = decode_body(record, where)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    job_id = bury_seq = None
    if store:
        job_id = _optional_int(record, "id", where, 1)
        if state == BURIED:
            bury_seq = _optional_int(record, "bury_seq", where, 0)
    return ImportJob(
        number, tube, str(state), _int_field(record, "pri", where, MAX_PRI),
        _int_field(record, "delay", where, MAX_PRI) if state == DELAYED else 0,
        _int_field(record, "ttr", where, MAX_PRI), body, job_id, bury_seq,
    )


def _optional_int(record: dict[str, object], key: str, where: str, low: int) -> Optional[int]:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < MAX_STORE_INT:
        raise UsageError(f"{where}: {key!r} must be an integer from {low} to {MAX_STORE_INT - 1}")
    return value


@dataclass
class Imported:
    counts: dict[str, int] = field(default_factory=lambda: {READY: 0, DELAYED: 0, BURIED: 0})
    not_buried: list[int] = field(default_factory=list)  # lines whose job was reserved by someone first
    failure: Optional[str] = None

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + len(self.not_buried)


def import_jobs(client: Client, jobs: list[ImportJob]) -> Imported:
    """Puts in file order, pipelined by batches; a buried job is put, then taken
    with ``reserve-job`` and buried at its priority (beanstalkd 1.12 has
    reserve-job).  Stops after the first batch in which the server refused a put."""
    done = Imported()
    start = 0
    while start < len(jobs) and done.failure is None:
        chunk: list[ImportJob] = []
        size = 0
        while start + len(chunk) < len(jobs) and len(chunk) < BATCH and size < BATCH_BYTES:
            job = jobs[start + len(chunk)]
            chunk.append(job)
            size += len(job.body)
        start += len(chunk)
        _put_batch(client, chunk, done)
    return done


def _put_batch(client: Client, chunk: list[ImportJob], done: Imported) -> None:
    out = bytearray()
    uses: list[bool] = []  # per job: a `use` reply comes before its put reply
    for job in chunk:
        uses.append(job.tube != client.used)
        if uses[-1]:
            out += f"use {job.tube}\r\n".encode("ascii")
            client.used = job.tube
        out += f"put {job.pri} {job.delay} {job.ttr} {len(job.body)}\r\n".encode("ascii") + job.body + b"\r\n"
    client.send(bytes(out))
    to_bury: list[tuple[ImportJob, int]] = []
    for job, used in zip(chunk, uses):
        if used:
            client.expect(client.read_reply(), b"USING", command="use")
        reply = client.read_reply()
        if reply.word == b"INSERTED" or reply.word == b"BURIED":
            job_id = int(reply.args[0])
            if job.state == BURIED:
                to_bury.append((job, job_id))
            elif reply.word == b"BURIED":
                done.counts[BURIED] += 1  # out of memory: the server buried it itself
            else:
                done.counts[job.state] += 1
        elif done.failure is None:
            done.failure = f"line {job.line}: the server answered {reply.text()} to put"
    for job, job_id in to_bury:
        if client.reserve_job(job_id):
            if not client.bury(job_id, job.pri):
                raise ServerError(f"{client.where}: job {job_id} (line {job.line}) could not be buried")
            done.counts[BURIED] += 1
        else:
            done.not_buried.append(job.line)


def _put_pauses(client: Client, pauses: list[ImportPause]) -> None:
    """The pauses of the file, once its jobs are in (``pause-tube`` needs the tube)."""
    for pause in pauses:
        if pause.seconds and not client.pause_tube(pause.tube, pause.seconds):
            note(f"line {pause.line}: tube {pause.tube!r} does not exist (no job in it): its pause was not set")


def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    if getattr(args, "store", None) is not None:
        from .storexfer import import_store

        return import_store(ctx, args)
    if getattr(args, "merge", False) or getattr(args, "new_ids", False):
        raise UsageError("--merge and --new-ids go with --store (an import over the protocol always adds, "
                         "with new ids)")
    name = "stdin" if args.file == "-" else args.file
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    items = parse_items(data, name)
    jobs = [item for item in items if isinstance(item, ImportJob)]
    with ctx.client() as client:
        done = import_jobs(client, jobs)
        where = client.where
        if done.failure is None:
            _put_pauses(client, [item for item in items if isinstance(item, ImportPause)])
    counts = ", ".join(f"{n} {state}" for state, n in done.counts.items())
    if done.not_buried:
        counts += f", {len(done.not_buried)} reserved by other clients"
    for line in done.not_buried:
        note(f"line {line}: the job was reserved by another client before it could be buried; it stays theirs")
    if done.failure is not None:
        raise ServerError(f"imported {done.total} of {len(jobs)} jobs ({counts}) into {where}, then stopped: "
                          f"{done.failure}")
    emit(f"imported {done.total} jobs ({counts}) into {where}")
    return EXIT_OK
