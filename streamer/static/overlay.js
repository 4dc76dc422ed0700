// Client-side mask overlay: object masks drawn on a transparent <canvas> above the video.
//
// The mask canvas has the frame's size in pixels (CSS scales it to the video), so canvas pixel
// (x, y) is source pixel (x, y). Each object is filled with its colour at 50% alpha, outlined
// at full opacity and labelled with its id (drawLabels), as the server's overlay track draws it
// (streamer/overlay.py); colours are the same function of the id on both sides.

import { decodeRle } from "./rle.js";

const GOLDEN_RATIO_CONJUGATE = 0.618033988749895;
const FILL_ALPHA = 128; // 0.5, the server's OverlayStyle.alpha

/** Stable [r, g, b] (0-255) of an object id; equals streamer.overlay.object_color. */
export function objectColor(objId) {
  const hue = (objId * GOLDEN_RATIO_CONJUGATE) % 1;
  return hsvToRgb(hue, 0.75, 1).map((c) => Math.round(c * 255));
}

export function cssColor(objId) {
  const [r, g, b] = objectColor(objId);
  return `rgb(${r}, ${g}, ${b})`;
}

// Python's colorsys.hsv_to_rgb.
function hsvToRgb(h, s, v) {
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  return [
    [v, t, p],
    [q, v, p],
    [p, v, t],
    [p, q, v],
    [t, p, v],
    [v, p, q],
  ][i % 6];
}

/** Draws masklets onto one canvas; keeps the last decoded mask per object (redraws are cheap). */
export class MaskOverlay {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.scratch = document.createElement("canvas"); // composed at the masks' resolution
    this.scratchCtx = this.scratch.getContext("2d");
    this.decoded = new Map(); // obj_id -> {counts, mask}
  }

  /**
   * Draw `objects` (masklets: {obj_id, rle, bbox}) of a width x height frame.
   * options: hidden (Set of ids not drawn), fill (bool: false draws outlines only, e.g.
   * over the server's already tinted video). Labels: drawLabels().
   */
  draw(width, height, objects, { hidden = new Set(), fill = true } = {}) {
    const { canvas, ctx } = this;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    ctx.clearRect(0, 0, width, height);
    const visible = objects.filter((o) => !hidden.has(o.obj_id) && o.area !== 0);
    this.forgetExcept(objects);
    if (visible.length === 0) return;

    const [maskH, maskW] = visible[0].rle.size;
    if (this.scratch.width !== maskW || this.scratch.height !== maskH) {
      this.scratch.width = maskW;
      this.scratch.height = maskH;
    }
    const image = this.scratchCtx.createImageData(maskW, maskH);
    const pixels = new Uint32Array(image.data.buffer); // RGBA bytes, little-endian words
    for (const object of visible) {
      const mask = this.decode(object);
      if (mask.width !== maskW || mask.height !== maskH) continue;
      const [r, g, b] = objectColor(object.obj_id);
      const rgb = (b << 16) | (g << 8) | r;
      const fillWord = fill ? ((FILL_ALPHA << 24) | rgb) >>> 0 : 0;
      const edgeWord = ((255 << 24) | rgb) >>> 0;
      paintMask(pixels, mask.data, maskW, maskH, fillWord, edgeWord);
    }
    this.scratchCtx.putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.scratch, 0, 0, width, height);
  }

  decode(object) {
    const cached = this.decoded.get(object.obj_id);
    if (cached && cached.counts === object.rle.counts) return cached.mask;
    const mask = decodeRle(object.rle);
    this.decoded.set(object.obj_id, { counts: object.rle.counts, mask });
    return mask;
  }

  forgetExcept(objects) {
    const keep = new Set(objects.map((o) => o.obj_id));
    for (const id of this.decoded.keys()) if (!keep.has(id)) this.decoded.delete(id);
  }
}

/**
 * Object ids (and detector labels) on dark boxes at their masks' top-left corners, on a canvas of any size (drawn on
 * the display-resolution prompt layer, so the text stays sharp when the frame is small).
 * scale: canvas pixels per frame pixel; width, height: the canvas size.
 */
export function drawLabels(ctx, objects, { scale, width, height, selected = null, hidden = new Set() }) {
  const size = Math.max(12, Math.round(height / 30));
  ctx.font = `bold ${size}px sans-serif`;
  ctx.textBaseline = "top";
  const pad = Math.max(2, Math.round(size / 5));
  for (const object of objects) {
    if (hidden.has(object.obj_id) || object.area === 0) continue;
    // A detector's class name follows the id ("3 person"), as the server's masklets carry it.
    const text = object.label ? `${object.obj_id} ${object.label}` : String(object.obj_id);
    const boxW = ctx.measureText(text).width + 2 * pad;
    const boxH = size + 2 * pad;
    const x = Math.min(Math.max(object.bbox[0] * scale, 0), Math.max(width - boxW, 0));
    const y = Math.min(Math.max(object.bbox[1] * scale, 0), Math.max(height - boxH, 0));
    ctx.fillStyle = "rgba(0, 0, 0, 0.75)";
    ctx.fillRect(x, y, boxW, boxH);
    if (object.obj_id === selected) {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = Math.max(1, size / 8);
      ctx.strokeRect(x, y, boxW, boxH);
    }
    ctx.fillStyle = cssColor(object.obj_id);
    ctx.fillText(text, x + pad, y + pad);
  }
}

// Fill `mask` pixels with fillWord and its edge pixels (a 4-neighbour outside the mask or the
// frame) with edgeWord; later objects overwrite earlier ones, as on the server.
function paintMask(pixels, mask, width, height, fillWord, edgeWord) {
  for (let y = 0; y < height; y += 1) {
    const row = y * width;
    for (let x = 0; x < width; x += 1) {
      const i = row + x;
      if (!mask[i]) continue;
      const edge =
        x === 0 ||
        y === 0 ||
        x === width - 1 ||
        y === height - 1 ||
        !mask[i - 1] ||
        !mask[i + 1] ||
        !mask[i - width] ||
        !mask[i + width];
      if (edge) pixels[i] = edgeWord;
      else if (fillWord) pixels[i] = fillWord;
    }
  }
}
