// The page's shell: a hash router (#/ new job, #/jobs, #/jobs/ID, #/datasets: one URL on the server
// serves them all), the API token panel and the header's health line.

import {ApiError, events, token} from "./api.js";
import {fill, h} from "./dom.js";
import {renderDatasets} from "./datasets.js";
import {renderForm} from "./form.js";
import {renderJob} from "./job.js";
import {renderJobs} from "./jobs.js";

const ROUTES = [
  [/^#?\/?$/, "new", () => renderForm],
  [/^#\/jobs\/?$/, "jobs", () => renderJobs],
  [/^#\/jobs\/(\d+)$/, "jobs", (id) => (root) => renderJob(root, Number(id))],
  [/^#\/datasets\/?$/, "datasets", () => renderDatasets],
];

const main = document.getElementById("main");
const tokenPanel = document.getElementById("token-panel");
const tokenInput = document.getElementById("token-input");
const tokenReason = document.getElementById("token-reason");
let leave = () => {}; // the current page's cleanup: closes its event streams and timers
let generation = 0;

async function route() {
  leave();
  leave = () => {};
  const mine = ++generation;
  const hash = location.hash || "#/";
  const match = ROUTES.map(([re, nav, make]) => [hash.match(re), nav, make]).find(([m]) => m);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", Boolean(match) && link.dataset.nav === match[1]);
  }
  if (!match) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, "No page at ", h("code", {}, hash), ". ", h("a", {href: "#/"}, "New job")));
    return;
  }
  const [m, , make] = match;
  fill(main, h("p", {class: "muted"}, "Loading…"));
  try {
    const cleanup = await make(...m.slice(1))(main);
    if (mine === generation) leave = cleanup;
    else cleanup(); // the user navigated on while this page was loading
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) return; // the token panel is already asking
    fill(main, h("h1", {}, "Could not load this page"), h("p", {class: "form-error"}, error.message));
  }
}

function showTokenPanel(reason) {
  tokenReason.textContent = reason;
  tokenPanel.hidden = false;
  tokenInput.value = token.get();
  tokenInput.focus();
}

events.addEventListener("unauthorized", () => {
  showTokenPanel(token.get() ? "The server rejected the stored token: paste the right one."
    : "This server requires an API token (ANGLE_LAB_API_TOKEN): paste it to continue.");
});

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token.set(tokenInput.value.trim());
  tokenPanel.hidden = true;
  route();
});
document.getElementById("token-forget").addEventListener("click", () => {
  token.set("");
  tokenInput.value = "";
});
document.getElementById("token-toggle").addEventListener("click", () => {
  if (tokenPanel.hidden) showTokenPanel("Stored in this browser (localStorage) and sent as a bearer token.");
  else tokenPanel.hidden = true;
});

async function health() { // /health needs no token: it tells whether the server and its worker are up
  const el = document.getElementById("health");
  try {
    const r = await (await fetch("/health")).json();
    el.textContent = `server ${r.status}${r.worker === null ? ", no worker" : r.worker ? ", worker running" : ", worker down"}`;
    el.className = r.status === "ok" && r.worker !== false ? "ok" : "bad";
  } catch {
    el.textContent = "server unreachable";
    el.className = "bad";
  }
}

window.addEventListener("hashchange", route);
route();
health();
setInterval(health, 15_000);
