/**
 * VDI maintenance that moves data blocks: giving back a discarded block's space, compact, and
 * growing the virtual size. Callers hold the image's exclusive gate (no other I/O in flight).
 *
 * Every step keeps the file readable if the process dies between two writes: data is copied
 * before the map entry that points at it changes, and a slot is reused only once no entry
 * points at it. The one exception is noted at growImage.
 */
import { MediumError } from "../../block.js";
import { BLOCK_FREE, BLOCK_ZERO, isAllocated } from "./block-map.js";
import { MAX_BLOCK_COUNT, SECTOR_SIZE, VDI_DATA_ALIGN, VdiImageType, virtualSize } from "./header.js";
import { isZero } from "../../bytes.js";
import { asMediumError, type VdiStore } from "./vdi-store.js";

/**
 * Progress of long maintenance: `done` of `total` steps of one phase ("scan": blocks read,
 * "move": blocks moved). A phase may run with total 0 (nothing to do) and then is not reported.
 */
export type MaintenanceProgress = (done: number, total: number, phase: "scan" | "move") => void;

export interface CompactOptions {
  /**
   * For differencing images: whether block `index` holding `data` equals what the layers below
   * show there (then it is dropped and reads fall through again). Given by the chain.
   */
  sameAsParent?: (index: number, data: Uint8Array) => Promise<boolean>;
  onProgress?: MaintenanceProgress;
}

async function readExactly(store: VdiStore, pos: number, buf: Uint8Array): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const n = await store.file.read(pos + done, buf.subarray(done));
    if (n <= 0) throw new MediumError("corrupt", `data at ${pos} is cut short by the end of the file`, { path: store.path, offset: pos });
    done += n;
  }
}

/** Copy a slot (service data and block) to another file position. */
async function copySlot(store: VdiStore, fromPos: number, toPos: number): Promise<void> {
  const buf = new Uint8Array(store.slotSize);
  await readExactly(store, fromPos, buf);
  await store.file.write(toPos, buf);
}

/** Move the block in slot `from` into unused slot `to`: copy, then re-point its map entry. */
async function moveSlot(store: VdiStore, from: number, to: number): Promise<void> {
  const block = store.ownerOf(from);
  await copySlot(store, store.slotOffset(from), store.slotOffset(to));
  await store.setEntry(block, to);
}

/** Fill unused slots with the last blocks, then cut the unused tail off the file. */
async function reclaimSlots(store: VdiStore, onProgress?: MaintenanceProgress): Promise<void> {
  // Each move fills one hole below the number of used slots: that many moves.
  let moves = 0;
  if (onProgress) for (let s = 0, used = store.usedSlots(); s < used; s++) if (store.ownerOf(s) < 0) moves++;
  for (let done = 0; ; ) {
    const last = store.lastUsedSlot();
    const hole = store.firstUnusedSlot(last);
    if (hole < 0) break;
    await moveSlot(store, last, hole);
    onProgress?.(++done, moves, "move");
  }
  const count = store.lastUsedSlot() + 1;
  if (count < store.header.blocksAllocated) await store.shrinkTo(count);
}

/** Discard one whole block: set its entry to `marker` and give its slot's space back. */
export async function discardBlock(store: VdiStore, index: number, marker: number): Promise<void> {
  const entry = store.map[index]!;
  if (entry === marker) return;
  try {
    await store.setEntry(index, marker);
    if (isAllocated(entry)) await reclaimSlots(store);
  } catch (e) {
    throw asMediumError(e, store.path, "discard");
  }
}

/**
 * Compact: blocks holding only zeros become zero (differencing) or free (normal) entries,
 * blocks equal to the parent's become free, then the last blocks move into the holes and the
 * file is truncated (vdiCompact does the same).
 */
