"""The web console at ``/ui/``: server-rendered pages over the :class:`~.api.Plane`.

Pages are Jinja2 templates (autoescaped: job bodies are anyone's bytes).  A
small script of our own (static/console.js) refreshes them every 2 s while
the tab is visible, from JSON under ``/ui/data/`` holding display strings
made by :mod:`.console_view`, so the page and its refreshes agree.

Security, because a console is what an attacker's page would aim at:
every ``/ui`` answer carries a strict Content-Security-Policy (no inline
script or style anywhere, so an escaped body that slipped through could
still not run); sessions and CSRF are :mod:`.console_auth`'s; every write is
a POST with the session's CSRF token, refused (403) without it, refused for
a viewer or under ``--http-read-only``, then done by :mod:`.console_actions`
through the plane and answered with a redirect and a flash message
(Post/Redirect/Get).  The Guard lets ``/ui`` through without a bearer token:
with ``--http-tokens`` a session stands in for it.

Each request does bounded work, as the API does: lists come from the plane's
paged calls, and a tube-name filter scans at most :data:`TUBE_SCAN` tubes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.resources
import inspect
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Union
from urllib.parse import quote, unquote_to_bytes

import trio
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import ApiError, Plane, job_id, tube_name
from .auth import VIEWER, Principal, Tokens
from .console_actions import BULK, JOB_BUTTONS, Actions, Form, Outcome, one, read_form, safe_back
from .console_auth import COOKIE_PATH, FLASH_COOKIE, NO_ROLE, SESSION_COOKIE, SESSION_SECONDS, Session, Signer
from .console_view import (RATE_KINDS, STATES, UI, hexdump, job_cells, job_row, job_url, server_cells,
                           server_groups, tube_cells, tube_counts, tube_row, tube_url)
from .settings import HttpSettings

try:
    import jinja2  # here, so it loads with the routes in start-up's import thread (listener.py)
except ImportError:  # the console then says how to install it (console_routes)
    pass

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TUBE_PAGE = 100  # tubes on one overview page
TUBE_SCAN = 2000  # tubes one filtered overview request looks at before it offers "more"
JOB_PAGE = 50
WRITERS = 4  # console writes at once, as app.py's
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png"}


class SecurityHeaders:
    """Adds the console's security headers to every ``/ui`` answer, errors and files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class Visit:
    """Who is asking and with which session; what to set on the answer."""

    principal: Optional[Principal]
    session: Optional[Session]
    new_session: bool  # set the session cookie on the answer
    flash: Optional[tuple[str, str]]


@dataclass(frozen=True)
class StaticFile:
    data: bytes
    media_type: str
    version: str  # a digest, for the URL: files may be cached a day


def load_static() -> dict[str, StaticFile]:
    """The console's own CSS, script and icon, read once (tiny; served from memory)."""
    out = {}
    for entry in importlib.resources.files("beanstalk_py.http").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            data = entry.read_bytes()
            out[entry.name] = StaticFile(data, STATIC_TYPES[suffix], hashlib.sha256(data).hexdigest()[:12])
    return out


def _here(request: Request) -> str:
    """This page's path and query as sent: still %-escaped, so a tube name's "/" stays "%2F"."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query = request.url.query
    return raw.decode("latin-1") + (f"?{query}" if query else "")


def _path_parts(request: Request, prefix: bytes) -> list[str]:
    """The %-decoded segments after ``prefix`` of the raw path: a tube name may hold "/" (as %2F)."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote_to_bytes(part).decode("latin-1") for part in raw[len(prefix):].split(b"/")]


