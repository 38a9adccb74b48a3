/**
 * A qcow2 image's metadata in memory: L1 table, every L2 table, refcount table and blocks. Loaded
 * and validated whole at open (so finding a cluster costs no I/O), changed in memory by
 * synchronous steps, and written back by flushMetadata() in crash-safe order.
 *
 * Why write-back: every metadata change is made in one synchronous step (reserve a cluster and
 * count it, point an L2 entry at written data), so a copy taken at any instant is consistent.
 * flushMetadata() takes that copy, then: makes the data durable; writes refcount blocks and the
 * refcount table; makes them durable; writes the header (if the refcount table moved) and the L2
 * tables; makes them durable; writes the L1 table; makes it durable. A crash at any point leaves
 * an image whose tables only point at durable data with durable refcounts: at worst clusters are
 * counted that nothing uses yet (leaks, as qemu-img check calls them), never the reverse.
 *
 * New clusters always go at the end (past every cluster in use or in the file): a freed cluster
 * is never reused in the same session, so an old table copy stays intact until nothing points at it.
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { Mutex } from "../async-lock.js";
import { asMediumError, readFully } from "../file-helpers.js";
import { clusterSize, serializeHeader, type Qcow2Header } from "./header.js";
import { UNALLOCATED, getRefcount, maxRefcount, readL1, readL2, setRefcount, writeEntry, type ClusterMapping, compressedClusters } from "./tables.js";

export class Qcow2Store {
  readonly cs: number;
  readonly clusterBits: number;
  /** L2 entries per table (a table fills one cluster). */
  readonly l2Entries: number;
  /** Refcounts per refcount block. */
  readonly perRefBlock: number;
  /** L2 table offset per L1 entry (0: none). */
  l1: Float64Array;
  readonly l2 = new Map<number, DataView>();
  /** Refcount block offset per refcount table entry (0: none); its length is the table's capacity. */
  reftable: Float64Array;
  readonly refBlocks = new Map<number, DataView>();
  /** Where the next new cluster goes. */
  end: number;
  private readonly dirtyL2 = new Set<number>();
  private readonly dirtyRef = new Set<number>();
  private l1Dirty = false;
  private reftableDirty = false;
  headerDirty = false;
  private readonly flushLock = new Mutex();

  constructor(
    readonly file: FileIo,
    public header: Qcow2Header,
    l1: Float64Array,
    reftable: Float64Array,
    end: number,
  ) {
    this.cs = clusterSize(header);
    this.clusterBits = header.clusterBits;
    this.l2Entries = this.cs / 8;
    this.perRefBlock = (this.cs * 8) / 2 ** header.refcountOrder;
    this.l1 = l1;
    this.reftable = reftable;
    this.end = end;
  }

  get path(): string {
    return this.file.path;
  }

  // --- lookup -----------------------------------------------------------------------------------

  /** Where virtual cluster `index` lives (from memory). */
  lookup(index: number): ClusterMapping {
    const t = this.l2.get(Math.floor(index / this.l2Entries));
    if (!t) return UNALLOCATED;
    return readL2(t, index % this.l2Entries, this.clusterBits, this.header.version === 3);
  }

  refcount(cluster: number): number {
    const b = this.refBlocks.get(Math.floor(cluster / this.perRefBlock));
    return b ? getRefcount(b, cluster % this.perRefBlock, this.header.refcountOrder) : 0;
  }

  // --- changes (synchronous, in memory) ---------------------------------------------------------

  private changeRefcount(cluster: number, delta: number): void {
    const t = Math.floor(cluster / this.perRefBlock);
    let block = this.refBlocks.get(t);
    if (!block) {
      if (delta < 0) throw new MediumError("corrupt", `refcount of cluster ${cluster} would go below 0`, { path: this.path });
      this.growReftable(t);
      // Counting the grown table's clusters may have made this very block already.
      block = this.refBlocks.get(t);
    }
    if (!block) {
      // The new block takes the next cluster and counts itself (or is counted by another new block).
      const at = this.takeClusters(1);
      block = new DataView(new ArrayBuffer(this.cs));
      this.refBlocks.set(t, block);
      this.reftable[t] = at;
      this.reftableDirty = true;
      this.changeRefcount(at / this.cs, 1);
    }
    const i = cluster % this.perRefBlock;
    const order = this.header.refcountOrder;
    const value = getRefcount(block, i, order) + delta;
    if (value < 0) throw new MediumError("corrupt", `refcount of cluster ${cluster} would go below 0`, { path: this.path });
    if (value > maxRefcount(order)) throw new MediumError("unsupported", `refcount of cluster ${cluster} would overflow ${2 ** order}-bit refcounts`, { path: this.path });
    setRefcount(block, i, order, value);
    this.dirtyRef.add(t);
  }

  /** Make room in the refcount table for entry `t`: a larger copy at the end, the old one freed. */
  private growReftable(t: number): void {
    if (t < this.reftable.length) return;
    const old = this.reftable;
    const oldOffset = this.header.refcountTableOffset;
    const oldClusters = this.header.refcountTableClusters;
    // Room for what exists, the new table itself and its refcount blocks, with slack to grow.
    const entries = Math.max(2 * old.length, t + 2, Math.ceil((this.end / this.cs + 16) / this.perRefBlock) * 2);
    const clusters = Math.ceil((entries * 8) / this.cs);
    const at = this.takeClusters(clusters);
    const table = new Float64Array((clusters * this.cs) / 8);
    table.set(old);
    this.reftable = table;
    this.header.refcountTableOffset = at;
    this.header.refcountTableClusters = clusters;
    this.reftableDirty = true;
    this.headerDirty = true;
    for (let c = 0; c < clusters; c++) this.changeRefcount(at / this.cs + c, 1);
    if (oldOffset !== 0) for (let c = 0; c < oldClusters; c++) this.changeRefcount(oldOffset / this.cs + c, -1);
  }

  /** Reserve `n` contiguous clusters at the end, without counting them. */
  private takeClusters(n: number): number {
    const at = this.end;
    this.end += n * this.cs;
    if (this.end > Number.MAX_SAFE_INTEGER / 2) throw new MediumError("unsupported", "qcow2 file would grow past 2^52 bytes", { path: this.path });
    return at;
  }

  /** Reserve and count `n` contiguous new clusters; returns the first one's offset. */
  allocate(n = 1): number {
    const at = this.takeClusters(n);
    for (let c = 0; c < n; c++) this.changeRefcount(at / this.cs + c, 1);
    return at;
  }

  /** Count a cluster at a known place (creation: header, tables). */
  reference(offset: number): void {
    this.changeRefcount(offset / this.cs, 1);
  }

  /** Drop one reference to each host cluster a mapping uses (its data was replaced). */
  release(m: ClusterMapping): void {
    if (m.kind === "compressed") {
      const [first, last] = compressedClusters(m, this.clusterBits);
      for (let c = first; c <= last; c++) this.changeRefcount(c, -1);
    } else if ((m.kind === "data" || m.kind === "zero") && m.host !== 0) {
      this.changeRefcount(m.host / this.cs, -1);
    }
  }

  /** Point virtual cluster `index` at `host` (0 with ZERO_FLAG: reads as zeros). Creates its L2 table if needed. */
  setMapping(index: number, host: number, flags = 0): void {
    const li = Math.floor(index / this.l2Entries);
    let t = this.l2.get(li);
    if (!t) {
      const at = this.allocate(1);
      t = new DataView(new ArrayBuffer(this.cs));
      this.l2.set(li, t);
      this.l1[li] = at;
      this.l1Dirty = true;
    }
    writeEntry(t, index % this.l2Entries, host, flags);
    this.dirtyL2.add(li);
  }

  /** Everything dirty (a new image: all of it must be written). */
  markAllDirty(): void {
    this.l1Dirty = true;
    this.reftableDirty = true;
    this.headerDirty = true;
    for (const t of this.refBlocks.keys()) this.dirtyRef.add(t);
    for (const t of this.l2.keys()) this.dirtyL2.add(t);
  }

  get dirty(): boolean {
    return this.l1Dirty || this.reftableDirty || this.headerDirty || this.dirtyL2.size > 0 || this.dirtyRef.size > 0;
  }

  /**
   * Grow the virtual size to `size` (checked by the caller), durably and in crash-safe order:
   * everything pending is flushed first; an L1 table that no longer fits its clusters gets a
   * larger copy at the end, written and durable before the header points at it; the old
   * table's clusters are given back only once the header no longer does.
   */
  async grow(size: number, l1Entries: number): Promise<void> {
    await this.flushMetadata();
    let old: { at: number; clusters: number } | null = null;
    if (l1Entries > this.header.l1Size) {
      const l1 = new Float64Array(l1Entries);
      l1.set(this.l1.subarray(0, this.header.l1Size));
      const oldClusters = Math.ceil((this.header.l1Size * 8) / this.cs);
      if (l1Entries * 8 > oldClusters * this.cs || this.header.l1TableOffset === 0) {
        const clusters = Math.ceil((l1Entries * 8) / this.cs);
        const at = this.allocate(clusters);
        await this.file.write(at, this.tableBytes(l1, clusters * this.cs, true));
        if (this.header.l1TableOffset !== 0 && oldClusters > 0) old = { at: this.header.l1TableOffset, clusters: oldClusters };
        this.header.l1TableOffset = at;
      }
      this.l1 = l1;
      this.header.l1Size = l1Entries;
      this.l1Dirty = true;
    }
    this.header.size = size;
    this.headerDirty = true;
    await this.flushMetadata();
    if (old) {
      for (let c = 0; c < old.clusters; c++) this.changeRefcount(old.at / this.cs + c, -1);
      await this.flushMetadata();
    }
  }

  // --- write-back -------------------------------------------------------------------------------

  /** Make everything written so far durable, metadata in crash-safe order (see the file comment). */
  flushMetadata(): Promise<void> {
    return this.flushLock.run(async () => {
      if (!this.dirty) {
        await this.file.flush();
        return;
      }
      // One consistent copy, taken synchronously.
      const refs = [...this.dirtyRef].map((t) => [t, this.reftable[t]!, copy(this.refBlocks.get(t)!)] as const);
      const reftable = this.reftableDirty ? this.tableBytes(this.reftable, this.header.refcountTableClusters * this.cs, false) : null;
      const reftableAt = this.header.refcountTableOffset;
      const l2s = [...this.dirtyL2].map((li) => [li, this.l1[li]!, copy(this.l2.get(li)!)] as const);
      const header = this.headerDirty ? serializeHeader({ ...this.header }, { path: this.path }) : null;
      const l1 = this.l1Dirty ? this.tableBytes(this.l1, this.header.l1Size * 8, true) : null;
      const l1At = this.header.l1TableOffset;
      this.dirtyRef.clear();
      this.dirtyL2.clear();
      this.reftableDirty = this.l1Dirty = this.headerDirty = false;
      try {
        await this.file.flush();
        await Promise.all(refs.map(([, at, bytes]) => this.file.write(at, bytes)));
        if (reftable) await this.file.write(reftableAt, reftable);
        if (refs.length || reftable) await this.file.flush();
        await Promise.all([...l2s.map(([, at, bytes]) => this.file.write(at, bytes)), header ? this.file.write(0, header) : undefined]);
        if (l2s.length || header) await this.file.flush();
        if (l1) {
          await this.file.write(l1At, l1);
          await this.file.flush();
        }
      } catch (e) {
        // Written again by the next flush.
        for (const [t] of refs) this.dirtyRef.add(t);
        for (const [li] of l2s) this.dirtyL2.add(li);
        if (reftable) this.reftableDirty = true;
        if (header) this.headerDirty = true;
        if (l1) this.l1Dirty = true;
        throw asMediumError(e, this.path, "metadata write");
      }
    });
  }

  /** An L1 or refcount table as bytes; L1 entries carry the copied flag (every table has refcount 1). */
  private tableBytes(entries: Float64Array, bytes: number, copied: boolean): Uint8Array {
    const out = new Uint8Array(bytes);
    const v = new DataView(out.buffer);
    for (let i = 0; i < entries.length && 8 * i < bytes; i++) {
      const e = entries[i]!;
      if (e === 0) continue;
      if (copied) writeEntry(v, i, e);
      else {
        v.setUint32(8 * i, Math.floor(e / 2 ** 32));
        v.setUint32(8 * i + 4, e % 2 ** 32);
      }
    }
    return out;
  }
}