export async function compactImage(store: VdiStore, differencing: boolean, options: CompactOptions): Promise<void> {
  const bs = store.header.blockSize;
  const buf = new Uint8Array(bs);
  const { onProgress } = options;
  try {
    const total = onProgress ? store.map.reduce((n, e) => n + (isAllocated(e) ? 1 : 0), 0) : 0;
    let done = 0;
    for (let i = 0; i < store.map.length; i++) {
      const e = store.map[i]!;
      if (!isAllocated(e)) continue;
      await readExactly(store, store.dataPos(e), buf);
      if (isZero(buf)) await store.setEntry(i, differencing ? BLOCK_ZERO : BLOCK_FREE);
      else if (differencing && options.sameAsParent && (await options.sameAsParent(i, buf))) await store.setEntry(i, BLOCK_FREE);
      onProgress?.(++done, total, "scan");
    }
    await reclaimSlots(store, onProgress);
    // Bytes past the last slot belong to nothing (a leak `vstor checkmedium` reports): cut them.
    const end = store.slotOffset(store.header.blocksAllocated);
    if ((await store.file.size()) > end) await store.file.truncate(end);
  } catch (e) {
    throw asMediumError(e, store.path, "compact");
  }
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/**
 * Grow the virtual size to `size` bytes. If the block map has room before the data area, only
 * new entries and the header are written. Otherwise the map moves to the start of the data area
 * (qemu puts it right after the header with data 512-aligned behind it): the blocks in the
 * first data slots move to the end, the renumbered map is written where they were, and one
 * header write switches over. If every block is allocated there is no spare slot to move them
 * into first, and between the map write and the header write the first blocks' old place is
 * already overwritten: a crash in that window loses them (VirtualBox's vdiResize has the same
 * window, wider).
 */
export async function growImage(store: VdiStore, size: number, onProgress?: MaintenanceProgress): Promise<void> {
  const h = store.header;
  const ctx = { path: store.path };
  if (h.type === VdiImageType.fixed) throw new MediumError("unsupported", "fixed-size VDI images cannot be resized", ctx);
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE) {
    throw new MediumError("unsupported", `new size ${size} is not a positive multiple of ${SECTOR_SIZE}`, ctx);
  }
  const oldSize = virtualSize(h);
  if (size < oldSize) throw new MediumError("unsupported", `shrinking a VDI image (${oldSize} to ${size}) is not supported`, ctx);
  if (size === oldSize) return;
  const bs = h.blockSize;
  const newCount = Math.ceil(size / bs);
  if (newCount > MAX_BLOCK_COUNT) throw new MediumError("unsupported", `${newCount} blocks is above ${MAX_BLOCK_COUNT}`, ctx);
  const file = store.file;
  try {
    // Bytes past the old end in a partly used last block become visible: make them zeros.
    const tail = oldSize % bs;
    const lastEntry = store.map[Math.floor(oldSize / bs)];
    if (tail && lastEntry !== undefined && isAllocated(lastEntry)) await file.write(store.dataPos(lastEntry) + tail, new Uint8Array(bs - tail));

    const oldCount = h.blockCount;
    const grown = store.growMap(newCount);
    const mapEnd = h.blockMapOffset + 4 * newCount;
    if (newCount === oldCount || mapEnd <= h.dataOffset) {
      // Room in the map area: the new entries land in its padding, then the header commits.
      if (newCount > oldCount) await store.writeMap(grown, oldCount, newCount - oldCount);
      await file.flush();
      h.diskSize = size;
      h.blockCount = newCount;
      store.map = grown;
      await store.writeHeader();
    } else if (store.lastUsedSlot() < 0) {
      // No data blocks: extend the map in place and move the (empty) data area behind it.
      const align = h.dataOffset % VDI_DATA_ALIGN === 0 ? VDI_DATA_ALIGN : SECTOR_SIZE;
      const dataOffset = alignUp(mapEnd, align);
      if (dataOffset > 0xffffffff) throw new MediumError("unsupported", `data offset ${dataOffset} does not fit 32 bits`, ctx);
      await store.writeMap(grown, oldCount, newCount - oldCount);
      await file.flush();
      Object.assign(h, { diskSize: size, blockCount: newCount, dataOffset, blocksAllocated: 0 });
      store.map = grown;
      await store.writeHeader();
      await file.truncate(dataOffset);
    } else {
      await relocateMap(store, grown, size, onProgress);
    }
    await file.flush();
  } catch (e) {
    throw asMediumError(e, store.path, "resize");
  } finally {
    store.rebuildOwners();
  }
}

/** The map must grow into the data area: move it to where the first data slots are now. */
async function relocateMap(store: VdiStore, grown: Uint32Array, size: number, onProgress?: MaintenanceProgress): Promise<void> {
  const h = store.header;
  const file = store.file;
  const slot = store.slotSize;
  const k = Math.ceil((4 * grown.length) / slot);
  const mapAt = h.dataOffset;
  const dataOffset = mapAt + k * slot;
  if (dataOffset > 0xffffffff) throw new MediumError("unsupported", `data offset ${dataOffset} does not fit 32 bits`, { path: store.path });

  // 1. Empty slots [0, k). With a spare slot the moves are ordinary (crash-safe) block moves;
  //    without one the copies go past the last slot and are only referenced by the new map.
  const spare = store.usedSlots() + k <= h.blockCount;
  let tailSlots = h.blocksAllocated;
  const moves = Math.min(k, h.blocksAllocated);
  for (let s = 0; s < moves; s++) {
    onProgress?.(s, moves, "move");
    const block = store.ownerOf(s);
    if (block < 0) continue;
    if (spare) {
      const to = store.reserveSlotFrom(k);
      await copySlot(store, store.slotOffset(s), store.slotOffset(to));
      await store.setEntry(block, to);
    } else {
      await copySlot(store, store.slotOffset(s), store.slotOffset(tailSlots));
      grown[block] = tailSlots++;
    }
  }
  if (moves > 0) onProgress?.(moves, moves, "move");
  if (spare) grown.set(store.map.subarray(0, Math.min(store.map.length, grown.length)));
  else tailSlots = Math.max(tailSlots, h.blocksAllocated);
  const count = spare ? h.blocksAllocated : tailSlots;
  await file.flush();

  // 2. The renumbered map, where slots [0, k) were.
  const renumbered = grown.map((e) => (isAllocated(e) ? e - k : e));
  await store.writeMap(renumbered, 0, renumbered.length, mapAt);
  await file.flush();

  // 3. One header write switches to the new map and data offset.
  Object.assign(h, {
    diskSize: size,
    blockCount: grown.length,
    blockMapOffset: mapAt,
    dataOffset,
    blocksAllocated: Math.max(0, count - k),
  });
  store.map = renumbered;
  await store.writeHeader();
}
