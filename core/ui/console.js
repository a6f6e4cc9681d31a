// diagmon's web console: processes, traces, dumps and live metrics, operations. Everything it shows comes from
// the public HTTP API (./api.js) with the API key of this tab; nothing is computed that the server
// did not say, except the throughput, which is the change of `bytesCaptured` between two polls.

import {
  ApiProblem,
  Unauthorized,
  apiKey,
  attachmentFileName,
  forgetApiKey,
  getJson,
  operationIdOf,
  query,
  send,
  storeApiKey,
} from "./api.js";
import { firstProcesses } from "./boot.js";

const PROCESS_REFRESH_MS = 2000;
const OPERATION_REFRESH_MS = 1000;
const FINAL_STATES = new Set(["Succeeded", "Failed", "Cancelled"]);
/** The mark the console sets once its first view with data is on screen. */
const FIRST_RENDER_MARK = "diagmon-console-first-render";

const $ = (id) => document.getElementById(id);

/** Makes an element: `props` are properties (`className`, `textContent`, ...) or attributes. */
function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name in element && !name.includes("-")) {
      element[name] = value;
    } else {
      element.setAttribute(name, value);
    }
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

/** Puts `child` at position `index` of `parent`, moving it only if it is elsewhere (a moved
 * element loses the keyboard focus). */
function placeAt(parent, child, index) {
  if (parent.children[index] !== child) {
    parent.insertBefore(child, parent.children[index] || null);
  }
}

/** `1536` -> `1.5 KiB`. */
function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

const state = {
  /** null until the first answer; false while the server refuses our key. */
  authorized: null,
  processes: [],
  /** `GET /process` answers by uid (fetched once per process). */
  details: new Map(),
  selectedUid: null,
  /** Streamed artifacts this tab receives, by operation id. */
  downloads: new Map(),
  /** `{bytes, at, rate}` of the last poll, by operation id. */
  progress: new Map(),
  operationViews: new Map(),
  firstRenderDone: false,
};

// ---------------------------------------------------------------------------------------------
// Authentication

function showUnauthorized(error) {
  state.authorized = false;
  $("auth-notice-text").textContent = error.hadKey
    ? "diagmon refused the API key of this tab: it is not the configured key, or it expired."
    : "This diagmon requires an API key.";
  $("auth-notice").hidden = false;
  $("key-form").hidden = false;
  $("api-key").focus();
  markFirstRender();
}

function showAuthorized() {
  if (state.authorized !== true) {
    state.authorized = true;
    $("auth-notice").hidden = true;
    // Without a key and still let in: authentication is off (--no-auth), nothing to paste.
    $("key-form").hidden = !apiKey();
    loadServerFacts();
  }
}

function describeKey() {
  $("forget-key").hidden = !apiKey();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("api-key");
  if (storeApiKey(input.value) === null) {
    input.focus();
    return;
  }
  input.value = "";
  describeKey();
  state.authorized = null;
  refreshEverything();
});

$("forget-key").addEventListener("click", () => {
  forgetApiKey();
  describeKey();
  state.authorized = null;
  refreshEverything();
});

/** Handles an error of a background refresh: 401 asks for a key, the rest shows as a notice. */
function reportBackgroundError(error) {
  if (error instanceof Unauthorized) {
    showUnauthorized(error);
    return;
  }
  const notice = $("connection-error");
  notice.textContent =
    error instanceof ApiProblem
      ? `diagmon answered ${error.status}: ${error.message}`
      : `Cannot reach diagmon: ${error.message}`;
  notice.hidden = false;
}

function clearBackgroundError() {
  $("connection-error").hidden = true;
}

// ---------------------------------------------------------------------------------------------
// What the server offers: version, egress providers, artifact routes

async function loadServerFacts() {
  try {
    const info = await getJson("/info");
    $("server-info").textContent = `version ${info.version} · ${info.diagnosticPortMode} mode`;
    const providers = await getJson("/egress");
    const select = $("destination");
    select.replaceChildren(el("option", { value: "", textContent: "Download to this browser" }));
    for (const provider of providers) {
      select.append(
        el("option", { value: provider.name, textContent: `${provider.name} (${provider.component})` }),
      );
    }
  } catch (error) {
    reportBackgroundError(error);
  }
}

/** Shows the dump and heap-snapshot controls when the server's own API description lists
 * `/dump` and `/gcdump`. */
