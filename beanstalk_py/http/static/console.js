// beanstalk-py console: live refresh, select-all, and script POSTs.
// No framework and no inline code (the CSP allows only this file).  Every
// value arrives from the server as a display string: this file only places
// strings with textContent, never as HTML.
"use strict";

(function () {
  const PERIOD_MS = 2000;
  const liveUrl = document.body.dataset.live || "";
  const liveStatus = document.querySelector("[data-live-status]");
  let timer = null;
  let busy = false;
  let ended = false;

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function setStatus(text, kind) {
    if (!liveStatus) return;
    liveStatus.textContent = text;
    liveStatus.className = "live-status " + (kind || "");
  }

  function flash(kind, text) {
    const area = document.querySelector("[data-flash-area]");
    if (!area) return;
    const box = document.createElement("div");
    box.className = "flash " + kind;
    box.setAttribute("role", "status");
    box.textContent = text;
    area.replaceChildren(box);
  }

  // Copy each display string into the elements whose data-cell names it;
  // a changed value blinks.  Page-level cells skip the rows of a tube table.
  function setCells(root, cells, skipRows) {
    for (const element of root.querySelectorAll("[data-cell]")) {
      if (skipRows && element.closest("tr[data-tube]")) continue;
      const key = element.dataset.cell;
      if (!Object.prototype.hasOwnProperty.call(cells, key)) continue;
      const text = String(cells[key]);
      if (element.textContent === text) continue;
      element.textContent = text;
      element.classList.remove("changed");
      void element.getBoundingClientRect(); // restart the blink
      element.classList.add("changed");
    }
  }

  // A sparkline: per-minute counts of the last hour (put, reserve, delete),
  // oldest at the left, on one scale per tube; put is also shaded.
  const SPARK_W = 180;
  const SPARK_H = 24;

  function drawSpark(svg, history) {
    let top = 0;
    for (const kind of ["put", "reserve", "delete"]) {
      for (const value of history[kind] || []) top = Math.max(top, value);
    }
    const points = function (values) {
      const step = SPARK_W / Math.max(values.length - 1, 1);
      return values.map(function (value, i) {
        const y = SPARK_H - 1 - (top ? (value / top) * (SPARK_H - 2) : 0);
        return (i * step).toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
    };
    for (const line of svg.querySelectorAll("[data-spark]")) {
      const kind = line.dataset.spark;
      if (kind === "area") {
        const put = history.put || [];
        line.setAttribute("points", points(put) + " " + SPARK_W + "," + (SPARK_H - 1) + " 0," + (SPARK_H - 1));
      } else {
        line.setAttribute("points", points(history[kind] || []));
      }
    }
  }

  for (const svg of document.querySelectorAll("svg.spark[data-history]")) {
    drawSpark(svg, JSON.parse(svg.dataset.history));
  }

  // The overview's rows: update in place, add new tubes, drop vanished ones,
  // keep the server's order.
  function setRows(rows) {
    const body = document.querySelector("tbody[data-rows]");
    const template = document.getElementById("tube-row-template");
    if (!body || !template) return;
    const existing = new Map();
    for (const row of body.querySelectorAll("tr[data-tube]")) existing.set(row.dataset.tube, row);
    let previous = null;
    for (const item of rows) {
      let row = existing.get(item.name);
      if (row) {
        existing.delete(item.name);
      } else {
        row = template.content.querySelector("tr").cloneNode(true);
        row.dataset.tube = item.name;
        const link = row.querySelector("a[data-link]");
        link.href = item.url;
        link.textContent = item.name;
      }
      setCells(row, item.cells, false);
      const svg = row.querySelector("svg.spark");
      if (svg) drawSpark(svg, item.history);
      row.classList.toggle("is-paused", Boolean(item.paused));
      const wanted = previous ? previous.nextElementSibling : body.firstElementChild;
      if (wanted !== row) body.insertBefore(row, wanted);
      previous = row;
    }
    for (const gone of existing.values()) gone.remove();
    const empty = document.querySelector("[data-empty]");
    if (empty) empty.hidden = rows.length > 0;
  }

  async function refresh() {
    if (busy || ended || !liveUrl) return;
    busy = true;
    try {
      const response = await fetch(liveUrl, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) {
        ended = true;
        stop();
        setStatus("session ended", "off");
        flash("error", "Your session has ended: reload the page to log in again.");
        return;
      }
      const data = await response.json();
      if (!response.ok) {
        if (timer !== null) setStatus("error", "off");
        return;
      }
      if (data.gone) {
        const notice = document.querySelector("[data-gone]");
        if (notice) notice.hidden = false;
        setStatus("gone", "off");
        return;
      }
      if (data.cells) setCells(document, data.cells, true);
      if (data.rows) setRows(data.rows);
      // A poll that was on its way when the tab was hidden must not undo "paused".
      if (timer !== null) setStatus("live", "on");
    } catch (error) {
      if (timer !== null) setStatus("offline", "off");
    } finally {
      busy = false;
    }
  }

  function start() {
    if (timer !== null || ended || !liveUrl) return;
    timer = window.setInterval(refresh, PERIOD_MS);
    setStatus("live", "on");
  }

  function stop() {
    if (timer !== null) window.clearInterval(timer);
    timer = null;
  }

  // Poll only while someone can see the page.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      refresh();
      start();
    } else {
      stop();
      setStatus("paused", "");
    }
  });

  // Select-all and the selection count of a bulk form.
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    const form = all.form;
    const boxes = Array.from(form.querySelectorAll("input[data-select]"));
    const update = function () {
      const selected = boxes.filter(function (box) { return box.checked; }).length;
      for (const count of form.querySelectorAll("[data-selected-count]")) count.textContent = String(selected);
      for (const button of form.querySelectorAll("[data-needs-selection]")) button.disabled = selected === 0;
      all.checked = selected > 0 && selected === boxes.length;
      all.indeterminate = selected > 0 && selected < boxes.length;
    };
    all.addEventListener("change", function () {
      for (const box of boxes) box.checked = all.checked;
      update();
    });
    for (const box of boxes) box.addEventListener("change", update);
    update();
  }

  // Forms marked data-fetch post without leaving the page (the CSRF token as
  // X-CSRF-Token), show the answer, and refresh at once.  Without this script
  // the same forms post normally and the server redirects back.
  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-fetch")) return;
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form, event.submitter));
    body.delete("csrf");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: body,
        headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
        credentials: "same-origin",
      });
      const answer = await response.json();
      flash(answer.ok ? "ok" : "error", answer.message);
    } catch (error) {
      flash("error", "The server did not answer.");
    }
    refresh();
  });

  if (document.visibilityState === "visible") start();
})();
