/**
 * The VHD footer (Microsoft "Virtual Hard Disk Image Format Specification"; VirtualBox VHD.cpp,
 * QEMU block/vpc.c): 512 bytes, big-endian, at the end of every VHD file, with a copy at offset 0
 * in dynamic and differencing images. Pure codec plus the two rules that go with it: the
 * checksum and the CHS geometry the spec derives from the size. No I/O.
 *
 *   0  8 cookie "conectix"        8  4 features (2: the reserved bit, always set)
 *  12  4 version 0x00010000      16  8 data offset (dynamic header; all ones for fixed)
 *  24  4 timestamp (seconds since 2000-01-01 UTC)      28 4 creator application ("vbox")
 *  32  4 creator version         36  4 creator OS ("Wi2k")
 *  40  8 original size           48  8 current size (the virtual size VirtualBox presents)
 *  56  4 geometry: cylinders u16, heads u8, sectors per track u8
 *  60  4 disk type (2 fixed, 3 dynamic, 4 differencing)          64 4 checksum
 *  68 16 unique id (VirtualBox writes its RTUUID bytes, GUID layout)  84 1 saved state
 */
import { MediumError } from "../../block.js";
import { uuidFromGuidBytes, uuidToGuidBytes } from "../uuid.js";

export const FOOTER_SIZE = 512;
export const SECTOR_SIZE = 512;
export const FOOTER_COOKIE = "conectix";
export const VHD_VERSION = 0x00010000;
/** Data offset of a fixed image: there is no dynamic header. */
export const DATA_OFFSET_NONE = 0xffffffffffffffffn;
/** Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC). */
export const VHD_EPOCH_UNIX = 946684800;
/** The features field: bit 1 is reserved and always set. */
export const FEATURES_RESERVED = 2;
/** What we write as creator: the same as VirtualBox. */
export const CREATOR_APP = "vbox";
/** VirtualBox 7.0, as VirtualBox packs its version (major << 24 | minor << 16 | build). */
export const CREATOR_VERSION = 0x07000000;
export const CREATOR_OS_WINDOWS = 0x5769326b; // "Wi2k"
/** VirtualBox's limit: sector numbers in the BAT are 32 bits. */
export const MAX_VHD_SIZE = 2 * 1024 * 1024 * 1024 * 1024;

export const VhdDiskType = { fixed: 2, dynamic: 3, differencing: 4 } as const;
export type VhdDiskType = (typeof VhdDiskType)[keyof typeof VhdDiskType];

export interface ChsGeometry {
  cylinders: number;
  heads: number;
  sectors: number;
}

export interface VhdFooter {
  features: number;
  version: number;
  /** File offset of the dynamic header; null for "none" (fixed images). */
  dataOffset: number | null;
  /** Seconds since the VHD epoch. */
  timestamp: number;
  /** Four characters, e.g. "vbox", "qemu", "win ". */
  creatorApp: string;
  creatorVersion: number;
  creatorOs: number;
  originalSize: number;
  currentSize: number;
  geometry: ChsGeometry;
  diskType: number;
  /** As stored (checked by parseFooter; recomputed by serializeFooter). */
  checksum: number;
  uuid: string;
  savedState: number;
}

export interface CodecContext {
  path?: string;
  /** File offset of the structure, for error messages. */
  offset?: number;
}

const O = {
  cookie: 0,
  features: 8,
  version: 12,
  dataOffset: 16,
  timestamp: 24,
  creatorApp: 28,
  creatorVersion: 32,
  creatorOs: 36,
  originalSize: 40,
  currentSize: 48,
  cylinders: 56,
  heads: 58,
  sectors: 59,
  diskType: 60,
  checksum: 64,
  uuid: 68,
  savedState: 84,
} as const;

/** One's complement of the byte sum with the 4 checksum bytes at `at` counted as zero. */
export function vhdChecksum(bytes: Uint8Array, at: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) if (i < at || i >= at + 4) sum += bytes[i]!;
  return ~sum >>> 0;
}

export function ascii(bytes: Uint8Array, at: number, length: number): string {
  let s = "";
  for (let i = 0; i < length; i++) s += String.fromCharCode(bytes[at + i]!);
  return s;
}

export function putAscii(out: Uint8Array, at: number, text: string, length: number): void {
  for (let i = 0; i < length; i++) out[at + i] = i < text.length ? text.charCodeAt(i) & 0xff : 0;
}

/** A u64 that must be a safe integer (file offsets, sizes); "all ones" becomes null. */
export function readOffset(v: DataView, at: number): number | null | "huge" {
  const big = v.getBigUint64(at);
  if (big === DATA_OFFSET_NONE) return null;
  return big > BigInt(Number.MAX_SAFE_INTEGER) ? "huge" : Number(big);
}

/** Whether `bytes` (at least 8 long at `at`) start with the footer cookie. */
export function hasFooterCookie(bytes: Uint8Array, at = 0): boolean {
  return bytes.length >= at + 8 && ascii(bytes, at, 8) === FOOTER_COOKIE;
}

/**
 * Parse and validate 512 footer bytes. Kinds: invalid-format (no cookie), corrupt (checksum,
 * sizes that cannot be), unsupported (another version, an unknown disk type, too large).
 */
