"""What the console shows, as display strings: the pages and the live-refresh JSON share them.

Every value is formatted here, once, in Python; the templates place the
strings and the browser script only copies them into the page.  So the first
render and a refresh two seconds later cannot disagree on a format, and the
script needs no formatting code of its own.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional
from urllib.parse import quote

UI = "/ui"
STATES = ("ready", "delayed", "reserved", "buried")
RATE_KINDS = ("put", "reserve", "delete")
MINUTES = 60  # the sparklines' hour, a count a minute

# The server page's groups, in order; stats keys in none of them go under "other".
SERVER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Server", ("version", "id", "hostname", "pid", "uptime", "os", "platform", "draining",
                "rusage-utime", "rusage-stime", "max-job-size")),
    ("Jobs", ("current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
              "current-jobs-buried", "total-jobs", "job-timeouts", "current-tubes")),
    ("Connections", ("current-connections", "current-producers", "current-workers", "current-waiting",
                     "total-connections")),
    ("Binlog", ("binlog-oldest-index", "binlog-current-index", "binlog-records-written",
                "binlog-records-migrated", "binlog-max-size")),
)
JOB_FIELDS = ("id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file",
              "reserves", "timeouts", "releases", "buries", "kicks")


def tube_url(name: str, **query: str) -> str:
    """A tube page's path: every character but letters and digits %-escaped ("/" too)."""
    url = f"{UI}/tubes/{quote(name, safe='')}"
    params = "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items() if value)
    return f"{url}?{params}" if params else url


def job_url(job_id: Any) -> str:
    return f"{UI}/jobs/{int(job_id)}"


def duration(seconds: Optional[float]) -> str:
    """A short human duration ("3m 12s"); "–" when there is none."""
    if seconds is None:
        return "–"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            rest = (whole % size) // smaller_size
            return f"{whole // size}{unit} {rest}{smaller}" if rest else f"{whole // size}{unit}"
    return f"{whole}s"  # not reached


def count(value: Any) -> str:
    """A whole number with thousands separators ("12,345")."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def size(value: Any) -> str:
    number = int(value)
    if number < 1024:
        return f"{number} B"
    if number < 1024 * 1024:
        return f"{number / 1024:.1f} KiB"
    return f"{number / (1024 * 1024):.1f} MiB"


def per_minute(rate: Any) -> str:
    """A jobs-per-second rate over the last minute, as jobs per minute (what the sparkline plots)."""
    try:
        value = float(rate) * 60
    except (TypeError, ValueError):
        return "–"
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _rates(tube: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, list[int]], str]:
    """Per-minute rates, the hour's per-minute counts (the script draws them) and the peak,
    from the plane's "rates" (absent or short: zeros)."""
    rates = tube.get("rates") or {}
    history = rates.get("history") or {}
    series = {}
    for kind in RATE_KINDS:
        values = [int(v) for v in (history.get(kind) or [])[-MINUTES:]]
        series[kind] = [0] * (MINUTES - len(values)) + values
    top = max(max(values) for values in series.values())
    return ({kind: per_minute(rates.get(kind, 0)) for kind in RATE_KINDS}, series,
            f"peak {count(top)}/min over the last hour" if top else "no traffic in the last hour")


def paused(tube: Mapping[str, Any]) -> str:
    """The paused badge's text ("" when not paused: the badge hides itself when empty)."""
    left = int(tube.get("pause-time-left") or 0)
    if int(tube.get("pause") or 0) > 0 and left > 0:
        return f"paused, {duration(left)} left"
    return ""


def tube_counts(tube: Mapping[str, Any]) -> dict[str, int]:
    return {state: int(tube.get(f"current-jobs-{state}") or 0) for state in STATES}


def tube_cells(tube: Mapping[str, Any], rated: Optional[tuple[dict[str, str], Any, str]] = None) -> dict[str, str]:
    """A tube's display strings, keyed as the page's ``data-cell`` attributes."""
    rates, _, peak = rated or _rates(tube)
    counts = tube_counts(tube)
    return {
        **{state: count(counts[state]) for state in STATES},
        "urgent": count(tube.get("current-jobs-urgent", 0)),
        "total": count(tube.get("total-jobs", 0)),
        "waiting": count(tube.get("current-waiting", 0)),
        "watching": count(tube.get("current-watching", 0)),
        "using": count(tube.get("current-using", 0)),
        "oldest": duration(tube.get("oldest-ready-age")),
        "paused": paused(tube),
        **{f"rate-{kind}": value for kind, value in rates.items()},
        "peak": peak,
    }


def tube_row(tube: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the tubes overview (also a live-refresh item)."""
    name = str(tube["name"])
    rated = _rates(tube)
    return {"name": name, "url": tube_url(name), "cells": tube_cells(tube, rated), "history": rated[1],
            "paused": bool(paused(tube))}


def job_row(job: Mapping[str, Any]) -> dict[str, Any]:
    """One row of a tube page's job list; the preview stays text for the template to escape."""
    hexed = job.get("preview_encoding") == "hex"
    return {"id": int(job["id"]), "url": job_url(job["id"]), "pri": count(job.get("pri", 0)),
            "age": duration(job.get("age")), "time_left": duration(job.get("time-left")),
            "size": size(job.get("size", 0)), "preview": str(job.get("preview", "")), "hex": hexed}


def job_cells(job: Mapping[str, Any]) -> dict[str, str]:
    """A job's stats-job fields as display strings."""
    out = {}
    for field in JOB_FIELDS:
        value = job.get(field)
        if field in ("age", "delay", "ttr", "time-left"):
            out[field] = duration(value) if value is not None else "–"
        elif field == "pri":
            out[field] = count(value)
        else:
            out[field] = "–" if value is None else str(value)
    return out


def stat_text(key: str, value: Any) -> str:
    if key == "uptime":
        return duration(value)
    if key in ("binlog-max-size", "max-job-size"):
        return size(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return count(value)
    return str(value)


def server_cells(stats: Mapping[str, Any]) -> dict[str, str]:
    return {key: stat_text(key, value) for key, value in stats.items()}


def server_groups(stats: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """The server page's sections: (title, stats keys present), "Commands" and "Other" last."""
    placed = {key for _, keys in SERVER_GROUPS for key in keys}
    groups = [(title, [key for key in keys if key in stats]) for title, keys in SERVER_GROUPS]
    commands = sorted(key for key in stats if key.startswith("cmd-"))
    other = [key for key in stats if key not in placed and not key.startswith("cmd-")]
    groups.append(("Commands", commands))
    if other:
        groups.append(("Other", other))
    return [(title, keys) for title, keys in groups if keys]


def hexdump(data: bytes, limit: int = 4096) -> str:
    """Offset, hex and printable ASCII, 16 bytes a line (a binary body on the job page)."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset:offset + 16]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexed:<47}  {text}")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit:,} more bytes")
    return "\n".join(lines)
