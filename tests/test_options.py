"""Command-line parsing with beanstalkd's rules (the reference's testutil.c cases)."""

from __future__ import annotations

import re

import pytest

from beanstalk_py.options import UsageExit, parse_args


def test_defaults() -> None:
    opts = parse_args([])
    assert (opts.port, opts.addr, opts.max_job_size, opts.binlog_size) == ("11300", None, 65535, 10485760)
    assert (opts.fsync, opts.fsync_ms, opts.user, opts.binlog_dir, opts.verbose) == (True, 50, None, None, 0)


def test_attached_and_separate_arguments() -> None:
    assert parse_args(["-p1234"]).port == "1234"
    assert parse_args(["-llocalhost"]).addr == "localhost"
    assert parse_args(["-l", "localhost"]).addr == "localhost"
    assert parse_args(["-z1234"]).max_job_size == 1234
    assert parse_args(["-s1234"]).binlog_size == 1234
    assert parse_args(["-ukr"]).user == "kr"
    assert parse_args(["-bfoo"]).binlog_dir == "foo"


def test_job_size_is_capped(capsys: pytest.CaptureFixture) -> None:
    assert parse_args(["-z1073741825"]).max_job_size == 1073741824
    assert "maximum job size was set to 1073741824" in capsys.readouterr().err


def test_fsync_flags() -> None:
    opts = parse_args(["-f1234"])
    assert opts.fsync and opts.fsync_ms == 1234
    assert not parse_args(["-f1234", "-F"]).fsync


def test_bundled_flags() -> None:
    assert parse_args(["-V"]).verbose == 1
    assert parse_args(["-V", "-V"]).verbose == 2
    assert parse_args(["-VVV"]).verbose == 3
    opts = parse_args(["-VFVukr"])
    assert (opts.verbose, opts.fsync, opts.user) == (2, False, "kr")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-"], "unknown argument: -"),
        (["foo"], "unknown argument: foo"),
        (["-x"], "unknown flag: -x"),
        (["-p"], "flag requires an argument: -p"),
        (["-z", "12k"], "invalid size: 12k"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UsageExit) as info:
        parse_args(argv)
    assert info.value.code == 5
    err = capsys.readouterr().err
    assert message in err and "Use: beanstalk-py" in err


def test_help_and_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UsageExit) as info:
        parse_args(["-h"])
    assert info.value.code == 0
    assert "127.0.0.1" in capsys.readouterr().err
    with pytest.raises(UsageExit) as info:
        parse_args(["-v"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("beanstalk-py ")


def test_removed_flags_warn(capsys: pytest.CaptureFixture) -> None:
    parse_args(["-c", "-n"])
    assert "binlog is always compacted" in capsys.readouterr().err


def test_long_options() -> None:
    opts = parse_args(["-p", "1", "--max-connections", "50", "--tls-listen=127.0.0.1:11301",
                       "--tls-cert", "c.pem", "--tls-key=k.pem", "--tls-client-ca", "ca.pem",
                       "--tls-handshake-timeout", "2.5", "-V"])
    assert (opts.port, opts.max_connections, opts.tls_listen) == ("1", 50, "127.0.0.1:11301")
    assert (opts.tls_cert, opts.tls_key, opts.tls_client_ca) == ("c.pem", "k.pem", "ca.pem")
    assert (opts.tls_handshake_timeout, opts.verbose) == (2.5, 1)
    assert parse_args([]).max_connections == 0
    opts = parse_args(["--http=[::1]:8080", "--http-tokens", "/etc/tokens"])
    assert (opts.http, opts.http_tokens) == ("[::1]:8080", "/etc/tokens")
    assert parse_args(["--http", "unix:/run/b.sock"]).http == "unix:/run/b.sock"
    assert parse_args([]).http is None
    opts = parse_args(["--http", "127.0.0.1:1", "--http-cert", "c.pem", "--http-key=k.pem", "--http-client-ca",
                       "ca.pem", "--http-max-connections", "9", "--http-read-only", "--http-status-secret", "s",
                       "--http-cors-origins", "https://a.example, https://b.example"])
    assert (opts.http_cert, opts.http_key, opts.http_client_ca) == ("c.pem", "k.pem", "ca.pem")
    assert (opts.http_max_connections, opts.http_read_only, opts.http_status_secret) == (9, True, "s")
    assert opts.http_cors_origins == ("https://a.example", "https://b.example")
    defaults = parse_args([])
    assert (defaults.http_max_connections, defaults.http_read_only, defaults.http_cors_origins) == (256, False, ("*",))


def test_store_address() -> None:
    from beanstalk_py.redisstore.address import StoreAddress, parse_store_url

    assert parse_args([]).store is None
    assert parse_args(["--store", "redis://127.0.0.1:7000/2"]).store == "redis://127.0.0.1:7000/2"
    assert parse_store_url("redis://127.0.0.1:7000/2") == StoreAddress("127.0.0.1", 7000, 2)
    assert parse_store_url("redis://cache.local") == StoreAddress("cache.local", 6379, 0)
    assert parse_store_url("redis://[::1]:7001/") == StoreAddress("::1", 7001, 0)
    assert str(StoreAddress("::1", 7001, 3)) == "redis://[::1]:7001/3"
    assert parse_store_url("redis://:p%40ss@h:1/2") == StoreAddress("h", 1, 2, password="p@ss")
    assert parse_store_url("redis://secret@h") == StoreAddress("h", password="secret")  # as redis-cli
    assert parse_store_url("rediss://app:pw@h:6380/0") == StoreAddress("h", 6380, 0, True, "app", "pw")
    sentinel = parse_store_url("redis+sentinel://s1,s2:26380,[::1]/main/4")
    assert sentinel.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26379))
    assert (sentinel.master, sentinel.db, sentinel.tls, sentinel.sentinel) == ("main", 4, False, True)
    assert str(sentinel) == "redis+sentinel://s1:26379,s2:26380,[::1]:26379/main/4"
    assert str(parse_store_url("rediss://:pw@h/1")) == "rediss://h:6379/1"  # never the password
    assert parse_store_url("rediss+sentinel://s/m").tls


