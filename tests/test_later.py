"""A store that answers later (as one over the network would): replies keep
their places, commands behind them run on, a reserve holds back what follows it.

``LaterStore`` wraps the in-memory engine: every command is applied to the
engine at once (so its state is exactly the engine's), but its answer is
handed to the connection only when the test calls ``complete``.
"""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from unittest import mock

from beanstalk_py import stats as stats_module
from beanstalk_py.conn import Connection
from beanstalk_py.engine import NS, Engine
from beanstalk_py.session import MemorySession
from beanstalk_py.stats import ServerInfo
from beanstalk_py.store import Later, SessionOwner
from test_protocol_fuzz import _Usage, command_stream

T0 = 1_000 * NS

_PASSED_THROUGH = {
    "count", "tick", "next_wakeup", "close_session", "cancel_wait", "begin_put", "drain",
    "max_job_size", "durability", "draining",
}


class _Proxy:
    """The engine's owner for a session: its finished waits become Later completions."""

    def __init__(self, store: "LaterStore", owner: SessionOwner) -> None:
        self.store = store
        self.owner = owner
        self.reserving: Optional[Later] = None

    def deliver(self, completion: Any, now: int) -> None:
        raise AssertionError("LaterStore.take_completed converts these")


class LaterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: list[Later] = []  # answered by the engine, not yet handed back
        self.done: list[Later] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.engine, name)
        if name in _PASSED_THROUGH or not callable(target):
            return target

        def later(*args: Any) -> Later:
            owner = self._owner_of(args)
            result = target(*args)
            answer: Later = Later()
            if name == "reserve" and result is None:
                owner.reserving = answer  # completes when the engine hands a job over
                return answer
            answer.complete(result)
            self.pending.append(answer)
            return answer

        return later

    def _owner_of(self, args: tuple) -> Optional[_Proxy]:
        if args and isinstance(args[0], MemorySession):
            return args[0].owner  # type: ignore[return-value]
        return None

    def open_session(self, owner: SessionOwner) -> MemorySession:
        return self.engine.open_session(_Proxy(self, owner))

    def complete(self, count: Optional[int] = None) -> None:
        """Hand back the next ``count`` answers (all by default), oldest first."""
        count = len(self.pending) if count is None else count
        self.done += self.pending[:count]
        del self.pending[:count]

    def take_completed(self) -> list:
        out = [(later.owner, later) for later in self.done]
        self.done = []
        for proxy, outcome in self.engine.take_completed():
            later = proxy.reserving
            proxy.reserving = None
            later.complete(outcome)
            out.append((proxy.owner, later))
        return out


class Rig:
    def __init__(self, later: bool) -> None:
        self.engine = Engine()
        self.store: Any = LaterStore(self.engine) if later else self.engine
        self.info = ServerInfo(started_at=T0, instance_id="0123456789abcdef", pid=1)

    def conn(self) -> Connection:
        return Connection(self.store, self.info)

    def settle(self, now: int = T0) -> None:
        while batch := self.store.take_completed():
            for owner, completion in batch:
                owner.deliver(completion, now)


def test_replies_wait_for_the_store_and_keep_their_order() -> None:
    rig = Rig(later=True)
    c = rig.conn()
    c.receive_data(b"put 0 0 60 1\r\na\r\nput 5 0 60 1\r\nb\r\npeek 1\r\nbogus\r\ndelete 2\r\n", T0)
    assert c.take_output() == b""  # the first reply is not there yet
    rig.store.complete(2)
    rig.settle()
    assert c.take_output() == b"INSERTED 1\r\nINSERTED 2\r\n"
    rig.store.complete()
    rig.settle()
    # UNKNOWN_COMMAND needed no store: it waited in its place behind peek.
    assert c.take_output() == b"FOUND 1 1\r\na\r\nUNKNOWN_COMMAND\r\nDELETED\r\n"


def test_commands_behind_a_later_reserve_wait_for_it() -> None:
    rig = Rig(later=True)
    worker, producer = rig.conn(), rig.conn()
    worker.receive_data(b"reserve\r\nlist-tube-used\r\n", T0)
    assert worker.blocked
    assert rig.engine.cmd_counts.get("list-tube-used") is None  # not run yet
    producer.receive_data(b"put 0 0 60 2\r\nhi\r\n", T0)
    rig.store.complete()
    rig.settle()
    assert producer.take_output() == b"INSERTED 1\r\n"
    assert not worker.blocked
    rig.store.complete()
    rig.settle()
    assert worker.take_output() == b"RESERVED 1 2\r\nhi\r\nUSING default\r\n"
    assert rig.engine.cmd_counts["list-tube-used"] == 1


@settings(max_examples=150, deadline=None)
@given(command_stream(65535), st.lists(st.integers(0, 3), max_size=20))
def test_a_later_store_gives_the_same_bytes(stream: bytes, completions: list[int]) -> None:
    """Whatever the commands and whenever the answers come, the bytes equal
    the in-memory store's (a reserve that would block gets a TIMED_OUT-free
    stream: both rigs run the same engine code)."""
    with mock.patch.object(stats_module.resource, "getrusage", return_value=_Usage()):
        _same_bytes(stream, completions)


def _same_bytes(stream: bytes, completions: list[int]) -> None:
    now_rig, later_rig = Rig(later=False), Rig(later=True)
    direct, deferred = now_rig.conn(), later_rig.conn()
    direct.receive_data(stream, T0)
    now_rig.settle()
    expected = direct.take_output()
    got = b""
    # Split the stream's answers into the given batches, then all the rest.
    deferred.receive_data(stream, T0)
    for count in completions:
        later_rig.store.complete(count)
        later_rig.settle()
        got += deferred.take_output()
    for _ in range(50):
        later_rig.store.complete()
        later_rig.settle()
        got += deferred.take_output()
        if not later_rig.store.pending:
            break
    assert got == expected
