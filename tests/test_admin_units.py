"""The admin tool's pure parts: addresses, YAML, JSON values, the table, export records.
No sockets, no files: these run in the fast unit loop."""

from __future__ import annotations

import pytest

from beanstalk_py.admin.api import Endpoint, parse_url, tube_path
from beanstalk_py.admin.client import UsageError, check_tube, describe, parse_addr, parse_yaml, parse_yaml_list
from beanstalk_py.admin.commands import looks_like_daemon
from beanstalk_py.admin.render import (
    STATS_TEXT,
    TUBE_COLUMNS,
    TUBE_TEXT,
    body_fields,
    decode_body,
    duration,
    own_share,
    preview_cell,
    table,
    typed,
)
from beanstalk_py.admin.top import rate
from beanstalk_py.admin.transfer import api_body, api_record, export_record, parse_jobs
from beanstalk_py.binlog.format import NS, JobRecord


@pytest.mark.parametrize("text, expected", [
    ("", ("127.0.0.1", 11300)),
    ("example.org", ("example.org", 11300)),
    ("example.org:11301", ("example.org", 11301)),
    (":12000", ("127.0.0.1", 12000)),
    ("[::1]:11300", ("::1", 11300)),
    ("[::1]", ("::1", 11300)),
])
def test_parse_addr(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize("text", ["h:0", "h:x", "h:70000", "::1", "[::1", "[::1]x"])
def test_parse_addr_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_addr(text)


def test_describe() -> None:
    assert describe(("::1", 5)) == "[::1]:5"
    assert describe(("127.0.0.1", 5)) == "127.0.0.1:5"
    assert describe("/run/b.sock") == "unix:/run/b.sock"


def test_tube_names() -> None:
    for good in ("default", "a", "x" * 200, "A-z0+9/;.$_()"):
        assert check_tube(good) == good
    for bad in ("", "-a", "x" * 201, "a b", "a\r\nquit", "é"):
        with pytest.raises(UsageError):
            check_tube(bad)


def test_yaml() -> None:
    body = b'---\npid: 12\nversion: "1.12"\nos: #1 SMP\nhostname: "a \\"b\\""\ndraining: false\n'
    stats = parse_yaml(body)
    assert stats == {"pid": "12", "version": "1.12", "os": "#1 SMP", "hostname": 'a "b"', "draining": "false"}
    assert typed(stats, STATS_TEXT) == {"pid": 12, "version": "1.12", "os": "#1 SMP", "hostname": 'a "b"',
                                        "draining": False}
    assert typed({"id": "1234", "rusage-utime": "0.5"}, STATS_TEXT) == {"id": "1234", "rusage-utime": 0.5}
    assert typed({"name": "42", "pause": "3"}, TUBE_TEXT) == {"name": "42", "pause": 3}
    assert parse_yaml_list(b"---\n- default\n- 42\n") == ["default", "42"]


def test_bodies_round_trip() -> None:
    for body in (b"", b"text \xc3\xa9", b"\x00\xff", b"a\r\nb"):
        fields = body_fields(body)
        assert decode_body(dict(fields), "x") == body
    assert body_fields(b"\xff") == {"body": "/w==", "body_b64": True}


def test_table_drops_columns_that_do_not_fit() -> None:
    rows = [("default", {"current-jobs-ready": "3"}), ("a-much-longer-tube-name", {})]
    full = table(TUBE_COLUMNS, rows)
    assert full[0].split() == [col.title for col in TUBE_COLUMNS]
    assert full[1].split()[:2] == ["default", "3"] and full[2].split()[1] == "?"
    narrow = table(TUBE_COLUMNS, rows, width=40, name_width=10)
    assert narrow[0].split() == ["TUBE", "READY", "RESERVED", "DELAYED"]
    assert narrow[2].startswith("a-much-lo~")
    assert all(len(line) <= 40 for line in narrow)


def test_own_share_leaves_out_the_admin_connection() -> None:
    stats = {"current-using": "3", "current-watching": "1"}
    assert own_share("default", stats) == {"current-using": "2", "current-watching": "0"}
    assert own_share("other", stats) is stats
    assert own_share("default", {"current-using": "0"}) == {"current-using": "0"}


def test_rates() -> None:
    assert rate({"cmd-put": "30"}, None, ("cmd-put",), 1.0) is None
    assert rate({"cmd-put": "30"}, {"cmd-put": "10"}, ("cmd-put",), 2.0) == 10.0
    assert rate({"a": "5", "b": "5"}, {"a": "1", "b": "1"}, ("a", "b"), 1.0) == 8.0
    assert rate({"cmd-put": "1"}, {"cmd-put": "10"}, ("cmd-put",), 1.0) is None  # restarted
    assert rate({"total-jobs": "4"}, {}, ("total-jobs",), 1.0) == 4.0  # a new tube


def test_duration() -> None:
    assert duration(0) == "0:00:00"
    assert duration(3725) == "1:02:05"
    assert duration(2 * 86400 + 61) == "2d 0:01:01"


def test_looks_like_daemon() -> None:
    assert looks_like_daemon(["/usr/bin/beanstalkd", "-b", "/x"])
    assert looks_like_daemon(["/usr/local/bin/beanstalk-py"])
    assert looks_like_daemon(["/usr/bin/python3", "/usr/local/bin/beanstalk-py", "-l", "0.0.0.0"])
    assert looks_like_daemon(["python", "-m", "beanstalk_py"])
    assert not looks_like_daemon(["sleep", "60"])
    assert not looks_like_daemon(["python", "-c", "print('beanstalkd')"])
    assert not looks_like_daemon([])


def test_export_record() -> None:
    now = 1_000 * NS

    def rec(state: str, deadline: int = 0) -> JobRecord:
        return JobRecord(7, b"t", state, 5, 30 * NS, 60 * NS, 0, deadline, b"hi\r\n")

    assert export_record(rec("reserved"), now) == {
        "id": 7, "tube": "t", "state": "ready", "pri": 5, "delay": 0, "ttr": 60, "body": "hi"}
    assert export_record(rec("buried"), now)["state"] == "buried"
    delayed = export_record(rec("delayed", now + 29 * NS + 1), now)
    assert (delayed["state"], delayed["delay"]) == ("delayed", 30)  # rounded up: never early
    due = export_record(rec("delayed", now - 1), now)
    assert (due["state"], due["delay"]) == ("ready", 0)


def test_parse_jobs_defaults_and_reserved() -> None:
    jobs = parse_jobs(b'{"body": "a"}\n\n{"tube": "t", "state": "reserved", "delay": 9, "body": ""}\n', "f")
    assert [(j.line, j.tube, j.state, j.pri, j.delay, j.ttr, j.body) for j in jobs] == [
        (1, "default", "ready", 1024, 0, 60, b"a"),
        (3, "t", "ready", 1024, 0, 60, b""),  # a delay only counts for delayed jobs
    ]
    with pytest.raises(UsageError, match="f:1: 'ttr' must be an integer"):
        parse_jobs(b'{"ttr": true, "body": ""}', "f")


# ---------------------------------------------------------------------- --url


@pytest.mark.parametrize("text, expected", [
    ("http://127.0.0.1:11380", Endpoint("http", "127.0.0.1", 11380, "", "", "http://127.0.0.1:11380")),
    ("http://localhost/", Endpoint("http", "localhost", 80, "", "", "http://localhost")),
    ("https://q.example/beanstalk/", Endpoint("https", "q.example", 443, "/beanstalk", "", "https://q.example/beanstalk")),
    ("http://[::1]:8080", Endpoint("http", "::1", 8080, "", "", "http://[::1]:8080")),
    ("unix:/run/b.sock", Endpoint("unix", "localhost", 0, "", "/run/b.sock", "unix:/run/b.sock")),
    ("unix:///run/b.sock", Endpoint("unix", "localhost", 0, "", "/run/b.sock", "unix:/run/b.sock")),
])
def test_parse_url(text: str, expected: Endpoint) -> None:
    assert parse_url(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:11380", "ftp://h", "http://", "http://h:x", "http://h:70000",
                                  "unix:", "http://h/?a=1", "http://u:p@h"])