export function parseFooter(bytes: Uint8Array, ctx: CodecContext = {}): VhdFooter {
  const err = (kind: "invalid-format" | "corrupt" | "unsupported", msg: string): never => {
    throw new MediumError(kind, msg, { path: ctx.path, offset: ctx.offset });
  };
  if (bytes.length < FOOTER_SIZE) err("invalid-format", `too small for a VHD footer (${bytes.length} bytes)`);
  if (!hasFooterCookie(bytes)) err("invalid-format", `no VHD footer: the cookie is not "conectix"`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, FOOTER_SIZE);
  const stored = v.getUint32(O.checksum);
  const computed = vhdChecksum(bytes.subarray(0, FOOTER_SIZE), O.checksum);
  if (stored !== computed) err("corrupt", `VHD footer checksum is 0x${stored.toString(16)}, expected 0x${computed.toString(16)}`);
  const version = v.getUint32(O.version);
  if (version >>> 16 !== 1) err("unsupported", `VHD footer version 0x${version.toString(16)} (only 1.x is known)`);
  const diskType = v.getUint32(O.diskType);
  if (diskType !== VhdDiskType.fixed && diskType !== VhdDiskType.dynamic && diskType !== VhdDiskType.differencing) {
    err("unsupported", `VHD disk type ${diskType} (only fixed 2, dynamic 3 and differencing 4 exist)`);
  }
  const dataOffset = readOffset(v, O.dataOffset);
  if (dataOffset === "huge") err("corrupt", `VHD data offset 0x${v.getBigUint64(O.dataOffset).toString(16)} is beyond any file`);
  const size = (at: number, name: string): number => {
    const big = v.getBigUint64(at);
    if (big > BigInt(MAX_VHD_SIZE)) err("unsupported", `VHD ${name} ${big} is larger than 2 TiB`);
    return Number(big);
  };
  const currentSize = size(O.currentSize, "current size");
  // Informational only (what the disk was created with); kept as found where it fits.
  const originalSize = Number(v.getBigUint64(O.originalSize) & 0x1fffffffffffffn);
  if (diskType !== VhdDiskType.fixed && dataOffset === null) err("corrupt", "dynamic VHD footer has no dynamic header offset");
  return {
    features: v.getUint32(O.features),
    version,
    dataOffset: dataOffset as number | null,
    timestamp: v.getUint32(O.timestamp),
    creatorApp: ascii(bytes, O.creatorApp, 4),
    creatorVersion: v.getUint32(O.creatorVersion),
    creatorOs: v.getUint32(O.creatorOs),
    originalSize,
    currentSize,
    geometry: { cylinders: v.getUint16(O.cylinders), heads: bytes[O.heads]!, sectors: bytes[O.sectors]! },
    diskType,
    checksum: stored,
    uuid: uuidFromGuidBytes(bytes, O.uuid),
    savedState: bytes[O.savedState]!,
  };
}

/** The 512 footer bytes, checksum computed. */
export function serializeFooter(f: VhdFooter): Uint8Array {
  const out = new Uint8Array(FOOTER_SIZE);
  const v = new DataView(out.buffer);
  putAscii(out, O.cookie, FOOTER_COOKIE, 8);
  v.setUint32(O.features, f.features);
  v.setUint32(O.version, f.version);
  v.setBigUint64(O.dataOffset, f.dataOffset === null ? DATA_OFFSET_NONE : BigInt(f.dataOffset));
  v.setUint32(O.timestamp, f.timestamp >>> 0);
  putAscii(out, O.creatorApp, f.creatorApp, 4);
  v.setUint32(O.creatorVersion, f.creatorVersion);
  v.setUint32(O.creatorOs, f.creatorOs);
  v.setBigUint64(O.originalSize, BigInt(f.originalSize));
  v.setBigUint64(O.currentSize, BigInt(f.currentSize));
  v.setUint16(O.cylinders, f.geometry.cylinders);
  out[O.heads] = f.geometry.heads;
  out[O.sectors] = f.geometry.sectors;
  v.setUint32(O.diskType, f.diskType);
  uuidToGuidBytes(f.uuid, out, O.uuid);
  out[O.savedState] = f.savedState;
  v.setUint32(O.checksum, vhdChecksum(out, O.checksum));
  return out;
}

/**
 * CHS geometry from the size, by the spec's algorithm (Appendix: CHS calculation), as Virtual
 * PC and VirtualBox compute it: sizes past 65535*16*255 sectors are capped; 17, then 31, then 63
 * sectors per track are tried with at most 16 heads.
 */
export function chsGeometry(size: number): ChsGeometry {
  let total = Math.floor(size / SECTOR_SIZE);
  if (total > 65535 * 16 * 255) total = 65535 * 16 * 255;
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cth + 1023) / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectors: spt };
}

/** Seconds since the VHD epoch for a Unix time in milliseconds (0 before the epoch). */
export function vhdTimestamp(unixMs: number): number {
  return Math.max(0, Math.min(0xffffffff, Math.floor(unixMs / 1000) - VHD_EPOCH_UNIX));
}

/**
 * VHD keeps no modification UUID: the chain's "modification UUID" of a VHD is its footer
 * timestamp written as a UUID (a write session moves the timestamp on), and a child's recorded
 * one is the parent timestamp in its dynamic header. Version nibble 0: never a random UUID.
 */
export function timestampToken(timestamp: number): string {
  return `00000000-0000-0000-0000-0000${(timestamp >>> 0).toString(16).padStart(8, "0")}`;
}

/** The timestamp inside a token made by timestampToken, or null for any other UUID. */
export function tokenTimestamp(token: string): number | null {
  const m = /^00000000-0000-0000-0000-0000([0-9a-f]{8})$/.exec(token);
  return m ? parseInt(m[1]!, 16) : null;
}
