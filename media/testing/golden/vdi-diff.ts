/**
 * Golden differencing VDI over a golden dynamic VDI parent, as VirtualBox lays them out (qemu
 * can neither create nor read VDI differencing images):
 *
 *   0x000  pre-header: 64 bytes of text, signature 0xBEDA107F at 0x40, version 1.1
 *   0x048  header v1+ (400 bytes): type (1 normal, 4 diff), offsets of the block map and the data,
 *          legacy geometry (sector size 512), disk size, block size, block counts, the four UUIDs
 *          (create, modify, linkage = parent's create, parent modify = parent's modify), LCHS
 *   offBlocks  block map: u32 LE per block: 0xFFFFFFFF free (read the parent), 0xFFFFFFFE zero
 *          (reads zeros, never the parent), else the index of the block in the data area
 *   offData    the blocks, each a full cbBlock even when the disk ends inside it
 *
 * VirtualBox aligns offBlocks and offData to 1 MiB. UUIDs are stored as raw bytes. Facts from
 * VDICore.h / VDI.cpp as summarised in /work/shared/ref/media-formats.md section 1; none of our
 * VDI code is used.
 */
import { alignUp, Bytes, fillSectors, fillText, MiB, SECTOR, uuidBytes, type GoldenDisk } from "./shared.js";

const SIGNATURE = 0xbeda107f;
const VERSION_1_1 = 0x00010001;
const PRE_HEADER = 0x48;
const HEADER_V1PLUS = 400;
export const VDI_NORMAL = 1;
export const VDI_DIFF = 4;
export const VDI_FREE = 0xffffffff;
export const VDI_ZERO = 0xfffffffe;

/** A block of the image: free, marked zero, or stored with this data (cbBlock bytes). */
export type VdiBlock = "free" | "zero" | Uint8Array;

export interface VdiFileOptions {
  type: typeof VDI_NORMAL | typeof VDI_DIFF;
  size: number;
  blockSize: number;
  uuidCreate: Uint8Array;
  uuidModify: Uint8Array;
  uuidLinkage?: Uint8Array;
  uuidParentModify?: Uint8Array;
  blocks: VdiBlock[];
  /** Order of the stored blocks in the data area (block indexes). */
  fileOrder: number[];
  /** Alignment of the block map and the data (1 MiB as VirtualBox; 512 as qemu). */
  align: number;
}

export function buildVdi(o: VdiFileOptions): Uint8Array {
  const cBlocks = o.blocks.length;
  if (cBlocks !== Math.ceil(o.size / o.blockSize)) throw new Error("block count does not match the size");
  const offBlocks = alignUp(PRE_HEADER + HEADER_V1PLUS, o.align);
  const offData = alignUp(offBlocks + 4 * cBlocks, o.align);
  const file = new Uint8Array(offData + o.fileOrder.length * o.blockSize);
  const w = new Bytes(file)
    .ascii(0, "<<< Oracle VM VirtualBox Disk Image >>>\n")
    .u32le(0x40, SIGNATURE)
    .u32le(0x44, VERSION_1_1)
    .u32le(0x48, HEADER_V1PLUS)
    .u32le(0x4c, o.type)
    .u32le(0x50, 0) // flags
    .ascii(0x54, "golden image (test-side generator)")
    .u32le(0x154, offBlocks)
    .u32le(0x158, offData)
    .u32le(0x168, SECTOR) // legacy geometry: C, H, S left 0; the sector size must be 512
    .u64le(0x170, o.size)
    .u32le(0x178, o.blockSize)
    .u32le(0x17c, 0) // cbBlockExtra
    .u32le(0x180, cBlocks)
    .u32le(0x184, o.fileOrder.length)
    .set(0x188, o.uuidCreate)
    .set(0x198, o.uuidModify)
    .set(0x1a8, o.uuidLinkage ?? new Uint8Array(16))
    .set(0x1b8, o.uuidParentModify ?? new Uint8Array(16))
    .u32le(0x1d4, SECTOR); // LCHS geometry: 0/0/0 (unset), sector size 512
  const slot = new Map(o.fileOrder.map((b, i) => [b, i]));
  o.blocks.forEach((b, i) => {
    const n = slot.get(i);
    if (b instanceof Uint8Array) {
      if (n === undefined) throw new Error(`stored block ${i} is not in fileOrder`);
      w.u32le(offBlocks + 4 * i, n).set(offData + n * o.blockSize, b);
    } else {
      if (n !== undefined) throw new Error(`block ${i} is ${b} but in fileOrder`);
      w.u32le(offBlocks + 4 * i, b === "free" ? VDI_FREE : VDI_ZERO);
    }
  });
  return file;
}

