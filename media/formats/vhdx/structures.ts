/**
 * The fixed VHDX structures as pure codecs (parse and serialize, no I/O): the file identifier,
 * the two headers, the region table and the metadata table with its system items. All integers
 * are little-endian; GUIDs are in Microsoft's mixed-endian layout (uuid.ts). Field offsets and
 * rules follow the MS-VHDX specification.
 */
import { NULL_UUID, uuidFromGuidBytes, uuidToGuidBytes } from "../uuid.js";
import { vhdxChecksum } from "./crc32c.js";

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** Layout of the 1 MiB header section. */
export const FILE_ID_OFFSET = 0;
export const HEADER1_OFFSET = 64 * KiB;
export const HEADER2_OFFSET = 128 * KiB;
export const REGION_TABLE1_OFFSET = 192 * KiB;
export const REGION_TABLE2_OFFSET = 256 * KiB;
export const HEADER_SECTION_SIZE = 1 * MiB;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE_SIZE = 64 * KiB;
export const METADATA_TABLE_SIZE = 64 * KiB;

export const FILE_SIGNATURE = "vhdxfile";
const HEADER_SIGNATURE = 0x64616568; // "head"
const REGION_SIGNATURE = 0x69676572; // "regi"
const METADATA_SIGNATURE = "metadata";
const MAX_TABLE_ENTRIES = 2047;

/** Region GUIDs. */
export const BAT_REGION_GUID = "2dc27766-f623-4200-9d64-115e9bfd4a08";
export const METADATA_REGION_GUID = "8b7ca206-4790-4b9a-b8fe-575f050f886e";

/** System metadata item GUIDs. */
export const META_FILE_PARAMETERS = "caa16737-fa36-4d43-b3b6-33f0aa44e76b";
export const META_VIRTUAL_DISK_SIZE = "2fa54224-cd1b-4876-b211-5dbed83bf4b8";
export const META_PAGE83_DATA = "beca12ab-b2e6-4523-93ef-c309e000c746";
export const META_LOGICAL_SECTOR_SIZE = "8141bf1d-a96f-4709-ba47-f233a8faab5f";
export const META_PHYSICAL_SECTOR_SIZE = "cda348c7-445d-4471-9cc9-e9885251c556";
export const META_PARENT_LOCATOR = "a8d35f2d-b30b-454d-abf7-d3d84834ab0c";

/** Why a structure was rejected: the caller turns this into a MediumError with a path. */
export class VhdxParseError extends Error {
  constructor(
    readonly kind: "invalid-format" | "corrupt" | "unsupported",
    message: string,
  ) {
    super(message);
    this.name = "VhdxParseError";
  }
}

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const ascii = (b: Uint8Array, at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));

