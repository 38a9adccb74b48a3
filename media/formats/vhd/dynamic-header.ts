/**
 * The VHD dynamic disk header: 1024 bytes, big-endian, at the footer's data offset (512 in
 * every image VirtualBox, qemu or Virtual PC writes), followed in practice by the BAT and, in a
 * differencing image, the parent locators' data. Pure codec. No I/O.
 *
 *    0   8 cookie "cxsparse"          8  8 data offset (unused: all ones)
 *   16   8 table offset (the BAT)    24  4 header version 0x00010000
 *   28   4 max table entries         32  4 block size (2 MiB by default)
 *   36   4 checksum                  40 16 parent unique id (the parent footer's)
 *   56   4 parent timestamp          60  4 reserved
 *   64 512 parent unicode name (UTF-16BE, the parent's file name)
 *  576 8x24 parent locators: code, data space, data length, reserved (u32 each), data offset u64
 */
import { MediumError } from "../../block.js";
import { relativePath } from "../paths.js";
import { NULL_UUID, uuidFromGuidBytes, uuidToGuidBytes } from "../uuid.js";
import { SECTOR_SIZE, ascii, putAscii, readOffset, vhdChecksum, type CodecContext } from "./footer.js";

export const HEADER_SIZE = 1024;
export const HEADER_COOKIE = "cxsparse";
export const HEADER_VERSION = 0x00010000;
/** VHD_BLOCK_SIZE in VirtualBox, qemu's default. */
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** Largest block we accept (the spec only says "power of two"); keeps a bitmap sane. */
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
/** Largest BAT we keep in memory: 2^24 entries (64 MiB), 32 TiB at 2 MiB blocks. */
export const MAX_TABLE_ENTRIES = 1 << 24;
export const LOCATOR_COUNT = 8;
const PARENT_NAME_BYTES = 512;

/** Platform codes of parent locators. */
export const LocatorCode = {
  none: 0,
  wi2r: 0x57693272, // relative path, ANSI (deprecated)
  wi2k: 0x5769326b, // absolute path, ANSI (deprecated)
  w2ru: 0x57327275, // relative path, UTF-16LE
  w2ku: 0x57326b75, // absolute path, UTF-16LE
  mac: 0x4d616320,
  macx: 0x4d616358,
} as const;

/** Bytes VirtualBox reserves for each of its two locators (512 UTF-16 units). */
export const LOCATOR_SPACE = 1024;

export interface ParentLocator {
  code: number;
  /** Bytes reserved (VirtualBox, Virtual PC and Hyper-V store bytes, though the spec says sectors). */
  dataSpace: number;
  dataLength: number;
  reserved: number;
  dataOffset: number;
}

export interface VhdDynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  /** The null UUID in a dynamic image. */
  parentUuid: string;
  parentTimestamp: number;
  parentName: string;
  /** Always 8 entries; unused ones have code 0. */
  locators: ParentLocator[];
}

const O = {
  cookie: 0,
  dataOffset: 8,
  tableOffset: 16,
  version: 24,
  maxTableEntries: 28,
  blockSize: 32,
  checksum: 36,
  parentUuid: 40,
  parentTimestamp: 56,
  parentName: 64,
  locators: 576,
} as const;

const isPowerOfTwo = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;

/** Sectors of the bitmap in front of each block: one bit per sector, rounded up to a sector. */
export function bitmapSize(blockSize: number): number {
  return Math.ceil(blockSize / SECTOR_SIZE / 8 / SECTOR_SIZE) * SECTOR_SIZE;
}

/** UTF-16 code units of `text` (as many as fit in `maxBytes`, else null). */
function utf16Units(text: string, maxBytes: number): number[] | null {
  const units: number[] = [];
  for (let i = 0; i < text.length; i++) units.push(text.charCodeAt(i));
  return units.length * 2 > maxBytes ? null : units;
}

export function encodeUtf16(text: string, bigEndian: boolean, maxBytes = Infinity): Uint8Array | null {
  const units = utf16Units(text, maxBytes);
  if (!units) return null;
  const out = new Uint8Array(units.length * 2);
  const v = new DataView(out.buffer);
  units.forEach((u, i) => v.setUint16(2 * i, u, !bigEndian));
  return out;
}

/** Decode UTF-16 up to the first NUL unit (unpaired surrogates kept as they are). */
export function decodeUtf16(bytes: Uint8Array, bigEndian: boolean): string {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let s = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const u = v.getUint16(i, !bigEndian);
    if (u === 0) break;
    s += String.fromCharCode(u);
  }
  return s;
}

/**
 * Parse and validate 1024 header bytes on their own (the file-level checks, such as the BAT
 * being inside the file, are the metadata reader's). Kinds: corrupt (cookie, checksum, block
 * size, table size), unsupported (another version).
 */
