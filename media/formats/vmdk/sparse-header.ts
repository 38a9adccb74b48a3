/**
 * The hosted sparse extent header ("KDMV", 512 bytes, little-endian) and the stream markers of
 * streamOptimized files. Pure codec: bytes in, validated structures out, and back.
 */
import { MediumError } from "../../block.js";
import type { CodecContext } from "./descriptor.js";

export const SECTOR = 512;
/** "KDMV" read as a little-endian u32. */
export const SPARSE_MAGIC = 0x564d444b;
/** gdOffset of a stream whose real header is the footer near the end of the file. */
export const GD_AT_END = -1;

export const FLAG_NL_TEST = 1 << 0;
export const FLAG_RGD = 1 << 1;
/** GTE = 1 means a grain of zeros (hides the parent). */
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_COMPRESSED = 1 << 16;
export const FLAG_MARKERS = 1 << 17;

export const COMPRESS_NONE = 0;
export const COMPRESS_DEFLATE = 1;

/** Stream marker types (the u32 after a zero size field). */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;

/** Largest grain we accept: 1 MiB in sectors (VMware and qemu write 64 KiB). */
const MAX_GRAIN_SECTORS = 2048;
/** Largest virtual size we accept: 64 TiB (VirtualBox's VMDK limit is lower; guards absurd headers). */
export const MAX_CAPACITY_SECTORS = 2 ** 37;

export interface SparseHeader {
  version: number;
  flags: number;
  /** Sectors. */
  capacity: number;
  /** Sectors per grain. */
  grainSize: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  rgdOffset: number;
  /** Sectors, or GD_AT_END. */
  gdOffset: number;
  overHead: number;
  uncleanShutdown: boolean;
  compressAlgorithm: number;
}

function u64(v: DataView, at: number, name: string, ctx: CodecContext, allowAllOnes = false): number {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  if (allowAllOnes && lo === 0xffffffff && hi === 0xffffffff) return GD_AT_END;
  const n = hi * 2 ** 32 + lo;
  if (!Number.isSafeInteger(n) || n * SECTOR > Number.MAX_SAFE_INTEGER) {
    throw new MediumError("corrupt", `VMDK header ${name} ${hi.toString(16)}${lo.toString(16).padStart(8, "0")} is out of range`, { path: ctx.path, offset: at });
  }
  return n;
}

function setU64(v: DataView, at: number, n: number): void {
  if (n === GD_AT_END) {
    v.setUint32(at, 0xffffffff, true);
    v.setUint32(at + 4, 0xffffffff, true);
    return;
  }
  v.setUint32(at, n % 2 ** 32, true);
  v.setUint32(at + 4, Math.floor(n / 2 ** 32), true);
}

export function hasSparseMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x4b && bytes[1] === 0x44 && bytes[2] === 0x4d && bytes[3] === 0x56;
}

/** Parse and check the fields on their own (file-size checks are the extent's job). */
export function parseSparseHeader(bytes: Uint8Array, ctx: CodecContext = {}): SparseHeader {
  if (bytes.length < SECTOR) throw new MediumError("corrupt", `VMDK sparse header cut short (${bytes.length} bytes)`, { path: ctx.path });
  if (!hasSparseMagic(bytes)) throw new MediumError("invalid-format", "not a VMDK sparse extent (no KDMV signature)", { path: ctx.path });
  const v = new DataView(bytes.buffer, bytes.byteOffset, SECTOR);
  const h: SparseHeader = {
    version: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    capacity: u64(v, 12, "capacity", ctx),
    grainSize: u64(v, 20, "grainSize", ctx),
    descriptorOffset: u64(v, 28, "descriptorOffset", ctx),
    descriptorSize: u64(v, 36, "descriptorSize", ctx),
    numGTEsPerGT: v.getUint32(44, true),
    rgdOffset: u64(v, 48, "rgdOffset", ctx),
    gdOffset: u64(v, 56, "gdOffset", ctx, true),
    overHead: u64(v, 64, "overHead", ctx),
    uncleanShutdown: bytes[72] !== 0,
    compressAlgorithm: v.getUint16(77, true),
  };
  if (h.version < 1 || h.version > 3) throw new MediumError("unsupported", `VMDK sparse extent version ${h.version} is not supported`, { path: ctx.path });
  if (h.flags & FLAG_NL_TEST && !(bytes[73] === 0x0a && bytes[74] === 0x20 && bytes[75] === 0x0d && bytes[76] === 0x0a)) {
    // The file went through a text-mode transfer that rewrote line ends.
    throw new MediumError("corrupt", "VMDK header newline check failed (the file was converted as text)", { path: ctx.path, offset: 73 });
  }
  if (h.grainSize < 1 || h.grainSize > MAX_GRAIN_SECTORS || (h.grainSize & (h.grainSize - 1)) !== 0) {
    throw new MediumError("corrupt", `VMDK grain size ${h.grainSize} sectors is not a power of two up to ${MAX_GRAIN_SECTORS}`, { path: ctx.path, offset: 20 });
  }
  if (h.numGTEsPerGT !== 512) throw new MediumError("unsupported", `VMDK grain tables of ${h.numGTEsPerGT} entries are not supported (512 expected)`, { path: ctx.path, offset: 44 });
  if (h.capacity > MAX_CAPACITY_SECTORS) throw new MediumError("corrupt", `VMDK capacity ${h.capacity} sectors is absurd`, { path: ctx.path, offset: 12 });
  if (h.flags & FLAG_COMPRESSED && h.compressAlgorithm !== COMPRESS_DEFLATE) {
    throw new MediumError("unsupported", `VMDK compression algorithm ${h.compressAlgorithm} is not supported`, { path: ctx.path, offset: 77 });
  }
  if (h.descriptorSize > 20480) throw new MediumError("corrupt", `VMDK embedded descriptor of ${h.descriptorSize} sectors is too large`, { path: ctx.path, offset: 36 });
  return h;
}

