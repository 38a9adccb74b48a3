/**
 * Parallels HDD v2 header and block allocation table (BAT). Pure codec: bytes in, a validated
 * structure out, and back. No I/O.
 *
 *   0x00  16  signature "WithoutFreeSpace" (BAT in sectors) or "WithouFreSpacExt" (BAT in clusters)
 *   0x10   4  version = 2
 *   0x14   4  heads            0x18  4  cylinders
 *   0x1C   4  tracks: sectors per cluster
 *   0x20   4  BAT entries      0x24  8  sectors (only the low 32 bits count in the legacy form)
 *   0x2C   4  in-use marker    0x30  4  data offset in sectors (0 in old files: end of BAT)
 *   0x34   4  flags            0x38  8  format extension offset (Ext form only)
 * Then the BAT: one u32 LE per cluster, 0 = not allocated. All fields little-endian.
 */
import { MediumError } from "../../block.js";

export const SIGNATURE_LEGACY = "WithoutFreeSpace";
export const SIGNATURE_EXT = "WithouFreSpacExt";
export const PARALLELS_VERSION = 2;
export const HEADER_SIZE = 64;
export const SECTOR = 512;
/** Written while an image is open read-write; qemu refuses such an image read-write ("not closed correctly"). */
export const INUSE_MAGIC = 0x746f6e59;
/** Default cluster: 1 MiB, as qemu creates. */
export const DEFAULT_CLUSTER_SIZE = 1 << 20;
/** Largest cluster we accept (qemu caps tracks at INT32_MAX / 512 sectors; nobody uses more than a few MiB). */
export const MAX_CLUSTER_SIZE = 256 << 20;
/** Largest BAT we keep in memory: 2^26 entries (256 MiB of table). */
export const MAX_BAT_ENTRIES = 1 << 26;
/** Largest virtual size: byte offsets must stay exact in a JS number. */
export const MAX_SIZE = 2 ** 52;

export type ParallelsForm = "legacy" | "ext";

export interface ParallelsHeader {
  /** "legacy": BAT entries count sectors; "ext": BAT entries count clusters. */
  form: ParallelsForm;
  heads: number;
  cylinders: number;
  /** Sectors per cluster. */
  tracks: number;
  batEntries: number;
  /** Virtual size in sectors. */
  sectors: number;
  inUse: number;
  /** Data area offset in sectors (as stored; 0 in old legacy files). */
  dataOffsetSectors: number;
  flags: number;
  extOffset: number;
}

export interface CodecContext {
  path?: string;
}

function bad(kind: "invalid-format" | "corrupt" | "unsupported", msg: string, ctx: CodecContext, offset?: number): MediumError {
  return new MediumError(kind, msg, { path: ctx.path, offset });
}

/** True when `bytes` starts with either Parallels signature (format detection by content). */
export function isParallels(bytes: Uint8Array): boolean {
  if (bytes.length < 16) return false;
  const sig = String.fromCharCode(...bytes.subarray(0, 16));
  return sig === SIGNATURE_LEGACY || sig === SIGNATURE_EXT;
}

export function clusterSize(h: ParallelsHeader): number {
  return h.tracks * SECTOR;
}

export function virtualSize(h: ParallelsHeader): number {
  return h.sectors * SECTOR;
}

/** Bytes per BAT unit: a sector (legacy) or a cluster (ext). */
export function batUnit(h: ParallelsHeader): number {
  return h.form === "ext" ? clusterSize(h) : SECTOR;
}

/** Where the data area starts, in bytes (data offset 0 means: the end of the BAT, rounded up to a sector). */
export function dataOffset(h: ParallelsHeader): number {
  if (h.dataOffsetSectors !== 0) return h.dataOffsetSectors * SECTOR;
  return Math.ceil((HEADER_SIZE + 4 * h.batEntries) / SECTOR) * SECTOR;
}

