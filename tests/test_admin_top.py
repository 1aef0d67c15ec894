"""`admin top` in a real terminal (tmux): the figures change as jobs are put,
the view fits a small window, and q quits with the terminal restored.  Also
its batch mode (stdout not a terminal) against both servers."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable

import pytest

from conftest import Daemon, start_beanstalk_py
from setup_conn import daemon  # the fixture, run against both servers

pytestmark = pytest.mark.daemon

TMUX = shutil.which("tmux")




def put_jobs(daemon: Daemon, tube: bytes, count: int) -> None:
    with daemon.connect() as sock:
        sock.sendall(b"use " + tube + b"\r\n" + b"put 0 0 60 1\r\nx\r\n" * count + b"quit\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.count(b"INSERTED") == count


class Tmux:
    """One tmux server of our own (-L), so no user session is ever touched."""

    def __init__(self, name: str) -> None:
        assert TMUX is not None
        self.name = name
        self.base = [TMUX, "-L", name, "-f", "/dev/null"]

    def __call__(self, *args: str) -> str:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def capture(self, history: bool = False) -> str:
        """The visible pane; with ``history``, the lines scrolled off as well (tmux's
        "Pane is dead" line, written below the last row, scrolls the first one off)."""
        return self("capture-pane", "-p", "-t", self.name, *(["-S", "-200"] if history else []))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0, history: bool = False) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture(history)
            if predicate(screen):
                return screen
            assert time.monotonic() < deadline, f"screen never matched:\n{screen}"
            time.sleep(0.1)

    def pane(self, fmt: str) -> str:
        return self("display-message", "-p", "-t", self.name, fmt).strip()

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def total_jobs(screen: str) -> int:
    match = re.search(r"jobs: (\d+) total", screen)
    assert match, screen
    return int(match.group(1))


def put_rate(screen: str) -> float:
    match = re.search(r"per second: put ([\d.]+|-) ", screen)
    assert match, screen
    return -1.0 if match.group(1) == "-" else float(match.group(1))


def tube_row(screen: str, tube: str) -> list[str]:
    for line in screen.splitlines():
        if line.startswith(tube + " "):
            return line.split()
    raise AssertionError(f"no row for {tube}:\n{screen}")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")
def test_top_in_tmux(daemon: Daemon) -> None:
    name = f"bspy-admin-top-{daemon.port}"
    tmux = Tmux(name)
    top = shlex.join([sys.executable, "-m", "beanstalk_py", "admin", "--addr", f"127.0.0.1:{daemon.port}", "top"])
    command = f"{top}; echo top exited $?"  # tmux 3.3's #{pane_dead_status} stays empty: say it
    try:
        tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", command,
             ";", "set-option", "-t", name, "remain-on-exit", "on")
        screen = tmux.wait_for(lambda s: "TUBE" in s and "per second" in s)
        assert f"127.0.0.1:{daemon.port}  pid {daemon.proc.pid}  version 1.12" in screen
        assert total_jobs(screen) == 0
        assert "connections: 0 (" in screen  # its own connection is not counted

        put_jobs(daemon, b"mail", 40)
        screen = tmux.wait_for(lambda s: "mail" in s and total_jobs(s) == 40 and put_rate(s) > 0)
        row = tube_row(screen, "mail")  # TUBE READY RESERVED DELAYED BURIED PUT/s DEL/s TOTAL ...
        assert row[1] == "40" and row[7] == "40"
        # 40 puts over the second or so between two refreshes (the tube's rate from its total-jobs).
        assert 0 < put_rate(screen) <= 80 and 0 < float(row[5]) <= 80

        put_jobs(daemon, b"other", 5)
        screen = tmux.wait_for(lambda s: "other" in s and total_jobs(s) == 45)
        assert tube_row(screen, "other")[1] == "5"
        screen = tmux.wait_for(lambda s: put_rate(s) == 0.0)  # a quiet second later
        assert tube_row(screen, "mail")[5] == "0.0"

        # A small window: columns that do not fit are dropped, tubes that do not fit are counted.
        tmux("resize-window", "-t", name, "-x", "50", "-y", "8")
        screen = tmux.wait_for(lambda s: "more tubes" in s)
        lines = screen.splitlines()
        assert all(len(line) <= 50 for line in lines)
        assert lines[5].split()[:2] == ["TUBE", "READY"] and "WATCHING" not in screen
        tmux("resize-window", "-t", name, "-x", "10", "-y", "2")
        tmux.wait_for(lambda s: "window too" in s)
        tmux("resize-window", "-t", name, "-x", "120", "-y", "40")
        tmux.wait_for(lambda s: "WATCHING" in s)

        tmux("send-keys", "-t", name, "q")
        deadline = time.monotonic() + 10
        while tmux.pane("#{pane_dead}") != "1":
            assert time.monotonic() < deadline, tmux.capture()
            time.sleep(0.1)
        screen = tmux.capture(history=True)
        assert "top exited 0" in screen
        assert "TUBE" not in screen  # the alternate screen is gone: the terminal is restored
    finally:
        tmux.kill()


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")
def test_top_quits_on_ctrl_c_and_restores_the_terminal() -> None:
    daemon = start_beanstalk_py()
    name = f"bspy-admin-top-c-{daemon.port}"
    tmux = Tmux(name)
    top = shlex.join([sys.executable, "-m", "beanstalk_py", "admin", "--addr", f"127.0.0.1:{daemon.port}", "top"])
    # After top: is the terminal back in canonical mode with echo?  stty prints its settings.
    # The shell traps SIGINT (a trap with a command is reset for children) so it lives on to report.
    command = f"trap true INT; {top}; echo status=$?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo -e -icanon -e -echo"
    try:
        tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", command,
             ";", "set-option", "-t", name, "remain-on-exit", "on")
        tmux.wait_for(lambda s: "TUBE" in s)
        tmux("send-keys", "-t", name, "C-c")
        screen = tmux.wait_for(lambda s: "status=" in s, history=True)
        assert "status=0" in screen and "TUBE" not in screen
        assert screen.split("status=0", 1)[1].split() [:2] == ["icanon", "echo"]
    finally:
        tmux.kill()
        daemon.stop()


def test_top_batch_mode(daemon: Daemon) -> None:
    """Not a terminal: plain frames, one a refresh, every tube, no escape codes."""
    put_jobs(daemon, b"mail", 3)
    result = subprocess.run(
        [sys.executable, "-m", "beanstalk_py", "admin", "--addr", f"127.0.0.1:{daemon.port}",
         "top", "-n", "2", "-d", "0.2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    assert "\x1b" not in result.stdout
    text = result.stdout
    assert text.count("per second:") == 2 and text.count("jobs: 3 total, 3 ready (3 urgent)") == 2
    assert "per second: put -  reserve -  delete -" in text  # no rates before a second sample
    assert "per second: put 0.0  reserve 0.0  delete 0.0" in text
    header = "TUBE     READY  RESERVED  DELAYED  BURIED  PUT/s  DEL/s  TOTAL  URGENT  PAUSE  LEFT  WAITING  USING  WATCHING"
    assert text.count(header) == 2
    assert "mail         3         0        0       0    0.0    0.0      3       3      0     0        0      0         0" in text
