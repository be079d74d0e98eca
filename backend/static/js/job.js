// One job: live progress, loss and learning-rate charts, eval metrics (one line per
// matryoshka dim when keys like eval_spearman@256 appear), every metric before and after
// training (a table and bars), how to use the finished model, the log tail, stop/retry and
// the artifacts. Live numbers come from the event stream; the job row is re-read now and
// then for what the stream does not carry (the full loss and eval histories).

import {ApiError, downloadLink, FINAL, getJSON, postJSON, token, watchJob} from "./api.js";
import {barChart, lineChart} from "./chart.js";
import {fill, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, progressBar, setProgress, statusBadge} from "./dom.js";
import {progressLabel} from "./jobs.js";

const TICK_MS = 2000; // log tail and job row refresh while the job is active
const LOG_LINES = 200;
// Top-k names: in "ndcg@10" the number is k, not an embedding size.
const TOP_K_METRICS = /^(mrr|ndcg|recall|precision|map|hits|acc|accuracy)$/i;
const NOT_METRICS = /^eval_(runtime|samples_per_second|steps_per_second)$/;

/** "eval_spearman@256" -> {metric: "spearman", dim: 256}; "eval_ndcg@10" -> {metric: "ndcg@10", dim: null}. */
export function splitMetric(key) {
  const name = key.replace(/^eval_/, "");
  const m = name.match(/^(.*)@(\d+)$/);
  return m && !TOP_K_METRICS.test(m[1]) ? {metric: m[1], dim: Number(m[2])} : {metric: name, dim: null};
}

const dimLabel = (dim) => (dim === null ? "full" : `dim ${dim}`);

export function evalSection(history) {
  const keys = [...new Set(history.flatMap((e) => Object.keys(e)))].filter((k) => k.startsWith("eval_") &&
    !NOT_METRICS.test(k));
  if (!keys.length) return h("p", {class: "muted"}, "No evaluations yet (set valid data and an eval strategy).");
  const byMetric = new Map(); // metric -> [{key, dim}], the full model first, then the larger dims
  for (const key of keys) {
    const {metric, dim} = splitMetric(key);
    if (!byMetric.has(metric)) byMetric.set(metric, []);
    byMetric.get(metric).push({key, dim});
  }
  for (const list of byMetric.values()) list.sort((a, b) => (a.dim === null ? -1 : b.dim === null ? 1 : b.dim - a.dim));
  const ordered = [...byMetric.values()].flat();
  const charts = [...byMetric].map(([metric, list]) => lineChart({title: metric, yLabel: metric,
    series: list.map(({key, dim}) => ({name: dimLabel(dim),
      points: history.filter((e) => e[key] !== undefined).map((e) => [Number(e.step), Number(e[key])])}))}));
  const table = h("table", {class: "eval-table"},
    h("thead", {}, h("tr", {}, h("th", {}, "step"), h("th", {}, "epoch"),
      ordered.map(({key, dim}) => h("th", {title: key}, `${splitMetric(key).metric}${dim === null ? "" : ` @${dim}`}`)))),
    h("tbody", {}, history.map((e) => h("tr", {}, h("td", {class: "num"}, e.step), h("td", {class: "num"}, fmtNumber(e.epoch, 3)),
      ordered.map(({key}) => h("td", {class: "num"}, fmtNumber(e[key])))))));
  return h("div", {}, h("div", {class: "charts"}, charts), table);
}

const BEFORE_AFTER = /^(before|after)\/(.+)$/;

/** [{metric, before, after}] from metrics.json's "before/<split>_<metric>" and "after/..." keys, in their order. */
export function beforeAfter(metrics) {
  const rows = new Map();
  for (const [key, value] of Object.entries(metrics || {})) {
    const m = key.match(BEFORE_AFTER);
    if (!m) continue;
    if (!rows.has(m[2])) rows.set(m[2], {metric: m[2], before: null, after: null});
    rows.get(m[2])[m[1]] = Number(value);
  }
  return [...rows.values()];
}

const signed = (d) => (d === null ? "–" : `${d > 0 ? "+" : ""}${fmtNumber(d)}`);

