/**
 * Byte-buffer helpers shared by the formats, the clone and the test tools. Pure: no platform.
 */

/**
 * Whether every byte of `b` is zero. It stops at the first non-zero word, so data that is not
 * zero costs almost nothing; a zero buffer is scanned 64 bytes (16 words OR-ed together) per
 * step, about twice as fast as a word at a time.
 */
export function isZero(b: Uint8Array): boolean {
  const len = b.length;
  // Bytes up to the first 4-byte boundary (a view into the middle of a buffer).
  const head = (4 - (b.byteOffset & 3)) & 3;
  if (len < head + 4) {
    for (let i = 0; i < len; i++) if (b[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < head; i++) if (b[i] !== 0) return false;
  const words = (len - head) >>> 2;
  const w = new Int32Array(b.buffer, b.byteOffset + head, words);
  // A quick look at the first word: most data fails here.
  if (w[0] !== 0) return false;
  let k = 0;
  for (; k + 16 <= words; k += 16) {
    if (
      (w[k]! | w[k + 1]! | w[k + 2]! | w[k + 3]! | w[k + 4]! | w[k + 5]! | w[k + 6]! | w[k + 7]! |
        w[k + 8]! | w[k + 9]! | w[k + 10]! | w[k + 11]! | w[k + 12]! | w[k + 13]! | w[k + 14]! | w[k + 15]!) !==
      0
    ) {
      return false;
    }
  }
  for (; k < words; k++) if (w[k] !== 0) return false;
  for (let i = head + words * 4; i < len; i++) if (b[i] !== 0) return false;
  return true;
}
