"""Listening sockets: TCP, unix and systemd socket activation (beanstalkd's net.c)."""

from __future__ import annotations

import os
import socket
import stat
from typing import Optional

from .log import warn
from .options import DEFAULT_ADDR

BACKLOG = 1024
SD_LISTEN_FDS_START = 3


class ListenError(Exception):
    """The listening socket could not be made; the message says why."""


def inherited_sockets(environ: Optional[dict] = None) -> list[socket.socket]:
    """The sockets systemd passed us (LISTEN_PID/LISTEN_FDS), as sd_listen_fds does.

    The variables are removed so child processes do not inherit them.  Every
    descriptor is served (beanstalkd uses only the first), so one socket unit
    may carry a TCP and a unix address; an empty list when there are none.
    """
    env = os.environ if environ is None else environ
    pid = env.get("LISTEN_PID")
    fds = env.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not pid or not fds:
        return []
    try:
        if int(pid) != os.getpid() or int(fds) < 1:
            return []
        count = int(fds)
    except ValueError:
        return []
    return [_inherited(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


def _inherited(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenError(f"inherited fd {fd} is not a TCP or UNIX listening socket") from exc
    ok = (
        sock.type == socket.SOCK_STREAM
        and sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
        and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    )
    if not ok:
        sock.detach()
        raise ListenError(f"inherited fd {fd} is not a TCP or UNIX listening socket")
    sock.setblocking(False)
    return sock


def unix_listener(path: str) -> socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise ListenError(f"{path}: exists and is not a socket")
        warn("removing existing local socket to replace it")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"bind {path}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def tcp_listener(addr: Optional[str], port: str) -> socket.socket:
    """Bind the first address that works, as the reference does with getaddrinfo."""
    host = DEFAULT_ADDR if addr is None else addr
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(f"getaddrinfo({host!r}, {port!r}): {exc.strerror}") from exc
    last: Optional[OSError] = None
    for family, kind, proto, _name, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if family == socket.AF_INET6 and host in ("", "::"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
        except OSError as exc:
            last = exc
            sock.close()
            continue
        sock.setblocking(False)
        return sock
    detail = last.strerror if last is not None else "no usable address"
    raise ListenError(f"bind {host}:{port}: {detail}")


def split_host_port(text: str) -> tuple[str, str]:
    """``ADDR:PORT`` or ``[V6ADDR]:PORT`` (an empty ADDR means every interface)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ListenError(f"{text}: expected ADDR:PORT")
    return host, port


def make_listener(addr: Optional[str], port: str) -> socket.socket:
    if addr is not None and addr.startswith("unix:"):
        return unix_listener(addr[5:])
    return tcp_listener(addr, port)


def describe(sock: socket.socket) -> str:
    """ADDR:PORT or the unix path, for log lines."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return name if isinstance(name, str) else name.decode(errors="replace")
    host, port = name[0], name[1]
    if sock.family == socket.AF_INET6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def set_nodelay(sock: socket.socket) -> None:
    """Replies are written whole, so Nagle's algorithm only adds latency."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
