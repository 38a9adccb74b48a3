/**
 * Read and validate everything a VHDX reader needs, in order: file identifier, current header,
 * log (must be empty), region table, metadata region, BAT. Reads only; any problem is a
 * MediumError (invalid-format, corrupt or unsupported) naming the file.
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { isNullUuid } from "../uuid.js";
import { BAT_ENTRY_SIZE, PayloadState, SectorBitmapState, batGeometry, decodeEntry, payloadIndex, type BatGeometry } from "./bat.js";
import { validLogEntries } from "./log.js";
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
  fileSize: number;
}

export function asMediumError(e: unknown, path: string, what: string): MediumError {
  if (e instanceof MediumError) return e;
  if (e instanceof VhdxParseError) return new MediumError(e.kind, e.message, { path });
  return new MediumError("io", `${what} failed: ${e instanceof Error ? e.message : String(e)}`, { path, cause: e });
}

/** Read until `buf` is full or the file ends; resolves with the count. */
export async function readFully(file: FileIo, pos: number, buf: Uint8Array): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const n = await file.read(pos + done, buf.subarray(done));
    if (n <= 0) break;
    done += n;
  }
  return done;
}

const corrupt = (m: string): VhdxParseError => new VhdxParseError("corrupt", m);
const unsupported = (m: string): VhdxParseError => new VhdxParseError("unsupported", m);
const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

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

export async function readVhdxMetadata(file: FileIo): Promise<VhdxMetadata> {
  const fileSize = await file.size();
  if (fileSize < HEADER_SECTION_SIZE) {
    const head = new Uint8Array(8);
    await readFully(file, 0, head);
    if (!isVhdx(head)) throw new VhdxParseError("invalid-format", "no 'vhdxfile' signature");
    throw corrupt(`file is ${fileSize} bytes, shorter than the 1 MiB header section`);
  }
  const section = await readExact(file, 0, HEADER_SECTION_SIZE, "header section");
  if (!isVhdx(section)) throw new VhdxParseError("invalid-format", "no 'vhdxfile' signature");
  const creator = parseCreator(section.subarray(0, 64 * KiB));

  const { header, which } = pickHeader(
    section.subarray(HEADER1_OFFSET, HEADER1_OFFSET + HEADER_SIZE),
    section.subarray(HEADER2_OFFSET, HEADER2_OFFSET + HEADER_SIZE),
  );

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

  // Log: anything to replay means the BAT and metadata on disk may be stale.
  if (!isNullUuid(header.logGuid)) {
    if (header.logLength === 0) throw corrupt("header has a log GUID but an empty log");
    checkRegion("log", header.logOffset, header.logLength, fileSize);
    spans.push(["log", header.logOffset, header.logLength]);
    if (header.logLength > MAX_IN_MEMORY || validLogEntries(await readExact(file, header.logOffset, header.logLength, "log"), header.logGuid).length) {
      throw unsupported("the log is not empty: it needs replay, which this read-only reader does not do (open the image once in Hyper-V, or run `qemu-img check -r all` on it)");
    }
  }
  for (let i = 0; i < spans.length; i++) {
    for (let j = i + 1; j < spans.length; j++) {
      const [an, ao, al] = spans[i]!;
      const [bn, bo, bl] = spans[j]!;
      if (ao < bo + bl && bo < ao + al) throw corrupt(`${an} and ${bn} overlap`);
    }
  }

  // Metadata region.
  if (metaRegion.length > MAX_IN_MEMORY) throw unsupported(`metadata region of ${metaRegion.length} bytes`);
  if (metaRegion.length < METADATA_TABLE_SIZE) throw corrupt("metadata region is smaller than its table");
  const { params } = parseMetadataRegion(await readExact(file, metaRegion.fileOffset, metaRegion.length, "metadata region"));
  const { blockSize, virtualDiskSize: size, logicalSectorSize: lss, physicalSectorSize: pss } = params;
  if (!isPow2(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw corrupt(`block size ${blockSize} (a power of two from 1 MiB to 256 MiB)`);
  }
  if (lss !== 512 && lss !== 4096) throw corrupt(`logical sector size ${lss} (512 or 4096)`);
  if (pss !== 512 && pss !== 4096) throw corrupt(`physical sector size ${pss} (512 or 4096)`);
  if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_VHDX_SIZE || size % lss) {
    throw corrupt(`virtual disk size ${size} (a multiple of ${lss} up to 64 TiB)`);
  }
  if (params.hasParent) throw unsupported("differencing VHDX (has a parent) is not supported yet");
  if (lss !== 512) throw unsupported(`logical sector size ${lss} is not supported yet (only 512)`);

  // BAT.
  const geometry = batGeometry(size, blockSize, lss, params.hasParent);
  const batBytes = geometry.totalEntries * BAT_ENTRY_SIZE;
  if (batBytes > batRegion.length) throw corrupt(`BAT region (${batRegion.length} bytes) is smaller than the ${geometry.totalEntries} entries the disk needs`);
  const batBuf = await readExact(file, batRegion.fileOffset, batBytes, "BAT");
  const bat = new DataView(batBuf.buffer, batBuf.byteOffset, batBuf.byteLength);
  for (let i = 0; i < geometry.payloadBlocks; i++) {
    const { state, offset } = decodeEntry(bat, payloadIndex(i, geometry.chunkRatio));
    switch (state) {
      case PayloadState.notPresent:
      case PayloadState.undefined:
      case PayloadState.zero:
      case PayloadState.unmapped:
        break;
      case PayloadState.fullyPresent: {
        const length = Math.min(blockSize, size - i * blockSize);
        if (offset < HEADER_SECTION_SIZE) throw corrupt(`BAT entry for block ${i} points into the header section (${offset})`);
        if (offset + length > fileSize) throw corrupt(`BAT entry for block ${i} at ${offset}+${length} is beyond the end of the file (${fileSize})`);
        for (const [name, o, l] of spans) {
          if (offset < o + l && o < offset + length) throw corrupt(`block ${i} at ${offset} overlaps the ${name}`);
        }
        break;
      }
      case PayloadState.partiallyPresent:
        throw corrupt(`block ${i} is partially present in an image without a parent`);
      default:
        throw corrupt(`BAT entry for block ${i} has reserved state ${state}`);
    }
  }
  for (let c = 0; c < geometry.sectorBitmapBlocks; c++) {
    const index = c * (geometry.chunkRatio + 1) + geometry.chunkRatio;
    if (index >= geometry.totalEntries) break;
    const { state } = decodeEntry(bat, index);
    if (state !== SectorBitmapState.notPresent && state !== SectorBitmapState.present) {
      throw corrupt(`sector bitmap entry ${c} has reserved state ${state}`);
    }
  }
  return { creator, header, headerCopy: which, regions, params, geometry, bat, fileSize };
}
