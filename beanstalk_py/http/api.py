"""What each HTTP endpoint asks of the store, with no web framework.

Every call is bounded, because the beanstalk clients are served by one task
on the same thread (epoll_loop.py): lists are paged (a store cursor, at most
:data:`MAX_PAGE` jobs), and clear, move and kick of many jobs work in slices
of :data:`SLICE` jobs with a trio checkpoint between slices.  Reads use
snapshots, so they move no counter; writes go through the store's own
operations, so with ``-b`` they are in the binlog before the answer, and
under ``-f 0`` the answer waits for the fsync as a protocol reply does.

Errors are :class:`ApiError` (an HTTP status and a message) for :mod:`.app`
to render as JSON.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar, Union, cast

import trio

from ..dispatch import Dispatcher, now_ns
from ..log import warn
from ..metrics import DEFAULT_TUBE_SERIES, render, render_insight
from ..protocol import valid_tube_name
from ..stats import Stat, server_stats
from ..store import BURIED, DELAYED, READY, RESERVED, STATES, Cursor, Later, Store
from ..wal import WalError
from .auth import Principal
from .rates import RateHistory

T = TypeVar("T")

# Jobs changed per slice of a bulk write before the loop yields to the
# beanstalk clients.  Measured on the 2-core test machine without -b: a slice
# of 256 takes about 1 ms to clear or move, the epoll driver's own budget
# between checkpoints (epoll_loop.py).
SLICE = 256
MAX_PAGE = 500  # jobs per page of a job list
DEFAULT_PAGE = 50
MAX_TUBE_PAGE = 1000  # tubes per page of /api/v1/tubes
PREVIEW_BYTES = 200  # of each body in a job list
BODY_CAP = 65536  # bytes of body /api/v1/jobs/{id} returns
METRICS_TTL_NS = 1_000_000_000  # one /metrics rendering a second, shared
MAX_PAUSE = 2**32 - 1  # pause-tube's bound
MAX_PRI = 2**32 - 1  # put's bound for pri, delay and ttr
MAX_IDS = 10_000  # job ids in one bulk request by id
# Jobs a search (q=) looks at per request: about 1 ms of body scans on the
# 2-core test machine (200-byte bodies), the loop's budget between checkpoints.
MAX_SCAN = 5_000


class ApiError(Exception):
    """An answer other than 200: its status, a message, and any more fields."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields
        self.headers: dict[str, str] = {}


# The plane cannot wait for a network store's answers yet (issue 11).
NOT_YET = "not available with --store redis yet"


def now_value(answer: Union[T, Later[T]]) -> T:
    """The value of a store answer; a :class:`Later` (a network store) is a 501 for now."""
    if isinstance(answer, Later):
        raise ApiError(501, f"{NOT_YET}: the HTTP plane handles only stores that answer at once")
    return answer


class _AnswersLater:
    """The plane's view of a store that answers later (``--store redis``).

    Its attributes (``draining`` for /readyz, ``max_job_size``) read
    through; any call is refused with a 501 *before* it reaches the store,
    since a call would queue real work (a put, a delete) whose answer the
    plane could not wait for, and an empty answer would show an empty queue
    that is not empty.
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ApiError(501, f"{NOT_YET} ({name})")

        return refuse


# ---------------------------------------------------------------------- values


def _json_value(stat: Stat) -> Union[int, float, str, bool]:
    if stat.name.startswith("rusage-"):
        return float(stat.value)  # "seconds.micros"
    return stat.value


def stats_dict(stats: Sequence[Stat]) -> dict[str, Union[int, float, str, bool]]:
    return {stat.name: _json_value(stat) for stat in stats}


def encode_cursor(cursor: Cursor) -> str:
    """An opaque page cursor: the store's (int, int), base64url without padding."""
    return base64.urlsafe_b64encode(f"{cursor[0]}:{cursor[1]}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        first, second = raw.split(":")
        return int(first), int(second)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "after: not a cursor this server gave") from None


