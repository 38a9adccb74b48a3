/**
 * The VHDX block allocation table: one u64 entry per payload block, with a sector bitmap entry
 * after every `chunkRatio` payload entries. An entry's low 3 bits are its state; bits 20..63 are
 * the file offset in MiB (the offset itself is the entry with its low 20 bits cleared).
 */
import type { StoredRun } from "../../chain.js";
import { MiB } from "./structures.js";

export const PayloadState = {
  notPresent: 0,
  undefined: 1,
  zero: 2,
  unmapped: 3,
  fullyPresent: 6,
  partiallyPresent: 7,
} as const;
export const SectorBitmapState = { notPresent: 0, present: 6 } as const;

export const BAT_ENTRY_SIZE = 8;

export interface BatGeometry {
  /** Payload blocks per sector bitmap block: 2^23 sectors' worth of blocks. */
  chunkRatio: number;
  payloadBlocks: number;
  sectorBitmapBlocks: number;
  /** Entries the BAT region must hold. */
  totalEntries: number;
}

export function batGeometry(virtualSize: number, blockSize: number, logicalSectorSize: number, hasParent: boolean): BatGeometry {
  const chunkRatio = (2 ** 23 * logicalSectorSize) / blockSize;
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const sectorBitmapBlocks = Math.ceil(payloadBlocks / chunkRatio);
  const totalEntries = hasParent ? sectorBitmapBlocks * (chunkRatio + 1) : payloadBlocks + Math.floor(Math.max(payloadBlocks - 1, 0) / chunkRatio);
  return { chunkRatio, payloadBlocks, sectorBitmapBlocks, totalEntries };
}

/** Index in the BAT of payload block `block`. */
export function payloadIndex(block: number, chunkRatio: number): number {
  return block + Math.floor(block / chunkRatio);
}

/** Index in the BAT of the sector bitmap entry for chunk `chunk`. */
export function sectorBitmapIndex(chunk: number, chunkRatio: number): number {
  return chunk * (chunkRatio + 1) + chunkRatio;
}

/** An entry as state and file offset (bytes). */
export function decodeEntry(bat: DataView, index: number): { state: number; offset: number } {
  const lo = bat.getUint32(index * 8, true);
  const hi = bat.getUint32(index * 8 + 4, true);
  // Beyond 2^53 the offset is inexact, but still far beyond any file: validation refuses it.
  return { state: lo & 7, offset: hi * 2 ** 32 + ((lo & 0xfff00000) >>> 0) };
}

export function encodeEntry(bat: DataView, index: number, state: number, offset: number): void {
  if (offset % MiB) throw new RangeError(`BAT offset ${offset} is not MiB-aligned`);
  bat.setUint32(index * 8, ((offset % 2 ** 32) | state) >>> 0, true);
  bat.setUint32(index * 8 + 4, Math.floor(offset / 2 ** 32), true);
}

/** Bytes of a sector bitmap block: one bit per logical sector of a chunk (2^23 sectors). */
export const SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB;

/**
 * The runs of [offsetInBlock, +length) of a partially present block that this file stores,
 * from the block's slice of its sector bitmap (bit i of byte i/8, least significant first, set:
 * sector stored here; clear: read from the parent). Sector size 512.
 */
export function sectorRuns(bitmap: Uint8Array, offsetInBlock: number, length: number): StoredRun[] {
  const bit = (s: number): boolean => ((bitmap[s >>> 3]! >>> (s & 7)) & 1) === 1;
  const runs: StoredRun[] = [];
  const first = Math.floor(offsetInBlock / 512);
  const end = offsetInBlock + length;
  let s = first;
  while (s * 512 < end) {
    const stored = bit(s);
    let e = s + 1;
    while (e * 512 < end && bit(e) === stored) e++;
    runs.push({ length: Math.min(e * 512, end) - Math.max(s * 512, offsetInBlock), stored });
    s = e;
  }
  return runs;
}
