/**
 * VDI pre-header and header (VirtualBox VDICore.h: VDIPREHEADER, VDIHEADER1, VDIHEADER1PLUS).
 * Pure codec: bytes in, a validated structure out, and back. No I/O.
 *
 *   0x000  64  text ("<<< Oracle VM VirtualBox Disk Image >>>\n"; never checked)
 *   0x040   4  signature 0xBEDA107F
 *   0x044   4  version 0x00010001 (1.1)
 *   0x048   4  header size: 0x180 (v1, qemu) or 0x190 (v1plus, VirtualBox)
 *   0x04C   4  image type: 1 normal (dynamic), 2 fixed, 3 undo, 4 diff
 *   0x050   4  flags: bit 0 = zero-expand
 *   0x054 256  comment (UTF-8, NUL-terminated)
 *   0x154   4  offset of the block map        0x158  4  offset of block 0's data
 *   0x15C  16  legacy geometry C/H/S/sector size   0x16C  4  unused (was BIOS translation)
 *   0x170   8  disk size                      0x178  4  block size (1 MiB by default)
 *   0x17C   4  extra bytes before each block  0x180  4  blocks   0x184  4  blocks allocated
 *   0x188  16  UUID  0x198 16 modify UUID  0x1A8 16 parent (linkage) UUID  0x1B8 16 parent modify UUID
 *   0x1C8  16  LCHS geometry (v1plus only)
 * All little-endian; UUIDs in GUID byte order (see ../uuid.ts).
 */
import { MediumError, type MediumErrorKind } from "../../block.js";
import { decodeCString, utf8Length, writeCString } from "../text-codec.js";
import { NULL_UUID, isNullUuid, isUuid, uuidFromGuidBytes, uuidToGuidBytes } from "../uuid.js";

export const VDI_SIGNATURE = 0xbeda107f;
/** Version 1.1, the only one written since VirtualBox 1.x and the only one qemu accepts. */
export const VDI_VERSION_1_1 = 0x00010001;
export const VDI_FILE_INFO = "<<< Oracle VM VirtualBox Disk Image >>>\n";
export const PRE_HEADER_SIZE = 72;
/** VDIHEADER1 (what qemu writes). */
export const HEADER_V1_SIZE = 0x180;
/** VDIHEADER1PLUS: v1 plus the LCHS geometry (what VirtualBox writes). */
export const HEADER_V1PLUS_SIZE = 0x190;
/** Bytes to read to parse any header we understand. */
export const HEADER_READ_SIZE = PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE;
export const COMMENT_SIZE = 256;
export const SECTOR_SIZE = 512;
/** VDI_IMAGE_DEFAULT_BLOCK_SIZE. */
export const DEFAULT_BLOCK_SIZE = 1 << 20;
/** VDI_DATA_ALIGN: VirtualBox aligns the block map and the data area to 1 MiB (qemu: 512 bytes). */
export const VDI_DATA_ALIGN = 1 << 20;
/** Largest block we accept: VirtualBox opens up to 128 MiB. */
export const MAX_BLOCK_SIZE = 128 << 20;
/** Largest block map we keep in memory: 2^26 entries (256 MiB of map, 64 TiB at 1 MiB blocks). */
export const MAX_BLOCK_COUNT = 1 << 26;
/** Bit 0 of the flags: VD_VDI_IMAGE_FLAGS_ZERO_EXPAND (VD flag 0x100). */
export const VDI_FLAG_ZERO_EXPAND = 1;

/** VDIIMAGETYPE. */
export const VdiImageType = { normal: 1, fixed: 2, undo: 3, diff: 4 } as const;
export type VdiImageType = (typeof VdiImageType)[keyof typeof VdiImageType];

export interface VdiGeometry {
  cylinders: number;
  heads: number;
  sectors: number;
  sectorSize: number;
}

