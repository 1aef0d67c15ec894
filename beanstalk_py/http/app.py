"""The HTTP routes (Starlette): paths, methods, bodies and errors; the work is in :mod:`.api`.

Every endpoint is ``async def``: Starlette runs plain functions in worker
threads, and the store belongs to the trio thread.  Errors are JSON
(``{"error": ...}``): 404 unknown path, 405 wrong method (with ``Allow``),
400 bad parameters, 401/403 from the guard, 409 a job in the wrong state,
415 a POST that is not JSON, 503 draining (``/readyz``) or a write the
binlog refused.

POSTs must say ``Content-Type: application/json``: a web page can send a
cross-site form or ``text/plain`` POST without asking, but not JSON, so on a
loopback listener without tokens a page the operator browses cannot make
writes.  For the same reason, without tokens the ``Host`` header must be a
loopback name (a rebound DNS name is refused).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import unquote_to_bytes

import trio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import CONTENT_TYPE
from .api import JOB_ACTIONS, ApiError, Plane, job_id, tube_name
from .console import console_routes, is_console_path
from .auth import VIEWER, Principal, Tokens, loopback_host
from .settings import HttpSettings
from .status import STATUS_PREFIX, status_route

MAX_BODY = 65536  # bytes of a POST body
# Bulk writes at once (each yields between slices; more would only queue
# more work in the same thread).
WRITERS = 4
TUBE_ACTIONS = ("kick", "clear", "move", "pause")
_PREFIX = b"/api/v1/tubes/"


def _json(content: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(content, status, headers={"Cache-Control": "no-store", **(headers or {})})


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None, **fields: Any) -> JSONResponse:
    return _json({"error": message, **fields}, status, headers)


class Guard:
    """Who is asking, before any route: tokens (401), or the loopback rule's Host check."""

    def __init__(self, app: ASGIApp, tokens: Optional[Tokens], local: Principal, check_host: bool,
                 read_only: bool = False) -> None:
        self.app = app
        self.tokens = tokens
        self.local = local
        self.check_host = check_host
        self.read_only = read_only  # --http-read-only: every requester is a viewer
        self.responses: Optional[dict[int, int]] = None  # answers by status, for /metrics

    @staticmethod
    def _counting(send: Send, responses: dict[int, int]) -> Send:
        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                responses[status] = responses.get(status, 0) + 1
            await send(message)
        return counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.responses is not None:
            send = self._counting(send, self.responses)
        if scope.get("path", "").startswith(STATUS_PREFIX):
            # The signed token in the path is the capability (status.py): no
            # bearer token, no Host check (pages behind a proxy use its name).
            scope.setdefault("state", {})["principal"] = Principal("status page", VIEWER)
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        principal: Optional[Principal] = self.local
        if self.tokens is not None:
            if is_console_path(scope.get("path", "")):
                principal = None  # the console's session cookie stands in for a token (console.py)
            elif scope.get("path") not in OPEN_PATHS:
                principal = self.tokens.check(headers.get("authorization"))
                if principal is None:
                    response = _error(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                                      {"WWW-Authenticate": 'Bearer realm="beanstalk-py"'})
                    await response(scope, receive, send)
                    return
        elif self.check_host and not loopback_host(headers.get("host")):
            await _error(403, "without --http-tokens only loopback host names are served")(scope, receive, send)
            return
        if self.read_only and principal is not None and principal.may_write:
            principal = Principal(principal.who, VIEWER)
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