class Console:
    """The console of one plane: its templates, session signer, static files and routes."""

    def __init__(self, plane: Plane, settings: HttpSettings, tokens: Optional[Tokens],
                 environment: jinja2.Environment, signer: Optional[Signer] = None) -> None:
        self.plane = plane
        self.settings = settings
        self.tokens = tokens
        self.signer = signer or Signer()
        self.static = load_static()
        self.writers = trio.CapacityLimiter(WRITERS)
        self.actions = Actions(plane)
        self.env = environment
        self.env.globals.update(static=self.static_url, tube_url=tube_url, job_url=job_url, UI=UI,
                                STATES=STATES, RATE_KINDS=RATE_KINDS)

    # ------------------------------------------------------------------ plumbing

    def static_url(self, name: str) -> str:
        found = self.static.get(name)
        return f"{UI}/static/{name}?v={found.version}" if found else f"{UI}/static/{name}"

    def visit(self, request: Request) -> Visit:
        """The requester: the Guard's principal without tokens, else the session's."""
        session = self.signer.session(request.cookies.get(SESSION_COOKIE))
        flash = self.signer.flash(request.cookies.get(FLASH_COOKIE))
        new = False
        if self.tokens is None:
            principal: Optional[Principal] = getattr(request.state, "principal", None)
            if principal is not None and (session is None or (session.who, session.role)
                                          != (principal.who, principal.role)):
                session, new = self.signer.new_session(principal.who, principal.role), True
        else:
            principal = session.principal if session is not None else None
            if principal is not None and self.settings.read_only and principal.may_write:
                principal = Principal(principal.who, VIEWER)
        return Visit(principal, session, new, flash)

    def _cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")

    def _finish(self, request: Request, visit: Visit, response: Response) -> Response:
        if visit.new_session and visit.session is not None:
            self._cookie(request, response, SESSION_COOKIE, self.signer.session_cookie(visit.session),
                         SESSION_SECONDS)
        if visit.flash is not None and FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    def read_only_reason(self, principal: Optional[Principal]) -> str:
        if principal is None or principal.may_write:
            return ""
        if self.settings.read_only:
            return "this server runs with --http-read-only: the console only reads"
        return f"{principal.who} is a viewer: the console only reads"

    def render(self, request: Request, visit: Visit, template: str, status: int = 200,
               **context: Any) -> Response:
        principal = visit.principal
        page = self.env.get_template(template).render(
            principal=principal, may_write=principal is not None and principal.may_write,
            read_only=self.read_only_reason(principal),
            csrf=self.signer.csrf(visit.session) if visit.session is not None else "",
            flash=visit.flash, can_logout=self.tokens is not None and principal is not None,
            here=_here(request), **context)
        return self._finish(request, visit, HTMLResponse(page, status))

    def error_page(self, request: Request, visit: Visit, status: int, message: str = "", back: str = f"{UI}/",
                   ) -> Response:
        return self.render(request, visit, "error.html", status, code=status, message=message, back=back)

    def redirect(self, request: Request, url: str, flash: Optional[tuple[str, str]] = None) -> Response:
        response = RedirectResponse(url, 303)
        if flash is not None:
            self._cookie(request, response, FLASH_COOKIE, self.signer.flash_cookie(*flash), 60)
        return response

    def to_login(self, request: Request) -> Response:
        return RedirectResponse(f"{UI}/login?next={quote(safe_back(_here(request)), safe='')}", 303)

    def page(self, handler: Callable[[Request, Visit], Union[Response, Awaitable[Response]]],
             ) -> Callable[[Request], Awaitable[Response]]:
        """A page for a known requester: without one, the login page (or 403 without tokens)."""
        async def endpoint(request: Request) -> Response:
            visit = self.visit(request)
            if visit.principal is None:
                if self.tokens is None:
                    raise ApiError(403, "no principal for this request")
                return self.to_login(request)
            answer = handler(request, visit)
            return await answer if inspect.isawaitable(answer) else answer
        return endpoint

    def data(self, handler: Callable[[Request], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
        """A live-refresh JSON endpoint: 401 without a session; a missing thing is ``{"gone": ...}``
        with 200 (a 404 would put an error in the browser's console every 2 s)."""
        async def endpoint(request: Request) -> Response:
            if self.visit(request).principal is None:
                return JSONResponse({"error": "log in again"}, 401)
            try:
                return JSONResponse(handler(request))
            except ApiError as exc:
                if exc.status == 404:
                    return JSONResponse({"gone": exc.message})
                return JSONResponse({"error": exc.message}, exc.status)
        return endpoint

    def write(self, run: Callable[[Request, Principal, Form], Awaitable[Outcome]],
              ) -> Callable[[Request], Awaitable[Response]]:
        """A POST that changes the queue: session, CSRF token and role checked, then
        Post/Redirect/Get with a flash message.  ``run`` answers (message, where to go);
        an :class:`ApiError` becomes an error flash.  A script's POST (it sends the token
        as ``X-CSRF-Token``) gets JSON instead of a redirect."""
        async def endpoint(request: Request) -> Response:
            visit = self.visit(request)
            script = "x-csrf-token" in request.headers
            form = await read_form(request)
            token = request.headers.get("x-csrf-token") if script else one(form, "csrf")
            back = safe_back(one(form, "back"))

            def refuse(status: int, message: str) -> Response:
                if script:
                    return JSONResponse({"ok": False, "message": message}, status)
                return self.error_page(request, visit, status, message, back)

            if visit.principal is None:
                return refuse(403, "your session has ended: log in again")
            if visit.new_session or not self.signer.csrf_ok(visit.session, token):
                return refuse(403, "the form was stale or came from another site (no valid CSRF token): "
                                   "reload the page and try again")
            if not visit.principal.may_write:
                return refuse(403, self.read_only_reason(visit.principal))
            try:
                async with self.writers:
                    message, where = await run(request, visit.principal, form)
                kind, status = "ok", 200
            except ApiError as exc:
                kind, message, where, status = "error", exc.message, back, exc.status
            if script:
                return JSONResponse({"ok": kind == "ok", "message": message}, status)
            return self.redirect(request, where, (kind, message) if message else None)
        return endpoint

    # ------------------------------------------------------------------ login

    async def login_page(self, request: Request) -> Response:
        if self.tokens is None:
            return RedirectResponse(f"{UI}/", 303)
        visit = self.visit(request)
        next_url = safe_back(request.query_params.get("next"))
        if visit.principal is not None:
            return RedirectResponse(next_url, 303)
        if visit.session is None:  # an anonymous session carries the login form's CSRF token
            visit.session, visit.new_session = self.signer.new_session("", NO_ROLE, 3600), True
        return self.render(request, visit, "login.html", next=next_url)

    async def login(self, request: Request) -> Response:
        if self.tokens is None:
            return RedirectResponse(f"{UI}/", 303)
        visit = self.visit(request)
        form = await read_form(request)
        next_url = safe_back(one(form, "next"))
        if not self.signer.csrf_ok(visit.session, one(form, "csrf")):
            return self.error_page(request, visit, 403, "the login form was stale or came from another site: "
                                   "try again", f"{UI}/login")
        principal = self.tokens.check(f"Bearer {one(form, 'token').strip()}")
        if principal is None:
            return self.redirect(request, f"{UI}/login?next={quote(next_url, safe='')}",
                                 ("error", "that token is not valid"))
        response = self.redirect(request, next_url)
        # A new session id at login: a session fixed before it is worth nothing after.
        session = self.signer.new_session(principal.who, principal.role)
        self._cookie(request, response, SESSION_COOKIE, self.signer.session_cookie(session), SESSION_SECONDS)
        return response

    async def logout(self, request: Request) -> Response:
        visit = self.visit(request)
        form = await read_form(request)
        if not self.signer.csrf_ok(visit.session, one(form, "csrf")):
            return self.error_page(request, visit, 403, "no valid CSRF token: reload the page and try again")
        response = self.redirect(request, f"{UI}/login" if self.tokens is not None else f"{UI}/",
                                 ("ok", "logged out"))
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ reads

    def _tube_rows(self, name_filter: str, after: Optional[str]) -> tuple[list[dict[str, Any]], Optional[str]]:
        """A page of overview rows (and where the next starts), by name, filtered by substring."""
        if not name_filter:
            page = self.plane.tubes(after, str(TUBE_PAGE))
            return [tube_row(tube) for tube in page["tubes"]], page["next"]
        rows: list[dict[str, Any]] = []
        scanned, cursor = 0, after
        needle = name_filter.lower()
        while True:
            page = self.plane.tubes(cursor, "500")
            for tube in page["tubes"]:
                scanned += 1
                if needle in str(tube["name"]).lower():
                    rows.append(tube_row(tube))
                    if len(rows) == TUBE_PAGE:
                        more = page["next"] is not None or tube is not page["tubes"][-1]
                        return rows, str(tube["name"]) if more else None
            cursor = page["next"]
            if cursor is None or scanned >= TUBE_SCAN:
                return rows, cursor

    def _summary(self) -> dict[str, str]:
        stats = self.plane.stats()
        cells = server_cells(stats)
        return {f"all-{key}": cells.get(key, "–") for key in (
            "current-jobs-ready", "current-jobs-urgent", "current-jobs-reserved", "current-jobs-delayed",
            "current-jobs-buried", "current-tubes", "current-connections", "current-workers",
            "current-waiting", "uptime")}

    def overview(self, request: Request, visit: Visit) -> Response:
        name_filter = request.query_params.get("filter", "").strip()
        after = request.query_params.get("after") or None
        rows, next_after = self._tube_rows(name_filter, after)
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in (("filter", name_filter), ("after", after or ""))
                         if v)
        return self.render(request, visit, "tubes.html", nav="tubes", rows=rows, next_after=next_after,
                           after=after, filter=name_filter, summary=self._summary(),
                           live=f"{UI}/data/tubes" + (f"?{query}" if query else ""),
                           blank=tube_row({"name": ""}))

    def overview_data(self, request: Request) -> dict[str, Any]:
        rows, next_after = self._tube_rows(request.query_params.get("filter", "").strip(),
                                           request.query_params.get("after") or None)
        return {"rows": rows, "next": next_after, "cells": self._summary()}

    async def tubes(self, request: Request) -> Response:
        """``/ui/tubes/{tube}`` (a page) and ``/ui/tubes/{tube}/confirm`` (a bulk write's confirm step)."""
        parts = _path_parts(request, f"{UI}/tubes/".encode())
        if not parts[0] or len(parts) > 2 or (len(parts) == 2 and parts[1] != "confirm"):
            raise HTTPException(404)
        name = tube_name(parts[0])
        handler = self.tube_page if len(parts) == 1 else self.confirm_page
        return await self.page(lambda request, visit: handler(request, visit, name))(request)

    def tube_page(self, request: Request, visit: Visit, name: bytes) -> Response:
        query = request.query_params
        tube = self.plane.tube(name)
        state = query.get("state") or "ready"
        if state not in STATES:
            raise ApiError(400, f"state: one of {', '.join(STATES)}, not {state!r}")
        search = query.get("q", "")
        after = query.get("after") or None
        listing = (self.plane.jobs(name, state, str(JOB_PAGE), after, search) if search
                   else self.plane.jobs(name, state, str(JOB_PAGE), after))
        text = name.decode("ascii")
        return self.render(request, visit, "tube.html", nav="tubes", tube=tube, name=text,
                           cells=tube_cells(tube), counts=tube_counts(tube), state=state, search=search,
                           after=after, jobs=[job_row(job) for job in listing["jobs"]], next_after=listing["next"],
                           scanned=listing.get("scanned"), bulk=[k for k, v in BULK.items() if state in v[2]],
                           live=f"{UI}/data/tubes/{quote(text, safe='')}")

    async def confirm_page(self, request: Request, visit: Visit, name: bytes) -> Response:
        """How many jobs "all in this state" is now (a dry run), and a form to do it to exactly that many."""
        assert visit.principal is not None
        query = request.query_params
        do, state, to = query.get("do", ""), query.get("state", ""), query.get("to", "").strip()
        text = name.decode("ascii")
        back = tube_url(text, state=state)
        if not visit.principal.may_write:
            raise ApiError(403, self.read_only_reason(visit.principal))
        if do not in BULK or state not in BULK[do][2]:
            raise ApiError(400, f"cannot {do or 'do that to'} all {state or 'such'} jobs")
        count = await self.actions.dry_run(visit.principal, name, do, state, to)
        return self.render(request, visit, "confirm.html", nav="tubes", name=text, do=do, state=state, to=to,
                           count=count, back=back)

    def tube_data(self, request: Request) -> dict[str, Any]:
        parts = _path_parts(request, f"{UI}/data/tubes/".encode())
        if len(parts) != 1 or not parts[0]:
            raise ApiError(404, "no such path")
        return {"cells": tube_cells(self.plane.tube(tube_name(parts[0])))}

    def job_page(self, request: Request, visit: Visit) -> Response:
        number = job_id(request.path_params["job"])
        job = self.plane.job(number)
        body_text, pretty, dump = None, None, None
        if job.get("encoding") == "text":
            body_text = str(job.get("body", ""))
            pretty = _pretty_json(body_text)
        else:
            try:
                dump = hexdump(base64.b64decode(str(job.get("body", ""))))
            except (ValueError, binascii.Error):
                dump = ""
        state = str(job.get("state", ""))
        return self.render(request, visit, "job.html", nav="tubes", job=job, number=number,
                           cells=job_cells(job), tube=str(job.get("tube", "")), state=state,
                           body_text=body_text, pretty=pretty, dump=dump, buttons=JOB_BUTTONS.get(state, ()),
                           live=f"{UI}/data/jobs/{number}")

    def job_data(self, request: Request) -> dict[str, Any]:
        return {"cells": job_cells(self.plane.job(job_id(request.path_params["job"])))}

    def server_page(self, request: Request, visit: Visit) -> Response:
        stats = self.plane.stats()
        return self.render(request, visit, "server.html", nav="server", groups=server_groups(stats),
                           cells=server_cells(stats), settings=self.settings, tokens=self.tokens is not None,
                           https=request.url.scheme == "https", live=f"{UI}/data/stats")

    def stats_data(self, request: Request) -> dict[str, Any]:
        return {"cells": server_cells(self.plane.stats())}

    def find(self, request: Request, visit: Visit) -> Response:
        """The header's box: a job id opens the job, a tube name the tube."""
        wanted = request.query_params.get("q", "").strip().lstrip("#")
        if wanted.isdigit() and len(wanted) <= 20:
            return RedirectResponse(job_url(wanted), 303)
        try:
            name = tube_name(wanted)
        except ApiError:
            return self.redirect(request, f"{UI}/", ("error", f"not a job id or a tube name: {wanted!r}"))
        return RedirectResponse(tube_url(name.decode("ascii")), 303)

    async def static_file(self, request: Request) -> Response:
        found = self.static.get(request.path_params["name"])
        if found is None:
            raise HTTPException(404)
        return Response(found.data, media_type=found.media_type,
                        headers={"Cache-Control": "public, max-age=86400"})

    # ------------------------------------------------------------------ writes

    async def tube_write(self, request: Request) -> Response:
        """POST ``/ui/tubes/{tube}/bulk`` or ``/pause``."""
        parts = _path_parts(request, f"{UI}/tubes/".encode())
        if len(parts) != 2 or not parts[0] or parts[1] not in ("bulk", "pause"):
            raise HTTPException(404)
        name = tube_name(parts[0])
        run = self.actions.bulk if parts[1] == "bulk" else self.actions.pause
        return await self.write(lambda request, who, form: run(who, name, form))(request)

    async def put(self, request: Request, who: Principal, form: Form) -> Outcome:
        return await self.actions.put(who, form)

    async def job_write(self, request: Request, who: Principal, form: Form) -> Outcome:
        return await self.actions.job(who, job_id(request.path_params["job"]), request.path_params["action"], form)

    # ------------------------------------------------------------------ errors and routes

    async def api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, (ApiError, HTTPException))
        if isinstance(exc, ApiError):
            status, message = exc.status, exc.message
        else:
            status = exc.status_code
            message = {404: "no such page", 405: "method not allowed"}.get(status, str(exc.detail))
        visit = self.visit(request)
        return self.error_page(request, visit, status, message)

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.page(self.overview)),
            Route("/login", self.login_page),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/server", self.page(self.server_page)),
            Route("/find", self.page(self.find)),
            Route("/put", self.write(self.put), methods=["POST"]),
            Route("/jobs/{job}", self.page(self.job_page)),
            Route("/jobs/{job}/{action}", self.write(self.job_write), methods=["POST"]),
            Route("/tubes/{rest:path}", self.tubes),
            Route("/tubes/{rest:path}", self.tube_write, methods=["POST"]),
            Route("/data/stats", self.data(self.stats_data)),
            Route("/data/tubes", self.data(self.overview_data)),
            Route("/data/tubes/{rest:path}", self.data(self.tube_data)),
            Route("/data/jobs/{job}", self.data(self.job_data)),
            Route("/static/{name}", self.static_file),
        ]
        app = Starlette(routes=routes, exception_handlers={ApiError: self.api_error,
                                                           HTTPException: self.api_error})
        return SecurityHeaders(app)


def _pretty_json(text: str) -> Optional[str]:
    """A body that is a JSON object or array, indented; None for anything else."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
    except ValueError:
        return None


def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("beanstalk_py.http", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


async def _without_jinja(request: Request) -> Response:
    return Response("The web console needs Jinja2: pip install 'beanstalk-py[http]'\n", 503,
                    media_type="text/plain", headers=SECURITY_HEADERS)


async def _to_index(request: Request) -> Response:
    return RedirectResponse(f"{UI}/", 308, headers=SECURITY_HEADERS)


def console_routes(plane: Plane, settings: HttpSettings, tokens: Optional[Tokens]) -> list[BaseRoute]:
    """The ``/ui`` routes for :func:`.app.make_app`; without Jinja2, a page that says to install it."""
    try:
        environment = _environment()
    except ImportError:
        return [Route("/ui", _without_jinja), Route("/ui/{rest:path}", _without_jinja, methods=["GET", "POST"])]
    console = Console(plane, settings, tokens, environment)
    return [Route("/ui", _to_index), Mount(UI, app=console.app())]


def is_console_path(path: str) -> bool:
    """Whether the Guard lets a request through without a bearer token: the console checks its own session."""
    return path == UI or path.startswith(f"{UI}/")
