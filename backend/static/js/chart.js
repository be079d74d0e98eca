// A small hand-written SVG line chart: numeric x and y axes with "nice" ticks, one
// polyline per series, a legend when there is more than one series. No dependencies.

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
  if (clean.length > 1) {
    figure.append(h("div", {class: "legend"}, clean.map((s) =>
      h("span", {class: "legend-item"}, h("i", {class: "swatch", dataset: {color: s.color}}), s.name))));
    // A swatch's colour through the CSSOM (inline style attributes are blocked by the page's CSP).
    for (const swatch of figure.querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
  }
  return figure;
}
