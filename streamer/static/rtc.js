// WebRTC with the service (POST /sessions/{id}/webrtc/offer, JSON {sdp, type} both ways).
//
// Publishing (camera): our video track goes up and feeds a "webrtc" session; the server's
// overlay track (the frames with its masks drawn) comes back on the same transceiver.
// Viewing (any other session): receive-only; the overlay track is the session's video.
// Masklets and prompts use the websocket, so no data channel is opened here.
// The server does not trickle ICE: the offer is posted once gathering is complete.

import { api } from "./api.js";

const GATHER_TIMEOUT_MS = 5000;

export class Peer {
  /**
   * sessionId: the session; stream: a camera MediaStream to publish, or null to view.
   * onTrack(MediaStream): the server's overlay video. onState(state): connectionState changes.
   */
  constructor({ sessionId, stream = null, onTrack, onState }) {
    this.sessionId = sessionId;
    this.stream = stream;
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.peerId = null;
    this.pc.ontrack = (event) => onTrack(event.streams[0] || new MediaStream([event.track]));
    this.pc.onconnectionstatechange = () => onState(this.pc.connectionState);
    const track = stream && stream.getVideoTracks()[0];
    if (track) {
      // Keep the resolution when bandwidth or CPU is short (masks are sized from the first
      // frame; fewer frames is the better trade for segmentation than smaller ones).
      track.contentHint = "detail";
      this.sender = this.pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] }).sender;
    } else {
      this.pc.addTransceiver("video", { direction: "recvonly" });
    }
  }

  /** Offer, post, apply the answer. Throws ApiError / Error. */
  async connect() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await iceGatheringComplete(this.pc, GATHER_TIMEOUT_MS);
    const answer = await api("POST", `/sessions/${encodeURIComponent(this.sessionId)}/webrtc/offer`, {
      sdp: this.pc.localDescription.sdp,
      type: "offer",
    });
    this.peerId = answer.peer_id;
    await this.pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    if (this.sender) {
      try {
        const parameters = this.sender.getParameters();
        parameters.degradationPreference = "maintain-resolution";
        await this.sender.setParameters(parameters);
      } catch {
        // Not supported by every browser; the default (balanced) also works.
      }
    }
  }

  /** Sent frames per second and the round-trip time (s), from getStats(); nulls if unknown. */
  async stats() {
    const result = { sentFps: null, framesSent: null, rtt: null };
    const report = await this.pc.getStats();
    report.forEach((entry) => {
      if (entry.type === "outbound-rtp" && entry.kind === "video") {
        result.sentFps = entry.framesPerSecond ?? null;
        result.framesSent = entry.framesSent ?? null;
      } else if (entry.type === "candidate-pair" && entry.nominated && entry.state === "succeeded") {
        result.rtt = entry.currentRoundTripTime ?? null;
      }
    });
    return result;
  }

  /** Close the connection and tell the server (best effort). */
  async close() {
    this.pc.close();
    if (this.peerId) {
      const path = `/sessions/${encodeURIComponent(this.sessionId)}/webrtc/${this.peerId}`;
      await api("DELETE", path, undefined, { keepalive: true }).catch(() => {});
    }
  }
}

function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs); // post what was gathered so far
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}
