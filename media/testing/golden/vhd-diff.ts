/**
 * Golden differencing VHD over a golden dynamic VHD parent, laid out as VirtualBox writes them
 * (qemu cannot create differencing VHDs, and reads one as if it were dynamic):
 *
 *   0        footer copy (512)
 *   512      dynamic header (1024): "cxsparse", BAT offset, block size, and for a child the
 *            parent's unique id, its footer timestamp, its file name in UTF-16BE and two parent
 *            locators, W2ku (absolute path) and W2ru (relative path), UTF-16LE, 1024 bytes
 *            reserved each, dataSpace counted in bytes (what Virtual PC, Hyper-V and VirtualBox
 *            store, although the spec says sectors)
 *   1536     BAT: u32 BE sector offsets, 0xFFFFFFFF = not allocated, padded to a sector
 *   ...      locator data (child), then blocks: sector bitmap (MSB first: bit 7 of byte 0 is the
 *            block's sector 0) + block data, in any order the BAT says
 *   EOF-512  footer
 *
 * All fields big-endian; footer and header checksums are the one's complement of the byte sum
 * with the checksum field zeroed. Facts from the Microsoft VHD specification (2006) and
 * /work/shared/ref/media-formats.md section 3; none of our VHD code is used.
 */
import { alignUp, Bytes, fillSectors, MiB, SECTOR, type GoldenDisk } from "./shared.js";

const FOOTER_SIZE = 512;
const HEADER_SIZE = 1024;
const BAT_OFFSET = FOOTER_SIZE + HEADER_SIZE;
const UNALLOCATED = 0xffffffff;
export const VHD_DYNAMIC = 3;
export const VHD_DIFFERENCING = 4;
const PLATFORM_W2KU = 0x57326b75;
const PLATFORM_W2RU = 0x57327275;
const LOCATOR_SPACE = 1024;
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC). */
const VHD_EPOCH = 946684800;

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** CHS geometry by the VHD specification's algorithm (appendix "CHS calculation"). */
export function vhdGeometry(totalSectors: number): Geometry {
  const total = Math.min(totalSectors, 65535 * 16 * 255);
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
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

export function vhdChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum += b;
  return ~sum >>> 0;
}

/** One stored block: which of its sectors the bitmap marks present, and its data area as on disk. */
export interface VhdBlock {
  present: Uint8Array; // one byte per sector of the block: 1 = bit set
  data: Uint8Array; // blockSize bytes
}

export interface ParentRef {
  uniqueId: Uint8Array;
  /** The parent footer's timestamp (VHD epoch seconds). */
  timestamp: number;
  /** File name only, for the header's parent unicode name. */
  name: string;
  absolutePath: string;
  relativePath: string;
}

export interface VhdFileOptions {
  diskType: typeof VHD_DYNAMIC | typeof VHD_DIFFERENCING;
  size: number;
  uniqueId: Uint8Array;
  timestamp: number;
  blockSize: number;
  /** By block index; null = not allocated. */
  blocks: (VhdBlock | null)[];
  /** Order of the allocated blocks in the file (block indexes). */
  fileOrder: number[];
  parent?: ParentRef;
}

function footer(o: VhdFileOptions): Uint8Array {
  const f = new Uint8Array(FOOTER_SIZE);
  const g = vhdGeometry(o.size / SECTOR);
  const w = new Bytes(f)
    .ascii(0, "conectix")
    .u32be(8, 2) // features: the reserved bit, always set
    .u32be(12, 0x00010000)
    .u64be(16, FOOTER_SIZE) // data offset: the dynamic header
    .u32be(24, o.timestamp)
    .ascii(28, "vbox")
    .u32be(32, 0x00070000)
    .ascii(36, "Wi2k")
    .u64be(40, o.size)
    .u64be(48, o.size)
    .u16be(56, g.cylinders)
    .u8(58, g.heads)
    .u8(59, g.sectorsPerTrack)
    .u32be(60, o.diskType)
    .set(68, o.uniqueId);
  w.u32be(64, vhdChecksum(f));
  return f;
}

