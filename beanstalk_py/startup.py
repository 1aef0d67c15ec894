"""Start-up: early signals, and serving clients while trio is still being imported.

Measured on the 2-core test machine: ``import trio`` takes 120-160 ms, and
clients' own test suites start the daemon, sleep 0.1 s and then time a
1-second reserve with 50 ms of tolerance (greenstalk), so a first reply
that waits for trio fails them.  So once the socket is bound and the store
built, the epoll driver serves clients on the main thread while a helper
thread imports trio (and the modules that need it); then the same loop, with
its connections, runs under trio.  This is start-up's one thread outside
``trio.to_thread``: there is no trio yet to ask for one.

Signals that arrive before the server's signal task takes over are only
noted (:class:`Startup` installs the handlers); start-up acts on them
between passes, where an exception is safe.  A handler that raised itself
could land anywhere, and was once seen landing in an importlib callback,
where Python prints the exception and drops it: the daemon then ran on
after SIGTERM.
"""

from __future__ import annotations

import importlib
import resource
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:
    from .epoll_loop import EpollLoop
    from .store import Store

# While the import thread runs, the main thread gets the GIL back this soon
# (default 5 ms) when a client's bytes arrive.
_SWITCH_INTERVAL_S = 0.0005
# Descriptors left free for the imports while serving early.
_FDS_FOR_IMPORTS = 32


class Stopped(Exception):
    """SIGTERM or SIGINT arrived during start-up: exit 0 without serving on."""


class Startup:
    """What happens between exec and ``trio.run``, in one place."""

    def __init__(self) -> None:
        self.stop = False
        self.drain = False
        self._store: Optional["Store"] = None

    def install_signal_handlers(self) -> None:
        """Until the server's signal task runs, an early SIGUSR1 must not kill the
        process (its default action) and SIGTERM/SIGINT exit cleanly (status 0)."""
        for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.note)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def note(self, signum: int, _frame: Optional[FrameType]) -> None:
        if signum == signal.SIGUSR1:
            self.drain = True  # one way, as in beanstalkd
            if self._store is not None:
                self._store.drain()
        else:
            self.stop = True

    def attach(self, store: "Store") -> None:
        """The store exists: a SIGUSR1 from now on (or already seen) drains it."""
        self._store = store
        if self.drain:
            store.drain()

    def check(self) -> None:
        """Raise :class:`Stopped` if SIGTERM/SIGINT arrived."""
        if self.stop:
            raise Stopped

    def serve_while_importing(self, loop: "EpollLoop", modules: Iterable[str]) -> None:
        """Import ``modules`` on a helper thread while ``loop`` serves on this one."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            loop.fd_ceiling = max(soft - _FDS_FOR_IMPORTS, soft // 2)
        failure: list[BaseException] = []
        done = threading.Event()

        def import_all() -> None:
            try:
                for name in modules:
                    importlib.import_module(name)
            except BaseException as exc:  # re-raised on the main thread
                failure.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=import_all, name="beanstalk-py-import", daemon=True)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        loop.dispatcher.open_spare()
        thread.start()
        try:
            loop.serve_while(lambda: not done.is_set(), self.check)
        finally:
            thread.join()
            sys.setswitchinterval(switch)
            loop.dispatcher.close_spare()  # the server holds its own
        if failure:
            raise failure[0]
        self.check()
