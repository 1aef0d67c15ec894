"""``--http``: the socket, bound at start-up, then served with hypercorn's HTTP/1.1 under our own accept loop.

The socket is bound (and the token file, the TLS files and the status secret
read) in start-up with the other listeners, before ``-u`` drops privileges,
so a bad address, a refused one (the loopback rule, :mod:`.auth`), a bad
token file or an unreadable certificate stops the daemon (exit 2) before it
serves anything.  While the binlog replays, :class:`~.probe.ReplayResponder`
answers the probes on the same socket (:meth:`HttpListener.replay_probes`).
Starlette and hypercorn are imported only once the server runs, in a worker
thread (about 200 ms of imports: the beanstalk clients are served
meanwhile), and the listener is a sibling task in the server's nursery, so a
request's work runs between the beanstalk driver's passes on the same thread.

Why our own accept loop rather than ``hypercorn.trio.serve``: serve makes its
listeners itself, so it offers no place for a connection cap, and it runs the
TLS handshake inside its connection class, where the application never sees
the client's certificate (hypercorn 0.18 puts nothing of TLS in the ASGI
scope).  The loop here hands each connection to hypercorn's own per-connection
class (``hypercorn.trio.tcp_server.TCPServer``), as serve does, after:

* the cap: at most ``--http-max-connections`` connections are served at once.
  The next :data:`OVERFLOW_CONNECTIONS` are still accepted, into a lane that
  reads only the request head (:data:`~.probe.HEAD_TIMEOUT_S`) and answers
  ``/healthz`` and ``/readyz`` itself and 503 with ``Retry-After`` to anything
  else (:func:`~.probe.busy_answer`): the probes are never queued behind
  held-open connections.  Past both, connections wait in the kernel backlog
  (1024) until a slot frees, which a silent or slow client does within 2 s.
  Measured (tests/test_http_load.py): beside 40 silent connections and 40
  sending their heads a byte a second, /healthz answered in 10-24 ms at worst,
  and all 80 were closed 2.00-2.02 s after they opened; with the cap and the
  lane both full, a probe was answered 2.00 s after the holders connected.
* TLS: the handshake, bounded by the head timeout, and the client
  certificate's subject put in the connection's ASGI ``state``
  (:data:`CLIENT_CERTIFICATE`), whence write log lines name the requester.

Bounds inside hypercorn's connection class: ``keep_alive_timeout`` is the
time from the handshake (and from each answer) to the next complete request
head, so it is the 2 s head timeout (a silent client, or one sending its head
a byte a second, is closed 2 s in) and the keep-alive idle time too; a client
that sends nothing for :data:`READ_TIMEOUT_S` during a request is closed;
a head is at most 16 KiB (hypercorn's ``h11_max_incomplete_size``).
"""

from __future__ import annotations

import importlib
import os
import socket
import ssl
import time
import traceback
from typing import TYPE_CHECKING, Any, Optional, cast

from ..listen import describe, split_host_port, tcp_listener, unix_listener
from ..log import warn
from ..tls import HandshakeLog, _reason
from . import MISSING_EXTRA, extra_installed
from .auth import (CLIENT_CERTIFICATE, CLIENT_CERTIFICATE_NAME, HttpConfigError, Principal, Tokens,
                   certificate_name, check_bind, check_bound, load_tokens)
from .probe import ACCEPT_CAPACITY_ERRNOS, ACCEPT_PAUSE_S, HEAD_TIMEOUT_S, MAX_HEAD, READ_CHUNK, \
    ReplayResponder, busy_answer, head_end
from .settings import HttpSettings
from .status import load_status_secret

if TYPE_CHECKING:  # trio is imported after start-up binds (see main.py)
    import trio
    from hypercorn.config import Config
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import AppWrapper
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..dispatch import Dispatcher
    from .api import Plane

READ_TIMEOUT_S = 30.0  # no byte from a client for this long during a request: closed
# Connections past --http-max-connections still accepted, into the lane that
# answers only the probes (each gone within HEAD_TIMEOUT_S).
OVERFLOW_CONNECTIONS = 32
OVERFLOW_LOG_EVERY_S = 60.0  # "cap reached" is logged at most this often


