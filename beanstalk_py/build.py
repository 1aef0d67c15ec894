"""Which build is running: the hot modules compiled with mypyc, or pure Python.

``setup.py`` compiles :data:`HOT_MODULES` with mypyc when it can (a C
compiler, the Python headers and mypy at build time) and otherwise installs
the same modules as plain Python; the source is the same either way.  What
was installed is read here from how the modules are loaded, not from a flag
written at build time, so a copy of the tree run in place says "pure" and an
in-place ``build_ext`` says "compiled".  ``beanstalk-py -V`` prints it at
start-up and ``-v`` on its second line (the benchmark report reads it there).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

# The modules setup.py hands to mypyc (setup.py reads this list from here).
# Chosen by measurement: bench/README.md ("Compiled build") has the figures.
HOT_MODULES = [
    "protocol",
    "conn",
    "dispatch",
    "engine",
    "job",
    "tube",
    "session",
    "swaplist",
    "stats",
    "epoll_loop",
    "ready",
    "binlog.format",
]


def _is_extension(module: str) -> bool:
    try:
        spec = importlib.util.find_spec(f"{__package__}.{module}")
    except ImportError:
        return False
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


COMPILED_MODULES = [m for m in HOT_MODULES if _is_extension(m)]
COMPILED = bool(COMPILED_MODULES)
BUILD = "compiled" if COMPILED else "pure"


def describe() -> str:
    """One line for logs and ``-v``: ``build compiled (mypyc: protocol, conn, ...)`` or ``build pure``."""
    if not COMPILED:
        return "build pure"
    if len(COMPILED_MODULES) == len(HOT_MODULES):
        return "build compiled (mypyc)"
    return f"build compiled (mypyc: {', '.join(COMPILED_MODULES)})"