export function parseDynamicHeader(bytes: Uint8Array, ctx: CodecContext = {}): VhdDynamicHeader {
  const err = (kind: "corrupt" | "unsupported", msg: string): never => {
    throw new MediumError(kind, msg, { path: ctx.path, offset: ctx.offset });
  };
  if (bytes.length < HEADER_SIZE) err("corrupt", `truncated VHD dynamic header: ${bytes.length} of ${HEADER_SIZE} bytes`);
  if (ascii(bytes, O.cookie, 8) !== HEADER_COOKIE) err("corrupt", `no VHD dynamic header: the cookie is not "cxsparse"`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  const stored = v.getUint32(O.checksum);
  const computed = vhdChecksum(bytes.subarray(0, HEADER_SIZE), O.checksum);
  if (stored !== computed) err("corrupt", `VHD dynamic header checksum is 0x${stored.toString(16)}, expected 0x${computed.toString(16)}`);
  const headerVersion = v.getUint32(O.version);
  if (headerVersion >>> 16 !== 1) err("unsupported", `VHD dynamic header version 0x${headerVersion.toString(16)} (only 1.x is known)`);
  const blockSize = v.getUint32(O.blockSize);
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR_SIZE || blockSize > MAX_BLOCK_SIZE) {
    err("corrupt", `VHD block size ${blockSize} is not a power of two from 512 bytes to 256 MiB`);
  }
  const maxTableEntries = v.getUint32(O.maxTableEntries);
  if (maxTableEntries > MAX_TABLE_ENTRIES) err("corrupt", `VHD block table of ${maxTableEntries} entries is larger than we accept (${MAX_TABLE_ENTRIES})`);
  const tableOffset = readOffset(v, O.tableOffset);
  if (tableOffset === null || tableOffset === "huge") err("corrupt", `VHD block table offset 0x${v.getBigUint64(O.tableOffset).toString(16)} is beyond any file`);
  const locators: ParentLocator[] = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = O.locators + 24 * i;
    const off = readOffset(v, at + 16);
    locators.push({
      code: v.getUint32(at),
      dataSpace: v.getUint32(at + 4),
      dataLength: v.getUint32(at + 8),
      reserved: v.getUint32(at + 12),
      dataOffset: typeof off === "number" ? off : Number.MAX_SAFE_INTEGER,
    });
  }
  return {
    tableOffset: tableOffset as number,
    headerVersion,
    maxTableEntries,
    blockSize,
    checksum: stored,
    parentUuid: uuidFromGuidBytes(bytes, O.parentUuid),
    parentTimestamp: v.getUint32(O.parentTimestamp),
    parentName: decodeUtf16(bytes.subarray(O.parentName, O.parentName + PARENT_NAME_BYTES), true),
    locators,
  };
}

/** The 1024 header bytes, checksum computed. Throws "unsupported" for a parent name too long. */
export function serializeDynamicHeader(h: VhdDynamicHeader, ctx: CodecContext = {}): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = new DataView(out.buffer);
  putAscii(out, O.cookie, HEADER_COOKIE, 8);
  v.setBigUint64(O.dataOffset, 0xffffffffffffffffn);
  v.setBigUint64(O.tableOffset, BigInt(h.tableOffset));
  v.setUint32(O.version, h.headerVersion);
  v.setUint32(O.maxTableEntries, h.maxTableEntries);
  v.setUint32(O.blockSize, h.blockSize);
  uuidToGuidBytes(h.parentUuid || NULL_UUID, out, O.parentUuid);
  v.setUint32(O.parentTimestamp, h.parentTimestamp >>> 0);
  // VirtualBox leaves room for a terminating NUL unit: at most 255 units.
  const name = encodeUtf16(h.parentName, true, PARENT_NAME_BYTES - 2);
  if (!name) throw new MediumError("unsupported", `parent file name ${JSON.stringify(h.parentName)} is longer than 255 UTF-16 units`, { path: ctx.path });
  out.set(name, O.parentName);
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const l = h.locators[i];
    if (!l || l.code === LocatorCode.none) continue;
    const at = O.locators + 24 * i;
    v.setUint32(at, l.code);
    v.setUint32(at + 4, l.dataSpace);
    v.setUint32(at + 8, l.dataLength);
    v.setUint32(at + 12, l.reserved);
    v.setBigUint64(at + 16, BigInt(l.dataOffset));
  }
  v.setUint32(O.checksum, vhdChecksum(out, O.checksum));
  return out;
}

/** Eight empty locators. */
export function noLocators(): ParentLocator[] {
  return Array.from({ length: LOCATOR_COUNT }, () => ({ code: 0, dataSpace: 0, dataLength: 0, reserved: 0, dataOffset: 0 }));
}

// --- parent paths ---------------------------------------------------------------------------------

/**
 * The locators VirtualBox writes for a differencing image's parent: W2ku (absolute path) then W2ru
 * (relative to the child), UTF-16LE, LOCATOR_SPACE bytes reserved each from `dataOffset` on.
 * Returns the header entries and the bytes to write at `dataOffset` (both areas, zero padded).
 */
export function parentLocators(childPath: string, parentPath: string, dataOffset: number, ctx: CodecContext = {}): { entries: ParentLocator[]; data: Uint8Array } {
  const entries = noLocators();
  const data = new Uint8Array(2 * LOCATOR_SPACE);
  const paths = [
    { code: LocatorCode.w2ku, text: parentPath },
    { code: LocatorCode.w2ru, text: relativePath(childPath, parentPath) },
  ];
  paths.forEach((p, i) => {
    const bytes = encodeUtf16(p.text, false, LOCATOR_SPACE);
    if (!bytes) throw new MediumError("unsupported", `parent path ${JSON.stringify(p.text)} is longer than ${LOCATOR_SPACE / 2} UTF-16 units`, { path: ctx.path });
    data.set(bytes, i * LOCATOR_SPACE);
    entries[i] = { code: p.code, dataSpace: LOCATOR_SPACE, dataLength: bytes.length, reserved: 0, dataOffset: dataOffset + i * LOCATOR_SPACE };
  });
  return { entries, data };
}

/** The text a locator's data holds (UTF-16LE for W2ku/W2ru, bytes as Latin-1 otherwise). */
export function decodeLocator(code: number, bytes: Uint8Array): string {
  if (code === LocatorCode.w2ku || code === LocatorCode.w2ru) return decodeUtf16(bytes, false);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}
