"""The web console in a real browser: Playwright driving Debian's chromium against
a daemon started with --http, jobs put with greenstalk.

Every test fails on any console error, uncaught page error or CSP violation
(a blocked inline script or style shows as both), so the pages must work
under their own strict policy.  Skipped, saying why, where Playwright or
/usr/bin/chromium is missing (.ci/run installs chromium; never
`playwright install`: no browser is downloaded).

Run as a script it makes docs/console.png (see ``main``).
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any, Iterator
from urllib.parse import quote

import greenstalk
import pytest

from conftest import Daemon
from http_rig import Http, start_with_http

pytestmark = pytest.mark.daemon

CHROMIUM = "/usr/bin/chromium"
playwright_api: Any = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install '.[test]')")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)",
                allow_module_level=True)

expect = playwright_api.expect
# Reported to the page by the browser itself when the policy blocks something;
# added before any page script runs (Playwright's init scripts are not page content).
WATCH_CSP = ("document.addEventListener('securitypolicyviolation', e => "
             "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));")


class Problems(list[str]):
    """Console errors, page errors and CSP violations seen by one page."""

    def watch(self, page: Any) -> Any:
        page.on("console", lambda message: self.append(f"console {message.type}: {message.text}")
                if message.type in ("error", "warning") else None)
        page.on("pageerror", lambda error: self.append(f"page error: {error}"))
        page.add_init_script(WATCH_CSP)
        return page


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def daemon_http() -> Iterator[tuple[Daemon, Http]]:
    daemon, http = start_with_http()
    try:
        yield daemon, http
    finally:
        assert daemon.stop() == 0


@pytest.fixture
def page(chromium: Any, daemon_http: tuple[Daemon, Http]) -> Iterator[tuple[Any, Problems, str]]:
    """A fresh browser context (its own cookies) and page; after the test, no problem seen."""
    context = chromium.new_context(viewport={"width": 1360, "height": 900})
    problems = Problems()
    tab = problems.watch(context.new_page())
    tab.set_default_timeout(10_000)
    try:
        yield tab, problems, f"http://127.0.0.1:{daemon_http[1].port}"
    finally:
        context.close()
    assert problems == []


def client(daemon: Daemon, tube: str) -> greenstalk.Client:
    return greenstalk.Client(daemon.address, use=tube, watch=tube)


def counts(daemon: Daemon, tube: str) -> tuple[int, int, int]:
    """(ready, delayed, buried) by greenstalk; a freed tube is all zeros."""
    with client(daemon, "default") as c:
        try:
            stats = c.stats_tube(tube)
        except greenstalk.NotFoundError:
            return 0, 0, 0
    return stats["current-jobs-ready"], stats["current-jobs-delayed"], stats["current-jobs-buried"]


def test_every_page_loads_cleanly_and_refreshes_live(page: tuple[Any, Problems, str],
                                                     daemon_http: tuple[Daemon, Http]) -> None:
    tab, problems, base = page
    daemon = daemon_http[0]
    tube = "web/pages"
    url = f"{base}/ui/tubes/{quote(tube, safe='')}"
    with client(daemon, tube) as c:
        first = c.put('{"hello": "<b>world</b>"}')
        c.put("<script>window.pwned = 1</script>")
        c.put("later", delay=600)
        tab.goto(f"{base}/ui/")
        row = tab.locator("tr[data-tube='web/pages']")
        expect(row.locator("[data-cell=ready]")).to_have_text("2")
        # The script drew the sparklines: an hour of minutes on each line.
        for kind in ("put", "reserve", "delete"):
            points = row.locator(f"polyline[data-spark={kind}]").get_attribute("points") or ""
            assert len(points.split()) == 60 and points.split()[-1].startswith("180.0,")
        # Live: a job put now shows within a refresh or two, without a reload.
        c.put("one more")
        expect(row.locator("[data-cell=ready]")).to_have_text("3", timeout=6000)
        expect(tab.locator("[data-live-status]")).to_have_text("live")
        # A tube made after the page loaded gets a row of its own.
        with client(daemon, "web/new") as other:
            other.put("x")
            expect(tab.locator("tr[data-tube='web/new'] [data-cell=ready]")).to_have_text("1", timeout=6000)
        for state in ("ready", "delayed", "reserved", "buried"):
            tab.goto(f"{url}?state={state}")
            expect(tab.locator(".tabs .tab.active")).to_contain_text(state.capitalize())
        tab.goto(f"{url}?state=ready")
        expect(tab.locator("td.preview code").nth(1)).to_have_text("<script>window.pwned = 1</script>")
        assert tab.evaluate("window.pwned") is None
        tab.goto(f"{base}/ui/jobs/{first}")
        expect(tab.locator("pre.body").first).to_contain_text('"hello": "<b>world</b>"')
        tab.goto(f"{base}/ui/server")
        expect(tab.locator("[data-cell='current-jobs-delayed']")).to_have_text(re.compile(r"\d"))
        # The find box in the header.
        tab.fill("header input[name=q]", str(first))
        tab.press("header input[name=q]", "Enter")
        tab.wait_for_url(f"{base}/ui/jobs/{first}")
    assert problems == []


def test_refresh_stops_while_the_tab_is_hidden(page: tuple[Any, Problems, str]) -> None:
    tab, _, base = page
    polls: list[float] = []
    tab.on("request", lambda request: polls.append(time.monotonic()) if "/ui/data/" in request.url else None)
    with tab.expect_request(re.compile(r"/ui/data/stats"), timeout=5000):
        tab.goto(f"{base}/ui/server")
    # Chromium's headless tabs are always visible: tell the page otherwise, as a browser would.
    tab.evaluate("""() => {
        Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    tab.wait_for_timeout(400)  # a poll already on its way may still be reported
    seen = len(polls)
    tab.wait_for_timeout(2600)  # over one period: a timer still running would poll
    assert len(polls) == seen
    expect(tab.locator("[data-live-status]")).to_have_text("paused")
    with tab.expect_request(re.compile(r"/ui/data/stats"), timeout=1000):
        tab.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }""")


def test_bulk_kick_clear_and_pause_in_the_browser(page: tuple[Any, Problems, str],
                                                  daemon_http: tuple[Daemon, Http]) -> None:
    tab, problems, base = page
    daemon = daemon_http[0]
    tube = "web/bulk"
    url = f"{base}/ui/tubes/{quote(tube, safe='')}"
    with client(daemon, tube) as c:  # watching keeps the tube alive when it empties
        for i in range(5):
            c.put(f"job {i}")
        for _ in range(5):
            c.bury(c.reserve(timeout=1))
        c.put("stays ready")
        assert counts(daemon, tube) == (1, 0, 5)

        # Kick the selected: select-all ticks every box and enables the buttons.
        tab.goto(f"{url}?state=buried")
        kick = tab.locator("button[value='kick:selected']")
        expect(kick).to_be_disabled()
        tab.check("input[data-select-all]")
        expect(tab.locator("[data-selected-count]")).to_have_text("5")
        tab.uncheck("input[data-select]  >> nth=0")
        expect(tab.locator("[data-selected-count]")).to_have_text("4")
        kick.click()
        expect(tab.locator(".flash.ok")).to_have_text("kicked 4 jobs")
        assert counts(daemon, tube) == (5, 0, 1)
        expect(tab.locator(".tabs [data-cell=buried]")).to_have_text("1")

        # Clear the ready ones: "Delete all…" shows the dry run's count first.
        tab.goto(f"{url}?state=ready")
        tab.click("button[value='delete:all']")
        expect(tab.locator(".confirm h1")).to_contain_text("Delete all 5 ready jobs")
        assert counts(daemon, tube) == (5, 0, 1)  # nothing yet
        tab.click("button[value='delete:count']")
        expect(tab.locator(".flash.ok")).to_have_text("deleted 5 jobs")
        assert counts(daemon, tube) == (0, 0, 1)

        # Pause posts from the script (X-CSRF-Token): no navigation, the badge follows.
        tab.goto(url)
        before = tab.url
        tab.fill(".pause-controls input[name=delay]", "300")
        tab.click(".pause-controls button:text-is('Pause')")
        expect(tab.locator(".flash.ok")).to_have_text(f"paused {tube} for 300 s")
        expect(tab.locator("h1 [data-cell=paused]")).to_contain_text("paused", timeout=6000)
        assert tab.url == before
        with client(daemon, "default") as other:
            assert other.stats_tube(tube)["pause"] == 300
        tab.click(".pause-controls button:text-is('Unpause')")
        expect(tab.locator(".flash.ok")).to_have_text(f"unpaused {tube}")
        expect(tab.locator("h1 [data-cell=paused]")).to_have_text("", timeout=6000)
    assert problems == []


# ---------------------------------------------------------------------- docs/console.png


def main(out: str = "docs/console.png", warm_up_s: float = 240.0) -> None:
    """Make the README's screenshot: a few tubes with live traffic for ``warm_up_s``
    (the sparklines are per minute), then the overview.  Run from the project root:
    ``PYTHONPATH=.:tests .venv/bin/python tests/test_console_browser.py docs/console.png 240``."""
    import math
    import threading

    daemon, http = start_with_http()
    stop = threading.Event()

    def traffic(tube: str, per_s: float, work_share: float, phase: float) -> None:
        with client(daemon, tube) as c:
            started = time.monotonic()
            while not stop.is_set():
                elapsed = time.monotonic() - started
                rate = per_s * (1.2 + math.sin(elapsed / 40 + phase))
                c.put(f'{{"task": "{tube}", "at": {elapsed:.1f}}}', priority=1024)
                if (elapsed * 7) % 1 < work_share:
                    c.delete(c.reserve(timeout=0))
                time.sleep(1 / max(rate, 0.2))

    try:
        with client(daemon, "mail") as c:
            for _ in range(3):
                c.put("bounced")
                c.bury(c.reserve(timeout=0))
            c.put("retry later", delay=3600)
        with client(daemon, "reports/daily") as c:
            c.put("nightly report", delay=7200)
            c.pause_tube("reports/daily", 900)
        workers = [threading.Thread(target=traffic, args=args, daemon=True) for args in (
            ("mail", 6.0, 0.85, 0.0), ("images", 3.0, 0.55, 1.5), ("webhooks", 9.0, 0.97, 3.0),
            ("reports/daily", 0.5, 0.0, 0.5))]
        for worker in workers:
            worker.start()
        time.sleep(warm_up_s)
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1360, "height": 560}, device_scale_factor=1)
            tab.goto(f"http://127.0.0.1:{http.port}/ui/")
            tab.wait_for_timeout(1500)  # after a refresh's blink has faded
            tab.screenshot(path=out)
            browser.close()
    finally:
        stop.set()
        daemon.stop()


if __name__ == "__main__":
    main(*sys.argv[1:2], *(float(arg) for arg in sys.argv[2:3]))