/** A block's data: `tag` content over the part inside the disk, zeros past its end. */
function stored(index: number, blockSize: number, size: number, tag: string, text = false): Uint8Array {
  const b = new Uint8Array(blockSize);
  const inDisk = Math.min(blockSize, size - index * blockSize);
  (text ? fillText : fillSectors)(b.subarray(0, inDisk), index * blockSize, tag);
  return b;
}

export interface VdiDiffScenario {
  parent: GoldenDisk;
  /** expected: the chain child -> parent. */
  child: GoldenDisk;
}

/**
 * The golden pair: 6 MiB + 64 KiB (7 blocks of 1 MiB, the last one partial).
 *
 *   block        0      1      2      3      4      5      6 (partial)
 *   parent       data   data   data   free   data   zero   data       order 1,4,0,6,2
 *   child        free   data   ZERO   data   free   free   data       order 6,3,1
 *   reads        P      C      zeros  C      P      zeros  C
 *
 * Block 2 is the point of (c): the child marks it zero and it must read as zeros although the
 * parent has data there.
 */
export function vdiDiffScenario(o: { parentName: string; childName: string }): VdiDiffScenario {
  const blockSize = MiB;
  const size = 6 * MiB + 64 * 1024;
  const parentCreate = uuidBytes(101);
  const parentModify = uuidBytes(102);
  const p = (i: number, text = false) => stored(i, blockSize, size, "VDIP", text);
  const c = (i: number) => stored(i, blockSize, size, "VDIC");
  const pBlocks: VdiBlock[] = [p(0), p(1, true), p(2), "free", p(4), "zero", p(6)];
  const cBlocks: VdiBlock[] = ["free", c(1), "zero", c(3), "free", "free", c(6)];
  const parentBytes = buildVdi({
    type: VDI_NORMAL,
    size,
    blockSize,
    uuidCreate: parentCreate,
    uuidModify: parentModify,
    blocks: pBlocks,
    fileOrder: [1, 4, 0, 6, 2],
    align: MiB,
  });
  const childBytes = buildVdi({
    type: VDI_DIFF,
    size,
    blockSize,
    uuidCreate: uuidBytes(201),
    uuidModify: uuidBytes(202),
    uuidLinkage: parentCreate,
    uuidParentModify: parentModify,
    blocks: cBlocks,
    fileOrder: [6, 3, 1],
    align: MiB,
  });

  const parentView = new Uint8Array(size);
  const chainView = new Uint8Array(size);
  for (let i = 0; i < pBlocks.length; i++) {
    const at = i * blockSize;
    const n = Math.min(blockSize, size - at);
    const pb = pBlocks[i]!;
    const cb = cBlocks[i]!;
    if (pb instanceof Uint8Array) parentView.set(pb.subarray(0, n), at);
    if (cb instanceof Uint8Array) chainView.set(cb.subarray(0, n), at);
    else if (cb === "free") chainView.set(parentView.subarray(at, at + n), at);
  }
  return {
    parent: { files: [{ name: o.parentName, bytes: parentBytes }], size, expected: parentView },
    child: { files: [{ name: o.childName, bytes: childBytes }], size, expected: chainView },
  };
}
