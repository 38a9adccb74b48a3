/**
 * qcow2 header, header extensions and backing file name (versions 2 and 3). Pure codec: the
 * header cluster's bytes in, a validated structure out, and back. No I/O. All big-endian.
 *
 *   0   4  magic "QFI\xfb"            4   4  version (2 or 3)
 *   8   8  backing file name offset   16  4  its length (at most 1023)
 *   20  4  cluster bits (9..21)       24  8  virtual size in bytes
 *   32  4  encryption method (0)      36  4  L1 entries
 *   40  8  L1 table offset            48  8  refcount table offset
 *   56  4  refcount table clusters    60  4  internal snapshots
 *   64  8  snapshot table offset
 * Version 3 adds: 72 incompatible, 80 compatible, 88 autoclear features (8 each), 96 refcount
 * order (refcounts are 2^order bits; version 2: always 16 bits), 100 header length, 104 the
 * compression type (if the header is longer than 104 bytes).
 * Extensions follow the header (at 72 in version 2): type u32, length u32, data padded to 8
 * bytes, until type 0. The backing file name usually follows them in the same cluster.
 */
import { MediumError } from "../../block.js";
import { decodeCString, encodeUtf8 } from "../text-codec.js";

export const QCOW2_MAGIC = 0x514649fb;
export const V2_HEADER_LENGTH = 72;
/** What qemu writes for version 3: up to the compression type, padded to 8 bytes. */
export const V3_HEADER_LENGTH = 112;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const DEFAULT_CLUSTER_SIZE = 64 * 1024;
/** qemu's limits: an L1 table of 32 MiB, a refcount table of 8 MiB, a backing name of 1023 bytes. */
export const MAX_L1_BYTES = 32 << 20;
export const MAX_REFTABLE_BYTES = 8 << 20;
export const MAX_BACKING_NAME = 1023;
/** Virtual sizes up to 2^52 bytes keep every offset exact in a JS number. */
export const MAX_SIZE = 2 ** 52;

export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;

/** Incompatible feature bits. */
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTENDED_L2 = 1n << 4n;
const KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;
const INCOMPAT_NAMES: Record<number, string> = { 2: "external data file", 4: "extended L2 entries" };

export interface Qcow2Extension {
  type: number;
  data: Uint8Array;
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** From the backing file name field; null for a base image. */
  backingFile: string | null;
  /** From the backing format extension ("qcow2", "raw", ...); null when absent. */
  backingFormat: string | null;
  /** Extensions other than the backing format, kept as found (feature table, bitmaps, ...). */
  extensions: Qcow2Extension[];
}

export interface CodecContext {
  path?: string;
}

function err(kind: "invalid-format" | "corrupt" | "unsupported", msg: string, ctx: CodecContext, offset?: number): MediumError {
  return new MediumError(kind, msg, { path: ctx.path, offset });
}

/** True when `bytes` starts with the qcow2 magic "QFI\xfb" (any version). */
export function isQcow2(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x51 && bytes[1] === 0x46 && bytes[2] === 0x49 && bytes[3] === 0xfb;
}

export function clusterSize(h: Pick<Qcow2Header, "clusterBits">): number {
  return 2 ** h.clusterBits;
}

/** L1 entries needed to map `size` bytes with this cluster size (an L2 table fills one cluster). */
export function l1EntriesFor(size: number, clusterBits: number): number {
  const perL2 = 2 ** (clusterBits - 3);
  return Math.ceil(size / (perL2 * 2 ** clusterBits));
}

/** Minimum bytes to read before parseHeader can tell how much more it needs (the cluster size). */
export const HEADER_PROBE = 24;

function u64(v: DataView, at: number): number {
  return v.getUint32(at) * 2 ** 32 + v.getUint32(at + 4);
}

const ascii = (b: Uint8Array): string => String.fromCharCode(...b);

/**
 * Parse the header cluster (or as much of it as the file has). Validates fields that need no
 * other part of the file; refuses encryption, unknown incompatible features (named from the
 * image's feature table when it has one), external data files, extended L2 entries and
 * compression other than zlib.
 */
