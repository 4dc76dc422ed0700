// HTTP API of the service (docs/protocol.md) with the bearer token.
//
// The token is entered once and kept in localStorage; fetches send it as
// `Authorization: Bearer <token>`. A session this page created has its own capability token
// (the `token` of the POST /sessions answer), sent instead on that session's paths. Websockets
// carry the token in a `bearer.<token>` subprotocol, never in the URL (browsers cannot set
// headers on websockets).

const TOKEN_KEY = "sam2-stream.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

const sessionTokens = new Map(); // session id -> its capability token (sessions created here)

/** Keep a created session's capability token (from the POST /sessions answer). */
export function rememberSession(session) {
  if (session && session.token) sessionTokens.set(session.id, session.token);
}

/** The token for `path`: the session's own capability on its paths, else the stored one. */
function tokenFor(path) {
  const match = /^\/sessions\/([^/?]+)/.exec(path);
  const id = match && decodeURIComponent(match[1]);
  return (id && sessionTokens.get(id)) || getToken();
}

/** fetch() with the token; resolves to the parsed JSON body (null for 204), or throws ApiError. */
export async function api(method, path, body = undefined, { keepalive = false } = {}) {
  return fetchJson(path, method, path, tokenFor(path), body, { keepalive });
}

/** One HTTP request to `url` (`path` names it in errors) with a bearer `token` (or none):
 * the parsed JSON body (null for 204), or an ApiError with the server's code and message. */
export async function fetchJson(url, method, path, token, body = undefined, { keepalive = false } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    keepalive,
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = (data && data.code) || String(response.status);
    const message = (data && (data.message || JSON.stringify(data.detail))) || text;
    throw new ApiError(response.status, code, `${method} ${path}: ${response.status} ${message}`);
  }
  return data;
}

/** ws:// or wss:// URL of a session's message stream (no credential in it). */
export function socketUrl(sessionId) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/sessions/${encodeURIComponent(sessionId)}/ws`;
}

/** Websocket subprotocols carrying the session's token (the server selects "sam2-stream"). */
export function socketProtocols(sessionId) {
  const token = tokenFor(`/sessions/${encodeURIComponent(sessionId)}`);
  return token ? ["sam2-stream", `bearer.${token}`] : [];
}
