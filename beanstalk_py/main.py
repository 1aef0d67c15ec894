"""Process start-up: options, sockets, privileges, then the server (beanstalkd's main.c)."""

from __future__ import annotations

import gc
import os
import pwd
import resource
import signal
import sys
import time
from typing import Optional

from .listen import ListenError, describe, inherited_socket, make_listener
from .options import DEFAULT_ADDR, UsageExit, parse_args, warn

# trio is imported only after the socket is bound and, unless -u is given,
# while the engine already answers clients (early.py): importing it takes
# 120-160 ms, and clients that start the daemon and connect 0.1 s later, as
# greenstalk's own test suite does, time their first commands.

EXIT_LISTEN = 111
EXIT_BINLOG_LOCK = 10
EXIT_BINLOG = 1


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


def tune_gc() -> None:
    """Collect cycles less often: the heap is mostly jobs, which form no garbage cycles.

    Measured with ``python -m bench --target``, put-pipelined-1 (issue 4):
    175k puts/s with the default thresholds (700, 10, 10), 210k with these,
    as full collections kept walking every queued job.  Objects made during
    start-up (modules, trio) are frozen out of all later collections.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived during start-up: exit 0 without serving on."""


class _EarlySignals:
    """Signals that arrive before the server's signal task takes over.

    The handlers only take note, and start-up acts on them where an
    exception is safe.  A handler that raised SystemExit itself could land
    anywhere, and was seen landing in an importlib weakref callback, where
    Python prints the exception and drops it: the daemon then ran on after
    SIGTERM (1 start in 60 with a client served during start-up).
    """

    def __init__(self) -> None:
        self.stop = False
        self.drain = False
        self.engine: Optional[object] = None

    def note(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGUSR1:
            self.drain = True  # one way, as in beanstalkd
            if self.engine is not None:
                self.engine.draining = True  # type: ignore[attr-defined]
        else:
            self.stop = True

    def check(self) -> None:
        if self.stop:
            raise _Stopped


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
    # Until the server's signal task runs, these handlers keep an early
    # SIGUSR1 from killing the process (its default action) and make an early
    # SIGTERM/SIGINT exit cleanly (status 0) as later ones do.
    early = _EarlySignals()
    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, early.note)
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

    if opts.verbose:
        print(f"bind {sock.fileno()} {describe(sock)}", flush=True)

    from .engine import Engine
    from .hub import Hub, default_io_mode, now_ns
    from .stats import ServerInfo

    engine = Engine(max_job_size=opts.max_job_size)
    engine.draining = early.drain
    early.engine = engine
    wal = None
    try:
        if opts.user:
            # Imported before dropping privileges: the new user may not be able
            # to read the Python installation.  No serving until then.
            __import__("trio")

            drop_privileges(opts.user)
        early.check()
        if opts.binlog_dir is not None:
            # As beanstalkd: after binding and dropping privileges, before serving.
            wal = open_binlog(opts, engine)
        info = ServerInfo(started_at=now_ns(), binlog_max_size=opts.binlog_size)
        early_loop = None
        if not opts.user and default_io_mode() == "epoll":
            from .early import import_while_serving
            from .epoll_loop import EpollLoop

            hub = Hub(engine, info, [sock], verbose=opts.verbose)
            hub.open_spare()
            early_loop = EpollLoop(hub, now_ns)
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft != resource.RLIM_INFINITY:
                early_loop.fd_ceiling = max(soft - 32, soft // 2)
            serve = early_loop.serve_ready

            def serve_unless_stopped() -> None:
                early.check()
                serve()

            import_while_serving(serve_unless_stopped, ["trio", "beanstalk_py.server"])
            hub.close_spare()  # the server holds its own
        import trio

        from .server import Server

        server = Server(engine, info, [sock], verbose=opts.verbose, epoll_loop=early_loop,
                        stop_requested=lambda: early.stop)
        tune_gc()
        early.check()
        trio.run(server.run)
    except _Stopped:
        return 0
    except _BinlogFailed as failed:
        return failed.status
    finally:
        if wal is not None:
            wal.close()
    return 0


class _BinlogFailed(Exception):
    """The binlog could not be opened; carries the exit status."""

    def __init__(self, status: int) -> None:
        self.status = status


def open_binlog(opts, engine):  # type: ignore[no-untyped-def]
    """Open the binlog directory and restore its jobs into ``engine``."""
    from .binlog import Binlog, BinlogError, BinlogLockError
    from .hub import now_ns

    wal = Binlog(opts.binlog_dir, opts.binlog_size, opts.fsync_ms if opts.fsync else None)
    try:
        records, next_id = wal.open()
    except BinlogLockError as exc:
        warn(f"failed to lock binlog dir {opts.binlog_dir}: {exc}")
        raise _BinlogFailed(EXIT_BINLOG_LOCK)
    except BinlogError as exc:
        warn(f"failed to open or replay the binlog in {opts.binlog_dir}: {exc}")
        raise _BinlogFailed(EXIT_BINLOG)
    engine.restore(records, next_id, now_ns(), time.time_ns())
    engine.attach_wal(wal)
    if opts.verbose:
        print(f"binlog {opts.binlog_dir}: {len(records)} jobs restored, next id {engine.next_id}",
              flush=True)
    return wal