function copy(v: DataView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
}

// --- loading --------------------------------------------------------------------------------------

/** Read `length` bytes at `pos`, refusing a table cut short by the end of the file. */
export async function readTable(file: FileIo, pos: number, length: number, what: string): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  const n = await readFully(file, pos, buf);
  if (n < length) throw new MediumError("corrupt", `qcow2 ${what} at ${pos} is cut short by the end of the file`, { path: file.path, offset: pos });
  return buf;
}

/** Parse a table of big-endian u64 offsets, each cluster-aligned and inside the file. */
export function parseOffsets(bytes: Uint8Array, count: number, cs: number, fileSize: number, what: string, ctx: { path: string; offset: number }, l1: boolean): Float64Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const hi = v.getUint32(8 * i);
    const lo = v.getUint32(8 * i + 4);
    // L1 entries carry flags (bit 63, reserved low bits); refcount table entries are plain offsets (low 9 bits reserved).
    const at = l1 ? readL1(v, i) : (hi * 2 ** 32 + lo) - (lo % 512);
    if (at === 0) continue;
    const where = { path: ctx.path, offset: ctx.offset + 8 * i };
    if (!Number.isSafeInteger(at) || at % cs !== 0) throw new MediumError("corrupt", `qcow2 ${what} entry ${i} (${at}) is not cluster-aligned`, where);
    if (at + cs > fileSize) throw new MediumError("corrupt", `qcow2 ${what} entry ${i} points at ${at}, past the end of the file (${fileSize})`, where);
    out[i] = at;
  }
  return out;
}

