"""Differential tests: the same bytes to beanstalkd 1.12 and to beanstalk-py.

Every test starts a fresh reference daemon and a fresh beanstalk-py daemon
(with the same extra command-line arguments), runs one *script* against each
of them at the same time (one thread per daemon), and compares the two
transcripts byte for byte.  Only the ``stats`` values that legitimately differ
between two processes are masked (see ``wire.STATS_VOLATILE``); most scripts
end with a full ``stats`` so the ``cmd-*`` counters, connection counts and job
counts are compared after every scenario.

Coverage: every protocol test of the reference's testserv.c (spec section 5.1,
the binlog ones excepted: beanstalk-py has no binlog yet), the additions of
section 5.4, the transcripts of Appendix A, and the edge cases of sections 1-2.
The places where beanstalk-py differs on purpose are tested in
test_differences.py instead.
"""

from __future__ import annotations

import difflib
import os
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from conftest import REFERENCE_BINARY, Daemon, start_beanstalk_py, start_reference
from wire import SILENCE, Wire, mask, yaml_fields


# --------------------------------------------------------------------- harness


class Session:
    """One daemon as seen by a script: open connections, send it signals.

    The beanstalk-py side may be several front ends on one store
    (test_differential_redis.py): each ``conn()`` then goes to the next
    front end in turn, and its ``side`` decides what a signal does.
    """

    def __init__(self, daemon, name: str, side: "PySide | None" = None) -> None:
        self.daemons: list[Daemon] = list(daemon) if isinstance(daemon, (list, tuple)) else [daemon]
        self.daemon = self.daemons[0]
        self.name = name
        self.side = side
        self.wires: list[Wire] = []
        self._port_of: dict[int, int] = {}  # id(wire) -> its daemon's port

    def conn(self) -> Wire:
        """A new connection the server has certainly accepted.

        connect() returns once the kernel has queued the connection, before
        the server accepts it; one round trip with an empty line (which only
        gets UNKNOWN_COMMAND and moves no counter) makes the following
        `stats` of every daemon see it.
        """
        daemon = self.daemons[len(self.wires) % len(self.daemons)]
        sock = daemon.connect()
        wire = self.side.wire(sock, self, daemon) if self.side is not None else Wire(sock)
        self.wires.append(wire)
        self._port_of[id(wire)] = daemon.port
        assert wire.one(b"\r\n") == b"UNKNOWN_COMMAND\r\n"
        return wire

    def hang_up(self, wire: Wire) -> None:
        """Close ``wire`` and wait until the server has closed its end too.

        Both daemons count a connection out (current-connections, producers,
        workers, watchers) before they close its socket, so once the kernel
        shows our side got the server's FIN (TIME_WAIT), the next command of
        the script sees the close; a sleep only makes that likely.
        """
        _drain_kernel_buffer(wire.sock)  # unread data would make close() send RST
        port = wire.sock.getsockname()[1]
        wire.close()
        deadline = time.monotonic() + 5
        while _tcp_state(port, self._port_of.get(id(wire), self.daemon.port)) not in (None, _TCP_TIME_WAIT):
            assert time.monotonic() < deadline, f"{self.name} never closed the connection from port {port}"
            time.sleep(0.002)

    def signal(self, signum: int) -> None:
        if self.side is not None:
            self.side.signal(self, signum)
        else:
            self.daemon.proc.send_signal(signum)

    def close(self) -> None:
        for wire in self.wires:
            wire.close()


class PySide:
    """How the beanstalk-py side of every script is run: by default a fresh
    in-memory daemon with the script's arguments.  test_differential_redis.py
    puts another in ``PY_SIDE`` for its tests (front ends on a Redis store),
    so the same scripts run unchanged against them."""

    # stats/stats-job/stats-tube keys masked on both sides, beyond wire.STATS_VOLATILE
    mask_keys: tuple[str, ...] = ()

    def start(self, *extra: str):
        """The daemon (or list of daemons) a script runs against."""
        return start_beanstalk_py(*extra)

    def finish(self, transcript):
        """The script's transcript, as compared with the reference's."""
        return transcript

    def stop(self, daemons: list[Daemon]) -> None:
        for daemon in daemons:
            daemon.stop()

    def wire(self, sock: socket.socket, session: "Session", daemon: Daemon) -> Wire:
        return Wire(sock)

    def signal(self, session: "Session", signum: int) -> None:
        for daemon in session.daemons:
            daemon.proc.send_signal(signum)


PY_SIDE = PySide()


Script = Callable[[Session], object]

_TCP_TIME_WAIT = "06"


def _tcp_state(local_port: int, remote_port: int):
    """The state (hex, as in /proc/net/tcp) of our socket local_port -> remote_port, or None."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (int(fields[1].rsplit(":", 1)[1], 16) == local_port
                    and int(fields[2].rsplit(":", 1)[1], 16) == remote_port):
                return fields[3]
    return None


def _drain_kernel_buffer(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _run(name: str, start, script: Script, extra: tuple[str, ...], side: "PySide | None" = None):
    session = Session(side.start(*extra) if side is not None else start(*extra), name, side)
    try:
        result = script(session)
        return side.finish(result) if side is not None else result
    except Exception as exc:
        exc.add_note(f"(the script failed on {name})")
        raise
    finally:
        session.close()
        if side is not None:
            side.stop(session.daemons)
        else:
            for daemon in session.daemons:
                daemon.stop()


def run_both(script: Script, *extra: str, reference: bool = True, py: bool = True):
    """Run ``script`` on a fresh reference and a fresh beanstalk-py (``PY_SIDE``), concurrently."""
    with ThreadPoolExecutor(2) as pool:
        ref_f = pool.submit(_run, "reference", start_reference, script, extra) if reference else None
        py_f = pool.submit(_run, "beanstalk-py", None, script, extra, PY_SIDE) if py else None
        # beanstalk-py's result first: a failing script there is the more useful report.
        py_result = py_f.result() if py_f else None
        ref_result = ref_f.result() if ref_f else None
    return ref_result, py_result


def same(script: Script, *extra: str, mask_keys: tuple[str, ...] = ()):
    """Assert both daemons produce the same transcript; return beanstalk-py's."""
    ref, py = run_both(script, *extra)
    mask_keys = (*mask_keys, *PY_SIDE.mask_keys)
    ref_m, py_m = mask(ref, mask_keys), mask(py, mask_keys)
    assert py_m == ref_m, first_difference(ref_m, py_m)
    # A reply the script waited for in vain means the script is wrong, even
    # if both daemons agree.
    assert SILENCE not in list(_flatten(py)), py
    return py


def first_difference(ref, py) -> str:
    """A readable account of where two transcripts part ways."""
    ref_items, py_items = list(_flatten(ref)), list(_flatten(py))
    for index, (r, p) in enumerate(zip(ref_items, py_items)):
        if r != p:
            before = ref_items[max(0, index - 3) : index]
            diff = "\n".join(
                difflib.unified_diff(
                    repr(r).split("\\n"), repr(p).split("\\n"), "reference", "beanstalk-py", lineterm=""
                )
            )
            return f"item {index} differs (after {before!r}):\n{diff}"
    return f"lengths differ: reference {len(ref_items)} items, beanstalk-py {len(py_items)}"


def _flatten(items):
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item


def final_stats(s: Session, w: Wire) -> bytes:
    """A full `stats`, from ``w`` or (once it was closed) a new connection."""
    if w.eof:
        w = s.conn()
    return w.one(b"stats\r\n")


def steps(*items, stats: bool = True) -> Script:
    """A one-connection script: each item is ``bytes`` (one reply) or ``(bytes, n)``."""

    def script(s: Session):
        w = s.conn()
        out = []
        for item in items:
            data, count = (item, 1) if isinstance(item, bytes) else item
            out.append((data, w.ask(data, count)))
        if stats:
            out.append(("stats", final_stats(s, w)))
        return out

    return script


def wait_for(w: Wire, command: bytes, needle: bytes, limit: float = 3.0) -> None:
    """Repeat ``command`` on ``w`` until the reply contains ``needle``."""
    deadline = time.monotonic() + limit
    while needle not in w.one(command):
        assert time.monotonic() < deadline, f"{command!r} never showed {needle!r}"
        time.sleep(0.02)


def field(item: bytes, key: str) -> str:
    return yaml_fields(item)[key]


NAME200 = b"t" * 200
NAME201 = b"t" * 201
PUT1 = b"put 0 0 100 1\r\nx\r\n"


# ----------------------------------------------------------- one-connection cases
#
# Each case is a list of steps for steps(); a final `stats` is compared too.

