// Small hand-written SVG charts, no dependencies: a line chart (numeric x and y axes with "nice"
// ticks, one polyline per series, a legend when there is more than one series) and a bar chart
// (horizontal bars per label and series, as the job page's before/after comparison uses).

import {fmtNumber, h} from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const PAD = {left: 70, right: 14, top: 12, bottom: 36};

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(lo, hi, count = 5, integer = false) {
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  if (integer) step = Math.max(1, Math.round(step)); // steps are whole: no tick at step 2.5
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

/**
 * lineChart({title, series: [{name, points: [[x, y], ...]}], xLabel, yLabel}) -> a <figure>.
 * Points with a non-finite coordinate are skipped; an empty chart says so.
 */
export function lineChart({title, series, xLabel = "step", yLabel = "", width = 520, height = 230}) {
  const clean = series
    .map((s, i) => ({...s, color: s.color || COLORS[i % COLORS.length],
      points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0])}))
    .filter((s) => s.points.length);
  const total = clean.reduce((n, s) => n + s.points.length, 0);
  const figure = h("figure", {class: "chart", dataset: {points: String(total)}}, h("figcaption", {}, title));
  if (!total) {
    figure.append(h("div", {class: "chart-empty"}, "no data yet"));
    return figure;
  }
  const xs = clean.flatMap((s) => s.points.map((p) => p[0]));
  const ys = clean.flatMap((s) => s.points.map((p) => p[1]));
  const xTicks = niceTicks(Math.min(...xs), Math.max(...xs), 5, xs.every(Number.isInteger));
  const yTicks = niceTicks(Math.min(...ys), Math.max(...ys));
  const [x0, x1, y0, y1] = [xTicks[0], xTicks.at(-1), yTicks[0], yTicks.at(-1)];
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0 || 1)) * plotW;
  const sy = (y) => PAD.top + plotH - ((y - y0) / (y1 - y0 || 1)) * plotH;

  const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title});
  for (const t of yTicks) {
    root.append(svg("line", {x1: PAD.left, x2: width - PAD.right, y1: sy(t), y2: sy(t), class: "grid"}));
    root.append(svg("text", {x: PAD.left - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick"}, fmtNumber(t, 3)));
  }
  for (const t of xTicks) {
    root.append(svg("line", {x1: sx(t), x2: sx(t), y1: PAD.top, y2: PAD.top + plotH, class: "grid"}));
    root.append(svg("text", {x: sx(t), y: height - PAD.bottom + 16, "text-anchor": "middle", class: "tick"},
      fmtNumber(t, 3)));
  }
  root.append(svg("rect", {x: PAD.left, y: PAD.top, width: plotW, height: plotH, class: "frame"}));
  root.append(svg("text", {x: PAD.left + plotW / 2, y: height - 4, "text-anchor": "middle", class: "axis"}, xLabel));
  if (yLabel) {
    root.append(svg("text", {x: 11, y: PAD.top + plotH / 2, "text-anchor": "middle", class: "axis",
      transform: `rotate(-90 11 ${PAD.top + plotH / 2})`}, yLabel));
  }
  for (const s of clean) {
    const coords = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    const [lx, ly] = s.points.at(-1);
    const line = svg("polyline", {points: coords.join(" "), fill: "none", stroke: s.color, "stroke-width": 2,
      class: "series"});
    line.append(svg("title", {}, `${s.name}: ${fmtNumber(ly)} at ${xLabel} ${fmtNumber(lx)}`));
    root.append(line);
    if (s.points.length <= 30) { // dots while few: one point would otherwise be invisible
      for (const [x, y] of s.points) root.append(svg("circle", {cx: sx(x), cy: sy(y), r: 2.5, fill: s.color}));
    }
  }
  figure.append(root);
  if (clean.length > 1) figure.append(legend(clean));
  return figure;
}

/**
 * barChart({title, labels: ["valid_spearman", ...], series: [{name, values: [...]}, ...]}) -> a <figure>:
 * horizontal bars, one group per label and one bar per series, from a zero line (scores can be negative).
 * A non-finite value draws no bar (a metric scored only after training, say).
 */
export function barChart({title, labels, series, width = 520}) {
  const clean = series.map((s, i) => ({...s, color: s.color || COLORS[i % COLORS.length]}));
  const values = clean.flatMap((s) => s.values).filter(Number.isFinite);
  const figure = h("figure", {class: "chart bars", dataset: {bars: String(values.length)}}, h("figcaption", {}, title));
  if (!values.length) {
    figure.append(h("div", {class: "chart-empty"}, "no data yet"));
    return figure;
  }
  const bar = 13;
  const group = clean.length * (bar + 2) + 10;
  const pad = {left: 150, right: 58, top: 4, bottom: 22};
  const height = pad.top + labels.length * group + pad.bottom;
  const lo = Math.min(0, ...values);
  const hi = Math.max(0, ...values) || 1; // all zero: still a visible scale
  const sx = (v) => pad.left + ((v - lo) / (hi - lo)) * (width - pad.left - pad.right);
  const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title});
  labels.forEach((label, i) => {
    const y0 = pad.top + i * group;
    root.append(svg("text", {x: pad.left - 6, y: y0 + (group - 10) / 2 + 4, "text-anchor": "end", class: "axis"}, label));
    clean.forEach((s, j) => {
      const v = s.values[i];
      if (!Number.isFinite(v)) return;
      const y = y0 + j * (bar + 2);
      const rect = svg("rect", {x: Math.min(sx(0), sx(v)), y, width: Math.max(1, Math.abs(sx(v) - sx(0))), height: bar,
        fill: s.color, class: "bar", "data-series": s.name, "data-label": label});
      rect.append(svg("title", {}, `${label}, ${s.name}: ${fmtNumber(v)}`));
      root.append(rect, svg("text", {x: Math.max(sx(0), sx(v)) + 4, y: y + bar - 3, class: "tick"}, fmtNumber(v)));
    });
  });
  const axisY = height - pad.bottom;
  root.append(svg("line", {x1: sx(0), x2: sx(0), y1: pad.top, y2: axisY, class: "zero"}));
  for (const t of [lo, hi]) {
    root.append(svg("text", {x: sx(t), y: axisY + 14, "text-anchor": "middle", class: "tick"}, fmtNumber(t, 3)));
  }
  figure.append(root, legend(clean));
  return figure;
}

/** Series names with their colours, under a chart. */
function legend(series) {
  const el = h("div", {class: "legend"}, series.map((s) =>
    h("span", {class: "legend-item"}, h("i", {class: "swatch", dataset: {color: s.color}}), s.name)));
  // A swatch's colour through the CSSOM (inline style attributes are blocked by the page's CSP).
  for (const swatch of el.querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
  return el;
}
