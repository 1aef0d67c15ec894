"""Command line parsing with beanstalkd 1.12's rules, so scripts and unit files carry over.

Flags may be bundled (``-VFVukr``); an argument may be attached (``-p1234``)
or separate (``-p 1234``); parsing stops at the first word that is not a flag,
which is an error.  Usage errors exit with status 5, as the reference does.

Our own options are long ones (``--max-connections 100``, or
``--max-connections=100``), which beanstalkd's single-letter flags can never
be mistaken for.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import NoReturn, Optional

from . import __version__
from .log import PROG, warn

DEFAULT_PORT = "11300"
DEFAULT_ADDR = "127.0.0.1"
DEFAULT_MAX_JOB_SIZE = 65535
MAX_JOB_SIZE_LIMIT = 1073741824
DEFAULT_FSYNC_MS = 50
DEFAULT_BINLOG_SIZE = 10485760
EXIT_USAGE = 5
DEFAULT_TLS_HANDSHAKE_S = 10.0
DEFAULT_HTTP_MAX_CONNECTIONS = 256  # as beanstalkd-rs


@dataclass
class Options:
    port: str = DEFAULT_PORT
    addr: Optional[str] = None  # None: DEFAULT_ADDR, or an inherited socket
    max_job_size: int = DEFAULT_MAX_JOB_SIZE
    binlog_dir: Optional[str] = None
    binlog_size: int = DEFAULT_BINLOG_SIZE
    fsync: bool = True
    fsync_ms: int = DEFAULT_FSYNC_MS
    user: Optional[str] = None
    verbose: int = 0
    tls_listen: Optional[str] = None  # ADDR:PORT of a TLS listener beside the plain one
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_ca: Optional[str] = None  # set: clients must present a certificate it signed
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_S
    max_connections: int = 0  # 0: no limit, as in beanstalkd
    http: Optional[str] = None  # ADDR:PORT or unix:PATH of the operations plane
    http_tokens: Optional[str] = None  # the bearer-token file (needed off loopback)
    http_cert: Optional[str] = None  # HTTPS: the certificate chain (PEM)
    http_key: Optional[str] = None  # and its key
    http_client_ca: Optional[str] = None  # set: HTTP clients need a certificate it signed
    http_max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
    http_read_only: bool = False  # every requester is a viewer: no writes from API or console
    http_status_secret: Optional[str] = None  # the HMAC key file of /status/{token} (off without it)
    http_cors_origins: tuple[str, ...] = ("*",)  # origins /status answers with CORS
    store: Optional[str] = None  # redis://HOST:PORT/DB: queue state in Redis (None: in memory)
    store_password_file: Optional[str] = None  # the primary's AUTH password (mode 0600), not in the URL
    store_tls_ca: Optional[str] = None  # rediss://: the CAs that sign Redis's (and Sentinels') certificates
    store_tls_cert: Optional[str] = None  # rediss://: this front end's client certificate (PEM)
    store_tls_key: Optional[str] = None  # and its key
    durability: tuple[int, int] = (0, 0)  # --durability replica:N:MS as (N, MS); (0, 0): none


class UsageExit(SystemExit):
    """Raised (never caught inside the package) to leave with a message."""


USAGE = f"""Use: {PROG} [OPTIONS]

