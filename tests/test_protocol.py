"""Unit tests of the sans-IO parser: framing, limits and per-command argument rules."""

from __future__ import annotations

import pytest

from beanstalk_py.protocol import (
    BAD_FORMAT,
    JOB_TOO_BIG,
    LINE_LIMIT,
    UNKNOWN_COMMAND,
    Parser,
    parse_line,
    read_uint,
    valid_tube_name,
)
from rig import drain

BAD = ("reply", BAD_FORMAT)
UNKNOWN = ("reply", UNKNOWN_COMMAND)


def requests(data: bytes, max_job_size: int = 65535) -> list[tuple]:
    parser = Parser(max_job_size)
    parser.feed(data)
    return drain(parser)


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"statsfoo", BAD),
        (b"stats ", BAD),
        (b"stats", ("stats",)),
        (b"STATS", UNKNOWN),
        (b" stats", UNKNOWN),
        (b"", UNKNOWN),
        (b"reservex", BAD),
        (b"reserve-job", BAD),
        (b"reserve-with-timeout", BAD),
        (b"stats-tube", BAD),
        (b"quitxyz", ("quit",)),
        (b"put", UNKNOWN),
        (b"kick-job", UNKNOWN),
        (b"pause-tubedefault 0", ("pause-tube", b"default", 0)),
        (b"pause-tube   foo 5", ("pause-tube", b"foo", 5)),
        (b"pause-tube -abc 0", ("pause-tube-bad-name",)),
        (b"pause-tube default 4294967296", BAD),
        (b"stats\x00", BAD),
    ],
)
def test_prefix_matching(line: bytes, expected: tuple) -> None:
    assert parse_line(line, 65535) == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"put 0 0 1 1", ("put", 0, 0, 1, 1)),
        (b"put  0 0  1 1", ("put", 0, 0, 1, 1)),
        (b"put 4294967295 0 1 1", ("put", 4294967295, 0, 1, 1)),
        (b"put 4294967296 0 1 1", BAD),
        (b"put -1 0 100 1", BAD),
        (b"put +1 0 100 1", BAD),
        (b"put 512 -1 100 0", BAD),
        (b"put 0 0 1 1x", ("put-bad-format",)),
        (b"put 0 0 1 1 ", ("put-bad-format",)),
        (b"put 0 0 1 10b", ("put-bad-format",)),
        (b"put 0 0 1 4294967296", BAD),
        (b"put 0 0 1", BAD),
    ],
)
def test_put_header(line: bytes, expected: tuple) -> None:
    assert parse_line(line, 65535) == expected


def test_put_too_big_is_checked_before_trailing_garbage() -> None:
    assert parse_line(b"put 0 0 1 11x", 10) == ("too-big", 13)


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"kick 5", ("kick", 5)),
        (b"kick 5x", ("kick", 5)),
        (b"kick -1", ("kick", 4294967295)),
        (b"kick 4294967296", ("kick", 0)),
        (b"kick 4294967298", ("kick", 2)),
        (b"kick  7", ("kick", 7)),
        (b"kick ", BAD),
        (b"kick x", BAD),
        (b"kick 99999999999999999999", BAD),
        (b"reserve-with-timeout 5", ("reserve-with-timeout", 5)),
        (b"reserve-with-timeout -1", ("reserve-with-timeout", -1)),
        (b"reserve-with-timeout abc", ("reserve-with-timeout", 0)),
        (b"reserve-with-timeout 3x", ("reserve-with-timeout", 3)),
        (b"reserve-with-timeout 4294967296", ("reserve-with-timeout", 0)),
        (b"reserve-with-timeout 2147483648", ("reserve-with-timeout", -2147483648)),
        (b"reserve-with-timeout 99999999999999999999", BAD),
        (b"release 1 2 3", ("release", 1, 2, 3)),
        (b"release 1 2 3 ", BAD),
        (b"release foo111 2 3", BAD),
        (b"bury 1 2", ("bury", 1, 2)),
        (b"bury 111abc 2", BAD),
        (b"bury 1", BAD),
        (b"delete 00001", ("delete", 1)),
        (b"delete 18446744073709551615", ("delete", 2**64 - 1)),
        (b"delete 18446744073709551616", BAD),
        (b"peek 111foo", BAD),
        (b"touch !@#", BAD),
        (b"stats-job 111 222", BAD),
    ],
)
def test_numbers(line: bytes, expected: tuple) -> None:
    assert parse_line(line, 65535) == expected


@pytest.mark.parametrize(
    "name, ok",
    [
        (b"default", True),
        (b"x_y", True),
        (b"foo-", True),
        (b"A-Za-z0-9+/;.$_()", True),
        (b"-foo", False),
        (b"", False),
        (b"a" * 200, True),
        (b"a" * 201, False),
        (b"a*b", False),
        (b"a:b", False),
        (b"a b", False),
    ],
)
def test_tube_names(name: bytes, ok: bool) -> None:
    assert valid_tube_name(name) is ok
    expected = ("use", name) if ok else BAD
    assert parse_line(b"use " + name, 65535) == expected


