// The jobs list: newest first, each active job's progress bar following its event stream.
// The list itself is re-read every few seconds to pick up jobs queued from elsewhere.

import {FINAL, getJSON, watchJob} from "./api.js";
import {fill, fmtNumber, fmtTime, h, progressBar, setProgress, statusBadge} from "./dom.js";

const REFRESH_MS = 4000;
// Each stream holds one HTTP/1.1 connection and Chromium allows six per host: leave room for the rest.
const MAX_STREAMS = 3;

const basename = (path) => String(path ?? "").replace(/\/+$/, "").split("/").pop() || "–";

export function progressLabel(d) {
  return d.max_steps ? `step ${d.step ?? 0}/${d.max_steps}` : "";
}

export async function renderJobs(root) {
  const body = h("tbody");
  const summary = h("p", {class: "lede"});
  fill(root, h("div", {class: "page-head"}, h("h1", {}, "Jobs"),
    h("a", {href: "#/", class: "button primary"}, "New job")), summary,
  h("table", {class: "jobs"},
    h("thead", {}, h("tr", {}, ["#", "status", "progress", "loss", "model", "training data", "created"].map(
      (t) => h("th", {}, t)))),
    body));

  const watchers = new Map(); // job id -> watcher
  const rows = new Map(); // job id -> {status, bar, loss}
  let timer = null;
  let stopped = false;

  function follow(job) {
    if (watchers.has(job.id) || FINAL.includes(job.status)) return;
    // Past the stream budget a job is polled instead: same events, once a second.
    const watcher = watchJob(job.id, (event, data) => {
      const row = rows.get(job.id);
      if (!row) return;
      if (event === "progress") {
        setProgress(row.bar, data.progress, progressLabel(data));
        row.loss.textContent = fmtNumber(data.loss);
      } else if (event === "status") {
        fill(row.status, statusBadge(data.status));
        if (FINAL.includes(data.status) || data.status === "DELETED") {
          watchers.delete(job.id);
          load(); // the final row: progress 100, final loss
        }
      }
    }, {preferPolling: watchers.size >= MAX_STREAMS});
    watchers.set(job.id, watcher);
  }

  let loading = null;
  const load = () => (loading ??= reload().finally(() => { loading = null; }));

  async function reload() {
    clearTimeout(timer);
    const list = await getJSON("/jobs?limit=100");
    if (stopped) return;
    rows.clear();
    fill(body, list.items.map((job) => {
      const d = job.job_data || {};
      const row = {status: h("td", {}, statusBadge(job.status)),
        bar: progressBar(job.progress, progressLabel(d)), loss: h("td", {class: "num"}, fmtNumber(d.loss))};
      rows.set(job.id, row);
      const open = () => { location.hash = `#/jobs/${job.id}`; };
      return h("tr", {class: "job-row", dataset: {jobId: String(job.id)}, onclick: open},
        h("td", {}, h("a", {href: `#/jobs/${job.id}`}, `#${job.id}`)), row.status, h("td", {class: "cell-progress"}, row.bar),
        row.loss, h("td", {title: job.config.model_name_or_path}, basename(job.config.model_name_or_path)),
        h("td", {title: job.config.train_name_or_path}, basename(job.config.train_name_or_path)),
        h("td", {}, fmtTime(job.created_at)));
    }));
    if (!list.items.length) body.append(h("tr", {}, h("td", {colspan: "7", class: "empty"}, "No jobs yet.")));
    const active = list.items.filter((j) => !FINAL.includes(j.status)).length;
    summary.textContent = `${list.total} job${list.total === 1 ? "" : "s"}, ${active} queued or running.`;
    for (const job of list.items) follow(job);
    timer = setTimeout(() => load().catch(() => {}), REFRESH_MS);
  }

  await load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    for (const w of watchers.values()) w.stop();
  };
}
