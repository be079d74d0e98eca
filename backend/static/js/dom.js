// Tiny DOM helpers. Everything from the server goes in as text (textContent), never as
// HTML: job configs, log lines and error messages are user data.

/** h("div", {class: "x", onclick: fn}, child, "text", [more]) -> an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value; // .checked, .disabled, .value
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A progress bar: an outer track and an inner bar whose width is the percent. */
export function progressBar(percent, label = "") {
  const bar = h("div", {class: "bar"});
  const el = h("div", {class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100"},
    bar, h("span", {class: "progress-text"}));
  setProgress(el, percent, label);
  return el;
}

export function setProgress(el, percent, label = "") {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  el.setAttribute("aria-valuenow", String(p));
  el.querySelector(".bar").style.width = `${p}%`; // CSSOM, which the page's CSP allows
  el.querySelector(".progress-text").textContent = label ? `${p}% · ${label}` : `${p}%`;
}

export function statusBadge(status) {
  return h("span", {class: `badge status-${String(status).toLowerCase()}`}, status);
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (Number.isInteger(n)) return String(n);
  if (Math.abs(n) !== 0 && (Math.abs(n) < 1e-3 || Math.abs(n) >= 1e5)) return n.toExponential(2);
  return String(Number(n.toPrecision(digits)));
}

export function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The server stores naive UTC timestamps ("2025-01-01T10:00:00"): read them as UTC. */
export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return date.toLocaleString();
}
