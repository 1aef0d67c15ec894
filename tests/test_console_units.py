"""The web console without sockets: signed sessions, CSRF tokens and flashes
(forgery, tampering, expiry), and the display strings pages and refreshes share."""

from __future__ import annotations

import base64
import json

import pytest

from beanstalk_py.http.auth import Principal
from beanstalk_py.http.console import is_console_path
from beanstalk_py.http.console_actions import safe_back
from beanstalk_py.http.console_auth import NO_ROLE, Signer
from beanstalk_py.http.console_view import duration, hexdump, per_minute, server_groups, tube_cells, tube_row, tube_url


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_session_round_trip_and_expiry() -> None:
    clock = Clock()
    signer = Signer(b"k" * 32, clock)
    session = signer.new_session("token line 2", "operator", seconds=60)
    cookie = signer.session_cookie(session)
    assert signer.session(cookie) == session
    assert signer.session(cookie).principal == Principal("token line 2", "operator")
    clock.now += 61
    assert signer.session(cookie) is None  # expired


def test_forged_and_tampered_sessions_are_refused() -> None:
    signer = Signer(b"k" * 32)
    cookie = signer.session_cookie(signer.new_session("token line 3", "viewer"))
    payload, mac = cookie.split(".")
    value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    value["role"] = "operator"  # a viewer promoting itself
    forged = base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    assert signer.session(f"{forged}.{mac}") is None
    assert Signer(b"other key" * 4).session(cookie) is None  # another process's key (a restart)
    for garbage in (None, "", "x", "a.b.c", ".", f"{payload}.", "!!!.???"):
        assert signer.session(garbage) is None
    # A flash cookie (signed for another purpose) is no session.
    assert signer.session(signer.flash_cookie("ok", "hello")) is None


def test_csrf_token_belongs_to_its_session() -> None:
    signer = Signer(b"k" * 32)
    one, two = signer.new_session("loopback", "operator"), signer.new_session("loopback", "operator")
    assert signer.csrf_ok(one, signer.csrf(one))
    assert not signer.csrf_ok(one, signer.csrf(two))
    assert not signer.csrf_ok(one, "")
    assert not signer.csrf_ok(one, None)
    assert not signer.csrf_ok(None, signer.csrf(one))
    # An anonymous session (the login form's) has a CSRF token but no principal.
    anonymous = signer.new_session("", NO_ROLE)
    assert signer.csrf_ok(anonymous, signer.csrf(anonymous)) and anonymous.principal is None


def test_flash_is_signed_and_short_lived() -> None:
    clock = Clock()
    signer = Signer(b"k" * 32, clock)
    cookie = signer.flash_cookie("error", "no job 7")
    assert signer.flash(cookie) == ("error", "no job 7")
    assert signer.flash(cookie.replace(cookie[0], "A" if cookie[0] != "A" else "B", 1)) is None
    clock.now += 61
    assert signer.flash(cookie) is None


def test_session_cookie_never_holds_a_token() -> None:
    signer = Signer()
    cookie = signer.session_cookie(signer.new_session("token line 1", "operator"))
    payload = base64.urlsafe_b64decode(cookie.split(".")[0] + "==").decode()
    assert set(json.loads(payload)) == {"sid", "who", "role", "exp"}


def test_back_links_stay_on_the_console() -> None:
    assert safe_back("/ui/tubes/a%2Fb?state=buried") == "/ui/tubes/a%2Fb?state=buried"
    for evil in ("//evil.example/ui/", "https://evil.example/", "/ui\\..", "/api/v1/stats", "/ui/\r\nSet-Cookie: x",
                 None, ""):
        assert safe_back(evil) == "/ui/"
    assert is_console_path("/ui") and is_console_path("/ui/static/console.js")
    assert not is_console_path("/uix") and not is_console_path("/api/v1/ui/")


@pytest.mark.parametrize("seconds, text", [(None, "–"), (0, "0s"), (59.9, "59s"), (60, "1m"), (192, "3m 12s"),
                                           (3600, "1h"), (7500, "2h 5m"), (90000, "1d 1h")])
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_tube_urls_escape_every_special_character() -> None:
    assert tube_url("a/b") == "/ui/tubes/a%2Fb"
    assert tube_url("x+y;z$(1)", state="buried") == "/ui/tubes/x%2By%3Bz%24%281%29?state=buried"


def test_tube_cells_and_sparklines() -> None:
    history = {"put": [0] * 58 + [30, 60], "reserve": [0] * 59 + [15], "delete": [0] * 60}
    tube = {"name": "mail", "current-jobs-ready": 1234, "current-jobs-buried": 2, "pause": 60,
            "pause-time-left": 42, "oldest-ready-age": 75.5,
            "rates": {"put": 1.0, "reserve": 0.05, "delete": 0.0, "history": history}}
    cells = tube_cells(tube)
    assert cells["ready"] == "1,234" and cells["buried"] == "2" and cells["reserved"] == "0"
    assert cells["paused"] == "paused, 42s left" and cells["oldest"] == "1m 15s"
    assert (cells["rate-put"], cells["rate-reserve"], cells["rate-delete"]) == ("60", "3.0", "0")
    assert cells["peak"] == "peak 60/min over the last hour"
    row = tube_row(tube)
    assert row["history"] == history and row["url"] == "/ui/tubes/mail" and row["paused"]
    # Before the plane has rates (or for a tube it does not track), or a short history: zeros, no error.
    quiet = tube_row({"name": "new"})
    assert quiet["cells"]["rate-put"] == "0" and quiet["cells"]["oldest"] == "–" and quiet["cells"]["paused"] == ""
    assert quiet["history"] == {"put": [0] * 60, "reserve": [0] * 60, "delete": [0] * 60}
    assert quiet["cells"]["peak"] == "no traffic in the last hour"
    short = tube_row({"name": "x", "rates": {"history": {"put": [5, 6]}}})
    assert short["history"]["put"] == [0] * 58 + [5, 6]


def test_small_formats() -> None:
    assert per_minute(0) == "0" and per_minute(0.01) == "0.6" and per_minute(100) == "6,000"
    assert hexdump(b"\x89PNG\r\n").startswith("00000000  89 50 4e 47 0d 0a")
    assert hexdump(b"\x89PNG\r\n").endswith(".PNG..")
    groups = dict(server_groups({"uptime": 5, "binlog-max-size": 1, "cmd-put": 3, "new-stat": 1}))
    assert groups == {"Server": ["uptime"], "Binlog": ["binlog-max-size"], "Commands": ["cmd-put"],
                      "Other": ["new-stat"]}


async def test_without_jinja2_the_console_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from beanstalk_py.http import console
    from beanstalk_py.http.settings import HttpSettings

    def missing() -> None:
        raise ImportError("No module named 'jinja2'")

    monkeypatch.setattr(console, "_environment", missing)
    routes = console.console_routes(None, HttpSettings(spec="127.0.0.1:0"), None)  # type: ignore[arg-type]
    assert [route.path for route in routes] == ["/ui", "/ui/{rest:path}"]
    answer = await routes[1].endpoint(None)
    assert answer.status_code == 503 and b"pip install 'beanstalk-py[http]'" in answer.body
    assert answer.headers["content-security-policy"] == console.CSP
