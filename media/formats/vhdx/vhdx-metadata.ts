/**
 * Read and validate everything a VHDX reader needs, in order: file identifier, current header,
 * log (replayed in memory when it holds an active sequence), region table, metadata region
 * (with the parent locator of a differencing image), BAT, and the sector bitmaps of partially
 * present blocks. Reads only; any problem is a MediumError (invalid-format, corrupt or
 * unsupported) naming the file.
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { isNullUuid } from "../uuid.js";
import {
  BAT_ENTRY_SIZE,
  PayloadState,
  SECTOR_BITMAP_BLOCK_SIZE,
  SectorBitmapState,
  batGeometry,
  decodeEntry,
  payloadIndex,
  sectorBitmapIndex,
  type BatGeometry,
} from "./bat.js";
import { findLogReplay } from "./log.js";
import { LogOverlay, ReplayedFile } from "./log-overlay.js";
import { parseParentLocator, type ParentLocator } from "./parent-locator.js";
import {
  BAT_REGION_GUID,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SECTION_SIZE,
  HEADER_SIZE,
  KiB,
  METADATA_REGION_GUID,
  METADATA_TABLE_SIZE,
  MiB,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  REGION_TABLE_SIZE,
  VhdxParseError,
  isVhdx,
  parseCreator,
  parseMetadataRegion,
  parseRegionTable,
  pickHeader,
  type VhdxHeader,
  type VhdxParameters,
  type VhdxRegion,
} from "./structures.js";

/** The largest virtual disk VHDX allows: 64 TiB. */
export const MAX_VHDX_SIZE = 64 * 2 ** 40;
export const MIN_BLOCK_SIZE = 1 * MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
/** Largest metadata region or log we read into memory at open. */
const MAX_IN_MEMORY = 256 * MiB;

export interface VhdxMetadata {
  creator: string;
  header: VhdxHeader;
  /** Which header copy is current. */
  headerCopy: 1 | 2;
  regions: VhdxRegion[];
  params: VhdxParameters;
  geometry: BatGeometry;
  /** The BAT entries (geometry.totalEntries of them), raw. */
  bat: DataView;
  /** The file's size (after log replay). */
  fileSize: number;
  /** Everything after the headers is read through this: the file, or the file as replay leaves it. */
  file: FileIo;
  /** The log replayed in memory at open, or null when the log was empty. */
  replay: { entries: number; firstSequence: bigint; lastSequence: bigint } | null;
  /** A differencing image's parent locator; null for a base image. */
  parentLocator: ParentLocator | null;
  /** Partially present blocks: their slice of the sector bitmap, or null when none of their sectors is stored. */
  partial: Map<number, Uint8Array | null>;
}

/** As file-helpers' asMediumError, and a parse error keeps its kind. */
export function asMediumError(e: unknown, path: string, what: string): MediumError {
  if (e instanceof VhdxParseError) return new MediumError(e.kind, e.message, { path });
  return sharedAsMediumError(e, path, what);
}

export { readFully } from "../file-helpers.js";
import { asMediumError as sharedAsMediumError, readFully } from "../file-helpers.js";

const corrupt = (m: string): VhdxParseError => new VhdxParseError("corrupt", m);
const unsupported = (m: string): VhdxParseError => new VhdxParseError("unsupported", m);
const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
const addTo = (m: Map<number, number[]>, key: number, value: number): void => {
  const list = m.get(key);
  if (list) list.push(value);
  else m.set(key, [value]);
};

async function readExact(file: FileIo, pos: number, length: number, what: string): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  const n = await readFully(file, pos, buf);
  if (n < length) throw corrupt(`${what} at ${pos}+${length} is beyond the end of the file`);
  return buf;
}

/** A region [offset, offset+length) of the file: MiB-aligned, past the header section, inside the file. */
function checkRegion(name: string, offset: number, length: number, fileSize: number): void {
  if (!Number.isSafeInteger(offset) || offset % MiB || length % MiB || length === 0) {
    throw corrupt(`${name} at ${offset}+${length} is not MiB-aligned`);
  }
  if (offset < HEADER_SECTION_SIZE) throw corrupt(`${name} at ${offset} overlaps the header section`);
  if (offset + length > fileSize) throw corrupt(`${name} at ${offset}+${length} is beyond the end of the file (${fileSize})`);
}

