"""The write-ahead binlog (``-b DIR``), split as beanstalkd splits policy
(walg.c) from format (file.c):

* :mod:`.log`: :class:`Binlog`: locking, opening and replay, the ``append_*``
  methods the engine calls (:class:`beanstalk_py.wal.WriteAheadLog`), compaction;
* :mod:`.format`: the file format, :class:`JobRecord`, the one encoder per
  record kind, :class:`Scan`;
* :mod:`.migrate`: reading beanstalkd's own files (formats 7 and 5);
* :mod:`.space`: files, preallocation and the slot invariant that keeps
  deletes possible on a full disk;
* :mod:`.sync`: group commit, the only code another thread runs
  (:class:`beanstalk_py.wal.Durability`).
"""

from .format import (
    DEFAULT_FILE_SIZE,
    DELETE_SIZE,
    FILE_PREFIX,
    FULL_FIXED,
    HEADER_SIZE,
    MAGIC,
    T_DELETE,
    T_FULL,
    T_UPDATE,
    UPDATE_SIZE,
    VERSION,
    JobRecord,
    Replay,
    Scan,
    Update,
    encode_delete,
    encode_full,
    encode_header,
    encode_update,
    replay_own,
)
from .log import Binlog, BinlogLockError, BinlogOpenError
from .migrate import V7_PREFIX, replay_v7
from .space import SLOT, BinlogError, BinlogFull, BinlogIOError
from .sync import Sync

__all__ = [
    "DEFAULT_FILE_SIZE",
    "DELETE_SIZE",
    "FILE_PREFIX",
    "FULL_FIXED",
    "HEADER_SIZE",
    "MAGIC",
    "SLOT",
    "T_DELETE",
    "T_FULL",
    "T_UPDATE",
    "UPDATE_SIZE",
    "V7_PREFIX",
    "VERSION",
    "Binlog",
    "BinlogError",
    "BinlogFull",
    "BinlogIOError",
    "BinlogLockError",
    "BinlogOpenError",
    "JobRecord",
    "Replay",
    "Scan",
    "Sync",
    "Update",
    "encode_delete",
    "encode_full",
    "encode_header",
    "encode_update",
    "replay_own",
    "replay_v7",
]