export function parseHeader(bytes: Uint8Array, ctx: CodecContext = {}): Qcow2Header {
  if (!isQcow2(bytes)) throw err("invalid-format", "not a qcow2 image (no QFI\\xfb magic)", ctx, 0);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const version = bytes.length >= 8 ? v.getUint32(4) : 0;
  if (version !== 2 && version !== 3) throw err("invalid-format", `qcow2 version ${version}, only 2 and 3 are known`, ctx, 4);
  if (bytes.length < V2_HEADER_LENGTH) throw err("corrupt", `truncated qcow2 header: ${bytes.length} bytes`, ctx, 0);
  const clusterBits = v.getUint32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw err("unsupported", `qcow2 cluster bits ${clusterBits}: only 512 bytes to 2 MiB clusters are supported`, ctx, 20);
  }
  const cs = 2 ** clusterBits;
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(v, 8),
    backingFileSize: v.getUint32(16),
    clusterBits,
    size: u64(v, 24),
    cryptMethod: v.getUint32(32),
    l1Size: v.getUint32(36),
    l1TableOffset: u64(v, 40),
    refcountTableOffset: u64(v, 48),
    refcountTableClusters: v.getUint32(56),
    nbSnapshots: v.getUint32(60),
    snapshotsOffset: u64(v, 64),
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: 4,
    headerLength: V2_HEADER_LENGTH,
    compressionType: 0,
    backingFile: null,
    backingFormat: null,
    extensions: [],
  };
  if (version === 3) {
    if (bytes.length < 104) throw err("corrupt", `truncated qcow2 v3 header: ${bytes.length} bytes`, ctx, 0);
    h.incompatible = v.getBigUint64(72);
    h.compatible = v.getBigUint64(80);
    h.autoclear = v.getBigUint64(88);
    h.refcountOrder = v.getUint32(96);
    h.headerLength = v.getUint32(100);
    if (h.headerLength < 104 || h.headerLength > cs || h.headerLength % 8 !== 0) {
      throw err("corrupt", `qcow2 header length ${h.headerLength} is not a multiple of 8 between 104 and the cluster size`, ctx, 100);
    }
    if (h.headerLength > bytes.length) throw err("corrupt", "qcow2 header is cut short by the end of the file", ctx, 0);
    if (h.headerLength > 104) h.compressionType = v.getUint8(104);
  }
  if (h.refcountOrder > 6) throw err("corrupt", `qcow2 refcount order ${h.refcountOrder} is above 6 (64-bit refcounts)`, ctx, 96);
  if (h.size > MAX_SIZE) throw err("unsupported", `qcow2 virtual size ${h.size} is too large`, ctx, 24);
  if (h.size % 512 !== 0) throw err("unsupported", `qcow2 virtual size ${h.size} is not a multiple of 512`, ctx, 24);
  if (h.cryptMethod !== 0) throw err("unsupported", `encrypted qcow2 images (method ${h.cryptMethod}) are not supported`, ctx, 32);
  parseExtensions(bytes, h, ctx);
  checkFeatures(h, ctx);
  const need = l1EntriesFor(h.size, clusterBits);
  if (h.l1Size < need) throw err("corrupt", `qcow2 L1 table has ${h.l1Size} entries, the size needs ${need}`, ctx, 36);
  if (h.l1Size * 8 > MAX_L1_BYTES) throw err("unsupported", `qcow2 L1 table of ${h.l1Size} entries is too large`, ctx, 36);
  if (h.refcountTableClusters === 0) throw err("corrupt", "qcow2 refcount table has no clusters", ctx, 56);
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) {
    throw err("unsupported", `qcow2 refcount table of ${h.refcountTableClusters} clusters is too large`, ctx, 56);
  }
  for (const [name, value, at] of [
    ["L1 table", h.l1TableOffset, 40],
    ["refcount table", h.refcountTableOffset, 48],
    ["snapshot table", h.nbSnapshots ? h.snapshotsOffset : 0, 64],
  ] as const) {
    if (value % cs !== 0) throw err("corrupt", `qcow2 ${name} offset ${value} is not cluster-aligned`, ctx, at);
    if (value > Number.MAX_SAFE_INTEGER) throw err("corrupt", `qcow2 ${name} offset ${value} is absurd`, ctx, at);
  }
  if (h.l1TableOffset === 0 && h.l1Size > 0) throw err("corrupt", "qcow2 L1 table overlaps the header", ctx, 40);
  if (h.refcountTableOffset === 0) throw err("corrupt", "qcow2 refcount table overlaps the header", ctx, 48);
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > MAX_BACKING_NAME || h.backingFileOffset + h.backingFileSize > cs) {
      throw err("corrupt", `qcow2 backing file name (${h.backingFileSize} bytes at ${h.backingFileOffset}) does not fit the header cluster`, ctx, 8);
    }
    if (h.backingFileOffset + h.backingFileSize > bytes.length) throw err("corrupt", "qcow2 backing file name is cut short by the end of the file", ctx, 8);
    h.backingFile = decodeCString(bytes.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize));
  }
  return h;
}