class HttpListener:
    """A bound ``--http`` socket, its tokens and TLS context, served by :meth:`run` once trio runs."""

    def __init__(self, sock: socket.socket, tokens: Optional[Tokens], settings: HttpSettings,
                 status_secret: Optional[bytes] = None, *, tls: Optional[ssl.SSLContext] = None) -> None:
        self.sock = sock
        self.tokens = tokens
        self.status_secret = status_secret  # the key of /status/{token}; None: off
        self.settings = settings
        self.tls = tls  # --http-cert/--http-key (and --http-client-ca): HTTPS
        self.unix = sock.family == socket.AF_UNIX
        self.address = describe(sock)
        self.serving = 0  # connections in the main lane
        self.overflowed = 0  # connections answered by the overflow lane
        self._overflow_logged = float("-inf")
        self._handshakes = HandshakeLog()

    def replay_probes(self) -> ReplayResponder:
        """``with listener.replay_probes(): open_binlog(...)``: the probes answer meanwhile."""
        return ReplayResponder(self.sock, self.tls)

    def _local_name(self) -> str:
        """Who a request is when there are no tokens to say."""
        if self.unix:
            return "unix socket"
        return CLIENT_CERTIFICATE_NAME if self.settings.client_ca is not None else "loopback"

    def _describe(self) -> str:
        parts = []
        if self.tls is not None:
            parts.append("HTTPS, client certificates required" if self.settings.client_ca else "HTTPS")
        if self.tokens:
            parts.append(f"{len(self.tokens)} bearer tokens")
        elif self.settings.client_ca is None:
            parts.append("no tokens: loopback only")
        parts.append(f"at most {self.settings.max_connections} connections")
        return ", ".join(parts)

    async def run(self, dispatcher: "Dispatcher", *, task_status: "trio.TaskStatus[list[str]]") -> None:
        """Serve until cancelled (``nursery.start``).  A failure here is logged and
        leaves the beanstalk port serving: the operations plane must never take
        the queue down."""
        import trio

        started = False
        try:
            await trio.to_thread.run_sync(import_stack)
            from hypercorn.config import Config
            from hypercorn.trio.worker_context import WorkerContext
            from hypercorn.typing import Framework
            from hypercorn.utils import wrap_app

            from .api import Plane
            from .app import Guard, make_app

            config = Config()
            config.loglevel = "WARNING"  # our own line says where it listens
            config.accesslog = None
            config.include_server_header = False
            # From the handshake (or the last answer) to a complete request head.
            config.keep_alive_timeout = HEAD_TIMEOUT_S
            config.read_timeout = int(READ_TIMEOUT_S)
            plane = Plane(dispatcher)
            check_host = not self.unix and not self.settings.credentials
            app = make_app(plane, self.tokens, self._local_name(), check_host=check_host,
                           settings=self.settings, status_secret=self.status_secret)
            if self.settings.client_ca is not None:
                if isinstance(app, Guard):
                    # Between the guard (which decides who) and the routes.
                    app.app = CertificateNames(app.app)
                else:
                    warn("http: requesters are named 'client certificate' (no subject in the logs)")
            wrapped = wrap_app(cast(Framework, app), config.wsgi_max_body_size, None)
            scheme = "https" if self.tls is not None else "http"
            warn(f"http: serving {scheme} on {self.address} ({self._describe()})")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(plane.background)  # samples for rates; ends with the listener
                await nursery.start(self._accept_loop, wrapped, config, WorkerContext(None), plane, check_host)
                started = True
                task_status.started([f"{scheme}://{self.address}"])
        except Exception:
            warn(f"http: the listener on {self.address} stopped; the beanstalk port serves on:\n"
                 f"{traceback.format_exc()}")
        finally:
            if not started:
                task_status.started([])

    async def _accept_loop(self, app: "AppWrapper", config: "Config", context: "WorkerContext",
                           plane: "Plane", check_host: bool, *, task_status: "trio.TaskStatus[None]") -> None:
        import trio

        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        slots = trio.Semaphore(self.settings.max_connections + OVERFLOW_CONNECTIONS)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                # Past both lanes, accept nothing: new connections wait in the backlog.
                await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    slots.release()
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    self._log_overflow(f"accept: {os.strerror(exc.errno or 0)}")
                    await trio.sleep(ACCEPT_PAUSE_S)
                    continue
                except BaseException:
                    slots.release()
                    raise
                if self.serving < self.settings.max_connections:
                    self.serving += 1
                    nursery.start_soon(self._serve, stream, app, config, context, slots)
                else:
                    nursery.start_soon(self._overflow, stream, plane, check_host, slots)

    async def _handshake(self, stream: "trio.SocketStream") -> "Optional[trio.SSLStream[trio.SocketStream]]":
        """TLS on ``stream`` within the head timeout; None (logged) when it failed."""
        import trio

        assert self.tls is not None
        secure = trio.SSLStream(stream, self.tls, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(HEAD_TIMEOUT_S):
                await secure.do_handshake()
            return secure
        except trio.TooSlowError:
            self._handshakes.failure(_peer(stream), f"no handshake within {HEAD_TIMEOUT_S:g} s")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._handshakes.failure(_peer(stream), _reason(exc))
        await trio.aclose_forcefully(secure)
        return None

    async def _serve(self, stream: "trio.SocketStream", app: "AppWrapper", config: "Config",
                     context: "WorkerContext", slots: "trio.Semaphore") -> None:
        """One connection of the main lane, served by hypercorn's connection class."""
        import trio
        from hypercorn.trio.tcp_server import TCPServer

        try:
            served: Any = stream
            state: dict[str, Any] = {}  # the connection's ASGI "state" (each request gets a copy)
            if self.tls is not None:
                served = await self._handshake(stream)
                if served is None:
                    return
                name = certificate_name(served.getpeercert())
                if name is not None:
                    state[CLIENT_CERTIFICATE] = name
            # TCPServer repeats the handshake: a no-op once done.
            await TCPServer(app, config, context, state, served).run()
        except Exception:
            # One connection's failure must not end the listener (hypercorn
            # already logs the application's own exceptions).
            warn(f"http: internal error on a connection, closed:\n{traceback.format_exc()}")
            await trio.aclose_forcefully(stream)
        finally:
            self.serving -= 1
            slots.release()

    async def _overflow(self, stream: "trio.SocketStream", plane: "Plane", check_host: bool,
                        slots: "trio.Semaphore") -> None:
        """A connection past the cap: the probes answered here, anything else 503."""
        import trio

        self.overflowed += 1
        self._log_overflow(None)
        closing: Any = stream
        try:
            with trio.move_on_after(HEAD_TIMEOUT_S):
                if self.tls is not None:
                    secure = await self._handshake(stream)  # closed by it when it fails
                    if secure is None:
                        return
                    closing = secure
                data = bytearray()
                while head_end(data) < 0 and len(data) <= MAX_HEAD:
                    chunk = await closing.receive_some(READ_CHUNK)
                    if not chunk:
                        return
                    data += chunk
                answer = busy_answer(bytes(data), plane.ready(), not check_host or _loopback_host_in(data))
                status = int(answer.split(b" ", 2)[1])
                plane.http_responses[status] = plane.http_responses.get(status, 0) + 1
                await closing.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            slots.release()
            await trio.aclose_forcefully(closing)

    def _log_overflow(self, why: Optional[str]) -> None:
        now = time.monotonic()
        if now - self._overflow_logged < OVERFLOW_LOG_EVERY_S:
            return
        self._overflow_logged = now
        reason = why or f"--http-max-connections {self.settings.max_connections} reached"
        warn(f"http: {reason}; past it only /healthz and /readyz are answered, other requests get 503 "
             f"({self.overflowed} such connections so far; logged at most once a minute)")


class CertificateNames:
    """Names a requester by its client certificate, after the guard decided who may ask.

    Without tokens the guard's principal is the listener's local one
    (``client certificate``); it becomes ``client certificate CN=alice``.
    With tokens too, the token's name gains the subject:
    ``token line 3 (certificate CN=alice)``.  The role is the guard's.
    """

    def __init__(self, app: "ASGIApp") -> None:
        self.app = app

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        state = scope.get("state")
        name = state.get(CLIENT_CERTIFICATE) if isinstance(state, dict) else None
        principal = state.get("principal") if isinstance(state, dict) else None
        if name is not None and isinstance(principal, Principal) and isinstance(state, dict):
            if principal.who == CLIENT_CERTIFICATE_NAME:
                who = f"{CLIENT_CERTIFICATE_NAME} {name}"
            else:
                who = f"{principal.who} (certificate {name})"
            state["principal"] = Principal(who, principal.role)
        await self.app(scope, receive, send)


def _loopback_host_in(data: bytearray) -> bool:
    from .auth import loopback_host
    from .probe import Head

    head = Head.parse(bytes(data))
    return head is None or loopback_host(head.host)


def _peer(stream: "trio.SocketStream") -> str:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "an HTTP client"
    if isinstance(peer, tuple):
        return f"HTTP client {peer[0]}:{peer[1]}"
    return "an HTTP client on the unix socket"


def import_stack() -> None:
    """Import Starlette, hypercorn and the routes (already imported: a no-op)."""
    for name in ("starlette.applications", "hypercorn.trio.tcp_server", "hypercorn.utils",
                 "beanstalk_py.http.app"):
        importlib.import_module(name)


def http_tls_context(settings: HttpSettings) -> Optional[ssl.SSLContext]:
    """The HTTPS context of ``--http-cert``/``--http-key`` (and ``--http-client-ca``), or None.

    Loaded at start-up, so a missing or bad file stops the daemon (exit 2)
    with the option and the file named.  TLS 1.2 or later, HTTP/1.1 only
    (ALPN): the bounds above are HTTP/1.1's.
    """
    if settings.cert is None or settings.key is None:
        return None
    for option, path in (("--http-cert", settings.cert), ("--http-key", settings.key),
                         ("--http-client-ca", settings.client_ca)):
        if path is not None:
            _check_readable(option, path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise HttpConfigError(f"--http-cert {settings.cert} / --http-key {settings.key}: cannot load the "
                              f"certificate chain and its private key (PEM): {_why(exc)}") from exc
    if settings.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=settings.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise HttpConfigError(f"--http-client-ca {settings.client_ca}: cannot load the CA "
                                  f"certificates (PEM): {_why(exc)}") from exc
        if not ctx.get_ca_certs():
            raise HttpConfigError(f"--http-client-ca {settings.client_ca}: no CA certificate in the file")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _check_readable(option: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise HttpConfigError(f"{option} {path}: {exc.strerror}") from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc)


def make_http_listener(settings: HttpSettings) -> HttpListener:
    """Bind ``--http ADDR:PORT`` or ``unix:PATH`` under the loopback rule.

    Raises :class:`HttpConfigError` (exit 2: the extra is missing, a bad token
    file or TLS file, a refused address) or :class:`~..listen.ListenError`
    (exit 111).
    """
    if not extra_installed():
        raise HttpConfigError(MISSING_EXTRA)
    spec = settings.spec
    tokens = load_tokens(settings.tokens_path) if settings.tokens_path is not None else None
    path = settings.status_secret_path
    status_secret = load_status_secret(path) if path is not None else None
    tls = http_tls_context(settings)
    if spec.startswith("unix:"):
        return HttpListener(unix_listener(spec[5:]), tokens, settings, status_secret, tls=tls)
    host, port = split_host_port(spec)
    if not settings.credentials:
        check_bind(host, port)
    sock = tcp_listener(host or "", port)
    if not settings.credentials:
        try:
            check_bound(sock)
        except HttpConfigError:
            sock.close()
            raise
    return HttpListener(sock, tokens, settings, status_secret, tls=tls)