/** u64 as a safe integer, or NaN where it is beyond 2^53 (callers reject NaN as absurd). */
function u64(v: DataView, at: number): number {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  return hi < 0x200000 ? hi * 2 ** 32 + lo : NaN;
}
function setU64(v: DataView, at: number, value: number): void {
  v.setUint32(at, value % 2 ** 32, true);
  v.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

// --- file identifier ---------------------------------------------------------------------------

/** Whether `head` starts with the VHDX file identifier signature. */
export function isVhdx(head: Uint8Array): boolean {
  return head.length >= 8 && ascii(head, 0, 8) === FILE_SIGNATURE;
}

/** The creator string (UTF-16LE, up to 256 characters, NUL-terminated) of a file identifier. */
export function parseCreator(id: Uint8Array): string {
  let s = "";
  for (let at = 8; at + 1 < Math.min(id.length, 8 + 512); at += 2) {
    const c = id[at]! | (id[at + 1]! << 8);
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

export function serializeFileIdentifier(creator: string): Uint8Array {
  const out = new Uint8Array(64 * KiB);
  for (let i = 0; i < 8; i++) out[i] = FILE_SIGNATURE.charCodeAt(i);
  for (let i = 0; i < Math.min(creator.length, 255); i++) {
    const c = creator.charCodeAt(i);
    out[8 + 2 * i] = c & 0xff;
    out[9 + 2 * i] = c >>> 8;
  }
  return out;
}

// --- headers -----------------------------------------------------------------------------------

export interface VhdxHeader {
  sequenceNumber: number;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

/**
 * A header, or null when it is not valid (wrong signature or checksum): the other copy may be.
 * The versions are checked by pickHeader, on the current header only.
 */
export function parseHeader(b: Uint8Array): VhdxHeader | null {
  if (b.length < HEADER_SIZE) return null;
  const block = b.subarray(0, HEADER_SIZE);
  const v = dv(block);
  if (v.getUint32(0, true) !== HEADER_SIGNATURE) return null;
  if (v.getUint32(4, true) !== vhdxChecksum(block)) return null;
  const h: VhdxHeader = {
    sequenceNumber: u64(v, 8),
    fileWriteGuid: uuidFromGuidBytes(block, 16),
    dataWriteGuid: uuidFromGuidBytes(block, 32),
    logGuid: uuidFromGuidBytes(block, 48),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLength: v.getUint32(68, true),
    logOffset: u64(v, 72),
  };
  if (Number.isNaN(h.sequenceNumber)) h.sequenceNumber = Number.MAX_SAFE_INTEGER; // still ordered, never written back
  return h;
}

export function serializeHeader(h: VhdxHeader): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = dv(out);
  v.setUint32(0, HEADER_SIGNATURE, true);
  setU64(v, 8, h.sequenceNumber);
  uuidToGuidBytes(h.fileWriteGuid, out, 16);
  uuidToGuidBytes(h.dataWriteGuid, out, 32);
  uuidToGuidBytes(h.logGuid, out, 48);
  v.setUint16(64, h.logVersion, true);
  v.setUint16(66, h.version, true);
  v.setUint32(68, h.logLength, true);
  setU64(v, 72, h.logOffset);
  v.setUint32(4, vhdxChecksum(out), true);
  return out;
}

/**
 * The current header: the valid one with the higher sequence number. Throws when neither is
 * valid (invalid-format when neither even has the signature, corrupt otherwise).
 */
export function pickHeader(a: Uint8Array, b: Uint8Array): { header: VhdxHeader; which: 1 | 2 } {
  const h1 = parseHeader(a);
  const h2 = parseHeader(b);
  const pick = h1 && (!h2 || h1.sequenceNumber >= h2.sequenceNumber) ? { header: h1, which: 1 as const } : h2 ? { header: h2, which: 2 as const } : null;
  if (pick) {
    const h = pick.header;
    if (h.version !== 1) throw new VhdxParseError("unsupported", `VHDX header version ${h.version} (only 1 is known)`);
    if (h.logVersion !== 0) throw new VhdxParseError("unsupported", `VHDX log version ${h.logVersion} (only 0 is known)`);
    return pick;
  }
  const signed = (x: Uint8Array) => x.length >= 4 && dv(x).getUint32(0, true) === HEADER_SIGNATURE;
  if (!signed(a) && !signed(b)) throw new VhdxParseError("invalid-format", "neither VHDX header has the 'head' signature");
  throw new VhdxParseError("corrupt", "both VHDX headers are invalid (bad checksum)");
}

// --- region table ------------------------------------------------------------------------------

export interface VhdxRegion {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

/** A region table, or null when its signature or checksum is wrong (the other copy may be good). */
export function parseRegionTable(b: Uint8Array): VhdxRegion[] | null {
  if (b.length < REGION_TABLE_SIZE) return null;
  const table = b.subarray(0, REGION_TABLE_SIZE);
  const v = dv(table);
  if (v.getUint32(0, true) !== REGION_SIGNATURE) return null;
  if (v.getUint32(4, true) !== vhdxChecksum(table)) return null;
  const count = v.getUint32(8, true);
  if (count > MAX_TABLE_ENTRIES) throw new VhdxParseError("corrupt", `region table has ${count} entries (at most ${MAX_TABLE_ENTRIES})`);
  const out: VhdxRegion[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + 32 * i;
    out.push({
      guid: uuidFromGuidBytes(table, at),
      fileOffset: u64(v, at + 16),
      length: v.getUint32(at + 24, true),
      required: (v.getUint32(at + 28, true) & 1) !== 0,
    });
  }
  return out;
}

export function serializeRegionTable(regions: readonly VhdxRegion[]): Uint8Array {
  const out = new Uint8Array(REGION_TABLE_SIZE);
  const v = dv(out);
  v.setUint32(0, REGION_SIGNATURE, true);
  v.setUint32(8, regions.length, true);
  regions.forEach((r, i) => {
    const at = 16 + 32 * i;
    uuidToGuidBytes(r.guid, out, at);
    setU64(v, at + 16, r.fileOffset);
    v.setUint32(at + 24, r.length, true);
    v.setUint32(at + 28, r.required ? 1 : 0, true);
  });
  v.setUint32(4, vhdxChecksum(out), true);
  return out;
}

// --- metadata table ----------------------------------------------------------------------------

export interface VhdxMetadataEntry {
  itemId: string;
  /** Relative to the start of the metadata region. */
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

/** The metadata table at the start of the metadata region (64 KiB). Throws on a bad signature. */
export function parseMetadataTable(b: Uint8Array): VhdxMetadataEntry[] {
  if (b.length < METADATA_TABLE_SIZE || ascii(b, 0, 8) !== METADATA_SIGNATURE) {
    throw new VhdxParseError("corrupt", "metadata region has no 'metadata' table signature");
  }
  const v = dv(b);
  const count = v.getUint16(10, true);
  if (count > MAX_TABLE_ENTRIES) throw new VhdxParseError("corrupt", `metadata table has ${count} entries (at most ${MAX_TABLE_ENTRIES})`);
  const out: VhdxMetadataEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + 32 * i;
    const flags = v.getUint32(at + 24, true);
    out.push({
      itemId: uuidFromGuidBytes(b, at),
      offset: v.getUint32(at + 16, true),
      length: v.getUint32(at + 20, true),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    });
  }
  return out;
}

export function serializeMetadataTable(entries: readonly VhdxMetadataEntry[]): Uint8Array {
  const out = new Uint8Array(METADATA_TABLE_SIZE);
  const v = dv(out);
  for (let i = 0; i < 8; i++) out[i] = METADATA_SIGNATURE.charCodeAt(i);
  v.setUint16(10, entries.length, true);
  entries.forEach((e, i) => {
    const at = 32 + 32 * i;
    uuidToGuidBytes(e.itemId, out, at);
    v.setUint32(at + 16, e.offset, true);
    v.setUint32(at + 20, e.length, true);
    v.setUint32(at + 24, (e.isUser ? 1 : 0) | (e.isVirtualDisk ? 2 : 0) | (e.isRequired ? 4 : 0), true);
  });
  return out;
}

/** The system metadata items this reader uses, decoded. */
export interface VhdxParameters {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
  virtualDiskSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Page 83 data: the disk's SCSI identity, a GUID. */
  page83: string;
}

/** The system items' bytes, keyed by item GUID (each at least as long as its value). */
export function encodeSystemItems(p: VhdxParameters): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  const fp = new Uint8Array(8);
  dv(fp).setUint32(0, p.blockSize, true);
  dv(fp).setUint32(4, (p.leaveBlocksAllocated ? 1 : 0) | (p.hasParent ? 2 : 0), true);
  m.set(META_FILE_PARAMETERS, fp);
  const size = new Uint8Array(8);
  setU64(dv(size), 0, p.virtualDiskSize);
  m.set(META_VIRTUAL_DISK_SIZE, size);
  const p83 = new Uint8Array(16);
  uuidToGuidBytes(p.page83, p83, 0);
  m.set(META_PAGE83_DATA, p83);
  const ls = new Uint8Array(4);
  dv(ls).setUint32(0, p.logicalSectorSize, true);
  m.set(META_LOGICAL_SECTOR_SIZE, ls);
  const ps = new Uint8Array(4);
  dv(ps).setUint32(0, p.physicalSectorSize, true);
  m.set(META_PHYSICAL_SECTOR_SIZE, ps);
  return m;
}

const ITEM_SIZES: Record<string, number> = {
  [META_FILE_PARAMETERS]: 8,
  [META_VIRTUAL_DISK_SIZE]: 8,
  [META_PAGE83_DATA]: 16,
  [META_LOGICAL_SECTOR_SIZE]: 4,
  [META_PHYSICAL_SECTOR_SIZE]: 4,
};

/**
 * Decode and validate the system items from the whole metadata region (`region` starts with the
 * table). Unknown required items are `unsupported`; missing or malformed ones `corrupt`.
 */
export function parseMetadataRegion(region: Uint8Array): { params: VhdxParameters; entries: VhdxMetadataEntry[]; parentLocator: Uint8Array | null } {
  const entries = parseMetadataTable(region);
  const items = new Map<string, Uint8Array>();
  const spans: [number, number][] = [];
  for (const e of entries) {
    if (e.length === 0) continue;
    if (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > region.length) {
      throw new VhdxParseError("corrupt", `metadata item ${e.itemId} at ${e.offset}+${e.length} is outside the metadata region (${region.length})`);
    }
    for (const [s, l] of spans) {
      if (e.offset < s + l && s < e.offset + e.length) throw new VhdxParseError("corrupt", `metadata item ${e.itemId} overlaps another`);
    }
    spans.push([e.offset, e.length]);
    if (e.isUser) continue;
    if (items.has(e.itemId)) throw new VhdxParseError("corrupt", `metadata item ${e.itemId} appears twice`);
    if (e.itemId in ITEM_SIZES) {
      if (e.length < ITEM_SIZES[e.itemId]!) throw new VhdxParseError("corrupt", `metadata item ${e.itemId} is too short (${e.length} bytes)`);
      items.set(e.itemId, region.subarray(e.offset, e.offset + e.length));
    } else if (e.itemId === META_PARENT_LOCATOR) {
      items.set(e.itemId, region.subarray(e.offset, e.offset + e.length));
    } else if (e.isRequired) {
      throw new VhdxParseError("unsupported", `unknown required metadata item ${e.itemId}`);
    }
  }
  const need = (id: string, name: string): DataView => {
    const b = items.get(id);
    if (!b) throw new VhdxParseError("corrupt", `required metadata item "${name}" is missing`);
    return dv(b);
  };
  const fp = need(META_FILE_PARAMETERS, "file parameters");
  const flags = fp.getUint32(4, true);
  const params: VhdxParameters = {
    blockSize: fp.getUint32(0, true),
    leaveBlocksAllocated: (flags & 1) !== 0,
    hasParent: (flags & 2) !== 0,
    virtualDiskSize: u64(need(META_VIRTUAL_DISK_SIZE, "virtual disk size"), 0),
    logicalSectorSize: need(META_LOGICAL_SECTOR_SIZE, "logical sector size").getUint32(0, true),
    physicalSectorSize: need(META_PHYSICAL_SECTOR_SIZE, "physical sector size").getUint32(0, true),
    page83: NULL_UUID,
  };
  need(META_PAGE83_DATA, "page 83 data");
  params.page83 = uuidFromGuidBytes(items.get(META_PAGE83_DATA)!, 0);
  return { params, entries, parentLocator: items.get(META_PARENT_LOCATOR) ?? null };
}
