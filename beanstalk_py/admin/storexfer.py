"""Moving queues in and out of the Redis store (``--store redis://...``):
``export --store URL``, ``import --store URL`` and ``migrate`` between a
binlog directory (``-b DIR``) and a store, in both directions.

The file format is the one of :mod:`.transfer` (JSON lines, one job a line,
by id), with two additions an import into a store reads and the others
ignore or apply by protocol:

* ``"bury_seq": N`` on a buried job: its place in the kick order (smaller
  first; only the order matters).  An import into a store keeps ids, so it
  needs the bury order stated; a file without it buries in file order.
* ``{"tube": "mail", "pause": 42}`` lines after the jobs: the tube's pause
  has 42 s left (rounded up).  ``import`` over the protocol applies them
  with ``pause-tube``.

Reading a store: read-only Functions (``FCALL_RO``, so a replica serves
too) walk the job keys with SCAN, :data:`SCAN_COUNT` keys a call: each call
is atomic and short, so Redis is never blocked for the length of a big
export, and SCAN hands back every job that exists from the first call to the
last at least once.  With front ends still serving, that is an at-least-once
copy, as ``export --binlog`` of a running daemon is: a job taken and deleted
meanwhile may be in it, a job put meanwhile may not.  One Function call
for the whole store would be a true snapshot, but would block every front
end for as long as it takes to copy the queue (seconds for a million jobs)
and hold it whole in memory twice; MULTI would do the same.  SCAN may show
a key twice (when the keyspace is rehashed between two calls): the export
keeps the last read of each id.  Output is by id: runs of
:data:`SORT_RUN` jobs are sorted in memory and spilled to temporary files,
then merged, so memory stays bounded.

Writing a store: the input is read twice.  The first pass checks every line
(a file with one bad line writes nothing) and finds the largest id; stdin is
spooled to a temporary file for it.  Then ``bs_import_begin`` refuses a
store that holds jobs (unless ``--merge``) and raises the id counter past
the largest id before any job is written, so a running front end can never
hand out an imported id; then ``bs_import_jobs`` writes :data:`CHUNK` jobs a
call.  Jobs keep their ids (``--new-ids`` gives new ones, in file order);
ready and delayed jobs need no particular order (the store orders them by
(pri, id) and (deadline, id)), buried ones get their bury order from
``bury_seq``.  A job whose id the store holds already is skipped, so an
interrupted import run again with ``--merge`` writes only what is missing.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import sys
import tempfile
import time
from typing import IO, TYPE_CHECKING, Callable, Iterator, NamedTuple, Optional, TypeVar, Union

from ..binlog import DEFAULT_FILE_SIZE, FILE_PREFIX, V7_PREFIX, Binlog, BinlogError, JobRecord
from ..binlog.log import BinlogLockError, lock_directory
from ..binlog.format import NS, encode_header
from ..store import BURIED, DELAYED, READY, RESERVED
from .client import EXIT_OK, AdminError, CannotConnect, ServerError, UsageError
from .commands import Context, Progress, emit, note
from .render import body_fields
from .transfer import ImportJob, ImportPause, parse_line, replay_binlog

if TYPE_CHECKING:
    from ..redisstore.resp import BlockingRedis

T = TypeVar("T")

US = 1_000_000
CHUNK = 1000  # jobs per bs_import_jobs call
CHUNK_BYTES = 4 << 20  # ... or fewer, when their bodies reach this
SCAN_COUNT = 1000  # keys looked at per bs_export_jobs call
SORT_RUN = 50_000  # export lines sorted in memory before a run is spilled to a temporary file
SORT_RUN_BYTES = 16 << 20  # ... or fewer, when they reach this many characters
MAX_RUNS = 500  # spilled runs (open files) before they are merged into one
STATES = (READY, DELAYED, BURIED)


class StoreJob(NamedTuple):
    """A job as it moves: ``delay_us`` is the time a delayed job has left,
    ``bury_seq`` a buried job's kick order, ``body`` without its CRLF."""

    id: int
    tube: str
    state: str
    pri: int
    delay_us: int
    ttr: int
    bury_seq: int
    body: bytes


# ---------------------------------------------------------------------- the connection