export async function readVhdxMetadata(raw: FileIo): Promise<VhdxMetadata> {
  const rawSize = await raw.size();
  if (rawSize < HEADER_SECTION_SIZE) {
    const head = new Uint8Array(8);
    await readFully(raw, 0, head);
    if (!isVhdx(head)) throw new VhdxParseError("invalid-format", "no 'vhdxfile' signature");
    throw corrupt(`file is ${rawSize} bytes, shorter than the 1 MiB header section`);
  }
  const section = await readExact(raw, 0, HEADER_SECTION_SIZE, "header section");
  if (!isVhdx(section)) throw new VhdxParseError("invalid-format", "no 'vhdxfile' signature");
  const creator = parseCreator(section.subarray(0, 64 * KiB));

  const { header, which } = pickHeader(
    section.subarray(HEADER1_OFFSET, HEADER1_OFFSET + HEADER_SIZE),
    section.subarray(HEADER2_OFFSET, HEADER2_OFFSET + HEADER_SIZE),
  );

  // Log: an active sequence is replayed in memory; from here on every read sees its writes.
  let file: FileIo = raw;
  let fileSize = rawSize;
  let replay: VhdxMetadata["replay"] = null;
  const logged = !isNullUuid(header.logGuid);
  if (logged) {
    if (header.logLength === 0) throw corrupt("header has a log GUID but an empty log");
    checkRegion("log", header.logOffset, header.logLength, rawSize);
    if (header.logLength > MAX_IN_MEMORY) throw unsupported(`log of ${header.logLength} bytes (at most ${MAX_IN_MEMORY} are replayed in memory)`);
    const log = await readExact(raw, header.logOffset, header.logLength, "log");
    const r = findLogReplay(log, { logGuid: header.logGuid, logOffset: header.logOffset, fileSize: rawSize });
    if (r) {
      const overlay = new LogOverlay(r);
      overlay.patch(0, section); // the region tables may be in it
      file = new ReplayedFile(raw, overlay, r.fileSize);
      fileSize = r.fileSize;
      replay = { entries: r.entries.length, firstSequence: r.entries[0]!.sequence, lastSequence: r.entries[r.entries.length - 1]!.sequence };
    }
  }

  // Region table: the first copy, or the second where the first is damaged.
  const regions =
    parseRegionTable(section.subarray(REGION_TABLE1_OFFSET, REGION_TABLE1_OFFSET + REGION_TABLE_SIZE)) ??
    parseRegionTable(section.subarray(REGION_TABLE2_OFFSET, REGION_TABLE2_OFFSET + REGION_TABLE_SIZE));
  if (!regions) throw corrupt("both region tables are invalid (bad signature or checksum)");
  let batRegion: VhdxRegion | undefined;
  let metaRegion: VhdxRegion | undefined;
  for (const r of regions) {
    if (r.guid === BAT_REGION_GUID) {
      if (batRegion) throw corrupt("region table lists the BAT twice");
      batRegion = r;
    } else if (r.guid === METADATA_REGION_GUID) {
      if (metaRegion) throw corrupt("region table lists the metadata region twice");
      metaRegion = r;
    } else if (r.required) {
      throw unsupported(`unknown required region ${r.guid}`);
    }
  }
  if (!batRegion) throw corrupt("region table has no BAT region");
  if (!metaRegion) throw corrupt("region table has no metadata region");
  checkRegion("BAT region", batRegion.fileOffset, batRegion.length, fileSize);
  checkRegion("metadata region", metaRegion.fileOffset, metaRegion.length, fileSize);
  const spans: [string, number, number][] = [
    ["BAT region", batRegion.fileOffset, batRegion.length],
    ["metadata region", metaRegion.fileOffset, metaRegion.length],
  ];
  if (logged) spans.push(["log", header.logOffset, header.logLength]);
  for (let i = 0; i < spans.length; i++) {
    for (let j = i + 1; j < spans.length; j++) {
      const [an, ao, al] = spans[i]!;
      const [bn, bo, bl] = spans[j]!;
      if (ao < bo + bl && bo < ao + al) throw corrupt(`${an} and ${bn} overlap`);
    }
  }
  /** A block of `length` bytes at `offset` must be past the header section, inside the file and clear of the regions. */
  const checkBlock = (what: string, offset: number, length: number): void => {
    if (offset < HEADER_SECTION_SIZE) throw corrupt(`${what} points into the header section (${offset})`);
    if (offset + length > fileSize) throw corrupt(`${what} at ${offset}+${length} is beyond the end of the file (${fileSize})`);
    for (const [name, o, l] of spans) {
      if (offset < o + l && o < offset + length) throw corrupt(`${what} at ${offset} overlaps the ${name}`);
    }
  };

  // Metadata region.
  if (metaRegion.length > MAX_IN_MEMORY) throw unsupported(`metadata region of ${metaRegion.length} bytes`);
  if (metaRegion.length < METADATA_TABLE_SIZE) throw corrupt("metadata region is smaller than its table");
  const { params, parentLocator: locatorItem } = parseMetadataRegion(await readExact(file, metaRegion.fileOffset, metaRegion.length, "metadata region"));
  const { blockSize, virtualDiskSize: size, logicalSectorSize: lss, physicalSectorSize: pss } = params;
  if (!isPow2(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw corrupt(`block size ${blockSize} (a power of two from 1 MiB to 256 MiB)`);
  }
  if (lss !== 512 && lss !== 4096) throw corrupt(`logical sector size ${lss} (512 or 4096)`);
  if (pss !== 512 && pss !== 4096) throw corrupt(`physical sector size ${pss} (512 or 4096)`);
  if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_VHDX_SIZE || size % lss) {
    throw corrupt(`virtual disk size ${size} (a multiple of ${lss} up to 64 TiB)`);
  }
  let parentLocator: ParentLocator | null = null;
  if (params.hasParent) {
    if (!locatorItem) throw corrupt("differencing VHDX (has a parent) without a parent locator metadata item");
    parentLocator = parseParentLocator(locatorItem);
  }
  if (lss !== 512) throw unsupported(`logical sector size ${lss} is not supported yet (only 512)`);

  // BAT.
  const geometry = batGeometry(size, blockSize, lss, params.hasParent);
  const batBytes = geometry.totalEntries * BAT_ENTRY_SIZE;
  if (batBytes > batRegion.length) throw corrupt(`BAT region (${batRegion.length} bytes) is smaller than the ${geometry.totalEntries} entries the disk needs`);
  const batBuf = await readExact(file, batRegion.fileOffset, batBytes, "BAT");
  const bat = new DataView(batBuf.buffer, batBuf.byteOffset, batBuf.byteLength);
  const partialByChunk = new Map<number, number[]>();
  for (let i = 0; i < geometry.payloadBlocks; i++) {
    const { state, offset } = decodeEntry(bat, payloadIndex(i, geometry.chunkRatio));
    switch (state) {
      case PayloadState.notPresent:
      case PayloadState.undefined:
      case PayloadState.zero:
      case PayloadState.unmapped:
        break;
      case PayloadState.partiallyPresent:
        if (!params.hasParent) throw corrupt(`block ${i} is partially present in an image without a parent`);
        checkBlock(`BAT entry for block ${i}`, offset, Math.min(blockSize, size - i * blockSize));
        addTo(partialByChunk, Math.floor(i / geometry.chunkRatio), i);
        break;
      case PayloadState.fullyPresent:
        checkBlock(`BAT entry for block ${i}`, offset, Math.min(blockSize, size - i * blockSize));
        break;
      default:
        throw corrupt(`BAT entry for block ${i} has reserved state ${state}`);
    }
  }
  for (let c = 0; c < geometry.sectorBitmapBlocks; c++) {
    const index = sectorBitmapIndex(c, geometry.chunkRatio);
    if (index >= geometry.totalEntries) break;
    const { state } = decodeEntry(bat, index);
    if (state !== SectorBitmapState.notPresent && state !== SectorBitmapState.present) {
      throw corrupt(`sector bitmap entry ${c} has reserved state ${state}`);
    }
  }
  const partial = await readPartialBitmaps(file, bat, geometry, blockSize, partialByChunk, checkBlock);
  return { creator, header, headerCopy: which, regions, params, geometry, bat, fileSize, file, replay, parentLocator, partial };
}

