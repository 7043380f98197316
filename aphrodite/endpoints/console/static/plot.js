// Small SVG charts for the console: lines, steps, points and bars on a shared x axis, one or two y axes.
// Plot.chart(container, {series: [{name, color, kind: "line"|"step"|"points"|"bars", axis: "left"|"right",
//   points: [[x, y], ...]}], width, xTime, xInteger, xFormat, xMinSpan, yInteger, yLabel, y2Label, yRange,
//   y2Range, yZero, empty}) replaces the container's chart.
"use strict";
const Plot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const H = 230, M = {l: 48, r: 48, t: 22, b: 44};

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function extent(values, fallback, minSpan = 2) {
    if (!values.length) return fallback;
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < minSpan) { const mid = (lo + hi) / 2; lo = mid - minSpan / 2; hi = mid + minSpan / 2; }
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  function ticks([lo, hi], n) {
    const out = [];
    for (let i = 0; i <= n; i++) out.push(lo + (hi - lo) * i / n);
    return out;
  }

  // round steps (1, 2, 5 x 10^k; whole numbers for an integer axis) and the range widened to them
  function nice([lo, hi], n, integer) {
    const raw = (hi - lo) / n;
    let step = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (step * m >= raw) { step *= m; break; }
    if (integer) step = Math.max(1, Math.round(step));
    const a = Math.floor(lo / step + 1e-9) * step, b = Math.ceil(hi / step - 1e-9) * step;
    const out = [];
    for (let v = a; v <= b + step / 2; v += step) out.push(+v.toFixed(10));
    return {range: [a, b], ticks: out};
  }

  function fmt(v) {
    const a = Math.abs(v);
    return a >= 100 || a === 0 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
  }

  function chart(container, opts) {
    const series = opts.series.filter(s => s.points.length);
    container.replaceChildren();
    if (!series.length) {
      container.append(Object.assign(document.createElement("p"), {className: "note", textContent: opts.empty || "no data yet"}));
      return;
    }
    const all = series.flatMap(s => s.points);
    const W = opts.width || 560;
    const xt = opts.xTime ? null : nice(extent(all.map(p => p[0]), [0, 1], opts.xMinSpan), 4, opts.xInteger);
    const xr = xt ? xt.range : extent(all.map(p => p[0]), [0, 1], opts.xMinSpan);
    const left = series.filter(s => s.axis !== "right").flatMap(s => s.points.map(p => p[1]));
    const right = series.filter(s => s.axis === "right").flatMap(s => s.points.map(p => p[1]));
    const yt = nice(opts.yRange || extent(left.concat(opts.yZero ? [0] : []), [0, 1], 0.1), 4, opts.yInteger);
    const y2t = nice(opts.y2Range || extent(right, [0, 1], 0.1), 4);
    const yr = yt.range, y2r = y2t.range;
    const sx = x => M.l + (x - xr[0]) / (xr[1] - xr[0]) * (W - M.l - M.r);
    const sy = (y, r) => H - M.b - (y - r[0]) / (r[1] - r[0]) * (H - M.t - M.b);
    const svg = node("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "chart"});
    svg.append(node("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: "#fafbfc", stroke: "#ddd"}));
    for (const t of yt.ticks) {
      svg.append(node("line", {x1: M.l, x2: W - M.r, y1: sy(t, yr), y2: sy(t, yr), stroke: "#eee"}));
      svg.append(node("text", {x: M.l - 4, y: sy(t, yr) + 4, "text-anchor": "end"}, fmt(t)));
    }
    if (right.length) for (const t of y2t.ticks)
      svg.append(node("text", {x: W - M.r + 4, y: sy(t, y2r) + 4}, fmt(t)));
    for (const t of xt ? xt.ticks : ticks(xr, 4))
      svg.append(node("text", {x: sx(t), y: H - M.b + 14, "text-anchor": "middle"}, (opts.xFormat || fmt)(t)));
    if (opts.yLabel) svg.append(node("text", {x: 4, y: 12}, opts.yLabel));
    if (opts.y2Label && right.length) svg.append(node("text", {x: W - 4, y: 12, "text-anchor": "end"}, opts.y2Label));
    series.forEach((s, i) => {
      const r = s.axis === "right" ? y2r : yr;
      const g = node("g", {"data-series": s.name});
      const pts = s.points.map(p => [sx(p[0]), sy(p[1], r)]);
      if (s.kind === "bars") {
        const w = Math.max(2, (W - M.l - M.r) / Math.max(8, s.points.length * 1.5));
        pts.forEach(([x, y]) => g.append(node("rect", {x: x - w / 2, y, width: w, height: Math.max(0, sy(Math.max(r[0], 0), r) - y), fill: s.color, opacity: 0.5})));
      } else {
        if (s.kind !== "points" && pts.length > 1) {
          const path = s.kind === "step"
            ? pts.map(([x, y], j) => j ? `H${x} V${y}` : `M${x} ${y}`).join(" ") + ` H${W - M.r}`
            : pts.map(([x, y], j) => `${j ? "L" : "M"}${x} ${y}`).join(" ");
          g.append(node("path", {d: path, fill: "none", stroke: s.color, "stroke-width": 2}));
        }
        pts.forEach(([x, y], j) => {
          const c = node("circle", {cx: x, cy: y, r: s.kind === "points" ? 5 : 3.5, fill: s.color});
          c.append(node("title", {}, `${s.name}: ${fmt(s.points[j][1])}`));
          g.append(c);
        });
      }
      svg.append(g);
      const lx = M.l + i * 130;
      svg.append(node("rect", {x: lx, y: H - 16, width: 10, height: 10, fill: s.color}));
      svg.append(node("text", {x: lx + 14, y: H - 7}, s.name));
    });
    container.append(svg);
  }

  return {chart};
})();
