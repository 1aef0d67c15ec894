"""The sans-IO RESP pipeline: --durability replica's holding of replies
until a WAIT confirms them, and what counts as losing the primary."""

from __future__ import annotations

import pytest

pytest.importorskip("hiredis")

from beanstalk_py.redisstore.resp import Pipeline, RedisError, RedisLost  # noqa: E402


def test_replies_wait_for_enough_replicas_and_the_wait_is_asked_again() -> None:
    pipe = Pipeline(replicas=2, wait_ms=50)
    seen: list[object] = []
    pipe.call(("SET", "a", 1), lambda r: seen.append(("set", r)))
    pipe.call(("FCALL", "bs_lease"), lambda r: seen.append(("lease", r)), held=False)
    sent = pipe.data_to_send()
    assert sent.endswith(b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$2\r\n50\r\n")
    pipe.receive_data(b"+OK\r\n:1\r\n:1\r\n")  # SET, lease, WAIT says 1 replica of 2
    assert seen == [("lease", 1)]  # the front end's own call is not held
    assert pipe.wants_write and pipe.waits == 1
    assert pipe.data_to_send() == b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$2\r\n50\r\n"
    pipe.receive_data(b":2\r\n")
    assert seen == [("lease", 1), ("set", b"OK")]
    assert pipe.in_flight == 0


def test_losing_the_connection_fails_held_and_unsent_replies() -> None:
    pipe = Pipeline(replicas=1)
    seen: list[object] = []
    pipe.call(("SET", "a", 1), seen.append)
    pipe.data_to_send()
    pipe.receive_data(b"+OK\r\n")  # answered by Redis, not yet by a replica
    pipe.call(("SET", "b", 1), seen.append)
    assert seen == []
    pipe.fail_all(RedisError("gone"))
    assert [str(error) for error in seen] == ["gone", "gone"]  # never "OK": not confirmed
    assert pipe.in_flight == 0 and pipe.queued == 0


def test_readonly_means_the_primary_was_lost() -> None:
    pipe = Pipeline()
    seen: list[object] = []
    pipe.call(("SET", "a", 1), seen.append)
    pipe.data_to_send()
    with pytest.raises(RedisLost, match="no longer the primary"):
        pipe.receive_data(b"-READONLY You can't write against a read only replica.\r\n")
    assert seen == [] and pipe.in_flight == 1  # left for fail_all


def test_set_up_calls_go_first_and_are_not_held() -> None:
    pipe = Pipeline(replicas=1)
    seen: list[object] = []
    pipe.call(("GET", "client"), lambda r: seen.append(("client", r)))
    pipe.call_first([(("FUNCTION", "LOAD"), lambda r: seen.append(("load", r))), (("FCALL", "bs_init"), None)])
    data = pipe.data_to_send()
    assert data.index(b"FUNCTION") < data.index(b"bs_init") < data.index(b"client") < data.index(b"WAIT")
    pipe.receive_data(b"+bs\r\n$4\r\nepoc\r\n$-1\r\n")
    assert seen == [("load", b"bs")]
    pipe.receive_data(b":1\r\n")
    assert seen == [("load", b"bs"), ("client", None)]
