"""Turning replies into output: typed JSON values, job bodies, the tubes and jobs tables.

Shared by the one-shot commands and ``top``, so both show a tube the same way.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Callable, Optional, Union

Value = Union[int, float, bool, str]
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
# Fields that are text even when they look like numbers ("1.12" is a version,
# a tube may be named "42", the server id is hex that may be all digits).
STATS_TEXT = frozenset({"version", "hostname", "os", "platform", "id"})
TUBE_TEXT = frozenset({"name"})
JOB_TEXT = frozenset({"tube", "state"})


def typed(stats: dict[str, str], text: frozenset[str]) -> dict[str, Value]:
    """Stats with numbers as numbers and true/false as booleans, for ``--json``;
    the keys in ``text`` stay strings."""
    out: dict[str, Value] = {}
    for key, raw in stats.items():
        value: Value = raw
        if key in text:
            pass
        elif _INT.fullmatch(raw):
            value = int(raw)
        elif _FLOAT.fullmatch(raw):
            value = float(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        out[key] = value
    return out


def body_fields(body: bytes) -> dict[str, Union[str, bool]]:
    """A job body for JSON: text when it is UTF-8, else base64 flagged ``body_b64``."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "body_b64": True}


def decode_body(record: dict[str, object], where: str) -> bytes:
    """The inverse of :func:`body_fields`; ``ValueError`` says what is wrong."""
    body = record.get("body")
    if not isinstance(body, str):
        raise ValueError(f"{where}: \"body\" must be a string")
    if record.get("body_b64", False) is True:
        try:
            return base64.b64decode(body.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise ValueError(f"{where}: \"body\" is not valid base64") from None
    return body.encode("utf-8")


def duration(seconds: int) -> str:
    """``3d 04:05:06`` / ``4:05:06``: uptime as top shows it."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


# ---------------------------------------------------------------------- the tubes table


def own_share(tube: str, stats: dict[str, str]) -> dict[str, str]:
    """stats-tube without the admin's own connection, which uses and watches
    ``default`` like every connection: an idle server shows zeros."""
    if tube != "default":
        return stats
    out = dict(stats)
    for key in ("current-using", "current-watching"):
        if out.get(key, "").isdigit() and int(out[key]) > 0:
            out[key] = str(int(out[key]) - 1)
    return out


@dataclass(frozen=True)
class Column:
    title: str
    get: Callable[[str, dict[str, str]], str]  # (tube, stats-tube) -> cell
    left: bool = False


def _field(key: str) -> Callable[[str, dict[str, str]], str]:
    return lambda _tube, stats: stats.get(key, "?")


TUBE_COLUMNS = [
    Column("TUBE", lambda tube, _stats: tube, left=True),
    Column("READY", _field("current-jobs-ready")),
    Column("RESERVED", _field("current-jobs-reserved")),
    Column("DELAYED", _field("current-jobs-delayed")),
    Column("BURIED", _field("current-jobs-buried")),
    Column("URGENT", _field("current-jobs-urgent")),
    Column("PAUSE", _field("pause")),
    Column("LEFT", _field("pause-time-left")),
    Column("WAITING", _field("current-waiting")),
    Column("USING", _field("current-using")),
    Column("WATCHING", _field("current-watching")),
]


def table(columns: list[Column], rows: list[tuple[str, dict[str, str]]], width: Optional[int] = None,
          name_width: Optional[int] = None) -> list[str]:
    """Aligned lines, title first.  With ``width``, columns that do not fit are
    left out from the right (the tube name and the first counts always stay)
    and lines are cut at ``width``; ``name_width`` caps the TUBE column."""
    cells = [[col.get(tube, stats) for col in columns] for tube, stats in rows]
    widths = [max([len(col.title)] + [len(row[i]) for row in cells]) for i, col in enumerate(columns)]
    if name_width is not None and columns and columns[0].left:
        widths[0] = min(widths[0], max(4, name_width))
    keep = len(columns)
    if width is not None:
        total = 0
        for i, w in enumerate(widths):
            total += w + (2 if i else 0)
            if total > width and i >= 2:
                keep = i
                break
    out = []
    for row in [[col.title for col in columns]] + cells:
        parts = []
        for i in range(keep):
            text = row[i]
            if len(text) > widths[i]:
                text = text[: widths[i] - 1] + "~"
            parts.append(text.ljust(widths[i]) if columns[i].left else text.rjust(widths[i]))
        line = "  ".join(parts).rstrip()
        out.append(line[:width] if width is not None else line)
    return out


# ---------------------------------------------------------------------- the jobs table

PREVIEW_CHARS = 60  # of a body preview in the jobs table


def preview_cell(job: dict[str, object]) -> str:
    """A job list's body preview on one line: text with control characters
    escaped (as JSON escapes them), ``hex:`` and hex digits when not UTF-8,
    ``...`` when the body goes on."""
    text = str(job.get("preview", ""))
    if job.get("preview_encoding") == "hex":
        shown, complete = "hex:" + text, len(text) // 2 == job.get("size")
    else:
        shown, complete = json.dumps(text, ensure_ascii=False)[1:-1], len(text.encode()) == job.get("size")
    if len(shown) > PREVIEW_CHARS:
        shown, complete = shown[:PREVIEW_CHARS], False
    return shown if complete else shown + "..."


def job_cells(job: dict[str, object]) -> dict[str, str]:
    """The cells of one job of ``/api/v1/tubes/{tube}/jobs`` for :data:`JOB_COLUMNS`."""
    return {"id": str(job.get("id", "?")), "pri": str(job.get("pri", "?")), "age": str(job.get("age", "?")),
            "time-left": str(job.get("time-left", "?")), "size": str(job.get("size", "?")),
            "body": preview_cell(job)}


JOB_COLUMNS = [
    Column("ID", _field("id")),
    Column("PRI", _field("pri")),
    Column("AGE", _field("age")),
    Column("TIME-LEFT", _field("time-left")),
    Column("SIZE", _field("size")),
    Column("BODY", _field("body"), left=True),
]