function parseExtensions(bytes: Uint8Array, h: Qcow2Header, ctx: CodecContext): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const limit = Math.min(bytes.length, clusterSize(h));
  for (let at = h.headerLength; ; ) {
    if (at + 8 > limit) {
      // qemu tolerates a header cluster without an end marker only when nothing is left to read.
      if (at >= limit) return;
      throw err("corrupt", `qcow2 header extension at ${at} is cut short`, ctx, at);
    }
    const type = v.getUint32(at);
    const length = v.getUint32(at + 4);
    if (type === EXT_END) return;
    const end = at + 8 + length;
    if (end > limit) throw err("corrupt", `qcow2 header extension 0x${type.toString(16)} at ${at} runs past the header cluster`, ctx, at);
    const data = bytes.slice(at + 8, end);
    if (type === EXT_BACKING_FORMAT) h.backingFormat = ascii(data).replace(/\0.*$/s, "");
    else h.extensions.push({ type, data });
    at = at + 8 + Math.ceil(length / 8) * 8;
  }
}

/** Names of feature bits from the image's own feature name table ("incompatible:5" -> name). */
export function featureNames(h: Qcow2Header): Map<string, string> {
  const names = new Map<string, string>();
  const kinds = ["incompatible", "compatible", "autoclear"];
  for (const e of h.extensions) {
    if (e.type !== EXT_FEATURE_TABLE) continue;
    for (let i = 0; i + 48 <= e.data.length; i += 48) {
      const kind = kinds[e.data[i]!];
      if (kind) names.set(`${kind}:${e.data[i + 1]}`, ascii(e.data.subarray(i + 2, i + 48)).replace(/\0.*$/s, ""));
    }
  }
  return names;
}

function checkFeatures(h: Qcow2Header, ctx: CodecContext): void {
  const unknown = h.incompatible & ~KNOWN_INCOMPAT;
  if (unknown) {
    const names = featureNames(h);
    const list: string[] = [];
    for (let bit = 0; bit < 64; bit++) {
      if (!(unknown & (1n << BigInt(bit)))) continue;
      list.push(names.get(`incompatible:${bit}`) ?? INCOMPAT_NAMES[bit] ?? `bit ${bit}`);
    }
    throw err("unsupported", `qcow2 image uses incompatible features we do not implement: ${list.join(", ")}`, ctx, 72);
  }
  if (h.compressionType !== 0) {
    throw err("unsupported", `qcow2 compression type ${h.compressionType} (only zlib, 0, is supported)`, ctx, 104);
  }
}

/** Write a big-endian u64 from a safe integer. */
function setU64(v: DataView, at: number, value: number): void {
  v.setUint32(at, Math.floor(value / 2 ** 32));
  v.setUint32(at + 4, value % 2 ** 32);
}

/**
 * The header cluster's bytes: header, extensions (backing format first, then the others as
 * found), end marker, backing file name. Sets backingFileOffset/Size in `h` to where the name
 * lands. Throws "unsupported" if it does not fit in one cluster.
 */