async function detectArtifactRoutes() {
  try {
    const response = await fetch("/openapi.json", { cache: "no-store" });
    const description = await response.json();
    $("dump-form").hidden = !(description.paths && "/dump" in description.paths);
    $("gcdump-form").hidden = !(description.paths && "/gcdump" in description.paths);
  } catch {
    $("dump-form").hidden = true;
    $("gcdump-form").hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/** The request ./boot.js started before this module arrived, until the first refresh takes it. */
let earlyProcesses = firstProcesses;

async function refreshProcesses() {
  const request = earlyProcesses || getJson("/processes");
  earlyProcesses = null;
  const processes = await request;
  showAuthorized();
  clearBackgroundError();
  state.processes = processes.sort((a, b) => a.pid - b.pid);
  // The list shows at once; command lines and runtime versions follow from `GET /process`.
  renderProcesses();
  markFirstRender();
  const missing = processes.filter((process) => !state.details.has(process.uid));
  await Promise.all(
    missing.map(async (process) => {
      try {
        state.details.set(process.uid, await getJson(`/process${query({ pid: process.pid, uid: process.uid })}`));
      } catch (error) {
        if (error instanceof Unauthorized) {
          throw error;
        }
        // The process may have exited between the two calls; the next refresh tries again.
      }
    }),
  );
  const present = new Set(processes.map((process) => process.uid));
  for (const uid of state.details.keys()) {
    if (!present.has(uid)) {
      state.details.delete(uid);
    }
  }
  if (missing.length > 0) {
    renderProcesses();
  }
}

function renderProcesses() {
  const body = $("processes").tBodies[0];
  const rows = new Map([...body.rows].map((row) => [row.dataset.uid, row]));
  const count = state.processes.length;
  $("processes-status").textContent =
    count === 0 ? "No .NET process is visible to diagmon." : `${count} .NET process${count === 1 ? "" : "es"}.`;
  state.processes.forEach((process, index) => {
    const row = rows.get(process.uid) || newProcessRow(process);
    rows.delete(process.uid);
    const details = state.details.get(process.uid) || {};
    const selected = process.uid === state.selectedUid;
    const button = row.cells[0].firstChild;
    button.textContent = selected ? "Selected" : "Select";
    button.setAttribute("aria-pressed", String(selected));
    row.classList.toggle("selected", selected);
    row.cells[1].textContent = process.pid;
    row.cells[2].textContent = process.name;
    row.cells[3].textContent = details.runtimeVersion || "…";
    row.cells[4].textContent = process.isDefault ? "default" : "";
    row.cells[5].textContent = process.uid;
    row.cells[6].textContent = details.commandLine || "…";
    placeAt(body, row, index);
  });
  for (const row of rows.values()) {
    row.remove();
  }
  if (state.selectedUid && !state.processes.some((process) => process.uid === state.selectedUid)) {
    $("processes-status").textContent += " The selected process has exited.";
    selectProcess(null);
  }
}

function newProcessRow(process) {
  const button = el("button", {
    type: "button",
    className: "select-process",
    "aria-label": `Select process ${process.pid} (${process.name})`,
  });
  button.addEventListener("click", () => {
    selectProcess(process.uid);
    $("capture-heading").focus();
  });
  const row = el("tr", {}, el("td", {}, button));
  for (const name of ["pid", "name", "runtime", "default", "uid", "command-line"]) {
    row.append(el("td", { className: `cell-${name}` }));
  }
  row.dataset.uid = process.uid;
  return row;
}

function selectedProcess() {
  return state.processes.find((process) => process.uid === state.selectedUid) || null;
}

function selectProcess(uid) {
  state.selectedUid = uid;
  const process = selectedProcess();
  $("capture").hidden = process === null;
  if (process) {
    $("selected-process").textContent = `${process.name} (pid ${process.pid})`;
  }
  renderProcesses();
}

// ---------------------------------------------------------------------------------------------
// Field errors: the API's problem+json `errors` map, shown next to the field it names

/** The control whose `data-field` is `field` or, failing that, its nearest parent field: in
 * `form` first, then among the controls outside every form (destination, tags). */
function controlFor(field, form) {
  const controls = [
    ...(form ? form.querySelectorAll("[data-field]") : []),
    ...[...document.querySelectorAll("[data-field]")].filter((control) => !control.closest("form")),
  ];
  let name = field.toLowerCase();
  while (name) {
    const control = controls.find((candidate) => candidate.dataset.field.toLowerCase() === name);
    if (control) {
      return control;
    }
    const parent = name.replace(/(\.[^.[\]]*|\[\d+\])$/, "");
    name = parent === name ? "" : parent;
  }
  return null;
}

function clearErrors() {
  for (const control of document.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
  }
  for (const message of document.querySelectorAll(".field-error, .form-error")) {
    message.replaceChildren();
  }
}

/** Shows `message` in the element that describes `control`; false if it has none. */
function showFieldError(control, message) {
  const target = $(control.getAttribute("aria-describedby"));
  if (!target) {
    return false;
  }
  control.setAttribute("aria-invalid", "true");
  target.textContent = target.textContent ? `${target.textContent} ${message}` : message;
  return true;
}

/** Shows why a request failed: field errors beside their fields, the rest in `formError`. */
function showRequestError(error, formError) {
  if (error instanceof Unauthorized) {
    showUnauthorized(error);
    formError.textContent = "Not started: diagmon needs an API key (see above).";
    return;
  }
  if (!(error instanceof ApiProblem)) {
    formError.textContent = `Not started: cannot reach diagmon (${error.message}).`;
    return;
  }
  const unplaced = [];
  const fieldErrors = Object.entries(error.fieldErrors);
  for (const [field, messages] of fieldErrors) {
    const control = controlFor(field, formError.closest("form"));
    if (!control || !showFieldError(control, messages.join(" "))) {
      unplaced.push(`${field}: ${messages.join(" ")}`);
    }
  }
  const lines =
    fieldErrors.length === 0
      ? [error.message]
      : ["Not started: fix the fields marked below.", ...unplaced];
  formError.replaceChildren(...lines.map((line) => el("p", { textContent: line })));
}

// ---------------------------------------------------------------------------------------------
// Starting traces and dumps

function addProvider({ name = "", keywords = "0xFFFFFFFFFFFFFFFF", level = "Informational" } = {}) {
  const fragment = $("provider-template").content.cloneNode(true);
  const row = fragment.querySelector(".provider");
  row.querySelector(".provider-name").value = name;
  row.querySelector(".provider-keywords").value = keywords;
  row.querySelector(".provider-level").value = level;
  row.querySelector(".remove-provider").addEventListener("click", () => {
    row.remove();
    numberProviders();
    $("add-provider").focus();
  });
  $("provider-list").append(row);
  numberProviders();
  return row;
}

/** Gives each provider row its index: legend, field names (`providers[i].keywords`), ids. */
function numberProviders() {
  const fields = [
    ["provider-name", "name"],
    ["provider-keywords", "keywords"],
    ["provider-level", "eventLevel"],
    ["provider-arguments", "arguments"],
  ];
  [...$("provider-list").children].forEach((row, index) => {
    row.querySelector("legend").textContent = `Provider ${index + 1}`;
    row.querySelector(".remove-provider").setAttribute("aria-label", `Remove provider ${index + 1}`);
    for (const [className, field] of fields) {
      const control = row.querySelector(`.${className}`);
      const message = control.closest("label").nextElementSibling;
      message.id = `providers-${index}-${field}-error`;
      control.id = `providers-${index}-${field}`;
      control.dataset.field = `providers[${index}].${field}`;
      control.setAttribute("aria-describedby", message.id);
    }
  });
}

/** The body of `POST /trace` from the provider editor; null (with the error shown) if unusable. */
function providersBody() {
  const providers = [];
  let usable = true;
  for (const row of $("provider-list").children) {
    const argumentsField = row.querySelector(".provider-arguments");
    const args = {};
    for (const line of argumentsField.value.split("\n").map((text) => text.trim()).filter(Boolean)) {
      const split = line.indexOf("=");
      if (split <= 0) {
        showFieldError(argumentsField, `Write each argument as key=value: "${line}".`);
        usable = false;
      } else {
        args[line.slice(0, split).trim()] = line.slice(split + 1).trim();
      }
    }
    providers.push({
      name: row.querySelector(".provider-name").value.trim(),
      keywords: row.querySelector(".provider-keywords").value.trim(),
      eventLevel: row.querySelector(".provider-level").value,
      arguments: args,
    });
  }
  const bufferText = $("buffer-size").value.trim();
  return usable
    ? {
        providers,
        requestRundown: $("request-rundown").checked,
        // A number when it reads as one; else the text as typed, for the API to name the error.
        bufferSizeInMB: /^\d+$/.test(bufferText) ? Number(bufferText) : bufferText,
      }
    : null;
}

/** The query parameters every artifact request shares. */
function commonParameters(process) {
  return {
    pid: process.pid,
    uid: process.uid,
    egressProvider: $("destination").value,
    tags: $("tags").value.trim(),
  };
}

$("until-stopped").addEventListener("change", (event) => {
  $("duration").disabled = event.target.checked;
});

for (const radio of document.querySelectorAll('input[name="trace-source"]')) {
  radio.addEventListener("change", () => {
    const custom = document.querySelector('input[name="trace-source"]:checked').value === "providers";
    $("profiles").hidden = custom;
    $("providers-editor").hidden = !custom;
  });
}

$("add-provider").addEventListener("click", () => {
  addProvider().querySelector(".provider-name").focus();
});

$("trace-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const process = selectedProcess();
  if (!process) {
    return;
  }
  const parameters = {
    ...commonParameters(process),
    durationSeconds: $("until-stopped").checked ? "-1" : $("duration").value.trim(),
  };
  const custom = document.querySelector('input[name="trace-source"]:checked').value === "providers";
  if (custom) {
    const body = providersBody();
    if (body) {
      await startArtifact(`/trace${query(parameters)}`, { method: "POST", json: body }, event.target);
    }
  } else {
    const profiles = [...document.querySelectorAll('input[name="profile"]:checked')].map((box) => box.value);
    // `profile` is sent even when empty, so that the API says what is wrong with it.
    const path = `/trace${query(parameters)}&profile=${encodeURIComponent(profiles.join(","))}`;
    await startArtifact(path, {}, event.target);
  }
});

$("dump-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const process = selectedProcess();
  if (process) {
    const parameters = { ...commonParameters(process), type: $("dump-type").value };
    await startArtifact(`/dump${query(parameters)}`, {}, event.target);
  }
});