@pytest.mark.parametrize("url, message", [
    ("http://h", "--store needs redis://"),
    ("redis://h:0", "bad port"),
    ("redis://h/x", "must be a number"),
    ("redis://a,b", "several hosts need redis+sentinel://"),
    ("redis+sentinel://s", "needs the master's name"),
    ("redis+sentinel://s/m/1/2", "--store needs"),
    ("redis://:hunter2@h/1/2", "***"),
])
def test_bad_store_urls(url: str, message: str) -> None:
    from beanstalk_py.redisstore.address import StoreAddressError, parse_store_url

    with pytest.raises(StoreAddressError, match=re.escape(message)) as caught:
        parse_store_url(url)
    assert "hunter2" not in str(caught.value)


def test_durability_and_store_options() -> None:
    opts = parse_args(["--store", "redis://h", "--durability", "replica"])
    assert opts.durability == (1, 100)
    assert parse_args(["--store", "redis://h", "--durability", "replica:2:250"]).durability == (2, 250)
    assert parse_args(["--store", "redis://h", "--durability", "none"]).durability == (0, 0)
    assert parse_args([]).durability == (0, 0)
    opts = parse_args(["--store", "rediss://h", "--store-tls-ca", "ca.pem", "--store-tls-cert", "c", "--store-tls-key", "k",
                       "--store-password-file", "pw"])
    assert (opts.store_tls_ca, opts.store_tls_cert, opts.store_tls_key, opts.store_password_file) == ("ca.pem", "c", "k", "pw")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nope"], "unknown option: --nope"),
        (["--max-connections"], "requires an argument"),
        (["--max-connections", "-3"], "whole number"),
        (["--tls-listen", "127.0.0.1:1"], "needs --tls-cert and --tls-key"),
        (["--tls-cert", "c.pem"], "need --tls-listen"),
        (["--tls-listen", ":1", "--tls-cert", "c", "--tls-key", "k", "--tls-handshake-timeout", "x"], "seconds"),
        (["--store", "redis://h", "--durability", "replica:0"], "replica[:N[:MS]]"),
        (["--store", "redis://h", "--durability", "all"], "replica[:N[:MS]]"),
        (["--durability", "replica"], "--durability need --store"),
        (["--store-password-file", "f"], "--store-password-file need --store"),
        (["--store", "redis://h", "--store-tls-ca", "ca"], "need a rediss:// store"),
        (["--store", "rediss://h", "--store-tls-cert", "c"], "go together"),
        (["--http", "8080"], "ADDR:PORT or unix:PATH"),
        (["--http", "unix:"], "ADDR:PORT or unix:PATH"),
        (["--http-tokens", "t"], "needs --http"),
        (["--http-read-only", "--http-status-secret", "s"], "--http-status-secret, --http-read-only need --http"),
        (["--http", ":1", "--http-cert", "c"], "--http-cert and --http-key go together"),
        (["--http", ":1", "--http-client-ca", "ca"], "needs --http-cert"),
        (["--http", ":1", "--http-read-only=yes"], "takes no value"),
        (["--http", ":1", "--http-max-connections", "0"], "at least 1"),
        (["--http", ":1", "--http-cors-origins", " , "], "at least one origin"),
        (["--store", "127.0.0.1:6379"], "needs redis://HOST[:PORT][/DB]"),
        (["--store", "redis://127.0.0.1:6379/x"], "the database must be a number"),
        (["--store", "redis://127.0.0.1:99999/0"], "bad port"),
        (["--store", "redis+sentinel://s1:26379"], "needs the master's name"),
        (["--store", "redis://127.0.0.1/0", "-b", "/tmp/b"], "--store and -b exclude each other"),
        (["-b/tmp/b", "--store=redis://127.0.0.1/0"], "--store and -b exclude each other"),
        (["--store"], "requires an argument"),
    ],
)
def test_long_option_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UsageExit) as exc:
        parse_args(argv)
    assert exc.value.code == 5
    assert message in capsys.readouterr().err
