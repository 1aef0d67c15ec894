"""What each console form asks of the plane: bulk kick/delete/move, pause, put, one job's actions.

Forms arrive as ``application/x-www-form-urlencoded`` (what a plain HTML form
sends, so the console works without its script); each action turns one into
the plane's call and answers (flash message, where to go next), for the
Post/Redirect/Get in :mod:`.console`.  Checks of session, CSRF token and
role happen there, before any of this runs.  Mistakes are :class:`ApiError`
and become error flashes.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import parse_qs, quote

from starlette.requests import Request

from .api import ApiError, Plane, job_id, tube_name
from .auth import Principal
from .console_view import UI, job_url, tube_url

Form = dict[str, list[str]]
Outcome = tuple[str, str]  # (flash message, "" for none; the page to go to)
MAX_FORM = 1 << 20  # bytes of a form (a put's body is the big field)
# Bulk actions on a tube page: form value -> (plane action, past tense, states it applies to).
# Move first: the tube page lists them in this order, and Enter in its "to" field submits the first.
BULK = {
    "move": ("move", "moved", ("ready", "delayed", "buried")),
    "kick": ("kick", "kicked", ("buried", "delayed")),
    "delete": ("clear", "deleted", ("ready", "delayed", "buried")),
}
JOB_ACTIONS = {"kick": "kicked", "delete": "deleted", "bury": "buried", "move": "moved",
               "reprioritize": "reprioritized"}
# Which job actions the job page offers in each state (the plane decides; this only hides buttons).
JOB_BUTTONS = {
    "ready": ("delete", "bury", "move", "reprioritize"),
    "delayed": ("kick", "delete", "bury", "move", "reprioritize"),
    "buried": ("kick", "delete", "move", "reprioritize"),
    "reserved": (),
}


async def read_form(request: Request) -> Form:
    """An ``application/x-www-form-urlencoded`` body, at most :data:`MAX_FORM` bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "send the form as application/x-www-form-urlencoded")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_FORM:
            raise ApiError(413, f"the form is over {MAX_FORM} bytes")
    try:
        return parse_qs(data.decode("utf-8"), keep_blank_values=True, max_num_fields=20_000)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the form is not UTF-8 form data") from None


def one(form: Form, key: str, default: str = "") -> str:
    values = form.get(key)
    return values[0] if values else default


def whole(form: Form, key: str, default: Optional[int] = None) -> int:
    text = one(form, key).strip()
    if not text and default is not None:
        return default
    if not text.isdigit() or len(text) > 20:
        raise ApiError(400, f"{key}: a whole number, not {text!r}")
    return int(text)


def safe_back(url: Optional[str], default: str = f"{UI}/") -> str:
    """A path to go back to after a write or a login: only our own pages (no open redirect)."""
    if (not url or not url.startswith(f"{UI}/") or url.startswith("//") or "\\" in url
            or any(ord(c) < 32 for c in url)):
        return default
    return url


def plural(n: int, what: str = "job") -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


class Actions:
    """The console's writes, each through the plane (so logged, and in the binlog with -b)."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    async def dry_run(self, who: Principal, name: bytes, do: str, state: str, to: str) -> int:
        """How many jobs "all in ``state``" is now: the plane's dry run (which also checks ``to``)."""
        body: dict[str, Any] = {"state": state, "all": True, "dry_run": True}
        if do == "move":
            body["to"] = to
        answer = await self.plane.tube_action(who, name, BULK[do][0], body)
        return int(answer["count"])

    async def bulk(self, who: Principal, name: bytes, form: Form) -> Outcome:
        """Kick, delete or move the ticked jobs, or "all N": first the confirm page, then exactly N."""
        do, _, scope = one(form, "do").partition(":")
        state, to = one(form, "state"), one(form, "to").strip()
        text = name.decode("ascii")
        if do not in BULK or state not in BULK[do][2]:
            raise ApiError(400, f"cannot {do or 'do that to'} {state or 'such'} jobs")
        action, done_word, _ = BULK[do]
        if scope == "all":  # no write yet: count, and ask (a bad target is refused here already)
            await self.dry_run(who, name, do, state, to)
            query = "&".join(f"{k}={quote(v, safe='')}" for k, v in (("do", do), ("state", state), ("to", to)) if v)
            return "", f"{tube_url(text)}/confirm?{query}"
        body: dict[str, Any] = {"state": state}
        if do == "move":
            body["to"] = to
        if scope == "count":
            body["count"] = whole(form, "count")
        else:
            ids = [job_id(value) for value in form.get("id", [])]
            if not ids:
                raise ApiError(400, "tick some jobs first (or use the \"all\" buttons)")
            body["ids"] = ids
        answer = await self.plane.tube_action(who, name, action, body)
        message = f"{done_word} {plural(answer['count'])}" + (f" to {to}" if do == "move" else "")
        if answer.get("skipped"):
            message += f" ({plural(answer['skipped'])} had changed state or tube and were skipped)"
        return message, self.while_tube_lives(name, tube_url(text, state=state))

    def while_tube_lives(self, name: bytes, url: str) -> str:
        """``url`` if the tube is still there, else the overview (an emptied tube nobody watches is freed)."""
        try:
            self.plane.tube(name)
        except ApiError:
            return f"{UI}/"
        return url

    async def pause(self, who: Principal, name: bytes, form: Form) -> Outcome:
        delay = whole(form, "delay")
        await self.plane.tube_action(who, name, "pause", {"delay": delay})
        text = name.decode("ascii")
        message = f"paused {text} for {delay:,} s" if delay else f"unpaused {text}"
        return message, safe_back(one(form, "back"), tube_url(text))

    async def put(self, who: Principal, form: Form) -> Outcome:
        name = tube_name(one(form, "tube").strip())
        pri, delay, ttr = whole(form, "pri", 1024), whole(form, "delay", 0), whole(form, "ttr", 60)
        answer = await self.plane.put(who, name, one(form, "body").encode("utf-8"), pri, delay, ttr)
        text = name.decode("ascii")
        return f"put job {answer['id']} into {text}", tube_url(text, state="delayed" if delay else "ready")

    async def job(self, who: Principal, number: int, action: str, form: Form) -> Outcome:
        if action not in JOB_ACTIONS:
            raise ApiError(404, f"no job action {action!r}")
        tube = str(self.plane.job(number)["tube"])
        body: dict[str, Any] = {}
        if action == "move":
            body["to"] = one(form, "to").strip()
        elif action == "reprioritize":
            body["pri"] = whole(form, "pri")
        await self.plane.job_action(who, number, action, body)
        message = f"{JOB_ACTIONS[action]} job {number}"
        if action == "move":
            message += f" to {body['to']}"
        elif action == "reprioritize":
            message += f" (priority {body['pri']:,})"
        if action == "delete":
            return message, self.while_tube_lives(tube.encode("ascii"), tube_url(tube))
        return message, job_url(number)
