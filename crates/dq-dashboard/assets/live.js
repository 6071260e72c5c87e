// dq dashboard: refreshes counts in place from the JSON API, without reloading the page.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";
  var status = document.getElementById("live-status");

  function set(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (!cell) return;
    var link = cell.querySelector("a");
    (link || cell).textContent = String(value);
  }

  function signed(x) { return x > 0 ? "+" + x : String(x); }

  function spark(samples) {
    if (!samples || samples.length < 2) return null;
    var w = 120, h = 24, max = 1;
    var values = samples.map(function (s) { return s.ready + s.delayed + s.in_flight; });
    values.forEach(function (v) { if (v > max) max = v; });
    var step = w / (values.length - 1);
    var points = values.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (h - v / max * (h - 2) - 1).toFixed(1);
    }).join(" ");
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", w); svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points);
    svg.appendChild(line);
    return svg;
  }

  function ago(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s ago";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m ago";
  }

  function stale(e) {
    if (status) {
      status.parentNode.classList.add("stale");
      status.textContent = "Live refresh failed (" + e.message + "); retrying.";
    }
  }

  function fresh() {
    if (status) {
      status.parentNode.classList.remove("stale");
      status.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
    }
  }

  function refreshWorkers(table) {
    fetch(base + "/api/workers", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (o) {
        var now = Date.now(), seen = {}, changed = false;
        o.workers.forEach(function (w) {
          seen[w.worker_id] = true;
          var row = table.querySelector('tr[data-worker="' + w.worker_id + '"]');
          if (!row) { changed = true; return; }
          set(row, "last_seen", ago(now - w.last_seen));
        });
        table.querySelectorAll("tr[data-worker]").forEach(function (row) {
          if (!seen[row.getAttribute("data-worker")]) { row.classList.add("gone"); changed = true; }
        });
        if (changed && !document.getElementById("workers-changed")) {
          var hint = document.createElement("p");
          hint.id = "workers-changed"; hint.className = "note";
          hint.innerHTML = 'Workers started or stopped: <a href="">reload</a> to see them.';
          table.parentNode.insertBefore(hint, table);
        }
        fresh();
      })
      .catch(stale);
  }

  function refresh() {
    var workers = document.querySelector('[data-live="workers"]');
    if (workers) return refreshWorkers(workers);
    var targets = document.querySelectorAll("[data-live]");
    if (!targets.length) return;
    fetch(base + "/api/queues", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (o) {
        var byName = {};
        o.queues.forEach(function (q) { byName[q.name] = q; });
        document.querySelectorAll("[data-queue]").forEach(function (row) {
          var q = byName[row.getAttribute("data-queue")];
          if (!q) return;
          ["ready", "delayed", "in_flight", "dead"].forEach(function (f) { set(row, f, q[f]); });
          if (q.workers !== null && q.workers !== undefined) set(row, "workers", q.workers);
          set(row, "backlog_per_min", signed(q.rates.backlog_per_min));
          set(row, "dead_per_min", q.rates.dead_per_min);
          var cell = row.querySelector('[data-field="spark"]');
          var svg = spark(q.history);
          if (cell && svg) { cell.textContent = ""; cell.appendChild(svg); }
        });
        var table = document.getElementById("overview");
        if (table) {
          var known = {};
          table.querySelectorAll("[data-queue]").forEach(function (r) { known[r.getAttribute("data-queue")] = true; });
          if (o.queues.some(function (q) { return !known[q.name]; })) {
            var hint = document.getElementById("new-queues");
            if (!hint) {
              hint = document.createElement("p");
              hint.id = "new-queues"; hint.className = "note";
              hint.innerHTML = 'New queues appeared: <a href="">reload</a> to see them.';
              table.parentNode.insertBefore(hint, table);
            }
          }
        }
        fresh();
      })
      .catch(stale);
  }

  document.querySelectorAll("[data-check-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      var form = box.closest("form");
      form.querySelectorAll('input[name="ids"]').forEach(function (c) { c.checked = box.checked; });
    });
  });

  refresh();
  setInterval(refresh, 3000);
})();
