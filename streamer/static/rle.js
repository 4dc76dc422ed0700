// COCO run-length encoding as pycocotools writes it, in the browser.
//
// A mask of size [height, width] is read in column-major order (down each column, then the
// next column) as alternating runs of 0s and 1s, starting with 0s (a first run may be empty).
// pycocotools stores the run lengths ("counts") as an ASCII string:
//   - from the fourth run on, a count is stored as the difference to the count two runs
//     earlier (runs of the same value have similar lengths, so the numbers stay small);
//   - each (possibly negative) number is written in 5-bit groups, least significant first;
//     each character is 48 + group, plus 32 when another group follows; in the last group,
//     bit 4 (16) is the sign bit (the number is sign-extended from it).
// Arithmetic is done with plain numbers (not 32-bit bit operations) so large counts stay exact.

/** Run lengths from a pycocotools counts string. Throws Error on a malformed string. */
export function decodeCounts(text) {
  const counts = [];
  let pos = 0;
  while (pos < text.length) {
    let value = 0;
    let scale = 1; // 32 ** groups read so far
    let more = true;
    while (more) {
      if (pos >= text.length) throw new Error("RLE counts string ends inside a number");
      const c = text.charCodeAt(pos) - 48;
      if (c < 0 || c > 63) throw new Error(`bad RLE counts character at ${pos}`);
      value += (c & 0x1f) * scale;
      scale *= 32;
      more = (c & 0x20) !== 0;
      pos += 1;
      if (!more && (c & 0x10) !== 0) value -= scale; // sign-extend from bit 4 of the last group
    }
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

/** The pycocotools counts string of run lengths (the inverse of decodeCounts). */
export function encodeCounts(counts) {
  let text = "";
  for (let i = 0; i < counts.length; i += 1) {
    let value = counts[i];
    if (i > 2) value -= counts[i - 2];
    let more = true;
    while (more) {
      let c = ((value % 32) + 32) % 32; // low 5 bits, also for negative values
      value = (value - c) / 32; // exact floor division
      more = (c & 0x10) !== 0 ? value !== -1 : value !== 0;
      if (more) c |= 0x20;
      text += String.fromCharCode(c + 48);
    }
  }
  return text;
}

/**
 * Decode {size: [height, width], counts: string} into a row-major mask.
 * Returns {height, width, data: Uint8Array(height * width) of 0/1, area}.
 * Throws Error when the runs do not add up to height * width.
 */
export function decodeRle(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  const data = new Uint8Array(height * width);
  let start = 0; // column-major index of the current run's first pixel
  let area = 0;
  for (let i = 0; i < counts.length; i += 1) {
    const length = counts[i];
    if (length < 0 || start + length > height * width) {
      throw new Error(`RLE runs exceed the ${height}x${width} mask`);
    }
    if (i % 2 === 1 && length > 0) {
      area += length;
      // Fill the run down its column(s): pixel (col, row) is data[row * width + col].
      let col = Math.floor(start / height);
      let row = start - col * height;
      let left = length;
      while (left > 0) {
        const stop = Math.min(height, row + left);
        for (let r = row; r < stop; r += 1) data[r * width + col] = 1;
        left -= stop - row;
        col += 1;
        row = 0;
      }
    }
    start += length;
  }
  if (start !== height * width) {
    throw new Error(`RLE runs cover ${start} of ${height * width} pixels`);
  }
  return { height, width, data, area };
}

/** Encode a row-major 0/1 mask (any array-like of height * width) as COCO RLE. */
export function encodeMask(data, height, width) {
  const counts = [];
  let current = 0; // the value of the run being counted
  let length = 0;
  for (let col = 0; col < width; col += 1) {
    for (let row = 0; row < height; row += 1) {
      const value = data[row * width + col] ? 1 : 0;
      if (value !== current) {
        counts.push(length);
        current = value;
        length = 0;
      }
      length += 1;
    }
  }
  counts.push(length);
  return { size: [height, width], counts: encodeCounts(counts) };
}

/** The RLE of an all-zero mask of this size (absent objects in exports). */
export function emptyRle(height, width) {
  return { size: [height, width], counts: encodeCounts([height * width]) };
}
