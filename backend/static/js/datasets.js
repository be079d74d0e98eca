// The "Datasets" page (#/datasets): upload a data file or a zipped BEIR folder (the server
// checks it on arrival and says what it found, or which row and column is wrong), list the
// uploads, delete one (refused while a queued or running job reads it). The new-job form
// picks them by their ref, dataset:<name>.

import {ApiError, getJSON, request, uploadDataset} from "./api.js";
import {fill, h} from "./dom.js";

export const ACCEPT = ".jsonl,.json,.csv,.tsv,.parquet,.zip";

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

function cell(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** The first rows as a table: what the server read, so a wrong column shows at a glance. */
export function previewTable(dataset) {
  const columns = dataset.columns.length ? dataset.columns : Object.keys(dataset.preview[0] || {});
  return h("table", {class: "preview"},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, dataset.preview.map((row) => h("tr", {}, columns.map((c) => h("td", {}, cell(row[c] ?? "")))))));
}

function summary(d) {
  const what = d.kind === "beir" ? `BEIR folder (splits ${d.splits.join(", ")}), format B` : `format ${d.format ?? "?"}`;
  return `${d.name}: ${what}, ${d.rows ?? "?"} rows, columns ${d.columns.join(", ") || "?"}`;
}

/** An upload's refusal: the server's message, and the row and column it names on their own line. */
function refusal(error) {
  const first = error.errors?.[0] || {};
  const where = [first.row && `row ${first.row}`, first.column && `column ${first.column}`].filter(Boolean).join(", ");
  return [h("strong", {}, "Refused: "), error.message, where ? h("p", {class: "where"}, where) : null];
}

export async function renderDatasets(root) {
  const file = h("input", {type: "file", id: "dataset-file", accept: ACCEPT, "aria-label": "dataset file"});
  const result = h("div", {id: "upload-result", role: "status"});
  const listError = h("div", {class: "form-error", id: "datasets-error", role: "alert", hidden: true});
  const body = h("tbody");
  const table = h("table", {class: "datasets", id: "datasets-table"},
    h("thead", {}, h("tr", {}, ["Name", "Use as", "Format", "Rows", "Columns", "Size", ""].map((t) => h("th", {}, t)))),
    body);

  async function load() {
    const {items} = await getJSON("/datasets");
    fill(body, items.length ? items.map((d) => h("tr", {dataset: {dataset: d.name}},
      h("td", {}, d.name), h("td", {}, h("code", {}, d.ref)), h("td", {}, d.kind === "beir" ? "B (BEIR)" : d.format ?? "?"),
      h("td", {}, d.rows ?? "?"), h("td", {}, d.columns.join(", ")), h("td", {}, fmtBytes(d.size_bytes)),
      h("td", {}, h("button", {type: "button", class: "delete-dataset", onclick: () => remove(d.name)}, "Delete"))))
      : h("tr", {}, h("td", {colspan: 7, class: "muted"}, "No datasets uploaded yet.")));
  }

  async function remove(name) {
    listError.hidden = true;
    try {
      await request(`/datasets/${encodeURIComponent(name)}`, {method: "DELETE"});
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      fill(listError, h("strong", {}, "Not deleted: "), error.message).hidden = false;
    }
    await load();
  }

  async function upload(event) {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return fill(result, h("p", {class: "form-error"}, "Choose a file first."));
    fill(result, h("p", {class: "muted"}, `Uploading ${chosen.name}…`));
    try {
      const d = await uploadDataset(chosen);
      fill(result, h("p", {class: "notice"}, `Stored ${summary(d)}. Jobs name it `, h("code", {}, d.ref), "."),
        previewTable(d));
      file.value = "";
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      fill(result, h("div", {class: "form-error"}, refusal(error)));
    }
    await load();
  }

  fill(root, h("h1", {}, "Datasets"),
    h("p", {class: "lede"}, "Upload a .jsonl, .json, .csv, .tsv or .parquet file, or a BEIR folder as a .zip. ",
      "It is checked on arrival the way training reads it; the new-job form can then pick it."),
    h("form", {class: "upload", id: "upload-form", onsubmit: upload}, file,
      h("button", {type: "submit", class: "primary", id: "upload-dataset"}, "Upload")),
    result, h("h2", {}, "Uploaded"), listError, table);
  await load();
  return () => {};
}