/** Parse and validate the 64-byte header (more bytes are ignored). */
export function parseHeader(bytes: Uint8Array, ctx: CodecContext = {}): ParallelsHeader {
  if (!isParallels(bytes)) throw bad("invalid-format", "not a Parallels image (no WithoutFreeSpace / WithouFreSpacExt signature)", ctx, 0);
  if (bytes.length < HEADER_SIZE) throw bad("corrupt", `truncated Parallels header: ${bytes.length} bytes`, ctx, 0);
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  const form: ParallelsForm = String.fromCharCode(...bytes.subarray(0, 16)) === SIGNATURE_EXT ? "ext" : "legacy";
  const version = v.getUint32(16, true);
  if (version !== PARALLELS_VERSION) throw bad("invalid-format", `Parallels version ${version}, only 2 is known`, ctx, 16);
  const lo = v.getUint32(36, true);
  const hi = v.getUint32(40, true);
  // The legacy form has a 32-bit sector count; the high word may hold garbage there.
  const sectors = form === "legacy" ? lo : hi * 2 ** 32 + lo;
  const h: ParallelsHeader = {
    form,
    heads: v.getUint32(20, true),
    cylinders: v.getUint32(24, true),
    tracks: v.getUint32(28, true),
    batEntries: v.getUint32(32, true),
    sectors,
    inUse: v.getUint32(44, true),
    dataOffsetSectors: v.getUint32(48, true),
    flags: v.getUint32(52, true),
    extOffset: Number(v.getBigUint64(56, true)),
  };
  validateHeader(h, ctx);
  return h;
}

/** Field checks that need no file: cluster size, table size, sizes that agree with each other. */
export function validateHeader(h: ParallelsHeader, ctx: CodecContext = {}): void {
  if (h.tracks === 0) throw bad("corrupt", "Parallels header has a cluster of 0 sectors", ctx, 28);
  if (clusterSize(h) > MAX_CLUSTER_SIZE) throw bad("unsupported", `Parallels cluster of ${clusterSize(h)} bytes is larger than ${MAX_CLUSTER_SIZE}`, ctx, 28);
  if (h.sectors * SECTOR > MAX_SIZE) throw bad("unsupported", `Parallels image of ${h.sectors} sectors is too large`, ctx, 36);
  if (h.batEntries > MAX_BAT_ENTRIES) throw bad("unsupported", `Parallels BAT of ${h.batEntries} entries is too large`, ctx, 32);
  const need = Math.ceil(h.sectors / h.tracks);
  if (h.batEntries < need) {
    throw bad("corrupt", `Parallels BAT has ${h.batEntries} entries, but ${h.sectors} sectors need ${need}`, ctx, 32);
  }
  if (h.dataOffsetSectors !== 0 && h.dataOffsetSectors * SECTOR < HEADER_SIZE + 4 * h.batEntries) {
    throw bad("corrupt", `Parallels data area (sector ${h.dataOffsetSectors}) overlaps the BAT (${h.batEntries} entries)`, ctx, 48);
  }
}

export function serializeHeader(h: ParallelsHeader): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const sig = h.form === "ext" ? SIGNATURE_EXT : SIGNATURE_LEGACY;
  for (let i = 0; i < 16; i++) out[i] = sig.charCodeAt(i);
  const v = new DataView(out.buffer);
  v.setUint32(16, PARALLELS_VERSION, true);
  v.setUint32(20, h.heads, true);
  v.setUint32(24, h.cylinders, true);
  v.setUint32(28, h.tracks, true);
  v.setUint32(32, h.batEntries, true);
  v.setUint32(36, h.sectors % 2 ** 32, true);
  v.setUint32(40, h.form === "ext" ? Math.floor(h.sectors / 2 ** 32) : 0, true);
  v.setUint32(44, h.inUse, true);
  v.setUint32(48, h.dataOffsetSectors, true);
  v.setUint32(52, h.flags, true);
  v.setBigUint64(56, BigInt(h.extOffset), true);
  return out;
}

export interface NewHeaderOptions {
  size: number;
  clusterSize?: number;
  form?: ParallelsForm;
}

