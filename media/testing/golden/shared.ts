/**
 * Shared pieces of the golden-image generators: deterministic sector content, byte-order writers,
 * deterministic UUIDs, and the image description every generator returns.
 *
 * The generators are written from the published format tables (docs/interop, the VHD spec, the
 * VMDK technote, /work/shared/ref/media-formats.md), deliberately without any of our format code:
 * they are an independent second writer whose images our readers must reproduce byte for byte.
 */

export const SECTOR = 512;
export const KiB = 1024;
export const MiB = 1024 * 1024;

/** One file of a golden image and what its virtual disk must read as. */
export interface GoldenFile {
  /** File name (no folder); the test decides where it goes. */
  name: string;
  /** The whole file. */
  bytes: Uint8Array;
}

/** A golden disk: its files (one, or a child and its parent) and its expected virtual content. */
export interface GoldenDisk {
  files: GoldenFile[];
  /** Virtual size in bytes. */
  size: number;
  /** Every byte of the virtual disk (size bytes). */
  expected: Uint8Array;
}

/**
 * Fill `buf` (which holds virtual bytes from `offset`, sector aligned) with content that names
 * itself: each sector starts with a 4-character tag and its LBA, so a misplaced sector is
 * obvious in a failing diff; the rest is xorshift noise seeded by tag and LBA (incompressible).
 */
export function fillSectors(buf: Uint8Array, offset: number, tag: string): Uint8Array {
  if (offset % SECTOR || buf.length % SECTOR) throw new RangeError("fillSectors needs whole sectors");
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const tagSeed = tagNumber(tag);
  for (let s = 0; s < buf.length; s += SECTOR) {
    const lba = (offset + s) / SECTOR;
    for (let i = 0; i < 4; i++) buf[s + i] = tag.charCodeAt(i) & 0xff;
    dv.setUint32(s + 4, lba, true);
    let x = (tagSeed ^ Math.imul(lba + 1, 0x9e3779b1)) >>> 0 || 1;
    for (let i = 8; i < SECTOR; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      dv.setUint32(s + i, x >>> 0, true);
    }
  }
  return buf;
}

/** Highly compressible content (a short text repeated), still tagged with each sector's LBA. */
export function fillText(buf: Uint8Array, offset: number, tag: string): Uint8Array {
  const line = `${tag} golden sector; the quick brown fox jumps over the lazy dog. `;
  for (let s = 0; s < buf.length; s += SECTOR) {
    const text = `${tag}@${(offset + s) / SECTOR}:`.padEnd(SECTOR, line);
    for (let i = 0; i < SECTOR; i++) buf[s + i] = text.charCodeAt(i) & 0xff;
  }
  return buf;
}

function tagNumber(tag: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < tag.length; i++) h = Math.imul(h ^ tag.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** 16 deterministic bytes for a UUID field (version 4 / variant bits set, so they look real). */
export function uuidBytes(seed: number): Uint8Array {
  const out = new Uint8Array(16);
  let x = (seed * 0x2545f491 + 0x1234567) >>> 0 || 1;
  for (let i = 0; i < 16; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  out[7] = (out[7]! & 0x0f) | 0x40; // version nibble sits in the high half of the 3rd field (LE)
  out[8] = (out[8]! & 0x3f) | 0x80;
  return out;
}

/** A writer over a byte array: fixed-offset little/big-endian fields, ASCII and UTF-16. */
export class Bytes {
  readonly dv: DataView;
  constructor(readonly buf: Uint8Array) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u8(off: number, v: number): this {
    this.buf[off] = v;
    return this;
  }
  u16le(off: number, v: number): this {
    this.dv.setUint16(off, v, true);
    return this;
  }
  u16be(off: number, v: number): this {
    this.dv.setUint16(off, v, false);
    return this;
  }
  u32le(off: number, v: number): this {
    this.dv.setUint32(off, v >>> 0, true);
    return this;
  }
  u32be(off: number, v: number): this {
    this.dv.setUint32(off, v >>> 0, false);
    return this;
  }
  u64le(off: number, v: number | bigint): this {
    this.dv.setBigUint64(off, BigInt(v), true);
    return this;
  }
  u64be(off: number, v: number | bigint): this {
    this.dv.setBigUint64(off, BigInt(v), false);
    return this;
  }
  ascii(off: number, s: string): this {
    for (let i = 0; i < s.length; i++) this.buf[off + i] = s.charCodeAt(i) & 0xff;
    return this;
  }
  /** UTF-16 code units (no terminator); returns the number of bytes written. */
  utf16(off: number, s: string, littleEndian: boolean): number {
    for (let i = 0; i < s.length; i++) this.dv.setUint16(off + 2 * i, s.charCodeAt(i), littleEndian);
    return 2 * s.length;
  }
  set(off: number, bytes: Uint8Array): this {
    this.buf.set(bytes, off);
    return this;
  }
}

export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Concatenate byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
