"""Reading a file of secrets (bearer tokens) that only its owner may read."""

from __future__ import annotations

import os
import stat


class PrivateFileError(Exception):
    """The file cannot be used; the message names it and says why (never its contents)."""


def read_private_file(path: str, option: str, limit: int = -1) -> bytes:
    """The bytes of ``path`` (at most ``limit``), refused unless it is a regular
    file that group and others can neither read nor write (chmod 600);
    ``option`` names the command-line option in the messages."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PrivateFileError(f"{option} {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise PrivateFileError(f"{option} {path}: not a regular file")
        if mode & 0o077:
            raise PrivateFileError(f"{option} {path}: group or others may read or write it "
                                   f"(mode {stat.S_IMODE(mode):04o}); chmod 600 {path}")
        with os.fdopen(fd, "rb", closefd=False) as raw:
            return raw.read(limit)
    finally:
        os.close(fd)
