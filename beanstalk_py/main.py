"""Process start-up: options, sockets, privileges, then the server (beanstalkd's main.c)."""

from __future__ import annotations

import contextlib
import gc
import os
import pwd
import select
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from .listen import ListenError, describe, inherited_sockets, make_listener, split_host_port
from .log import warn
from .notify import Notifier
from .options import DEFAULT_ADDR, Options, UsageExit, parse_args
from .startup import Startup, Stopped
from .tls import TLSConfigError

if TYPE_CHECKING:
    import ssl

    from .binlog import Binlog
    from .engine import Engine
    from .redisstore.service import StoreService
    from .store import Store

# trio is imported only after the socket is bound and, unless -u is given,
# while the engine already answers clients (startup.py): importing it takes
# 120-160 ms, and clients that start the daemon and connect 0.1 s later, as
# greenstalk's own test suite does, time their first commands.

EXIT_LISTEN = 111
EXIT_TLS = 2  # the TLS certificate, key or CA could not be loaded
PROGRESS_EVERY_S = 1.0  # a replay progress line at most this often
LARGE_REPLAY_JOBS = 100_000  # a restore this large says when it is done
EXIT_HTTP = 2  # --http refused: the extra is missing, a bad token file, a non-loopback address without tokens
EXIT_BINLOG_LOCK = 10
EXIT_BINLOG = 1
EXIT_STORE = 2  # --store: hiredis missing, Redis unreachable or too old at start, or lost later

# Under systemd (Type=notify), EXTEND_TIMEOUT_USEC keeps a long binlog replay
# from hitting TimeoutStartSec=.  Measured on the 2-core test machine (exec to
# READY=1): 300,000 jobs (30 MB of log) 1.4 s, 1,000,000 jobs (102 MB) 5.6 s;
# the files are read at ~55 MB/s, the jobs restored at ~500,000 a second.
# Each message asks for what is left at a tenth of those speeds or less, and
# never less than EXTEND_MIN_S; one goes before the first file, then at most
# one a second, one when all are read and one before the jobs are restored.
EXTEND_MIN_S = 30.0
EXTEND_REPLAY_BYTES_PER_S = 3_000_000
EXTEND_RESTORE_JOBS_PER_S = 20_000
EXTEND_EVERY_S = 1.0


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


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["admin"]:
        # beanstalkd takes no positional arguments, so this never clashes.
        from .admin import main as admin_main

        return admin_main(args[1:])
    try:
        inherited = inherited_sockets()
    except ListenError as exc:
        warn(str(exc))
        return EXIT_LISTEN
    try:
        opts = parse_args(args, inherited_socket=bool(inherited))
    except UsageExit as exc:
        return int(exc.code or 0)
    startup = Startup()
    startup.install_signal_handlers()
    if opts.verbose:
        from .build import describe as describe_build

        print(f"pid {os.getpid()}\n{describe_build()}", flush=True)
    if inherited:
        socks = inherited
    else:
        try:
            socks = [make_listener(opts.addr, opts.port)]
        except ListenError as exc:
            warn(str(exc))
            return EXIT_LISTEN
        if opts.addr is None:
            warn(f"listening on {describe(socks[0])} (the default is {DEFAULT_ADDR}, not "
                 "beanstalkd's 0.0.0.0; use -l 0.0.0.0 to accept remote clients)")

    if opts.verbose:
        for sock in socks:
            print(f"bind {sock.fileno()} {describe(sock)}", flush=True)
    tls_listeners = []
    if opts.tls_listen is not None:
        # Bound and the key read before privileges are dropped, as the plain port.
        try:
            tls_listeners.append(make_tls_listener(opts))
        except ListenError as exc:
            warn(str(exc))
            return EXIT_LISTEN
        except TLSConfigError as exc:
            warn(str(exc))
            return EXIT_TLS
        if opts.verbose:
            print(f"bind {tls_listeners[0][0].fileno()} {describe(tls_listeners[0][0])} (TLS)", flush=True)
    http_listener = None
    if opts.http is not None:
        # Bound and the tokens read before privileges are dropped, as the others.
        from .http.auth import HttpConfigError
        from .http.listener import make_http_listener
        from .http.settings import HttpSettings

        try:
            http_listener = make_http_listener(HttpSettings.from_options(opts))
        except HttpConfigError as exc:
            warn(str(exc))
            return EXIT_HTTP
        except ListenError as exc:
            warn(str(exc))
            return EXIT_LISTEN
        if opts.verbose:
            print(f"bind {http_listener.sock.fileno()} {http_listener.address} (HTTP)", flush=True)

    from .dispatch import Dispatcher, now_ns
    from .stats import ServerInfo

    store: Store[Any]
    store_tasks = None
    if opts.store is not None:
        try:
            store, store_tasks = make_redis_store(opts)
        except _StoreFailed as failed:
            warn(str(failed))
            return EXIT_STORE
    else:
        from .engine import Engine

        # With --http-status-secret, the last 65,536 deleted ids answer /status with "done".
        store = Engine(max_job_size=opts.max_job_size, remember_deleted=65536 if opts.http_status_secret else 0)
    startup.attach(store)
    wal: Optional[Binlog] = None
    try:
        if opts.user:
            # Imported before dropping privileges: the new user may not be able
            # to read the Python installation.  No serving until then.
            __import__("trio")
            if http_listener is not None:
                from .http.listener import import_stack

                import_stack()
            drop_privileges(opts.user)
        startup.check()
        # NOTIFY_SOCKET and WATCHDOG_* are read (and removed from the environment) here.
        notifier = Notifier.from_environ()
        if opts.binlog_dir is not None:
            # As beanstalkd: after binding and dropping privileges, before serving.
            # Meanwhile a thread answers --http's probes (http/probe.py: no trio yet).
            replaying = contextlib.nullcontext() if http_listener is None else http_listener.replay_probes()
            with replaying:
                assert isinstance(store, Engine)  # -b is refused with --store (options.py)
                wal = open_binlog(opts, store, notifier)
        info = ServerInfo(started_at=now_ns(), binlog_max_size=opts.binlog_size)
        dispatcher = Dispatcher(store, info, verbose=opts.verbose, max_connections=opts.max_connections)
        epoll = None
        if store_tasks is not None:
            # Store mode uses the streams driver: the epoll driver's private
            # wait (up to 2 ms, epoll_loop.py) does not yield to trio, so the
            # Redis replies would wait behind it.  Nothing is served before
            # trio runs either: every answer comes from Redis.
            store_tasks.settle = lambda: dispatcher.settle(now_ns())
        elif default_io_mode() == "epoll":
            from .epoll_loop import EpollLoop

            epoll = EpollLoop(dispatcher, socks, now_ns)
            if not opts.user:
                startup.serve_while_importing(epoll, ["trio", "beanstalk_py.server"])
        import trio

        from .server import Server

        server = Server(dispatcher, epoll=epoll, stream_listeners=[] if epoll else socks,
                        tls_listeners=tls_listeners, tls_handshake_timeout=opts.tls_handshake_timeout,
                        stop_requested=lambda: startup.stop, notifier=notifier, http=http_listener,
                        store_tasks=store_tasks)
        tune_gc()
        startup.check()
        if store_tasks is None:
            trio.run(server.run)
        else:
            failure = _run_with_store(trio, server)
            if failure is not None:
                warn(failure)
                return EXIT_STORE
    except Stopped:
        return 0
    except _BinlogFailed as failed:
        return failed.status
    finally:
        if wal is not None:
            wal.close()
    return 0


