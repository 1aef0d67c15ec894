"""The daemon's log lines: warnings on stderr, prefixed with the program name."""

from __future__ import annotations

import sys
from typing import Optional, TextIO

PROG = "beanstalk-py"


def warn(message: str, stream: Optional[TextIO] = None) -> None:
    print(f"{PROG}: {message}", file=stream or sys.stderr, flush=True)


def report_internal_error(fd: int) -> None:
    """Log an unexpected exception while serving one connection (which is then closed)."""
    import traceback

    warn(f"internal error on connection {fd}; closing it:\n{traceback.format_exc()}")
