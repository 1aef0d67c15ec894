"""The web console (/ui/) over real sockets, checked against greenstalk: every page
renders with the strict CSP and no inline code, hostile bodies are escaped,
writes need the session's CSRF token (403 without) and go through the queue,
bulk "all" writes confirm a dry-run count first, login with --http-tokens gives
a signed session cookie, and viewers / --http-read-only see no write controls
and are refused (403)."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import greenstalk
import pytest
import trustme

from conftest import Daemon, free_port, start_beanstalk_py
from console_rig import Browser, check_headers, flash
from http_rig import Http, start_with_http

pytestmark = pytest.mark.daemon

VIEWER = "viewer-6a1f0c3e9b2d4875"
OPERATOR = "operator-d2c47e8a15f9b360"
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">&amp;'


@pytest.fixture(scope="module")
def plain() -> Iterator[tuple[Daemon, Http]]:
    """One daemon with --http and no tokens (the loopback principal, an operator)."""
    daemon, http = start_with_http()
    try:
        yield daemon, http
    finally:
        assert daemon.stop() == 0


@pytest.fixture
def with_tokens(tmp_path: Path) -> Iterator[tuple[Daemon, Http]]:
    path = tmp_path / "tokens"
    path.write_text(f"{VIEWER} viewer\n{OPERATOR} operator\n")
    path.chmod(0o600)
    daemon, http = start_with_http("--http-tokens", str(path))
    try:
        yield daemon, http
    finally:
        assert daemon.stop() == 0


def client(daemon: Daemon, tube: str) -> greenstalk.Client:
    return greenstalk.Client(daemon.address, use=tube, watch=tube)


def stats_tube(daemon: Daemon, tube: str) -> dict:
    """stats-tube by greenstalk; a freed tube (emptied, unwatched) reads as all zeros."""
    with client(daemon, "default") as c:
        try:
            return c.stats_tube(tube)
        except greenstalk.NotFoundError:
            return {"current-jobs-ready": 0, "current-jobs-buried": 0, "current-jobs-delayed": 0, "pause": 0}


def test_every_page_renders_with_csp_and_no_inline_code(plain: tuple[Daemon, Http]) -> None:
    daemon, http = plain
    tube = "pages/a+b;c$(d)"  # every character that needs %-escaping in a path
    with client(daemon, tube) as c:
        first = c.put("hello")
        c.put("later", delay=600)
        buried = c.put("to bury")
        assert c.reserve(timeout=1).id == first  # held: reserved
        c.bury(c.reserve(timeout=1))
        browser = Browser(http.port)
        overview = browser.page("/ui/")
        url = f"/ui/tubes/{quote(tube, safe='')}"
        assert f'href="{url}"' in overview.text and "pages/a+b;c$(d)" in overview.text
        for state in ("ready", "delayed", "reserved", "buried"):
            page = browser.page(f"{url}?state={state}")
            assert 'aria-current="page"' in page.text
        # Forms come back to this page as it was asked for: the name's "/" still %2F.
        page = browser.page(f"{url}?state=ready")
        assert f'name="back" value="{url}?state=ready"' in page.text
        paused = browser.post(f"{url}/pause", {"csrf": page.csrf, "delay": "0", "back": f"{url}?state=ready"})
        assert paused.header("location") == f"{url}?state=ready"
        assert flash(browser.follow(paused)) == f"ok: unpaused {tube}"
        assert f'href="/ui/jobs/{first}"' in browser.page(f"{url}?state=reserved").text
        assert f'href="/ui/jobs/{buried}"' in browser.page(f"{url}?state=buried").text
        job = browser.page(f"/ui/jobs/{first}")
        assert "Job " + str(first) in job.text and "reserved" in job.text
        server = browser.page("/ui/server")
        assert "binlog-current-index" in server.text and "current-connections" in server.text
        # The header's find box: an id opens the job, a name the tube.
        assert browser.get(f"/ui/find?q={first}").header("location") == f"/ui/jobs/{first}"
        assert browser.get(f"/ui/find?q={quote(tube)}").header("location") == url
        assert flash(browser.follow(browser.get("/ui/find?q=%3Cb%3E"))) == "error: not a job id or a tube name: &#39;&lt;b&gt;&#39;"
        # Errors are pages too, with the same headers.
        for path, status in (("/ui/jobs/999999", 404), ("/ui/tubes/nope", 404), ("/ui/nothing", 404),
                             (f"{url}?state=sleeping", 400)):
            answer = browser.get(path)
            assert answer.status == status, path
            check_headers(answer)
        # Static files: no session needed, the right types, the same headers.
        for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript"),
                           ("favicon.svg", "image/svg+xml")):
            answer = Browser(http.port).get(f"/ui/static/{name}")
            assert answer.status == 200 and answer.header("content-type").startswith(kind)
            check_headers(answer)
        assert Browser(http.port).get("/ui").header("location") == "/ui/"


def test_hostile_bodies_are_escaped(plain: tuple[Daemon, Http]) -> None:
    daemon, http = plain
    with client(daemon, "hostile") as c:
        job = c.put(HOSTILE)
        json_job = c.put('{"to": "<b>x</b>", "n": [1, 2]}')
        binary = c.put(b"\x89PNG\xff<script>".decode("latin-1").encode("latin-1"))
    browser = Browser(http.port)
    for page in (browser.page("/ui/tubes/hostile"), browser.page(f"/ui/jobs/{job}")):
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&#34;alert(2)&#34;&gt;&amp;amp;" in page.text
    pretty = browser.page(f"/ui/jobs/{json_job}")
    assert "&#34;to&#34;: &#34;&lt;b&gt;x&lt;/b&gt;&#34;" in pretty.text and "<b>x</b>" not in pretty.text
    hexed = browser.page(f"/ui/jobs/{binary}")
    assert "89 50 4e 47 ff 3c 73 63" in hexed.text and "<script>" not in hexed.text.split("<main>")[1]


def test_writes_need_the_sessions_csrf_token(plain: tuple[Daemon, Http]) -> None:
    daemon, http = plain
    with client(daemon, "csrf") as c:
        ids = [c.put(f"job {i}") for i in range(3)]
    page_url = "/ui/tubes/csrf?state=ready"
    browser = Browser(http.port)
    csrf = browser.page(page_url).csrf
    form = {"state": "ready", "do": "delete:selected", "id": [str(ids[0])], "back": page_url}
    # No token, a wrong one, another session's, or no session at all (a cross-site form): 403.
    other = Browser(http.port)
    other_csrf = other.page("/ui/").csrf
    for who, sent in ((browser, {}), (browser, {"csrf": "x" * 43}), (browser, {"csrf": other_csrf}),
                      (Browser(http.port), {"csrf": csrf})):
        refused = who.post("/ui/tubes/csrf/bulk", {**form, **sent})
        assert refused.status == 403 and "CSRF" in refused.text
        check_headers(refused)
    assert stats_tube(daemon, "csrf")["current-jobs-ready"] == 3
    # JSON or a text/plain body is no form (and a cross-site page cannot send JSON with a cookie anyway).
    assert browser.request("POST", "/ui/tubes/csrf/bulk", headers={"Content-Type": "text/plain"}).status == 415
    # With the token: done, Post/Redirect/Get with a flash message that shows once.
    done = browser.post("/ui/tubes/csrf/bulk", {**form, "csrf": csrf})
    assert done.header("location") == page_url
    assert flash(browser.follow(done)) == "ok: deleted 1 job"
    assert flash(browser.page(page_url)) is None
    assert stats_tube(daemon, "csrf")["current-jobs-ready"] == 2
    # A script's POST sends the token as X-CSRF-Token and gets JSON.
    answer = browser.post("/ui/tubes/csrf/pause", {"delay": "30"}, headers={"X-CSRF-Token": csrf})
    assert (answer.status, json.loads(answer.text)) == (200, {"ok": True, "message": "paused csrf for 30 s"})
    assert stats_tube(daemon, "csrf")["pause"] == 30
    assert browser.post("/ui/tubes/csrf/pause", {"delay": "0"}, headers={"X-CSRF-Token": "nope"}).status == 403
    assert stats_tube(daemon, "csrf")["pause"] == 30


def test_bulk_writes_by_id_and_all_with_a_confirmed_count(plain: tuple[Daemon, Http]) -> None:
    daemon, http = plain
    with client(daemon, "bulk") as c:
        ids = [c.put(f"job {i}") for i in range(6)]
        for _ in ids:
            c.bury(c.reserve(timeout=1))
        c.put("keeps the tube", delay=600)
    browser = Browser(http.port)
    url = "/ui/tubes/bulk?state=buried"
    page = browser.page(url)
    assert all(f'name="id" value="{i}"' in page.text for i in ids) and "Kick all" in page.text
    csrf = page.csrf
    kicked = browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "state": "buried", "do": "kick:selected",
                                                  "id": [str(ids[0]), str(ids[1])], "back": url})
    assert flash(browser.follow(kicked)) == "ok: kicked 2 jobs"
    assert stats_tube(daemon, "bulk")["current-jobs-buried"] == 4
    moved = browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "state": "buried", "do": "move:selected",
                                                 "to": "bulk-review", "id": [str(ids[2])], "back": url})
    assert flash(browser.follow(moved)) == "ok: moved 1 job to bulk-review"
    assert stats_tube(daemon, "bulk-review")["current-jobs-buried"] == 1
    # "All in this state": first a confirm page with the dry run's count, and nothing changed yet.
    asked = browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "state": "buried", "do": "kick:all", "back": url})
    confirm = browser.follow(asked)
    assert "Kick all 3 buried jobs" in confirm.text and 'name="count" value="3"' in confirm.text
    assert stats_tube(daemon, "bulk")["current-jobs-buried"] == 3
    done = browser.post("/ui/tubes/bulk/bulk", {"csrf": confirm.csrf, "state": "buried", "do": "kick:count",
                                                "count": "3", "back": url})
    assert flash(browser.follow(done)) == "ok: kicked 3 jobs"
    tube = stats_tube(daemon, "bulk")
    assert (tube["current-jobs-buried"], tube["current-jobs-ready"]) == (0, 5)
    # Clear ("delete all") the ready ones, the same way.
    confirm = browser.follow(browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "state": "ready",
                                                                  "do": "delete:all"}))
    assert "Delete all 5 ready jobs" in confirm.text
    done = browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "state": "ready", "do": "delete:count", "count": "5"})
    assert flash(browser.follow(done)) == "ok: deleted 5 jobs"
    assert stats_tube(daemon, "bulk")["current-jobs-ready"] == 0
    # Mistakes come back as error flashes, and change nothing.
    for form, message in (({"state": "ready", "do": "kick:selected", "id": ["1"]}, "cannot kick ready jobs"),
                          ({"state": "buried", "do": "move:selected", "to": "bulk", "id": [str(ids[2])]},
                           "to: the same tube"),
                          ({"state": "buried", "do": "delete:selected"}, "tick some jobs first")):
        answer = browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "back": url, **form})
        assert message in (flash(browser.follow(answer)) or "")
    assert stats_tube(daemon, "bulk-review")["current-jobs-buried"] == 1
    # The last job gone, nobody watching: the tube is freed, and the answer goes to the overview.
    done = browser.post("/ui/tubes/bulk/bulk", {"csrf": csrf, "state": "delayed", "do": "delete:count", "count": "1",
                                                "back": "/ui/tubes/bulk?state=delayed"})
    assert done.header("location") == "/ui/" and flash(browser.follow(done)) == "ok: deleted 1 job"


def test_job_actions_put_and_pause(plain: tuple[Daemon, Http]) -> None:
    daemon, http = plain
    browser = Browser(http.port)
    csrf = browser.page("/ui/").csrf
    put = browser.post("/ui/put", {"csrf": csrf, "tube": "single", "body": "from the console", "pri": "7",
                                   "delay": "0", "ttr": "30"})
    assert put.header("location") == "/ui/tubes/single?state=ready"
    message = flash(browser.follow(put)) or ""
    number = int(re.fullmatch(r"ok: put job (\d+) into single", message).group(1))
    with client(daemon, "single") as c:
        assert c.peek(number).body == "from the console"
        assert c.stats_job(number)["pri"] == 7 and c.stats_job(number)["ttr"] == 30
        job_url = f"/ui/jobs/{number}"
        page = browser.page(job_url)
        assert f'action="{job_url}/bury"' in page.text and f'action="{job_url}/kick"' not in page.text
        for action, form, state in (("bury", {}, "buried"), ("kick", {}, "ready"),
                                    ("reprioritize", {"pri": "3"}, "ready")):
            answer = browser.post(f"{job_url}/{action}", {"csrf": csrf, **form})
            assert answer.header("location") == job_url
            assert c.stats_job(number)["state"] == state
        assert c.stats_job(number)["pri"] == 3
        answer = browser.post(f"{job_url}/move", {"csrf": csrf, "to": "single-2"})
        assert "moved job" in (flash(browser.follow(answer)) or "")
        assert c.stats_job(number)["tube"] == "single-2"
        # A reserved job belongs to its worker: no buttons, and the plane's 409 as a flash.
        c.watch("single-2")
        held = c.reserve(timeout=1)
        assert held.id == number
        page = browser.page(job_url)
        assert f'action="{job_url}/delete"' not in page.text and "A worker holds this job" in page.text
        answer = browser.post(f"{job_url}/delete", {"csrf": csrf, "back": job_url})
        assert "reserved" in (flash(browser.follow(answer)) or "")
        c.release(held)
        deleted = browser.post(f"{job_url}/delete", {"csrf": csrf})
        assert deleted.header("location") == "/ui/tubes/single-2"
        with pytest.raises(greenstalk.NotFoundError):
            c.stats_job(number)
        # Pause and unpause by form (the tube lives while this client watches it); the badge shows it.
        paused = browser.post("/ui/tubes/single-2/pause", {"csrf": csrf, "delay": "120"})
        assert re.search(r'data-cell="paused">paused, (2m|1m 59s) left<', browser.follow(paused).text)
        assert stats_tube(daemon, "single-2")["pause"] == 120
        unpaused = browser.post("/ui/tubes/single-2/pause", {"csrf": csrf, "delay": "0"})
        assert 'data-cell="paused"></span>' in browser.follow(unpaused).text
        assert stats_tube(daemon, "single-2")["pause"] == 0


def test_live_data_endpoints(plain: tuple[Daemon, Http]) -> None:
    daemon, http = plain
    browser = Browser(http.port)
    with client(daemon, "live") as c:
        number = c.put("x")
        browser.page("/ui/")
        rows = json.loads(browser.get("/ui/data/tubes?filter=liv").text)
        assert [row["name"] for row in rows["rows"]] == ["live"]
        assert rows["rows"][0]["cells"]["ready"] == "1" and len(rows["rows"][0]["history"]["put"]) == 60
        c.put("y")
        assert json.loads(browser.get("/ui/data/tubes/live").text)["cells"]["ready"] == "2"
        assert json.loads(browser.get(f"/ui/data/jobs/{number}").text)["cells"]["state"] == "ready"
        stats = json.loads(browser.get("/ui/data/stats").text)["cells"]
        assert int(stats["current-jobs-ready"].replace(",", "")) >= 2
        c.delete(number)
        assert "gone" in json.loads(browser.get(f"/ui/data/jobs/{number}").text)
    answer = browser.get("/ui/data/tubes")
    assert answer.header("content-type") == "application/json"
    check_headers(answer)


def test_login_sessions_and_roles_with_tokens(with_tokens: tuple[Daemon, Http]) -> None:
    daemon, http = with_tokens
    with client(daemon, "guarded") as c:
        c.put("one")
        c.put("two")
    browser = Browser(http.port)
    # Without a session: pages go to the login page, data is 401, static files are served.
    assert browser.get("/ui/tubes/guarded").header("location") == "/ui/login?next=%2Fui%2Ftubes%2Fguarded"
    assert browser.get("/ui/data/stats").status == 401
    assert Browser(http.port).get("/ui/static/console.js").status == 200
    login = browser.page("/ui/login?next=%2Fui%2Ftubes%2Fguarded")
    csrf = login.csrf
    # Login needs the login form's CSRF token, and a real token.
    assert browser.post("/ui/login", {"token": OPERATOR}).status == 403
    bad = browser.post("/ui/login", {"csrf": csrf, "token": "not-a-token-at-all-1234"})
    assert flash(browser.follow(bad)) == "error: that token is not valid"
    assert "bspy_session" not in browser.cookies or "who" not in browser.cookies.get("bspy_session", "")
    # A viewer: read-only badge, no write controls, writes refused.
    viewer = browser.post("/ui/login", {"csrf": csrf, "token": VIEWER, "next": "/ui/tubes/guarded"})
    assert viewer.header("location") == "/ui/tubes/guarded"
    cookie = next(line for line in viewer.cookies if line.startswith("bspy_session="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"httponly", "samesite=strict", "path=/ui"} <= set(flags) and "secure" not in flags
    payload = json.loads(base64.urlsafe_b64decode(browser.cookies["bspy_session"].split(".")[0] + "=="))
    assert payload["who"] == "token line 1" and payload["role"] == "viewer"
    assert VIEWER not in cookie and OPERATOR not in cookie
    page = browser.follow(viewer)
    assert 'class="badge read-only"' in page.text and "token line 1" in page.text
    assert "/bulk" not in page.text and "/pause" not in page.text and "Put a job" not in page.text
    assert "Delete" not in browser.page("/ui/jobs/1").text.split("<main>")[1]
    refused = browser.post("/ui/tubes/guarded/bulk", {"csrf": page.csrf, "state": "ready", "do": "delete:selected",
                                                      "id": ["1"]})
    assert refused.status == 403 and "viewer" in refused.text
    assert browser.post("/ui/put", {"csrf": page.csrf, "tube": "guarded", "body": "x"}).status == 403
    assert stats_tube(daemon, "guarded")["current-jobs-ready"] == 2
    # A session is no bearer token: the API still wants one.
    assert browser.get("/api/v1/stats").status == 401
    # A tampered cookie (viewer made operator) is no session at all.
    forged = dict(payload, role="operator")
    mac = browser.cookies["bspy_session"].split(".")[1]
    tampered = Browser(http.port, {"bspy_session": base64.urlsafe_b64encode(json.dumps(forged).encode())
                                   .decode().rstrip("=") + "." + mac})
    assert tampered.get("/ui/").header("location").startswith("/ui/login")
    # Log out, then log in as an operator: writes work and are the queue's.
    out = browser.post("/ui/logout", {"csrf": page.csrf})
    assert out.header("location") == "/ui/login" and "bspy_session" not in browser.cookies
    assert browser.get("/ui/").status == 303
    login = browser.page("/ui/login")
    operator = browser.post("/ui/login", {"csrf": login.csrf, "token": OPERATOR, "next": "//evil.example/"})
    assert operator.header("location") == "/ui/"  # no open redirect
    page = browser.page("/ui/tubes/guarded")
    assert "read-only" not in page.text and "Delete all" in page.text
    done = browser.post("/ui/tubes/guarded/bulk", {"csrf": page.csrf, "state": "ready", "do": "delete:selected",
                                                   "id": ["1"]})
    assert flash(browser.follow(done)) == "ok: deleted 1 job"
    assert stats_tube(daemon, "guarded")["current-jobs-ready"] == 1
    assert "token line 2 (operator): clear tube guarded ready by id" in _stderr_so_far(daemon)


def test_read_only_server(tmp_path: Path) -> None:
    daemon, http = start_with_http("--http-read-only")
    try:
        with client(daemon, "ro") as c:
            c.put("x")
            c.bury(c.reserve(timeout=1))
        browser = Browser(http.port)
        page = browser.page("/ui/tubes/ro?state=buried")
        assert 'class="badge read-only"' in page.text and "--http-read-only" in page.text
        assert "Kick all" not in page.text and "/pause" not in page.text and "name=\"id\"" not in page.text
        for path, form in (("/ui/tubes/ro/bulk", {"state": "buried", "do": "kick:selected", "id": ["1"]}),
                           ("/ui/tubes/ro/pause", {"delay": "60"}), ("/ui/jobs/1/kick", {}),
                           ("/ui/put", {"tube": "ro", "body": "y"})):
            refused = browser.post(path, {"csrf": page.csrf, **form})
            assert refused.status == 403 and "--http-read-only" in refused.text, path
        assert browser.get("/ui/tubes/ro/confirm?do=kick&state=buried").status == 403
        tube = stats_tube(daemon, "ro")
        assert (tube["current-jobs-buried"], tube["pause"], tube["total-jobs"]) == (1, 0, 1)
    finally:
        assert daemon.stop() == 0


def test_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    port = free_port()
    daemon = start_beanstalk_py("--http", f"127.0.0.1:{port}", "--http-cert", str(cert), "--http-key", str(key))
    try:
        deadline = time.monotonic() + 15
        while True:  # the listener starts once the beanstalk port serves
            try:
                page = Browser(port, tls=tls).get("/ui/")
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert page.status == 200
        check_headers(page)
        flags = [part.strip().lower() for part in page.cookies[0].split(";")]
        assert page.cookies[0].startswith("bspy_session=") and "secure" in flags and "samesite=strict" in flags
    finally:
        assert daemon.stop() == 0


def test_host_check_covers_the_console(plain: tuple[Daemon, Http]) -> None:
    """Without tokens a rebound DNS name is refused on /ui as on the API."""
    daemon, http = plain
    assert Browser(http.port).get("/ui/", headers={"Host": "evil.example"}).status == 403


def _stderr_so_far(daemon: Daemon) -> str:
    """What the daemon logged: stop it to read its stderr (the fixture's stop is then a no-op)."""
    assert daemon.proc is not None and daemon.proc.stderr is not None
    daemon.stop()
    return daemon.proc.stderr.read().decode()
