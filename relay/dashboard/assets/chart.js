// relay dashboard: a small line chart in SVG (no library). RelayChart.draw(svg, rows, series)
// draws one line per series over rows (oldest first), with a y axis from 0 to the largest
// value and the minutes along x.
"use strict";

window.RelayChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 720;
  const H = 220;
  const PAD = { left: 44, right: 10, top: 12, bottom: 26 };

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A round step for the y axis: 1, 2 or 5 times a power of ten.
  function niceMax(value) {
    if (value <= 4) return 4;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) {
      if (m * power >= value) return m * power;
    }
    return 10 * power;
  }

  function x(i, n) {
    const width = W - PAD.left - PAD.right;
    return PAD.left + (n <= 1 ? width : (i * width) / (n - 1));
  }

  function y(v, top) {
    const height = H - PAD.top - PAD.bottom;
    return PAD.top + height - (v / top) * height;
  }

  function axes(svg, top, rows) {
    for (const frac of [0, 0.5, 1]) {
      const value = Math.round(top * frac);
      const yy = y(value, top);
      svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: yy, y2: yy, class: "grid" }));
      svg.append(el("text", { x: PAD.left - 6, y: yy + 4, class: "label", "text-anchor": "end" },
        String(value)));
    }
    const n = rows.length;
    const marks = [[0, `-${n} min`], [Math.floor((n - 1) / 2), `-${Math.ceil(n / 2)} min`],
      [n - 1, "now"]];
    for (const [i, text] of marks) {
      const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
      svg.append(el("text", { x: x(i, n), y: H - 6, class: "label", "text-anchor": anchor },
        text));
    }
  }

  function line(svg, rows, s, top) {
    const n = rows.length;
    const points = rows.map((row, i) => `${x(i, n).toFixed(1)},${y(s.value(row), top).toFixed(1)}`);
    svg.append(el("polyline", { points: points.join(" "), class: `series ${s.name}` }));
    const last = rows[n - 1];
    if (last && s.value(last) > 0) {
      svg.append(el("circle", { cx: x(n - 1, n), cy: y(s.value(last), top), r: 3,
        class: `dot ${s.name}` }));
    }
  }

  // series: [{name: "submitted", value: (row) => number}, ...]
  function draw(svg, rows, series) {
    while (svg.firstChild) svg.firstChild.remove();
    if (!rows.length) return;
    let most = 0;
    for (const row of rows) for (const s of series) most = Math.max(most, s.value(row));
    const top = niceMax(most);
    axes(svg, top, rows);
    for (const s of series) line(svg, rows, s, top);
    const total = (s) => rows.reduce((sum, row) => sum + s.value(row), 0);
    svg.append(el("desc", {}, series.map((s) => `${s.name}: ${total(s)}`).join(", ")));
  }

  return { draw, niceMax };
})();
