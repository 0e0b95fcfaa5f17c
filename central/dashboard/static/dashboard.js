// edgefleet dashboard: draws the node page's charts with uPlot from /nodes/ID/history.json and keeps them
// current. Served as a file (the Content-Security-Policy allows no inline script); tables need none of this.
(function () {
  "use strict";

  var COLORS = ["#2563eb", "#16a34a", "#9333ea", "#dc2626", "#ea580c", "#0891b2"];
  var MS_KEYS = { latency_p50_ms: 1, latency_p99_ms: 1, ttft_p99_ms: 1 };

  function note(el, text) {
    var p = el.querySelector(".chart-note");
    if (!p) {
      p = document.createElement("p");
      p.className = "chart-note dim";
      el.appendChild(p);
    }
    p.textContent = text;
  }

  function columns(data) {
    var cols = [data.x];
    data.series.forEach(function (s) { cols.push(s.values); });
    return cols;
  }

  function options(el, data) {
    var width = (el.parentNode && el.parentNode.clientWidth) || el.clientWidth || 600;
    var series = [{}];
    data.series.forEach(function (s, i) {
      series.push({
        label: s.label,
        scale: MS_KEYS[s.key] ? "ms" : "n",
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        value: function (u, v) { return v == null ? "-" : (MS_KEYS[s.key] ? v.toFixed(0) + " ms" : v.toFixed(1)); }
      });
    });
    return {
      width: Math.max(300, width - 16),
      height: 220,
      series: series,
      scales: { x: { time: true, range: function () { return [el._range[0], el._range[1]]; } } },
      axes: [{}, { scale: "n", label: "count, tok/s" }, { scale: "ms", side: 1, label: "ms", grid: { show: false } }]
    };
  }

  function load(el) {
    return fetch(el.dataset.chartSrc, { headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : { available: false, reason: "HTTP " + r.status }; })
      .then(function (data) {
        if (!data.available) {
          note(el, data.reason || "history not available");
          return;
        }
        note(el, data.x.length ? "" : "no heartbeat in this range yet");
        el._range = [data.start, data.end];
        if (el._plot) {
          el._plot.setData(columns(data));
        } else if (typeof uPlot !== "undefined") {
          el._plot = new uPlot(options(el, data), columns(data), el);
        }
      })
      .catch(function () { note(el, "could not reach the dashboard"); });
  }

  function start() {
    document.querySelectorAll("[data-chart-src]").forEach(function (el) {
      load(el);
      var every = parseInt(el.dataset.refresh || "5", 10) * 1000;
      setInterval(function () { load(el); }, every);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
