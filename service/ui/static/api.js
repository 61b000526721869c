// The /v1 API as the review page uses it: bearer token, JSON bodies, typed errors, session end on 401.

const TOKEN_KEY = "radreport.session";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `the server answered ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.body = body || {};
  }
}

export class SessionEnded extends Error {}

let onSessionEnded = () => {};
let lastRequestAt = Date.now();
let signedInAt = 0;
// The API commits a request's transaction after its response is sent, so a token (or a write) can be
// invisible for a moment to the very next request: a 401 just after sign-in is retried briefly.
const FRESH_TOKEN_MS = 3000;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function setSessionEndedHandler(handler) {
  onSessionEnded = handler;
}

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
  } catch {
    return null;
  }
}

export function lastActivity() {
  return lastRequestAt;
}

function saveSession(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, JSON.stringify(value));
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function login(username, password) {
  const form = new URLSearchParams({ username, password });
  const response = await fetch("/v1/login", { method: "POST", body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  const value = {
    token: body.access_token, user: body.user, role: body.role,
    expiresAt: body.expires_at, idleS: body.idle_timeout_s,
  };
  saveSession(value);
  lastRequestAt = Date.now();
  signedInAt = Date.now();
  return value;
}

export async function logout() {
  const current = session();
  saveSession(null);
  if (!current) return;
  await fetch("/v1/logout", { method: "POST", headers: { Authorization: `Bearer ${current.token}` } }).catch(() => {});
}

export function forget() {
  saveSession(null);
}

async function request(method, path, { json, headers = {}, raw = false } = {}) {
  const current = session();
  if (!current) {
    onSessionEnded("Please sign in.");
    throw new SessionEnded("not signed in");
  }
  const init = { method, headers: { Authorization: `Bearer ${current.token}`, ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  let response = await fetch(path, init);
  while (response.status === 401 && Date.now() - signedInAt < FRESH_TOKEN_MS) {
    await pause(150);
    response = await fetch(path, init);
  }
  lastRequestAt = Date.now();
  if (response.status === 401 && !(json && json.password)) {
    saveSession(null);
    onSessionEnded("Your session has ended (signed out, expired or idle too long). Please sign in again.");
    throw new SessionEnded("session ended");
  }
  if (raw && response.ok) return response;
  const body = response.status === 204 ? null : await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export const api = {
  me: () => request("GET", "/v1/me"),
  config: () => request("GET", "/v1/ui/config"),
  worklist: (params) => request("GET", `/v1/worklist?${params}`),
  report: (id) => request("GET", `/v1/reports/${encodeURIComponent(id)}`),
  draft: (studyId) => request("GET", `/v1/studies/${encodeURIComponent(studyId)}/report`),
  images: (studyId) => request("GET", `/v1/ui/studies/${encodeURIComponent(studyId)}/images`),
  findings: (text) => request("POST", "/v1/ui/findings", { json: { text } }),
  history: (id) => request("GET", `/v1/reports/${encodeURIComponent(id)}/history`),
  priors: (id) => request("GET", `/v1/reports/${encodeURIComponent(id)}/priors`),
  claim: (id) => request("POST", `/v1/reports/${encodeURIComponent(id)}/claim`),
  release: (id) => request("POST", `/v1/reports/${encodeURIComponent(id)}/release`),
  save: (id, text, version) =>
    request("PUT", `/v1/reports/${encodeURIComponent(id)}`, { json: { text }, headers: { "If-Match": `"${version}"` } }),
  sign: (id, password, meaning, version) =>
    request("POST", `/v1/reports/${encodeURIComponent(id)}/sign`, { json: { password, meaning, version } }),
  async imageBitmap(path) {
    const response = await request("GET", path, { raw: true });
    return createImageBitmap(await response.blob());
  },
};
