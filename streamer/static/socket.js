// The session's websocket (docs/protocol.md) with automatic reconnect and request replies.
//
// States: "connecting" -> "open" -> ("reconnecting" -> "connecting" -> ...) until close();
// it stops for good ("closed") when the server says the session is gone (close 4404, or 1000
// after the session was deleted) and on a refused token ("unauthorized", close 4401).
// Reconnect delays double from minDelay up to maxDelay (with +-25% jitter) and start over once
// a connection gets its `hello`.

const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_UNKNOWN_SESSION = 4404;
const CONNECT_TIMEOUT_MS = 10000;

export class SessionSocket {
  /**
   * url: () => string, called for every attempt. protocols: () => string[], the
   * subprotocols (they carry the token, which may have changed).
   * onMessage(message): every parsed server message. onState(state, detail): state changes.
   */
  constructor(
    url,
    { onMessage, onState, protocols = () => [], minDelay = 500, maxDelay = 8000, requestTimeout = 120000 },
  ) {
    this.url = url;
    this.protocols = protocols;
    this.onMessage = onMessage;
    this.onState = onState;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.requestTimeout = requestTimeout;
    this.state = "idle";
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.reconnects = 0;
  }

  connect() {
    this.stopped = false;
    this.open();
  }

  /** Stop for good (no reconnect); pending requests are rejected. */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "client closed");
    this.ws = null;
    this.failPending("closed");
    this.setState("closed");
  }

  /** Send a message; false when not connected. */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ v: 1, ...message }));
    return true;
  }

  /** A fresh request id. */
  newId() {
    return `c${this.nextId++}`;
  }

  /** Send a request (with a fresh id unless it has one); resolves with its `ack`, rejects with
   * its `error` (code in error.code). */
  request(message) {
    const id = message.id ?? this.newId();
    return new Promise((resolve, reject) => {
      if (!this.send({ ...message, id })) {
        reject(new Error("not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${message.type}: no reply in ${this.requestTimeout / 1000} s`));
      }, this.requestTimeout);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  // --- internals ------------------------------------------------------------------------------

  open() {
    clearTimeout(this.timer);
    this.setState("connecting");
    const protocols = this.protocols();
    const ws = protocols.length ? new WebSocket(this.url(), protocols) : new WebSocket(this.url());
    this.ws = ws;
    const connectTimer = setTimeout(() => ws.close(), CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      this.setState("open");
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "hello") this.attempt = 0;
      this.settle(message);
      this.onMessage(message);
    };
    ws.onclose = (event) => {
      clearTimeout(connectTimer);
      if (ws !== this.ws) return; // an old socket
      this.ws = null;
      this.failPending("connection lost");
      if (this.stopped) return;
      if (event.code === CLOSE_UNAUTHORIZED) {
        this.stopped = true;
        this.setState("unauthorized", "the server refused the token");
      } else if (event.code === CLOSE_UNKNOWN_SESSION || event.code === 1000) {
        this.stopped = true;
        this.setState("closed", event.reason || "the session is gone");
      } else {
        this.scheduleReconnect();
      }
    };
  }

  scheduleReconnect() {
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.reconnects += 1;
    this.setState("reconnecting", `in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => this.open(), delay);
  }

  settle(message) {
    if ((message.type !== "ack" && message.type !== "error") || message.id == null) return;
    const entry = this.pending.get(message.id);
    if (!entry) return;
    this.pending.delete(message.id);
    clearTimeout(entry.timer);
    if (message.type === "ack") entry.resolve(message);
    else entry.reject(Object.assign(new Error(message.message), { code: message.code }));
  }

  failPending(reason) {
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(new Error(`request ${id}: ${reason}`));
    }
    this.pending.clear();
  }

  setState(state, detail = "") {
    this.state = state;
    this.onState(state, detail);
  }
}
