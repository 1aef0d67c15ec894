"""``--http``: the socket, bound at start-up, then served by hypercorn's trio worker.

The socket is bound (and the token file read) in start-up with the other
listeners, before ``-u`` drops privileges, so a bad address, a refused one
(the loopback rule, :mod:`.auth`) or a bad token file stops the daemon
before it serves anything.  Starlette and hypercorn are imported only once
the server runs, in a worker thread (about 200 ms of imports: the beanstalk
clients are served meanwhile), and the listener is a sibling task in the
server's nursery, so a request's work runs between the beanstalk driver's
passes on the same thread.
"""

from __future__ import annotations

import importlib
import socket
import traceback
from typing import TYPE_CHECKING, Optional, cast

from ..listen import describe, split_host_port, tcp_listener, unix_listener
from ..log import warn
from . import MISSING_EXTRA, extra_installed
from .auth import HttpConfigError, Tokens, check_bind, check_bound, load_tokens
from .settings import HttpSettings

if TYPE_CHECKING:  # trio is imported after start-up binds (see main.py)
    import trio

    from ..dispatch import Dispatcher

# A connection that has sent no complete request for this long is closed
# (hypercorn's keep-alive timeout also covers a slow request head).
IDLE_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0  # no byte from a client for this long: closed


class HttpListener:
    """A bound ``--http`` socket and its tokens, served by :meth:`run` once trio runs."""

    def __init__(self, sock: socket.socket, tokens: Optional[Tokens], settings: HttpSettings) -> None:
        self.sock = sock
        self.tokens = tokens
        self.settings = settings
        self.unix = sock.family == socket.AF_UNIX
        self.address = describe(sock)

    async def run(self, dispatcher: "Dispatcher", *, task_status: "trio.TaskStatus[list[str]]") -> None:
        """Serve until cancelled (``nursery.start``).  A failure here is logged and
        leaves the beanstalk port serving: the operations plane must never take
        the queue down."""
        import trio

        started = False

        def report(binds: Optional[list[str]] = None) -> None:
            nonlocal started
            started = True
            task_status.started(binds or [])

        class _Status(trio.TaskStatus[list[str]]):
            def started(self, value: Optional[list[str]] = None) -> None:
                report(value)

        try:
            await trio.to_thread.run_sync(import_stack)
            from hypercorn.config import Config
            from hypercorn.trio import serve
            from hypercorn.typing import Framework

            from .api import Plane
            from .app import make_app

            config = Config()
            config.bind = [f"fd://{self.sock.detach()}"]
            config.loglevel = "WARNING"  # our own line says where it listens
            config.accesslog = None
            config.include_server_header = False
            config.keep_alive_timeout = IDLE_TIMEOUT_S
            config.read_timeout = int(READ_TIMEOUT_S)
            plane = Plane(dispatcher)
            app = make_app(plane, self.tokens, "unix socket" if self.unix else "loopback",
                           check_host=not self.unix, settings=self.settings)
            auth = f"{len(self.tokens)} bearer tokens" if self.tokens else "no tokens: loopback only"
            warn(f"http: serving on {self.address} ({auth})")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(plane.background)  # samples for rates; ends with the listener
                # Starlette's ASGI types are looser than hypercorn's: the same protocol.
                await serve(cast(Framework, app), config, shutdown_trigger=trio.sleep_forever,
                            task_status=_Status())
                nursery.cancel_scope.cancel()
        except Exception:
            warn(f"http: the listener on {self.address} stopped; the beanstalk port serves on:\n"
                 f"{traceback.format_exc()}")
        finally:
            if not started:
                report()


def import_stack() -> None:
    """Import Starlette, hypercorn and the routes (already imported: a no-op)."""
    for name in ("starlette.applications", "hypercorn.trio", "beanstalk_py.http.app"):
        importlib.import_module(name)


def make_http_listener(settings: HttpSettings) -> HttpListener:
    """Bind ``--http ADDR:PORT`` or ``unix:PATH`` under the loopback rule.

    Raises :class:`HttpConfigError` (exit 2: the extra is missing, a bad token
    file, a refused address) or :class:`~..listen.ListenError` (exit 111).
    """
    if not extra_installed():
        raise HttpConfigError(MISSING_EXTRA)
    spec = settings.spec
    tokens = load_tokens(settings.tokens_path) if settings.tokens_path is not None else None
    if spec.startswith("unix:"):
        return HttpListener(unix_listener(spec[5:]), tokens, settings)
    host, port = split_host_port(spec)
    if tokens is None:
        check_bind(host, port)
    sock = tcp_listener(host or "", port)
    if tokens is None:
        try:
            check_bound(sock)
        except HttpConfigError:
            sock.close()
            raise
    return HttpListener(sock, tokens, settings)
