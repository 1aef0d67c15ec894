"""The operations plane without sockets: tokens, the loopback rule, cursors,
previews, the /metrics cache, and bulk writes in slices against an engine."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from beanstalk_py.dispatch import Dispatcher
from beanstalk_py.http import api
from beanstalk_py.http.api import ApiError, Plane, decode_cursor, encode_cursor, full_body, now_value, preview
from beanstalk_py.http.auth import (HttpConfigError, Principal, check_bind, check_bound, load_tokens,
                                    loopback_host)
from beanstalk_py.stats import ServerInfo
from beanstalk_py.store import Later
from rig import NS, T0, Rig

OPERATOR = Principal("test", "operator")


def _tokens(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_tokens_by_role_and_never_quoted(tmp_path: Path) -> None:
    viewer, operator = "v" * 20 + "secret", "o" * 20 + "secret"
    tokens = load_tokens(str(_tokens(tmp_path, f"# comment\n\n{viewer} viewer\n{operator} operator\n")))
    assert tokens.check(f"Bearer {viewer}") == Principal("token line 3", "viewer")
    assert tokens.check(f"bearer {operator}") == Principal("token line 4", "operator")
    for header in (None, "", viewer, f"Basic {viewer}", "Bearer ", f"Bearer {viewer}x"):
        assert tokens.check(header) is None
    for text, why in ((f"{viewer} admin\n", "viewer or operator"), ("short operator\n", "shorter"),
                      (f"{viewer}\n", "TOKEN ROLE"), (f"{viewer} viewer\n{viewer} operator\n", "same token"),
                      ("# nothing\n", "no token")):
        with pytest.raises(HttpConfigError, match=why) as caught:
            load_tokens(str(_tokens(tmp_path, text)))
        assert viewer not in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_token_file_must_be_private(tmp_path: Path, mode: int) -> None:
    with pytest.raises(HttpConfigError, match="chmod 600"):
        load_tokens(str(_tokens(tmp_path, "x" * 20 + " operator\n", mode)))


def test_loopback_rule() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"):
        check_bind(host, "0")
    for host in ("", "0.0.0.0", "::", "8.8.8.8"):
        with pytest.raises(HttpConfigError, match="loopback"):
            check_bind(host, "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        check_bound(sock)
    assert loopback_host("localhost:8080") and loopback_host("127.0.0.1") and loopback_host("[::1]:80")
    assert loopback_host(None)
    assert not loopback_host("evil.example:8080") and not loopback_host("10.0.0.1")


def test_cursor_round_trip_and_garbage() -> None:
    for cursor in ((0, 1), (4294967295, 10**12), (-5, 7)):
        text = encode_cursor(cursor)
        assert decode_cursor(text) == cursor and "=" not in text
    for garbage in ("", "!!", "YWJj", encode_cursor((1, 2)) + "x"):
        with pytest.raises(ApiError):
            decode_cursor(garbage)


def test_previews_and_bodies() -> None:
    assert preview(b"hello") == {"preview": "hello", "preview_encoding": "text"}
    assert preview(b"\xff\x00") == {"preview": "ff00", "preview_encoding": "hex"}
    cut = "é" * 150  # 300 bytes: the 200th byte ends a character, the 201st would split one
    assert preview(cut.encode())["preview"] == "é" * 100
    odd = ("a" + "é" * 150).encode()  # the cut falls inside a character: dropped, still text
    assert preview(odd)["preview"] == "a" + "é" * 99
    big = full_body(b"x" * (api.BODY_CAP + 10))
    assert big["truncated"] and big["size"] == api.BODY_CAP + 10 and len(big["body"]) == api.BODY_CAP
    assert full_body(b"\x80\x81") == {"size": 2, "truncated": False, "body": "gIE=", "encoding": "base64"}


def test_a_later_is_an_honest_501() -> None:
    assert now_value(5) == 5
    with pytest.raises(ApiError) as caught:
        now_value(Later())
    assert caught.value.status == 501 and "not available with --store redis yet" in caught.value.message


def test_a_store_that_answers_later_is_refused_before_any_call() -> None:
    """--store redis: every query is a 501 that never reaches the store (a
    put would be made and its answer lost); draining still reads through."""
    calls: list[str] = []

    class Remote:
        answers_later = True
        draining = False
        max_job_size = 100

        def put_job(self, *args: Any) -> Later:
            calls.append("put_job")
            return Later()

        def snapshot(self, now: int) -> Later:
            calls.append("snapshot")
            return Later()

    plane = Plane(Dispatcher(Remote(), ServerInfo(started_at=T0)))  # type: ignore[arg-type]
    assert plane.ready()
    with pytest.raises(ApiError) as caught:
        plane.stats()
    assert caught.value.status == 501 and "not available with --store redis yet" in caught.value.message
    with pytest.raises(ApiError) as caught:
        plane.store.put_job(b"t", 0, 0, 60, b"x", T0)
    assert caught.value.status == 501 and calls == []


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def _plane(rig: Rig, clock: _Clock) -> Plane:
    return Plane(Dispatcher(rig.engine, ServerInfo(started_at=T0)), clock=clock)


def test_metrics_are_rendered_once_a_second_for_every_reader() -> None:
    rig, clock = Rig(), _Clock()
    plane = _plane(rig, clock)
    first = plane.metrics()
    rig.send(rig.conn(), b"put 0 0 60 1\r\nx\r\n")
    assert plane.metrics() is first and plane.metrics_renders == 1
    clock.now += NS
    assert 'beanstalkd_current_jobs{state="ready"} 1' in plane.metrics()
    assert plane.metrics_renders == 2


async def test_bulk_writes_go_in_slices_and_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "SLICE", 10)
    rig, clock = Rig(), _Clock()
    plane = _plane(rig, clock)
    c = rig.conn()
    rig.send(c, b"use src\r\n" + b"put 0 0 60 1\r\nx\r\n" * 35)
    checkpoints = 0
    real_sleep = trio.sleep

    async def counting_sleep(seconds: float) -> None:
        nonlocal checkpoints
        checkpoints += 1
        await real_sleep(seconds)

    monkeypatch.setattr(api.trio, "sleep", counting_sleep)
    assert await plane.tube_action(OPERATOR, b"src", "move", {"state": "ready", "count": 30, "to": "dst"}) == \
        {"count": 30}
    assert checkpoints == 3  # after each full slice of 10
    assert await plane.tube_action(OPERATOR, b"src", "clear", {"state": "ready", "all": True, "dry_run": True}) == \
        {"dry_run": True, "count": 5}
    assert await plane.tube_action(OPERATOR, b"src", "clear", {"state": "ready", "all": True}) == {"count": 5}
    stats = plane.tube(b"dst")
    assert stats["current-jobs-ready"] == 30 and stats["total-jobs"] == 0  # moved, not put
    with pytest.raises(ApiError, match="unknown field"):
        await plane.tube_action(OPERATOR, b"dst", "clear", {"state": "ready", "all": True, "dryrun": True})
    assert plane.tube(b"dst")["current-jobs-ready"] == 30  # the misspelt dry run changed nothing


async def test_kick_by_state_even_when_buried_jobs_exist() -> None:
    rig, clock = Rig(), _Clock()
    plane = _plane(rig, clock)
    c = rig.conn()
    rig.send(c, b"put 0 0 60 1\r\nb\r\nreserve\r\nbury 1 0\r\nput 0 100 60 1\r\nd\r\n")
    assert await plane.tube_action(OPERATOR, b"default", "kick", {"state": "delayed", "all": True}) == {"count": 1}
    counts = plane.tube(b"default")
    assert counts["current-jobs-buried"] == 1 and counts["current-jobs-ready"] == 1
    assert await plane.tube_action(OPERATOR, b"default", "kick", {"count": 5}) == {"count": 1}  # buried first
    clock.now += 5 * NS
    assert await plane.tube_action(OPERATOR, b"default", "pause", {"delay": 30}) == {"count": 0, "delay": 30}
    assert plane.tube(b"default")["pause"] == 30