/** Every before/after metric: a table with the change, and bars of both. */
export function comparisonSection(metrics) {
  const rows = beforeAfter(metrics);
  if (!rows.length) {
    return h("p", {class: "muted"}, "Scores before and after training appear when it ends (valid or test data, "
      + "with evaluate_before_training for the starting model's).");
  }
  const change = (r) => (Number.isFinite(r.before) && Number.isFinite(r.after) ? r.after - r.before : null);
  const table = h("table", {class: "compare-table"},
    h("thead", {}, h("tr", {}, ["metric", "before", "after", "change"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((r) => {
      const d = change(r);
      return h("tr", {dataset: {metric: r.metric}}, h("th", {}, r.metric), h("td", {class: "num"}, fmtNumber(r.before)),
        h("td", {class: "num"}, fmtNumber(r.after)),
        h("td", {class: `num change${d > 0 ? " up" : d < 0 ? " down" : ""}`}, signed(d)));
    })));
  const bars = barChart({title: "before and after training", labels: rows.map((r) => r.metric), series: [
    {name: "before", values: rows.map((r) => r.before), color: "#9ca3af"},
    {name: "after", values: rows.map((r) => r.after), color: "#2563eb"}]});
  return h("div", {class: "compare"}, table, bars);
}

function metricsTable(metrics) {
  const entries = Object.entries(metrics || {}).filter(([k]) => !BEFORE_AFTER.test(k));
  if (!entries.length) return null;
  return h("table", {class: "kv"}, h("tbody", {}, entries.map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {class: "num"}, fmtNumber(v))))));
}

/** How to load the finished model: here from its folder, elsewhere from the zip download. */
export function usageSection(jobId, folder, origin = location.origin) {
  const zipUrl = `${origin}/jobs/${jobId}/artifacts.zip`;
  const name = `job-${jobId}`;
  // The token itself never goes on the page (screenshots, shoulders): the variable the server reads.
  const auth = token.get() ? ' -H "Authorization: Bearer $ANGLE_LAB_API_TOKEN"' : "";
  const code = (text, id) => h("pre", {class: "usage", id}, h("code", {}, text));
  return h("div", {},
    h("p", {}, "The output folder is a sentence-transformers model:"),
    code(`from sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer(${JSON.stringify(folder)})\n`
      + 'embeddings = model.encode(["a query", "a document"])', "usage-python"),
    h("p", {}, "On another machine, download it as a zip (", h("code", {id: "zip-url"}, zipUrl), ") and load the folder:"),
    code(`curl -fL${auth} -o ${name}.zip ${zipUrl}\nunzip ${name}.zip -d ${name}\n`
      + `python -c 'from sentence_transformers import SentenceTransformer; print(SentenceTransformer("${name}"))'`,
    "usage-zip"));
}