CASES: dict[str, list] = {
    # ---- command recognition (spec 1.2)
    "unknown_command_and_bare_words": [
        b"nont10knowncommand\r\n", b"STATS\r\n", b"\r\n", b" stats\r\n",
        b"put\r\n", b"peek\r\n", b"delete\r\n", b"use\r\n", b"kick\r\n", b"kick-job\r\n",
        b"touch\r\n", b"bury\r\n", b"release\r\n", b"watch\r\n", b"ignore\r\n",
        b"stats-job\r\n", b"stats-tube\r\n", b"list-tube\r\n", b"list\r\n", b"peek-\r\n",
    ],
    "prefix_matching": [
        b"statsfoo\r\n", b"stats \r\n", b"reservex\r\n", b"reserve \r\n", b"reserve-job\r\n",
        b"reserve-with-timeout\r\n", b"stats-tube\r\n", b"stats-job\r\n", b"peek-readyx\r\n",
        b"peek-delayed \r\n", b"peek-buried x\r\n", b"list-tubesx\r\n", b"list-tube-used \r\n",
        b"list-tubes-watchedx\r\n", b"list-tubes-watched \r\n", b"stats-jobs 1\r\n",
        b"peek-ready\r\n", b"peek-delayed\r\n", b"peek-buried\r\n", b"list-tubes\r\n",
        b"list-tube-used\r\n", b"list-tubes-watched\r\n",
    ],
    "quitxyz": [(b"quitxyz\r\n", 1)],
    "quit_with_pipelined_command": [(b"quit\r\nstats\r\n", 1)],
    "quit_space": [(b"quit \r\n", 1)],
    "nul_in_line": [
        b"stats\x00\r\n", b"use fo\x00o\r\n", b"\x00\r\n", b"quit\x00\r\n", b"put 0 0 1 1\x00\r\n",
        b"list-tube-used\r\n",
    ],
    "bare_lf_is_data": [b"use foo\n\r\n", b"stats\n\r\n", (b"use a\nuse b\r\n", 1)],
    "two_commands_one_packet": [
        (b"use a\r\nuse b\r\n", 2),
        (b"put 0 0 1 1\r\nx\r\nput 0 0 1 2\r\nyz\r\npeek 2\r\nlist-tube-used\r\n", 4),
    ],
    # ---- line length (spec 1.1): 222 + CRLF is the longest accepted line
    "line_221_222": [b"put " + b" " * 210 + b"0 0 1 1\r\nx\r\n", b"put " + b" " * 211 + b"0 0 1 1\r\nx\r\n"],
    "line_224_225": [
        b"put " + b" " * 213 + b"0 0 1 1\r\n", b"list-tube-used\r\n", b"use " + b"a" * 221 + b"\r\n",
        b"list-tube-used\r\n",
    ],
    "too_long_commandline": [b"x" * 500 + b"\r\n", PUT1],
    "very_long_line": [b"y" * 1000 + b"\r\n", (b"z" * 3000 + b"\r\nlist-tube-used\r\n", 2)],
    "longest_command": [
        b"use " + NAME200 + b"\r\n",
        b"pause-tube " + NAME200 + b" 4294967295\r\n",
        b"stats-tube " + NAME200 + b"\r\n",
    ],
    # ---- put (spec 1.5 put, 5.1)
    "put_ok_and_peek": [PUT1, b"peek 1\r\n", b"put 0 0 1 0\r\n\r\n", b"peek 2\r\n"],
    "put_numbers": [
        b"put 4294967295 0 1 1\r\nx\r\n",  # max_priority
        b"put 4294967296 0 1 1\r\n",  # too_big_priority
        b"put -1 0 100 1\r\n",  # negative_priority
        b"put -1kkdj9djjkd9 0 100 1\r\n",  # garbage_priority
        b"put 512 -1 100 0\r\n",  # negative_delay
        b"\r\n",
        b"put +1 0 1 1\r\n",
        b"put 0 0 1 +1\r\n",
        b"put 00001 0 00 0001\r\nx\r\n",
        b"put 0 0 1\r\n",
        b"put 0 0\r\n",
        b"put \r\n",
        b"put 0 0 1 1 1\r\n",
        b"put 0 0 1 18446744073709551616\r\n",
    ],
    "put_spaces_before_numbers": [
        b"put  0 0 1 1\r\nx\r\n", b"put 0  0   1    1\r\nx\r\n", b"put\t0 0 1 1\r\n",
        b"put 0\t0 1 1\r\n",
    ],
    "put_trailing_space_or_garbage": [
        (b"put 0 0 1 1 \r\nx\r\n", 2), b"list-tube-used\r\n", (b"put 0 0 1 1x\r\nx\r\n", 2),
    ],
    "job_size_invalid": [
        b"put 0 0 0 4294967296\r\n", b"put 0 0 0 10b\r\n", b"put 0 0 0 --!@#$%^&&**()0b\r\n", PUT1,
    ],
    "expected_crlf_uses_id": [(b"put 0 0 1 1\r\nxyz\r\n", 2), b"put 0 0 1 1\r\nx\r\n", b"peek 1\r\n"],
    "expected_crlf_pipelined": [(b"put 0 0 1 2\r\nab\r\r\nlist-tube-used\r\n", 2)],
    "body_with_crlf_and_nul": [b"put 0 0 1 6\r\na\r\n\x00b\r\r\n", b"peek 1\r\n"],
    "put_max_default_size": [
        b"put 0 0 1 65535\r\n" + b"a" * 65535 + b"\r\n",
        (b"put 0 0 1 65536\r\n" + b"a" * 65536 + b"\r\nuse zz\r\n", 2),
    ],
    "ttr_small_and_large": [
        b"put 0 0 0 1\r\nx\r\n", b"stats-job 1\r\n",
        *(b"put 0 0 %d 1\r\nx\r\n" % ttr for ttr in (120, 4294, 4295, 4296, 4297, 5000, 21600, 4294967295)),
        *(b"stats-job %d\r\n" % i for i in range(2, 10)),
    ],
    "delays": [b"put 0 0 1 1\r\nx\r\n", b"put 0 1 1 1\r\nx\r\n", b"stats-job 2\r\n", b"peek-delayed\r\n"],
    # ---- peek (peek_ok, peek_not_found, peek_bad_format, peek_delayed)
    "peek": [
        b"put 0 0 1 1\r\na\r\n", b"peek 1\r\n", b"peek 2\r\n", b"peek 18446744073709551615\r\n",
        b"peek 18446744073709551616\r\n", b"peek 184467440737095516160000000000000000000000000000\r\n",
        b"peek foo111\r\n", b"peek 111foo\r\n", b"peek  1\r\n", b"peek 1 \r\n", b"peek -1\r\n",
        b"peek +1\r\n", b"peek \t1\r\n", b"peek\t1\r\n", b"peek 0001\r\n", b"peek \r\n",
    ],
    "peek_delayed": [
        b"peek-delayed\r\n", b"put 0 0 1 1\r\na\r\n", b"put 0 99 1 1\r\nb\r\n", b"put 0 1 1 1\r\nc\r\n",
        b"peek-delayed\r\n", b"delete 3\r\n", b"peek-delayed\r\n", b"delete 2\r\n", b"peek-delayed\r\n",
    ],
    "peek_ready_order": [
        b"put 5 0 1 1\r\na\r\n", b"put 3 0 1 1\r\nb\r\n", b"put 3 0 1 1\r\nc\r\n", b"peek-ready\r\n",
        b"delete 2\r\n", b"peek-ready\r\n",
    ],
    "peek_only_used_tube": [
        b"use foo\r\n", b"put 0 0 1 1\r\na\r\n", b"put 0 5 1 1\r\nb\r\n", b"use default\r\n",
        b"peek-ready\r\n", b"peek-delayed\r\n", b"peek 1\r\n", b"peek 2\r\n", b"stats-job 1\r\n",
        b"kick 10\r\n", b"kick-job 2\r\n", b"use foo\r\n", b"peek-ready\r\n",
    ],
    # ---- delete (delete_ready, delete_bad_format)
    "delete": [
        PUT1, b"delete 1\r\n", b"delete 1\r\n", b"delete 18446744073709551616\r\n", b"delete foo111\r\n",
        b"delete 111foo\r\n", b"delete 1 \r\n", b"delete  2\r\n", b"delete -1\r\n",
    ],
    "delete_any_tube_and_state": [
        b"use a\r\n", PUT1, b"use b\r\n", b"put 0 100 1 1\r\nx\r\n", b"use default\r\n",
        b"delete 1\r\n", b"delete 2\r\n", b"list-tubes\r\n", b"stats-tube a\r\n",
    ],
    # ---- touch / bury / kick-job / release / stats-job bad formats (5.1)
    "touch_bad_format_and_not_found": [
        b"touch a111\r\n", b"touch 111a\r\n", b"touch !@#!@#\r\n", b"touch 1 \r\n", b"touch 1\r\n",
        b"touch 100\r\n", b"touch 18446744073709551615\r\n", PUT1, b"touch 1\r\n",
        # touch_own
        b"put 0 0 100 1\r\nx\r\n", b"reserve\r\n", b"touch 1\r\n", b"stats-job 1\r\n", b"touch 2\r\n",
    ],
    "bury_bad_format": [
        b"bury 111abc 2\r\n", b"bury 111\r\n", b"bury 111 222abc\r\n", b"bury 1 4294967296\r\n",
        b"bury 1 2 \r\n", b"bury  1  2\r\n", b"bury 1 -2\r\n",
    ],
    "kickjob_delayed": [
        PUT1, b"put 0 100 1 1\r\nx\r\n", b"kick-job 1\r\n", b"kick-job 2\r\n", b"kick-job 2\r\n",
        b"stats-job 2\r\n",
    ],
    "release_bad_format_and_not_found": [
        b"release 18446744073709551616 1 1\r\n", b"release foo111 1 1\r\n", b"release 111foo 1 1\r\n",
        b"release 1 abc 1\r\n", b"release 1 1 abc\r\n", b"release 1 1\r\n", b"release 1 1 1 \r\n",
        b"release 1 4294967296 1\r\n", b"release 1 1 4294967296\r\n", b"release 1 1 1\r\n",
        b"release  1  1  1\r\n",
    ],
    # kickjob_bad_format, statsjob_ck_format and reserve-job's
    "id_commands_bad_format": [
        b"kick-job a111\r\n", b"kick-job 111a\r\n", b"kick-job !@#!@#\r\n", b"kick-job 1 \r\n",
        b"kick-job  1\r\n", b"stats-job 111ABC\r\n", b"stats-job 111 222\r\n", b"stats-job 111\r\n",
        b"stats-job  1\r\n", b"stats-job 1 \r\n", b"reserve-job 1x\r\n", b"reserve-job -1\r\n",
        b"reserve-job 1 \r\n", b"reserve-job  1\r\n", b"reserve-job 18446744073709551616\r\n",
    ],
    # ---- kick (spec 1.3)
    "kick_strtoul": [
        *(b"put 0 100 1 1\r\nx\r\n",) * 12, b"kick 4294967296\r\n", b"kick 4294967298\r\n",
        b"kick 5x\r\n", b"kick -1\r\n", b"stats-job 1\r\n", *(b"put 0 100 1 1\r\nx\r\n",) * 3,
        b"kick 18446744073709551615\r\n",
    ],
    "kick_odd_numbers": [
        *(b"put 0 100 1 1\r\nx\r\n",) * 3, b"kick \r\n", b"kick x\r\n", b"kick +1\r\n", b"kick \t1\r\n",
        b"kick 1 \r\n", b"kick 18446744073709551616\r\n", b"kick -18446744073709551615\r\n",
        b"kick -18446744073709551616\r\n", b"kick 0\r\n", b"kick 99999999999999999999\r\n",
    ],
    # ---- reserve-with-timeout parsing (1.12's strtol) that answers at once
    "reserve_with_timeout_immediate": [
        b"reserve-with-timeout 0\r\n", b"reserve-with-timeout abc\r\n", b"reserve-with-timeout \r\n",
        b"reserve-with-timeout 4294967296\r\n", b"reserve-with-timeout 0x\r\n",
        b"reserve-with-timeout +0\r\n", b"reserve-with-timeout -0\r\n",
        b"reserve-with-timeout \t0\r\n", b"reserve-with-timeout 9223372036854775808\r\n",
        b"reserve-with-timeout -9223372036854775809\r\n",
        b"reserve-with-timeout -9223372036854775808\r\n",
        b"reserve-with-timeout 99999999999999999999999\r\n",
    ],
    "reserve_with_timeout_job_ready": [
        PUT1, PUT1, b"reserve-with-timeout abc\r\n", b"reserve-with-timeout -1\r\n",
    ],
    # ---- reserve-job (reserve_job_ready, _delayed, _buried, _already_reserved)
    "reserve_job_ready": [
        PUT1, PUT1, b"reserve-job 2\r\n", b"reserve-job 2\r\n", b"reserve-job 3\r\n", b"release 1 0 0\r\n",
        b"stats-job 2\r\n", b"reserve-job 1\r\n",
    ],
    "reserve_job_delayed": [
        b"put 0 100 1 1\r\nx\r\n", b"reserve-job 1\r\n", b"stats-job 1\r\n", b"release 1 0 0\r\n",
        b"stats-job 1\r\n",
    ],
    "reserve_job_buried": [
        PUT1, PUT1, b"reserve\r\n", b"bury 1 0\r\n", b"reserve\r\n", b"bury 2 0\r\n",
        b"reserve-job 2\r\n", b"reserve-job 1\r\n", b"release 1 0 0\r\n", b"release 2 0 0\r\n",
        b"stats-job 1\r\n", b"stats-job 2\r\n",
    ],
    "reserve_job_other_tube_and_paused": [
        b"use other\r\n", PUT1, b"pause-tube other 100\r\n", b"use default\r\n", b"reserve-job 1\r\n",
        b"list-tubes-watched\r\n", b"stats-tube other\r\n",
    ],
    # ---- bury / kick (peek_buried_kick, kickjob_buried)
    "peek_buried_kick": [
        PUT1, b"bury 1 0\r\n", b"reserve\r\n", b"bury 1 0\r\n", b"peek-buried\r\n", b"kick 1\r\n",
        b"stats-job 1\r\n", b"peek-ready\r\n", b"kick 1\r\n",
    ],
    "kickjob_buried": [
        PUT1, b"reserve\r\n", b"bury 1 0\r\n", b"kick-job 1\r\n", b"kick-job 1\r\n", b"kick-job 100\r\n",
        b"stats-job 1\r\n",
    ],
    "bury_fifo_and_kick_prefers_buried": [
        PUT1, PUT1, PUT1, b"put 0 100 1 1\r\nd\r\n", b"reserve\r\n", b"reserve\r\n", b"reserve\r\n",
        b"bury 2 10\r\n", b"bury 1 20\r\n", b"bury 3 0\r\n", b"peek-buried\r\n", b"kick 2\r\n",
        b"peek-buried\r\n", b"kick 10\r\n", b"kick 10\r\n", b"kick 10\r\n", b"peek-ready\r\n",
        b"stats-job 1\r\n", b"stats-job 2\r\n", b"stats-job 4\r\n",
    ],
    # ---- release
    "release_changes_priority": [
        b"put 10 0 1 1\r\na\r\n", b"put 5 0 1 1\r\nb\r\n", b"reserve\r\n", b"release 2 20 0\r\n",
        b"peek-ready\r\n", b"reserve\r\n", b"release 1 1024 0\r\n", b"stats-job 1\r\n", b"stats\r\n",
        b"reserve\r\n", b"release 1 1023 0\r\n", b"stats-tube default\r\n",
    ],
    # ---- stats-job per state
    "stats_job_states": [
        b"put 1 0 100 1\r\na\r\n", b"put 2 100 100 1\r\nb\r\n", b"put 3 0 100 1\r\nc\r\n",
        b"stats-job 1\r\n", b"stats-job 2\r\n", b"reserve\r\n", b"stats-job 1\r\n", b"bury 1 7\r\n",
        b"stats-job 1\r\n", b"stats-job 3\r\n", b"stats-job 4\r\n",  # 3: omit_time_left
    ],
    # ---- tubes (spec 1.3, 1.7)
    "use_tube_names": [
        b"use x_y\r\n", b"use " + NAME200 + b"\r\n", b"use " + NAME201 + b"\r\n", b"use -foo\r\n",
        b"use foo-\r\n", b"use foo*\r\n", b"use foo:bar\r\n", b"use foo@\r\n", b"use  foo\r\n",
        b"use foo \r\n", b"use \r\n", b"use AZaz09-+/;.$_()\r\n", b"use f\to\r\n", b"list-tube-used\r\n",
    ],
    "watch_ignore": [
        b"watch foo\r\n", b"watch foo\r\n", b"watch -foo\r\n", b"watch " + NAME201 + b"\r\n",
        b"watch " + NAME200 + b"\r\n", b"ignore nothere\r\n", b"ignore -x\r\n", b"ignore foo \r\n",
        b"list-tubes-watched\r\n", b"ignore " + NAME200 + b"\r\n", b"ignore default\r\n",
        b"ignore foo\r\n", b"list-tubes-watched\r\n", b"list-tubes\r\n",
    ],
    "ignore_unwatched_existing": [
        b"use foo\r\n", b"ignore foo\r\n", b"watch bar\r\n", b"ignore foo\r\n", b"ignore default\r\n",
        b"ignore bar\r\n",
    ],
    "list_tube": [
        b"watch w\r\n", b"use u\r\n", b"list-tubes\r\n", b"list-tube-used\r\n", b"list-tubes-watched\r\n",
        b"ignore default\r\n", b"list-tubes-watched\r\n", b"ignore w\r\n", b"list-tubes\r\n",
    ],
    "list_tubes_after_free": [
        b"watch a\r\n", b"watch b\r\n", b"watch c\r\n", b"watch d\r\n", b"list-tubes\r\n",
        b"ignore b\r\n", b"list-tubes\r\n", b"list-tubes-watched\r\n", b"ignore default\r\n",
        b"list-tubes-watched\r\n", b"list-tubes\r\n", b"watch e\r\n", b"list-tubes\r\n",
        b"list-tubes-watched\r\n",
    ],
    "tube_lifetime": [
        b"use foo\r\n", PUT1, b"use bar\r\n", b"list-tubes\r\n", b"use default\r\n", b"list-tubes\r\n",
        b"delete 1\r\n", b"list-tubes\r\n", b"stats-tube foo\r\n", b"stats-tube bar\r\n",
    ],
    "stats_tube": [
        b"use tubea\r\n", b"put 0 0 0 1\r\nx\r\n", b"delete 1\r\n", b"stats-tube tubea\r\n",
        b"stats-tube default\r\n", b"stats-tube nothere\r\n", b"stats-tube -x\r\n",
        b"stats-tube " + NAME201 + b"\r\n", b"stats-tube tubea \r\n", b"stats-tube  tubea\r\n",
    ],
    "stats_tube_counts": [
        b"put 1 0 100 1\r\na\r\n", b"put 2000 0 100 1\r\nb\r\n", b"put 0 100 100 1\r\nc\r\n",
        b"put 5 0 100 1\r\nd\r\n", b"reserve\r\n", b"reserve\r\n", b"bury 4 0\r\n",
        b"stats-tube default\r\n",
    ],
    # ---- pause-tube parsing (spec 1.3)
    "pause_tube_parsing": [
        b"pause-tubedefault 0\r\n", b"pause-tube   default 0\r\n", b"pause-tube default\r\n",
        b"pause-tube default 0 \r\n", b"pause-tube -abc 0\r\n", b"pause-tube nothere 0\r\n",
        b"pause-tube default 4294967296\r\n", b"pause-tube default -1\r\n", b"pause-tube\r\n",
        b"pause-tube de*fault 0\r\n", b"pause-tube default 0x\r\n", b"pause-tubex\r\n",
        b"pause-tube " + NAME201 + b" 0\r\n", b"pause-tube default  0\r\n", b"pause-tube default +1\r\n",
        b"pause-tube default 0\r\n", b"stats-tube default\r\n",
    ],
    "pause_tube_while_paused": [
        PUT1, b"pause-tube default 100\r\n", b"stats-tube default\r\n", b"peek-ready\r\n",
        b"reserve-with-timeout 0\r\n", b"put 0 100 1 1\r\ny\r\n", b"kick 1\r\n", b"peek-ready\r\n",
        b"delete 2\r\n", b"reserve-job 1\r\n", b"release 1 0 0\r\n", b"pause-tube default 4294967295\r\n",
        b"stats-tube default\r\n",
    ],
    # ---- deadline soon without a wait (reserve_ttr_deadline_soon)
    "reserve_ttr_deadline_soon": [
        b"put 0 0 1 1\r\na\r\n", b"reserve\r\n", b"reserve-with-timeout 1\r\n", b"reserve\r\n",
        b"stats-job 1\r\n", b"release 1 0 0\r\n", b"stats-job 1\r\n",
    ],
    "deadline_soon_but_job_ready": [
        b"put 0 0 1 1\r\na\r\n", b"reserve\r\n", b"put 0 0 1 1\r\nb\r\n", b"reserve-with-timeout 0\r\n",
        b"stats-job 2\r\n",
    ],
    "deadline_soon_paused_tube_counts_as_ready": [
        b"put 0 0 1 1\r\na\r\n", b"reserve\r\n", b"put 0 0 100 1\r\nb\r\n", b"pause-tube default 100\r\n",
        b"reserve-with-timeout 0\r\n",
    ],
    "reserve_job_no_deadline_soon": [
        b"put 0 0 1 1\r\na\r\n", b"put 0 0 1 1\r\nb\r\n", b"reserve-job 1\r\n", b"reserve-job 2\r\n",
        b"reserve-with-timeout 0\r\n",
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_transcript(name: str) -> None:
    same(steps(*CASES[name]))


# --------------------------------------------------------------- command counters


def test_cmd_counters_after_error_paths() -> None:
    """Every command's error paths, then the full `stats` (cmd-*, producers, workers...)."""
    lines = [
        (b"put 0 0 1 1x\r\n", 1), (b"put x\r\n", 1), (b"put 0 0 1 50\r\n" + b"z" * 52, 1),
        (b"put 0 0 1 1\r\nxyz\r\n", 2), (b"put 0 0 1 1 \r\n", 1), b"peek x\r\n", b"peek 99\r\n",
        b"peek-ready \r\n", b"peek-ready\r\n", b"peek-delayed \r\n", b"peek-delayed\r\n",
        b"peek-buried \r\n", b"peek-buried\r\n", b"reserve-with-timeout 99999999999999999999\r\n",
        b"reserve-with-timeout abc\r\n", b"reserve-job x\r\n", b"reserve-job 99\r\n", b"delete x\r\n",
        b"delete 99\r\n", b"release x 1 1\r\n", b"release 99 1 1\r\n", b"use -x\r\n", b"use a\r\n",
        b"watch -x\r\n", b"watch b\r\n", b"ignore -x\r\n", b"ignore b\r\n", b"ignore default\r\n",
        b"ignore b\r\n", b"bury x 1\r\n", b"bury 99 1\r\n", b"kick x\r\n", b"kick 5x\r\n",
        b"kick-job x\r\n", b"kick-job 99\r\n", b"touch x\r\n", b"touch 99\r\n", b"stats \r\n",
        b"stats-job x\r\n", b"stats-job 99\r\n", b"stats-tube -x\r\n", b"stats-tube nothere\r\n",
        b"list-tubes \r\n", b"list-tube-used \r\n", b"list-tubes-watched \r\n",
        b"pause-tube -abc 0\r\n", b"pause-tube x\r\n", b"pause-tube nothere 0\r\n", b"reserve \r\n",
        b"nonsense\r\n", b"x" * 300 + b"\r\n", b"stats\x00\r\n",
    ]
    same(steps(*lines), "-z", "10")


def test_producer_and_worker_counts() -> None:
    """current-producers / current-workers: which commands mark a connection."""

    def script(s: Session):
        out = []
        a, b, c, d, e = (s.conn() for _ in range(5))
        out.append(a.ask(b"put 0 0 1 1 \r\n", 1))  # trailing garbage: not a producer
        out.append(b.ask(b"put 0 0 1 1\r\nxyz\r\n", 2))  # EXPECTED_CRLF: a producer
        out.append(c.ask(b"reserve-job 99\r\n", 1))  # failed reserve-job: not a worker
        out.append(d.ask(b"reserve-with-timeout 0\r\n", 1))  # a worker
        out.append(e.ask(b"reserve \r\n", 1))  # malformed: not a worker
        out.append(a.one(b"stats\r\n"))
        s.hang_up(d)
        s.hang_up(b)
        out.append(a.ask(b"put 0 0 1 1\r\nx\r\n", 1))
        out.append(c.ask(b"reserve-job 2\r\n", 1))  # successful reserve-job: a worker
        out.append(a.one(b"stats\r\n"))
        return out

    same(script)


def test_stats_while_waiting() -> None:
    """current-waiting in stats and stats-tube while a client is blocked."""

    def script(s: Session):
        waiter, other = s.conn(), s.conn()
        out = [waiter.ask(b"watch foo\r\n"), waiter.send(b"reserve\r\n").quiet(0.3)]
        out.append(other.one(b"stats\r\n"))
        out.append(other.one(b"stats-tube default\r\n"))
        out.append(other.one(b"stats-tube foo\r\n"))
        out.append(other.one(b"use foo\r\n"))
        out.append(other.one(PUT1))
        out.append(waiter.read(1))
        out.append(other.one(b"stats\r\n"))
        return out

    same(script)


# ------------------------------------------------------------ job size limit (-z)


def test_too_big() -> None:
    """-z 10: the next 13 bytes are swallowed as the body, then the reply."""
    same(
        steps(
            (b"put 0 0 0 11\r\ndelete 9999\r\n", 1),
            b"put 0 0 0 1\r\nx\r\n",
            b"put 0 0 0 10\r\n0123456789\r\n",
            (b"put 0 0 0 11x\r\n0123456789A\r\n", 1),  # too big wins over trailing garbage
            (b"put 0 0 0 1001\r\n" + b"b" * 1001 + b"\r\nlist-tube-used\r\n", 2),  # max + 1, whole body
        ),
        "-z", "10",
    )


def test_too_big_reply_waits_for_discard() -> None:
    def script(s: Session):
        w = s.conn()
        out = [w.send(b"put 0 0 0 20\r\n").quiet(0.3)]
        out.append(w.send(b"x" * 11).quiet(0.2))
        out.append(w.ask(b"y" * 11 + b"stats-job 1\r\n", 2))
        return out

    same(script, "-z", "10")


# --------------------------------------------------------------- multi-connection


def test_delete_reserved_by_other() -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.one(PUT1), b.one(b"reserve\r\n")]
        for cmd in (
            b"delete 1\r\n", b"release 1 0 0\r\n", b"touch 1\r\n", b"bury 1 0\r\n", b"peek 1\r\n",
            b"stats-job 1\r\n", b"reserve-job 1\r\n", b"kick-job 1\r\n",
        ):
            out.append(a.one(cmd))
        out.append(b.one(b"delete 1\r\n"))
        out.append(a.one(b"stats\r\n"))
        return out

    same(script)


def test_multi_tube() -> None:
    def script(s: Session):
        a, b, c = s.conn(), s.conn(), s.conn()
        out = [a.one(b"use abc\r\n"), a.one(b"put 999999 0 100 0\r\n\r\n")]
        out += [a.one(b"use def\r\n"), a.one(b"put 99 0 100 0\r\n\r\n")]
        out += [b.one(b"watch abc\r\n"), b.one(b"watch def\r\n"), b.one(b"reserve\r\n")]
        # A waiter watching several tubes gets the job put into any of them.
        out += [c.one(b"watch abc\r\n"), c.one(b"watch def\r\n"), c.one(b"ignore default\r\n")]
        out.append(c.one(b"reserve\r\n"))  # job 1 (abc) is still ready
        out.append(c.send(b"reserve\r\n").quiet(0.2))
        out += [a.one(b"put 5 0 100 1\r\nz\r\n"), c.read(1)]
        out.append(a.one(b"stats\r\n"))
        return out

    same(script)


def test_multi_tube_global_priority() -> None:
    """A waiter gets the best (pri, id) job across its watched tubes."""

    def script(s: Session):
        p, w = s.conn(), s.conn()
        out = [w.one(b"watch t1\r\n"), w.one(b"watch t2\r\n")]
        for tube, pri in ((b"t1", 50), (b"t2", 10), (b"t1", 10), (b"default", 10), (b"t2", 0)):
            out += [p.one(b"use " + tube + b"\r\n"), p.one(b"put %d 0 100 1\r\nx\r\n" % pri)]
        for _ in range(5):
            out.append(w.one(b"reserve\r\n"))
        return out

    same(script)


def test_reserve_with_timeout_2conns() -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.one(b"watch default\r\n")]
        start = time.monotonic()
        out.append(b.one(b"reserve-with-timeout 1\r\n", timeout=3))
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 1.6, (s.name, elapsed)
        return out

    same(script)