/**
 * The sector bitmap slices of the partially present blocks (`byChunk`: chunk -> its partial
 * blocks), one 1 MiB sector bitmap block read per chunk. A slice with no bit set is null.
 */
async function readPartialBitmaps(
  file: FileIo,
  bat: DataView,
  geometry: BatGeometry,
  blockSize: number,
  byChunk: Map<number, number[]>,
  checkBlock: (what: string, offset: number, length: number) => void,
): Promise<Map<number, Uint8Array | null>> {
  const out = new Map<number, Uint8Array | null>();
  const sliceBytes = blockSize / 512 / 8;
  let total = 0;
  for (const [chunk, blocks] of byChunk) {
    const { state, offset } = decodeEntry(bat, sectorBitmapIndex(chunk, geometry.chunkRatio));
    if (state !== SectorBitmapState.present) throw corrupt(`block ${blocks[0]} is partially present but chunk ${chunk} has no sector bitmap`);
    checkBlock(`sector bitmap of chunk ${chunk}`, offset, SECTOR_BITMAP_BLOCK_SIZE);
    total += blocks.length * sliceBytes;
    if (total > MAX_IN_MEMORY) throw unsupported(`more than ${MAX_IN_MEMORY} bytes of sector bitmaps for partially present blocks`);
    const sb = await readExact(file, offset, SECTOR_BITMAP_BLOCK_SIZE, `sector bitmap of chunk ${chunk}`);
    for (const i of blocks) {
      const at = (i % geometry.chunkRatio) * sliceBytes;
      const slice = sb.slice(at, at + sliceBytes);
      out.set(i, slice.some((b) => b !== 0) ? slice : null);
    }
  }
  return out;
}
