// Aligning masks with the camera video by pts.
//
// A frame published over WebRTC keeps its RTP timestamp end to end: the server reports it as
// `pts` (1/90000 s, counted from the first frame it received), and the browser's RTP clock is
// its capture clock. So the local capture time of a masklet's frame is origin + pts seconds,
// where origin (the capture time of pts 0 on this page's clock) is learnt from the frame
// messages: every message gives received - latency - pts >= origin (the server's `latency`
// starts when the server got the frame; uplink and downlink time only add to it), and the
// smallest value seen is the estimate. It is late by the quickest round of transport: a few ms
// on a LAN, plus one frame interval, because the server's WebRTC stack (aiortc) hands a frame
// over only when the first packet of the next one arrives. `receiverLagMs` (set to the
// camera's frame interval) takes that frame back out. tests/test_browser.py compares the frame
// the page shows with the one the server processed (frames carry their index as a bar code).
//
// CameraFrames keeps the last few seconds of camera frames as ImageBitmaps with their capture
// times, so the page can show the frame a masklet was computed on instead of the live one
// (which is also the frame the server applies a click to: prompts go to its current frame).

export class PtsClock {
  constructor() {
    this.reset();
  }

  reset() {
    this.origin = null; // ms on the performance.now() clock
    this.receiverLagMs = 0;
  }

  /** A frame message received at `receivedAt` (performance.now() ms). */
  observe(message, receivedAt) {
    const seconds = ptsSeconds(message.pts, message.time_base);
    if (seconds === null) return;
    const estimate = receivedAt - message.latency * 1000 - seconds * 1000;
    if (this.origin === null || estimate < this.origin) this.origin = estimate;
  }

  /** Local capture time (performance.now() ms) of a frame with this pts, or null. */
  captureTime(pts, timeBase) {
    const seconds = ptsSeconds(pts, timeBase);
    if (seconds === null || this.origin === null) return null;
    return this.origin - this.receiverLagMs + seconds * 1000;
  }
}

export function ptsSeconds(pts, timeBase) {
  if (pts == null || !timeBase) return null;
  const [num, den] = timeBase.split("/").map(Number);
  return den ? (pts * num) / den : null;
}

const MAX_WIDTH = 640; // frames are kept at most this wide (90 frames of 640x360: ~80 MB)

export class CameraFrames {
  /** video: the <video> playing the camera stream. Keeps frames of the last maxAgeMs. */
  constructor(video, { maxAgeMs = 3000, maxFrames = 90 } = {}) {
    this.video = video;
    this.maxAgeMs = maxAgeMs;
    this.maxFrames = maxFrames;
    this.frames = []; // {time, bitmap}, oldest first
    this.running = false;
    this.hasCaptureTime = false;
  }

  start() {
    if (this.running || !("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    this.running = true;
    const onFrame = (now, metadata) => {
      if (!this.running) return;
      // captureTime: when the camera took the frame (Chrome gives it for camera tracks).
      const time = metadata.captureTime ?? now;
      this.hasCaptureTime = this.hasCaptureTime || metadata.captureTime != null;
      const width = this.video.videoWidth;
      const options = width > MAX_WIDTH ? { resizeWidth: MAX_WIDTH, resizeQuality: "medium" } : {};
      createImageBitmap(this.video, options).then(
        (bitmap) => this.push(time, bitmap),
        () => {},
      );
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  push(time, bitmap) {
    if (!this.running) {
      bitmap.close();
      return;
    }
    this.frames.push({ time, bitmap });
    const cutoff = time - this.maxAgeMs;
    while (this.frames.length > this.maxFrames || (this.frames.length && this.frames[0].time < cutoff)) {
      this.frames.shift().bitmap.close();
    }
  }

  /** Median time between buffered frames (ms), or 0 with fewer than two. */
  frameInterval() {
    const gaps = [];
    for (let i = 1; i < this.frames.length; i += 1) gaps.push(this.frames[i].time - this.frames[i - 1].time);
    if (gaps.length === 0) return 0;
    gaps.sort((a, b) => a - b);
    return gaps[Math.floor(gaps.length / 2)];
  }

  /**
   * The frame captured at `time` (ms): the latest one captured before time + a quarter frame
   * (estimated times are late by the fastest transport, never much early), else the oldest
   * buffered one; null when none is buffered.
   */
  at(time) {
    const limit = time + this.frameInterval() / 4;
    let best = null;
    for (const frame of this.frames) {
      if (frame.time <= limit) best = frame;
      else break;
    }
    return best || this.frames[0] || null;
  }

  stop() {
    this.running = false;
    for (const frame of this.frames) frame.bitmap.close();
    this.frames = [];
  }
}