export interface VdiHeader {
  /** The pre-header text, for eyes only. */
  fileInfo: string;
  version: number;
  /** Size of the header after the pre-header: 0x180 (v1) or 0x190 (v1plus). */
  headerSize: number;
  type: VdiImageType;
  flags: number;
  comment: string;
  /** File offset of the block map. */
  blockMapOffset: number;
  /** File offset of data block 0. */
  dataOffset: number;
  legacyGeometry: VdiGeometry;
  /** Unused u32 after the legacy geometry (was the BIOS translation mode); kept as found. */
  translation: number;
  /** Virtual size in bytes, as stored (may be odd in images from old VirtualBox versions). */
  diskSize: number;
  blockSize: number;
  /** Bytes of per-block service data stored before each block's data (0 in practice). */
  blockExtra: number;
  blockCount: number;
  blocksAllocated: number;
  uuid: string;
  modifyUuid: string;
  /** Linkage UUID: the parent's `uuid` in a differencing image, else the null UUID. */
  parentUuid: string;
  /** The parent's `modifyUuid` when this child was made or last re-linked, else null UUID. */
  parentModifyUuid: string;
  /** Present in v1plus headers (headerSize >= 0x190). */
  lchsGeometry: VdiGeometry | null;
}

const O = {
  signature: 0x40,
  version: 0x44,
  headerSize: 0x48,
  type: 0x4c,
  flags: 0x50,
  comment: 0x54,
  blockMapOffset: 0x154,
  dataOffset: 0x158,
  legacyGeometry: 0x15c,
  translation: 0x16c,
  diskSize: 0x170,
  blockSize: 0x178,
  blockExtra: 0x17c,
  blockCount: 0x180,
  blocksAllocated: 0x184,
  uuid: 0x188,
  modifyUuid: 0x198,
  parentUuid: 0x1a8,
  parentModifyUuid: 0x1b8,
  lchsGeometry: 0x1c8,
} as const;

const hex = (v: number): string => "0x" + v.toString(16);
const isPowerOfTwo = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;

/** Where errors point: the file (for messages) and whether to blame the header. */
export interface CodecContext {
  path?: string;
}

function fail(kind: MediumErrorKind, message: string, ctx: CodecContext, offset?: number): never {
  throw new MediumError(kind, message, { path: ctx.path, offset });
}

/** Bytes of the header we write back: the pre-header plus v1 or v1plus (never unknown trailing fields). */
export function headerWriteSize(h: Pick<VdiHeader, "headerSize">): number {
  return PRE_HEADER_SIZE + (h.headerSize >= HEADER_V1PLUS_SIZE ? HEADER_V1PLUS_SIZE : HEADER_V1_SIZE);
}

/** Bytes per data block in the file, service data included. */
export function slotSize(h: Pick<VdiHeader, "blockSize" | "blockExtra">): number {
  return h.blockSize + h.blockExtra;
}

/** The virtual size we present: rounded down to whole sectors, as VirtualBox does on open. */
export function virtualSize(h: Pick<VdiHeader, "diskSize">): number {
  return h.diskSize - (h.diskSize % SECTOR_SIZE);
}

function readGeometry(v: DataView, at: number): VdiGeometry {
  return {
    cylinders: v.getUint32(at, true),
    heads: v.getUint32(at + 4, true),
    sectors: v.getUint32(at + 8, true),
    sectorSize: v.getUint32(at + 12, true),
  };
}

/**
 * Parse and validate the pre-header and header from the first bytes of a file (pass at least
 * HEADER_READ_SIZE bytes when the file has them). Throws MediumError:
 * "invalid-format" if this is not a VDI at all, "unsupported" for versions, flags and sizes we do
 * not handle, "corrupt" for a VDI whose fields contradict each other.
 */
