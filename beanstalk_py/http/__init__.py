"""The operations plane: an opt-in HTTP listener (``--http``) beside the beanstalk port.

It reads and changes the queue through the same :class:`~beanstalk_py.store.Store`
the protocol uses (tube-addressed operations, snapshots that move no counter),
in the daemon's own trio run, so every request's work is bounded: the beanstalk
clients are served by one task on the same thread (see epoll_loop.py).

Layout: :mod:`.settings` (every ``--http-*`` option), :mod:`.auth` (the
security rule, bearer tokens, certificate names; no dependency), :mod:`.api`
(what each endpoint asks of the store, no web framework), :mod:`.rates`
(per-tube rate history), :mod:`.status` (the signed job-status endpoint),
:mod:`.app` (Starlette routes and errors), the console (:mod:`.console`
routes, :mod:`.console_auth` sessions and CSRF, :mod:`.console_actions`
writes, :mod:`.console_view` display strings, ``templates/``, ``static/``),
:mod:`.probe` (answers while the binlog replays) and :mod:`.listener`
(binding, TLS, the connection cap, hypercorn's per-connection server).
Starlette, hypercorn and Jinja2 are the optional extra ``beanstalk-py[http]``
and are imported only when ``--http`` is given; without Jinja2 only ``/ui``
is missing (it says what to install).
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("starlette", "hypercorn")
MISSING_EXTRA = ("--http needs Starlette and hypercorn, which are not installed: "
                 "pip install 'beanstalk-py[http]'")


def extra_installed() -> bool:
    """Whether the extra is there, without importing it (about 200 ms: see listener.py)."""
    return all(importlib.util.find_spec(name) is not None for name in EXTRA_MODULES)
