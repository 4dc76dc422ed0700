// sam2-stream browser client (docs/protocol.md): the module the web page itself uses, and
// the one to import from other pages.
//
//   import { Sam2StreamClient } from "http://HOST:8000/client.js";
//   const client = new Sam2StreamClient({ baseUrl: "http://HOST:8000", token: () => "..." });
//   const session = await client.openSession("rtsp://camera/stream");   // or a file path
//   const socket = client.connect(session.id, { onMessage: (m) => console.log(m.type) });
//   const ack = await socket.request({ type: "add_points", points: [[200, 120]], labels: [1] });
//
// HTTP answers >= 400 reject with ApiError (status, code); websocket requests resolve with
// their `ack` and reject with their `error` (error.code). Masks are COCO RLE: rle.js decodes.

import { ApiError } from "./api.js";
import { SessionSocket } from "./socket.js";

export { ApiError, SessionSocket };

export class Sam2StreamClient {
  /**
   * baseUrl: the server ("" = this page's origin). token: a string, or a function returning
   * one (read for every request, so a page can change it).
   */
  constructor({ baseUrl = "", token = "" } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = typeof token === "function" ? token : () => token;
  }

  /** fetch() with the token; resolves to the JSON body (null for 204), or throws ApiError. */
  async request(method, path, body = undefined, { keepalive = false } = {}) {
    const headers = {};
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(this.baseUrl + path, {
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

  /** Open a session: source "webrtc", a file path the server can read, "rtsp://...", a
   * camera; options: paced, auto_seed, max_objects, max_frames, ... (SessionCreate). */
  openSession(source, options = {}) {
    return this.request("POST", "/sessions", { source, ...options });
  }

  getSession(id) {
    return this.request("GET", `/sessions/${encodeURIComponent(id)}`);
  }

  async listSessions() {
    return (await this.request("GET", "/sessions")).sessions;
  }

  deleteSession(id, { keepalive = false } = {}) {
    return this.request("DELETE", `/sessions/${encodeURIComponent(id)}`, undefined, { keepalive });
  }

  /** ws(s):// URL of a session's messages, the token as a query parameter (browsers cannot
   * set headers on websockets). */
  socketUrl(id) {
    const base = new URL(this.baseUrl || location.origin, location.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    const url = new URL(`/sessions/${encodeURIComponent(id)}/ws`, base);
    const token = this.token();
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  /** A connected SessionSocket (reconnects on its own); handlers: onMessage, onState. */
  connect(id, { onMessage = () => {}, onState = () => {}, ...options } = {}) {
    const socket = new SessionSocket(() => this.socketUrl(id), { onMessage, onState, ...options });
    socket.connect();
    return socket;
  }
}