# Probes say only "running" or "ready": a load balancer or systemd may ask
# without a token.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def make_app(plane: Plane, tokens: Optional[Tokens] = None, local: str = "loopback",
             check_host: bool = True, settings: Optional[HttpSettings] = None,
             status_secret: Optional[bytes] = None) -> ASGIApp:
    """The ASGI app for one plane.  ``local`` names requesters when there are no tokens;
    ``settings`` are the ``--http-*`` options (defaults when None, as in tests);
    ``status_secret`` the key of /status/{token} (None: /status is off, a 404)."""
    settings = settings or HttpSettings(spec="127.0.0.1:0")
    writers = trio.CapacityLimiter(WRITERS)

    def principal(request: Request) -> Principal:
        found: Principal = request.state.principal
        return found

    async def write(request: Request, run: Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]]) -> Response:
        who = principal(request)
        if not who.may_write:
            if settings.read_only:
                return _error(403, "this server runs with --http-read-only: no writes over HTTP")
            return _error(403, f"{who.who} is a viewer; writes need an operator token")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "send the body as Content-Type: application/json ({} for none)")
        body = await _read_body(request)
        async with writers:
            return _json(await run(who, body))

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if plane.ready():
            return _json({"status": "ready"})
        return _json({"status": "draining"}, 503)

    async def metrics(request: Request) -> Response:
        return Response(plane.metrics(), media_type=CONTENT_TYPE)

    async def stats(request: Request) -> Response:
        return _json(plane.stats())

    async def tubes(request: Request) -> Response:
        query = request.query_params
        return _json(plane.tubes(query.get("after"), query.get("limit")))

    async def tube_paths(request: Request) -> Response:
        # Split the raw path: a tube name may hold "/" (sent as %2F).
        raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
        parts = [unquote_to_bytes(part).decode("latin-1") for part in raw[len(_PREFIX):].split(b"/")]
        method = "GET" if request.method == "HEAD" else request.method
        if len(parts) == 1 and parts[0]:
            allowed, run = "GET", lambda: plane.tube(tube_name(parts[0]))
            if method == allowed:
                return _json(run())
        elif len(parts) == 2 and parts[0] and parts[1] == "jobs":
            allowed = "GET, POST"
            if method == "POST":
                name = tube_name(parts[0])
                return await write(request, lambda who, body: plane.put_json(who, name, body))
            if method == "GET":
                query = request.query_params
                return _json(plane.jobs(tube_name(parts[0]), query.get("state"), query.get("limit"),
                                        query.get("after"), query.get("q")))
        elif len(parts) == 2 and parts[0] and parts[1] in TUBE_ACTIONS:
            allowed = "POST"
            if method == allowed:
                name, action = tube_name(parts[0]), parts[1]
                return await write(request, lambda who, body: plane.tube_action(who, name, action, body))
        else:
            raise HTTPException(404)
        raise HTTPException(405, headers={"Allow": allowed})

    async def job(request: Request) -> Response:
        return _json(plane.job(job_id(request.path_params["job"])))

    async def job_action(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in JOB_ACTIONS:
            raise HTTPException(404)
        number = job_id(request.path_params["job"])
        return await write(request, lambda who, body: plane.job_action(who, number, action, body))

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message, exc.headers, **exc.fields)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        messages = {404: "no such path", 405: "method not allowed"}
        return _error(exc.status_code, messages.get(exc.status_code, exc.detail), dict(exc.headers or {}))

    async def internal_error(request: Request, exc: Exception) -> Response:
        return _error(500, "internal error (logged on the server)")

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/api/v1/stats", stats),
        Route("/api/v1/tubes", tubes),
        Route("/api/v1/tubes/{rest:path}", tube_paths, methods=["GET", "POST"]),
        Route("/api/v1/jobs/{job}", job),
        Route("/api/v1/jobs/{job}/{action}", job_action, methods=["POST"]),
        *([status_route(plane, status_secret, settings)] if status_secret is not None else []),
    ]
    app = Starlette(routes=[*routes, *console_routes(plane, settings, tokens)], exception_handlers={
        ApiError: api_error, HTTPException: http_error, Exception: internal_error,
    })
    guard = Guard(app, tokens, Principal(local, "operator"), check_host, settings.read_only)
    guard.responses = plane.http_responses
    return guard


async def _read_body(request: Request) -> dict[str, Any]:
    """The JSON object of a POST, at most :data:`MAX_BODY` bytes (empty: ``{}``)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"the body is over {MAX_BODY} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise ApiError(413, f"the body is over {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
