"""The operations plane: an opt-in HTTP listener (``--http``) beside the beanstalk port.

It reads and changes the queue through the same :class:`~beanstalk_py.store.Store`
the protocol uses (tube-addressed operations, snapshots that move no counter),
in the daemon's own trio run, so every request's work is bounded: the beanstalk
clients are served by one task on the same thread (see epoll_loop.py).

Layout: :mod:`.auth` (the security rule and bearer tokens, no dependency),
:mod:`.api` (what each endpoint asks of the store, no web framework),
:mod:`.app` (Starlette routes and errors), :mod:`.listener` (binding, and
hypercorn's trio worker).  Starlette and hypercorn are the optional extra
``beanstalk-py[http]`` and are imported only when ``--http`` is given.
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("starlette", "hypercorn")
MISSING_EXTRA = ("--http needs Starlette and hypercorn, which are not installed: "
                 "pip install 'beanstalk-py[http]'")


def extra_installed() -> bool:
    """Whether the extra is there, without importing it (about 200 ms: see listener.py)."""
    return all(importlib.util.find_spec(name) is not None for name in EXTRA_MODULES)
