"""Process start-up: options, sockets, privileges, then the server (beanstalkd's main.c)."""

from __future__ import annotations

import os
import pwd
import signal
import sys
from typing import Optional

import trio

from .engine import Engine
from .listen import ListenError, describe, inherited_socket, make_listener
from .options import DEFAULT_ADDR, UsageExit, parse_args, warn
from .server import Server, now_ns
from .stats import ServerInfo

EXIT_LISTEN = 111


def drop_privileges(user: str) -> None:
    """setgid to the user's primary group, then setuid (exit codes as beanstalkd)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        warn(f'getpwnam("{user}"): no such user')
        raise SystemExit(33)
    except OSError as exc:
        warn(f'getpwnam("{user}"): {exc}')
        raise SystemExit(32)
    try:
        os.setgroups([entry.pw_gid])
    except OSError:
        pass  # not permitted when not root; setgid below reports real failures
    try:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        warn(f'setgid/setuid({entry.pw_uid} "{user}"): {exc.strerror}')
        raise SystemExit(34)


def _exit_now(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        inherited = inherited_socket()
    except ListenError as exc:
        warn(str(exc))
        return EXIT_LISTEN
    try:
        opts = parse_args(args, inherited_socket=inherited is not None)
    except UsageExit as exc:
        return int(exc.code or 0)
    if opts.binlog_dir is not None:
        warn("-b: the binlog is not available in this release; refusing to start "
             "rather than run without the durability you asked for")
        return 1
    engine = Engine(max_job_size=opts.max_job_size)
    # Until the server's signal task runs, these plain handlers keep an early
    # SIGUSR1 from killing the process (its default action) and make an early
    # SIGTERM/SIGINT exit cleanly as later ones do.
    signal.signal(signal.SIGUSR1, lambda _sig, _frame: setattr(engine, "draining", True))
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if opts.verbose:
        print(f"pid {os.getpid()}", flush=True)
    if inherited is not None:
        sock = inherited
    else:
        try:
            sock = make_listener(opts.addr, opts.port)
        except ListenError as exc:
            warn(str(exc))
            return EXIT_LISTEN
        if opts.addr is None:
            warn(f"listening on {describe(sock)} (the default is {DEFAULT_ADDR}, not "
                 "beanstalkd's 0.0.0.0; use -l 0.0.0.0 to accept remote clients)")
    if opts.user:
        drop_privileges(opts.user)
    info = ServerInfo(started_at=now_ns(), binlog_max_size=opts.binlog_size)
    server = Server(engine, info, [sock], verbose=opts.verbose)
    trio.run(server.run)
    return 0
