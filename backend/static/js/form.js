// The "New job" page: a form rendered from the plugin manifest (GET /plugin: parameters,
// parameters_ui, groups) plus the OpenAPI schema for what the manifest flattens to text
// (list and mapping fields) and for the launch options. Checks mirror TrainConfig's so
// most mistakes show before a request; the server's 422 errors land on the same fields.

import {ApiError, getJSON, postJSON} from "./api.js";
import {fill, h} from "./dom.js";

// Presets per data format come from the server (GET /presets: plugin/quickstart.py's RECOMMENDED_A/B/C, the
// recipes the benchmarks chose); these are only the fallback for a server without that route.
// A: in-batch negatives hurt on graded pairs, so they are off there.
export const PRESETS = {
  A: {label: "A · scored pairs", columns: "text1, text2, label",
    values: {data_format: "A", cosine_w: 1, ibn_w: 0, cln_w: 0, angle_w: 0.02}},
  // B and C: the retrieval recipe (plugin/quickstart.py RECOMMENDED_B / RECOMMENDED_C, docs/benchmarks.md). C keeps
  // the data's own negatives; mining (mine_hard_negatives, RECOMMENDED_MINED) is the switch for B or BEIR data.
  B: {label: "B · query → positive", columns: "query, positive",
    values: {data_format: "B", cosine_w: 0, ibn_w: 1, cln_w: 0, angle_w: 0, ibn_tau: 20, learning_rate: 2e-5,
      warmup_ratio: 0.1, batch_size: 64, mini_batch_size: 16, maxlen: 256, epochs: 3, backbone_dropout: 0,
      freeze_embeddings: true, mine_hard_negatives: false}},
  C: {label: "C · with hard negatives", columns: "query, positive, negative",
    values: {data_format: "C", cosine_w: 0, ibn_w: 1, cln_w: 1, angle_w: 0, ibn_tau: 20, learning_rate: 2e-5,
      warmup_ratio: 0.1, batch_size: 64, mini_batch_size: 16, maxlen: 256, epochs: 3, backbone_dropout: 0,
      freeze_embeddings: true, train_group_size: 4, mine_hard_negatives: false}},
};
const LOSS_WEIGHTS = ["cosine_w", "ibn_w", "cln_w", "angle_w", "distill_w"];
const ESSENTIALS = "Essentials"; // what most runs set, shown first and open; every group below starts folded
// save_dir's manifest default is where a bare TrainConfig writes; a queued job without one
// gets its own folder instead, which is what an empty box should promise.
const PLACEHOLDERS = {save_dir: "empty: a new folder per job (<data_dir>/runs/job-N)"};

// ------------------------------------------------------------------ field specs
function nonNull(prop = {}) {
  const branches = (prop.anyOf || []).filter((b) => b.type !== "null");
  return branches.length === 1 ? {...prop, ...branches[0]} : prop;
}

function bounds(p) {
  return {min: p.minimum, max: p.maximum, gt: p.exclusiveMinimum, lt: p.exclusiveMaximum,
    minLength: p.minLength, maxLength: p.maxLength};
}

/** Config fields from the manifest, typed precisely where the manifest says only "string". */
function configSpecs(manifest, trainSchema) {
  const ui = manifest.parameters_ui || {};
  const order = ui["ui:order"] || Object.keys(manifest.parameters);
  return order.map((name) => {
    const p = manifest.parameters[name];
    const prop = nonNull(trainSchema?.properties?.[name]);
    const spec = {section: "config", name, title: p.title || name, help: ui[name]?.["ui:help"] || "",
      group: ui[name]?.["ui:group"] || "Training", nullable: Boolean(p.nullable),
      required: (manifest.required || []).includes(name), enum: p.enum, ...bounds(p),
      kind: p.enum ? "enum" : p.type, defaultText: p.default};
    if (prop.type === "array") {
      spec.kind = prop.items?.enum ? "choices" : "list";
      spec.item = {kind: prop.items?.type || "string", enum: prop.items?.enum, ...bounds(prop.items || {})};
      spec.minItems = prop.minItems;
      spec.maxItems = prop.maxItems;
    } else if (prop.type === "object") {
      spec.kind = "mapping";
    }
    return spec;
  });
}

