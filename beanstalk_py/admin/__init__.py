"""``beanstalk-py admin``: look inside a running daemon and act on it (being written)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    print("beanstalk-py admin: not available yet")
    return 2
