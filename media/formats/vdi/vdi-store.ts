/**
 * A VDI image's metadata in memory and the writes that keep the file in step with it: header,
 * block map entries, and which data slots are used. No policy about who may call when: the image
 * (vdi-image.ts) and maintenance (vdi-maintenance.ts) own the locking.
 *
 * Ordering rules that keep the file readable after a crash at any point:
 * - block data is written before the map entry that points at it;
 * - the header's blocks-allocated count on disk always covers every slot a map entry on disk
 *   points at (the header is written first when a new slot needs it);
 * - metadata writes are serialized, so an older header can never land after a newer one.
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { Mutex } from "../async-lock.js";
import { BLOCK_FREE, isAllocated, serializeBlockMap } from "./block-map.js";
import { serializeHeader, slotSize, type VdiHeader } from "./header.js";

export { asMediumError, readFully } from "../file-helpers.js";
import { asMediumError, readFully } from "../file-helpers.js";

/** Kept for the formats that import it from here (qcow2); new code imports media/bytes.ts. */
export { isZero } from "../../bytes.js";

/** owner[] value of a slot reserved for an allocation still being written. */
const RESERVED = -2;
/** owner[] value of a slot no map entry points at. */
const UNUSED = -1;

export class VdiStore {
  /** Slot index -> block index (or UNUSED / RESERVED), for slots below header.blocksAllocated. */
  private owner: Int32Array;
  /** Unused slots below blocksAllocated, reused before the file grows. */
  private freeSlots: number[] = [];
  /** blocksAllocated as last written to the file. */
  private diskCount: number;
  private readonly meta = new Mutex();

  constructor(
    readonly file: FileIo,
    public header: VdiHeader,
    public map: Uint32Array,
  ) {
    this.diskCount = header.blocksAllocated;
    this.owner = new Int32Array(0);
    this.rebuildOwners();
  }

  get path(): string {
    return this.file.path;
  }

  get slotSize(): number {
    return slotSize(this.header);
  }

  /** File offset where slot `slot` starts (its service data, then the block's data). */
  slotOffset(slot: number): number {
    return this.header.dataOffset + slot * this.slotSize;
  }

  /** File offset of the data of slot `slot`. */
  dataPos(slot: number): number {
    return this.slotOffset(slot) + this.header.blockExtra;
  }

  ownerOf(slot: number): number {
    return this.owner[slot] ?? UNUSED;
  }

  /** Recompute slot owners and free slots from the map (after open and after maintenance). */
  rebuildOwners(): void {
    const count = this.header.blocksAllocated;
    const owner = new Int32Array(Math.max(count, this.header.blockCount)).fill(UNUSED);
    for (let i = 0; i < this.map.length; i++) {
      const e = this.map[i]!;
      if (isAllocated(e)) owner[e] = i;
    }
    this.owner = owner;
    this.freeSlots = [];
    for (let s = count - 1; s >= 0; s--) if (owner[s] === UNUSED) this.freeSlots.push(s);
  }