export async function renderJob(root, id) {
  let job;
  try {
    job = await getJSON(`/jobs/${id}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      fill(root, h("h1", {}, `Job #${id}`), h("p", {class: "form-error"}, error.message),
        h("a", {href: "#/jobs"}, "← all jobs"));
      return () => {};
    }
    throw error;
  }
  const loss = new Map(); // step -> loss, from the row's loss_history
  // step -> learning rate: from loss_history where its entries carry one; otherwise the row keeps only
  // the latest value, so the curve is sampled from the stream while this page is open.
  const lr = new Map();
  let lrInHistory = false;
  let watcher = null;
  let timer = null;
  let closed = false;

  // ---------------------------------------------------------------- skeleton
  const badge = h("span", {class: "status"});
  const bar = progressBar(0);
  const facts = h("dl", {class: "facts"});
  const output = h("p", {class: "muted output"});
  const message = h("p", {class: "notice", role: "status", hidden: true});
  const errorBox = h("div", {class: "form-error job-error", hidden: true});
  const stopButton = h("button", {type: "button", id: "stop-job", onclick: () => act("stop")}, "Stop");
  const retryButton = h("button", {type: "button", id: "retry-job", onclick: () => act("retry")}, "Retry");
  const liveNote = h("span", {class: "muted live"});
  const charts = h("div", {class: "charts"});
  const evals = h("div", {class: "evals"});
  const metrics = h("div", {class: "metrics"});
  const usage = h("section", {id: "use-model", hidden: true}, h("h2", {}, "Use the model"));
  let outputDir = null; // the server's absolute output folder, from the artifacts listing
  const logStream = h("select", {id: "log-stream", onchange: () => refreshLogs()},
    h("option", {value: "stderr"}, "stderr"), h("option", {value: "stdout"}, "stdout"));
  const log = h("pre", {class: "log", id: "log-tail"});
  const artifacts = h("div", {class: "artifacts"});
  const configBox = h("pre", {class: "config"});

  fill(root,
    h("div", {class: "page-head"}, h("h1", {}, `Job #${id} `, badge), h("span", {class: "spacer"}), liveNote,
      stopButton, retryButton, h("a", {href: "#/jobs", class: "button"}, "All jobs")),
    message, bar, errorBox, facts, output,
    h("section", {}, h("h2", {}, "Training"), charts),
    h("section", {}, h("h2", {}, "Evaluation"), evals),
    h("section", {}, h("h2", {}, "Before and after training"), metrics), usage,
    h("section", {}, h("div", {class: "section-head"}, h("h2", {}, "Log tail"), logStream), log),
    h("section", {}, h("h2", {}, "Artifacts"), artifacts),
    h("section", {}, h("details", {}, h("summary", {}, "Config and launch options"), configBox)));

  // ---------------------------------------------------------------- rendering
  function renderFacts(d) {
    const items = [["step", d.max_steps ? `${d.step ?? 0} / ${d.max_steps}` : "–"], ["epoch", fmtNumber(d.epoch, 3)],
      ["loss", fmtNumber(d.loss)], ["learning rate", fmtNumber(d.learning_rate)], ["ETA", fmtDuration(d.eta_s)],
      ["phase", d.phase || "–"], ["attempt", job.attempt], ["created", fmtTime(job.created_at)],
      ["started", fmtTime(job.started_at)], ["finished", fmtTime(job.finished_at)]];
    fill(facts, items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {dataset: {fact: k}}, v))));
    fill(output, "Output folder: ", h("code", {}, job.config.save_dir), ` · model ${job.config.model_name_or_path}`,
      ` · data ${job.config.train_name_or_path}`);
  }

  function renderStatus(status) {
    fill(badge, statusBadge(status));
    stopButton.disabled = !["QUEUED", "RUNNING"].includes(status);
    retryButton.disabled = !["FAILED", "STOPPED"].includes(status);
  }

  function renderCharts() {
    const lrChart = lineChart({title: "learning rate", yLabel: "lr", series: [{name: "learning rate", points: [...lr]}]});
    if (!lrInHistory) { // say why this curve may be short or coarse
      lrChart.append(h("p", {class: "chart-note"}, "Sampled from live progress while this page is open: the job row keeps only the latest rate."));
    }
    fill(charts, lineChart({title: "loss", yLabel: "loss", series: [{name: "loss", points: [...loss]}]}), lrChart);
  }

  function renderJobRow() {
    const d = job.job_data || {};
    for (const e of d.loss_history || []) {
      loss.set(e.step, e.loss);
      if (e.learning_rate !== undefined && e.learning_rate !== null) {
        if (!lrInHistory) lr.clear(); // drop the live samples once the real history is there
        lrInHistory = true;
        lr.set(e.step, e.learning_rate);
      }
    }
    if (!lrInHistory && d.learning_rate !== undefined && d.learning_rate !== null && d.step !== undefined) {
      lr.set(d.step, d.learning_rate);
    }
    renderStatus(job.status);
    setProgress(bar, job.progress, progressLabel(d));
    renderFacts(d);
    renderCharts();
    fill(evals, evalSection(d.eval_history || []));
    fill(metrics, comparisonSection(d.metrics), metricsTable(d.metrics));
    renderUsage();
    errorBox.hidden = !d.error;
    if (d.error) {
      fill(errorBox, h("strong", {}, "Error: "), d.error,
        d.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", {}, d.traceback)) : null);
    }
    configBox.textContent = JSON.stringify({config: job.config, launch: job.launch}, null, 2);
  }

  function renderUsage() {
    usage.hidden = job.status !== "COMPLETE";
    if (usage.hidden) return;
    const folder = outputDir || job.job_data?.result?.save_dir || job.config.save_dir;
    fill(usage, h("h2", {}, "Use the model"), usageSection(id, folder));
  }

  async function refreshJob() {
    try {
      job = await getJSON(`/jobs/${id}`);
      if (!closed) renderJobRow();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) stopFollowing();
    }
  }

  async function refreshLogs() {
    const chunk = await getJSON(`/jobs/${id}/logs?stream=${logStream.value}&tail=${LOG_LINES}`).catch(() => null);
    if (!chunk || closed) return;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = chunk.text || "(empty so far)";
    if (atBottom) log.scrollTop = log.scrollHeight; // follow the tail unless the user scrolled up to read
  }

  async function refreshArtifacts() {
    const list = await getJSON(`/jobs/${id}/artifacts`).catch(() => null);
    if (!list || closed) return;
    outputDir = list.output_dir;
    renderUsage();
    if (!list.files.length) return fill(artifacts, h("p", {class: "muted"}, "No files yet."));
    const withCheckpoints = h("input", {type: "checkbox", id: "zip-checkpoints"});
    const zipPath = () => `/jobs/${id}/artifacts.zip${withCheckpoints.checked ? "?include_checkpoints=true" : ""}`;
    const zip = downloadLink(zipPath(), `job-${id}.zip`, "Download all (.zip)", "button primary");
    zip.id = "download-zip";
    withCheckpoints.addEventListener("change", () => { zip.href = zipPath(); });
    const row = (f) => h("tr", {}, h("td", {}, downloadLink(`/jobs/${id}/artifacts/${f.path.split("/").map(encodeURIComponent).join("/")}`,
      f.path.split("/").pop(), f.path)), h("td", {class: "num"}, fmtBytes(f.size)));
    const main = list.files.filter((f) => !f.path.startsWith("checkpoints/"));
    const checkpoints = list.files.filter((f) => f.path.startsWith("checkpoints/"));
    fill(artifacts,
      h("p", {class: "zip"}, zip, h("label", {for: "zip-checkpoints"}, withCheckpoints, " include checkpoints"),
        h("span", {class: "muted"}, ` ${list.files.length} files, ${fmtBytes(list.total_bytes)} in ${list.output_dir}`)),
      h("table", {class: "files"}, h("tbody", {}, main.map(row))),
      checkpoints.length ? h("details", {}, h("summary", {}, `checkpoints (${checkpoints.length} files)`),
        h("table", {class: "files"}, h("tbody", {}, checkpoints.map(row)))) : null);
  }

  // ---------------------------------------------------------------- live updates
  let chartFrame = 0;
  function onEvent(event, data) {
    if (closed) return;
    if (event === "progress") {
      setProgress(bar, data.progress, progressLabel(data));
      job.progress = data.progress;
      Object.assign(job.job_data, Object.fromEntries(Object.entries(data).filter(([k]) => k !== "job_id")));
      // Not the loss: a write at a step's end carries the previous log's loss, so the curve comes
      // from the row's loss_history (re-read every tick). The rate is only sampled here (see above).
      if (!lrInHistory && data.learning_rate !== null && data.step !== null) lr.set(data.step, data.learning_rate);
      renderFacts(job.job_data);
      chartFrame ||= requestAnimationFrame(() => { chartFrame = 0; renderCharts(); });
    } else if (event === "metrics") {
      refreshJob(); // the stream carries only the latest eval; the row has the history
    } else if (event === "status") {
      job.status = data.status;
      renderStatus(data.status);
      if (FINAL.includes(data.status) || data.status === "DELETED") finished();
    }
  }

  function stopFollowing() {
    watcher?.stop();
    watcher = null;
    clearTimeout(timer);
    liveNote.textContent = "";
  }

  async function finished() {
    stopFollowing();
    await Promise.all([refreshJob(), refreshLogs(), refreshArtifacts()]);
  }

  function follow() {
    stopFollowing();
    if (FINAL.includes(job.status)) return;
    watcher = watchJob(id, onEvent);
    const tick = async () => {
      liveNote.textContent = watcher ? (watcher.mode === "live" ? "● live" : "● polling") : "";
      await Promise.all([refreshLogs(), refreshJob()]);
      if (watcher && !closed) timer = setTimeout(tick, TICK_MS);
    };
    tick();
  }

  async function act(what) {
    message.hidden = true;
    try {
      job = await postJSON(`/jobs/${id}/${what}`);
      fill(message, what === "stop" ? (job.status === "STOPPING" ? "Stop requested: the job checkpoints and ends at its next step."
        : `Stopped (${job.status}).`) : `Queued again (attempt ${job.attempt}); it resumes from its newest checkpoint.`).hidden = false;
      renderJobRow();
      follow();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      fill(message, error.message).hidden = false;
    }
  }

  renderJobRow();
  refreshLogs();
  refreshArtifacts();
  follow();
  return () => {
    closed = true;
    stopFollowing();
  };
}