export function serializeHeader(h: Qcow2Header, ctx: CodecContext = {}): Uint8Array {
  const cs = clusterSize(h);
  const parts: Uint8Array[] = [];
  const ext = (type: number, data: Uint8Array): void => {
    const b = new Uint8Array(8 + Math.ceil(data.length / 8) * 8);
    const v = new DataView(b.buffer);
    v.setUint32(0, type);
    v.setUint32(4, data.length);
    b.set(data, 8);
    parts.push(b);
  };
  if (h.backingFormat) ext(EXT_BACKING_FORMAT, encodeUtf8(h.backingFormat));
  for (const e of h.extensions) ext(e.type, e.data);
  parts.push(new Uint8Array(8)); // end marker
  const name = h.backingFile === null ? new Uint8Array(0) : encodeUtf8(h.backingFile);
  if (name.length > MAX_BACKING_NAME) throw err("unsupported", `backing file name of ${name.length} bytes is longer than ${MAX_BACKING_NAME}`, ctx);
  const headerLength = h.version === 3 ? h.headerLength : V2_HEADER_LENGTH;
  const extLength = parts.reduce((n, p) => n + p.length, 0);
  const total = headerLength + extLength + name.length;
  if (total > cs) throw err("unsupported", `qcow2 header, extensions and backing name (${total} bytes) do not fit a ${cs}-byte cluster`, ctx);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  h.backingFileOffset = name.length ? headerLength + extLength : 0;
  h.backingFileSize = name.length;
  v.setUint32(0, QCOW2_MAGIC);
  v.setUint32(4, h.version);
  setU64(v, 8, h.backingFileOffset);
  v.setUint32(16, h.backingFileSize);
  v.setUint32(20, h.clusterBits);
  setU64(v, 24, h.size);
  v.setUint32(32, h.cryptMethod);
  v.setUint32(36, h.l1Size);
  setU64(v, 40, h.l1TableOffset);
  setU64(v, 48, h.refcountTableOffset);
  v.setUint32(56, h.refcountTableClusters);
  v.setUint32(60, h.nbSnapshots);
  setU64(v, 64, h.snapshotsOffset);
  if (h.version === 3) {
    v.setBigUint64(72, h.incompatible);
    v.setBigUint64(80, h.compatible);
    v.setBigUint64(88, h.autoclear);
    v.setUint32(96, h.refcountOrder);
    v.setUint32(100, headerLength);
    if (headerLength > 104) v.setUint8(104, h.compressionType);
  }
  let at = headerLength;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  out.set(name, at);
  return out;
}

export interface NewHeaderOptions {
  size: number;
  clusterSize?: number;
  version?: 2 | 3;
  backingFile?: string;
  backingFormat?: string;
}

/** The L1 entries a virtual size needs, refusing sizes qcow2 cannot have (new images and resize). */
export function checkedL1Entries(size: number, clusterBits: number, ctx: CodecContext = {}): number {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 || size > MAX_SIZE) {
    throw err("unsupported", `size ${size} is not a positive multiple of 512 up to 2^52`, ctx);
  }
  const l1Size = l1EntriesFor(size, clusterBits);
  if (l1Size * 8 > MAX_L1_BYTES) throw err("unsupported", `size ${size} needs an L1 table larger than 32 MiB at ${2 ** clusterBits}-byte clusters`, ctx);
  return l1Size;
}

/** A header for a new image; table offsets are filled in by the creator. */
export function newHeader(o: NewHeaderOptions, ctx: CodecContext = {}): Qcow2Header {
  const cs = o.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const clusterBits = Math.log2(cs);
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw err("unsupported", `qcow2 cluster size ${cs} is not a power of two from 512 to 2 MiB`, ctx);
  }
  const l1Size = checkedL1Entries(o.size, clusterBits, ctx);
  const version = o.version ?? 3;
  return {
    version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits,
    size: o.size,
    cryptMethod: 0,
    l1Size,
    l1TableOffset: 0,
    refcountTableOffset: 0,
    refcountTableClusters: 0,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: 4,
    headerLength: version === 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH,
    compressionType: 0,
    backingFile: o.backingFile ?? null,
    backingFormat: o.backingFile ? (o.backingFormat ?? null) : null,
    extensions: [],
  };
}