$("gcdump-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const process = selectedProcess();
  if (process) {
    await startArtifact(`/gcdump${query(commonParameters(process))}`, {}, event.target);
  }
});

/** Sends an artifact request; a 200 body is received here and offered as a download. */
async function startArtifact(path, options, form) {
  const submit = form.querySelector('[type="submit"]');
  const formError = form.querySelector(".form-error");
  submit.disabled = true;
  let response;
  try {
    response = await send(path, options);
  } catch (error) {
    showRequestError(error, formError);
    return;
  } finally {
    submit.disabled = false;
  }
  const id = operationIdOf(response.headers.get("Location"));
  $("operations-status").textContent = `Started operation ${id}.`;
  if (response.status === 200 && id) {
    receiveDownload(id, response);
  }
  refreshOperationsNow();
}

/** Reads a streamed artifact to its end; only a body that ended cleanly becomes a download. */
async function receiveDownload(id, response) {
  const fileName = attachmentFileName(response.headers.get("Content-Disposition")) || `${id}.bin`;
  const download = { status: "receiving", fileName };
  state.downloads.set(id, download);
  try {
    const blob = await response.blob();
    download.url = URL.createObjectURL(blob);
    download.size = blob.size;
    download.status = "received";
  } catch (error) {
    download.status = "cut";
    download.reason = error.message;
  }
  refreshOperationsNow();
}

