/**
 * The VDI block map: one u32 LE per virtual block. A value below 0xFFFFFFFE is the index of the
 * block's data slot in the file (slot n starts at dataOffset + n * (blockSize + blockExtra)).
 * Pure codec: bytes in, validated entries out, and back.
 */
import { MediumError } from "../../block.js";
import { slotSize, type CodecContext, type VdiHeader } from "./header.js";

/** VDI_IMAGE_BLOCK_FREE: not stored here; reads fall through to the parent (zeros at the base). */
export const BLOCK_FREE = 0xffffffff;
/** VDI_IMAGE_BLOCK_ZERO: reads as zeros and hides the parent. */
export const BLOCK_ZERO = 0xfffffffe;

export function isAllocated(entry: number): boolean {
  return entry < BLOCK_ZERO;
}

/**
 * Parse the map (`4 * header.blockCount` bytes) and validate every entry: a slot index must be
 * below blocksAllocated, no two blocks may share a slot, and the slot must lie inside the file.
 * Throws MediumError "corrupt" naming the block and the value.
 */
export function parseBlockMap(bytes: Uint8Array, h: VdiHeader, fileSize: number, ctx: CodecContext = {}): Uint32Array {
  const count = h.blockCount;
  if (bytes.length < 4 * count) {
    throw new MediumError("corrupt", `truncated VDI block map: ${bytes.length} bytes, need ${4 * count}`, {
      path: ctx.path,
      offset: h.blockMapOffset,
    });
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, 4 * count);
  const map = new Uint32Array(count);
  const owner = new Int32Array(h.blocksAllocated).fill(-1);
  const slot = slotSize(h);
  for (let i = 0; i < count; i++) {
    const e = v.getUint32(4 * i, true);
    map[i] = e;
    if (!isAllocated(e)) continue;
    const at = h.blockMapOffset + 4 * i;
    if (e >= h.blocksAllocated) {
      throw new MediumError("corrupt", `VDI block map entry ${i} is ${e}, not below blocks allocated (${h.blocksAllocated})`, {
        path: ctx.path,
        offset: at,
      });
    }
    const other = owner[e]!;
    if (other >= 0) {
      throw new MediumError("corrupt", `VDI block map entries ${other} and ${i} both point at data block ${e}`, {
        path: ctx.path,
        offset: at,
      });
    }
    owner[e] = i;
    const end = h.dataOffset + (e + 1) * slot;
    if (end > fileSize) {
      throw new MediumError("corrupt", `VDI block map entry ${i} is ${e}, whose data ends at ${end}, past the end of the file (${fileSize})`, {
        path: ctx.path,
        offset: at,
      });
    }
  }
  return map;
}

/** Entries `map[first..first+count)` as bytes, for writing at blockMapOffset + 4 * first. */
export function serializeBlockMap(map: Uint32Array, first = 0, count = map.length - first): Uint8Array {
  const out = new Uint8Array(4 * count);
  const v = new DataView(out.buffer);
  for (let i = 0; i < count; i++) v.setUint32(4 * i, map[first + i]!, true);
  return out;
}