@pytest.mark.parametrize("how", ["close", "quit", "quitxyz"])
def test_close_releases_job(how: str) -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.one(b"put 0 0 100 1\r\na\r\n"), b.one(b"reserve\r\n")]
        if how == "close":
            b.close()
        else:
            out.append(b.ask(b"quit\r\n" if how == "quit" else b"quitxyz\r\n"))
        start = time.monotonic()
        out.append(a.one(b"reserve-with-timeout 1\r\n"))
        assert time.monotonic() - start < 0.9
        out.append(a.one(b"stats-job 1\r\n"))
        out.append(a.one(b"stats\r\n"))
        return out

    same(script)


def test_commands_queued_behind_blocked_reserve() -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.send(b"reserve\r\nlist-tube-used\r\nstats-tube default\r\nstats\r\n").quiet(0.4)]
        out.append(b.one(b"stats-tube default\r\n"))
        out.append(b.one(PUT1))
        out.append(a.read(4))
        return out

    same(script)


@pytest.mark.parametrize("arg", [b"-1", b"2147483648", b"4294967295", b"-2"])
def test_reserve_with_timeout_waits_forever(arg: bytes) -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.send(b"reserve-with-timeout " + arg + b"\r\n").quiet(0.5)]
        out.append(b.one(b"stats\r\n"))
        out.append(b.one(PUT1))
        out.append(a.read(1))
        return out

    same(script)


