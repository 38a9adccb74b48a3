/**
 * Checking a VDI file without opening it for I/O: `vstor checkmedium`'s VDI part. Pure (a FileIo
 * in, a report out) and read-only: it never writes, truncates or flushes.
 *
 * Two kinds of findings, kept apart (as `qemu-img check` keeps "corruptions" apart from "leaked
 * clusters"):
 * - corruption: anything an open refuses (bad signature, fields that contradict each other, a
 *   map entry past the end of the file or shared by two blocks, ...). The check runs exactly the
 *   open's validation (readVdiMetadata), so the two can never disagree; the report carries the
 *   MediumError's kind and message.
 * - leaked space: bytes the file holds that no block uses. They are harmless (reads never see
 *   them, new blocks reuse the slots) and `compact` gives them back:
 *     - unreferenced slots: data slots below the last used one that no map entry points at
 *       (a block discarded or rewritten by a tool that does not move blocks);
 *     - unused slots at the end: the header counts more slots than the last used one + 1 (a
 *       crash after the header write of an allocation and before its map entry, see README);
 *     - bytes past the end: the file is longer than header + map + blocksAllocated slots.
 *   Each leaked byte is counted once.
 *
 * qemu-img 7.2 counts a header's blocks-allocated that differs from the number of referenced
 * slots as a corruption ("allocated blocks mismatch"); VirtualBox's vdiRepair does not flag it,
 * and neither do we: nothing is lost and nothing can be overwritten.
 */
import { MediumError, type MediumErrorKind } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { isNullUuid } from "../uuid.js";
import { BLOCK_FREE, BLOCK_ZERO, isAllocated } from "./block-map.js";
import { VdiImageType, slotSize, virtualSize } from "./header.js";
import { readVdiMetadata } from "./vdi-image.js";

export type VdiLeakKind = "unreferenced-slots" | "unused-slots-at-end" | "bytes-past-end";

export interface VdiLeak {
  kind: VdiLeakKind;
  /** Slots concerned (0 for bytes past the end). */
  slots: number;
  /**
   * Leaked bytes (each counted in one leak only). For unused slots at the end, the slots the
   * header counts, even where the file is shorter: the next new block goes after them.
   */
  bytes: number;
  /** First file offset concerned. */
  offset: number;
  message: string;
}

export interface VdiCorruption {
  kind: MediumErrorKind;
  /** The MediumError's message (it names the file). */
  message: string;
  offset?: number;
}

export interface VdiCheckImage {
  uuid: string;
  modifyUuid: string;
  /** Null unless the image is a differencing one. */
  parentUuid: string | null;
  parentModifyUuid: string | null;
  variant: "normal" | "fixed" | "diff";
  /** Virtual size in bytes. */
  size: number;
  blockSize: number;
  blockCount: number;
  /** Blocks stored in a data slot. */
  dataBlocks: number;
  /** Blocks marked zero. */
  zeroBlocks: number;
  /** Blocks not stored here (zeros in a base image, the parent's data in a differencing one). */
  freeBlocks: number;
  /** The header's count of data slots. */
  blocksAllocated: number;
  /** Where the last slot the header counts ends: the file's proper size. */
  expectedFileSize: number;
}

export interface VdiCheckReport {
  path: string;
  fileSize: number;
  /** Null when the image is corrupt (and then nothing else is known). */
  image: VdiCheckImage | null;
  corruption: VdiCorruption | null;
  leaks: VdiLeak[];
  /** Sum of the leaks' bytes. */
  leakedBytes: number;
}

const plural = (n: number, one: string, many = one + "s"): string => `${n} ${n === 1 ? one : many}`;

/** Slot numbers for a message: the first few, then how many more. */
function slotList(slots: number[]): string {
  const shown = slots.slice(0, 8).join(", ");
  return slots.length > 8 ? `${shown}, ... (${slots.length - 8} more)` : shown;
}

