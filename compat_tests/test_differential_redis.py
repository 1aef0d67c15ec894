"""The differential suite (test_differential.py) with beanstalk-py on a Redis store.

The scripts are test_differential.py's own, imported (pytest collects them
here a second time), not copied.  A fixture swaps the beanstalk-py side of
``run_both`` (``test_differential.PY_SIDE``) for front ends started with
``--store redis://...`` on one redis-server (one for this module), in two
variants, each on its own database:

* ``1fe``: one front end.  Every reply must equal beanstalkd 1.12's, as for
  the in-memory daemon.
* ``3fe``: three front ends on one store; each ``s.conn()`` of a script goes
  to the next front end in turn (the first to front end 0, the second to 1,
  ...), and a signal goes to all three.  The replies must equal one
  beanstalkd's except for the documented rows of store mode (COMPAT.md):
  ``stats`` counts this front end's connections only (those five fields are
  masked, on both sides); another front end's command counts reach Redis
  within 100 ms, and its use/watch/ignore and connection closes are written
  behind (visible within about 100 ms): a StoreWire sends a command that
  reads them (``stats``, ``stats-tube``, ``list-tubes``, ``pause-tube``)
  only once the other front ends have had that long since the script last
  spoke to them.  Nothing is masked for that, except where a script's
  timing does not allow the wait (:data:`MASKS`).

Front ends are started once per variant (and per set of command-line
arguments), not per script: a start costs ~0.15 s of CPU, 480 of them would
not fit the CI budget.  Between scripts the store is emptied (every key but
the front ends' leases) once every front end has counted out the script's
connections and Redis holds none of their sessions; a front end that was
signalled (drain) is started afresh.  A reused front end's
``total-connections`` carries on from the scripts before: the 1fe variant
rebases it (the harness made every connection it ever had), the 3fe variant
masks it with the other connection counters.

Scripts that cannot apply are skipped with the reason and the COMPAT row
(:data:`SKIPS`).  Skipped where redis-server is not installed.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_differential as diff  # noqa: E402
from conftest import Daemon, listening_socket  # noqa: E402
from redis_rig import RedisServer, redis_server  # noqa: E402,F401  (fixture)
from test_differential import *  # noqa: E402,F401,F403  (the scripts, collected again here)
from wire import Wire, is_stats, yaml_fields  # noqa: E402

# Another front end's cmd-* counts reach Redis at most every 100 ms
# (store.COUNT_FLUSH_NS, the service's count task), its use/watch/ignore
# and closes at once but written behind (the documented bound: ~100 ms).
# The margins cover a busy CI machine.
COUNT_LAG_S = 0.15
VISIBILITY_S = 0.1

# `stats` fields that are this front end's own in store mode (COMPAT.md):
# with three front ends a script's `stats` sees a third of its connections.
PER_FRONT_END = ("current-connections", "current-producers", "current-workers", "current-waiting",
                 "total-connections")
CMD_COUNTS = tuple("cmd-" + name for name in (
    "put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve", "reserve-with-timeout",
    "delete", "release", "use", "watch", "ignore", "bury", "kick", "touch", "stats", "stats-job",
    "stats-tube", "list-tubes", "list-tube-used", "list-tubes-watched", "pause-tube"))

# COMPAT rows the reasons name (store mode, for COMPAT.md).
ROW_CONN_COUNTERS = ("COMPAT store mode: `stats` current-connections, current-producers, current-workers, "
                     "current-waiting and total-connections count this front end's connections only")
ROW_CMD_LAG = ("COMPAT store mode: another front end's command counts (`stats` cmd-*) reach `stats` "
               "within 100 ms")
ROW_NOT_SCRIPT = "not a run_both script: it starts its own in-memory daemons on a unix socket"

# test name, or name[param]: (variants it is skipped in, reason)
SKIPS: dict[str, tuple[tuple[str, ...], str]] = {
    "test_peek_ok_unix_and_auto_removal": (("1fe", "3fe"), ROW_NOT_SCRIPT),
    # The script polls `stats` on one connection until current-waiting counts
    # the waiter of another connection, which is on another front end.
    "test_kick_delayed_first_kicked_goes_to_waiter": (("3fe",), ROW_CONN_COUNTERS),
    "test_kick_buried_first_kicked_goes_to_waiter": (("3fe",), ROW_CONN_COUNTERS),
    "test_close_with_two_reserved_jobs_and_a_waiter": (("3fe",), ROW_CONN_COUNTERS),
    # Decides whether its waiter (mostly on another front end) was served by
    # current-waiting in `stats` of connection 0.
    "test_random_session": (("3fe",), ROW_CONN_COUNTERS),
}

# 3fe only, test name: the cmd-* counts masked (and no wait before `stats`).
MASKS: dict[str, tuple[str, ...]] = {
    # Its `stats` is queued behind a reserve that a put on another front end
    # ends: it runs at once, before that front end sent its count of the put.
    "test_commands_queued_behind_blocked_reserve": CMD_COUNTS,
    # Times a 1 s pause from just before its `stats`: a wait there would eat
    # into the second it measures.
    "test_pause": CMD_COUNTS,
}

# 3fe only: scripts about the order in which tubes are made, which is the
# order their use/watch reach Redis: StoreWire waits before a use, watch,
# ignore or close on one front end while another's may still be on its way.
ORDERED = {"test_list_tubes_order_after_connection_close"}

_TOTAL = re.compile(rb"^total-connections: (\d+)$", re.M)


# ---------------------------------------------------------------- the store side


class StoreWire(Wire):
    """A connection to one of several front ends, that sends a command
    reading what other front ends write behind only once they have had the
    time to write it (see the module's docstring)."""

    def __init__(self, sock: socket.socket, side: "StoreSide", index: int) -> None:
        super().__init__(sock)
        self.side = side
        self.index = index

    def send(self, data: bytes) -> "Wire":
        side = self.side
        lines = data.split(b"\r\n")
        # (b"\r\n" is Session.conn()'s probe: the new session's use/watch of default)
        writes = data == b"\r\n" or any(line.startswith((b"use", b"watch", b"ignore", b"quit")) for line in lines)
        if side.waits:
            if b"stats" in lines:
                side.wait_for_others(self.index, side.sent, COUNT_LAG_S)
            if any(line.startswith((b"stats-tube", b"list-tubes", b"pause-tube")) for line in lines) or (
                    writes and side.ordered):
                side.wait_for_others(self.index, side.wrote, VISIBILITY_S)
        now = time.monotonic()
        side.sent[self.index] = now
        if writes:
            side.wrote[self.index] = now
        return super().send(data)

    def shutdown_write(self) -> None:
        self.side.wrote[self.index] = time.monotonic()
        super().shutdown_write()

    def close(self) -> None:
        if self.side.ordered and self.side.waits:
            self.side.wait_for_others(self.index, self.side.wrote, VISIBILITY_S)
        self.side.wrote[self.index] = time.monotonic()
        super().close()


class StoreSide(diff.PySide):
    """``count`` front ends on database ``db`` of the module's redis-server,
    reused from script to script (see the module's docstring)."""

    def __init__(self, redis: RedisServer, count: int, db: int) -> None:
        self.redis = redis
        self.count = count
        self.db = db
        self.url = f"redis://127.0.0.1:{redis.port}/{db}"
        self.sets: dict[tuple[str, ...], list[Daemon]] = {}
        self.dirty: set[tuple[str, ...]] = set()
        self.mask_keys: tuple[str, ...] = PER_FRONT_END if count > 1 else ()
        self.waits = count > 1
        self.ordered = False
        self.sent: dict[int, float] = {}  # front end -> when the script last sent it anything
        self.wrote: dict[int, float] = {}  # ... something it writes behind (use, watch, close...)
        self._offset = 0  # 1fe: total-connections before the script, less the reference's probe
        self._extra: tuple[str, ...] = ()

    # -------------------------------------------------------------- front ends

    def _redis(self):
        from beanstalk_py.redisstore.resp import BlockingRedis

        return BlockingRedis("127.0.0.1", self.redis.port, self.db)

    def _launch(self, extra: tuple[str, ...]) -> list[Daemon]:
        client = self._redis()
        try:
            # Not FLUSHDB: the other sets' leases stay (they would exit).
            client.execute("EVAL", _EMPTY_BUT_LEASES, 1, "{bs}")
        finally:
            client.close()
        daemons = [Daemon([sys.executable, "-m", "beanstalk_py", "--store", self.url, *extra],
                          listener=listening_socket()) for _ in range(self.count)]
        with ThreadPoolExecutor(self.count) as pool:
            futures = [pool.submit(d.start) for d in daemons]
            errors = [f.exception() for f in futures]
        if any(errors):
            for daemon in daemons:
                daemon.stop()
            raise next(e for e in errors if e is not None)
        return daemons

    def _quiesce(self, daemons: list[Daemon]) -> Optional[list[int]]:
        """Wait until the front ends have counted out every connection of the
        last script and Redis holds none of their sessions; empty the store
        but for the leases.  Their total-connections, or None if they would
        not settle (then they are started afresh)."""
        totals = []
        deadline = time.monotonic() + 5
        for daemon in daemons:
            if daemon.proc is None or daemon.proc.poll() is not None:
                return None
            probe = Wire(daemon.connect())
            try:
                while True:
                    fields = yaml_fields(probe.one(b"stats\r\n"))
                    if fields.get("current-connections") == "1":
                        totals.append(int(fields["total-connections"]))
                        break
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.005)
            finally:
                probe.close()
        client = self._redis()
        try:
            # Every session's use/watch count (tr:<fe>) and wait (fw:<fe>)
            # is gone once its close reached Redis, the probes' included.
            while client.execute("KEYS", "{bs}:tr:*") or client.execute("KEYS", "{bs}:fw:*"):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.002)
            client.execute("EVAL", _EMPTY_BUT_LEASES, 1, "{bs}")
            client.execute("FCALL", "bs_init", 1, "{bs}", "")
        finally:
            client.close()
        return totals

    def start(self, *extra: str):
        self.sent.clear()
        self.wrote.clear()
        self._extra = extra
        daemons = self.sets.get(extra)
        totals = None
        if daemons is not None and extra not in self.dirty:
            totals = self._quiesce(daemons)
        if totals is None:
            if daemons is not None:
                for daemon in daemons:
                    daemon.stop()
            # At most one set besides the plain one: -z sets are rare.
            for other in [key for key in self.sets if key not in ((), extra)]:
                for daemon in self.sets.pop(other):
                    daemon.stop()
            self.dirty.discard(extra)
            daemons = self.sets[extra] = self._launch(extra)
            totals = self._quiesce(daemons)
            assert totals is not None, "fresh front ends would not settle"
        # The reference's first script connection is its 2nd (after the start
        # probe); ours is totals[0] + 1.
        self._offset = totals[0] - 1
        return daemons if self.count > 1 else daemons[0]

    def stop(self, daemons: list[Daemon]) -> None:
        """Kept for the next script (the session closed its connections);
        one that died says why."""
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is not None:
                self.dirty.add(self._extra)
                err = daemon.proc.communicate()[1]
                raise AssertionError(f"front end {daemon.port} exited {daemon.proc.returncode}: {err[-3000:]!r}")

    def stop_all(self) -> None:
        for daemons in self.sets.values():
            for daemon in daemons:
                daemon.stop()
        self.sets.clear()

    # -------------------------------------------------------------- scripts

    def finish(self, transcript):
        if self.count > 1 or not self._offset:
            return transcript
        return _rebase(transcript, self._offset)

    def wire(self, sock: socket.socket, session: diff.Session, daemon: Daemon) -> Wire:
        if self.count == 1:
            return Wire(sock)
        return StoreWire(sock, self, session.daemons.index(daemon))

    def wait_for_others(self, index: int, times: dict[int, float], lag: float) -> None:
        others = [at for fe, at in times.items() if fe != index]
        if others:
            wait = max(others) + lag - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def signal(self, session: diff.Session, signum: int) -> None:
        """Every front end; for SIGUSR1 (drain), until each says it drains.
        They are started afresh for the next script."""
        self.dirty.add(self._extra)
        for daemon in session.daemons:
            daemon.proc.send_signal(signum)
        if signum != signal.SIGUSR1 or len(session.daemons) == 1:
            return
        for daemon in session.daemons:
            probe = Wire(daemon.connect())
            deadline = time.monotonic() + 3
            while b"draining: true" not in probe.one(b"stats\r\n"):
                assert time.monotonic() < deadline, "a front end never started draining"
                time.sleep(0.01)
            probe.close()


