"""Who may use the HTTP listener: the loopback rule, bearer tokens and their roles.

The rule: without credentials the listener binds only loopback or a unix
socket (anyone who can reach it is already on this host), and refuses to
start on another address.  Credentials are bearer tokens (``--http-tokens``)
or client certificates (``--http-client-ca``: mutual TLS, checked in the TLS
handshake, listener.py); with both, a request needs both.  With tokens every
request must carry ``Authorization: Bearer TOKEN``; a ``viewer`` may read, an
``operator`` may also write.  A token never reaches a log line: a request is
known by the line number of its token in the file, and by its certificate's
subject (:func:`certificate_name`) under mutual TLS.

No web framework here: start-up loads and checks the file before it serves
(and before ``-u`` drops privileges), and the tests call it directly.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..private_file import PrivateFileError, read_private_file

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)
# Shorter tokens are refused: guessable tokens defeat the point of the file.
MIN_TOKEN_LENGTH = 16


# Under mutual TLS, the key of the connection's ASGI "state" that holds the
# client certificate's subject (listener.py puts it there), and how requesters
# are named when no token names them.
CLIENT_CERTIFICATE = "client_certificate"
CLIENT_CERTIFICATE_NAME = "client certificate"
_MAX_NAME = 128  # characters of a certificate subject in a log line


class HttpConfigError(Exception):
    """--http or one of its files cannot be used as given; the daemon exits with status 2."""


@dataclass(frozen=True)
class Principal:
    """Who made a request, as write log lines name it (never the token)."""

    who: str  # "token line 3", "loopback", "unix socket" or "client certificate CN=alice"
    role: str

    @property
    def may_write(self) -> bool:
        return self.role == OPERATOR


def _digest(token: str) -> bytes:
    # Looked up by digest, so the time a lookup takes says nothing about how
    # much of a guessed token was right.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Tokens:
    """The bearer tokens of ``--http-tokens``, by digest."""

    def __init__(self, principals: dict[bytes, Principal]) -> None:
        self._principals = principals

    def __len__(self) -> int:
        return len(self._principals)

    def check(self, authorization: Optional[str]) -> Optional[Principal]:
        """The principal of an ``Authorization`` header, or None (401)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._principals.get(_digest(token.strip()))


def load_tokens(path: str) -> Tokens:
    """Read ``TOKEN ROLE`` lines (blank lines and ``#`` comments skipped).

    Refused, with a message that never quotes a token: a file that group or
    others may read or write (it must be chmod 600), a line that is not two
    words, an unknown role, a short or repeated token, a file with no token.
    """
    try:
        data = read_private_file(path, "--http-tokens")
    except PrivateFileError as exc:
        raise HttpConfigError(str(exc)) from exc
    principals: dict[bytes, Principal] = {}
    for number, line in enumerate(data.decode("utf-8", "surrogateescape").splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"--http-tokens {path}, line {number}"
        if len(words) != 2:
            raise HttpConfigError(f"{where}: expected TOKEN ROLE")
        token, role = words
        if role not in ROLES:
            raise HttpConfigError(f"{where}: the role must be viewer or operator")
        if len(token) < MIN_TOKEN_LENGTH:
            raise HttpConfigError(f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters")
        digest = _digest(token)
        if digest in principals:
            raise HttpConfigError(f"{where}: the same token as {principals[digest].who}")
        principals[digest] = Principal(f"token line {number}", role)
    if not principals:
        raise HttpConfigError(f"--http-tokens {path}: no token in the file")
    return Tokens(principals)


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_bind(host: str, port: str) -> None:
    """The loopback rule, before binding without credentials: every address ``host``
    names must be a loopback one (an empty host is every interface)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    refusal = (f"--http {host or '*'}:{port}: without --http-tokens or --http-client-ca the HTTP "
               "listener binds only a loopback address (127.0.0.1, ::1, localhost) or unix:PATH; give "
               "--http-tokens FILE or --http-client-ca FILE (mutual TLS) to serve another address")
    if not host:
        raise HttpConfigError(refusal)
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HttpConfigError(f"--http {host}:{port}: {exc.strerror}") from exc
    if not infos or not all(_is_loopback(str(info[4][0])) for info in infos):
        raise HttpConfigError(refusal)


def check_bound(sock: socket.socket) -> None:
    """The loopback rule again, on the address actually bound."""
    if sock.family == socket.AF_UNIX:
        return
    if not _is_loopback(sock.getsockname()[0]):
        raise HttpConfigError(f"--http: bound {sock.getsockname()[0]}, which is not a loopback address")


_LOOPBACK_NAMES = ("localhost", "localhost.")


def loopback_host(header: Optional[str]) -> bool:
    """Whether a ``Host`` header names this host by a loopback name or address.

    Without tokens a request to a TCP listener must: a web page whose own
    name was pointed at 127.0.0.1 (DNS rebinding) sends its own name.
    """
    if header is None:
        return True  # HTTP/1.0 without Host: not a browser
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host in _LOOPBACK_NAMES or _is_loopback(host)


def certificate_name(cert: Optional[Mapping[str, Any]]) -> Optional[str]:
    """How a log line names a client certificate (``ssl.getpeercert()``): ``CN=alice``,
    else its first subjectAltName (``DNS:host``, ``email:a@b``), else None.

    Printable ASCII only and at most 128 characters: the subject is the
    client's own text, and must not forge log lines.
    """
    if not cert:
        return None
    name = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = f"CN={value}"
    if name is None:
        for kind, value in cert.get("subjectAltName", ()):
            name = f"{kind}:{value}"
            break
    if name is None:
        return None
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in name)
    return clean[:_MAX_NAME]
