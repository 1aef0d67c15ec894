"""Stats as values, and their renderings (the ``fmt`` half of beanstalkd's prot.c).

A stats snapshot is a list of :class:`Stat`: a name, a value and whether it
is a counter (only grows), a gauge or a fact.  The store makes its part
(:meth:`~.store.Store.snapshot`, ``tube_stats``, ``job_stats``) from its own
state, this module adds the process facts, and renderers turn the list into
the YAML of ``stats``, ``stats-job`` and ``stats-tube`` (field for field as
1.12); JSON and Prometheus text are further renderers of the same lists.
Making a snapshot changes no counter.

The one intended difference: ``hostname``, ``os`` and ``platform`` are
double-quoted as beanstalkd 1.13 does, because 1.12's unquoted ``os: #1 SMP``
is read by YAML parsers as a comment (see COMPAT.md).
"""

from __future__ import annotations

import enum
import os
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, NamedTuple, Union

from .store import DELAYED, RESERVED
from .wal import WalStats

if TYPE_CHECKING:
    from .job import Job
    from .tube import Tube

PROTOCOL_VERSION = "1.12"
NS = 1_000_000_000


class Kind(enum.Enum):
    COUNTER = "counter"  # only grows (until a restart)
    GAUGE = "gauge"  # goes up and down
    INFO = "info"  # a fact about the process or the object


class Stat(NamedTuple):
    name: str
    value: Union[int, str, bool]
    kind: Kind


# The commands `stats` counts, in 1.12's order (cmd-<name>).
COUNTED_COMMANDS = (
    "put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve",
    "reserve-with-timeout", "delete", "release", "use", "watch", "ignore", "bury",
    "kick", "touch", "stats", "stats-job", "stats-tube", "list-tubes",
    "list-tube-used", "list-tubes-watched", "pause-tube",
)

# Every field of `stats`, in 1.12's order.
STATS_ORDER = (
    "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
    "current-jobs-delayed", "current-jobs-buried",
    *(f"cmd-{name}" for name in COUNTED_COMMANDS),
    "job-timeouts", "total-jobs", "max-job-size", "current-tubes",
    "current-connections", "current-producers", "current-workers", "current-waiting",
    "total-connections", "pid", "version", "rusage-utime", "rusage-stime", "uptime",
    "binlog-oldest-index", "binlog-current-index", "binlog-records-migrated",
    "binlog-records-written", "binlog-max-size", "draining", "id", "hostname", "os",
    "platform",
)

# Values the YAML shows in double quotes.
_QUOTED = frozenset({"version", "hostname", "os", "platform"})


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def trunc_div(value: int, divisor: int = NS) -> int:
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
    binlog_max_size: int = 10485760  # -s, shown even without -b


def wal_stats(wal: WalStats) -> list[Stat]:
    """The binlog figures of `stats`."""
    return [
        Stat("binlog-oldest-index", wal.oldest_index, Kind.GAUGE),
        Stat("binlog-current-index", wal.current_index, Kind.GAUGE),
        Stat("binlog-records-migrated", wal.records_migrated, Kind.COUNTER),
        Stat("binlog-records-written", wal.records_written, Kind.COUNTER),
        Stat("binlog-max-size", wal.max_size, Kind.INFO),
    ]


def _rusage_seconds(seconds: float) -> str:
    whole = int(seconds)
    micros = int(round((seconds % 1) * 1e6)) % 1000000
    return f"{whole}.{micros:06d}"