def test_half_close_during_reserve() -> None:
    def script(s: Session):
        a = s.conn()
        out = [a.send(b"reserve\r\n").quiet(0.2)]
        a.shutdown_write()
        out.append(a.read(2))
        b = s.conn()
        out.append(b.one(b"stats\r\n"))
        return out

    same(script)


@pytest.mark.parametrize(
    "data,count",
    [(b"reserve\r\n", 2), (b"put 0 0 100 1\r\nx\r\nreserve\r\nlist-tube-used\r\n", 4)],
    ids=["nothing-ready", "job-ready"],
)
def test_half_close_right_after_reserve(data: bytes, count: int) -> None:
    def script(s: Session):
        a = s.conn()
        a.send(data)
        a.shutdown_write()
        return [a.read(count), s.conn().one(b"stats\r\n")]

    same(script)


def test_wide_watch_waiter() -> None:
    """A waiter watching more tubes than beanstalk-py's per-tube registration limit."""

    def script(s: Session):
        w, p = s.conn(), s.conn()
        out = [w.one(b"watch w%d\r\n" % i) for i in range(40)]
        out.append(w.send(b"reserve\r\n").quiet(0.3))
        out += [p.one(b"stats-tube w5\r\n"), p.one(b"stats-tube default\r\n"), p.one(b"stats\r\n")]
        out += [p.one(b"use w39\r\n"), p.one(b"put 3 0 100 1\r\nz\r\n"), w.read(1)]
        out += [p.one(b"put 2 0 100 1\r\ny\r\n"), p.one(b"use w0\r\n"), p.one(b"put 2 0 100 1\r\nx\r\n")]
        out += [w.one(b"reserve\r\n"), w.one(b"reserve\r\n"), p.one(b"stats-tube w5\r\n")]
        return out

    same(script)