def _utf8_prefix(data: bytes, truncated: bool) -> Optional[str]:
    """``data`` as text if it is UTF-8 (a character cut at the end of a truncated body is dropped)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")
        return None


def preview(body: bytes) -> dict[str, Any]:
    """The first bytes of a body, as text if UTF-8, else hex."""
    head = body[:PREVIEW_BYTES]
    text = _utf8_prefix(head, len(body) > len(head))
    if text is not None:
        return {"preview": text, "preview_encoding": "text"}
    return {"preview": head.hex(), "preview_encoding": "hex"}


def full_body(body: bytes) -> dict[str, Any]:
    """A body up to :data:`BODY_CAP` bytes, as text if UTF-8, else base64."""
    head = body[:BODY_CAP]
    truncated = len(body) > len(head)
    text = _utf8_prefix(head, truncated)
    out: dict[str, Any] = {"size": len(body), "truncated": truncated}
    if text is not None:
        out.update(body=text, encoding="text")
    else:
        out.update(body=base64.b64encode(head).decode("ascii"), encoding="base64")
    return out


def tube_name(text: str) -> bytes:
    """A tube name from a URL or body (400 when beanstalk would refuse it)."""
    try:
        name = text.encode("ascii")
    except UnicodeEncodeError:
        name = b""
    if not valid_tube_name(name):
        raise ApiError(400, f"not a valid tube name: {text!r}")
    return name


def job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise ApiError(400, f"not a job id: {text!r}")
    return int(text)


def _int_param(value: Optional[str], name: str, default: int, low: int, high: int) -> int:
    """A query parameter: a whole number, clamped to ``high``."""
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < low:
        raise ApiError(400, f"{name}: a whole number of at least {low}, not {value!r}")
    return min(int(value), high)


class _LazyTubes(Mapping[bytes, Sequence[Stat]]):
    """stats-tube by name, made only for the tubes /metrics shows (the series cap)."""

    def __init__(self, plane: "Plane", names: Sequence[bytes], now: int) -> None:
        self.plane = plane
        self.names = names
        self.now = now

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: bytes) -> Sequence[Stat]:
        return self.plane.tube_stats(name, self.now) or []


# ---------------------------------------------------------------------- the plane


class Plane:
    """The HTTP plane's view of one served store (the dispatcher's)."""

    def __init__(self, dispatcher: Dispatcher, clock: Callable[[], int] = now_ns,
                 tube_series: int = DEFAULT_TUBE_SERIES) -> None:
        self.dispatcher = dispatcher
        # A network store is refused call by call (501); /healthz and
        # /readyz still answer, for a load balancer in front of front ends.
        self.answers_later: bool = getattr(dispatcher.store, "answers_later", False)
        self.store: Store[Any] = (cast("Store[Any]", _AnswersLater(dispatcher.store)) if self.answers_later
                                  else dispatcher.store)
        self.info = dispatcher.info
        self.clock = clock
        self.tube_series = tube_series
        self._metrics: Optional[tuple[int, str]] = None
        self.metrics_renders = 0  # how many times /metrics was rendered (the cache's tests)
        self.http_responses: dict[int, int] = {}  # answers by HTTP status (counted by app.Guard)
        self.rates = RateHistory()  # per-tube put/reserve/delete rates, sampled by background()

    async def background(self) -> None:
        """The plane's own periodic work, run beside the listener until it stops:
        sampling the tubes' counters for their rates (none for a store that answers later)."""
        if self.answers_later:
            return
        await self.rates.run(lambda: now_value(self.store.tube_counters()), self.clock)

    # ------------------------------------------------------------------ health

    def ready(self) -> bool:
        """Serving, and not draining (SIGUSR1): a load balancer's question."""
        return not self.store.draining

    # ------------------------------------------------------------------ reads

    def _tube_names(self) -> list[bytes]:
        names: list[bytes] = now_value(self.store.tube_names())
        return sorted(names)

    def tube_stats(self, name: bytes, now: int) -> Optional[list[Stat]]:
        return now_value(self.store.tube_stats(name, now))

    def metrics(self) -> str:
        """The Prometheus text, rendered at most once a second for every reader."""
        now = self.clock()
        cached = self._metrics
        if cached is not None and now - cached[0] < METRICS_TTL_NS:
            return cached[1]
        server = server_stats(now_value(self.store.snapshot(now)), self.info, now)
        names = self._tube_names()
        shown = [(name, insight) for name in names[:self.tube_series]
                 if (insight := now_value(self.store.tube_insight(name, now))) is not None]
        extra = render_insight(shown, now_value(self.store.recovered_jobs()), self.http_responses)
        text = render(server, _LazyTubes(self, names, now), self.tube_series, extra)
        self._metrics = (now, text)
        self.metrics_renders += 1
        return text

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        return stats_dict(server_stats(now_value(self.store.snapshot(now)), self.info, now))

    def tubes(self, after: Optional[str], limit: Optional[str]) -> dict[str, Any]:
        """stats-tube of every tube in name order, a page at a time."""
        count = _int_param(limit, "limit", MAX_TUBE_PAGE, 1, MAX_TUBE_PAGE)
        names = self._tube_names()
        start = 0 if not after else bisect.bisect_right(names, after.encode("ascii", "replace"))
        page = names[start:start + count]
        now = self.clock()
        out = [self._tube_dict(name, stats, now) for name in page
               if (stats := self.tube_stats(name, now)) is not None]
        more = start + count < len(names)
        return {"tubes": out, "next": page[-1].decode("ascii") if more and page else None}

    def tube(self, name: bytes) -> dict[str, Any]:
        now = self.clock()
        stats = self.tube_stats(name, now)
        if stats is None:
            raise ApiError(404, f"no tube {name.decode('ascii')}")
        return self._tube_dict(name, stats, now)

    def _tube_dict(self, name: bytes, stats: Sequence[Stat], now: int) -> dict[str, Any]:
        """stats-tube, the oldest ready job's age (seconds) and the tube's rates."""
        out: dict[str, Any] = dict(stats_dict(stats))
        insight = now_value(self.store.tube_insight(name, now))
        age = None if insight is None else insight.oldest_ready_age_ns
        out["oldest-ready-age"] = None if age is None else round(age / 1e9, 3)
        out["rates"] = self.rates.tube(name)
        return out

    def jobs(self, name: bytes, state: Optional[str], limit: Optional[str],
             after: Optional[str], q: Optional[str] = None) -> dict[str, Any]:
        """One page of a tube's jobs in ``state``, in the order the queue serves them.

        With ``q``, only jobs whose body holds those bytes (UTF-8, case-sensitive);
        a request scans at most :data:`MAX_SCAN` jobs, so a page may hold fewer
        matches than ``limit`` and still have a ``next`` to scan on from."""
        state = state or READY
        if state not in STATES:
            raise ApiError(400, f"state: one of {', '.join(STATES)}, not {state!r}")
        count = _int_param(limit, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        cursor = decode_cursor(after) if after else None
        now = self.clock()
        if self.tube_stats(name, now) is None:
            raise ApiError(404, f"no tube {name.decode('ascii')}")
        scanned: Optional[int] = None
        if q:
            views, next_cursor, scanned = now_value(
                self.store.search_jobs(name, state, q.encode("utf-8"), count, MAX_SCAN, cursor))
        else:
            views, next_cursor = now_value(self.store.tube_jobs(name, state, count, cursor))
        jobs = []
        for view in views:
            fields = self._job_fields(view.id, now)
            if fields is None:
                continue
            body = view.body[:-2]
            jobs.append({"id": view.id, "pri": fields["pri"], "state": fields["state"],
                         "age": fields["age"], "time-left": fields["time-left"], "size": len(body),
                         **preview(body)})
        out: dict[str, Any] = {"tube": name.decode("ascii"), "state": state, "jobs": jobs,
                               "next": encode_cursor(next_cursor) if next_cursor is not None else None}
        if scanned is not None:
            out["scanned"] = scanned
        return out

    def _job_fields(self, job_id: int, now: int) -> Optional[dict[str, Union[int, float, str, bool]]]:
        """stats-job of a job by name (None: no such job)."""
        stats = now_value(self.store.job_stats(job_id, now))
        return None if stats is None else {stat.name: stat.value for stat in stats}

    def job(self, job_id: int) -> dict[str, Any]:
        """stats-job and the body (size-capped)."""
        now = self.clock()
        stats = now_value(self.store.job_stats(job_id, now))
        view = now_value(self.store.peek(job_id))
        if stats is None or view is None:
            raise ApiError(404, f"no job {job_id}")
        return {**stats_dict(stats), **full_body(view.body[:-2])}

    # ------------------------------------------------------------------ writes

    def _tube_counts(self, name: bytes) -> dict[str, int]:
        stats = self.tube_stats(name, self.clock())
        if stats is None:
            raise ApiError(404, f"no tube {name.decode('ascii')}")
        values = {stat.name: stat.value for stat in stats}
        return {state: int(values[f"current-jobs-{state}"]) for state in STATES}

    async def _settled(self) -> None:
        """After a change: wake waiters and the timer task, and under ``-f 0``
        answer only once the change is on disk."""
        self.dispatcher.settle(self.clock())
        if self.dispatcher.must_sync():
            await trio.to_thread.run_sync(self.dispatcher.durability.sync)

    def _log(self, who: Principal, what: str, count: Optional[int], started: float) -> None:
        """Every write, on stderr: who (never a token), what, how many."""
        many = "" if count is None else f": {count} job{'s' if count != 1 else ''}"
        warn(f"http: {who.who} ({who.role}): {what}{many} in {(time.monotonic() - started) * 1000:.1f} ms")

    async def job_action(self, who: Principal, job_id: int, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """kick, delete, bury, move (``to``) or reprioritize (``pri``) one job.

        A reserved job belongs to its worker (whose own delete or release would
        then fail), so only kick-free states are changed: 409 otherwise."""
        _only(body, {"dry_run"} | ({"to"} if action == "move" else {"pri"} if action == "reprioritize" else set()))
        dry_run = body.get("dry_run", False)
        _check_bool(dry_run, "dry_run")
        fields = self._job_fields(job_id, self.clock())
        if fields is None:
            raise ApiError(404, f"no job {job_id}")
        state = str(fields["state"])
        allowed = _JOB_ACTION_STATES[action]
        if state not in allowed:
            raise ApiError(409, f"job {job_id} is {state}: {action} needs a job that is {' or '.join(allowed)}"
                           + (" (a reserved job belongs to its worker)" if state == RESERVED else ""))
        target, pri = b"", 0
        if action == "move":
            target = _target(body, str(fields["tube"]).encode("ascii"))
        elif action == "reprioritize":
            pri = _priority(body)
        if dry_run:
            return {"dry_run": True, "count": 1}
        started = time.monotonic()
        now = self.clock()
        try:
            if action == "kick":
                done = now_value(self.store.kick_job(job_id, now))
            elif action == "delete":
                done = now_value(self.store.delete_job(job_id))
            elif action == "bury":
                done = now_value(self.store.bury_job(job_id, now))
            elif action == "move":
                done = now_value(self.store.move_job(job_id, target, now))
            else:
                done = now_value(self.store.reprioritize_job(job_id, pri, now))
        except WalError as exc:
            raise ApiError(503, f"the binlog could not record it: {exc}", count=0) from None
        finally:
            await self._settled()
        if not done:
            raise ApiError(503, "the binlog could not record it", count=0)
        what = f"{action} job {job_id}"
        if action == "move":
            what += f" to {target.decode('ascii')}"
        elif action == "reprioritize":
            what += f" to priority {pri}"
        self._log(who, what, 1, started)
        return {"count": 1}

    async def put_json(self, who: Principal, name: bytes, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/v1/tubes/{tube}/jobs``: {"body", "encoding": "text"|"base64",
        "pri": 1024, "delay": 0, "ttr": 60} (the defaults are beanstalk clients')."""
        _only(body, {"body", "encoding", "pri", "delay", "ttr"})
        text, encoding = body.get("body"), body.get("encoding", "text")
        if not isinstance(text, str):
            raise ApiError(400, "body: the job's body as a string")
        if encoding == "text":
            data = text.encode("utf-8")
        elif encoding == "base64":
            try:
                data = base64.b64decode(text, validate=True)
            except (ValueError, binascii.Error):
                raise ApiError(400, "body: not base64") from None
        else:
            raise ApiError(400, "encoding: text or base64")
        numbers = []
        for field, default in (("pri", 1024), ("delay", 0), ("ttr", 60)):
            value = body.get(field, default)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ApiError(400, f"{field}: a whole number")
            numbers.append(value)
        return await self.put(who, name, data, *numbers)

    async def put(self, who: Principal, name: bytes, body: bytes, pri: int, delay: int, ttr: int) -> dict[str, Any]:
        """Put one job (the console's form): as a protocol put, bounded by -z, refused while draining."""
        if len(body) > self.store.max_job_size:
            raise ApiError(413, f"the body is over the maximum job size ({self.store.max_job_size} bytes)")
        for value, field, high in ((pri, "pri", MAX_PRI), (delay, "delay", MAX_PRI), (ttr, "ttr", MAX_PRI)):
            if not 0 <= value <= high:
                raise ApiError(400, f"{field}: a whole number from 0 to {high}")
        started = time.monotonic()
        try:
            job = now_value(self.store.put_job(name, pri, delay, ttr, body, self.clock()))
        except WalError as exc:
            raise ApiError(503, f"the binlog could not record it: {exc}") from None
        finally:
            await self._settled()
        if not job:
            raise ApiError(503, "draining (SIGUSR1): puts are refused")
        self._log(who, f"put job {job} into {name.decode('ascii')}", 1, started)
        return {"id": job}

    async def tube_action(self, who: Principal, name: bytes, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """kick, clear, move or pause a tube (see README for the body)."""
        if action == "pause":
            return await self._pause(who, name, body)
        allowed = {"state", "count", "all", "ids", "dry_run"} | ({"to"} if action == "move" else set())
        _only(body, allowed)
        dry_run = body.get("dry_run", False)
        _check_bool(dry_run, "dry_run")
        counts = self._tube_counts(name)
        state = body.get("state")
        if action == "kick":
            if state is None:
                state = BURIED if counts[BURIED] else DELAYED  # as the kick command chooses
            if state not in (BURIED, DELAYED):
                raise ApiError(400, "state: buried or delayed (only those can be kicked)")
        elif state not in (READY, DELAYED, BURIED):
            raise ApiError(400, "state: ready, delayed or buried (reserved jobs belong to their workers)")
        target = _target(body, name) if action == "move" else b""
        if "ids" in body:
            return await self._by_ids(who, name, action, state, target, body)
        wanted = _count(body)
        total = min(wanted, counts[state]) if wanted is not None else counts[state]
        if dry_run:
            return {"dry_run": True, "count": total}
        started = time.monotonic()
        done = 0
        try:
            while done < total:
                step = min(SLICE, total - done)
                now = self.clock()
                if action == "kick":
                    moved = self._kick_slice(name, state, step, now)
                elif action == "clear":
                    moved = now_value(self.store.clear_tube(name, state, step))
                else:
                    moved = now_value(self.store.move_jobs(name, target, state, step, now))
                done += moved
                self.dispatcher.settle(now)
                if moved < step:
                    break  # the state emptied (workers took jobs), or the log failed
                await trio.sleep(0)  # the beanstalk clients' turn
        except WalError as exc:
            raise ApiError(503, f"the binlog could not record more: {exc}", count=done) from None
        finally:
            await self._settled()
            what = f"{action} tube {name.decode('ascii')} {state}"
            if action == "move":
                what += f" to {target.decode('ascii')}"
            if done:
                self._log(who, what, done, started)
        return {"count": done}

    async def _by_ids(self, who: Principal, name: bytes, action: str, state: str, target: bytes,
                      body: Mapping[str, Any]) -> dict[str, Any]:
        """kick, clear or move the jobs listed in ``ids`` that are in this tube and
        ``state`` now (others are skipped and counted: the page was stale)."""
        if "count" in body or "all" in body:
            raise ApiError(400, "give ids, or count, or all: true (one of them)")
        ids = body["ids"]
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_IDS
                or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)):
            raise ApiError(400, f"ids: a list of 1 to {MAX_IDS} job ids")
        dry_run = body.get("dry_run", False)
        started = time.monotonic()
        done = skipped = 0
        try:
            for offset in range(0, len(ids), SLICE):
                now = self.clock()
                for job_id in ids[offset:offset + SLICE]:
                    if not self._is(job_id, name, state, now):
                        skipped += 1
                    elif dry_run:
                        done += 1
                    elif self._change(job_id, action, target, now):
                        done += 1
                    else:
                        raise WalError(f"job {job_id} could not be logged")
                if not dry_run:
                    self.dispatcher.settle(now)
                    await trio.sleep(0)  # the beanstalk clients' turn
        except WalError as exc:
            raise ApiError(503, f"the binlog could not record more: {exc}", count=done) from None
        finally:
            if not dry_run:
                await self._settled()
                if done:
                    what = f"{action} tube {name.decode('ascii')} {state} by id"
                    self._log(who, what + (f" to {target.decode('ascii')}" if action == "move" else ""),
                              done, started)
        return {"dry_run": True, "count": done, "skipped": skipped} if dry_run else {"count": done, "skipped": skipped}

    def _is(self, job_id: int, name: bytes, state: str, now: int) -> bool:
        fields = self._job_fields(job_id, now)
        return fields is not None and fields["tube"] == name.decode("ascii") and fields["state"] == state

    def _change(self, job_id: int, action: str, target: bytes, now: int) -> bool:
        if action == "kick":
            return bool(now_value(self.store.kick_job(job_id, now)))
        if action == "clear":
            return bool(now_value(self.store.delete_job(job_id)))
        return bool(now_value(self.store.move_job(job_id, target, now)))

    def _kick_slice(self, name: bytes, state: str, step: int, now: int) -> int:
        """Kick up to ``step`` jobs in ``state`` (kick_tube cannot choose delayed while some are buried)."""
        views, _ = now_value(self.store.tube_jobs(name, state, step))
        done = 0
        for view in views:
            if not now_value(self.store.kick_job(view.id, now)):
                raise WalError("a kick could not be logged")
            done += 1
        return done

    async def _pause(self, who: Principal, name: bytes, body: Mapping[str, Any]) -> dict[str, Any]:
        _only(body, {"delay", "dry_run"})
        dry_run = body.get("dry_run", False)
        _check_bool(dry_run, "dry_run")
        delay = body.get("delay")
        if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_PAUSE:
            raise ApiError(400, f"delay: whole seconds from 0 (unpause) to {MAX_PAUSE}")
        self._tube_counts(name)  # 404 for an unknown tube
        if dry_run:
            return {"dry_run": True, "count": 0, "delay": delay}
        started = time.monotonic()
        if not now_value(self.store.pause_tube(name, delay, self.clock())):
            raise ApiError(404, f"no tube {name.decode('ascii')}")
        await self._settled()
        self._log(who, f"pause tube {name.decode('ascii')} for {delay} s", None, started)
        return {"count": 0, "delay": delay}


def _only(body: Mapping[str, Any], allowed: set[str]) -> Mapping[str, Any]:
    """Refuse unknown fields: a misspelt ``dry_run`` must not run the real thing."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)} (expected: {', '.join(sorted(allowed))})")
    return body


# The states each single-job action applies to.
_JOB_ACTION_STATES = {
    "kick": (BURIED, DELAYED),
    "delete": (READY, DELAYED, BURIED),
    "bury": (READY, DELAYED),
    "move": (READY, DELAYED, BURIED),
    "reprioritize": (READY, DELAYED, BURIED),
}
JOB_ACTIONS = tuple(_JOB_ACTION_STATES)


def _target(body: Mapping[str, Any], source: bytes) -> bytes:
    """The ``to`` tube of a move (not the tube the jobs are in)."""
    to = body.get("to")
    if not isinstance(to, str):
        raise ApiError(400, "to: the name of the tube to move the jobs to")
    target = tube_name(to)
    if target == source:
        raise ApiError(400, "to: the same tube")
    return target


def _priority(body: Mapping[str, Any]) -> int:
    pri = body.get("pri")
    if not isinstance(pri, int) or isinstance(pri, bool) or not 0 <= pri <= MAX_PRI:
        raise ApiError(400, f"pri: a whole number from 0 (most urgent) to {MAX_PRI}")
    return pri


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ApiError(400, f"{name}: true or false")


def _count(body: Mapping[str, Any]) -> Optional[int]:
    """``count: N`` or ``all: true`` (exactly one); None for all."""
    count, every = body.get("count"), body.get("all", False)
    _check_bool(every, "all")
    if every and count is None:
        return None
    if not every and isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        return count
    raise ApiError(400, "give either count (a whole number of at least 1) or all: true")
