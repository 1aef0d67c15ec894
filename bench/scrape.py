"""``--scrape``: what the operations plane costs the queue while someone watches it.

During a workload, :class:`Scraper` does what a monitored, watched server
sees: Prometheus scraping ``/metrics`` once a second (one kept-alive
connection, as Prometheus keeps one), and "the console open", a client
fetching ``/api/v1/tubes`` and ``/api/v1/stats`` every 2 seconds (and
``/ui/`` too when the server has a console there) on a fresh connection each
time, as a browser whose kept-alive connection the server closed after its
2-second idle limit.  The harness runs the same workload on the same server
command line (``--http`` on both sides) with and without the scraper, A B A B,
so the ratio is the cost of being watched; :func:`summary_text` says whether
it is within the 5% budget.

The scraper runs in the harness's own process, on the load CPUs (the server
has its own CPU); it takes a few ms of CPU a second.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from typing import Callable, Optional

METRICS_EVERY_S = 1.0
CONSOLE_EVERY_S = 2.0
CONSOLE_PATHS = ("/api/v1/tubes", "/api/v1/stats")
UI_PATH = "/ui/"
BUDGET = 0.05  # "within 5%": the throughput ratio watched / plain must be >= 0.95
READY_WAIT_S = 15.0  # the HTTP listener starts a moment after the beanstalk port


class Scraper:
    """Two clients on their own threads, from ``with`` until its end."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.scrape_ms: list[float] = []
        self.console_ms: list[float] = []
        self.errors = 0
        self.metrics_bytes = 0
        self.ui = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "Scraper":
        self._wait_ready()
        self.ui = self._status(UI_PATH) == 200
        self._threads = [threading.Thread(target=self._metrics_loop, daemon=True),
                         threading.Thread(target=self._console_loop, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def figures(self) -> dict:
        """Per-run figures for the JSON (the table shows only the workload's own)."""
        return {
            "scrapes": len(self.scrape_ms),
            "scrape_p50_ms": statistics.median(self.scrape_ms) if self.scrape_ms else None,
            "scrape_max_ms": max(self.scrape_ms) if self.scrape_ms else None,
            "metrics_bytes": self.metrics_bytes,
            "console_refreshes": len(self.console_ms),
            "console_p50_ms": statistics.median(self.console_ms) if self.console_ms else None,
            "console_ui": self.ui,
            "scrape_errors": self.errors,
        }

    # ------------------------------------------------------------------ clients

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def _status(self, path: str) -> Optional[int]:
        conn = self._connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while self._status("/healthz") != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP listener on port {self.port} did not answer /healthz")
            time.sleep(0.05)

    def _every(self, interval: float, work: Callable[[], None]) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            work()
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _metrics_loop(self) -> None:
        conn: Optional[http.client.HTTPConnection] = None

        def scrape() -> None:
            nonlocal conn
            for attempt in (1, 2):  # a kept-alive connection the server closed: once more
                if conn is None:
                    conn = self._connection()
                started = time.perf_counter()
                try:
                    conn.request("GET", "/metrics")
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = None
                    if attempt == 2:
                        self.errors += 1
                    continue
                if response.status != 200:
                    self.errors += 1
                    return
                self.scrape_ms.append((time.perf_counter() - started) * 1000)
                self.metrics_bytes = len(body)
                return

        try:
            self._every(METRICS_EVERY_S, scrape)
        finally:
            if conn is not None:
                conn.close()

    def _console_loop(self) -> None:
        paths = CONSOLE_PATHS + ((UI_PATH,) if self.ui else ())

        def refresh() -> None:
            started = time.perf_counter()
            conn = self._connection()
            try:
                for path in paths:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        self.errors += 1
                        return
                self.console_ms.append((time.perf_counter() - started) * 1000)
            except (OSError, http.client.HTTPException):
                self.errors += 1
            finally:
                conn.close()

        self._every(CONSOLE_EVERY_S, refresh)


def summary_text(results: dict, workloads: dict, labels: tuple[str, str]) -> str:
    """Per workload: the throughput ratio watched / plain against the budget, and the scraper's own figures."""
    lines = [f"cost of being watched ({labels[0]} / {labels[1]}, medians of per-round ratios; "
             f"budget: within {BUDGET:.0%}):"]
    for name, entry in results.items():
        summary = entry.get("summary", {})
        key = workloads[name].throughput[0] if workloads[name].throughput else None
        s = summary.get(key) if key else None
        if not s or s["ratio"] is None:
            lines.append(f"  {name}: no ratio")
            continue
        verdict = "within budget" if s["ratio"] >= 1 - BUDGET else "OVER BUDGET"
        runs = [r["metrics"] for r in entry["runs"]["a"] if "metrics" in r]
        scrapes = sum(r.get("scrapes", 0) for r in runs)
        refreshes = sum(r.get("console_refreshes", 0) for r in runs)
        errors = sum(r.get("scrape_errors", 0) for r in runs)
        p50s = [r["scrape_p50_ms"] for r in runs if r.get("scrape_p50_ms") is not None]
        worst = max((r["scrape_max_ms"] for r in runs if r.get("scrape_max_ms") is not None), default=None)
        ui = " (with /ui/)" if any(r.get("console_ui") for r in runs) else " (no /ui/ on this server)"
        lines.append(
            f"  {name}: {key} {s['a']:,.0f} vs {s['b']:,.0f} = {s['ratio']:.3f}x "
            f"(per-round {s['ratio_min']:.3f}-{s['ratio_max']:.3f}): {verdict}; "
            f"{scrapes} /metrics scrapes (median of run medians "
            f"{statistics.median(p50s) if p50s else float('nan'):.1f} ms, worst "
            f"{worst if worst is not None else float('nan'):.1f} ms), {refreshes} console refreshes{ui}, "
            f"{errors} errors")
    return "\n".join(lines)