def test_half_close_during_reserve_with_queued_commands() -> None:
    def script(s: Session):
        a = s.conn()
        out = [a.send(b"watch foo\r\nreserve\r\nlist-tube-used\r\n").quiet(0.3)]
        a.shutdown_write()
        out.append(a.read(3))
        return out

    same(script)


def test_half_close_after_commands() -> None:
    """EOF after complete commands: every command is answered, then the close."""

    def script(s: Session):
        a = s.conn()
        a.send(b"use foo\r\nput 0 0 1 1\r\nx\r\nlist-tube-used\r\n")
        a.shutdown_write()
        return [a.read(4)]

    same(script)


def test_unpause_tube() -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.one(PUT1), a.one(b"pause-tube default 86400\r\n")]
        out.append(b.send(b"reserve\r\n").quiet(0.3))
        out.append(a.one(b"stats-tube default\r\n"))
        out.append(a.one(b"pause-tube default 0\r\n"))
        start = time.monotonic()
        out.append(b.read(1))
        assert time.monotonic() - start < 0.5
        out.append(a.one(b"stats-tube default\r\n"))
        return out

    same(script)


def test_pause() -> None:
    """A paused tube hands out nothing until the pause ends (>= 1 s); a delayed
    job becomes ready after its delay.  Waiters with and without a timeout."""

    def script(s: Session):
        a, b, c = s.conn(), s.conn(), s.conn()
        out = [a.one(b"pause-tube default 1\r\n"), a.one(PUT1)]
        out += [b.one(b"watch p\r\n"), b.one(b"ignore default\r\n"), b.one(b"use p\r\n"), b.one(PUT1)]
        out += [b.one(b"pause-tube p 1\r\n"), b.one(b"stats-tube p\r\n")]
        out += [c.one(b"use d\r\n"), c.one(b"put 0 1 100 1\r\nd\r\n"), c.one(b"watch d\r\n")]
        out += [c.one(b"ignore default\r\n"), c.one(b"stats\r\n")]
        start = time.monotonic()
        a.send(b"reserve\r\n")
        b.send(b"reserve-with-timeout 3\r\n")
        c.send(b"reserve-with-timeout 3\r\n")
        out += [a.read(1, timeout=3), b.read(1, timeout=3), c.read(1, timeout=3)]
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 1.6, (s.name, elapsed)
        out += [a.one(b"stats-tube default\r\n"), a.one(b"stats-tube p\r\n"), a.one(b"stats-job 3\r\n")]
        out.append(a.one(b"stats\r\n"))
        return out

    same(script)