function dynamicHeader(o: VhdFileOptions, locatorOffset: number): Uint8Array {
  const h = new Uint8Array(HEADER_SIZE);
  const w = new Bytes(h)
    .ascii(0, "cxsparse")
    .u64be(8, 0xffffffffffffffffn)
    .u64be(16, BAT_OFFSET)
    .u32be(24, 0x00010000)
    .u32be(28, o.blocks.length)
    .u32be(32, o.blockSize);
  if (o.parent) {
    w.set(40, o.parent.uniqueId).u32be(56, o.parent.timestamp);
    w.utf16(64, o.parent.name, false); // parent unicode name: UTF-16 big-endian
    const locators: [number, string][] = [
      [PLATFORM_W2KU, o.parent.absolutePath],
      [PLATFORM_W2RU, o.parent.relativePath],
    ];
    locators.forEach(([code, p], i) => {
      const e = 576 + i * 24;
      w.u32be(e, code)
        .u32be(e + 4, LOCATOR_SPACE)
        .u32be(e + 8, 2 * p.length)
        .u64be(e + 16, locatorOffset + i * LOCATOR_SPACE);
    });
  }
  w.u32be(36, vhdChecksum(h));
  return h;
}

/** Build a dynamic or differencing VHD file. */
export function buildVhd(o: VhdFileOptions): Uint8Array {
  const blockSectors = o.blockSize / SECTOR;
  const bitmapBytes = alignUp(Math.ceil(blockSectors / 8), SECTOR);
  const batBytes = alignUp(o.blocks.length * 4, SECTOR);
  const locatorOffset = BAT_OFFSET + batBytes;
  let end = locatorOffset + (o.parent ? 2 * LOCATOR_SPACE : 0);
  const blockAt = new Map<number, number>();
  for (const b of o.fileOrder) {
    if (!o.blocks[b]) throw new Error(`block ${b} is in fileOrder but not allocated`);
    blockAt.set(b, end);
    end += bitmapBytes + o.blockSize;
  }
  const file = new Uint8Array(end + FOOTER_SIZE);
  const w = new Bytes(file);
  const foot = footer(o);
  w.set(0, foot).set(end, foot);
  w.set(FOOTER_SIZE, dynamicHeader(o, locatorOffset));
  o.blocks.forEach((block, i) => {
    const at = blockAt.get(i);
    if (block && at === undefined) throw new Error(`block ${i} is allocated but not in fileOrder`);
    w.u32be(BAT_OFFSET + i * 4, at === undefined ? UNALLOCATED : at / SECTOR);
    if (!block || at === undefined) return;
    for (let s = 0; s < blockSectors; s++) if (block.present[s]) file[at + (s >> 3)]! |= 0x80 >> (s & 7);
    w.set(at + bitmapBytes, block.data);
  });
  if (o.parent) {
    w.utf16(locatorOffset, o.parent.absolutePath, true);
    w.utf16(locatorOffset + LOCATOR_SPACE, o.parent.relativePath, true);
  }
  return file;
}

/** A block whose listed sector ranges are present; data: `fill` for present sectors, `absent` else. */
function block(
  index: number,
  blockSize: number,
  diskSize: number,
  ranges: [number, number][] | "all",
  tag: string,
  absentTag: string | null,
): VhdBlock {
  const sectors = blockSize / SECTOR;
  const base = index * blockSize;
  const inDisk = Math.min(sectors, (diskSize - base) / SECTOR);
  const present = new Uint8Array(sectors);
  if (ranges === "all") present.fill(1, 0, inDisk);
  else for (const [a, b] of ranges) present.fill(1, a, b);
  const data = new Uint8Array(blockSize);
  for (let s = 0; s < inDisk; s++) {
    const sec = data.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (present[s]) fillSectors(sec, base + s * SECTOR, tag);
    else if (absentTag) fillSectors(sec, base + s * SECTOR, absentTag);
  }
  return { present, data };
}

export interface VhdDiffScenario {
  parent: GoldenDisk;
  /** expected: the chain child -> parent. */
  child: GoldenDisk;
  /** The child alone with its bitmaps ignored (how qemu reads it: as a dynamic VHD). */
  childAsDynamic: Uint8Array;
  parentUniqueId: Uint8Array;
}