/** Launch options straight from their JSON schema (they are not in the manifest: not training parameters). */
function launchSpecs(launchSchema) {
  return Object.entries(launchSchema?.properties || {}).map(([name, raw]) => {
    const p = nonNull(raw);
    const nullable = (raw.anyOf || []).some((b) => b.type === "null");
    return {section: "launch", name, title: p.title || name, help: p.description || "", group: "Launch",
      nullable, required: false, enum: p.enum, ...bounds(p), kind: p.enum ? "enum" : p.type,
      defaultText: p.default ?? null};
  });
}

const key = (spec) => `${spec.section}.${spec.name}`;

// ------------------------------------------------------------------ parsing and checks (mirror TrainConfig)
function numberError(kind, n, s) {
  if (!Number.isFinite(n)) return "must be a number";
  if (kind === "integer" && !Number.isInteger(n)) return "must be a whole number";
  if (s.min !== undefined && n < s.min) return `must be ≥ ${s.min}`;
  if (s.max !== undefined && n > s.max) return `must be ≤ ${s.max}`;
  if (s.gt !== undefined && n <= s.gt) return `must be > ${s.gt}`;
  if (s.lt !== undefined && n >= s.lt) return `must be < ${s.lt}`;
  return null;
}

function parseScalar(kind, text, s) {
  const t = text.trim();
  if (kind === "integer" || kind === "number") {
    const n = kind === "integer" && !/^[+-]?\d+$/.test(t) ? NaN : Number(t);
    if (kind === "integer" && Number.isNaN(n) && Number.isFinite(Number(t))) return {error: "must be a whole number"};
    const error = numberError(kind, n, s);
    return error ? {error} : {value: n};
  }
  if (s.enum) { // a select's value is text; the choice keeps its JSON type (load_kbit: 4, 8, 16)
    const choice = s.enum.find((c) => String(c) === t);
    return choice === undefined ? {error: `must be one of ${s.enum.join(", ")}`} : {value: choice};
  }
  return {value: t};
}

/**
 * The JSON value of one field's text: {value} (undefined: leave it to the server's
 * default) or {error}. `text` is what the input holds; booleans come as true/false.
 */
export function parseField(spec, text) {
  if (spec.kind === "boolean") return {value: text === "" || text === null ? (spec.nullable ? null : undefined) : text};
  if (spec.kind === "choices") return {value: text.length ? text : undefined};
  const t = String(text ?? "").trim();
  if (t === "") {
    if (spec.required) return {error: "required"};
    return {value: spec.nullable ? null : undefined}; // empty: None where allowed, else the default
  }
  if (spec.kind === "list") {
    const parts = t.split(",").map((x) => x.trim()).filter(Boolean);
    const value = [];
    for (const part of parts) {
      const one = parseScalar(spec.item.kind, part, spec.item);
      if (one.error) return {error: `${JSON.stringify(part)} ${one.error}`};
      value.push(one.value);
    }
    if (spec.minItems !== undefined && value.length < spec.minItems) return {error: `needs ≥ ${spec.minItems} items`};
    if (spec.maxItems !== undefined && value.length > spec.maxItems) return {error: `takes ≤ ${spec.maxItems} items`};
    return {value};
  }
  if (spec.kind === "mapping") { // sent as "old:new;old2:new2", which TrainConfig parses itself
    const bad = t.split(";").map((x) => x.trim()).filter(Boolean).find((part) => {
      const sides = part.split(":");
      return sides.length !== 2 || !sides[0].trim() || !sides[1].trim();
    });
    return bad ? {error: `entry ${JSON.stringify(bad)} must look like 'old:new'`} : {value: t};
  }
  if (spec.kind === "string") {
    if (spec.minLength !== undefined && t.length < spec.minLength) return {error: "required"};
    if (spec.maxLength !== undefined && t.length > spec.maxLength) return {error: `at most ${spec.maxLength} characters`};
    if (spec.name.endsWith("_prompt") && !t.includes("{text}")) return {error: "must contain the placeholder {text}"};
    return {value: t};
  }
  return parseScalar(spec.kind, t, spec);
}

