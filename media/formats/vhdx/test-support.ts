/**
 * Hand-built VHDX files for tests (pure, in memory): the 1 MiB header section, a 1 MiB log at
 * 1 MiB, the metadata region at 2 MiB, the BAT at 3 MiB and the payload blocks after it.
 */
import { BAT_ENTRY_SIZE, PayloadState, batGeometry, encodeEntry, payloadIndex } from "./bat.js";
import {
  BAT_REGION_GUID,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  METADATA_REGION_GUID,
  METADATA_TABLE_SIZE,
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

export interface FixtureOptions {
  size: number;
  blockSize?: number;
  /** Payload blocks: data (stored fully present) or a bare state. */
  blocks?: Map<number, Uint8Array | number>;
  params?: Partial<VhdxParameters>;
  header?: Partial<VhdxHeader>;
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
  const stored = [...(o.blocks ?? new Map()).entries()].filter(([, v]) => typeof v !== "number");
  const dataStart = BAT_OFFSET + batLength;
  const bytes = new Uint8Array(dataStart + stored.length * params.blockSize);
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
  const entries: VhdxMetadataEntry[] = [];
  let at = METADATA_TABLE_SIZE;
  for (const [id, value] of encodeSystemItems(params)) {
    entries.push({ itemId: id, offset: at, length: value.length, isUser: false, isVirtualDisk: id !== "caa16737-fa36-4d43-b3b6-33f0aa44e76b", isRequired: true });
    bytes.set(value, METADATA_OFFSET + at);
    at += value.length;
  }
  bytes.set(serializeMetadataTable(entries), METADATA_OFFSET);
  // BAT and blocks.
  const bat = new DataView(bytes.buffer, BAT_OFFSET, batLength);
  const blockOffsets = new Map<number, number>();
  let next = dataStart;
  for (const [i, v] of o.blocks ?? new Map<number, Uint8Array | number>()) {
    const index = payloadIndex(i, g.chunkRatio);
    if (typeof v === "number") {
      encodeEntry(bat, index, v, 0);
    } else {
      encodeEntry(bat, index, PayloadState.fullyPresent, next);
      bytes.set(v.subarray(0, params.blockSize), next);
      blockOffsets.set(i, next);
      next += params.blockSize;
    }
  }
  return { bytes, params, header, blockOffsets };
}