// ---------------------------------------------------------------------------------------------
// Live metrics: `GET /livemetrics` read as it arrives (application/json-seq: each record is
// 0x1E, a JSON `Metric`, a newline), the latest value of each counter in a table

const live = { controller: null, rows: new Map() };

$("livemetrics-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const process = selectedProcess();
  if (!process || live.controller) {
    return;
  }
  const form = event.target;
  const parameters = { ...commonParameters(process), durationSeconds: $("livemetrics-duration").value.trim() };
  const controller = new AbortController();
  form.querySelector('[type="submit"]').disabled = true;
  live.rows.clear();
  $("livemetrics").tBodies[0].replaceChildren();
  $("livemetrics-status").textContent = "";
  let response;
  try {
    response = await send(`/livemetrics${query(parameters)}`, { signal: controller.signal });
  } catch (error) {
    form.querySelector('[type="submit"]').disabled = false;
    showRequestError(error, $("livemetrics-error"));
    return;
  }
  const id = operationIdOf(response.headers.get("Location"));
  refreshOperationsNow();
  if (response.status !== 200) {
    form.querySelector('[type="submit"]').disabled = false;
    $("livemetrics-status").textContent = `Egressed by operation ${id}: see Operations.`;
    return;
  }
  live.controller = controller;
  $("livemetrics-stop").hidden = false;
  $("livemetrics-status").textContent = "Watching…";
  try {
    await readMetrics(response.body, showMetric);
    $("livemetrics-status").textContent = "Finished: the duration has elapsed.";
  } catch (error) {
    $("livemetrics-status").textContent =
      error.name === "AbortError" ? "Stopped." : `The stream was cut short: ${error.message}`;
  } finally {
    live.controller = null;
    $("livemetrics-stop").hidden = true;
    form.querySelector('[type="submit"]').disabled = false;
    refreshOperationsNow();
  }
});