# Delete every key of the store but the front ends' leases ({bs}:fes) and
# the marks of reclaimed front ends: a FLUSHDB would end the front ends.
_EMPTY_BUT_LEASES = """
local keep = {[KEYS[1] .. ':fes'] = true}
for _, key in ipairs(redis.call('KEYS', KEYS[1] .. ':*')) do
  if not keep[key] and not string.find(key, ':dead:', 1, true) then redis.call('DEL', key) end
end
return 1
"""


def _rebase(transcript, offset: int):
    if isinstance(transcript, bytes):
        if not is_stats(transcript):
            return transcript
        head, _, rest = transcript.partition(b"\r\n")
        body = _TOTAL.sub(lambda m: b"total-connections: %d" % (int(m.group(1)) - offset), rest[:-2])
        return b"OK %d\r\n%s\r\n" % (len(body), body)
    if isinstance(transcript, (list, tuple)):
        return type(transcript)(_rebase(item, offset) for item in transcript)
    return transcript


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["1fe", "3fe"])
def store_side(request, redis_server: RedisServer) -> Iterator[StoreSide]:  # noqa: F811
    """The variant: module-scoped, so pytest runs every 1fe script, then every 3fe one."""
    side = StoreSide(redis_server, 1 if request.param == "1fe" else 3, db=1 if request.param == "1fe" else 2)
    try:
        yield side
    finally:
        side.stop_all()


@pytest.fixture(autouse=True)
def _on_the_store(request, store_side: StoreSide) -> Iterator[None]:
    variant = "1fe" if store_side.count == 1 else "3fe"
    node = request.node
    names = [node.originalname]
    if hasattr(node, "callspec"):
        names += [f"{node.originalname}[{value}]" for key, value in node.callspec.params.items()
                  if key != "store_side"]
    for name in names:
        variants, reason = SKIPS.get(name, ((), ""))
        if variant in variants:
            pytest.skip(reason)
    masked = MASKS.get(node.originalname, ()) if variant == "3fe" else ()
    store_side.mask_keys = (PER_FRONT_END + masked) if variant == "3fe" else ()
    store_side.waits = variant == "3fe" and not masked
    store_side.ordered = node.originalname in ORDERED
    saved = diff.PY_SIDE
    diff.PY_SIDE = store_side
    try:
        yield
    finally:
        diff.PY_SIDE = saved