def test_parse_url_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_url(text)


def test_tube_path_escapes_slashes() -> None:
    assert tube_path("a/b", "jobs") == "/api/v1/tubes/a%2Fb/jobs"
    assert tube_path("x+y;$()") == "/api/v1/tubes/x%2By%3B%24%28%29"


def test_preview_cell() -> None:
    assert preview_cell({"preview": "a\r\nb", "preview_encoding": "text", "size": 4}) == "a\\r\\nb"
    assert preview_cell({"preview": "abc", "preview_encoding": "text", "size": 500}) == "abc..."
    assert preview_cell({"preview": "00ff", "preview_encoding": "hex", "size": 2}) == "hex:00ff"
    assert preview_cell({"preview": "x" * 80, "preview_encoding": "text", "size": 80}) == "x" * 60 + "..."


def test_api_record_as_the_binlog_export_writes_it() -> None:
    job = {"id": 7, "tube": "t", "state": "delayed", "pri": 5, "ttr": 60, "time-left": 29, "age": 3,
           "body": "AP8=", "encoding": "base64", "size": 2, "truncated": False}
    body = api_body(job)
    assert body == b"\x00\xff"
    assert api_record(job, body) == {"id": 7, "tube": "t", "state": "delayed", "pri": 5, "delay": 30, "ttr": 60,
                                     "body": "AP8=", "body_b64": True}
    assert api_record({**job, "state": "reserved"}, b"hi")["state"] == "ready"
    assert api_body({**job, "truncated": True}) is None
    assert api_body({**job, "body": "\u00e9", "encoding": "text"}) == "\u00e9".encode()