$("livemetrics-stop").addEventListener("click", () => {
  if (live.controller) {
    live.controller.abort();
  }
});

/** Calls `onMetric` with each JSON record of a json-seq body, as the records arrive. */
async function readMetrics(body, onMetric) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    pending += value;
    const records = pending.split("\x1e");
    pending = records.pop();
    for (const record of records.map((text) => text.trim()).filter(Boolean)) {
      onMetric(JSON.parse(record));
    }
    // The last record is complete once its newline has arrived.
    if (pending.endsWith("\n") && pending.trim()) {
      onMetric(JSON.parse(pending.trim()));
      pending = "";
    }
  }
}

function showMetric(metric) {
  const key = `${metric.provider}\u0000${metric.name}\u0000${metric.tags || ""}`;
  let row = live.rows.get(key);
  if (!row) {
    row = el("tr", {}, el("td"), el("th", { scope: "row" }), el("td", { className: "number" }), el("td"));
    row.cells[0].textContent = metric.provider;
    row.cells[1].textContent = metric.tags ? `${metric.displayName} [${metric.tags}]` : metric.displayName;
    row.cells[3].textContent = metric.unit;
    row.dataset.counter = metric.name;
    live.rows.set(key, row);
    $("livemetrics").tBodies[0].append(row);
  }
  row.cells[2].textContent = Number.isInteger(metric.value) ? String(metric.value) : metric.value.toFixed(2);
}

// ---------------------------------------------------------------------------------------------
// Operations

async function refreshOperations() {
  const operations = await getJson("/operations");
  const now = performance.now();
  operations.sort((a, b) => b.createdDateTime.localeCompare(a.createdDateTime));
  const list = $("operations");
  const listed = new Set();
  operations.forEach((operation, index) => {
    listed.add(operation.operationId);
    trackProgress(operation, now);
    let view = state.operationViews.get(operation.operationId);
    if (!view) {
      view = new OperationView(operation.operationId);
      state.operationViews.set(operation.operationId, view);
    }
    view.update(operation);
    placeAt(list, view.element, index);
  });
  for (const [id, view] of state.operationViews) {
    if (!listed.has(id)) {
      view.element.remove();
      state.operationViews.delete(id);
    }
  }
  const status = $("operations-status");
  if (operations.length === 0) {
    status.textContent ||= "No operation yet.";
  } else if (status.textContent === "No operation yet.") {
    status.textContent = "";
  }
}

function trackProgress(operation, now) {
  const previous = state.progress.get(operation.operationId);
  let rate = previous ? previous.rate : null;
  if (previous && now > previous.at && operation.bytesCaptured !== previous.bytes) {
    rate = ((operation.bytesCaptured - previous.bytes) * 1000) / (now - previous.at);
  }
  state.progress.set(operation.operationId, { bytes: operation.bytesCaptured, at: now, rate });
}

/** One operation in the list; updated in place so that focus stays on its buttons. */
class OperationView {
  constructor(id) {
    this.id = id;
    const short = id.slice(0, 8);
    this.heading = el("h3");
    this.details = el("dl");
    this.message = el("p", { className: "form-error", role: "alert" });
    this.stop = el("button", { type: "button", textContent: "Stop", "aria-label": `Stop operation ${short}` });
    this.cancel = el("button", { type: "button", textContent: "Cancel", "aria-label": `Cancel operation ${short}` });
    this.stop.addEventListener("click", () => this.remove(true));
    this.cancel.addEventListener("click", () => this.remove(false));
    this.element = el(
      "li",
      { className: "operation", "data-operation-id": id },
      this.heading,
      this.details,
      el("div", { className: "actions" }, this.stop, this.cancel),
      this.message,
    );
  }

