"""``admin top``: a live view of the server and its tubes, refreshed every second.

Plain ANSI escapes (alternate screen, cursor home, erase line) and cbreak
mode, no curses: every terminal emulator and tmux understand them, and the
terminal is given back as it was on ``q``, Ctrl-C or SIGTERM.  Rates are
differences of the server's cumulative counters between two samples
(``cmd-put``, ``cmd-reserve`` + ``cmd-reserve-with-timeout``, ``cmd-delete``;
per tube ``total-jobs`` and ``cmd-delete``), over the time between them.
When stdout is not a terminal it prints plain frames one after another, as
``top -b`` does.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import termios
import time
import tty
from dataclasses import dataclass
from types import FrameType
from typing import Any, Optional

from .client import EXIT_OK, AdminError, CannotConnect, Client, describe
from .commands import Context, tube_rows
from .render import TUBE_COLUMNS, Column, duration, table

HEADER_LINES = 5  # title, jobs, connections, rates, blank
MIN_WIDTH, MIN_HEIGHT = 20, 3


@dataclass
class Sample:
    at: float  # monotonic seconds
    stats: dict[str, str]
    tubes: list[tuple[str, dict[str, str]]]
    names: frozenset[str]  # every tube, shown or not

    @property
    def tube_count(self) -> int:
        return len(self.names)


def rate(cur: dict[str, str], prev: Optional[dict[str, str]], keys: tuple[str, ...], seconds: float) -> Optional[float]:
    """Per-second growth of the sum of ``keys``; None without a usable earlier sample."""
    if prev is None or seconds <= 0:
        return None
    try:
        now = sum(int(cur[key]) for key in keys if key in cur)
        before = sum(int(prev[key]) for key in keys if key in prev)
    except ValueError:
        return None
    if now < before:
        return None  # the daemon restarted: counters began again
    return (now - before) / seconds


def fmt_rate(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _minus_self(stats: dict[str, str], key: str) -> str:
    value = stats.get(key, "?")
    return str(max(0, int(value) - 1)) if value.isdigit() else value


class Top:
    """Samples the server and renders frames; :meth:`run` drives the screen."""

    def __init__(self, ctx: Context, interval: float = 1.0, iterations: Optional[int] = None) -> None:
        self.ctx = ctx
        self.interval = interval
        self.iterations = iterations
        self.client: Optional[Client] = None
        self.prev: Optional[Sample] = None
        self.cur: Optional[Sample] = None
        self.error: Optional[str] = None

    def sample(self, tube_limit: Optional[int]) -> None:
        """One sample; a lost connection is shown and retried on the next tick."""
        try:
            if self.client is None:
                self.client = self.ctx.client()
            stats = self.client.stats()
            rows, names = tube_rows(self.client, tube_limit)
        except AdminError as exc:
            self.error = str(exc)
            if self.client is not None:
                self.client.close()
                self.client = None
            return
        self.error = None
        self.prev, self.cur = self.cur, Sample(time.monotonic(), stats, rows, frozenset(names))

    def columns(self) -> list[Column]:
        prev, cur = self.prev, self.cur
        prev_tubes = dict(prev.tubes) if prev is not None else {}
        seconds = cur.at - prev.at if prev is not None and cur is not None else 0.0

        def before(tube: str) -> Optional[dict[str, str]]:
            """The tube's previous counters; a tube created since counted from zero."""
            if prev is None:
                return None
            if tube not in prev.names:
                return {}
            return prev_tubes.get(tube)  # None: it was there but not shown, so not sampled

        def tube_rate(keys: tuple[str, ...]) -> Column:
            title = "PUT/s" if keys == ("total-jobs",) else "DEL/s"
            return Column(title, lambda tube, stats: fmt_rate(rate(stats, before(tube), keys, seconds)))

        first, rest = TUBE_COLUMNS[:5], TUBE_COLUMNS[5:]
        return [*first, tube_rate(("total-jobs",)), tube_rate(("cmd-delete",)),
                Column("TOTAL", lambda _tube, stats: stats.get("total-jobs", "?")), *rest]

    def frame(self, width: Optional[int], height: Optional[int]) -> list[str]:
        """The screen as lines; ``width``/``height`` None means unbounded (batch mode)."""
        if width is not None and height is not None and (width < MIN_WIDTH or height < MIN_HEIGHT):
            return [f"window too small ({width}x{height})"[: max(1, width)]]
        where = describe(self.ctx.address)
        lines: list[str] = []
        cur = self.cur
        if cur is None:
            lines.append(f"beanstalk-py admin top  {self.error or 'connecting...'}")
            return [line[:width] for line in lines] if width else lines
        stats = cur.stats
        prev_stats = self.prev.stats if self.prev is not None else None
        seconds = cur.at - self.prev.at if self.prev is not None else 0.0
        get = stats.get
        clock = time.strftime("%H:%M:%S")
        uptime = get("uptime", "0")
        lines.append(
            f"{where}  pid {get('pid', '?')}  version {get('version', '?')}  "
            f"up {duration(int(uptime) if uptime.isdigit() else 0)}  {clock}"
            + ("  DRAINING" if get("draining") == "true" else "") + "   q: quit"
        )
        lines.append(
            f"jobs: {get('total-jobs', '?')} total, {get('current-jobs-ready', '?')} ready "
            f"({get('current-jobs-urgent', '?')} urgent), {get('current-jobs-reserved', '?')} reserved, "
            f"{get('current-jobs-delayed', '?')} delayed, {get('current-jobs-buried', '?')} buried; "
            f"tubes: {get('current-tubes', '?')}"
        )
        lines.append(
            f"connections: {_minus_self(stats, 'current-connections')} "
            f"({get('current-producers', '?')} producers, {get('current-workers', '?')} workers, "
            f"{get('current-waiting', '?')} waiting)"
        )
        lines.append(
            "per second: "
            f"put {fmt_rate(rate(stats, prev_stats, ('cmd-put',), seconds))}  "
            f"reserve {fmt_rate(rate(stats, prev_stats, ('cmd-reserve', 'cmd-reserve-with-timeout'), seconds))}  "
            f"delete {fmt_rate(rate(stats, prev_stats, ('cmd-delete',), seconds))}"
        )
        if self.error is not None:
            lines[-1] = f"{self.error}; retrying every {self.interval:g} s"
        lines.append("")
        rows = cur.tubes
        hidden = cur.tube_count - len(rows)
        if height is not None:
            room = height - len(lines) - 1  # the table's title line
            if room < 1:
                return [line[:width] for line in lines[:height]]
            if hidden > 0 or len(rows) > room:
                rows = rows[: max(0, room - 1)]
                hidden = cur.tube_count - len(rows)
        lines.extend(table(self.columns(), rows, width=width, name_width=24 if width else None))
        if hidden > 0:
            lines.append(f"... {hidden} more tubes (a taller window shows more)")
        if width is not None:
            lines = [line[:width] for line in lines]
        return lines[:height] if height is not None else lines

    def tube_limit(self, height: Optional[int]) -> Optional[int]:
        """Only the tubes that fit are asked for: 10,000 tubes stay cheap."""
        if height is None:
            return None
        return max(0, height - HEADER_LINES - 1)

    def run(self) -> int:
        # Connect first, so a daemon that is not there fails with exit 3 before the screen changes.
        self.client = self.ctx.client()
        if sys.stdout.isatty():
            with Screen() as screen:
                return self._interactive(screen)
        return self._batch()

    def _batch(self) -> int:
        count = 0
        try:
            while True:
                started = time.monotonic()
                self.sample(None)
                if self.error is not None and self.cur is None:
                    raise CannotConnect(self.error)
                if count:
                    print()
                print("\n".join(self.frame(None, None)), flush=True)
                count += 1
                if self.iterations is not None and count >= self.iterations:
                    return EXIT_OK
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            if self.client is not None:
                self.client.close()

    def _interactive(self, screen: "Screen") -> int:
        count = 0
        try:
            while True:
                width, height = screen.size()
                self.sample(self.tube_limit(height))
                screen.draw(self.frame(width, height))
                count += 1
                if self.iterations is not None and count >= self.iterations:
                    return EXIT_OK
                deadline = time.monotonic() + self.interval
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    event = screen.wait(left)
                    if event == "quit":
                        return EXIT_OK
                    if event == "resize":
                        width, height = screen.size()
                        screen.draw(self.frame(width, height))
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            if self.client is not None:
                self.client.close()