/** A header for a new image: data area aligned to a cluster, geometry 16 heads x 32 sectors as qemu writes. */
export function newHeader(o: NewHeaderOptions, ctx: CodecContext = {}): ParallelsHeader {
  const cs = o.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  if (!Number.isSafeInteger(o.size) || o.size <= 0 || o.size % SECTOR) throw bad("unsupported", `size ${o.size} is not a positive multiple of 512`, ctx);
  if (!Number.isSafeInteger(cs) || cs < SECTOR || cs % SECTOR || cs > MAX_CLUSTER_SIZE) {
    throw bad("unsupported", `cluster size ${cs} is not a multiple of 512 up to ${MAX_CLUSTER_SIZE}`, ctx);
  }
  const form = o.form ?? "legacy";
  const sectors = o.size / SECTOR;
  if (form === "legacy" && sectors >= 2 ** 32) throw bad("unsupported", "the legacy Parallels form holds at most 2^32-1 sectors", ctx);
  const tracks = cs / SECTOR;
  const batEntries = Math.ceil(sectors / tracks);
  const h: ParallelsHeader = {
    form,
    heads: 16,
    cylinders: Math.min(0xffffffff, Math.ceil(sectors / (16 * 32))),
    tracks,
    batEntries,
    sectors,
    inUse: 0,
    dataOffsetSectors: Math.ceil((HEADER_SIZE + 4 * batEntries) / cs) * tracks,
    flags: 0,
    extOffset: 0,
  };
  validateHeader(h, ctx);
  if (form === "legacy" && dataOffset(h) + batEntries * cs > 0xffffffff * SECTOR) {
    throw bad("unsupported", "image too large for the legacy Parallels form (sector offsets are 32-bit)", ctx);
  }
  return h;
}

/**
 * Parse the BAT (4 * batEntries bytes at offset 64) and validate it: every allocated cluster
 * starts in the data area and inside the file, and no two entries share a cluster.
 * Returns byte offsets (0 = not allocated).
 */
export function parseBat(bytes: Uint8Array, h: ParallelsHeader, fileSize: number, ctx: CodecContext = {}): Float64Array {
  if (bytes.length < 4 * h.batEntries) throw bad("corrupt", `truncated Parallels BAT: ${bytes.length} bytes, need ${4 * h.batEntries}`, ctx, HEADER_SIZE);
  const v = new DataView(bytes.buffer, bytes.byteOffset, 4 * h.batEntries);
  const unit = batUnit(h);
  const cs = clusterSize(h);
  const start = dataOffset(h);
  const out = new Float64Array(h.batEntries);
  const seen = new Map<number, number>();
  for (let i = 0; i < h.batEntries; i++) {
    const e = v.getUint32(4 * i, true);
    if (e === 0) continue;
    const pos = e * unit;
    const at = HEADER_SIZE + 4 * i;
    if (pos < start) throw bad("corrupt", `Parallels BAT entry ${i} points at ${pos}, inside the header and BAT (data starts at ${start})`, ctx, at);
    if (pos >= fileSize) throw bad("corrupt", `Parallels BAT entry ${i} points at ${pos}, past the end of the file (${fileSize})`, ctx, at);
    // Clusters are placed at multiples of the cluster size from the data area (legacy) or from 0 (ext); a misplaced one may overlap another.
    const key = Math.floor((pos - (h.form === "ext" ? 0 : start)) / cs);
    const exact = (pos - (h.form === "ext" ? 0 : start)) % cs === 0;
    const other = seen.get(key);
    if (other !== undefined || (!exact && seen.has(key + 1))) {
      throw bad("corrupt", `Parallels BAT entries ${other ?? "?"} and ${i} overlap at ${pos}`, ctx, at);
    }
    seen.set(key, i);
    if (!exact) seen.set(key + 1, i);
    out[i] = pos;
  }
  return out;
}

/** BAT entry value for a cluster at byte offset `pos`. */
export function batValue(h: ParallelsHeader, pos: number): number {
  return pos / batUnit(h);
}
