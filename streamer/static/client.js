// sam2-stream browser client (docs/protocol.md): the module the web page itself uses, and
// the one to import from other pages.
//
//   import { Sam2StreamClient } from "http://HOST:8000/client.js";
//   const client = new Sam2StreamClient({ baseUrl: "http://HOST:8000", token: () => "..." });
//   const session = await client.openSession("rtsp://camera/stream");   // or a file path
//   const socket = client.connect(session.id, { onMessage: (m) => console.log(m.type) });
//   const ack = await socket.request({ type: "add_points", points: [[200, 120]], labels: [1] });
//
// `token` is the service token: it creates sessions. Each session has its own capability
// token (docs/protocol.md, "Authorization"): `openSession` keeps the one the server returns
// and uses it for that session's requests and websocket; `useSession(id, token)` gives one
// for a session created elsewhere (a control or viewer token), before joining it.
//
// HTTP answers >= 400 reject with ApiError (status, code); websocket requests resolve with
// their `ack` and reject with their `error` (error.code). Masks are COCO RLE: rle.js decodes.

import { ApiError, fetchJson } from "./api.js";
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
    this.sessionTokens = new Map(); // session id -> its capability token
  }

  /** Use `token` (a session's control or viewer token) for session `id` from now on. */
  useSession(id, token) {
    if (token) this.sessionTokens.set(id, token);
    else this.sessionTokens.delete(id);
  }

  /** The credential for `path`: the session's own token on its paths, else the service one. */
  tokenFor(path) {
    const match = /^\/sessions\/([^/?]+)/.exec(path);
    const id = match && decodeURIComponent(match[1]);
    return (id && this.sessionTokens.get(id)) || this.token();
  }

  /** fetch() with the token; resolves to the JSON body (null for 204), or throws ApiError. */
  async request(method, path, body = undefined, { keepalive = false } = {}) {
    const url = this.baseUrl + path;
    return fetchJson(url, method, path, this.tokenFor(path), body, { keepalive });
  }

  /** Open a session: source "webrtc", a file path the server can read, "rtsp://...", a
   * camera; options: paced, auto_seed, max_objects, max_frames, ... (SessionCreate). Resolves
   * to its info, with `token` and `viewer_token`; the client keeps `token` for the session. */
  async openSession(source, options = {}) {
    const session = await this.request("POST", "/sessions", { source, ...options });
    if (session && session.token) this.useSession(session.id, session.token);
    return session;
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

  /** ws(s):// URL of a session's messages (no credential in it: that goes in the
   * subprotocols, `socketProtocols`). */
  socketUrl(id) {
    const base = new URL(this.baseUrl || location.origin, location.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    return new URL(`/sessions/${encodeURIComponent(id)}/ws`, base).toString();
  }

  /** Websocket subprotocols carrying the session's token (browsers cannot set headers on
   * websockets; the server selects "sam2-stream"). */
  socketProtocols(id) {
    const token = this.tokenFor(`/sessions/${encodeURIComponent(id)}`);
    return token ? ["sam2-stream", `bearer.${token}`] : [];
  }

  /** A connected SessionSocket (reconnects on its own); handlers: onMessage, onState. */
  connect(id, { onMessage = () => {}, onState = () => {}, ...options } = {}) {
    const socket = new SessionSocket(() => this.socketUrl(id), {
      protocols: () => this.socketProtocols(id),
      onMessage,
      onState,
      ...options,
    });
    socket.connect();
    return socket;
  }
}
