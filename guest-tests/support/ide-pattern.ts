/**
 * Host-side data patterns for the IDE guest test: what the host writes into the image before
 * boot (recognisable text sectors and a deterministic region), and vstor-io's sector pattern
 * (images/vstor-io.c: fill_sector) to check what the guest wrote once it has stopped.
 */
import { createHash } from "node:crypto";

const MAGIC = 0x52545356; // "VSTR"

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The 512 bytes vstor-io writes at `lba` with `seed`. */
export function vstorIoSector(lba: number, seed: number): Uint8Array {
  const lo = lba >>> 0;
  const hi = Math.floor(lba / 2 ** 32) >>> 0;
  let x = fmix32((seed ^ fmix32((lo ^ fmix32((hi + 0x9e3779b9) >>> 0)) >>> 0)) >>> 0);
  if (x === 0) x = 1;
  const w = new Uint32Array(128);
  w[0] = lo;
  w[1] = hi;
  w[2] = seed >>> 0;
  w[3] = MAGIC;
  for (let i = 4; i < 128; i++) {
    x = xorshift32(x);
    w[i] = x;
  }
  return new Uint8Array(w.buffer);
}

/** A sector that starts with readable text (so the guest can print it). */
export function textSector(text: string): Uint8Array {
  const s = new Uint8Array(512).fill(0x2e);
  s.set(new TextEncoder().encode(text));
  s[511] = 0x0a;
  return s;
}

/** A deterministic, non-repeating region (xorshift bytes). */
export function patternRegion(bytes: number, seed = 0x1de): Uint8Array {
  const out = new Uint8Array(bytes);
  const w = new Uint32Array(out.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < w.length; i++) {
    x = xorshift32(x);
    w[i] = x;
  }
  return out;
}

export function md5(data: Uint8Array): string {
  return createHash("md5").update(data).digest("hex");
}

/** One step of Marsaglia's 32-bit xorshift (13, 17, 5), as vstor-io.c uses it. */
function xorshift32(x: number): number {
  x ^= x << 13;
  x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
}
