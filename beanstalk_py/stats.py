"""YAML bodies of stats, stats-job, stats-tube and the tube lists, field for field as 1.12.

The one intended difference: ``hostname``, ``os`` and ``platform`` are
double-quoted as beanstalkd 1.13 does, because 1.12's unquoted ``os: #1 SMP``
is read by YAML parsers as a comment (see COMPAT.md).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import Iterable

from .engine import NS, Engine
from .job import DELAYED, RESERVED, Job
from .tube import Tube

PROTOCOL_VERSION = "1.12"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _trunc_div(value: int, divisor: int = NS) -> int:
    """C integer division: truncate toward zero, as the reference prints seconds."""
    quotient = abs(value) // divisor
    return -quotient if value < 0 else quotient


@dataclass
class ServerInfo:
    """Facts about the running process that `stats` reports."""

    started_at: int  # engine clock, ns
    pid: int = field(default_factory=os.getpid)
    instance_id: str = field(default_factory=lambda: os.urandom(8).hex())
    hostname: str = field(default_factory=lambda: os.uname().nodename)
    os_version: str = field(default_factory=lambda: os.uname().version)
    platform: str = field(default_factory=lambda: os.uname().machine)
    binlog_max_size: int = 10485760
    binlog_oldest_index: int = 0
    binlog_current_index: int = 0
    binlog_records_migrated: int = 0
    binlog_records_written: int = 0


def format_stats(engine: Engine, info: ServerInfo, now: int) -> bytes:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    utime_s, utime_us = int(usage.ru_utime), int(round((usage.ru_utime % 1) * 1e6)) % 1000000
    stime_s, stime_us = int(usage.ru_stime), int(round((usage.ru_stime % 1) * 1e6)) % 1000000
    c = engine.cmd_counts.get
    wal = engine.wal
    if wal is not None:  # live figures of the binlog (-b)
        binlog = (wal.oldest_index, wal.current_index, wal.records_migrated,
                  wal.records_written, wal.max_size)
    else:
        binlog = (info.binlog_oldest_index, info.binlog_current_index,
                  info.binlog_records_migrated, info.binlog_records_written, info.binlog_max_size)
    lines = [
        "---",
        f"current-jobs-urgent: {engine.urgent_ct}",
        f"current-jobs-ready: {engine.ready_ct}",
        f"current-jobs-reserved: {engine.reserved_ct}",
        f"current-jobs-delayed: {engine.delayed_count()}",
        f"current-jobs-buried: {engine.buried_ct}",
        f"cmd-put: {c('put', 0)}",
        f"cmd-peek: {c('peek', 0)}",
        f"cmd-peek-ready: {c('peek-ready', 0)}",
        f"cmd-peek-delayed: {c('peek-delayed', 0)}",
        f"cmd-peek-buried: {c('peek-buried', 0)}",
        f"cmd-reserve: {c('reserve', 0)}",
        f"cmd-reserve-with-timeout: {c('reserve-with-timeout', 0)}",
        f"cmd-delete: {c('delete', 0)}",
        f"cmd-release: {c('release', 0)}",
        f"cmd-use: {c('use', 0)}",
        f"cmd-watch: {c('watch', 0)}",
        f"cmd-ignore: {c('ignore', 0)}",
        f"cmd-bury: {c('bury', 0)}",
        f"cmd-kick: {c('kick', 0)}",
        f"cmd-touch: {c('touch', 0)}",
        f"cmd-stats: {c('stats', 0)}",
        f"cmd-stats-job: {c('stats-job', 0)}",
        f"cmd-stats-tube: {c('stats-tube', 0)}",
        f"cmd-list-tubes: {c('list-tubes', 0)}",
        f"cmd-list-tube-used: {c('list-tube-used', 0)}",
        f"cmd-list-tubes-watched: {c('list-tubes-watched', 0)}",
        f"cmd-pause-tube: {c('pause-tube', 0)}",
        f"job-timeouts: {engine.timeout_ct}",
        f"total-jobs: {engine.total_jobs_ct}",
        f"max-job-size: {engine.max_job_size}",
        f"current-tubes: {len(engine.tubes)}",
        f"current-connections: {engine.conn_ct}",
        f"current-producers: {engine.producer_ct}",
        f"current-workers: {engine.worker_ct}",
        f"current-waiting: {engine.waiting_ct}",
        f"total-connections: {engine.total_conn_ct}",
        f"pid: {info.pid}",
        f'version: "{PROTOCOL_VERSION}"',
        f"rusage-utime: {utime_s}.{utime_us:06d}",
        f"rusage-stime: {stime_s}.{stime_us:06d}",
        f"uptime: {(now - info.started_at) // NS}",
        f"binlog-oldest-index: {binlog[0]}",
        f"binlog-current-index: {binlog[1]}",
        f"binlog-records-migrated: {binlog[2]}",
        f"binlog-records-written: {binlog[3]}",
        f"binlog-max-size: {binlog[4]}",
        f"draining: {'true' if engine.draining else 'false'}",
        f"id: {info.instance_id}",
        f"hostname: {_quote(info.hostname)}",
        f"os: {_quote(info.os_version)}",
        f"platform: {_quote(info.platform)}",
        "",
    ]
    return "\n".join(lines).encode()


def format_job_stats(job: Job, now: int) -> bytes:
    if job.state == RESERVED or job.state == DELAYED:
        time_left = _trunc_div(job.deadline - now)
    else:
        time_left = 0
    return (
        b"---\nid: %d\ntube: %s\nstate: %s\npri: %d\nage: %d\ndelay: %d\n"
        b"ttr: %d\ntime-left: %d\nfile: %d\nreserves: %d\ntimeouts: %d\n"
        b"releases: %d\nburies: %d\nkicks: %d\n"
        % (
            job.id,
            job.tube.name,
            job.state.encode(),
            job.pri,
            _trunc_div(now - job.created_at),
            job.delay,
            job.ttr,
            time_left,
            job.file,
            job.reserve_ct,
            job.timeout_ct,
            job.release_ct,
            job.bury_ct,
            job.kick_ct,
        )
    )


def format_tube_stats(engine: Engine, tube: Tube, now: int) -> bytes:
    if tube.pause and tube.unpause_at > now:
        pause = tube.pause // NS
        time_left = (tube.unpause_at - now) // NS
    else:
        pause = 0
        time_left = 0
    return (
        b"---\nname: %s\ncurrent-jobs-urgent: %d\ncurrent-jobs-ready: %d\n"
        b"current-jobs-reserved: %d\ncurrent-jobs-delayed: %d\n"
        b"current-jobs-buried: %d\ntotal-jobs: %d\ncurrent-using: %d\n"
        b"current-watching: %d\ncurrent-waiting: %d\ncmd-delete: %d\n"
        b"cmd-pause-tube: %d\npause: %d\npause-time-left: %d\n"
        % (
            tube.name,
            tube.urgent_ct,
            len(tube.ready),
            tube.reserved_ct,
            len(tube.delayed),
            len(tube.buried),
            tube.total_jobs_ct,
            tube.using_ct,
            tube.watching_ct,
            engine.tube_waiting_count(tube),
            tube.delete_ct,
            tube.pause_ct,
            pause,
            time_left,
        )
    )


def format_tube_list(tubes: Iterable[Tube]) -> bytes:
    return b"---\n" + b"".join(b"- " + tube.name + b"\n" for tube in tubes)