def test_delayed_to_ready() -> None:
    def script(s: Session):
        a = s.conn()
        out = [a.one(b"put 0 1 1 1\r\na\r\n"), a.one(b"stats\r\n"), a.one(b"stats-tube default\r\n")]
        time.sleep(1.1)
        out += [a.one(b"stats\r\n"), a.one(b"stats-job 1\r\n"), a.one(b"peek-ready\r\n")]
        return out

    same(script)


def test_release_with_delay() -> None:
    def script(s: Session):
        a = s.conn()
        out = [a.one(b"put 3 0 100 1\r\na\r\n"), a.one(b"reserve\r\n"), a.one(b"release 1 5 1\r\n")]
        out += [a.one(b"stats-job 1\r\n"), a.one(b"peek-delayed\r\n"), a.one(b"peek-ready\r\n")]
        out.append(a.one(b"reserve-with-timeout 0\r\n"))
        start = time.monotonic()
        out.append(a.one(b"reserve-with-timeout 3\r\n", timeout=3))
        assert 0.8 <= time.monotonic() - start < 1.6
        out += [a.one(b"stats-job 1\r\n"), a.one(b"stats\r\n")]
        return out

    same(script)


def test_deadline_soon_while_waiting() -> None:
    """A wait ends with DEADLINE_SOON when the held job enters its last second,
    also when a reserve-with-timeout would time out at the same moment; a
    shorter timeout wins with TIMED_OUT."""

    def script(s: Session):
        out = []
        workers = []
        for tube, ttr, wait in ((b"a", 2, b"reserve"), (b"b", 2, b"reserve-with-timeout 1"),
                                (b"c", 3, b"reserve-with-timeout 1")):
            w = s.conn()
            out += [w.one(b"use " + tube + b"\r\n"), w.one(b"watch " + tube + b"\r\n")]
            out += [w.one(b"ignore default\r\n"), w.one(b"put 0 0 %d 1\r\n%s\r\n" % (ttr, tube))]
            out.append(w.one(b"reserve\r\n"))
            workers.append((w, wait))
        start = time.monotonic()
        for w, wait in workers:
            w.send(wait + b"\r\n")
        for w, _ in workers:
            out.append(w.read(1, timeout=3))
        elapsed = time.monotonic() - start
        assert 0.8 <= elapsed < 1.4, (s.name, elapsed)
        w = workers[0][0]
        out += [w.one(b"stats-job 1\r\n"), w.one(b"reserve-with-timeout 0\r\n"), w.one(b"touch 1\r\n")]
        # touch moves the deadline out of the margin again: a plain timeout now.
        out += [w.one(b"stats-job 1\r\n"), w.one(b"reserve-with-timeout 0\r\n")]
        return out

    same(script)


def test_touch_other_connection() -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        out = [a.one(PUT1), a.one(b"reserve\r\n"), b.one(b"touch 1\r\n"), a.one(b"touch 1\r\n")]
        out.append(b.one(b"stats\r\n"))
        return out

    same(script)


def test_use_and_watch_counts_across_connections() -> None:
    def script(s: Session):
        a, b, c = s.conn(), s.conn(), s.conn()
        out = [a.one(b"use shared\r\n"), b.one(b"watch shared\r\n"), c.one(b"use shared\r\n")]
        out.append(c.one(b"stats-tube shared\r\n"))
        s.hang_up(b)
        out.append(c.one(b"stats-tube shared\r\n"))
        out += [a.one(b"use default\r\n"), c.one(b"use default\r\n"), c.one(b"stats-tube shared\r\n")]
        out.append(c.one(b"list-tubes\r\n"))
        return out

    same(script)


def test_list_tubes_order_after_connection_close() -> None:
    def script(s: Session):
        conns = [s.conn() for _ in range(4)]
        out = [w.one(b"use t%d\r\n" % i) for i, w in enumerate(conns)]
        conns[1].send(b"quit\r\n")
        assert conns[1].closed()
        out.append(conns[0].one(b"list-tubes\r\n"))
        conns[0].send(b"quit\r\n")
        assert conns[0].closed()
        out.append(conns[2].one(b"list-tubes\r\n"))
        return out

    same(script)


# ----------------------------------------------------------------- drain (SIGUSR1)


def test_put_in_drain() -> None:
    def script(s: Session):
        w, poll = s.conn(), s.conn()
        out = [w.one(PUT1)]
        s.signal(signal.SIGUSR1)
        wait_for(poll, b"stats\r\n", b"draining: true")
        out.append(w.one(b"put 0 0 1 1\r\nx\r\n"))
        out.append(w.ask(b"put 0 0 1 1\r\nxyz\r\n", 2))
        out.append(w.ask(b"put 0 0 1 1x\r\nx\r\n", 2))
        out += [w.one(b"reserve-with-timeout 0\r\n"), w.one(b"use foo\r\n"), w.one(b"delete 1\r\n")]
        s.signal(signal.SIGUSR1)  # a second signal does not leave drain mode
        time.sleep(0.2)
        out.append(w.one(b"put 0 0 1 1\r\nx\r\n"))
        out.append(w.one(b"stats\r\n"))
        return out

    # The number of polls differs, so cmd-stats does.
    same(script, mask_keys=("cmd-stats",))


# ------------------------------------------------------------------- unix sockets


def _unix_daemon(binary_argv: list[str], path: str) -> Daemon:
    return Daemon([*binary_argv, "-l", "unix:" + path], unix_path=path).start()