/** Check the VDI in `file`. Throws only for host I/O errors; image problems are in the report. */
export async function checkVdi(file: FileIo): Promise<VdiCheckReport> {
  const path = file.path;
  let meta;
  try {
    meta = await readVdiMetadata(file);
  } catch (e) {
    if (!(e instanceof MediumError) || e.kind === "io") throw e;
    const fileSize = await file.size();
    return {
      path,
      fileSize,
      image: null,
      corruption: { kind: e.kind, message: e.message, ...(e.offset !== undefined ? { offset: e.offset } : {}) },
      leaks: [],
      leakedBytes: 0,
    };
  }
  const { header: h, map, fileSize } = meta;
  const slot = slotSize(h);
  const slotOffset = (s: number): number => h.dataOffset + s * slot;

  // Which slots the map uses (the open has checked: below blocksAllocated, each at most once, in the file).
  const used = new Uint8Array(h.blocksAllocated);
  let dataBlocks = 0;
  let zeroBlocks = 0;
  let freeBlocks = 0;
  let highest = -1;
  for (const e of map) {
    if (isAllocated(e)) {
      used[e] = 1;
      dataBlocks++;
      if (e > highest) highest = e;
    } else if (e === BLOCK_ZERO) zeroBlocks++;
    else if (e === BLOCK_FREE) freeBlocks++;
  }

  const leaks: VdiLeak[] = [];
  const holes: number[] = [];
  for (let s = 0; s < highest; s++) if (!used[s]) holes.push(s);
  if (holes.length > 0) {
    leaks.push({
      kind: "unreferenced-slots",
      slots: holes.length,
      bytes: holes.length * slot,
      offset: slotOffset(holes[0]!),
      message:
        `${plural(holes.length, "data slot")} (${holes.length * slot} bytes) inside the data area ${holes.length === 1 ? "holds" : "hold"} no block: ` +
        `no block-map entry points at ${holes.length === 1 ? "it" : "them"} (${holes.length === 1 ? "slot" : "slots"} ${slotList(holes)})`,
    });
  }
  const tail = h.blocksAllocated - (highest + 1);
  if (tail > 0) {
    const from = slotOffset(highest + 1);
    const bytes = tail * slot;
    const inFile = Math.max(0, Math.min(fileSize, from + bytes) - from);
    leaks.push({
      kind: "unused-slots-at-end",
      slots: tail,
      bytes,
      offset: from,
      message:
        `the header counts ${plural(h.blocksAllocated, "data slot")} but ` +
        `${highest < 0 ? "none is in use" : `the last one in use is slot ${highest}`}: ${plural(tail, "slot")} at the end ${tail === 1 ? "holds" : "hold"} no block` +
        (inFile === bytes ? ` (${bytes} bytes)` : ` (${bytes} bytes, ${inFile} of them in the file)`),
    });
  }
  const expectedFileSize = slotOffset(h.blocksAllocated);
  if (fileSize > expectedFileSize) {
    const bytes = fileSize - expectedFileSize;
    leaks.push({
      kind: "bytes-past-end",
      slots: 0,
      bytes,
      offset: expectedFileSize,
      message: `${plural(bytes, "byte")} past the last data slot: the file is ${fileSize} bytes, header, map and ${plural(h.blocksAllocated, "slot")} end at ${expectedFileSize}`,
    });
  }

  const variant = h.type === VdiImageType.fixed ? "fixed" : h.type === VdiImageType.diff ? "diff" : "normal";
  const differencing = h.type === VdiImageType.diff && !isNullUuid(h.parentUuid);
  return {
    path,
    fileSize,
    image: {
      uuid: h.uuid,
      modifyUuid: h.modifyUuid,
      parentUuid: differencing ? h.parentUuid : null,
      parentModifyUuid: differencing ? h.parentModifyUuid : null,
      variant,
      size: virtualSize(h),
      blockSize: h.blockSize,
      blockCount: h.blockCount,
      dataBlocks,
      zeroBlocks,
      freeBlocks,
      blocksAllocated: h.blocksAllocated,
      expectedFileSize,
    },
    corruption: null,
    leaks,
    leakedBytes: leaks.reduce((n, l) => n + l.bytes, 0),
  };
}