def test_use_rejects_extra_spaces() -> None:
    assert parse_line(b"use  foo", 65535) == BAD
    assert parse_line(b"use foo ", 65535) == BAD


def test_read_uint() -> None:
    assert read_uint(b"  12 x", 0, 100) == (12, 4)
    assert read_uint(b"x", 0, 100)[1] == -1
    assert read_uint(b"101", 0, 100)[1] == -1


def test_line_limit_boundaries() -> None:
    # 222 characters + CRLF fit in 224 bytes: the line is parsed.
    assert requests(b"use " + b"a" * 218 + b"\r\n") == [BAD]  # name too long, but parsed
    assert requests(b"x" * 222 + b"\r\nstats\r\n") == [UNKNOWN, ("stats",)]
    # 223 characters: too long; one BAD_FORMAT, and the next command still runs
    # (the reference swallows it: see COMPAT.md).
    assert requests(b"x" * 223 + b"\r\nstats\r\n") == [BAD, ("stats",)]
    assert requests(b"x" * 500 + b"\r\nstats\r\n") == [BAD, ("stats",)]


def test_long_line_is_not_buffered() -> None:
    parser = Parser()
    for _ in range(1000):
        parser.feed(b"y" * 1000)
        assert parser.next_request() is None
        assert parser.buffered <= LINE_LIMIT
    parser.feed(b"\r")
    assert parser.next_request() is None
    parser.feed(b"\nstats\r\n")
    assert parser.next_request() == BAD
    assert parser.next_request() == ("stats",)


def test_put_body_and_crlf() -> None:
    # Header and body already buffered together: one request.
    assert requests(b"put 1 2 3 3\r\nabc\r\n") == [("put-job", 1, 2, 3, b"abc\r\n")]
    assert requests(b"put 0 0 1 0\r\n\r\n") == [("put-job", 0, 0, 1, b"\r\n")]
    # Odd spacing takes the general path, with the same outcome.
    assert requests(b"put 1  2 3 3\r\nabc\r\n") == [("put", 1, 2, 3, 3), ("body", b"abc\r\n")]
    assert requests(b"put 0 0 1 1\r\nxyz\r\n") == [
        ("put", 0, 0, 1, 1),
        ("body-bad-crlf",),
        UNKNOWN,  # "z" left over
    ]


@pytest.mark.parametrize(
    "data, max_job_size, first",
    [
        (b"put 0 0 1 3\r\nab", 65535, ("put", 0, 0, 1, 3)),  # body not all here yet
        (b"put 0 0 1 1\r\nxy\r\n", 65535, ("put", 0, 0, 1, 1)),  # no CRLF after the body
        (b"put 0 0 1 4\r\nabcd\r\n", 3, ("put-too-big",)),  # too big
        (b"put 4294967296 0 1 1\r\nx\r\n", 65535, BAD),  # out of range
        (b"put 0 0 1 1 \r\nx\r\n", 65535, ("put-bad-format",)),
    ],
)
def test_put_fast_path_leaves_every_other_case_to_the_general_path(
    data: bytes, max_job_size: int, first: tuple
) -> None:
    parser = Parser(max_job_size)
    parser.feed(data)
    assert parser.next_request() == first


def test_bad_put_line_does_not_skip_body() -> None:
    assert requests(b"put 0 0 1 1 \r\nx\r\n") == [("put-bad-format",), UNKNOWN]


def test_job_too_big_discards_body_without_buffering() -> None:
    parser = Parser(10)
    parser.feed(b"put 0 0 1 11\r\n")
    assert parser.next_request() == ("put-too-big",)  # counted at the header, as 1.12
    assert parser.next_request() is None
    parser.feed(b"delete 9999\r")
    assert parser.next_request() is None
    assert parser.buffered == 0
    parser.feed(b"\nuse zz\r\n")
    assert parser.next_request() == ("reply", JOB_TOO_BIG)
    assert parser.next_request() == ("use", b"zz")


def test_body_split_across_feeds() -> None:
    parser = Parser()
    parser.feed(b"put 0 0 1 5\r\nhe")
    assert parser.next_request() == ("put", 0, 0, 1, 5)
    assert parser.take_body(5) is None
    assert parser.next_request() is None
    parser.feed(b"llo\r")
    assert parser.next_request() is None
    parser.feed(b"\n")
    assert parser.next_request() == ("body", b"hello\r\n")


def test_bare_newline_is_data() -> None:
    assert requests(b"use foo\n\r\n") == [BAD]