/** Rules across fields (TrainConfig's model validator): [fieldKey, message] pairs. */
function crossChecks(config) {
  const errors = [];
  const get = (name, fallback) => (config[name] === undefined ? fallback : config[name]);
  if (get("fp16", false) && get("bf16", false)) errors.push(["config.bf16", "fp16 and bf16 cannot both be set"]);
  return errors;
}

// ------------------------------------------------------------------ inputs
function hintFor(spec) {
  const parts = [];
  if (spec.kind === "list") parts.push(`comma-separated ${spec.item.kind === "integer" ? "whole numbers" : "values"}`);
  if (spec.kind === "mapping") parts.push("old:new;old2:new2");
  if (spec.min !== undefined) parts.push(`≥ ${spec.min}`);
  if (spec.gt !== undefined) parts.push(`> ${spec.gt}`);
  if (spec.max !== undefined) parts.push(`≤ ${spec.max}`);
  if (spec.lt !== undefined) parts.push(`< ${spec.lt}`);
  if (spec.required) parts.push("required");
  else if (spec.defaultText !== null && spec.defaultText !== undefined && spec.defaultText !== "") {
    parts.push(`default ${spec.defaultText}`);
  }
  return parts.join(" · ");
}

function textOf(spec, value) {
  if (value === null || value === undefined) return "";
  if (spec.kind === "list" || spec.kind === "choices") return Array.isArray(value) ? value.join(",") : String(value);
  if (spec.kind === "mapping" && typeof value === "object") {
    return Object.entries(value).map(([a, b]) => `${a}:${b}`).join(";");
  }
  return String(value);
}

function makeInput(spec, id) {
  const common = {id, name: key(spec), "aria-describedby": `${id}-help`};
  if (spec.kind === "boolean" && !spec.nullable) return h("input", {...common, type: "checkbox"});
  if (spec.kind === "boolean") {
    return h("select", common, h("option", {value: ""}, "auto"), h("option", {value: "true"}, "yes"),
      h("option", {value: "false"}, "no"));
  }
  if (spec.kind === "enum") {
    return h("select", common, spec.nullable ? h("option", {value: ""}, "(none)") : null,
      spec.enum.map((v) => h("option", {value: v}, v)));
  }
  if (spec.kind === "choices") {
    return h("span", {...common, class: "choices"}, spec.item.enum.map((v) =>
      h("label", {class: "choice"}, h("input", {type: "checkbox", value: v}), v)));
  }
  if (spec.kind === "integer" || spec.kind === "number") {
    // type=text: a number input hides what was typed when it does not parse, and we want to say why.
    return h("input", {...common, type: "text", inputmode: spec.kind === "integer" ? "numeric" : "decimal",
      autocomplete: "off"});
  }
  return h("input", {...common, type: "text", autocomplete: "off", spellcheck: "false",
    placeholder: PLACEHOLDERS[spec.name] || (spec.kind === "list" ? "e.g. 768,512,256" : "")});
}

function readInput(spec, input) {
  if (spec.kind === "boolean" && !spec.nullable) return input.checked;
  if (spec.kind === "boolean") return input.value === "" ? "" : input.value === "true";
  if (spec.kind === "choices") return [...input.querySelectorAll("input:checked")].map((c) => c.value);
  return input.value;
}

function writeInput(spec, input, value) {
  if (spec.kind === "boolean" && !spec.nullable) input.checked = Boolean(value);
  else if (spec.kind === "boolean") input.value = value === null || value === undefined ? "" : String(value);
  else if (spec.kind === "choices") {
    const chosen = Array.isArray(value) ? value : String(value ?? "").split(",").map((x) => x.trim());
    for (const box of input.querySelectorAll("input")) box.checked = chosen.includes(box.value);
  } else input.value = PLACEHOLDERS[spec.name] && value === spec.defaultText ? "" : textOf(spec, value);
}

/**
 * The essentials: ui:order's head (plugin/manifest.py ESSENTIALS), i.e. the names before the point where
 * ui:order becomes the groups' own order of what is left.
 */
export function essentialNames(manifest) {
  const order = manifest.parameters_ui?.["ui:order"] || [];
  const grouped = Object.values(manifest.parameter_groups || {}).flat();
  for (let i = 0; i < order.length; i++) {
    const head = new Set(order.slice(0, i));
    const rest = grouped.filter((n) => !head.has(n) && order.includes(n));
    if (rest.length === order.length - i && rest.every((n, j) => n === order[i + j])) return order.slice(0, i);
  }
  return [];
}

