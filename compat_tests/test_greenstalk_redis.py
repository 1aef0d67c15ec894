"""greenstalk's suite (test_greenstalk.py) against a front end on a Redis store.

The tests are test_greenstalk.py's own, imported (pytest collects them here
a second time), not copied.  Here every daemon they start is a fresh
``beanstalk-py --store redis://...`` on this module's redis-server, emptied
before each: the ``server`` fixture is overridden, and an autouse fixture
swaps the ``start_beanstalk_py`` and ``Daemon`` test_greenstalk.py calls for
ones that add ``--store`` (the ``-z`` test and the unix-socket test run on
the store too).  Skipped where redis-server is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import conftest  # noqa: E402
import test_greenstalk as gs  # noqa: E402
from redis_rig import RedisServer, redis_server, store_url  # noqa: E402,F401  (fixtures)
from test_greenstalk import *  # noqa: E402,F401,F403  (the tests, collected again here)


@pytest.fixture(autouse=True)
def _on_the_store(store_url: str) -> Iterator[None]:
    """test_greenstalk's own daemons get ``--store`` too."""

    def start_beanstalk_py(*extra: str) -> conftest.Daemon:
        return conftest.start_beanstalk_py("--store", store_url, *extra)

    def daemon(argv: list[str], **kwargs) -> conftest.Daemon:
        if argv[1:3] == ["-m", "beanstalk_py"]:
            argv = [*argv, "--store", store_url]
        return conftest.Daemon(argv, **kwargs)

    saved = gs.start_beanstalk_py, gs.Daemon
    gs.start_beanstalk_py, gs.Daemon = start_beanstalk_py, daemon
    try:
        yield
    finally:
        gs.start_beanstalk_py, gs.Daemon = saved


@pytest.fixture
def server(store_url: str) -> Iterator[conftest.Daemon]:
    """A fresh front end on the emptied store, for one test."""
    daemon = conftest.start_beanstalk_py("--store", store_url)
    try:
        yield daemon
    finally:
        daemon.stop()
