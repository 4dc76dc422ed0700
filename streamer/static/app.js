// sam2-stream browser client: live camera or an existing session, click to segment, overlay.
//
// Data flow: the camera goes up over WebRTC (rtc.js) into a "webrtc" session; masklets,
// prompts and replies go over the session's websocket (socket.js); masks are decoded and drawn
// here (overlay.js), aligned with the camera frames by pts (sync.js); everything received is
// kept for the SA-V export (sav.js). docs/client.md describes the page.

import { ApiError, api, getToken, rememberSession, setToken, socketProtocols, socketUrl } from "./api.js";
import { MaskOverlay, cssColor, drawLabels } from "./overlay.js";
import { PointerGestures } from "./pointer.js";
import { Peer } from "./rtc.js";
import { MaskletRecorder } from "./sav.js";
import { SessionSocket } from "./socket.js";
import { CameraFrames, PtsClock } from "./sync.js";

const POLL_MS = 1000; // session stats (GET /sessions/{id})
const PING_MS = 5000; // websocket round trip (an empty set_options), for the latency estimate
const DRAG_PX = 6; // a press that moves less than this is a click, more is a box
const FRAME_PROMPTS = new Set(["add_points", "add_box", "add_mask"]); // they take frame_idx

const $ = (id) => document.getElementById(id);

// --- state ----------------------------------------------------------------------------------

const state = {
  session: null, // session info of the attached session
  ownsSession: false, // created by this page (camera): deleted on stop
  camera: null, // MediaStream
  socket: null,
  peer: null,
  frames: null, // CameraFrames
  clock: new PtsClock(),
  recorder: new MaskletRecorder(),
  // What is drawn: the latest frame message, with prompt replies merged in.
  display: null, // {frame_idx, pts, time_base, width, height, objects: [masklet]}
  shown: null, // the masklet frame the synced camera frame on screen belongs to: {pts, frame_idx}
  objects: new Map(), // obj_id -> {hidden, lost, auto, area, score}
  selected: null,
  pending: [], // prompt markers shown until their reply: {kind: "point"|"box", id, ...}
  lastPrompt: null, // the last prompt sent, and the last one acknowledged (tests read them)
  lastPromptAck: null,
  gestures: null, // PointerGestures on the prompt layer
  dirty: true,
  counters: { frames: 0, acks: 0, errors: 0 },
  latency: { endToEnd: null, server: null, rtt: null },
  rates: { input: null, processed: null, dropped: null, lastInfo: null },
  timers: [],
};

const overlay = new MaskOverlay($("overlay"));

// Read by tests (tests/test_browser.py) and handy in the console.
window.sam2stream = {
  state,
  summary() {
    return {
      sessionId: state.session && state.session.id,
      socket: state.socket ? state.socket.state : "idle",
      rtc: state.peer ? state.peer.pc.connectionState : "idle",
      framesReceived: state.counters.frames,
      acks: state.counters.acks,
      lastPrompt: state.lastPrompt,
      lastPromptAck: state.lastPromptAck,
      errors: state.counters.errors,
      reconnects: state.socket ? state.socket.reconnects : 0,
      frameIdx: state.display ? state.display.frame_idx : null,
      shownFrameIdx: state.shown ? state.shown.frame_idx : null, // synced camera frame on screen
      frameSize: state.display ? [state.display.width, state.display.height] : null,
      objects: [...state.objects.keys()],
      displayed: state.display ? state.display.objects.map((o) => o.obj_id) : [],
      selected: state.selected,
      view: $("stage").dataset.view,
      ptsOrigin: state.clock.origin,
      latency: state.latency.endToEnd, // seconds
      recorded: state.recorder.length,
    };
  },
};

// --- small UI helpers -----------------------------------------------------------------------

function say(text, kind = "info") {
  const el = $("message");
  el.textContent = text;
  el.dataset.kind = kind;
}

function setBadge(id, label, value) {
  const el = $(id);
  el.textContent = `${label}: ${value}`;
  el.dataset.state = value.split(" ")[0];
}

function markDirty() {
  state.dirty = true;
}

