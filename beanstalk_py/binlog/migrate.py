"""Reading beanstalkd's own binlog files (format 7 of 1.12, format 5 of 1.4),
beanstalkd's file.c ``readrec``/``readrec5``: touched once a decade, so kept
apart from our format.

``binlog.N`` files found at start-up are read once into a :class:`~.format.Replay`;
the log then writes their live jobs into our files and removes them
(:meth:`~.log.Binlog.open`).  The migration is one way: beanstalkd cannot
read our files, and ignores them because their names differ.
"""

from __future__ import annotations

import struct
from typing import Optional

from .format import CODE_STATE, MAX_TUBE, S_BURIED, S_DELAYED, S_INVALID, S_READY, S_RESERVED, JobRecord, Replay

V7_PREFIX = "binlog."  # beanstalkd's files

# beanstalkd's Jobrec, native x86_64 layout.
V7_JOBREC = struct.Struct("<QI4xqqi4xqqIIIIIB3x")  # 80 bytes
V5_JOBREC = struct.Struct("<QI4xQQi4xQQIIIIIB")  # 77 bytes
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


def replay_v7(data: bytes, replay: Replay) -> tuple[Optional[int], Optional[str]]:
    """Apply a beanstalkd binlog file (format 7 or 5) as beanstalkd 1.12 reads it.

    Returns ``(version, problem)``; version None means not a readable file.
    The differences from 1.12 are ours on purpose: ids of short records count
    toward the next id, and a record with an unknown state stops the file
    without dropping the job.
    """
    n = len(data)
    if n < 4:
        if data.rstrip(b"\0"):
            return None, f"{n} bytes, no version"
        return 0, None
    (version,) = _I32.unpack_from(data)
    if version == 7:
        rec_struct, name_struct, scale = V7_JOBREC, _I32, 1
    elif version == 5:
        rec_struct, name_struct, scale = V5_JOBREC, _U64, 1000
    elif not data.rstrip(b"\0"):
        return 0, None  # all zeros: beanstalkd crashed right after creating it (#546)
    else:
        return None, f"unknown version: {version}"
    pos = 4
    jobs = replay.jobs
    while True:
        if pos + name_struct.size > n:
            if data[pos:].rstrip(b"\0"):
                return version, f"offset {pos}: unexpected end of file in a record"
            break  # a short read ends the file, as in beanstalkd
        (namelen,) = name_struct.unpack_from(data, pos)
        if namelen < 0 or namelen > MAX_TUBE:
            return version, f"offset {pos}: tube name length {namelen} out of range"
        fixed = pos + name_struct.size + namelen
        if fixed + rec_struct.size > n:
            if data[pos:].rstrip(b"\0"):
                return version, f"offset {pos}: unexpected end of file in a record"
            break
        (job_id, pri, delay, ttr, body_size, created, deadline,
         rc, tc, lc, bc, kc, code) = rec_struct.unpack_from(data, fixed)
        if not job_id:
            break  # the preallocated zeros
        end = fixed + rec_struct.size
        body = b""
        if namelen:
            if body_size < 2 or end + body_size > n:
                return version, f"offset {pos}: job {job_id}: body of {body_size} bytes is cut short"
            body = data[end : end + body_size]
            end += body_size
        replay.records += 1
        replay.max_id = max(replay.max_id, job_id)
        rec = jobs.get(job_id)
        if code == S_INVALID:
            jobs.pop(job_id, None)
        elif code in (S_READY, S_RESERVED, S_BURIED, S_DELAYED):
            if rec is None and not namelen:
                pass  # short record of a job whose full record was in a removed file
            else:
                replay.max_stamp += 1
                state = CODE_STATE[S_READY if code == S_RESERVED else code]
                if rec is None:
                    rec = JobRecord(job_id, data[pos + name_struct.size : fixed], state, pri,
                                    delay * scale, ttr * scale, created * scale, deadline * scale, body)
                    jobs[job_id] = rec
                # beanstalkd copies the whole Jobrec of every record over the job
                rec.state = state
                rec.pri = pri
                rec.delay = delay * scale
                rec.ttr = ttr * scale
                rec.created_at = created * scale
                rec.deadline = deadline * scale
                rec.reserve_ct, rec.timeout_ct, rec.release_ct, rec.bury_ct, rec.kick_ct = rc, tc, lc, bc, kc
                rec.stamp = replay.max_stamp
                if namelen:
                    rec.body = body
                rec.file = 0
        else:
            return version, f"offset {pos}: job {job_id}: unknown state {code}"
        pos = end
    return version, None
