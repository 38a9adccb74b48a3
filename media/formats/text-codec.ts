/**
 * UTF-8 for fixed-size, NUL-terminated text fields in image headers (comments, descriptors),
 * without TextEncoder/TextDecoder, which the platform-free build does not declare. Decoding never
 * throws: malformed sequences become U+FFFD, as a header may hold anything.
 */

/** Decode bytes up to the first NUL (or the end). */
export function decodeCString(bytes: Uint8Array): string {
  let end = bytes.indexOf(0);
  if (end < 0) end = bytes.length;
  let out = "";
  let i = 0;
  while (i < end) {
    const b = bytes[i]!;
    let cp = 0xfffd;
    let len = 1;
    if (b < 0x80) {
      cp = b;
    } else if (b >= 0xc2 && b < 0xe0) {
      len = 2;
    } else if (b >= 0xe0 && b < 0xf0) {
      len = 3;
    } else if (b >= 0xf0 && b < 0xf5) {
      len = 4;
    }
    if (len > 1) {
      let v = b & (0xff >> (len + 1));
      let ok = i + len <= end;
      for (let k = 1; ok && k < len; k++) {
        const c = bytes[i + k]!;
        if ((c & 0xc0) !== 0x80) ok = false;
        v = (v << 6) | (c & 0x3f);
      }
      const min = len === 2 ? 0x80 : len === 3 ? 0x800 : 0x10000;
      if (ok && v >= min && v <= 0x10ffff && !(v >= 0xd800 && v < 0xe000)) {
        cp = v;
      } else {
        len = 1;
      }
    }
    out += String.fromCodePoint(cp);
    i += len;
  }
  return out;
}

/** UTF-8 bytes of `text`. */
export function encodeUtf8(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return Uint8Array.from(out);
}

/**
 * Write `text` NUL-terminated and NUL-padded into `out[offset..offset+size)`, cut at a character
 * boundary if it is too long (callers that must not lose text check `utf8Length` first).
 */
export function writeCString(text: string, out: Uint8Array, offset: number, size: number): void {
  let bytes = encodeUtf8(text);
  if (bytes.length >= size) {
    let cut = size - 1;
    while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--;
    bytes = bytes.subarray(0, cut);
  }
  out.fill(0, offset, offset + size);
  out.set(bytes, offset);
}

export function utf8Length(text: string): number {
  return encodeUtf8(text).length;
}