function setBusy(active) {
  $("start-camera").disabled = active;
  $("join-session").disabled = active;
  $("stop").disabled = !active;
  $("export").disabled = !active;
}

// --- sessions -------------------------------------------------------------------------------

async function refreshSessions() {
  const select = $("session-select");
  try {
    const { sessions } = await api("GET", "/sessions");
    select.replaceChildren();
    if (sessions.length === 0) select.append(new Option("(no sessions)", ""));
    for (const s of sessions) {
      select.append(new Option(`${s.id}  ${s.kind}  ${s.state}  ${s.source}`, s.id));
    }
  } catch (error) {
    reportApiError(error);
  }
}

function reportApiError(error) {
  if (error instanceof ApiError && error.status === 401) {
    say("The server wants a token: enter it above and Save.", "error");
    $("token").focus();
  } else {
    say(String(error.message || error), "error");
  }
}

async function startCamera() {
  setBusy(true);
  try {
    say("Opening the camera...");
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } },
      audio: false,
    });
    state.camera = stream;
    const video = $("local-video");
    video.srcObject = stream;
    await video.play().catch(() => {});
    const session = await api("POST", "/sessions", { source: "webrtc" });
    rememberSession(session); // its capability token, for its paths and websocket
    state.ownsSession = true;
    await attach(session, { camera: stream });
  } catch (error) {
    reportApiError(error);
    await stop();
  }
}

async function joinSession() {
  const id = $("session-select").value;
  if (!id) {
    say("Choose a session first (or start the camera).");
    return;
  }
  setBusy(true);
  try {
    const session = await api("GET", `/sessions/${encodeURIComponent(id)}`);
    state.ownsSession = false;
    await attach(session, { camera: null });
  } catch (error) {
    reportApiError(error);
    await stop();
  }
}

/** Connect the websocket and the video to a session (camera: publish that stream). */
async function attach(session, { camera }) {
  state.session = session;
  const where = session.kind === session.source ? session.kind : `${session.kind}: ${session.source}`;
  $("session-label").textContent = `Session ${session.id} (${where})`;
  $("server-view").checked = false;
  $("sync-video").disabled = !camera;
  updateView();

  state.socket = new SessionSocket(() => socketUrl(session.id), {
    protocols: () => socketProtocols(session.id),
    onMessage: onMessage,
    onState: (value, detail) => {
      setBadge("ws-state", "socket", detail ? `${value} ${detail}` : value);
      if (value === "unauthorized") say("The server refused the token.", "error");
      if (value === "closed" && detail && state.session) say(`Socket closed: ${detail}`);
    },
  });
  state.socket.connect();

  if (camera) {
    state.frames = new CameraFrames($("local-video"));
    state.frames.start();
  }
  setBadge("rtc-state", "video", "connecting");
  state.peer = new Peer({
    sessionId: session.id,
    stream: camera,
    onTrack: (stream) => {
      const remote = $("remote-video");
      remote.srcObject = stream;
      remote.play().catch(() => {});
    },
    onState: (value) => {
      setBadge("rtc-state", "video", value);
      if (value === "failed") say("The video connection failed; masks still arrive on the socket.", "error");
    },
  });
  try {
    await state.peer.connect();
  } catch (error) {
    if (state.session !== session) return; // stopped meanwhile
    setBadge("rtc-state", "video", "failed");
    if (camera) throw error; // without the uplink a camera session gets no frames
    say(`No video from the server (${error.message}); showing masks only.`, "error");
  }
  if (state.session !== session) return; // stopped meanwhile
  state.timers.push(setInterval(pollSession, POLL_MS));
  state.timers.push(setInterval(ping, PING_MS));
  say(camera ? "Camera live: click an object to segment it." : "Joined: click an object to segment it.");
}

