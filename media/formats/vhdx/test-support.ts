/**
 * Hand-built VHDX files for tests (pure, in memory): the 1 MiB header section, a 1 MiB log at
 * 1 MiB, the metadata region at 2 MiB, the BAT at 3 MiB, the payload blocks after it and then
 * the sector bitmap blocks of a differencing image (one per chunk with partially present
 * blocks). Written from the MS-VHDX tables; qemu-img cannot make differencing VHDX.
 */
import { uuidToGuidBytes } from "../uuid.js";
import {
  BAT_ENTRY_SIZE,
  PayloadState,
  SECTOR_BITMAP_BLOCK_SIZE,
  SectorBitmapState,
  batGeometry,
  encodeEntry,
  payloadIndex,
  sectorBitmapIndex,
} from "./bat.js";
import { VHDX_LOCATOR_TYPE } from "./parent-locator.js";
import {
  BAT_REGION_GUID,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  METADATA_REGION_GUID,
  METADATA_TABLE_SIZE,
  META_FILE_PARAMETERS,
  META_PARENT_LOCATOR,
  MiB,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  encodeSystemItems,
  serializeFileIdentifier,
  serializeHeader,
  serializeMetadataTable,
  serializeRegionTable,
  type VhdxHeader,
  type VhdxMetadataEntry,
  type VhdxParameters,
} from "./structures.js";

export const LOG_OFFSET = 1 * MiB;
export const METADATA_OFFSET = 2 * MiB;
export const BAT_OFFSET = 3 * MiB;

/** A partially present block: its data, and which of its 512-byte sectors the file stores. */
export interface PartialBlock {
  data: Uint8Array;
  present: (sector: number) => boolean;
}

export type FixtureBlock = Uint8Array | number | PartialBlock;

export interface FixtureOptions {
  size: number;
  blockSize?: number;
  /** Payload blocks: data (stored fully present), partly stored data, or a bare state. */
  blocks?: Map<number, FixtureBlock>;
  params?: Partial<VhdxParameters>;
  header?: Partial<VhdxHeader>;
  /** Make a differencing image: these parent locator entries (key, value), in order. */
  parentLocator?: [string, string][];
}