export function serializeSparseHeader(h: SparseHeader): Uint8Array {
  const out = new Uint8Array(SECTOR);
  const v = new DataView(out.buffer);
  v.setUint32(0, SPARSE_MAGIC, true);
  v.setUint32(4, h.version, true);
  v.setUint32(8, h.flags, true);
  setU64(v, 12, h.capacity);
  setU64(v, 20, h.grainSize);
  setU64(v, 28, h.descriptorOffset);
  setU64(v, 36, h.descriptorSize);
  v.setUint32(44, h.numGTEsPerGT, true);
  setU64(v, 48, h.rgdOffset);
  setU64(v, 56, h.gdOffset);
  setU64(v, 64, h.overHead);
  out[72] = h.uncleanShutdown ? 1 : 0;
  out.set([0x0a, 0x20, 0x0d, 0x0a], 73);
  v.setUint16(77, h.compressAlgorithm, true);
  return out;
}

/** Grain tables needed to cover the extent, and sectors of a grain directory holding them. */
export function sparseGeometry(h: Pick<SparseHeader, "capacity" | "grainSize" | "numGTEsPerGT">): { grains: number; gtCount: number; gdSectors: number; gtSectors: number } {
  const grains = Math.ceil(h.capacity / h.grainSize);
  const gtCount = Math.ceil(grains / h.numGTEsPerGT);
  return { grains, gtCount, gdSectors: Math.ceil((gtCount * 4) / SECTOR), gtSectors: Math.ceil((h.numGTEsPerGT * 4) / SECTOR) };
}

/**
 * Header of a new sparse extent with the layout qemu and VirtualBox use: embedded descriptor
 * (monolithic only), redundant GD and its tables, GD and its tables, all tables preallocated, then
 * grains from the next grain boundary.
 */
export function newSparseLayout(capacity: number, options: { descriptorSectors: number; zeroedGrains?: boolean; grainSize?: number }): SparseHeader {
  const grainSize = options.grainSize ?? 128;
  const base = { capacity, grainSize, numGTEsPerGT: 512 };
  const g = sparseGeometry(base);
  const descriptorOffset = options.descriptorSectors > 0 ? 1 : 0;
  const rgdOffset = 1 + options.descriptorSectors;
  const gdOffset = rgdOffset + g.gdSectors + g.gtCount * g.gtSectors;
  const end = gdOffset + g.gdSectors + g.gtCount * g.gtSectors;
  return {
    ...base,
    version: options.zeroedGrains ? 2 : 1,
    flags: FLAG_NL_TEST | FLAG_RGD | (options.zeroedGrains ? FLAG_ZERO_GRAIN : 0),
    descriptorOffset,
    descriptorSize: options.descriptorSectors,
    rgdOffset,
    gdOffset,
    overHead: Math.ceil(end / grainSize) * grainSize,
    uncleanShutdown: false,
    compressAlgorithm: COMPRESS_NONE,
  };
}

/** A stream marker sector: {value, size=0, type}; value is the sector count of GT/GD, 0 otherwise. */
export function serializeMarker(type: number, value: number): Uint8Array {
  const out = new Uint8Array(SECTOR);
  const v = new DataView(out.buffer);
  setU64(v, 0, value);
  v.setUint32(12, type, true);
  return out;
}