export function parseHeader(bytes: Uint8Array, ctx: CodecContext = {}): VdiHeader {
  if (bytes.length < PRE_HEADER_SIZE) {
    fail("invalid-format", `file too small for a VDI pre-header (${bytes.length} bytes, need ${PRE_HEADER_SIZE})`, ctx);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const signature = v.getUint32(O.signature, true);
  if (signature !== VDI_SIGNATURE) {
    fail("invalid-format", `not a VDI image: signature ${hex(signature)} is not ${hex(VDI_SIGNATURE)}`, ctx, O.signature);
  }
  const version = v.getUint32(O.version, true);
  if (version !== VDI_VERSION_1_1) {
    fail("unsupported", `VDI version ${version >>> 16}.${version & 0xffff} (${hex(version)}) is not supported (only 1.1)`, ctx, O.version);
  }
  if (bytes.length < PRE_HEADER_SIZE + HEADER_V1_SIZE) {
    fail("corrupt", `truncated VDI header: ${bytes.length} bytes, need ${PRE_HEADER_SIZE + HEADER_V1_SIZE}`, ctx);
  }
  const headerSize = v.getUint32(O.headerSize, true);
  if (headerSize < HEADER_V1_SIZE) {
    fail("corrupt", `VDI header size ${hex(headerSize)} is below the v1 header size ${hex(HEADER_V1_SIZE)}`, ctx, O.headerSize);
  }
  const hasLchs = headerSize >= HEADER_V1PLUS_SIZE;
  if (hasLchs && bytes.length < PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE) {
    fail("corrupt", `truncated VDI header: ${bytes.length} bytes, header size ${hex(headerSize)} needs ${PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE}`, ctx);
  }

  const type = v.getUint32(O.type, true);
  if (type < VdiImageType.normal || type > VdiImageType.diff) {
    fail("corrupt", `VDI image type ${type} is not 1 (normal), 2 (fixed), 3 (undo) or 4 (diff)`, ctx, O.type);
  }
  const flags = v.getUint32(O.flags, true);
  if (flags & ~VDI_FLAG_ZERO_EXPAND) {
    fail("unsupported", `VDI image flags ${hex(flags)} has unknown bits ${hex(flags & ~VDI_FLAG_ZERO_EXPAND)}`, ctx, O.flags);
  }
  const legacyGeometry = readGeometry(v, O.legacyGeometry);
  if (legacyGeometry.sectorSize !== SECTOR_SIZE && legacyGeometry.sectorSize !== 0) {
    fail("unsupported", `VDI sector size ${legacyGeometry.sectorSize} is not ${SECTOR_SIZE}`, ctx, O.legacyGeometry + 12);
  }
  const lchsGeometry = hasLchs ? readGeometry(v, O.lchsGeometry) : null;
  if (lchsGeometry && lchsGeometry.sectorSize !== SECTOR_SIZE) {
    fail("corrupt", `VDI LCHS geometry sector size ${lchsGeometry.sectorSize} is not ${SECTOR_SIZE}`, ctx, O.lchsGeometry + 12);
  }

  const sizeHigh = v.getUint32(O.diskSize + 4, true);
  const sizeLow = v.getUint32(O.diskSize, true);
  if (sizeHigh >= 0x200000) {
    fail("unsupported", `VDI disk size ${hex(sizeHigh)}${sizeLow.toString(16).padStart(8, "0")} is beyond 2^53 bytes`, ctx, O.diskSize);
  }
  const diskSize = sizeHigh * 0x1_0000_0000 + sizeLow;
  if (diskSize === 0) fail("corrupt", "VDI disk size is 0", ctx, O.diskSize);

  const blockSize = v.getUint32(O.blockSize, true);
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR_SIZE) {
    fail("corrupt", `VDI block size ${blockSize} is not a power of two of at least ${SECTOR_SIZE}`, ctx, O.blockSize);
  }
  if (blockSize > MAX_BLOCK_SIZE) {
    fail("unsupported", `VDI block size ${blockSize} is above ${MAX_BLOCK_SIZE}`, ctx, O.blockSize);
  }
  const blockExtra = v.getUint32(O.blockExtra, true);
  if (blockExtra !== 0 && !isPowerOfTwo(blockExtra)) {
    fail("corrupt", `VDI extra block data size ${blockExtra} is not a power of two`, ctx, O.blockExtra);
  }
  if (blockExtra > blockSize) {
    fail("unsupported", `VDI extra block data size ${blockExtra} is larger than the block size ${blockSize}`, ctx, O.blockExtra);
  }
  const blockCount = v.getUint32(O.blockCount, true);
  const needed = Math.ceil(diskSize / blockSize);
  if (blockCount !== needed) {
    fail("corrupt", `VDI block count ${blockCount} does not match disk size ${diskSize} / block size ${blockSize} (${needed} blocks)`, ctx, O.blockCount);
  }
  if (blockCount > MAX_BLOCK_COUNT) {
    fail("unsupported", `VDI block count ${blockCount} is above ${MAX_BLOCK_COUNT}`, ctx, O.blockCount);
  }
  const blocksAllocated = v.getUint32(O.blocksAllocated, true);
  if (blocksAllocated > blockCount) {
    fail("corrupt", `VDI blocks allocated ${blocksAllocated} is more than the block count ${blockCount}`, ctx, O.blocksAllocated);
  }

  const written = PRE_HEADER_SIZE + (hasLchs ? HEADER_V1PLUS_SIZE : HEADER_V1_SIZE);
  const blockMapOffset = v.getUint32(O.blockMapOffset, true);
  if (blockMapOffset < written || blockMapOffset < PRE_HEADER_SIZE + headerSize) {
    fail("corrupt", `VDI block map offset ${hex(blockMapOffset)} is inside the header (header size ${hex(headerSize)})`, ctx, O.blockMapOffset);
  }
  const dataOffset = v.getUint32(O.dataOffset, true);
  const mapEnd = blockMapOffset + 4 * blockCount;
  if (dataOffset < mapEnd) {
    fail("corrupt", `VDI data offset ${hex(dataOffset)} is before the end of the block map (${hex(mapEnd)})`, ctx, O.dataOffset);
  }

  const uuid = uuidFromGuidBytes(bytes, O.uuid);
  const modifyUuid = uuidFromGuidBytes(bytes, O.modifyUuid);
  const parentUuid = uuidFromGuidBytes(bytes, O.parentUuid);
  const parentModifyUuid = uuidFromGuidBytes(bytes, O.parentModifyUuid);
  if (isNullUuid(uuid)) fail("corrupt", "VDI image UUID is null", ctx, O.uuid);
  if (isNullUuid(modifyUuid)) fail("corrupt", "VDI modification UUID is null", ctx, O.modifyUuid);
  if (type === VdiImageType.diff && isNullUuid(parentUuid)) {
    fail("corrupt", "VDI differencing image (type 4) has a null parent UUID", ctx, O.parentUuid);
  }

  return {
    fileInfo: decodeCString(bytes.subarray(0, 64)),
    version,
    headerSize,
    type: type as VdiImageType,
    flags,
    comment: decodeCString(bytes.subarray(O.comment, O.comment + COMMENT_SIZE)),
    blockMapOffset,
    dataOffset,
    legacyGeometry,
    translation: v.getUint32(O.translation, true),
    diskSize,
    blockSize,
    blockExtra,
    blockCount,
    blocksAllocated,
    uuid,
    modifyUuid,
    parentUuid,
    parentModifyUuid,
    lchsGeometry,
  };
}

