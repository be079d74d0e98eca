// The page's one way to talk to the server: fetch with the bearer token (when one is
// stored), problem+json errors turned into ApiError, and a job watcher that reads the
// SSE stream (through fetch, because EventSource cannot send an Authorization header)
// and falls back to polling when the stream fails.

const TOKEN_KEY = "angle-lab-token";
const POLL_MS = 1000;

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

/** A non-2xx answer: status, the problem's detail and its [{field, message}] errors. */
export class ApiError extends Error {
  constructor(status, detail, errors = []) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

/** 401 anywhere means "ask for a token"; app.js listens for this. */
export const events = new EventTarget();

export async function request(path, {method = "GET", body, signal, headers = {}} = {}) {
  const init = {method, signal, headers: {...headers}};
  if (token.get()) init.headers.Authorization = `Bearer ${token.get()}`;
  if (body instanceof Blob) { // a file goes as it is: the server streams the body to disk (POST /datasets)
    init.headers["Content-Type"] = "application/octet-stream";
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.ok) return response;
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    // not JSON (a proxy's error page): keep the status line
  }
  const error = new ApiError(response.status, problem.detail || response.statusText, problem.errors || []);
  if (response.status === 401) events.dispatchEvent(new CustomEvent("unauthorized", {detail: error}));
  throw error;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

export async function postJSON(path, body, options = {}) {
  const response = await request(path, {...options, method: "POST", body});
  return response.status === 204 ? null : response.json();
}

/** Upload a file as dataset `file.name`; resolves to its description (format, columns, rows, first rows). */
export async function uploadDataset(file, name = file.name) {
  return (await request(`/datasets?name=${encodeURIComponent(name)}`, {method: "POST", body: file})).json();
}

/** Read an SSE stream, calling onEvent(name, data) per event; resolves when the server ends it. */
async function readEvents(path, onEvent, signal) {
  const response = await request(path, {signal, headers: {Accept: "text/event-stream"}});
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

export const FINAL = ["COMPLETE", "FAILED", "STOPPED"];
const PROGRESS_KEYS = ["step", "max_steps", "epoch", "loss", "learning_rate", "eta_s", "phase"];

/** The events a job row stands for: what polling gives when the stream is not available. */
function rowEvents(job) {
  const d = job.job_data || {};
  const progress = {job_id: job.id, progress: job.progress};
  for (const key of PROGRESS_KEYS) progress[key] = d[key] ?? null;
  const out = [["progress", progress]];
  if (d.eval || d.metrics) out.push(["metrics", {job_id: job.id, eval: d.eval ?? null, metrics: d.metrics ?? null}]);
  out.push(["status", {job_id: job.id, status: job.status, progress: job.progress, attempt: job.attempt,
    error: d.error ?? null}]);
  return out;
}

/**
 * Follow a job until it ends: onEvent("progress" | "metrics" | "status", data), the SSE
 * stream's own events. Returns a stop() function. `mode` tells how it is being watched.
 */
export function watchJob(id, onEvent, {preferPolling = false} = {}) {
  const abort = new AbortController();
  const watcher = {mode: preferPolling ? "polling" : "live", stop: () => abort.abort()};
  let status = null;
  const emit = (name, data) => {
    if (name === "status") status = data.status;
    onEvent(name, data);
  };
  const poll = async () => {
    watcher.mode = "polling";
    while (!abort.signal.aborted && !FINAL.includes(status)) {
      try {
        for (const [name, data] of rowEvents(await getJSON(`/jobs/${id}`, {signal: abort.signal}))) emit(name, data);
      } catch (error) {
        if (abort.signal.aborted) return;
        if (error instanceof ApiError && error.status === 404) return emit("status", {job_id: id, status: "DELETED"});
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  };
  (async () => {
    if (!preferPolling) {
      try {
        await readEvents(`/jobs/${id}/events`, emit, abort.signal);
        if (FINAL.includes(status) || status === "DELETED") return; // the stream ended with the job
      } catch (error) {
        if (abort.signal.aborted) return;
        if (error instanceof ApiError && error.status === 404) return emit("status", {job_id: id, status: "DELETED"});
        console.warn(`event stream of job ${id} failed, polling instead:`, error);
      }
    }
    await poll();
  })();
  return watcher;
}

/**
 * A link that downloads `path`. Without a token it is a plain link (the browser streams the
 * file to disk); a link cannot carry the Authorization header, so with a token the click
 * fetches the file into memory first and saves it from there.
 */
export function downloadLink(path, filename, label, className = "") {
  const a = document.createElement("a");
  a.href = path;
  a.download = filename;
  a.className = className;
  a.textContent = label;
  a.addEventListener("click", async (event) => {
    if (!token.get()) return;
    event.preventDefault();
    const saver = document.createElement("a");
    saver.download = filename;
    saver.href = URL.createObjectURL(await (await request(path)).blob());
    saver.click();
    setTimeout(() => URL.revokeObjectURL(saver.href), 60_000);
  });
  return a;
}
