"""Where the store lives: ``--store redis://HOST[:PORT][/DB]``, checked at option time.

A module of its own, with no hiredis and no trio, so that option parsing can
refuse a bad address (a usage error, status 5) before anything is imported
or bound.  ``redis+sentinel://`` is recognised and refused with a message
saying it is not built yet (issue 11), rather than misread as a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REDIS_PORT = 6379
SCHEME = "redis://"
SENTINEL_SCHEME = "redis+sentinel://"

# HOST is a name, an IPv4 address or a bracketed IPv6 address; no user or
# password yet (they come with the Sentinel step).
_URL = re.compile(r"redis://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?"
                  r"(?:/(?P<db>[0-9]{1,5})?)?")


class StoreAddressError(ValueError):
    """``--store`` was given something this version cannot use (the message says why)."""


@dataclass(frozen=True)
class StoreAddress:
    host: str
    port: int = DEFAULT_REDIS_PORT
    db: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_store_url(text: str) -> StoreAddress:
    """``redis://HOST[:PORT][/DB]`` as a :class:`StoreAddress` (StoreAddressError)."""
    if text.startswith(SENTINEL_SCHEME):
        raise StoreAddressError(f"--store {SENTINEL_SCHEME}... is not supported yet; "
                                f"use {SCHEME}HOST:PORT/DB (the primary's address)")
    match = _URL.fullmatch(text)
    if match is None:
        raise StoreAddressError(f"--store needs {SCHEME}HOST[:PORT][/DB], not {text!r}")
    port = int(match["port"] or DEFAULT_REDIS_PORT)
    if not 0 < port < 65536:
        raise StoreAddressError(f"--store: bad port {port}")
    return StoreAddress(match["host"].strip("[]"), port, int(match["db"] or 0))