  /** A slot for a new block: an unused one if there is one, else a new one at the end. */
  reserveSlot(): number {
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      slot = this.header.blocksAllocated++;
      if (slot >= this.owner.length) {
        // Only reachable if slots leak; never write a count the header check would refuse.
        this.header.blocksAllocated--;
        throw new MediumError("corrupt", `no free data slot: ${slot} slots for ${this.header.blockCount} blocks`, { path: this.path });
      }
    }
    this.owner[slot] = RESERVED;
    return slot;
  }

  /** Give back a reserved slot whose allocation failed. */
  releaseSlot(slot: number): void {
    if (this.owner[slot] === RESERVED) {
      this.owner[slot] = UNUSED;
      this.freeSlots.push(slot);
    }
  }

  /** Write the whole header as it is in memory. */
  writeHeader(): Promise<void> {
    return this.meta.run(() => this.writeHeaderNow());
  }

  private async writeHeaderNow(): Promise<void> {
    const count = this.header.blocksAllocated;
    await this.file.write(0, serializeHeader(this.header));
    this.diskCount = count;
  }

  /**
   * Point block `index` at `value` (a slot, BLOCK_FREE or BLOCK_ZERO) on disk, then in memory.
   * The slot's data must already be written. A slot it no longer points at becomes unused;
   * callers that shrink the file deal with that.
   */
  setEntry(index: number, value: number): Promise<void> {
    return this.meta.run(async () => {
      if (isAllocated(value) && value >= this.diskCount) await this.writeHeaderNow();
      const bytes = new Uint8Array(4);
      new DataView(bytes.buffer).setUint32(0, value, true);
      await this.file.write(this.header.blockMapOffset + 4 * index, bytes);
      const old = this.map[index]!;
      this.map[index] = value;
      if (isAllocated(old) && this.owner[old] === index) {
        this.owner[old] = UNUSED;
        if (old < this.header.blocksAllocated) this.freeSlots.push(old);
      }
      if (isAllocated(value)) {
        this.owner[value] = index;
        const i = this.freeSlots.indexOf(value);
        if (i >= 0) this.freeSlots.splice(i, 1);
      }
    });
  }

  /** Write entries [first, first+count) of `map` (by default the one in memory) to a map at `at`. */
  writeMap(map = this.map, first = 0, count = map.length - first, at = this.header.blockMapOffset): Promise<void> {
    return this.meta.run(() => this.file.write(at + 4 * first, serializeBlockMap(map, first, count)));
  }

  /** Reserve an unused slot at or above `min`, growing the slot count if none is free. */
  reserveSlotFrom(min: number): number {
    const i = this.freeSlots.findIndex((s) => s >= min);
    let slot: number;
    if (i >= 0) {
      slot = this.freeSlots[i]!;
      this.freeSlots.splice(i, 1);
    } else {
      slot = Math.max(this.header.blocksAllocated, min);
      for (let s = this.header.blocksAllocated; s < slot; s++) this.freeSlots.push(s);
      this.header.blocksAllocated = slot + 1;
      if (slot >= this.owner.length) {
        const grown = new Int32Array(slot + 1).fill(UNUSED);
        grown.set(this.owner);
        this.owner = grown;
      }
    }
    this.owner[slot] = RESERVED;
    return slot;
  }

  /** Number of slots blocks point at. */
  usedSlots(): number {
    let n = 0;
    for (let s = 0; s < this.header.blocksAllocated; s++) if (this.owner[s] !== UNUSED) n++;
    return n;
  }

  /** Drop slots at and past `count` from the header and the file (they must be unused). */
  async shrinkTo(count: number): Promise<void> {
    for (let s = count; s < this.header.blocksAllocated; s++) {
      if (this.owner[s]! >= 0 || this.owner[s] === RESERVED) throw new Error(`internal: slot ${s} is in use`);
    }
    this.header.blocksAllocated = count;
    this.freeSlots = this.freeSlots.filter((s) => s < count);
    await this.writeHeader();
    await this.file.truncate(this.slotOffset(count));
  }

  /** Highest slot a block uses, or -1. */
  lastUsedSlot(): number {
    for (let s = this.header.blocksAllocated - 1; s >= 0; s--) if (this.owner[s] !== UNUSED) return s;
    return -1;
  }

  /** Lowest unused slot below `limit`, or -1. */
  firstUnusedSlot(limit: number): number {
    for (let s = 0; s < limit; s++) if (this.owner[s] === UNUSED) return s;
    return -1;
  }

  /** Map entries for a grown block count (new blocks free), keeping slot owners sized. */
  growMap(blockCount: number): Uint32Array {
    const map = new Uint32Array(blockCount).fill(BLOCK_FREE);
    map.set(this.map.subarray(0, Math.min(this.map.length, blockCount)));
    return map;
  }
}