@pytest.mark.parametrize("flavour", ["reference", "beanstalk-py"])
def test_peek_ok_unix_and_auto_removal(flavour: str) -> None:
    """Over a unix socket, and starting again on the path of a dead server works."""
    if flavour == "reference":
        if REFERENCE_BINARY is None:
            pytest.skip("beanstalkd is not installed")
        argv = [REFERENCE_BINARY]
    else:
        argv = [sys.executable, "-m", "beanstalk_py"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sock")
        results = []
        for _ in range(2):
            daemon = _unix_daemon(argv, path)
            try:
                w = Wire(daemon.connect())
                results.append([w.one(b"put 0 0 1 1\r\na\r\n"), w.one(b"peek 1\r\n")])
                w.close()
            finally:
                daemon.stop()
            if not os.path.exists(path):  # leave a stale socket file behind
                stale = socket.socket(socket.AF_UNIX)
                stale.bind(path)
                stale.close()
        assert results == [[b"INSERTED 1\r\n", b"FOUND 1 1\r\na\r\n"]] * 2


# ---------------------------------------------------------------- TTR expiry
#
# The reference can lose a TTR expiry (spec section 0 item 6): the job stays
# reserved with a negative time-left.  beanstalk-py must always expire; the
# reference is retried and, if it keeps hitting its bug, left out.


def same_unless_ttr_bug(script: Script, bug: Callable[[list], bool], attempts: int = 3):
    """Compare with the reference, retrying it while it shows its lost-TTR bug."""
    ref, py = run_both(script)
    assert not bug(py), py
    for _ in range(attempts - 1):
        if not bug(ref):
            break
        ref, _ = run_both(script, py=False)
    if not bug(ref):
        assert mask(py, PY_SIDE.mask_keys) == mask(ref, PY_SIDE.mask_keys)
    return py


def test_ttr_expiry() -> None:
    """ttr 1: DEADLINE_SOON at once, then the job returns to ready (reserve and reserve-job)."""

    def script(s: Session):
        p, w1, w2, obs = s.conn(), s.conn(), s.conn(), s.conn()
        out = [p.one(b"put 0 0 1 1\r\na\r\n"), p.one(b"put 0 100 1 1\r\nb\r\n")]
        out.append(w1.one(b"reserve\r\n"))
        out.append(w1.one(b"reserve-with-timeout 1\r\n"))
        out.append(w2.one(b"reserve-job 2\r\n"))  # a delayed job
        out.append(w2.one(b"reserve-with-timeout 1\r\n"))
        out.append(obs.one(b"stats-job 2\r\n"))
        time.sleep(1.3)
        out += [obs.one(b"stats-job 1\r\n"), obs.one(b"stats-job 2\r\n"), obs.one(b"stats\r\n")]
        # The worker's own expired job comes back to it on its next reserve.
        out += [w1.one(b"reserve-with-timeout 0\r\n"), w1.one(b"stats-job 1\r\n")]
        return out

    py = same_unless_ttr_bug(script, lambda t: b"state: reserved" in t[7] + t[8])
    assert b"state: ready" in py[7] and b"timeouts: 1" in py[7]
    assert b"state: ready" in py[8] and b"delay: 100" in py[8]
    assert py[10] == b"RESERVED 1 1\r\na\r\n" and b"reserves: 2" in py[11]


def test_ttr_expiry_hands_job_to_waiter() -> None:
    def script(s: Session):
        p, w1, w2 = s.conn(), s.conn(), s.conn()
        out = [p.one(b"put 0 0 1 1\r\na\r\n"), w1.one(b"reserve\r\n")]
        start = time.monotonic()
        out.append(w2.one(b"reserve-with-timeout 2\r\n", timeout=3))
        elapsed = time.monotonic() - start
        if out[-1].startswith(b"RESERVED"):
            assert 0.9 <= elapsed < 1.6, (s.name, elapsed)
        out.append(p.one(b"stats-job 1\r\n"))
        return out

    py = same_unless_ttr_bug(script, lambda t: t[2] == b"TIMED_OUT\r\n")
    assert py[2] == b"RESERVED 1 1\r\na\r\n"


# ------------------------------------------------------------------ more edges


PIPELINE_CASES: dict[str, list] = {
    # The reference ends an expired pause lazily when it looks for a job, so a
    # reserve in the same packet as `pause-tube x 0` already sees x unpaused.
    "pause_zero_then_reserve_same_packet": [
        PUT1, b"pause-tube default 100\r\n",
        (b"pause-tube default 0\r\nreserve-with-timeout 0\r\nstats-tube default\r\n", 3),
    ],
    "pause_zero_then_put_and_reserve_same_packet": [
        b"pause-tube default 100\r\n",
        (b"pause-tube default 0\r\nput 0 0 100 1\r\nx\r\nreserve-with-timeout 0\r\n", 3),
    ],
    "many_pipelined_commands": [(b"list-tube-used\r\n" * 300 + b"put 0 0 1 1\r\nx\r\n" * 50, 350)],
    "peek_big_body": [b"put 0 0 1 65535\r\n" + bytes(range(256)) * 255 + b"\xff" * 255 + b"\r\n", b"peek 1\r\n"],
    "kick_delayed_order": [
        b"put 0 5 100 1\r\na\r\n", b"put 0 3 100 1\r\nb\r\n", b"put 0 3 100 1\r\nc\r\n",
        b"put 0 4 100 1\r\nd\r\n", b"peek-delayed\r\n", b"kick 1\r\n", b"peek-delayed\r\n", b"kick 2\r\n",
        b"peek-delayed\r\n", b"peek-ready\r\n", b"stats-job 4\r\n",
    ],
    "delete_own_reserved": [
        b"use t\r\n", PUT1, b"watch t\r\n", b"reserve\r\n", b"delete 1\r\n", b"stats-tube t\r\n",
        b"delete 1\r\n",
    ],
    "watch_many_tubes": [
        *(b"watch w%d\r\n" % i for i in range(40)), b"use w33\r\n", b"put 7 0 100 1\r\na\r\n",
        b"use w2\r\n", b"put 5 0 100 1\r\nb\r\n", b"use w39\r\n", b"put 5 0 100 1\r\nc\r\n",
        b"reserve\r\n", b"reserve\r\n", b"reserve\r\n", b"reserve-with-timeout 0\r\n",
        b"ignore w0\r\n", b"ignore w20\r\n", b"list-tubes-watched\r\n", b"list-tubes\r\n",
        b"stats-tube w5\r\n",
    ],
}


@pytest.mark.parametrize("name", sorted(PIPELINE_CASES))
def test_more_transcripts(name: str) -> None:
    same(steps(*PIPELINE_CASES[name]))


@pytest.mark.parametrize("size", ["0", "1"])
def test_tiny_max_job_size(size: str) -> None:
    same(
        steps(b"put 0 0 1 0\r\n\r\n", b"put 0 0 1 1\r\nx\r\n", (b"put 0 0 1 2\r\nxy\r\nlist-tubes\r\n", 2)),
        "-z", size,
    )


def test_byte_by_byte() -> None:
    """Commands and bodies trickling in one byte per segment."""

    def script(s: Session):
        w = s.conn()
        data = b"use foo\r\nput 1 0 100 3\r\na\rb\r\nlist-tube-used\r\npeek 1\r\nput 0 0 1 1\r\nxyz\r\n"
        for i in range(len(data)):
            w.send(data[i : i + 1])
            time.sleep(0.001)
        return [w.read(6), final_stats(s, w)]

    same(script)


def test_eof_in_the_middle_of_a_put() -> None:
    """A put cut short by the client: its id is used, the producer counted, nothing stored."""

    def script(s: Session):
        a, b = s.conn(), s.conn()
        a.send(b"put 0 0 1 10\r\nabc")
        out = [a.quiet(0.2)]
        s.hang_up(a)
        c = s.conn()
        c.send(b"put 0 0 1 100\r\n" + b"z" * 20)  # JOB_TOO_BIG discard cut short (-z 50)
        out.append(c.quiet(0.2))
        s.hang_up(c)
        d = s.conn()
        d.send(b"use half\r\nput 0 0 1 1\r\n")  # a header, no body, then half-close
        out.append(d.read(1))
        d.shutdown_write()
        out.append(d.read(1))  # <EOF>: the server has closed d
        out += [b.one(PUT1), b.one(b"list-tubes\r\n"), b.one(b"stats\r\n")]
        return out

    same(script, "-z", "50")


def test_eof_with_partial_line() -> None:
    def script(s: Session):
        a, b = s.conn(), s.conn()
        a.send(b"use foo\r\nlist-tube")
        out = [a.read(1)]
        a.shutdown_write()
        out.append(a.read(1))  # <EOF>: the server has closed a
        out.append(b.one(b"stats\r\n"))
        return out

    same(script)


def test_waiters_on_different_tubes() -> None:
    def script(s: Session):
        p, w1, w2 = s.conn(), s.conn(), s.conn()
        out = [w1.one(b"watch a\r\n"), w1.one(b"ignore default\r\n")]
        out += [w2.one(b"watch b\r\n"), w2.one(b"ignore default\r\n")]
        out += [w1.send(b"reserve\r\n").quiet(0.2), w2.send(b"reserve-with-timeout 5\r\n").quiet(0.1)]
        out += [p.one(b"stats-tube a\r\n"), p.one(b"use b\r\n"), p.one(b"put 0 0 100 1\r\nB\r\n")]
        out += [w2.read(1), w1.quiet(0.1), p.one(b"use a\r\n"), p.one(b"put 0 0 100 1\r\nA\r\n")]
        out += [w1.read(1), p.one(b"stats\r\n")]
        return out

    same(script)


def test_release_bury_kick_wake_waiter() -> None:
    def script(s: Session):
        a, w = s.conn(), s.conn()
        out = [a.one(PUT1), a.one(b"reserve\r\n"), w.send(b"reserve\r\n").quiet(0.2)]
        out += [a.one(b"bury 1 5\r\n"), w.quiet(0.1), a.one(b"kick 1\r\n"), w.read(1)]
        out += [w.one(b"release 1 9 0\r\n"), a.one(b"reserve\r\n")]
        out += [w.send(b"reserve-with-timeout 5\r\n").quiet(0.1), a.one(b"release 1 8 0\r\n"), w.read(1)]
        out += [w.one(b"delete 1\r\n"), w.send(b"reserve-with-timeout 5\r\n").quiet(0.1)]
        out += [a.one(b"put 3 100 100 1\r\nq\r\n"), a.one(b"kick-job 2\r\n"), w.read(1)]
        out += [a.one(b"stats-job 1\r\n"), a.one(b"stats-job 2\r\n"), a.one(b"stats\r\n")]
        return out

    same(script)


# ------------------------------------------------ jobs handed to a blocked waiter
#
# beanstalkd 1.12's enqueue_job offers each job to the waiters as it queues
# it, so when one command makes several jobs ready at once (kick, a closing
# connection), a waiter gets the *first* of them, not the best.  The scripts
# wait until the server counts the waiter (current-waiting) instead of
# sleeping; the number of polls varies, hence cmd-stats is masked.


def _wait_until_waiting(observer: Wire, count: int = 1) -> None:
    wait_for(observer, b"stats\r\n", b"\ncurrent-waiting: %d\n" % count)


def _after_waiter_served(s: Session, p: Wire, w: Wire) -> list:
    return [
        w.read(1), w.one(b"reserve-with-timeout 0\r\n"), p.one(b"stats-job 1\r\n"),
        p.one(b"stats-job 2\r\n"), p.one(b"stats-tube default\r\n"), p.one(b"stats\r\n"),
    ]


def test_kick_delayed_first_kicked_goes_to_waiter() -> None:
    """Delayed pri 1023 (put first) and pri 1; `kick 2`: the waiter gets the pri-1023 job."""

    def script(s: Session):
        p, w = s.conn(), s.conn()
        out = [p.one(b"put 1023 100 100 1\r\na\r\n"), p.one(b"put 1 100 100 1\r\nb\r\n")]
        out.append(w.send(b"reserve-with-timeout 5\r\n").quiet(0.05))
        _wait_until_waiting(p)
        out.append(p.one(b"kick 2\r\n"))
        return out + _after_waiter_served(s, p, w)

    py = same(script, mask_keys=("cmd-stats",))
    assert py[4] == [b"RESERVED 1 1\r\na\r\n"], py


def test_kick_buried_first_kicked_goes_to_waiter() -> None:
    """Buried first pri 1023, then pri 1 (by another connection); `kick 2`: the
    waiter gets the first-buried (pri 1023) job."""

    def script(s: Session):
        p, b, w = s.conn(), s.conn(), s.conn()
        out = [p.one(b"put 1023 0 100 1\r\na\r\n"), p.one(b"put 1 0 100 1\r\nb\r\n")]
        out += [b.one(b"reserve\r\n"), b.one(b"reserve\r\n")]  # job 2 (pri 1), then job 1
        out += [b.one(b"bury 1 1023\r\n"), b.one(b"bury 2 1\r\n"), p.one(b"peek-buried\r\n")]
        out.append(w.send(b"reserve-with-timeout 5\r\n").quiet(0.05))
        _wait_until_waiting(p)
        out.append(p.one(b"kick 2\r\n"))
        return out + _after_waiter_served(s, p, w)

    py = same(script, mask_keys=("cmd-stats",))
    assert py[9] == [b"RESERVED 1 1\r\na\r\n"], py


@pytest.mark.parametrize("order", ["worse-first", "better-first"])
def test_close_with_two_reserved_jobs_and_a_waiter(order: str) -> None:
    """A connection holding two reserved jobs (pri 1023 and pri 1) closes while
    another client waits: which job does the waiter get?"""

    def script(s: Session):
        p, b, w = s.conn(), s.conn(), s.conn()
        out = [p.one(b"put 1023 0 100 1\r\na\r\n"), p.one(b"put 1 0 100 1\r\nb\r\n")]
        first, second = (b"1", b"2") if order == "worse-first" else (b"2", b"1")
        out += [b.one(b"reserve-job " + first + b"\r\n"), b.one(b"reserve-job " + second + b"\r\n")]
        out.append(w.send(b"reserve-with-timeout 5\r\n").quiet(0.05))
        _wait_until_waiting(p)
        b.close()
        return out + _after_waiter_served(s, p, w)

    py = same(script, mask_keys=("cmd-stats",))
    # beanstalkd 1.12 re-queues the reserved jobs oldest reservation first.
    first_job = b"RESERVED 1 1\r\na\r\n" if order == "worse-first" else b"RESERVED 2 1\r\nb\r\n"
    assert py[5] == [first_job], py


# --------------------------------------------------------- random sessions (fuzz)
#
# Seeded random command streams on three connections: valid and malformed
# commands of every kind, none of which blocks, each with a known number of
# replies.  TTRs are long and delays are 0 or very long, so nothing depends on
# timing; only `age` is masked in case a run crosses a second.

_TUBES = [b"default", b"a", b"b", b"c-1", b"d_2"]
_BAD_TUBES = [b"-x", b"a b", b"x*", b"t" * 201, b""]


def _random_command(rng, max_id: int) -> tuple[bytes, int]:
    """One command line (with any body) and the number of replies it gets."""
    job = rng.choice([rng.randint(0, max_id + 2), rng.randint(1, max(1, max_id))])
    tube = rng.choice(_TUBES) if rng.random() < 0.9 else rng.choice(_BAD_TUBES)
    pri = rng.choice([0, 1, 1023, 1024, 4294967295, rng.randint(0, 3000)])
    delay = rng.choice([0, 0, 0, 1000])
    kind = rng.randrange(24)
    if kind < 5:
        body = bytes(rng.choice(b"ab\r\n\x00 ") for _ in range(rng.randint(0, 12)))
        ttr = rng.choice([5, 100])  # ttr 0 (= 1 s) could expire mid-run
        return b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body), 1
    if kind == 5:
        return rng.choice([b"put 0 0 100 2\r\nabcd\r\n", b"put 0 0 100 0\r\nzz\r\n"]), 2
    if kind == 6:
        return rng.choice([b"put 0 0 1\r\n", b"put -1 0 1 1\r\n", b"put 0 0 1 1 \r\n", b"put 0 0 1 1x\r\n"]), 1
    line = rng.choice(
        [
            b"reserve-with-timeout 0",
            b"reserve-job %d" % job,
            b"delete %d" % job,
            b"release %d %d %d" % (job, pri, delay),
            b"bury %d %d" % (job, pri),
            b"touch %d" % job,
            b"kick %d" % rng.choice([0, 1, 2, 10]),
            b"kick-job %d" % job,
            b"peek %d" % job,
            b"peek-ready",
            b"peek-delayed",
            b"peek-buried",
            b"stats-job %d" % job,
            b"stats-tube " + tube,
            b"list-tubes",
            b"list-tube-used",
            b"list-tubes-watched",
            b"use " + tube,
            b"watch " + tube,
            b"ignore " + tube,
            b"pause-tube %s %d" % (tube, rng.choice([0, 1000])),
            b"stats",
        ]
    )
    roll = rng.random()
    if roll < 0.06:
        line += b" "
    elif roll < 0.09:
        line += b"x"
    elif roll < 0.11:
        pos = rng.randrange(len(line) + 1)
        line = line[:pos] + b"\x00" + line[pos:]
    elif roll < 0.14 and len(line) > 1:
        pos = rng.randrange(len(line))
        line = line[:pos] + line[pos + 1 :]
    return line + b"\r\n", 1