Options:
 -b DIR   write-ahead log directory
 -f MS    fsync at most once every MS milliseconds (default is {DEFAULT_FSYNC_MS}ms);
          use -f0 for "always fsync"
 -F       never fsync
 -l ADDR  listen on address (default is {DEFAULT_ADDR}; beanstalkd uses 0.0.0.0);
          unix:/path listens on a unix socket
 -p PORT  listen on port (default is {DEFAULT_PORT})
 -u USER  become user and group
 -z BYTES set the maximum job size in bytes (default is {DEFAULT_MAX_JOB_SIZE});
          max allowed is {MAX_JOB_SIZE_LIMIT} bytes
 -s BYTES set the size of each write-ahead log file (default is {DEFAULT_BINLOG_SIZE})
 -v       show version information
 -V       increase verbosity
 -h       show this help

 --max-connections N        accept at most N clients at once, over every listener
                            (more are accepted and closed at once; default: no limit)
 --tls-listen ADDR:PORT     also listen for TLS clients there ([ADDR]:PORT for IPv6)
 --tls-cert FILE            the server's certificate chain (PEM), for --tls-listen
 --tls-key FILE             its private key (PEM)
 --tls-client-ca FILE       require client certificates signed by these CAs (mutual TLS)
 --tls-handshake-timeout S  close TLS clients that have not finished the handshake
                            within S seconds (default {DEFAULT_TLS_HANDSHAKE_S:g})
 --http ADDR:PORT           serve the HTTP operations plane (metrics, health, JSON API)
                            there, or at unix:PATH; loopback or unix only without tokens
 --http-tokens FILE         bearer tokens for --http, "TOKEN ROLE" a line (ROLE viewer
                            or operator); the file must be mode 0600
 --http-cert FILE           serve --http over HTTPS with this certificate chain (PEM)
 --http-key FILE            its private key (PEM)
 --http-client-ca FILE      require HTTP clients' certificates signed by these CAs
 --http-max-connections N   HTTP connections at once (default {DEFAULT_HTTP_MAX_CONNECTIONS}); more wait
 --http-read-only           no writes through the API or console, whatever the token
 --http-status-secret FILE  serve /status/{{token}}, tokens signed with this key (mode 0600)
 --http-cors-origins LIST   origins that may read /status, comma-separated (default *)
 --store redis://HOST:PORT/DB
                            keep the queue in Redis (7.0 or later), shared by every
                            front end given the same store; needs beanstalk-py[redis];
                            not with -b.  Also redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER/DB
                            (the primary found and followed through Sentinel),
                            rediss:// for TLS, redis://:PASSWORD@HOST for AUTH
 --store-password-file FILE the primary's password, from a mode 0600 file
 --store-tls-ca FILE        rediss://: CAs for Redis's and the Sentinels' certificates
 --store-tls-cert FILE      rediss://: this front end's client certificate (PEM)
 --store-tls-key FILE       its private key (PEM)
 --durability none|replica[:N[:MS]]
                            with replica, a change is answered only once N replicas
                            (default 1) have it (WAIT, asked again every MS ms,
                            default 100); none (the default) answers at once

 {PROG} admin --help        the admin command line