async function stop() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  if (state.socket) state.socket.close();
  if (state.peer) await state.peer.close();
  if (state.frames) state.frames.stop();
  if (state.camera) for (const track of state.camera.getTracks()) track.stop();
  const session = state.session;
  if (session && state.ownsSession) {
    await api("DELETE", `/sessions/${encodeURIComponent(session.id)}`).catch(() => {});
  }
  Object.assign(state, {
    session: null,
    ownsSession: false,
    camera: null,
    socket: null,
    peer: null,
    frames: null,
    display: null,
    shown: null,
    selected: null,
    pending: [],
    lastPrompt: null,
    lastPromptAck: null,
    counters: { frames: 0, acks: 0, errors: 0 },
  });
  state.objects.clear();
  state.clock.reset();
  state.recorder.clear();
  state.rates = { input: null, processed: null, dropped: null, lastInfo: null };
  state.latency = { endToEnd: null, server: null, rtt: null };
  $("local-video").srcObject = null;
  $("remote-video").srcObject = null;
  $("session-label").textContent = "No session.";
  setBadge("ws-state", "socket", "idle");
  setBadge("rtc-state", "video", "idle");
  setBusy(false);
  updateView();
  renderObjects();
  markDirty();
}

async function pollSession() {
  const session = state.session;
  if (!session) return;
  let info;
  try {
    info = await api("GET", `/sessions/${encodeURIComponent(session.id)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      say("The session was deleted.", "error");
      await stop();
    }
    return;
  }
  const now = performance.now();
  const last = state.rates.lastInfo;
  if (last) {
    const dt = (now - last.at) / 1000;
    state.rates.input = (info.frames_captured - last.info.frames_captured) / dt;
    state.rates.processed = (info.frames_processed - last.info.frames_processed) / dt;
  }
  state.rates.dropped = info.frames_dropped;
  state.rates.lastInfo = { at: now, info };
  state.session = info;
  if (info.state === "failed") say(`Session failed: ${info.error}`, "error");
  renderStats();
}

async function ping() {
  if (!state.socket || state.socket.state !== "open") return;
  const sent = performance.now();
  try {
    await state.socket.request({ type: "set_options" });
    state.latency.rtt = (performance.now() - sent) / 1000;
  } catch {
    // a lost connection: the socket reconnects by itself
  }
}

// --- messages -------------------------------------------------------------------------------

function onMessage(message) {
  const receivedAt = performance.now();
  switch (message.type) {
    case "hello":
      // (Re)connected: the server's objects are the truth (some may have gone meanwhile).
      for (const id of [...state.objects.keys()]) if (!message.obj_ids.includes(id)) state.objects.delete(id);
      for (const id of message.obj_ids) ensureObject(id);
      renderObjects();
      break;
    case "frame":
      onFrame(message, receivedAt);
      break;
    case "ack":
      onAck(message);
      break;
    case "error":
      state.counters.errors += 1;
      if (message.id == null) say(`Server: ${message.message}`, "error");
      break;
    case "end":
      say(`The stream ended: ${message.state}${message.error ? ` (${message.error})` : ""}.`);
      break;
    default:
      break;
  }
}

function onFrame(message, receivedAt) {
  state.counters.frames += 1;
  state.recorder.addFrame(message);
  if (state.frames) {
    const known = state.clock.origin !== null;
    state.clock.receiverLagMs = state.frames.frameInterval();
    state.clock.observe(message, receivedAt);
    if (!known && state.clock.origin !== null) updateView(); // "sync" can show frames now
  }
  const capture = state.frames ? state.clock.captureTime(message.pts, message.time_base) : null;
  const transport = state.latency.rtt !== null ? state.latency.rtt / 2 : 0;
  state.latency.server = message.latency;
  // Camera: our own capture clock; otherwise the server's capture-to-result time plus half
  // a websocket round trip.
  const latency = capture !== null ? (receivedAt - capture) / 1000 : message.latency + transport;
  state.latency.endToEnd = state.latency.endToEnd === null ? latency : 0.8 * state.latency.endToEnd + 0.2 * latency;
  let changed = false;
  for (const o of message.objects) changed = ensureObject(o.obj_id) || changed;
  for (const id of message.lost) {
    const entry = state.objects.get(id);
    if (entry && !entry.lost) {
      entry.lost = true;
      changed = true;
    }
  }
  for (const o of message.objects) {
    const entry = state.objects.get(o.obj_id);
    if (entry.lost && o.area > 0) {
      entry.lost = false;
      changed = true;
    }
    entry.area = o.area;
    entry.score = o.score;
  }
  state.display = {
    frame_idx: message.frame_idx,
    pts: message.pts,
    time_base: message.time_base,
    width: message.width,
    height: message.height,
    objects: message.objects,
  };
  if (changed) renderObjects();
  markDirty();
}

function onAck(ack) {
  state.counters.acks += 1;
  if (ack.request !== "set_options") state.lastPromptAck = { request: ack.request, obj_id: ack.obj_id, id: ack.id };
  const manual = ack.request !== "auto_seed";
  state.recorder.addAck(ack, { manual });
  state.pending = state.pending.filter((p) => p.id !== ack.id);
  if (ack.request === "reset") {
    state.objects.clear();
    state.selected = null;
    state.display = null;
    state.recorder.clear();
  } else if (ack.request === "remove_object") {
    state.objects.delete(ack.obj_id);
    if (state.selected === ack.obj_id) state.selected = null;
    if (state.display) {
      state.display = {
        ...state.display,
        objects: state.display.objects.filter((o) => o.obj_id !== ack.obj_id),
      };
    }
  } else if (ack.objects.length) {
    // The refined masks show at once: merged into what is drawn until the next frame.
    for (const o of ack.objects) ensureObject(o.obj_id, { auto: ack.request === "auto_seed" });
    const byId = new Map((state.display ? state.display.objects : []).map((o) => [o.obj_id, o]));
    for (const o of ack.objects) byId.set(o.obj_id, o);
    const base = state.display || { pts: null, time_base: null, width: 0, height: 0 };
    // The prompted frame's pts (for the synced view), if its frame message came.
    const frame = state.recorder.frames.findLast((f) => f.frame_idx === ack.frame_idx);
    const [maskH, maskW] = ack.objects[0].rle.size;
    state.display = {
      ...base,
      ...(frame ? { pts: frame.pts, time_base: frame.time_base } : {}),
      frame_idx: ack.frame_idx,
      width: base.width || maskW,
      height: base.height || maskH,
      objects: [...byId.values()],
    };
    if (ack.obj_id != null && ack.request !== "auto_seed") {
      state.selected = ack.obj_id;
      say(`Object ${ack.obj_id} selected: clicks refine it; shift-click starts another.`);
    }
  }
  renderObjects();
  markDirty();
}

function ensureObject(id, { auto = false } = {}) {
  if (state.objects.has(id)) return false;
  state.objects.set(id, { hidden: false, lost: false, auto, area: 0, score: 0 });
  return true;
}

// --- prompts --------------------------------------------------------------------------------

async function prompt(message, marker) {
  if (!state.socket || state.socket.state !== "open") {
    say("Not connected to a session.", "error");
    return;
  }
  if (!state.display) {
    say("Waiting for the first frame.");
    return;
  }
  if (FRAME_PROMPTS.has(message.type) && state.display.frame_idx >= 0) {
    // The frame the user saw; the server refuses it when the session has moved on too far.
    message.frame_idx = state.display.frame_idx;
  }
  message.id = state.socket.newId();
  state.lastPrompt = message;
  const request = state.socket.request(message);
  if (marker) {
    marker.id = message.id;
    state.pending.push(marker);
    markDirty();
  }
  try {
    return await request;
  } catch (error) {
    if (marker) state.pending = state.pending.filter((p) => p !== marker);
    say(`${message.type}: ${error.message}`, "error");
    markDirty();
    if (error.code === "unknown_object" && message.obj_id != null) {
      state.objects.delete(message.obj_id);
      if (state.selected === message.obj_id) state.selected = null;
      renderObjects();
    }
    return null;
  }
}

function setupPointer() {
  state.gestures = new PointerGestures($("prompt-layer"), {
    frameSize: () => (state.display && state.display.width ? [state.display.width, state.display.height] : null),
    onClick: ({ point, negative, newObject }) => clickPrompt(point, negative, newObject),
    onBox: ({ box, newObject }) => {
      const objId = newObject ? null : state.selected;
      prompt({ type: "add_box", obj_id: objId, box }, { kind: "box", box });
    },
    onChange: markDirty,
    dragPx: DRAG_PX,
  });
}

function clickPrompt(point, negative, newObject) {
  const objId = newObject ? null : state.selected;
  if (negative && objId === null) {
    say("A negative point needs an object: select one in the list first.");
    return;
  }
  prompt(
    {
      type: "add_points",
      obj_id: objId,
      points: [point],
      labels: [negative ? 0 : 1],
      clear_old_points: objId === null,
    },
    { kind: "point", point, negative },
  );
}

async function removeObject(id) {
  await prompt({ type: "remove_object", obj_id: id });
}

async function autoSeed() {
  const button = $("auto-seed");
  button.disabled = true;
  say("Segmenting everything (one automatic mask generator run)...");
  const ack = await prompt({ type: "auto_seed" });
  button.disabled = false;
  if (ack) say(`Segment everything: ${ack.obj_ids.length} new object(s).`);
}

async function resetSession() {
  const ack = await prompt({ type: "reset" });
  if (ack) say("Reset: every object forgotten.");
}

// --- rendering ------------------------------------------------------------------------------

function updateView() {
  const stage = $("stage");
  const camera = Boolean(state.camera);
  const serverView = $("server-view").checked;
  let view = "none";
  if (state.session) {
    if (!camera || serverView) view = "remote";
    else {
      // Synced once pts can be mapped to buffered camera frames (needs requestVideoFrameCallback).
      const canSync = state.frames && state.frames.running && state.clock.origin !== null;
      view = $("sync-video").checked && canSync ? "sync" : "live";
    }
  }
  stage.dataset.view = view;
  stage.dataset.clientOverlay = String(Boolean(state.session) && !serverView);
  markDirty();
}

function hiddenIds() {
  return new Set([...state.objects].filter(([, o]) => o.hidden).map(([id]) => id));
}

function render() {
  requestAnimationFrame(render);
  if (!state.dirty) return;
  state.dirty = false;
  const display = state.display;
  const stage = $("stage");
  if (display && display.width && display.height) {
    stage.style.aspectRatio = `${display.width} / ${display.height}`;
    const fill = $("fill-masks").checked && stage.dataset.view !== "remote";
    overlay.draw(display.width, display.height, display.objects, { hidden: hiddenIds(), fill });
    if (stage.dataset.view === "sync") drawSyncedFrame(display);
  } else {
    overlay.draw(1, 1, []);
  }
  drawPrompts();
  renderStats();
}

// The camera frame the displayed masks were computed on (or the newest until pts are known).
function drawSyncedFrame(display) {
  const frames = state.frames;
  if (!frames || frames.frames.length === 0) return;
  const time = state.clock.captureTime(display.pts, display.time_base);
  const frame = time === null ? frames.frames[frames.frames.length - 1] : frames.at(time);
  const canvas = $("frame-canvas");
  if (canvas.width !== frame.bitmap.width || canvas.height !== frame.bitmap.height) {
    canvas.width = frame.bitmap.width;
    canvas.height = frame.bitmap.height;
  }
  canvas.getContext("2d").drawImage(frame.bitmap, 0, 0);
  state.shown = { pts: display.pts, frame_idx: display.frame_idx, offsetMs: time === null ? null : frame.time - time };
}

function drawPrompts() {
  const layer = $("prompt-layer");
  const ratio = window.devicePixelRatio || 1;
  const w = Math.round(layer.clientWidth * ratio);
  const h = Math.round(layer.clientHeight * ratio);
  if (layer.width !== w || layer.height !== h) {
    layer.width = w;
    layer.height = h;
  }
  const ctx = layer.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const display = state.display;
  if (!display || !display.width) return;
  const sx = w / display.width;
  const sy = h / display.height;
  if ($("stage").dataset.clientOverlay === "true") {
    drawLabels(ctx, display.objects, {
      scale: sx,
      width: w,
      height: h,
      selected: state.selected,
      hidden: hiddenIds(),
    });
  }
  ctx.lineWidth = 2 * ratio;
  for (const marker of state.pending) {
    if (marker.kind === "point") {
      const [x, y] = marker.point;
      ctx.strokeStyle = "#000";
      ctx.fillStyle = marker.negative ? "#ff3b30" : "#34c759";
      ctx.beginPath();
      ctx.arc(x * sx, y * sy, 5 * ratio, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    } else {
      const [x0, y0, x1, y1] = marker.box;
      ctx.strokeStyle = "#34c759";
      ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    }
  }
  const drag = state.gestures.dragBox();
  if (drag) {
    const [x0, y0, x1, y1] = drag;
    ctx.setLineDash([6 * ratio, 4 * ratio]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    ctx.setLineDash([]);
  }
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const [id, entry] of state.objects) {
    const item = document.createElement("li");
    item.dataset.objId = String(id);
    item.classList.toggle("selected", id === state.selected);
    item.classList.toggle("hidden", entry.hidden);
    item.classList.toggle("lost", entry.lost);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = cssColor(id);
    const name = document.createElement("button");
    name.type = "button";
    name.className = "select";
    name.textContent = `Object ${id}${entry.auto ? " (auto)" : ""}${entry.lost ? " - lost" : ""}`;
    name.title = "Select: clicks refine this object";
    name.onclick = () => {
      state.selected = state.selected === id ? null : id;
      renderObjects();
      markDirty();
    };
    const hide = document.createElement("button");
    hide.type = "button";
    hide.className = "hide";
    hide.textContent = entry.hidden ? "Show" : "Hide";
    hide.onclick = () => {
      entry.hidden = !entry.hidden;
      renderObjects();
      markDirty();
    };
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.onclick = () => removeObject(id);
    item.append(swatch, name, hide, remove);
    list.append(item);
  }
  $("stat-objects").textContent = String(state.objects.size);
}

function fmt(value, digits = 1, unit = "") {
  return value === null || value === undefined || Number.isNaN(value) ? "-" : `${value.toFixed(digits)}${unit}`;
}

function renderStats() {
  const { rates, latency, counters, display } = state;
  $("stat-input-fps").textContent = fmt(rates.input);
  $("stat-processed-fps").textContent = fmt(rates.processed);
  $("stat-dropped").textContent = rates.dropped === null ? "-" : String(rates.dropped);
  const ms = (seconds) => (seconds === null ? "-" : `${Math.round(seconds * 1000)} ms`);
  $("stat-latency").textContent = ms(latency.endToEnd);
  $("stat-server-latency").textContent = ms(latency.server);
  $("stat-objects").textContent = String(state.objects.size);
  $("stat-frames").textContent = String(counters.frames);
  $("stat-frame-idx").textContent = display ? String(display.frame_idx) : "-";
}

// --- export ---------------------------------------------------------------------------------

function exportMasklets() {
  if (!state.session) return;
  const sav = state.recorder.toSav(state.session.id);
  const blob = new Blob([JSON.stringify(sav)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.session.id}_sav.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// --- wiring ---------------------------------------------------------------------------------

function setup() {
  $("token").value = getToken();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    say("Token saved.");
    refreshSessions();
  });
  $("start-camera").onclick = startCamera;
  $("join-session").onclick = joinSession;
  $("refresh-sessions").onclick = refreshSessions;
  $("stop").onclick = stop;
  $("new-object").onclick = () => {
    state.selected = null;
    renderObjects();
    markDirty();
    say("Next click starts a new object.");
  };
  $("auto-seed").onclick = autoSeed;
  $("reset").onclick = resetSession;
  $("export").onclick = exportMasklets;
  for (const id of ["server-view", "sync-video"]) $(id).onchange = updateView;
  $("fill-masks").onchange = markDirty;
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    if (event.key === "Escape") {
      state.selected = null;
      renderObjects();
      markDirty();
    } else if ((event.key === "Delete" || event.key === "Backspace") && state.selected !== null) {
      removeObject(state.selected);
    }
  });
  window.addEventListener("pagehide", () => {
    // A camera session lives only as long as this page.
    if (state.session && state.ownsSession) {
      api("DELETE", `/sessions/${encodeURIComponent(state.session.id)}`, undefined, { keepalive: true }).catch(() => {});
    }
  });
  setupPointer();
  setBusy(false);
  updateView();
  refreshSessions();
  requestAnimationFrame(render);
}

setup();
