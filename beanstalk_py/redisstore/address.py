"""Where the store lives: ``--store URL``, checked at option time.

A module of its own, with no hiredis and no trio, so that option parsing can
refuse a bad address (a usage error, status 5) before anything is imported
or bound.  The URLs are the ones Redis users already write:

* ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``: the primary itself;
* ``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]``:
  the Sentinels to ask for the primary of MASTER (port 26379 by default),
  asked again whenever the primary is lost (a failover);
* ``rediss://`` and ``rediss+sentinel://``: the same over TLS (to the
  Sentinels too), with ``--store-tls-ca/-cert/-key`` for the files.

USER and PASSWORD (percent-encoded, as in any URL) are the primary's ``AUTH``;
``--store-password-file`` keeps the password out of ``ps`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

DEFAULT_REDIS_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SCHEMES = ("redis://", "rediss://", "redis+sentinel://", "rediss+sentinel://")
SCHEME = SCHEMES[0]

_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
_HOST_PORT = re.compile(rf"(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?")
_URL = re.compile(r"(?P<scheme>rediss?(?:\+sentinel)?)://(?:(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@)?"
                  r"(?P<hosts>[^/@]+)(?P<path>/.*)?")
_MASTER = re.compile(r"[A-Za-z0-9._-]+")


class StoreAddressError(ValueError):
    """``--store`` was given something this version cannot use (the message says why)."""


@dataclass(frozen=True)
class StoreAddress:
    """A parsed ``--store`` URL.  ``host``/``port`` are the primary's for
    ``redis://``; with Sentinel they are the first Sentinel's and
    ``sentinels`` lists them all."""

    host: str
    port: int = DEFAULT_REDIS_PORT
    db: int = 0
    tls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    master: str = ""  # the Sentinel master name ("" without Sentinel)
    sentinels: tuple[tuple[str, int], ...] = ()

    @property
    def sentinel(self) -> bool:
        return bool(self.master)

    def __str__(self) -> str:
        """The URL without its credentials (for messages and logs)."""
        scheme = ("rediss" if self.tls else "redis") + ("+sentinel" if self.sentinel else "")
        if self.sentinel:
            hosts = ",".join(f"{_show(host)}:{port}" for host, port in self.sentinels)
            return f"{scheme}://{hosts}/{self.master}/{self.db}"
        return f"{scheme}://{_show(self.host)}:{self.port}/{self.db}"


def _show(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise StoreAddressError(f"--store: bad host {text!r}")
    port = int(match["port"] or default_port)
    if not 0 < port < 65536:
        raise StoreAddressError(f"--store: bad port {port}")
    return match["host"].strip("[]"), port


def _db(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit() or len(text) > 5:
        raise StoreAddressError(f"--store: the database must be a number, not {text!r}")
    return int(text)


def parse_store_url(text: str) -> StoreAddress:
    """``--store``'s URL as a :class:`StoreAddress` (StoreAddressError saying why not)."""
    usage = (f"--store needs redis://HOST[:PORT][/DB] or "
             f"redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB] (rediss:// for TLS), not {_hide(text)!r}")
    match = _URL.fullmatch(text)
    if match is None:
        raise StoreAddressError(usage)
    tls = match["scheme"].startswith("rediss")
    sentinel = match["scheme"].endswith("+sentinel")
    username = unquote(match["user"] or "")
    password = unquote(match["password"] or "")
    if username and not password:
        # redis://secret@host: like redis-cli and redis-py, a lone part is the password.
        username, password = "", username
    path = (match["path"] or "").split("/")[1:]
    if sentinel:
        sentinels = tuple(_host_port(part, DEFAULT_SENTINEL_PORT) for part in match["hosts"].split(","))
        if not path or not path[0]:
            raise StoreAddressError(f"--store: {match['scheme']}:// needs the master's name: "
                                    "redis+sentinel://HOST:PORT/MASTER[/DB]")
        if not _MASTER.fullmatch(path[0]):
            raise StoreAddressError(f"--store: bad master name {path[0]!r}")
        if len(path) > 2:
            raise StoreAddressError(usage)
        db = _db(path[1] if len(path) > 1 else "")
        host, port = sentinels[0]
        return StoreAddress(host, port, db, tls, username, password, path[0], sentinels)
    if "," in match["hosts"]:
        raise StoreAddressError("--store: several hosts need redis+sentinel:// (they are Sentinels)")
    if len(path) > 1:
        raise StoreAddressError(usage)
    host, port = _host_port(match["hosts"], DEFAULT_REDIS_PORT)
    return StoreAddress(host, port, _db(path[0] if path else ""), tls, username, password)


def _hide(text: str) -> str:
    """The URL as typed, with any password replaced (it goes into a message)."""
    return re.sub(r"(://[^:@/]*:)[^@/]*@", r"\1***@", text)
