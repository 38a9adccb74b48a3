/**
 * The VHD block allocation table and the per-block sector bitmaps. Pure codec.
 *
 * BAT: one u32 BE per block, the *sector* number of the block in the file, or 0xFFFFFFFF for a
 * block not stored. A stored block is its sector bitmap (bitmapSize bytes) and then blockSize
 * bytes of data. Bitmap bit 7 of byte 0 is the block's sector 0: 1 means the sector is stored
 * here, 0 means it reads from the parent (zeros in a dynamic image).
 */
import { MediumError } from "../../block.js";
import type { StoredRun } from "../../chain.js";
import { SECTOR_SIZE, type CodecContext } from "./footer.js";

export const BLOCK_UNUSED = 0xffffffff;

export interface BatLayout {
  tableOffset: number;
  blockSize: number;
  bitmapSize: number;
  /** Where block data may start: the end of the metadata (header, BAT, locator data). */
  dataStart: number;
  /** Where block data must end: the footer at the end of the file. */
  dataEnd: number;
}

/**
 * Parse `entries` BAT entries and validate every stored block: inside [dataStart, dataEnd) and
 * overlapping no other block. Throws MediumError "corrupt" naming the entry.
 */
export function parseBat(bytes: Uint8Array, entries: number, layout: BatLayout, ctx: CodecContext = {}): Uint32Array {
  if (bytes.length < 4 * entries) {
    throw new MediumError("corrupt", `truncated VHD block table: ${bytes.length} bytes, need ${4 * entries}`, { path: ctx.path, offset: layout.tableOffset });
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, 4 * entries);
  const bat = new Uint32Array(entries);
  const stride = layout.bitmapSize + layout.blockSize;
  const used: number[] = [];
  for (let i = 0; i < entries; i++) {
    const e = v.getUint32(4 * i);
    bat[i] = e;
    if (e === BLOCK_UNUSED) continue;
    const start = e * SECTOR_SIZE;
    const at = layout.tableOffset + 4 * i;
    if (start < layout.dataStart) {
      throw new MediumError("corrupt", `VHD block table entry ${i} points at sector ${e} (offset ${start}), inside the image's metadata (which ends at ${layout.dataStart})`, {
        path: ctx.path,
        offset: at,
      });
    }
    if (start + stride > layout.dataEnd) {
      throw new MediumError("corrupt", `VHD block table entry ${i} points at sector ${e}, whose block ends at ${start + stride}, past the end of the data (the footer at ${layout.dataEnd})`, {
        path: ctx.path,
        offset: at,
      });
    }
    used.push(i);
  }
  // Overlaps: sort the stored blocks by position; each must end before the next starts.
  used.sort((a, b) => bat[a]! - bat[b]!);
  for (let k = 1; k < used.length; k++) {
    const prev = used[k - 1]!;
    const cur = used[k]!;
    if (bat[prev]! * SECTOR_SIZE + stride > bat[cur]! * SECTOR_SIZE) {
      throw new MediumError("corrupt", `VHD block table entries ${prev} and ${cur} overlap (sectors ${bat[prev]} and ${bat[cur]}, blocks of ${stride} bytes)`, {
        path: ctx.path,
        offset: layout.tableOffset + 4 * cur,
      });
    }
  }
  return bat;
}

/** BAT entries as bytes, for writing at tableOffset + 4 * first. */
export function serializeBat(bat: Uint32Array, first = 0, count = bat.length - first): Uint8Array {
  const out = new Uint8Array(4 * count);
  const v = new DataView(out.buffer);
  for (let i = 0; i < count; i++) v.setUint32(4 * i, bat[first + i]!);
  return out;
}

// --- sector bitmaps ------------------------------------------------------------------------------

export function bitIsSet(bitmap: Uint8Array, sector: number): boolean {
  return (bitmap[sector >>> 3]! & (0x80 >>> (sector & 7))) !== 0;
}

/** Set bits [first, first+count); true if any was clear. */
export function setBits(bitmap: Uint8Array, first: number, count: number): boolean {
  let changed = false;
  for (let s = first; s < first + count; s++) {
    const m = 0x80 >>> (s & 7);
    if (!(bitmap[s >>> 3]! & m)) {
      bitmap[s >>> 3]! |= m;
      changed = true;
    }
  }
  return changed;
}

/** Whether bits [first, first+count) are all set. */
export function allSet(bitmap: Uint8Array, first: number, count: number): boolean {
  for (let s = first; s < first + count; s++) if (!bitIsSet(bitmap, s)) return false;
  return true;
}

/** Whether every sector of a block of `sectors` sectors is marked stored. */
export function isFull(bitmap: Uint8Array, sectors: number): boolean {
  const whole = sectors >>> 3;
  for (let i = 0; i < whole; i++) if (bitmap[i] !== 0xff) return false;
  return allSet(bitmap, whole * 8, sectors - whole * 8);
}

/**
 * The stored and not stored runs of bytes [offsetInBlock, +length) of a block (sector aligned),
 * in order. A null bitmap means a full one.
 */
export function bitmapRuns(bitmap: Uint8Array | null, offsetInBlock: number, length: number): StoredRun[] {
  if (!bitmap) return [{ length, stored: true }];
  const runs: StoredRun[] = [];
  const first = offsetInBlock / SECTOR_SIZE;
  const count = Math.ceil(length / SECTOR_SIZE);
  let s = first;
  while (s < first + count) {
    const stored = bitIsSet(bitmap, s);
    let e = s + 1;
    while (e < first + count && bitIsSet(bitmap, e) === stored) e++;
    runs.push({ length: Math.min(e * SECTOR_SIZE, offsetInBlock + length) - s * SECTOR_SIZE, stored });
    s = e;
  }
  return runs;
}