/** Presets from the server, with every key any preset sets: one preset's key another lacks goes back to its default. */
async function loadPresets() {
  try {
    return await getJSON("/presets");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    return PRESETS;
  }
}

// ------------------------------------------------------------------ the page
export async function renderForm(root) {
  const [manifest, openapi, presets, uploads] = await Promise.all([
    getJSON("/plugin"),
    getJSON("/openapi.json").catch(() => null), // without it, list fields go as text (TrainConfig parses those)
    loadPresets(),
    getJSON("/datasets").then((r) => r.items).catch(() => []),
  ]);
  const essentials = new Set(essentialNames(manifest));
  const schemas = openapi?.components?.schemas || {};
  const specs = [...configSpecs(manifest, schemas.TrainConfig), ...launchSpecs(schemas.LaunchOptions)];
  const fields = new Map(); // key -> {spec, input, wrap, error}

  // Groups in the manifest's order (ui:order puts a host's essentials first, across groups).
  const groups = new Map([[ESSENTIALS, []], ...Object.keys(manifest.parameter_groups || {}).map((g) => [g, []])]);
  for (const spec of specs) {
    if (spec.section === "config" && essentials.has(spec.name)) {
      groups.get(ESSENTIALS).push(spec);
      continue;
    }
    if (!groups.has(spec.group)) groups.set(spec.group, []);
    groups.get(spec.group).push(spec);
  }
  const formError = h("div", {class: "form-error", role: "alert", hidden: true});
  const notice = h("div", {class: "notice", role: "status", hidden: true});
  const form = h("form", {class: "job-form", novalidate: true, onsubmit: (e) => { e.preventDefault(); queue(); }});

  for (const [group, members] of groups) {
    if (!members.length) continue;
    const groupError = h("p", {class: "error group-error", dataset: {group}});
    const body = h("div", {class: "fields"});
    for (const spec of members) {
      const id = `f-${spec.section}-${spec.name}`;
      const input = makeInput(spec, id);
      const error = h("p", {class: "error", id: `${id}-error`, "aria-live": "polite"});
      const wrap = h("div", {class: `field kind-${spec.kind}`, dataset: {field: key(spec)}},
        h("label", {for: id}, h("span", {class: "title"}, spec.title), h("code", {}, spec.name)),
        input, h("p", {class: "hint"}, hintFor(spec)), h("p", {class: "help", id: `${id}-help`}, spec.help), error);
      writeInput(spec, input, spec.defaultText);
      // Typing clears that field's complaint; the next submit checks it again.
      input.addEventListener("input", () => setError(key(spec), ""));
      fields.set(key(spec), {spec, input, wrap, error});
      body.append(wrap);
    }
    if (group === ESSENTIALS) { // not foldable: these are the fields to look at first
      form.append(h("section", {class: "essentials", dataset: {group}}, h("h2", {}, group), groupError, body));
    } else {
      form.append(h("details", {class: "group", dataset: {group}}, h("summary", {}, group), groupError, body));
    }
  }

  const templateName = h("input", {id: "template-name", type: "text", placeholder: "template name", autocomplete: "off"});
  const templateError = h("p", {class: "error", id: "template-name-error"});
  form.append(h("div", {class: "actions"},
    h("button", {type: "submit", class: "primary", id: "queue-job"}, "Queue job"),
    h("span", {class: "spacer"}),
    h("span", {class: "template-save", dataset: {field: "name"}}, templateName,
      h("button", {type: "button", id: "save-template", onclick: () => saveTemplate()}, "Save as template"),
      templateError)),
  formError, notice);

  // ---------------------------------------------------------------- state helpers
  function setError(fieldKey, message) {
    const f = fields.get(fieldKey);
    if (!f) return false;
    f.error.textContent = message;
    f.wrap.classList.toggle("invalid", Boolean(message));
    f.input.setAttribute("aria-invalid", message ? "true" : "false");
    const folded = f.wrap.closest("details");
    if (message && folded) folded.open = true; // an error in a folded group must still be seen
    if (message) f.wrap.hidden = false; // ... and in a field the filter hides
    return true;
  }

  function clearErrors() {
    for (const k of fields.keys()) setError(k, "");
    for (const el of form.querySelectorAll(".group-error")) el.textContent = "";
    templateError.textContent = "";
    formError.hidden = true;
    notice.hidden = true;
  }

  function showErrors(list) { // [[key, message]]: next to the field, else in the box under the buttons
    const loose = [];
    for (const [k, message] of list) {
      if (k === "name") templateError.textContent = message;
      else if (!setError(k, message)) loose.push(k && !["config", "body", "launch"].includes(k) ? `${k}: ${message}` : message);
    }
    if (loose.length) fill(formError, h("strong", {}, "Not accepted: "), loose.join("; ")).hidden = false;
    const first = form.querySelector(".field.invalid input, .field.invalid select") || (loose.length && formError);
    if (first) {
      first.scrollIntoView({block: "center"});
      if (first.focus) first.focus();
    }
  }

  /** The server's errors name "config.x", "launch.y" or deeper ("config.report_to.0"): map to a field. */
  function serverErrors(error) {
    return (error.errors.length ? error.errors : [{field: "", message: error.message}]).map(({field, message}) => {
      const parts = String(field || "").split(".");
      return [parts.length >= 2 ? parts.slice(0, 2).join(".") : parts[0], message];
    });
  }

  /** {config, launch} with only what differs from the defaults, or null after showing the errors. */
  function collect() {
    clearErrors();
    const body = {config: {}, launch: {}};
    const errors = [];
    for (const [k, {spec, input}] of fields) {
      const {value, error} = parseField(spec, readInput(spec, input));
      if (error) errors.push([k, error]);
      else if (value !== undefined && (PLACEHOLDERS[spec.name] || JSON.stringify(value) !== JSON.stringify(defaultOf(spec)))) {
        body[spec.section][spec.name] = value;
      }
    }
    errors.push(...crossChecks(body.config));
    const weight = (name) => body.config[name] ?? defaultOf(fields.get(`config.${name}`)?.spec) ?? 0;
    if (!errors.length && LOSS_WEIGHTS.every((name) => !weight(name))) {
      form.querySelector('.group-error[data-group="Losses"]').textContent =
        "all loss weights are 0: set at least one of cosine_w, ibn_w, cln_w, angle_w, distill_w";
      form.querySelector('details[data-group="Losses"]').open = true;
      errors.push(["", "all loss weights are 0"]);
    }
    if (errors.length) {
      showErrors(errors.filter(([k]) => k));
      return null;
    }
    return body;
  }

  async function queue() {
    const body = collect();
    if (!body) return;
    try {
      const job = await postJSON("/jobs", body);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      showErrors(serverErrors(error));
    }
  }

  async function saveTemplate() {
    const body = collect();
    if (!body) return;
    const name = templateName.value.trim();
    if (!name) return showErrors([["name", "a name is required to save a template"]]);
    try {
      const saved = await postJSON("/templates", {name, ...body});
      fill(notice, `Saved template “${saved.name}” (#${saved.id}).`).hidden = false;
      await loadTemplates();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      showErrors(serverErrors(error));
    }
  }

  function defaultOf(spec) {
    if (!spec) return undefined;
    if (spec.kind === "choices") return String(spec.defaultText ?? "").split(",").filter(Boolean);
    const {value} = parseField({...spec, required: false}, spec.kind === "boolean" ? spec.defaultText : textOf(spec, spec.defaultText));
    return value === undefined ? spec.defaultText ?? undefined : value;
  }

  function setValues(section, values) {
    for (const [name, value] of Object.entries(values)) {
      const f = fields.get(`${section}.${name}`);
      if (f) writeInput(f.spec, f.input, value);
    }
  }

  function reset() {
    for (const {spec, input} of fields.values()) writeInput(spec, input, spec.defaultText);
    clearErrors();
  }

  // ---------------------------------------------------------------- presets and templates
  // A preset is a whole recipe: what another preset sets and this one does not goes back to its default.
  const presetKeys = [...new Set(Object.values(presets).flatMap((p) => Object.keys(p.values)))];
  function applyPreset(preset) {
    for (const name of presetKeys) {
      const f = fields.get(`config.${name}`);
      if (f) writeInput(f.spec, f.input, name in preset.values ? preset.values[name] : f.spec.defaultText);
    }
    clearErrors();
  }
  const presetBar = h("div", {class: "presets"}, h("span", {class: "label"}, "Preset for your data:"),
    Object.entries(presets).map(([fmt, preset]) => h("button", {type: "button", class: "preset",
      dataset: {preset: fmt}, title: `columns: ${preset.columns}; sets ${Object.keys(preset.values).join(", ")}`,
      onclick: () => applyPreset(preset)},
    h("strong", {}, preset.label), h("small", {}, preset.columns))));

  // ---------------------------------------------------------------- the filter: only fields whose name, title or help match
  const filterEmpty = h("p", {class: "muted", id: "filter-empty", hidden: true}, "No field matches.");
  const filterBox = h("input", {id: "field-filter", type: "search", placeholder: "Filter fields (name, title, help)",
    autocomplete: "off", "aria-label": "Filter fields", oninput: () => applyFilter(filterBox.value)});
  function applyFilter(text) {
    const q = text.trim().toLowerCase();
    for (const {spec, wrap} of fields.values()) {
      wrap.hidden = Boolean(q) && ![spec.name, spec.title, spec.help].some((t) => String(t).toLowerCase().includes(q));
    }
    let shown = 0;
    for (const section of form.querySelectorAll("details.group, section.essentials")) {
      const matches = section.querySelectorAll(".field:not([hidden])").length;
      shown += matches;
      section.hidden = Boolean(q) && !matches;
      if (q && section.tagName === "DETAILS") section.open = matches > 0; // open the groups that have matches
    }
    filterEmpty.hidden = shown > 0;
  }

  // ---------------------------------------------------------------- an uploaded dataset (#/datasets) as the data
  const datasetSelect = h("select", {id: "dataset-pick", "aria-label": "Uploaded dataset"},
    uploads.length ? uploads.map((d) => h("option", {value: d.ref}, `${d.name} (${d.kind === "beir" ? "BEIR" : d.format ?? "?"}, ${d.rows ?? "?"} rows)`))
      : h("option", {value: ""}, "(none uploaded yet)"));
  function useDataset(field) {
    const d = uploads.find((x) => x.ref === datasetSelect.value);
    if (!d) return;
    setValues("config", {[field]: d.ref});
    if (field === "train_name_or_path" && d.format) setValues("config", {data_format: d.format});
  }
  const datasetBar = h("div", {class: "dataset-pick"}, h("label", {for: "dataset-pick"}, "Uploaded dataset:"),
    datasetSelect,
    h("button", {type: "button", id: "use-train", disabled: !uploads.length,
      onclick: () => useDataset("train_name_or_path")}, "Train on it"),
    h("button", {type: "button", id: "use-valid", disabled: !uploads.length,
      onclick: () => useDataset("valid_name_or_path")}, "Validate on it"),
    h("a", {href: "#/datasets"}, "Upload…"));

  const templateSelect = h("select", {id: "template-select"});
  const templateBar = h("div", {class: "templates"}, h("label", {for: "template-select"}, "Template:"), templateSelect,
    h("button", {type: "button", id: "load-template", onclick: () => {
      const t = templates.find((x) => String(x.id) === templateSelect.value);
      if (!t) return;
      reset();
      setValues("config", t.config);
      setValues("launch", t.launch);
      templateName.value = t.name;
      fill(notice, `Loaded template “${t.name}”.`).hidden = false;
    }}, "Load"),
    h("button", {type: "button", onclick: () => reset()}, "Reset to defaults"));
  let templates = [];
  async function loadTemplates() {
    templates = await getJSON("/templates");
    fill(templateSelect, templates.length ? templates.map((t) => h("option", {value: String(t.id)}, t.name))
      : h("option", {value: ""}, "(none saved yet)"));
  }

  fill(root, h("h1", {}, "New training job"),
    h("p", {class: "lede"}, `${manifest.name} ${manifest.version}: ${manifest.description}`),
    presetBar, datasetBar, templateBar, h("div", {class: "filter"}, filterBox, filterEmpty), form);
  await loadTemplates();
  return () => {}; // nothing to stop when leaving this page
}