  async remove(stop) {
    this.message.textContent = "";
    try {
      await send(`/operations/${this.id}${stop ? "?stop=true" : ""}`, { method: "DELETE" });
    } catch (error) {
      if (error instanceof Unauthorized) {
        showUnauthorized(error);
      }
      this.message.textContent = `${stop ? "Stop" : "Cancel"} refused: ${error.message}`;
    }
    refreshOperationsNow();
  }

  update(operation) {
    const status = operation.status;
    this.element.dataset.status = status;
    const process = operation.process ? `${operation.process.name} (pid ${operation.process.pid})` : "";
    const kind = operation.kind || "trace";
    this.heading.replaceChildren(
      el("span", { className: `status status-${status.toLowerCase()}`, textContent: status }),
      ` ${kind} of ${process}`,
    );
    const rows = [
      ["Operation", operation.operationId],
      ["Started", new Date(operation.createdDateTime).toLocaleString()],
      ["Destination", operation.egressProviderName || "download to this browser"],
      ["Bytes captured", formatBytes(operation.bytesCaptured)],
    ];
    const progress = state.progress.get(operation.operationId);
    if (!FINAL_STATES.has(status) && progress && progress.rate !== null) {
      rows.push(["Throughput", `${formatBytes(Math.round(progress.rate))}/s`]);
    }
    if (operation.tags && operation.tags.length) {
      rows.push(["Tags", operation.tags.join(", ")]);
    }
    const summary = operation.summary;
    if (summary) {
      if (summary.events !== undefined) {
        rows.push(["Events", String(summary.events)]);
      }
      if (summary.droppedEventsEstimate !== undefined) {
        rows.push(["Dropped events (estimate)", String(summary.droppedEventsEstimate)]);
      }
      rows.push(["SHA-256", summary.sha256]);
    }
    if (operation.resourceLocation) {
      rows.push(["Resource location", operation.resourceLocation]);
    }
    if (operation.error) {
      rows.push(["Error", `${operation.error.code}: ${operation.error.message}`]);
    }
    const download = this.downloadRow(status);
    this.details.replaceChildren(
      ...rows.flatMap(([term, value]) => [el("dt", { textContent: term }), el("dd", { textContent: value })]),
      ...(download ? [el("dt", { textContent: "File" }), el("dd", {}, download)] : []),
    );
    this.stop.hidden = !operation.isStoppable;
    this.cancel.hidden = FINAL_STATES.has(status);
  }

  /** The download of a streamed artifact: offered only once the body ended and it Succeeded. */
  downloadRow(status) {
    const download = state.downloads.get(this.id);
    if (!download) {
      return null;
    }
    if (download.status === "cut") {
      return `The transfer was cut short (${download.reason}); there is no complete file to save.`;
    }
    if (download.status === "received" && status === "Succeeded") {
      return el("a", {
        href: download.url,
        download: download.fileName,
        className: "download",
        textContent: `Save ${download.fileName} (${formatBytes(download.size)})`,
      });
    }
    if (download.status === "received" && FINAL_STATES.has(status)) {
      return `The operation ended ${status}: the received file is not offered.`;
    }
    return `Receiving ${download.fileName}…`;
  }
}

// ---------------------------------------------------------------------------------------------
// Refresh loops

/** Marks the first view with data; what that view does not need starts only then, so that the
 * browser's one thread is not parsing it while the first answers arrive. */
function markFirstRender() {
  if (!state.firstRenderDone) {
    state.firstRenderDone = true;
    performance.mark(FIRST_RENDER_MARK);
    document.documentElement.dataset.rendered = "true";
    detectArtifactRoutes();
  }
}

/** Runs `task` now and every `interval` ms, never two at once; skipped while refused. */
function every(interval, task) {
  let timer = null;
  let running = false;
  const run = async () => {
    clearTimeout(timer);
    if (running) {
      return;
    }
    running = true;
    try {
      if (state.authorized !== false) {
        await task();
      }
    } catch (error) {
      reportBackgroundError(error);
    } finally {
      running = false;
      timer = setTimeout(run, interval);
    }
  };
  run();
  return run;
}

let refreshOperationsNow = () => {};
let refreshProcessesNow = () => {};

function refreshEverything() {
  refreshProcessesNow();
  refreshOperationsNow();
}

describeKey();
addProvider({ name: "Microsoft-Windows-DotNETRuntime", keywords: "0x14C14FCCBD" });
refreshProcessesNow = every(PROCESS_REFRESH_MS, refreshProcesses);
refreshOperationsNow = every(OPERATION_REFRESH_MS, refreshOperations);
