// Masklets collected in the browser, exported as SA-V style JSON (the server's
// streamer/outputs/sav.py writes the same schema for files: see its docstring).
//
// Only what this page received is exported: frame messages (a live session may skip some for
// a slow client; `sam2_stream.frame_idx` lists the session frame of each exported frame) with
// the refined masks of acknowledged prompts merged in. Memory is bounded: past maxFrames the
// oldest frames are dropped (`sam2_stream.dropped_frames` counts them).

import { emptyRle } from "./rle.js";

const SMALL = 32 ** 2;
const LARGE = 96 ** 2;

export class MaskletRecorder {
  constructor({ maxFrames = 18000 } = {}) {
    this.maxFrames = maxFrames;
    this.clear();
  }

  clear() {
    this.frames = []; // {frame_idx, pts, time_base, width, height, maskSize, objects: Map, edited: Set}
    this.firstSeen = new Map(); // obj_id -> insertion order (masklet order)
    this.manual = new Set(); // objects the user prompted
    this.droppedFrames = 0;
  }

  get length() {
    return this.frames.length;
  }

  /** A `frame` message. */
  addFrame(message) {
    const objects = new Map();
    let maskSize = null;
    for (const o of message.objects) {
      objects.set(o.obj_id, { rle: o.rle, area: o.area });
      maskSize = o.rle.size;
      if (!this.firstSeen.has(o.obj_id)) this.firstSeen.set(o.obj_id, this.firstSeen.size);
    }
    const downscale = message.mask_downscale || 1;
    this.frames.push({
      frame_idx: message.frame_idx,
      pts: message.pts,
      time_base: message.time_base,
      width: message.width,
      height: message.height,
      maskSize: maskSize || [Math.ceil(message.height / downscale), Math.ceil(message.width / downscale)],
      objects,
      edited: new Set(),
    });
    if (this.frames.length > this.maxFrames) {
      this.frames.shift();
      this.droppedFrames += 1;
    }
  }

  /** An `ack` of a prompt: its refined masks replace those of its frame, if we have it. */
  addAck(ack, { manual = true } = {}) {
    const frame = this.frames[this.frames.length - 1];
    if (ack.obj_id != null && manual) this.manual.add(ack.obj_id);
    if (!frame || frame.frame_idx !== ack.frame_idx) return;
    for (const o of ack.objects) {
      frame.objects.set(o.obj_id, { rle: o.rle, area: o.area });
      if (manual) frame.edited.add(o.obj_id);
      if (!this.firstSeen.has(o.obj_id)) this.firstSeen.set(o.obj_id, this.firstSeen.size);
    }
    if (ack.request === "remove_object" && ack.obj_id != null) frame.objects.delete(ack.obj_id);
  }

  /** The SA-V style JSON object of everything collected so far. */
  toSav(videoId) {
    const frames = this.frames;
    const ids = [...this.firstSeen.keys()];
    const last = frames[frames.length - 1] || { width: 0, height: 0 };
    const width = last.width;
    const height = last.height;
    const masklet = frames.map((f) =>
      ids.map((id) => (f.objects.get(id) || { rle: emptyRle(f.maskSize[0], f.maskSize[1]) }).rle),
    );
    const stats = ids.map((id) => maskletStats(frames, id));
    const sizes = stats.map((s) => (s.visibleFrames ? s.areaSum / s.visibleFrames : 0));
    const resolution = width * height;
    return {
      video_id: videoId,
      video_duration: duration(frames),
      video_frame_count: frames.length,
      video_height: height,
      video_width: width,
      video_resolution: resolution,
      masklet,
      masklet_id: ids,
      masklet_size_rel: sizes.map((s) => (resolution ? s / resolution : 0)),
      masklet_size_abs: sizes,
      masklet_size_bucket: sizes.map((s) => (s < SMALL ? "small" : s < LARGE ? "medium" : "large")),
      masklet_visibility_changes: stats.map((s) => s.visibilityChanges),
      masklet_first_appeared_frame: stats.map((s) => s.firstVisible ?? s.firstListed ?? 0),
      masklet_frame_count: stats.map((s) => s.framesTracked),
      masklet_edited_frame_count: stats.map((s) => s.editedFrames),
      masklet_type: ids.map((id) => (this.manual.has(id) ? "manual" : "auto")),
      masklet_num: ids.length,
      sam2_stream: {
        frame_idx: frames.map((f) => f.frame_idx),
        pts: frames.map((f) => f.pts),
        time_base: frames.length ? frames[0].time_base : null,
        dropped_frames: this.droppedFrames,
      },
    };
  }
}

function maskletStats(frames, id) {
  const s = {
    firstListed: null,
    firstVisible: null,
    framesTracked: 0,
    visibleFrames: 0,
    areaSum: 0,
    visibilityChanges: 0,
    editedFrames: 0,
  };
  let lastVisible = null;
  frames.forEach((frame, index) => {
    const entry = frame.objects.get(id);
    if (!entry) return;
    if (s.firstListed === null) s.firstListed = index;
    const visible = entry.area > 0;
    s.framesTracked += 1;
    if (frame.edited.has(id)) s.editedFrames += 1;
    if (visible) {
      s.visibleFrames += 1;
      s.areaSum += entry.area;
      if (s.firstVisible === null) s.firstVisible = index;
    }
    if (s.firstVisible !== null && lastVisible !== null && visible !== lastVisible) {
      s.visibilityChanges += 1;
    }
    if (s.firstVisible !== null) lastVisible = visible;
  });
  return s;
}

// Seconds spanned by the frames' pts (n frames cover n intervals), 0 when unknown.
function duration(frames) {
  if (frames.length < 2 || frames[0].pts == null || !frames[0].time_base) return 0;
  const [num, den] = frames[0].time_base.split("/").map(Number);
  const span = ((frames[frames.length - 1].pts - frames[0].pts) * num) / den;
  return (span * frames.length) / (frames.length - 1);
}
