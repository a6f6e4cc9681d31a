// The console's only way to the server: diagmon's public HTTP API, with the API key of this tab.
//
// The key lives in sessionStorage (this tab only, gone when it closes); every request carries it
// as `Authorization: Bearer <token>`. A 401 is raised as `Unauthorized`, any other error as
// `ApiProblem` holding the server's RFC 7807 problem (its `errors` map names the wrong fields).

const KEY_STORAGE = "diagmon.apiKey";

/** The request was refused for want of a valid API key. */
export class Unauthorized extends Error {
  constructor(hadKey) {
    super(hadKey ? "The API key was refused." : "An API key is required.");
    this.hadKey = hadKey;
  }
}

/** The server answered with an error: `problem` is its problem+json body (or a stand-in). */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** Validation errors by field name (`providers[0].keywords`: [messages]); empty if none. */
  get fieldErrors() {
    return this.problem.errors || {};
  }
}

/** The stored API key (the bare token), or null. */
export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

/**
 * Stores what the user pasted: the bare token, `Bearer <token>` or the whole
 * `Authorization: Bearer <token>` line that `diagmon generatekey` prints. Returns the token, or
 * null if nothing usable was pasted.
 */
export function storeApiKey(pasted) {
  const token = pasted
    .trim()
    .replace(/^authorization:\s*/i, "")
    .replace(/^bearer\s+/i, "")
    .trim();
  if (token === "") {
    return null;
  }
  sessionStorage.setItem(KEY_STORAGE, token);
  return token;
}

/** Forgets the API key of this tab. */
export function forgetApiKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

/**
 * Sends a request to the API. `json` is sent as an application/json body. Resolves with the
 * Response when it is 2xx; rejects with `Unauthorized` or `ApiProblem` otherwise.
 */
export async function send(path, { method = "GET", json, signal } = {}) {
  const headers = new Headers();
  const key = apiKey();
  if (key) {
    headers.set("Authorization", `Bearer ${key}`);
  }
  let body;
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  if (response.status === 401) {
    throw new Unauthorized(Boolean(key));
  }
  if (!response.ok) {
    throw new ApiProblem(response.status, await problemOf(response));
  }
  return response;
}

/** GETs `path` and parses its JSON body. */
export async function getJson(path) {
  const response = await send(path);
  return response.json();
}

/** The problem+json body of an error response, or a problem made from its status and text. */
async function problemOf(response) {
  const text = await response.text();
  try {
    const problem = JSON.parse(text);
    if (problem && typeof problem === "object") {
      return problem;
    }
  } catch {
    // Not JSON: fall through to the plain text.
  }
  return { status: response.status, detail: text || `HTTP ${response.status} ${response.statusText}` };
}

/** The query string of `params`, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") {
      search.set(name, String(value));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** The file name of a `Content-Disposition: attachment; filename=...` header, or null. */
export function attachmentFileName(disposition) {
  const match = /filename="?([^";]+)"?/i.exec(disposition || "");
  return match ? match[1].trim() : null;
}

/** The operation id at the end of a `Location: .../operations/{id}` header, or null. */
export function operationIdOf(location) {
  if (!location) {
    return null;
  }
  const match = /\/operations\/([0-9a-f-]+)$/i.exec(location);
  return match ? match[1].toLowerCase() : null;
}