/** The parent locator item: header, 12-byte entries, then the UTF-16LE keys and values. */
export function encodeParentLocator(entries: readonly [string, string][], type = VHDX_LOCATOR_TYPE): Uint8Array {
  const utf16 = (t: string) => {
    const b = new Uint8Array(t.length * 2);
    for (let i = 0; i < t.length; i++) {
      b[2 * i] = t.charCodeAt(i) & 0xff;
      b[2 * i + 1] = t.charCodeAt(i) >>> 8;
    }
    return b;
  };
  const strings = entries.map(([k, v]) => [utf16(k), utf16(v)] as const);
  const total = 20 + 12 * entries.length + strings.reduce((n, [k, v]) => n + k.length + v.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  uuidToGuidBytes(type, out, 0);
  dv.setUint16(18, entries.length, true);
  let at = 20 + 12 * entries.length;
  strings.forEach(([k, v], i) => {
    const e = 20 + 12 * i;
    dv.setUint32(e, at, true);
    out.set(k, at);
    at += k.length;
    dv.setUint32(e + 4, at, true);
    out.set(v, at);
    at += v.length;
    dv.setUint16(e + 8, k.length, true);
    dv.setUint16(e + 10, v.length, true);
  });
  return out;
}

/** A locator as Hyper-V writes one: the parent's DataWriteGuid in braces and its paths. */
export function vhdxLocator(linkage: string, relativePath: string, more: [string, string][] = []): [string, string][] {
  return [["parent_linkage", `{${linkage.toUpperCase()}}`], ["relative_path", relativePath], ...more];
}

export interface Fixture {
  bytes: Uint8Array;
  params: VhdxParameters;
  header: VhdxHeader;
  /** File offset of each stored block. */
  blockOffsets: Map<number, number>;
}

export function buildVhdx(o: FixtureOptions): Fixture {
  const params: VhdxParameters = {
    blockSize: o.blockSize ?? MiB,
    leaveBlocksAllocated: false,
    hasParent: false,
    virtualDiskSize: o.size,
    logicalSectorSize: 512,
    physicalSectorSize: 4096,
    page83: "0e3d6c8a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
    ...o.params,
  };
  if (o.parentLocator) params.hasParent = true;
  const header: VhdxHeader = {
    sequenceNumber: 5,
    fileWriteGuid: "11111111-2222-3333-4444-555555555555",
    dataWriteGuid: "66666666-7777-8888-9999-aaaaaaaaaaaa",
    logGuid: "00000000-0000-0000-0000-000000000000",
    logVersion: 0,
    version: 1,
    logLength: MiB,
    logOffset: LOG_OFFSET,
    ...o.header,
  };
  const g = batGeometry(params.virtualDiskSize, params.blockSize, params.logicalSectorSize, params.hasParent);
  const batLength = Math.max(MiB, Math.ceil((g.totalEntries * BAT_ENTRY_SIZE) / MiB) * MiB);
  const blocks = o.blocks ?? new Map<number, FixtureBlock>();
  const stored = [...blocks.values()].filter((v) => typeof v !== "number").length;
  const partialChunks = [...new Set([...blocks].filter(([, v]) => typeof v === "object" && "present" in v).map(([i]) => Math.floor(i / g.chunkRatio)))];
  const dataStart = BAT_OFFSET + batLength;
  const bitmapStart = dataStart + stored * params.blockSize;
  const bytes = new Uint8Array(bitmapStart + partialChunks.length * SECTOR_BITMAP_BLOCK_SIZE);
  bytes.set(serializeFileIdentifier("vstor test"), 0);
  const h = serializeHeader(header);
  bytes.set(h, HEADER1_OFFSET);
  bytes.set(serializeHeader({ ...header, sequenceNumber: header.sequenceNumber - 1 }), HEADER2_OFFSET);
  const rt = serializeRegionTable([
    { guid: BAT_REGION_GUID, fileOffset: BAT_OFFSET, length: batLength, required: true },
    { guid: METADATA_REGION_GUID, fileOffset: METADATA_OFFSET, length: MiB, required: true },
  ]);
  bytes.set(rt, REGION_TABLE1_OFFSET);
  bytes.set(rt, REGION_TABLE2_OFFSET);
  // Metadata: table, then the items one after another.
  const items = encodeSystemItems(params);
  if (o.parentLocator) items.set(META_PARENT_LOCATOR, encodeParentLocator(o.parentLocator));
  const entries: VhdxMetadataEntry[] = [];
  let at = METADATA_TABLE_SIZE;
  for (const [id, value] of items) {
    const fileItem = id === META_FILE_PARAMETERS || id === META_PARENT_LOCATOR;
    entries.push({ itemId: id, offset: at, length: value.length, isUser: false, isVirtualDisk: !fileItem, isRequired: true });
    bytes.set(value, METADATA_OFFSET + at);
    at += value.length;
  }
  bytes.set(serializeMetadataTable(entries), METADATA_OFFSET);
  // BAT, blocks and sector bitmaps.
  const bat = new DataView(bytes.buffer, BAT_OFFSET, batLength);
  const blockOffsets = new Map<number, number>();
  let next = dataStart;
  const sectorsPerBlock = params.blockSize / 512;
  for (const [i, v] of blocks) {
    const index = payloadIndex(i, g.chunkRatio);
    if (typeof v === "number") {
      encodeEntry(bat, index, v, 0);
      continue;
    }
    const data = v instanceof Uint8Array ? v : v.data;
    encodeEntry(bat, index, v instanceof Uint8Array ? PayloadState.fullyPresent : PayloadState.partiallyPresent, next);
    bytes.set(data.subarray(0, params.blockSize), next);
    blockOffsets.set(i, next);
    next += params.blockSize;
    if (v instanceof Uint8Array) continue;
    const chunk = Math.floor(i / g.chunkRatio);
    const sb = bitmapStart + partialChunks.indexOf(chunk) * SECTOR_BITMAP_BLOCK_SIZE;
    encodeEntry(bat, sectorBitmapIndex(chunk, g.chunkRatio), SectorBitmapState.present, sb);
    const first = (i % g.chunkRatio) * sectorsPerBlock;
    for (let s = 0; s < sectorsPerBlock; s++) if (v.present(s)) bytes[sb + ((first + s) >>> 3)]! |= 1 << ((first + s) & 7);
  }
  return { bytes, params, header, blockOffsets };
}