/**
 * The golden pair. Size 300/4/17 CHS = 10,444,800 bytes, so the CHS size qemu uses for a "vbox"
 * image equals the footer's; 2 MiB blocks, so block 4 is a partial last block (4016 sectors).
 *
 * Parent (dynamic):  b0 all present | b1 a few runs present, zeros behind the rest (as VirtualBox
 *   leaves a block it wrote sector by sector) | b2 all present | b3 not allocated | b4 all present.
 *   File order 4, 0, 2, 1.
 * Child (differencing): b0 runs present (incl. the block's last sector), stale bytes behind the
 *   absent sectors, which must NOT be read | b1 not allocated (falls through to the parent's
 *   partial block) | b2 all present | b3 allocated with no sector present (all falls through, to
 *   a parent block that is not allocated) | b4 the first 16 and the last 16 sectors of the disk.
 *   File order 2, 0, 4, 3.
 */
export function vhdDiffScenario(o: { parentName: string; parentPath: string; relativeParentPath: string; childName: string }): VhdDiffScenario {
  const g: Geometry = { cylinders: 300, heads: 4, sectorsPerTrack: 17 };
  const size = g.cylinders * g.heads * g.sectorsPerTrack * SECTOR;
  const geo = vhdGeometry(size / SECTOR);
  if (geo.cylinders !== g.cylinders || geo.heads !== g.heads || geo.sectorsPerTrack !== g.sectorsPerTrack) throw new Error("geometry mismatch");
  const blockSize = 2 * MiB;
  const last = (size - 4 * blockSize) / SECTOR; // sectors of block 4 inside the disk
  const parentTime = Date.UTC(2024, 0, 1) / 1000 - VHD_EPOCH;
  const parentId = Uint8Array.from([0x3a, 0x91, 0x5c, 0x07, 0xe2, 0x4d, 0x8b, 0x41, 0x9f, 0x10, 0x6a, 0x2b, 0xc4, 0x75, 0xd8, 0x0e]);
  const childId = Uint8Array.from([0x71, 0x0c, 0xa4, 0x5e, 0x19, 0xb3, 0x27, 0x4f, 0x88, 0x6d, 0xe0, 0x52, 0x3f, 0x9a, 0x14, 0xc6]);

  const pBlocks = [
    block(0, blockSize, size, "all", "VHDP", null),
    block(1, blockSize, size, [[0, 64], [1000, 1100], [4095, 4096]], "VHDP", null),
    block(2, blockSize, size, "all", "VHDP", null),
    null,
    block(4, blockSize, size, "all", "VHDP", null),
  ];
  const cBlocks = [
    block(0, blockSize, size, [[0, 8], [100, 356], [4095, 4096]], "VHDC", "STAL"),
    null,
    block(2, blockSize, size, "all", "VHDC", null),
    block(3, blockSize, size, [], "VHDC", "STAL"),
    block(4, blockSize, size, [[0, 16], [last - 16, last]], "VHDC", "STAL"),
  ];
  const parentBytes = buildVhd({ diskType: VHD_DYNAMIC, size, uniqueId: parentId, timestamp: parentTime, blockSize, blocks: pBlocks, fileOrder: [4, 0, 2, 1] });
  const parentRef: ParentRef = { uniqueId: parentId, timestamp: parentTime, name: o.parentName, absolutePath: o.parentPath, relativePath: o.relativeParentPath };
  const childBytes = buildVhd({
    diskType: VHD_DIFFERENCING,
    size,
    uniqueId: childId,
    timestamp: parentTime + 3600,
    blockSize,
    blocks: cBlocks,
    fileOrder: [2, 0, 4, 3],
    parent: parentRef,
  });

  // Expected views, sector by sector.
  const parentView = new Uint8Array(size);
  const chainView = new Uint8Array(size);
  const childAsDynamic = new Uint8Array(size);
  for (let s = 0; s < size / SECTOR; s++) {
    const b = Math.floor((s * SECTOR) / blockSize);
    const inBlock = s - (b * blockSize) / SECTOR;
    const at = s * SECTOR;
    const sector = (blk: VhdBlock) => blk.data.subarray(inBlock * SECTOR, (inBlock + 1) * SECTOR);
    const pb = pBlocks[b];
    if (pb && pb.present[inBlock]) parentView.set(sector(pb), at);
    const cb = cBlocks[b];
    if (cb) childAsDynamic.set(sector(cb), at);
    chainView.set(cb && cb.present[inBlock] ? sector(cb) : parentView.subarray(at, at + SECTOR), at);
  }
  return {
    parent: { files: [{ name: o.parentName, bytes: parentBytes }], size, expected: parentView },
    child: { files: [{ name: o.childName, bytes: childBytes }], size, expected: chainView },
    childAsDynamic,
    parentUniqueId: parentId,
  };
}