class StoreRefused(ServerError):
    """An error reply of the store (``reply`` its text)."""

    def __init__(self, message: str, reply: str) -> None:
        super().__init__(message)
        self.reply = reply


class StoreConn:
    """A blocking connection to the store (:class:`~..redisstore.resp.BlockingRedis`)
    that calls the library's Functions, loading the library if Redis lacks them."""

    def __init__(self, url: str, timeout: float) -> None:
        from ..redisstore.resp import MISSING_HIREDIS, hiredis

        self.address = store_address(url)
        if hiredis is None:
            raise UsageError(MISSING_HIREDIS)
        self.where = str(self.address)
        self.timeout = timeout
        self._loaded = False
        self.redis = self._guard(self._connect)

    def _connect(self) -> "BlockingRedis":
        """The primary (asked of the Sentinels for redis+sentinel://), with
        TLS, AUTH and SELECT as the URL says."""
        from ..redisstore.resp import RedisError

        address = self.address
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        if not isinstance(host, str) or not isinstance(port, int):
            raise UsageError(f"{self.where}: not an address the admin tool can connect to")
        try:
            if getattr(address, "master", ""):
                host, port = self._primary(getattr(address, "sentinels", ()) or ((host, port),),
                                           getattr(address, "master"))
            redis = self._open(host, port)
            try:
                password, username = getattr(address, "password", ""), getattr(address, "username", "")
                if password:
                    redis.execute(*(("AUTH", username, password) if username else ("AUTH", password)))
                if getattr(address, "db", 0):
                    redis.execute("SELECT", getattr(address, "db"))
            except BaseException:
                redis.close()
                raise
        except RedisError as exc:
            if "closed the connection" in str(exc):
                raise
            raise ServerError(f"redis at {self.where}: {exc}") from None
        return redis

    def _open(self, host: str, port: int) -> "BlockingRedis":
        from ..redisstore.resp import BlockingRedis

        redis = BlockingRedis(host, port, 0, timeout=self.timeout)
        if getattr(self.address, "tls", False):
            import ssl

            # The system's CAs: nothing has been sent yet, so the socket is wrapped in place.
            redis.sock = ssl.create_default_context().wrap_socket(redis.sock, server_hostname=host)
        return redis

    def _primary(self, sentinels: tuple[tuple[str, int], ...], master: str) -> tuple[str, int]:
        """The primary's address for ``master``, asked of each Sentinel in turn."""
        from ..redisstore.resp import RedisError

        why = []
        for host, port in sentinels:
            try:
                sentinel = self._open(host, port)
                try:
                    reply = sentinel.execute("SENTINEL", "get-master-addr-by-name", master)
                finally:
                    sentinel.close()
            except (OSError, RedisError) as exc:
                why.append(f"sentinel {host}:{port}: {getattr(exc, 'strerror', None) or exc}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            why.append(f"sentinel {host}:{port} does not know master {master!r}")
        raise CannotConnect(f"{self.where}: no sentinel named a primary: " + "; ".join(why))

    def _guard(self, call: Callable[..., T], *args: object) -> T:
        from ..redisstore.resp import RedisError

        try:
            return call(*args)
        except (OSError, RedisError) as exc:
            if isinstance(exc, RedisError) and "closed the connection" not in str(exc):
                raise
            reason = "no reply in time (--timeout)" if isinstance(exc, TimeoutError) else (
                getattr(exc, "strerror", None) or str(exc))
            raise CannotConnect(f"redis at {self.where}: {reason}") from None

    def fcall(self, name: str, *args: Union[bytes, str, int], read_only: bool = False) -> object:
        """``FCALL bs_<name>`` (``FCALL_RO`` when ``read_only``), the library
        loaded first if Redis does not know the function; an error reply
        raises :class:`StoreRefused`."""
        from ..redisstore.resp import RedisError
        from ..redisstore.store import ANCHOR, library_source

        command = (b"FCALL_RO" if read_only else b"FCALL", b"bs_" + name.encode(), 1, ANCHOR, b"", *args)
        try:
            try:
                return self._guard(self.redis.execute, *command)
            except RedisError as exc:
                if self._loaded or "function not found" not in str(exc).lower():
                    raise
            self._loaded = True
            self._guard(self.redis.execute, "FUNCTION", "LOAD", "REPLACE", library_source())
            return self._guard(self.redis.execute, *command)
        except RedisError as exc:
            raise StoreRefused(f"{self.where}: {exc}", str(exc)) from None

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> "StoreConn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_address(url: str) -> object:
    """``--store`` parsed as the daemon parses it (a usage error if it cannot be)."""
    from ..redisstore.address import StoreAddressError, parse_store_url

    try:
        return parse_store_url(url)
    except StoreAddressError as exc:
        raise UsageError(str(exc)) from None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------- reading a store


class Meta(NamedTuple):
    now_us: int
    max_id: int  # the store's id counter: every id it ever gave out
    pauses: list[tuple[str, int]]  # (tube, us left)


def store_meta(conn: StoreConn) -> Meta:
    reply = conn.fcall("export_meta", read_only=True)
    assert isinstance(reply, list)
    now = int(reply[0])
    pauses = [(_text(reply[i]), int(reply[i + 2]) - now) for i in range(3, len(reply), 3)]
    return Meta(now, int(reply[1]), pauses)


def scan_store(conn: StoreConn) -> Iterator[StoreJob]:
    """Every job of the store, in SCAN order, a chunk per call (a job may come twice)."""
    cursor: Union[bytes, str] = b"0"
    while True:
        reply = conn.fcall("export_jobs", cursor, SCAN_COUNT, read_only=True)
        assert isinstance(reply, list)
        cursor = reply[0]
        for i in range(2, len(reply), 8):
            body = reply[i + 7]
            if body.endswith(b"\r\n"):
                body = body[:-2]
            yield StoreJob(int(reply[i]), _text(reply[i + 1]), _text(reply[i + 2]), int(reply[i + 3]),
                           int(reply[i + 4]), int(reply[i + 5]), int(reply[i + 6]), body)
        if cursor in (b"0", "0", 0):
            return


def job_line(job: StoreJob) -> dict[str, object]:
    """A job as export writes it (``delay`` rounded up to whole seconds: never early)."""
    record: dict[str, object] = {
        "id": job.id, "tube": job.tube, "state": job.state, "pri": job.pri,
        "delay": -(-job.delay_us // US) if job.state == DELAYED else 0, "ttr": job.ttr, **body_fields(job.body),
    }
    if job.state == BURIED:
        record["bury_seq"] = job.bury_seq
    return record


def by_id(entries: Iterator[tuple[int, str, str]]) -> Iterator[tuple[str, str]]:
    """``(id, state, line)`` in any order, possibly repeated, as ``(state, line)``
    by id, the last of each id; memory for :data:`SORT_RUN` lines or
    :data:`SORT_RUN_BYTES` at most (more are sorted in runs spilled to
    temporary files, then merged: the merge holds one line per run)."""
    runs: list[IO[str]] = []
    buf: list[str] = []
    size = 0
    try:
        for seq, (job_id, state, line) in enumerate(entries):
            buf.append(f"{job_id:020d} {seq:012d} {state[0]} {line}\n")  # fixed width: text order is (id, seq)
            size += len(line)
            if len(buf) >= SORT_RUN or size >= SORT_RUN_BYTES:
                buf.sort()
                run: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")
                run.writelines(buf)
                run.seek(0)
                runs.append(run)
                buf = []
                size = 0
                if len(runs) >= MAX_RUNS:  # 8 GB of lines: keep the open files few
                    whole: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")
                    whole.writelines(heapq.merge(*runs))
                    whole.seek(0)
                    for done in runs:
                        done.close()
                    runs = [whole]
        buf.sort()
        merged: Iterator[str] = heapq.merge(iter(buf), *runs) if runs else iter(buf)
        held: Optional[str] = None
        for entry in merged:
            if held is not None and held[:20] != entry[:20]:
                yield _STATE_OF[held[34]], held[36:-1]
            held = entry
        if held is not None:
            yield _STATE_OF[held[34]], held[36:-1]
    finally:
        for run in runs:
            run.close()


_STATE_OF = {state[0]: state for state in STATES}


def export_store(ctx: Context, args: argparse.Namespace) -> int:
    """``admin export --store URL FILE``."""
    with StoreConn(args.store, ctx.timeout) as conn:
        counts = {state: 0 for state in STATES}
        out: IO[bytes]
        if args.file == "-":
            sys.stdout.flush()
            out = sys.stdout.buffer
        else:
            try:
                out = open(args.file, "wb")
            except OSError as exc:
                raise UsageError(f"cannot write {args.file}: {exc.strerror}") from None
        try:
            entries = ((job.id, job.state, json.dumps(job_line(job), ensure_ascii=False))
                       for job in scan_store(conn))
            for state, line in by_id(entries):
                counts[state] += 1
                out.write(line.encode("utf-8") + b"\n")
            for tube, left in store_meta(conn).pauses:  # as they are now, after the jobs
                out.write(json.dumps({"tube": tube, "pause": -(-left // US)}).encode() + b"\n")
            out.flush()
        finally:
            if out is not sys.stdout.buffer:
                out.close()
    total = sum(counts.values())
    tally = ", ".join(f"{n} {state}" for state, n in counts.items())
    if args.file == "-":
        note(f"exported {total} jobs ({tally}) from {conn.where}")
    else:
        emit(f"exported {total} jobs ({tally}) from {conn.where} to {args.file}")
    return EXIT_OK


# ---------------------------------------------------------------------- writing a store


class Importer:
    """Writes jobs into a store :data:`CHUNK` at a time, after ``bs_import_begin``."""

    def __init__(self, conn: StoreConn, merge: bool, new_ids: bool, max_id: int, total: int) -> None:
        self.conn = conn
        self.new_ids = new_ids
        try:
            reply = conn.fcall("import_begin", 1 if merge else 0, max_id)
        except StoreRefused as exc:
            if exc.reply.startswith("NOTEMPTY"):
                raise ServerError(f"{conn.where}: {exc.reply[len('NOTEMPTY '):]}; nothing was imported "
                                  "(give --merge to add to them)") from None
            raise
        assert isinstance(reply, list)
        self.had = int(reply[0])
        self.bury_base = int(reply[1])
        self.args: list[Union[bytes, str, int]] = []
        self.size = 0
        self.imported = 0
        self.skipped = 0
        self.counts = {state: 0 for state in STATES}
        self.progress = Progress(total, "importing")
        self.sent = 0

    def add(self, job_id: Optional[int], tube: str, state: str, pri: int, delay_us: int, ttr: int,
            bury_seq: int, body: bytes) -> None:
        self.args += (b"" if job_id is None else job_id, tube, state, pri, delay_us, ttr, bury_seq,
                      body + b"\r\n")
        self.size += len(body) + 64
        self.counts[state] += 1
        if len(self.args) >= 8 * CHUNK or self.size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.args:
            return
        try:
            reply = self.conn.fcall("import_jobs", 1 if self.new_ids else 0, self.bury_base, *self.args)
        except AdminError as exc:
            exc.args = (f"{exc} after {self.imported} jobs were imported (run again with --merge to add the "
                        "rest: jobs already there are skipped)",)
            raise
        assert isinstance(reply, list)
        self.imported += int(reply[0])
        self.skipped += int(reply[1])
        self.sent += len(self.args) // 8
        self.args = []
        self.size = 0
        self.progress.update(self.sent)

    def pauses(self, pauses: list[tuple[str, int]]) -> int:
        args: list[Union[str, int]] = []
        for tube, left_us in pauses:
            args += (tube, left_us)
        if not args:
            return 0
        return int(self.conn.fcall("import_pauses", *args))  # type: ignore[call-overload]

    def summary(self, source: str) -> str:
        self.progress.update(self.sent, final=True)
        tally = ", ".join(f"{n} {state}" for state, n in self.counts.items())
        text = f"imported {self.imported} jobs ({tally}) from {source} into {self.conn.where}"
        if self.skipped:
            text += f"; {self.skipped} skipped: their ids were in the store already"
        return text


def _spool(args: argparse.Namespace) -> tuple[IO[bytes], str]:
    """The input as a file that can be read twice (stdin is copied to a temporary file)."""
    if args.file == "-":
        spool = tempfile.TemporaryFile()
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.seek(0)
        return spool, "stdin"
    try:
        return open(args.file, "rb"), args.file
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None


def _items(fh: IO[bytes], name: str) -> Iterator[Union[ImportJob, ImportPause]]:
    fh.seek(0)
    for number, raw in enumerate(fh, 1):
        item = parse_line(raw, number, name, store=True)
        if item is not None:
            yield item


def import_store(ctx: Context, args: argparse.Namespace) -> int:
    """``admin import --store URL FILE [--merge] [--new-ids]``."""
    store_address(args.store)
    fh, name = _spool(args)
    with fh:
        jobs = max_id = 0
        pauses: dict[str, tuple[int, int]] = {}  # tube -> (line, seconds): the last line wins
        for item in _items(fh, name):  # first pass: check every line, write nothing
            if isinstance(item, ImportPause):
                pauses[item.tube] = (item.line, item.seconds)
            else:
                jobs += 1
                if item.id is not None and not args.new_ids:
                    max_id = max(max_id, item.id)
        with StoreConn(args.store, ctx.timeout) as conn:
            importer = Importer(conn, args.merge, args.new_ids, max_id, jobs)
            for item in _items(fh, name):
                if isinstance(item, ImportJob):
                    importer.add(item.id, item.tube, item.state, item.pri, item.delay * US, item.ttr,
                                 item.line if item.bury_seq is None else item.bury_seq, item.body)
            importer.flush()
            wanted = [(tube, seconds * US) for tube, (_line, seconds) in pauses.items() if seconds]
            paused = importer.pauses(wanted)
            if paused < len(wanted):
                note(f"{len(wanted) - paused} tube pauses were not set: those tubes have no job")
            emit(importer.summary(name))
    return EXIT_OK


# ---------------------------------------------------------------------- migrate


def _binlog_files(directory: str) -> list[str]:
    return sorted(name for name in os.listdir(directory)
                  if (name.startswith(FILE_PREFIX) and name[len(FILE_PREFIX):].isdigit())
                  or (name.startswith(V7_PREFIX) and name[len(V7_PREFIX):].isdigit()))


def _lock(directory: str) -> int:
    """DIR/lock, as the daemon takes it: a daemon still running on DIR is refused."""
    path = os.path.join(directory, "lock")
    try:
        return lock_directory(directory, path)
    except BinlogLockError as exc:
        if exc.in_use:
            raise UsageError(f"{directory} is in use: a daemon holds {path}; stop it first (export --binlog "
                             "copies the jobs of a running daemon, at least once)") from None
        raise UsageError(str(exc)) from None


def binlog_jobs(records: list[JobRecord], now_wall_ns: int) -> Iterator[StoreJob]:
    """A replay's jobs as they would come back after a restart: a reservation
    as ready, a delayed job whose time has come as ready; buried ones keep the
    order of their records (the kick order), as ``bury_seq`` 1, 2, 3..."""
    buried = sorted((rec.stamp, rec.id) for rec in records if rec.state == BURIED)
    rank = {job_id: n for n, (_stamp, job_id) in enumerate(buried, 1)}
    for rec in sorted(records, key=lambda r: r.id):
        state, left = rec.state, 0
        if state == RESERVED:
            state = READY
        elif state == DELAYED:
            left = -(-(rec.deadline - now_wall_ns) // 1000)
            if left <= 0:
                state, left = READY, 0
        body = rec.body[:-2] if rec.body.endswith(b"\r\n") else rec.body
        yield StoreJob(rec.id, rec.tube.decode("ascii", "replace"), state, rec.pri, left, rec.ttr // NS,
                       rank.get(rec.id, 0), body)


def migrate_to_store(ctx: Context, args: argparse.Namespace) -> int:
    """``admin migrate --from-binlog DIR --to-store URL``: read DIR as the daemon's
    start-up replay does (under DIR/lock: no daemon may run on it), then import."""
    directory = args.from_binlog
    store_address(args.to_store)
    if not os.path.isdir(directory):
        raise UsageError(f"--from-binlog {directory}: not a directory")
    fd = _lock(directory)
    try:
        replay, problems = replay_binlog(directory)
        for problem in problems:
            note(f"warning: {problem}")
        records = list(replay.jobs.values())
        with StoreConn(args.to_store, ctx.timeout) as conn:
            importer = Importer(conn, args.merge, False, replay.max_id, len(records))
            for job in binlog_jobs(records, time.time_ns()):
                importer.add(job.id, job.tube, job.state, job.pri, job.delay_us, job.ttr, job.bury_seq, job.body)
            importer.flush()
            emit(importer.summary(directory))
            emit(f"the store's next id is above {replay.max_id}; {directory} was left as it was "
                 "(start the front ends with --store, not -b)")
    finally:
        os.close(fd)
    return EXIT_OK


class _FreshLog(Binlog):
    """A binlog written by the migration: its file headers carry the store's
    id counter, so the daemon's first id is past every id the store gave out."""

    floor = 0

    def _header(self, seq: int) -> bytes:
        return encode_header(seq, max(self._max_id, self.floor), self._stamp)


def migrate_to_binlog(ctx: Context, args: argparse.Namespace) -> int:
    """``admin migrate --from-store URL --to-binlog DIR``: every job of the store
    into a fresh binlog directory that ``beanstalk-py -b DIR`` serves."""
    directory = args.to_binlog
    store_address(args.from_store)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from None
    with StoreConn(args.from_store, ctx.timeout) as conn:
        meta = store_meta(conn)
        log = _FreshLog(directory, DEFAULT_FILE_SIZE, 50, clock=time.monotonic_ns, wall_clock=time.time_ns,
                        log=lambda text: note(f"warning: {text}"))
        log.floor = meta.max_id
        try:
            log.lock()
        except BinlogError as exc:
            raise UsageError(str(exc)) from None
        try:
            found = _binlog_files(directory)
            if found:
                raise UsageError(f"{directory} holds binlog files already ({found[0]}...): give an empty "
                                 "or new directory")
            try:
                log.open()
                counts = {state: 0 for state in STATES}
                read = 0
                created = time.time_ns()
                for job in scan_store(conn):
                    read += 1
                    counts[job.state] += 1
                    stamp = 2 + job.bury_seq if job.state == BURIED else 1  # replay's order: the kick order
                    deadline = time.time_ns() + job.delay_us * 1000 if job.state == DELAYED else 0
                    delay = -(-job.delay_us // US) * NS if job.state == DELAYED else 0
                    log.space.write_full(JobRecord(job.id, job.tube.encode("ascii"), job.state, job.pri, delay,
                                                   job.ttr * NS, created, deadline, job.body + b"\r\n", stamp), 1)
                total = len(log.space.where)
            except BaseException as exc:
                log.close()
                for name in _binlog_files(directory):  # ours: the directory had none
                    os.unlink(os.path.join(directory, name))
                if isinstance(exc, BinlogError):
                    raise AdminError(f"{directory}: {exc}; nothing was kept") from None
                raise
        finally:
            log.close()
    tally = ", ".join(f"{n} {state}" for state, n in counts.items())
    emit(f"migrated {total} jobs ({tally}) from {conn.where} into {directory}; "
         f"beanstalk-py -b {directory} serves them, its next id above {meta.max_id}")
    if read > total:
        note(f"{read - total} jobs were read twice (the store changed during the copy); the last read was kept")
    if meta.pauses:
        note(f"{len(meta.pauses)} paused tubes start unpaused: a binlog keeps no pauses "
             f"({', '.join(tube for tube, _left in meta.pauses)})")
    return EXIT_OK


def cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    if args.from_binlog is not None and args.to_store is not None:
        return migrate_to_store(ctx, args)
    if args.from_store is not None and args.to_binlog is not None:
        if args.merge:
            raise UsageError("--merge goes with --to-store (a store that already holds jobs)")
        return migrate_to_binlog(ctx, args)
    raise UsageError("migrate goes from a binlog to a store or back: --from-binlog DIR --to-store "
                     "redis://HOST:PORT/DB, or --from-store redis://HOST:PORT/DB --to-binlog DIR")