function writeGeometry(v: DataView, at: number, g: VdiGeometry): void {
  v.setUint32(at, g.cylinders, true);
  v.setUint32(at + 4, g.heads, true);
  v.setUint32(at + 8, g.sectors, true);
  v.setUint32(at + 12, g.sectorSize, true);
}

/**
 * The pre-header and header as bytes (`headerWriteSize(h)` long). Fields beyond v1plus in a
 * longer header are not ours and are not written.
 */
export function serializeHeader(h: VdiHeader): Uint8Array {
  const out = new Uint8Array(headerWriteSize(h));
  const v = new DataView(out.buffer);
  writeCString(h.fileInfo, out, 0, 64);
  v.setUint32(O.signature, VDI_SIGNATURE, true);
  v.setUint32(O.version, h.version, true);
  v.setUint32(O.headerSize, h.headerSize, true);
  v.setUint32(O.type, h.type, true);
  v.setUint32(O.flags, h.flags, true);
  writeCString(h.comment, out, O.comment, COMMENT_SIZE);
  v.setUint32(O.blockMapOffset, h.blockMapOffset, true);
  v.setUint32(O.dataOffset, h.dataOffset, true);
  writeGeometry(v, O.legacyGeometry, h.legacyGeometry);
  v.setUint32(O.translation, h.translation, true);
  v.setUint32(O.diskSize, h.diskSize % 0x1_0000_0000, true);
  v.setUint32(O.diskSize + 4, Math.floor(h.diskSize / 0x1_0000_0000), true);
  v.setUint32(O.blockSize, h.blockSize, true);
  v.setUint32(O.blockExtra, h.blockExtra, true);
  v.setUint32(O.blockCount, h.blockCount, true);
  v.setUint32(O.blocksAllocated, h.blocksAllocated, true);
  uuidToGuidBytes(h.uuid, out, O.uuid);
  uuidToGuidBytes(h.modifyUuid, out, O.modifyUuid);
  uuidToGuidBytes(h.parentUuid, out, O.parentUuid);
  uuidToGuidBytes(h.parentModifyUuid, out, O.parentModifyUuid);
  if (h.headerSize >= HEADER_V1PLUS_SIZE) {
    writeGeometry(v, O.lchsGeometry, h.lchsGeometry ?? { cylinders: 0, heads: 0, sectors: 0, sectorSize: SECTOR_SIZE });
  }
  return out;
}

