/** Big-endian field access for CDBs and parameter data, and space-padded ASCII fields. */

export function be16(b: Uint8Array, o: number): number {
  return (b[o] ?? 0) << 8 | (b[o + 1] ?? 0);
}

export function be24(b: Uint8Array, o: number): number {
  return (b[o] ?? 0) << 16 | (b[o + 1] ?? 0) << 8 | (b[o + 2] ?? 0);
}

export function be32(b: Uint8Array, o: number): number {
  return ((b[o] ?? 0) << 24 | (b[o + 1] ?? 0) << 16 | (b[o + 2] ?? 0) << 8 | (b[o + 3] ?? 0)) >>> 0;
}

export function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8 & 0xff;
  b[o + 1] = v & 0xff;
}

export function put24(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 16 & 0xff;
  b[o + 1] = v >>> 8 & 0xff;
  b[o + 2] = v & 0xff;
}

export function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24 & 0xff;
  b[o + 1] = v >>> 16 & 0xff;
  b[o + 2] = v >>> 8 & 0xff;
  b[o + 3] = v & 0xff;
}

/** Write `text` as printable ASCII, padded with spaces to `length` (INQUIRY strings, SPC-4 4.3.1). */
export function putAscii(b: Uint8Array, o: number, length: number, text: string): void {
  for (let i = 0; i < length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x20;
    b[o + i] = c >= 0x20 && c < 0x7f ? c : 0x20;
  }
}

/** Concatenate byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** "0x1b" style, for traces. */
export function hex8(n: number): string {
  return "0x" + (n & 0xff).toString(16).padStart(2, "0");
}
