// HTTP API of the service (docs/protocol.md) with the bearer token.
//
// The token is entered once and kept in localStorage; fetches send it as
// `Authorization: Bearer <token>`, websocket URLs as `?token=<token>` (browsers cannot set
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

/** fetch() with the token; resolves to the parsed JSON body (null for 204), or throws ApiError. */
export async function api(method, path, body = undefined, { keepalive = false } = {}) {
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
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

/** ws:// or wss:// URL of a session's message stream, with the token as a query parameter. */
export function socketUrl(sessionId) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(`${scheme}//${location.host}/sessions/${encodeURIComponent(sessionId)}/ws`);
  const token = getToken();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}
