"""The Redis store (``--store redis://HOST:PORT/DB``): queue state in Redis,
changed only by the Functions in ``functions.lua``, so several front ends
serve one set of tubes (issue 11, design/scale-out.md).

Imported only in store mode; it needs the ``hiredis`` package (the
``beanstalk-py[redis]`` extra).
"""