class Screen:
    """The terminal in cbreak mode on the alternate screen; restored on exit."""

    def __init__(self) -> None:
        self.out = sys.stdout
        self.fd_in: Optional[int] = sys.stdin.fileno() if sys.stdin.isatty() else None
        self._saved: Optional[list[Any]] = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> "Screen":
        if self.fd_in is not None:
            self._saved = termios.tcgetattr(self.fd_in)
            tty.setcbreak(self.fd_in)  # keys one at a time, no echo; Ctrl-C still interrupts
        for signum, handler in ((signal.SIGWINCH, self._on_winch), (signal.SIGTERM, self._on_term)):
            self._old_handlers[signum] = signal.signal(signum, handler)
        self.out.write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")
        self.out.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.write("\x1b[?25h\x1b[?1049l")
        self.out.flush()
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        if self.fd_in is not None and self._saved is not None:
            termios.tcsetattr(self.fd_in, termios.TCSADRAIN, self._saved)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _on_winch(self, signum: int, frame: Optional[FrameType]) -> None:
        try:
            os.write(self._wake_w, b"w")
        except OSError:
            pass  # a resize is already pending

    def _on_term(self, signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt  # unwinds through __exit__, which restores the terminal

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.out.fileno())
            return size.columns, size.lines
        except OSError:
            return 80, 24

    def draw(self, lines: list[str]) -> None:
        self.out.write("\x1b[H" + "\x1b[K\r\n".join(lines) + "\x1b[K\x1b[J")
        self.out.flush()

    def wait(self, timeout: float) -> Optional[str]:
        """"quit", "resize" or None (the timeout passed)."""
        watched = [self._wake_r] + ([self.fd_in] if self.fd_in is not None else [])
        ready, _, _ = select.select(watched, [], [], timeout)
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
            return "resize"
        if self.fd_in is not None and self.fd_in in ready:
            keys = os.read(self.fd_in, 64)
            if not keys:
                self.fd_in = None  # stdin closed: keep running, stop listening
            elif b"q" in keys or b"Q" in keys:
                return "quit"
        return None


def cmd_top(ctx: Context, args: argparse.Namespace) -> int:
    return Top(ctx, interval=args.interval, iterations=args.iterations).run()
