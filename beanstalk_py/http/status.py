"""``GET /status/{token}``: "is my job done?" for a web page, with no bearer token.

A web app puts a job, then hands its page ``make_status_token(secret, id)``.
The token is the capability: it names one job and is signed with the
``--http-status-secret`` key (HMAC-SHA256, 128 bits kept), so a page can ask
about that job only, never list others, and never sees a body or a tube.
That is why the guard (app.py) asks /status/ for neither a bearer token nor
a loopback ``Host`` (a page behind a proxy uses the proxy's host name).

A token that is malformed, forged or signed for another id is a 404 with
one fixed body, decided before the store is asked, so the answer never
says whether the id exists.  A valid token for an id the store does not know
is ``{"state": "unknown"}``.

The signing and the secret file need no framework (start-up reads the file
with the other ``--http`` files, before trio is imported: see main.py); the
route imports Starlette and trio only when the app is made, once serving.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import TYPE_CHECKING, Any, Optional

from ..private_file import PrivateFileError, read_private_file
from .auth import HttpConfigError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import Route

    from .api import Plane
    from .settings import HttpSettings

STATUS_PREFIX = "/status/"
OPTION = "--http-status-secret"
MIN_SECRET_BYTES = 16  # shorter keys are guessable: refused at start
MAX_SECRET_BYTES = 4096  # a bigger file is not a key (the wrong file given)

# The store's job states as a page shows them (resque-status' words);
# "deleted" is the store's bounded record of recently deleted ids.
PAGE_STATES = {"ready": "queued", "delayed": "delayed", "reserved": "working", "buried": "failed",
               "deleted": "done"}
UNKNOWN = "unknown"
SEEN_STATES = frozenset(PAGE_STATES.values()) | {UNKNOWN}

# The one body of every refused token (malformed, forged, another id's).
NOT_FOUND = {"error": "no such status token"}

# Long polls (?wait=N&seen=STATE) look at the job this often: one O(1) store
# lookup and a trio wake-up each, about 11 us.  Measured in-process on the
# 2-core test machine: 256 waiting polls took 1.4% of a core, 128 1.6% (noise).
POLL_INTERVAL_S = 0.2
# The longest wait.  Below hypercorn's read timeout (listener.READ_TIMEOUT_S,
# 30 s), which runs while an answer is pending: a 30 s wait would race it and
# the connection would close before the answer (tests check the margin).
MAX_WAIT_S = 25
# Long polls at once, beyond which a 503 (Retry-After: 1); never more than
# half the HTTP connection cap, so waiting pages cannot starve /healthz or the API.
MAX_LONG_POLLS = 256

# <id>.<22 characters of base64url>: ASCII digits only (str.isdigit takes "²"),
# no leading zero, so each id has exactly one token.
_TOKEN = re.compile(r"([1-9][0-9]{0,19})\.[A-Za-z0-9_-]{22}")


def make_status_token(secret: bytes, job_id: int) -> str:
    """The token a web app gives its page for job ``job_id`` (right after put)."""
    message = b"beanstalk-py status v1 " + str(job_id).encode()
    mac = hmac.new(secret, message, hashlib.sha256).digest()[:16]
    return f"{job_id}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify_status_token(secret: bytes, token: str) -> Optional[int]:
    """The job id a token was signed for, or None (malformed, forged, another id's)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    job_id = int(match[1])
    # The whole expected token, compared in constant time: the time taken
    # says nothing about how much of a forged MAC was right.
    expected = make_status_token(secret, job_id)
    return job_id if hmac.compare_digest(expected.encode(), token.encode()) else None


def load_status_secret(path: str) -> bytes:
    """The key of ``--http-status-secret``: the file's bytes, whitespace stripped.

    Refused (HttpConfigError, exit 2) as the token file is: group or others
    may read or write it, not a regular file, unreadable; and a key shorter
    than :data:`MIN_SECRET_BYTES` or a file over :data:`MAX_SECRET_BYTES`.
    """
    try:
        data = read_private_file(path, OPTION, MAX_SECRET_BYTES + 1)
    except PrivateFileError as exc:
        raise HttpConfigError(str(exc)) from exc
    if len(data) > MAX_SECRET_BYTES:
        raise HttpConfigError(f"{OPTION} {path}: over {MAX_SECRET_BYTES} bytes; the file should hold "
                              "only the key")
    secret = data.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise HttpConfigError(
            f"{OPTION} {path}: the key is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed "
            f"(make one: (umask 077; head -c 32 /dev/urandom | base64 > {path}))")
    return secret


def page_state(store_state: Optional[str]) -> str:
    """A store state (``job_state``) as the page sees it; None: unknown."""
    return PAGE_STATES.get(store_state, UNKNOWN) if store_state is not None else UNKNOWN


def wait_params(wait: Optional[str], seen: Optional[str]) -> tuple[int, Optional[str]]:
    """``?wait=N&seen=STATE``: seconds to wait (clamped to :data:`MAX_WAIT_S`) and
    the state the page shows (empty: none yet); ValueError (a 400) for anything else."""
    seconds = 0
    seen = seen or None  # a page's first ask may send seen= empty
    if wait is not None and wait != "":
        if not re.fullmatch(r"[0-9]{1,6}", wait):
            raise ValueError(f"wait: whole seconds (at most {MAX_WAIT_S}), not {wait!r}")
        seconds = min(int(wait), MAX_WAIT_S)
    if seen is not None and seen not in SEEN_STATES:
        raise ValueError(f"seen: one of {', '.join(sorted(SEEN_STATES))}, not {seen!r}")
    return seconds, seen


def long_poll_cap(max_connections: int) -> int:
    """Long polls at once: :data:`MAX_LONG_POLLS`, at most half the connection cap."""
    return max(1, min(MAX_LONG_POLLS, max_connections // 2))


def cors_headers(allowed: tuple[str, ...], origin: Optional[str]) -> dict[str, str]:
    """Who may read the answer: ``*``, or the request's Origin when listed
    (``Vary: Origin`` then, since the answer depends on it)."""
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    headers = {"Vary": "Origin"}
    if origin is not None and origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def status_route(plane: "Plane", secret: bytes, settings: "HttpSettings") -> "Route":
    """The route of ``/status/{token}`` (GET, HEAD and the CORS preflight)."""
    # Imported here, not at the top: start-up imports this module to read the
    # key, before trio and Starlette are imported (see the module docstring).
    import trio
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from .api import ApiError, now_value

    cap = long_poll_cap(settings.max_connections)
    polls = 0  # long polls waiting now

    def headers_for(request: "Request", extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        return {"Cache-Control": "no-store", **cors_headers(settings.cors_origins, request.headers.get("origin")),
                **(extra or {})}

    def answer(request: "Request", content: Any, status: int = 200,
               extra: Optional[dict[str, str]] = None) -> "Response":
        return JSONResponse(content, status, headers=headers_for(request, extra))

    def state_of(job_id: int) -> str:
        store_state: Optional[str] = now_value(plane.store.job_state(job_id))
        return page_state(store_state)

    def unchanged(job_id: int, seen: str) -> bool:
        try:
            return state_of(job_id) == seen
        except ApiError:
            return False  # stop waiting; the caller's own look answers the error

    async def until_gone(request: "Request", scope: trio.CancelScope) -> None:
        # Not Request.is_disconnected(): under trio it never sees the message
        # (a receive in a cancelled scope raises before it looks).
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def wait_for_change(request: "Request", job_id: int, seen: str, seconds: int) -> str:
        """The state once it differs from ``seen``, or after ``seconds``; a page
        that goes away frees its place at once (the answer then goes nowhere)."""
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_gone, request, nursery.cancel_scope)
                while unchanged(job_id, seen):
                    await trio.sleep(POLL_INTERVAL_S)
                nursery.cancel_scope.cancel()
        return state_of(job_id)

    async def status(request: "Request") -> "Response":
        nonlocal polls
        if request.method == "OPTIONS":
            # The preflight: the same for every token (it carries none that counts).
            return Response(status_code=204, headers=headers_for(request, {
                "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS", "Access-Control-Max-Age": "600"}))
        job_id = verify_status_token(secret, request.path_params["token"])
        if job_id is None:
            return answer(request, NOT_FOUND, 404)
        try:
            seconds, seen = wait_params(request.query_params.get("wait"), request.query_params.get("seen"))
        except ValueError as exc:
            return answer(request, {"error": str(exc)}, 400)
        try:
            state = state_of(job_id)
            if seconds and seen == state:
                if polls >= cap:
                    return answer(request, {"error": "too many pages are waiting; ask again"}, 503,
                                  {"Retry-After": "1"})
                polls += 1
                try:
                    state = await wait_for_change(request, job_id, seen, seconds)
                finally:
                    polls -= 1
        except ApiError as exc:
            return answer(request, {"error": exc.message}, exc.status)
        return answer(request, {"state": state})

    return Route(STATUS_PREFIX + "{token}", status, methods=["GET", "HEAD", "OPTIONS"])
