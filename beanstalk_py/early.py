"""Serve clients while trio is still being imported.

Measured on the 2-core test machine: beanstalk-py answered its first command
about 150 ms after it was started (beanstalkd: 3 ms), and ``import trio``
took 120-160 ms of that.  Clients' own test suites start the daemon, sleep
0.1 s and then time a 1-second reserve with 50 ms of tolerance (greenstalk),
so a slow first reply fails them.

So, once the socket is bound and the engine built, the epoll loop answers
clients between module imports: a finder at the front of ``sys.meta_path``
is asked about every module trio loads (more than a hundred) and runs one
non-blocking :meth:`~.epoll_loop.EpollLoop.serve_ready` pass each time.  The
longest gap between two passes is one module's own import (about 10 ms), and
the same loop, with its connections, then runs under trio.
"""

from __future__ import annotations

import importlib
import sys
from importlib.abc import MetaPathFinder
from typing import Callable, Iterable


class _ServeBetweenImports(MetaPathFinder):
    """Runs ``serve`` whenever a module is about to be looked for; finds nothing itself."""

    def __init__(self, serve: Callable[[], None]) -> None:
        self.serve = serve
        self.serving = False

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if not self.serving:  # serving may import (an error report): not re-entered
            self.serving = True
            try:
                self.serve()
            finally:
                self.serving = False
        return None  # the normal finders do the import


def import_while_serving(serve: Callable[[], None], modules: Iterable[str]) -> None:
    """Import ``modules`` (in order), calling ``serve`` between module imports."""
    finder = _ServeBetweenImports(serve)
    sys.meta_path.insert(0, finder)
    try:
        for name in modules:
            importlib.import_module(name)
            serve()
    finally:
        sys.meta_path.remove(finder)
