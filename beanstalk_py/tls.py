"""TLS on the beanstalk protocol: the server's context and the handshake policy.

A TLS listener is the streams driver's listener wrapped in ``trio.SSLListener``
(so the protocol code is the same as on the plain port).  The handshake is
done before the connection exists: a client that fails it (no certificate
under mutual TLS, an expired or untrusted one, plain text, silence past the
timeout) never reaches the store or its counters, and the failure is logged
with the reason (at most one line a second, with a count of the others).
"""

from __future__ import annotations

import ssl
import time
from typing import TYPE_CHECKING, Optional

from .log import warn

if TYPE_CHECKING:  # trio is imported late at start-up (startup.py), not by this module
    import trio


class TLSConfigError(Exception):
    """The certificate, key or CA file could not be loaded; the message says which and why."""


def server_context(cert: str, key: str, client_ca: Optional[str] = None) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later; with ``client_ca``, client certificates required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from exc
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load --tls-client-ca {client_ca}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class HandshakeLog:
    """Failed handshakes, logged at most once a second (a scan must not flood the log)."""

    def __init__(self) -> None:
        self.failed = 0
        self._logged_at = -1e9
        self._unlogged = 0

    def failure(self, peer: str, reason: str) -> None:
        self.failed += 1
        now = time.monotonic()
        if now - self._logged_at < 1.0:
            self._unlogged += 1
            return
        others = f" ({self._unlogged} more failed handshakes not logged)" if self._unlogged else ""
        self._logged_at = now
        self._unlogged = 0
        warn(f"TLS handshake with {peer} failed: {reason}; connection closed{others}")


def _peer(stream: "trio.SSLStream[trio.SocketStream]") -> str:
    try:
        host, port = stream.transport_stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError, ValueError, TypeError):
        return "a client"


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate rejected: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        text = cause.reason or str(cause)
        if cause.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            text = "the client sent no certificate (mutual TLS requires one)"
        return text
    return str(cause) or type(cause).__name__


async def handshake(stream: "trio.SSLStream[trio.SocketStream]", timeout: float, log: HandshakeLog) -> bool:
    """Finish the handshake within ``timeout`` seconds; False (logged) if it failed."""
    import trio

    try:
        with trio.fail_after(timeout):
            await stream.do_handshake()
        return True
    except trio.TooSlowError:
        log.failure(_peer(stream), f"no handshake within {timeout:g} s")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.failure(_peer(stream), _reason(exc))
    return False