/**
 * Checks that need the file's size: the block map must be inside the file. (Map entries are
 * checked against the file by the block-map codec.)
 */
export function checkHeaderAgainstFile(h: VdiHeader, fileSize: number, ctx: CodecContext = {}): void {
  const mapEnd = h.blockMapOffset + 4 * h.blockCount;
  if (fileSize < mapEnd) {
    fail("corrupt", `VDI file is truncated: the block map ends at ${hex(mapEnd)}, the file is ${fileSize} bytes`, ctx, h.blockMapOffset);
  }
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

export interface NewHeaderOptions {
  diskSize: number;
  type: VdiImageType;
  uuid: string;
  modifyUuid: string;
  parentUuid?: string;
  parentModifyUuid?: string;
  blockSize?: number;
  /** Alignment of the block map and the data area: 1 MiB as VirtualBox, 512 as qemu. */
  dataAlign?: number;
  comment?: string;
  lchsGeometry?: { cylinders: number; heads: number; sectors: number };
}

/** A new v1plus header as VirtualBox writes it (vdiInitHeader), validated. */
export function newHeader(o: NewHeaderOptions, ctx: CodecContext = {}): VdiHeader {
  const blockSize = o.blockSize ?? DEFAULT_BLOCK_SIZE;
  const align = o.dataAlign ?? VDI_DATA_ALIGN;
  if (!isPowerOfTwo(blockSize) || blockSize < SECTOR_SIZE || blockSize > MAX_BLOCK_SIZE) {
    fail("unsupported", `block size ${blockSize} is not a power of two between ${SECTOR_SIZE} and ${MAX_BLOCK_SIZE}`, ctx);
  }
  if (!isPowerOfTwo(align) || align < SECTOR_SIZE) fail("unsupported", `data alignment ${align} is not a power of two >= 512`, ctx);
  if (!Number.isSafeInteger(o.diskSize) || o.diskSize <= 0 || o.diskSize % SECTOR_SIZE) {
    fail("unsupported", `disk size ${o.diskSize} is not a positive multiple of ${SECTOR_SIZE}`, ctx);
  }
  const comment = o.comment ?? "";
  if (utf8Length(comment) >= COMMENT_SIZE) fail("unsupported", `comment of ${utf8Length(comment)} bytes does not fit (max ${COMMENT_SIZE - 1})`, ctx);
  for (const [name, u] of Object.entries({ uuid: o.uuid, modifyUuid: o.modifyUuid, parentUuid: o.parentUuid, parentModifyUuid: o.parentModifyUuid })) {
    if (u !== undefined && !isUuid(u)) fail("unsupported", `${name} ${JSON.stringify(u)} is not a UUID`, ctx);
  }
  const blockCount = Math.ceil(o.diskSize / blockSize);
  if (blockCount > MAX_BLOCK_COUNT) fail("unsupported", `${blockCount} blocks is above ${MAX_BLOCK_COUNT}`, ctx);
  const blockMapOffset = alignUp(PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE, align);
  const dataOffset = alignUp(blockMapOffset + 4 * blockCount, align);
  if (dataOffset > 0xffffffff) fail("unsupported", `data offset ${hex(dataOffset)} does not fit 32 bits`, ctx);
  const fixed = o.type === VdiImageType.fixed;
  const h: VdiHeader = {
    fileInfo: VDI_FILE_INFO,
    version: VDI_VERSION_1_1,
    headerSize: HEADER_V1PLUS_SIZE,
    type: o.type,
    flags: 0,
    comment,
    blockMapOffset,
    dataOffset,
    legacyGeometry: { cylinders: 0, heads: 0, sectors: 0, sectorSize: SECTOR_SIZE },
    translation: 0,
    diskSize: o.diskSize,
    blockSize,
    blockExtra: 0,
    blockCount,
    blocksAllocated: fixed ? blockCount : 0,
    uuid: o.uuid,
    modifyUuid: o.modifyUuid,
    parentUuid: o.parentUuid ?? NULL_UUID,
    parentModifyUuid: o.parentModifyUuid ?? NULL_UUID,
    lchsGeometry: { cylinders: 0, heads: 0, sectors: 0, sectorSize: SECTOR_SIZE, ...o.lchsGeometry },
  };
  // Round-trip through the parser so a new image passes exactly the checks an opened one does.
  return parseHeader(serializeHeader(h), ctx);
}