"""

_SIZE = re.compile(r"\s*\+?[0-9]+")


def _usage(code: int) -> NoReturn:
    sys.stderr.write(USAGE)
    sys.stderr.flush()
    raise UsageExit(code)


def _parse_size(text: str) -> int:
    if not _SIZE.fullmatch(text):
        warn(f"invalid size: {text}")
        _usage(EXIT_USAGE)
    return int(text)


_LONG = ("max-connections", "tls-listen", "tls-cert", "tls-key", "tls-client-ca", "tls-handshake-timeout",
         "http", "http-tokens", "http-cert", "http-key", "http-client-ca", "http-max-connections",
         "http-read-only", "http-status-secret", "http-cors-origins", "store", "store-password-file",
         "store-tls-ca", "store-tls-cert", "store-tls-key", "durability")
_FLAGS = ("http-read-only",)  # long options without a value
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^\[\]]*):[0-9]+")


# Options whose value is stored as given (a file or an address), by attribute.
_AS_GIVEN = {name: name.replace("-", "_") for name in (
    "tls-listen", "tls-cert", "tls-key", "tls-client-ca",
    "http-tokens", "http-cert", "http-key", "http-client-ca", "http-status-secret",
    "store-password-file", "store-tls-ca", "store-tls-cert", "store-tls-key")}
_DURABILITY = re.compile(r"none|replica(?::([0-9]{1,3})(?::([0-9]{1,6}))?)?")
DEFAULT_WAIT_MS = 100


def _parse_long(opts: Options, name: str, value: str) -> None:
    if name in _AS_GIVEN:
        setattr(opts, _AS_GIVEN[name], value)
    elif name == "max-connections":
        if not value.isdigit():
            warn(f"--max-connections needs a whole number, not {value!r}")
            _usage(EXIT_USAGE)
        opts.max_connections = int(value)
    elif name == "http":
        if not (value.startswith("unix:") and len(value) > 5) and not _HOST_PORT.fullmatch(value):
            warn(f"--http needs ADDR:PORT or unix:PATH, not {value!r}")
            _usage(EXIT_USAGE)
        opts.http = value
    elif name == "store":
        from .redisstore.address import StoreAddressError, parse_store_url

        try:
            parse_store_url(value)
        except StoreAddressError as exc:
            warn(str(exc))
            _usage(EXIT_USAGE)
        opts.store = value
    elif name == "durability":
        match = _DURABILITY.fullmatch(value)
        if match is None or (match[1] is not None and int(match[1]) < 1) or (match[2] is not None and int(match[2]) < 1):
            warn(f"--durability needs none or replica[:N[:MS]] (N replicas >= 1, MS > 0), not {value!r}")
            _usage(EXIT_USAGE)
        opts.durability = (0, 0) if value == "none" else (int(match[1] or 1), int(match[2] or DEFAULT_WAIT_MS))
    elif name == "http-max-connections":
        if not value.isdigit() or int(value) < 1:
            warn(f"--http-max-connections needs a whole number of at least 1, not {value!r}")
            _usage(EXIT_USAGE)
        opts.http_max_connections = int(value)
    elif name == "http-read-only":
        opts.http_read_only = True
    elif name == "http-cors-origins":
        origins = tuple(part.strip() for part in value.split(",") if part.strip())
        if not origins:
            warn("--http-cors-origins needs at least one origin (or *)")
            _usage(EXIT_USAGE)
        opts.http_cors_origins = origins
    else:  # tls-handshake-timeout
        try:
            opts.tls_handshake_timeout = float(value)
        except ValueError:
            opts.tls_handshake_timeout = -1.0
        if not 0 < opts.tls_handshake_timeout < 1e6:
            warn(f"--tls-handshake-timeout needs a number of seconds, not {value!r}")
            _usage(EXIT_USAGE)


def _check(opts: Options) -> None:
    """Options that only make sense together."""
    if opts.store is not None and opts.binlog_dir is not None:
        warn("--store and -b exclude each other: with --store the queue lives in Redis, "
             "whose own persistence (AOF) replaces the binlog")
        _usage(EXIT_USAGE)
    store_given = [name for name, value in (
        ("--store-password-file", opts.store_password_file), ("--store-tls-ca", opts.store_tls_ca),
        ("--store-tls-cert", opts.store_tls_cert), ("--store-tls-key", opts.store_tls_key),
        ("--durability", opts.durability[0] or None)) if value is not None]
    if store_given and opts.store is None:
        warn(f"{', '.join(store_given)} need --store")
        _usage(EXIT_USAGE)
    tls_files = opts.store_tls_ca or opts.store_tls_cert or opts.store_tls_key
    if tls_files and not (opts.store or "").startswith("rediss"):
        warn("--store-tls-ca, --store-tls-cert and --store-tls-key need a rediss:// store")
        _usage(EXIT_USAGE)
    if (opts.store_tls_cert is None) != (opts.store_tls_key is None):
        warn("--store-tls-cert and --store-tls-key go together")
        _usage(EXIT_USAGE)
    if opts.tls_listen is not None and (opts.tls_cert is None or opts.tls_key is None):
        warn("--tls-listen needs --tls-cert and --tls-key")
        _usage(EXIT_USAGE)
    if opts.tls_listen is None and (opts.tls_cert or opts.tls_key or opts.tls_client_ca):
        warn("--tls-cert, --tls-key and --tls-client-ca need --tls-listen")
        _usage(EXIT_USAGE)
    http_given = [name for name, value in (
        ("--http-tokens", opts.http_tokens), ("--http-cert", opts.http_cert), ("--http-key", opts.http_key),
        ("--http-client-ca", opts.http_client_ca), ("--http-status-secret", opts.http_status_secret),
        ("--http-read-only", opts.http_read_only or None)) if value is not None]
    if http_given and opts.http is None:
        warn(f"{', '.join(http_given)} need{'s' if len(http_given) == 1 else ''} --http")
        _usage(EXIT_USAGE)
    if (opts.http_cert is None) != (opts.http_key is None):
        warn("--http-cert and --http-key go together")
        _usage(EXIT_USAGE)
    if opts.http_client_ca is not None and opts.http_cert is None:
        warn("--http-client-ca needs --http-cert and --http-key (client certificates need HTTPS)")
        _usage(EXIT_USAGE)


def parse_args(argv: list[str], inherited_socket: bool = False) -> Options:
    """Parse ``argv`` (without the program name).  Exits on -h, -v and errors."""
    opts = Options()
    words = list(argv)
    pos = 0
    while pos < len(words):
        word = words[pos]
        pos += 1
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            if name not in _LONG:
                warn(f"unknown option: --{name}")
                _usage(EXIT_USAGE)
            if name in _FLAGS:
                if eq:
                    warn(f"--{name} takes no value")
                    _usage(EXIT_USAGE)
                _parse_long(opts, name, "")
                continue
            if not eq:
                if pos >= len(words):
                    warn(f"option requires an argument: --{name}")
                    _usage(EXIT_USAGE)
                value = words[pos]
                pos += 1
            _parse_long(opts, name, value)
            continue
        if not word.startswith("-") or word == "-":
            warn(f"unknown argument: {word}")
            _usage(EXIT_USAGE)
        flags = word[1:]
        i = 0
        while i < len(flags):
            flag = flags[i]
            i += 1

            def argument() -> str:
                nonlocal i, pos
                if i < len(flags):
                    value = flags[i:]
                    i = len(flags)
                    return value
                if pos < len(words):
                    value = words[pos]
                    pos += 1
                    return value
                warn(f"flag requires an argument: -{flag}")
                _usage(EXIT_USAGE)

            if flag == "p":
                opts.port = argument()
                if inherited_socket:
                    warn(f"inherited listen fd; ignoring option: -p {opts.port}")
            elif flag == "l":
                opts.addr = argument()
                if inherited_socket:
                    warn(f"inherited listen fd; ignoring option: -l {opts.addr}")
            elif flag == "z":
                opts.max_job_size = _parse_size(argument())
                if opts.max_job_size > MAX_JOB_SIZE_LIMIT:
                    warn(f"maximum job size was set to {MAX_JOB_SIZE_LIMIT}")
                    opts.max_job_size = MAX_JOB_SIZE_LIMIT
            elif flag == "s":
                opts.binlog_size = _parse_size(argument())
            elif flag in "cn":
                warn(f"-{flag} flag was removed. binlog is always compacted.")
            elif flag == "f":
                opts.fsync_ms = _parse_size(argument())
                opts.fsync = True
            elif flag == "F":
                opts.fsync = False
            elif flag == "u":
                opts.user = argument()
            elif flag == "b":
                opts.binlog_dir = argument()
            elif flag == "h":
                _usage(0)
            elif flag == "v":
                from .build import describe as describe_build

                print(f"{PROG} {__version__} (beanstalkd 1.12 protocol)\n{describe_build()}", flush=True)
                raise UsageExit(0)
            elif flag == "V":
                opts.verbose += 1
            else:
                warn(f"unknown flag: -{flag}")
                _usage(EXIT_USAGE)
    _check(opts)
    return opts