class _StoreFailed(Exception):
    """The store could not be made (its message says why)."""


def make_redis_store(opts: Options) -> tuple["Store[Any]", "StoreService"]:
    """The Redis store for --store and its tasks (_StoreFailed without hiredis)."""
    from .redisstore.address import parse_store_url
    from .private_file import PrivateFileError, read_private_file
    from .redisstore.resp import Credentials, RedisError, TrioRedis
    from .redisstore.service import StoreService
    from .redisstore.store import RedisStore

    assert opts.store is not None
    address = parse_store_url(opts.store)  # checked by options.py
    password = address.password
    if opts.store_password_file is not None:
        try:
            password = read_private_file(opts.store_password_file, "--store-password-file", 4096).decode().strip()
        except (PrivateFileError, UnicodeDecodeError) as exc:
            raise _StoreFailed(str(exc)) from None
    context = None
    if address.tls:
        import ssl

        try:
            context = ssl.create_default_context(cafile=opts.store_tls_ca)
            if opts.store_tls_cert is not None:
                context.load_cert_chain(opts.store_tls_cert, opts.store_tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise _StoreFailed(f"--store TLS files: {exc}") from None
    replicas, wait_ms = opts.durability
    try:
        credentials = Credentials(address.db, address.username, password, context)
        command = TrioRedis(address.host, address.port, credentials=credentials, replicas=replicas, wait_ms=wait_ms)
    except RedisError as exc:  # no hiredis: the message names the extra
        raise _StoreFailed(f"--store: {exc}") from None
    store = RedisStore(command, max_job_size=opts.max_job_size, service=True)
    return store, StoreService(store, command, address, settle=lambda: None, durability=opts.durability)


def _run_with_store(trio: Any, server: Any) -> Optional[str]:
    """trio.run in store mode: a Redis failure (at start or later) is a
    message and an exit status, not a traceback."""
    from .redisstore.resp import RedisError, first_redis_error

    try:
        trio.run(server.run)
    except BaseExceptionGroup as group:
        lost = first_redis_error(group)
        if lost is None:
            raise
        return f"store: {lost}"
    except RedisError as exc:
        return f"store: {exc}"
    return None


def default_io_mode() -> str:
    """"epoll" on Linux (faster, see epoll_loop.py), else the streams driver.

    BEANSTALK_PY_IO=tasks forces the streams driver (CI runs the daemon-level
    tests under both).
    """
    wanted = os.environ.get("BEANSTALK_PY_IO", "")
    if wanted == "epoll" and hasattr(select, "epoll"):
        return wanted
    if wanted == "tasks":
        return wanted
    return "epoll" if hasattr(select, "epoll") else "tasks"


def make_tls_listener(opts: Options) -> tuple[socket.socket, "ssl.SSLContext"]:
    """The --tls-listen socket and its context (TLSConfigError, ListenError)."""
    from .tls import server_context

    assert opts.tls_listen is not None and opts.tls_cert is not None and opts.tls_key is not None
    context = server_context(opts.tls_cert, opts.tls_key, opts.tls_client_ca)
    host, port = split_host_port(opts.tls_listen)
    return make_listener(host, port), context


class _BinlogFailed(Exception):
    """The binlog could not be opened; carries the exit status."""

    def __init__(self, status: int) -> None:
        self.status = status


def open_binlog(opts: Options, engine: "Engine", notifier: Optional[Notifier] = None) -> "Binlog":
    """Open the binlog directory and restore its jobs into ``engine``.

    With a ``notifier`` (systemd), start-up time is extended while it works.
    """
    from .binlog import Binlog
    from .dispatch import now_ns

    directory = opts.binlog_dir
    assert directory is not None, "called only with -b"
    wal = Binlog(directory, opts.binlog_size, opts.fsync_ms if opts.fsync else None,
                 clock=now_ns, wall_clock=time.time_ns)
    notifier = notifier or Notifier()
    started = time.monotonic()
    last_extend = [float("-inf")]
    last_line = [started]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        percent = 100 * done // total if total else 100
        if done < total and now - last_line[0] >= PROGRESS_EVERY_S:
            # A line a second while a long replay runs, so an operator sees it move.
            last_line[0] = now
            warn(f"replaying the binlog in {directory}: {percent}% of {total / 1e6:.1f} MB "
                 f"after {now - started:.0f} s")
        if not notifier.enabled or (done and done < total and now - last_extend[0] < EXTEND_EVERY_S):
            return
        last_extend[0] = now
        # What is left to read, and the whole again in case it is rewritten
        # (a damaged or beanstalkd log is checkpointed into new files).
        seconds = (total - done + total) / EXTEND_REPLAY_BYTES_PER_S
        notifier.extend_timeout(max(EXTEND_MIN_S, seconds),
                                f"replaying the binlog: {percent}% of {total / 1e6:.1f} MB")

    # No cycle collection while millions of long-lived objects are made (they
    # form no cycles; tune_gc freezes them afterwards).  Measured, 1,000,000
    # jobs: replay 3.0 s -> 1.9 s, restore 4.7 s -> 2.0 s.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _replay(opts, wal, engine, notifier, progress)
    finally:
        # The restored jobs live on: out of every later collection now, as
        # tune_gc does for start-up's objects.  Measured, 1,000,000 jobs: the
        # first collection after the replay walked them all, 0.42 s pure and
        # 0.25 s compiled, on the way to the first reply; frozen, 0.00 s.
        gc.freeze()
        if collecting:
            gc.enable()


def _replay(opts: Options, wal: "Binlog", engine: "Engine", notifier: Notifier,
            progress: Callable[[int, int], None]) -> "Binlog":
    from .binlog import BinlogError, BinlogLockError
    from .dispatch import now_ns

    try:
        records, next_id = wal.open(progress)
    except BinlogLockError as exc:
        warn(f"failed to lock binlog dir {opts.binlog_dir}: {exc}")
        raise _BinlogFailed(EXIT_BINLOG_LOCK)
    except BinlogError as exc:
        warn(f"failed to open or replay the binlog in {opts.binlog_dir}: {exc}")
        raise _BinlogFailed(EXIT_BINLOG)
    if notifier.enabled:
        notifier.extend_timeout(max(EXTEND_MIN_S, len(records) / EXTEND_RESTORE_JOBS_PER_S),
                                f"restoring {len(records)} jobs")
    engine.restore(records, next_id, now_ns(), time.time_ns())
    engine.attach_wal(wal, wal.durability)
    if len(records) >= LARGE_REPLAY_JOBS:
        warn(f"restored {len(records)} jobs from the binlog in {opts.binlog_dir}")
    if opts.verbose:
        print(f"binlog {opts.binlog_dir}: {len(records)} jobs restored, next id {max(next_id, 1)}",
              flush=True)
    return wal