@pytest.mark.parametrize("seed", range(int(os.environ.get("FUZZ_SEEDS", "4"))))
def test_random_session(seed: int) -> None:
    """Three connections issue random commands; a fourth blocks in reserves now and then."""
    import random

    def script(s: Session):
        rng = random.Random(seed)
        conns = [s.conn() for _ in range(3)]
        waiter, waiting = s.conn(), False
        out = []
        max_id = 0
        for _ in range(int(os.environ.get("FUZZ_STEPS", "300"))):
            i = rng.randrange(3)
            if rng.random() < 0.01:
                out.append((i, b"quit", conns[i].ask(b"quit\r\n")))
                conns[i] = s.conn()
                continue
            if not waiting and rng.random() < 0.05:
                line = b"watch " + rng.choice(_TUBES) + b"\r\n"
                out.append(("w", line, waiter.ask(line)))
                before = _reserve_count(conns[0])
                waiter.send(rng.choice([b"reserve\r\n", b"reserve-with-timeout 1000\r\n"]))
                # Unrecorded polls until the server has run the reserve (their
                # number varies, hence cmd-stats is masked below).
                deadline = time.monotonic() + 3
                while _reserve_count(conns[0]) == before:
                    assert time.monotonic() < deadline, "the waiter's reserve never ran"
                    time.sleep(0.002)
                waiting = True
            else:
                data, count = _random_command(rng, max_id)
                replies = conns[i].ask(data, count)
                out.append((i, data, replies))
                for reply in replies:
                    if reply.startswith(b"INSERTED "):
                        max_id = int(reply.split()[1])
            if waiting:
                # The server state says whether the waiter was served: ask.
                stats = conns[0].one(b"stats\r\n")
                out.append(stats)
                if b"\ncurrent-waiting: 0\n" in stats:
                    out.append(("w", waiter.read(1)))
                    waiting = False
        out.append(conns[0].one(b"stats\r\n"))
        return out

    same(script, mask_keys=("age", "cmd-stats"))


def _reserve_count(w: Wire) -> int:
    fields = yaml_fields(w.one(b"stats\r\n"))
    return int(fields["cmd-reserve"]) + int(fields["cmd-reserve-with-timeout"])