def server_stats(store: list[Stat], info: ServerInfo, now: int) -> list[Stat]:
    """The whole of `stats`: the store's snapshot plus this process's facts, in order."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    fields = {stat.name: stat for stat in wal_stats(WalStats(0, 0, 0, 0, info.binlog_max_size))}
    fields.update((stat.name, stat) for stat in store)
    for stat in (
        Stat("pid", info.pid, Kind.INFO),
        Stat("version", PROTOCOL_VERSION, Kind.INFO),
        Stat("rusage-utime", _rusage_seconds(usage.ru_utime), Kind.COUNTER),
        Stat("rusage-stime", _rusage_seconds(usage.ru_stime), Kind.COUNTER),
        Stat("uptime", (now - info.started_at) // NS, Kind.COUNTER),
        Stat("hostname", info.hostname, Kind.INFO),
        Stat("os", info.os_version, Kind.INFO),
        Stat("platform", info.platform, Kind.INFO),
    ):
        fields[stat.name] = stat
    if "id" not in fields:  # a shared store names itself (its epoch); else this process
        fields["id"] = Stat("id", info.instance_id, Kind.INFO)
    return [fields[name] for name in STATS_ORDER]


def job_stat_list(job_id: int, tube: str, state: str, pri: int, age: int, delay: int, ttr: int,
                  time_left: int, file: int, reserves: int, timeouts: int, releases: int, buries: int,
                  kicks: int) -> list[Stat]:
    """stats-job's fields in 1.12's order, from plain values (every store)."""
    return [
        Stat("id", job_id, Kind.INFO),
        Stat("tube", tube, Kind.INFO),
        Stat("state", state, Kind.INFO),
        Stat("pri", pri, Kind.GAUGE),
        Stat("age", age, Kind.GAUGE),
        Stat("delay", delay, Kind.GAUGE),
        Stat("ttr", ttr, Kind.GAUGE),
        Stat("time-left", time_left, Kind.GAUGE),
        Stat("file", file, Kind.INFO),
        Stat("reserves", reserves, Kind.COUNTER),
        Stat("timeouts", timeouts, Kind.COUNTER),
        Stat("releases", releases, Kind.COUNTER),
        Stat("buries", buries, Kind.COUNTER),
        Stat("kicks", kicks, Kind.COUNTER),
    ]


def job_stats(job: "Job", now: int) -> list[Stat]:
    """stats-job of one job of the in-memory store."""
    state = job.state
    if state == RESERVED or state == DELAYED:
        time_left = trunc_div(job.deadline - now)
    else:
        time_left = 0
    return job_stat_list(job.id, job.tube.name.decode("ascii"), state, job.pri, trunc_div(now - job.created_at),
                         job.delay, job.ttr, time_left, job.file, job.reserve_ct, job.timeout_ct,
                         job.release_ct, job.bury_ct, job.kick_ct)


def tube_stat_list(name: str, urgent: int, ready: int, reserved: int, delayed: int, buried: int, total: int,
                   using: int, watching: int, waiting: int, deletes: int, pauses: int, pause: int,
                   time_left: int) -> list[Stat]:
    """stats-tube's fields in 1.12's order, from plain values (every store)."""
    return [
        Stat("name", name, Kind.INFO),
        Stat("current-jobs-urgent", urgent, Kind.GAUGE),
        Stat("current-jobs-ready", ready, Kind.GAUGE),
        Stat("current-jobs-reserved", reserved, Kind.GAUGE),
        Stat("current-jobs-delayed", delayed, Kind.GAUGE),
        Stat("current-jobs-buried", buried, Kind.GAUGE),
        Stat("total-jobs", total, Kind.COUNTER),
        Stat("current-using", using, Kind.GAUGE),
        Stat("current-watching", watching, Kind.GAUGE),
        Stat("current-waiting", waiting, Kind.GAUGE),
        Stat("cmd-delete", deletes, Kind.COUNTER),
        Stat("cmd-pause-tube", pauses, Kind.COUNTER),
        Stat("pause", pause, Kind.GAUGE),
        Stat("pause-time-left", time_left, Kind.GAUGE),
    ]


def tube_stats(tube: "Tube", waiting: int, now: int) -> list[Stat]:
    """stats-tube of one tube of the in-memory store (``waiting``: clients blocked on it)."""
    if tube.pause and tube.unpause_at > now:
        pause = tube.pause // NS
        time_left = (tube.unpause_at - now) // NS
    else:
        pause = 0
        time_left = 0
    return tube_stat_list(tube.name.decode("ascii"), tube.urgent_ct, len(tube.ready), len(tube.reserved),
                          len(tube.delayed), len(tube.buried), tube.total_jobs_ct, tube.using_ct,
                          tube.watching_ct, waiting, tube.delete_ct, tube.pause_ct, pause, time_left)


def _yaml_value(stat: Stat) -> str:
    value = stat.value
    if value is True or value is False:
        return "true" if value else "false"
    if stat.name in _QUOTED:
        return _quote(str(value))
    return str(value)


def render_yaml(stats: Iterable[Stat]) -> bytes:
    """The YAML body of stats, stats-job and stats-tube."""
    lines = ["---"]
    lines.extend(f"{stat.name}: {_yaml_value(stat)}" for stat in stats)
    lines.append("")
    return "\n".join(lines).encode()


def render_tube_list(names: Iterable[bytes]) -> bytes:
    """The YAML body of list-tubes and list-tubes-watched."""
    return b"---\n" + b"".join(b"- " + name + b"\n" for name in names)
