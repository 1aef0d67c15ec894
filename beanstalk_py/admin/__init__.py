"""``beanstalk-py admin``: look inside a running daemon (beanstalk-py or
beanstalkd 1.12) and act on it, over the beanstalk protocol, and over the
daemon's HTTP API (``--url``) for what the protocol cannot do.

Modules: :mod:`.client` (a blocking protocol client and the exit codes),
:mod:`.api` (the HTTP API client), :mod:`.commands` (the one-shot
commands), :mod:`.top` (the live view), :mod:`.transfer` (export from a
binlog directory or the API, import by puts), :mod:`.storexfer` (export,
import and migrate for a Redis store, ``--store``),
:mod:`.render` (JSON values and the tubes table), :mod:`.cli` (arguments).
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Run one admin command; returns the exit status (see ``admin --help``)."""
    from .cli import run

    return run(argv)
