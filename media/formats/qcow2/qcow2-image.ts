/**
 * A qcow2 image (version 2 or 3) as a BlockBackend and a chain layer, over a FileIo.
 *
 * - Metadata is loaded whole at open and kept in memory (qcow2-store.ts), written back in
 *   crash-safe order by flush() and close(). Opening validates everything and writes nothing.
 * - Writes into a stored cluster go in place. A cluster not stored here gets a new cluster at the
 *   end of the file: the whole cluster is written (the rest of it from the layers below, from the
 *   decompressed old data, or zeros), then the L2 entry points at it. One allocation per cluster
 *   at a time: concurrent writers into it wait for the first (copy-on-write happens once).
 * - A request's clusters go to the file in runs (request-plan.ts): one read or in-place write per
 *   stretch that is contiguous on the host, one allocation and one write for whole new clusters.
 * - Compressed clusters are read (and rewritten uncompressed on write) through an injected
 *   `inflate` (node/inflate.ts on Node): codecs here have no zlib.
 * - Not writable (refused at a read-write open, read-only is fine): images with internal
 *   snapshots, with the dirty bit (lazy refcounts: the refcounts need a repair first) or with the
 *   corrupt bit set.
 * - Backing files: the image names its backing file and format (backingFile, backingFormat); the
 *   caller opens that and links it with attachBacking(), then chains them (media/chain.ts). qcow2
 *   has no UUIDs: this image's UUID is made up per open, and the parent link is what attachBacking
 *   was given. Used alone, clusters not stored here read as zeros.
 */
import { nameBeside } from "../paths.js";
import { Allocations } from "../allocations.js";
import { createImageFile, openImageFile } from "../image-file.js";
import { ImageBase } from "../image-base.js";
import { MediumError, checkRequest, type Extent } from "../../block.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { queued } from "../../io/request-queue.js";
import type { BlockState, FillBelow, LayeredImage, ParentLink } from "../../chain.js";
import { randomUuid } from "../uuid.js";
import { isZero } from "../vdi/vdi-store.js";
import { asMediumError, readFully } from "../file-helpers.js";
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY, checkedL1Entries, clusterSize, newHeader, serializeHeader, type Qcow2Header } from "./header.js";
import { readQcow2Metadata } from "./qcow2-metadata.js";
import { Qcow2Store } from "./qcow2-store.js";
import { ZERO_FLAG, type ClusterMapping } from "./tables.js";
import { planRead, planWrite } from "./request-plan.js";

export { isQcow2 } from "./header.js";

/** Inflate a raw deflate stream into at least `clusterSize` bytes (qcow2's zlib compression). */
export type Inflate = (compressed: Uint8Array, clusterSize: number) => Uint8Array | Promise<Uint8Array>;

export interface Qcow2OpenOptions {
  readOnly?: boolean;
  maxInFlight?: number;
  /** Needed to read compressed clusters (node/inflate.ts); without it they are "unsupported". */
  inflate?: Inflate;
  /** This image's UUID in a chain (made up when absent: qcow2 stores none). */
  uuid?: string;
}

export interface Qcow2CreateOptions {
  /** Virtual size in bytes, a multiple of 512. */
  size: number;
  /** A power of two from 512 bytes to 2 MiB; 64 KiB by default. */
  clusterSize?: number;
  /** 3 by default (what qemu creates); 2 for old readers. */
  version?: 2 | 3;
  /** Make a differencing image over this file (name as stored: relative to the image's folder, or absolute). */
  backing?: { file: string; format?: string };
  maxInFlight?: number;
  inflate?: Inflate;
  uuid?: string;
}

/** The parent UUID a child reports until attachBacking() links it (no image has it). */
export const UNLINKED_PARENT = "00000000-0000-4000-8000-00000000b0cf";

export class Qcow2Image extends ImageBase implements LayeredImage {
  readonly sectorSize = 512;
  /** Discarded whole clusters read as zeros; partial ones keep their data. */
  readonly discardZeroes = false;
  readonly readOnly: boolean;
  readonly uuid: string;
  private readonly store: Qcow2Store;
  private readonly inflate?: Inflate;
  private readonly allocations = new Allocations();
  private readonly unstoredWrites = new Map<number, Promise<unknown>>();
  private readonly inflight = new Set<Promise<unknown>>();
  private link: ParentLink | null = null;
  private lastInflated: { host: number; data: Uint8Array } | null = null;

  private constructor(store: Qcow2Store, readOnly: boolean, options: { inflate?: Inflate; uuid?: string }) {
    super();
    this.store = store;
    this.readOnly = readOnly;
    this.inflate = options.inflate;
    this.uuid = options.uuid ?? randomUuid();
  }

  static async open(rawFile: FileIo, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    const readOnly = !!options.readOnly || file.readOnly;
    const ctx = { path: file.path };
    try {
      const { store } = await readQcow2Metadata(file);
      const h = store.header;
      if (!readOnly) {
        if (h.nbSnapshots > 0) throw new MediumError("unsupported", `qcow2 image has ${h.nbSnapshots} internal snapshots: writing is not supported, open it read-only`, ctx);
        if (h.incompatible & INCOMPAT_CORRUPT) throw new MediumError("corrupt", "qcow2 image is marked corrupt: open it read-only, or repair it with qemu-img check -r all", ctx);
        if (h.incompatible & INCOMPAT_DIRTY) {
          throw new MediumError("unsupported", "qcow2 image is marked dirty (lazy refcounts not brought up to date): repair it with qemu-img check -r all, or open it read-only", ctx);
        }
      }
      return new Qcow2Image(store, readOnly, options);
    } catch (e) {
      throw asMediumError(e, file.path, "open");
    }
  }

  /** Create a new image in an empty file: header, refcount table and block, L1 table. */
  static async create(rawFile: FileIo, options: Qcow2CreateOptions): Promise<Qcow2Image> {
    const ctx = { path: rawFile.path };
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    if (file.readOnly) throw new MediumError("read-only", "cannot create an image in a read-only file", ctx);
    const header = newHeader(
      { size: options.size, clusterSize: options.clusterSize, version: options.version, backingFile: options.backing?.file, backingFormat: options.backing?.format },
      ctx,
    );
    serializeHeader({ ...header }, ctx); // refuse a name that does not fit before writing anything
    const cs = clusterSize(header);
    header.refcountTableOffset = cs;
    header.refcountTableClusters = 1;
    const store = new Qcow2Store(file, header, new Float64Array(header.l1Size), new Float64Array(cs / 8), 2 * cs);
    store.reference(0);
    store.reference(cs);
    header.l1TableOffset = store.allocate(Math.max(1, Math.ceil((header.l1Size * 8) / cs)));
    store.markAllDirty();
    try {
      await store.flushMetadata();
    } catch (e) {
      throw asMediumError(e, file.path, "create");
    }
    return new Qcow2Image(store, false, options);
  }

  // --- identity -------------------------------------------------------------------------------

  get path(): string {
    return this.store.path;
  }
  get header(): Readonly<Qcow2Header> {
    return this.store.header;
  }
  get size(): number {
    return this.store.header.size;
  }
  get blockSize(): number {
    return this.store.cs;
  }
  get clusterSize(): number {
    return this.store.cs;
  }
  get version(): 2 | 3 {
    return this.store.header.version;
  }
  /** The backing file's name as stored (relative names are relative to this image's folder). */
  get backingFile(): string | null {
    return this.store.header.backingFile;
  }
  /** The backing file's format as stored ("qcow2", "raw", ...), null when the image does not say. */
  get backingFormat(): string | null {
    return this.store.header.backingFormat;
  }
  /** qcow2 records no modification stamp: the UUID stands in. */
  get modifyUuid(): string {
    return this.uuid;
  }
  get parentUuid(): string | null {
    if (this.backingFile === null) return null;
    return this.link?.uuid ?? UNLINKED_PARENT;
  }
  get parentModifyUuid(): string | null {
    if (this.backingFile === null) return null;
    return this.link?.modifyUuid ?? UNLINKED_PARENT;
  }

  /** Link the opened backing file (memory only: the file names it already). */
  attachBacking(parent: { uuid: string; modifyUuid: string }): void {
    if (this.backingFile === null) throw new MediumError("unsupported", "qcow2 image has no backing file", { path: this.path });
    this.link = { uuid: parent.uuid, modifyUuid: parent.modifyUuid };
  }

  /**
   * null: become a base image (the backing file name is removed from the header, after a merge).
   * A link: re-link in memory, and store the parent's file name when the link has one (a merge).
   */
  async setParent(link: ParentLink | null): Promise<void> {
    if (link !== null) {
      if (link.path) await this.setBackingFile(nameBeside(this.path, link.path), this.backingFormat);
      this.attachBacking(link);
      return;
    }
    await this.setBackingFile(null);
    this.link = null;
  }

  /** Change the backing file name and format stored in the header (null: none). Written at once. */
  async setBackingFile(file: string | null, format: string | null = null): Promise<void> {
    this.checkWritable();
    const h = this.store.header;
    const before = { backingFile: h.backingFile, backingFormat: h.backingFormat };
    h.backingFile = file;
    h.backingFormat = file === null ? null : format;
    try {
      serializeHeader({ ...h }, { path: this.path });
      this.store.headerDirty = true;
      await this.store.flushMetadata();
    } catch (e) {
      Object.assign(h, before);
      throw asMediumError(e, this.path, "header write");
    }
  }

  // --- BlockBackend -----------------------------------------------------------------------------

  /**
   * The first change clears autoclear feature bits (bitmaps we do not keep up to date), durably,
   * before any data is written: what the bits promise stops being true.
   */
  protected async startSession(): Promise<void> {
    if (this.store.header.autoclear === 0n) return;
    this.store.header.autoclear = 0n;
    this.store.headerDirty = true;
    await this.store.flushMetadata();
  }

  private async waitUnstored(offset: number, length: number): Promise<void> {
    if (this.unstoredWrites.size === 0) return;
    const cs = this.blockSize;
    const waits: Promise<unknown>[] = [];
    for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) {
      const p = this.unstoredWrites.get(c);
      if (p) waits.push(p);
    }
    if (waits.length) await Promise.allSettled(waits);
  }

  pendingWrite(index: number): Promise<unknown> | undefined {
    return this.unstoredWrites.get(index);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    await this.waitUnstored(offset, buf.length);
    const reads = planRead(offset, buf.length, this.blockSize, (index) => this.store.lookup(index)).map((p) => {
      const dst = buf.subarray(p.start, p.end);
      return p.kind === "stored" ? this.readHost(p.host, dst) : this.readMapped(p.mapping, p.inCluster, dst);
    });
    await Promise.all(reads);
  }

  /** Bytes of one cluster as mapped: zeros where nothing is stored here. */
  private async readMapped(m: ClusterMapping, inCluster: number, dst: Uint8Array): Promise<void> {
    if (m.kind === "unallocated" || m.kind === "zero") {
      dst.fill(0);
      return;
    }
    if (m.kind === "compressed") {
      const data = await this.decompress(m);
      dst.set(data.subarray(inCluster, inCluster + dst.length));
      return;
    }
    await this.readHost(m.host + inCluster, dst);
  }

  /** Stored bytes at `host`; qemu reads a cluster cut short by the end of the file as zeros past it. */
  private async readHost(host: number, dst: Uint8Array): Promise<void> {
    try {
      const n = await readFully(this.store.file, host, dst);
      dst.fill(0, n);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
  }

  private async writeHost(host: number, data: Uint8Array): Promise<void> {
    try {
      await this.store.file.write(host, data);
    } catch (e) {
      throw asMediumError(e, this.path, "write");
    }
  }

  private async decompress(m: { host: number; length: number }): Promise<Uint8Array> {
    const cached = this.lastInflated;
    if (cached && cached.host === m.host) return cached.data;
    if (!this.inflate) throw new MediumError("unsupported", "qcow2 image has compressed clusters and no inflate was given to read them", { path: this.path });
    const src = new Uint8Array(m.length);
    let n: number;
    try {
      n = await readFully(this.store.file, m.host, src);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
    let out: Uint8Array;
    try {
      out = await this.inflate(src.subarray(0, n), this.blockSize);
    } catch (e) {
      throw new MediumError("corrupt", `qcow2 compressed cluster at ${m.host} does not inflate: ${e instanceof Error ? e.message : e}`, { path: this.path, offset: m.host, cause: e });
    }
    if (out.length < this.blockSize) throw new MediumError("corrupt", `qcow2 compressed cluster at ${m.host} inflates to ${out.length} bytes, not ${this.blockSize}`, { path: this.path, offset: m.host });
    const data = out.subarray(0, this.blockSize);
    this.lastInflated = { host: m.host, data };
    return data;
  }

  /** Remember `job` until it settles: flush waits for it, and reads of clusters it allocates wait too. */
  private track<T>(first: number, last: number, job: Promise<T>): Promise<T> {
    const watched: number[] = [];
    for (let c = first; c <= last; c++) {
      if (this.store.lookup(c).kind !== "data") {
        this.unstoredWrites.set(c, job);
        watched.push(c);
      }
    }
    this.inflight.add(job);
    const forget = () => {
      this.inflight.delete(job);
      for (const c of watched) if (this.unstoredWrites.get(c) === job) this.unstoredWrites.delete(c);
    };
    job.then(forget, forget);
    return job;
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, buf.length, this.path);
    if (buf.length === 0) return;
    const cs = this.blockSize;
    const job = (async () => {
      await this.beginSession();
      await Promise.all(this.startWrites(offset, buf));
    })();
    await this.track(Math.floor(offset / cs), Math.floor((offset + buf.length - 1) / cs), job);
  }

  /**
   * Start one request's writes, in runs (request-plan.ts): stored clusters that follow each other
   * on the host get one write in place; whole clusters needing new storage get one contiguous
   * allocation and one write straight from `buf`; the rest goes cluster by cluster.
   * Synchronous: every mapping looked at here is acted on (or its allocation claimed) before
   * anything else can change it.
   */
  private startWrites(offset: number, buf: Uint8Array): Promise<void>[] {
    const s = this.store;
    const plan = planWrite(offset, buf, s.cs, {
      lookup: (index) => s.lookup(index),
      storedAt: (m) => (this.writesInPlace(m) ? m.host : null),
      // Not: a zero cluster with preallocated storage (filled in place), one another request is
      // allocating (wait for it), zeros (stored as nothing or a zero flag, see allocate).
      fresh: (index, m, data) => !(m.kind === "zero" && m.host !== 0) && !this.allocations.busy(index) && !isZero(data),
    });
    return plan.map((p) => {
      const data = buf.subarray(p.start, p.end);
      if (p.kind === "in-place") return this.writeHost(p.host, data);
      if (p.kind === "fresh") return this.allocateRun(p.first, p.old, data);
      return this.writeInCluster(p.index, p.inCluster, data, async () => undefined);
    });
  }

  /**
   * New storage for the whole clusters from `first` on (one per entry of `old`: their mappings
   * until now), as one contiguous run: counted first, the data written from the caller's buffer,
   * then the L2 entries (as allocate() does for one cluster). Each cluster's allocation is claimed
   * at once, so concurrent writers into them wait and then write in place.
   */
  private allocateRun(first: number, old: ClusterMapping[], data: Uint8Array): Promise<void> {
    const s = this.store;
    const job = (async () => {
      const host = s.allocate(old.length);
      await this.writeHost(host, data);
      for (let k = 0; k < old.length; k++) {
        s.setMapping(first + k, host + k * s.cs);
        s.release(old[k]!);
      }
    })();
    return Promise.all(old.map((_, k) => this.allocations.once(first + k, () => job))).then(() => undefined);
  }

  /** Stored here and not shared (refcount 1): written where it is. */
  private writesInPlace(m: ClusterMapping): m is { kind: "data"; host: number; copied: boolean } {
    return m.kind === "data" && this.store.refcount(m.host / this.store.cs) === 1;
  }

  private async writeInCluster(index: number, inCluster: number, data: Uint8Array, fillBelow: FillBelow): Promise<void> {
    const s = this.store;
    for (;;) {
      const m = s.lookup(index);
      if (this.writesInPlace(m)) {
        await this.writeHost(m.host + inCluster, data);
        return;
      }
      if (await this.allocations.once(index, () => this.allocate(index, inCluster, data, m, fillBelow))) return;
    }
  }

  private async allocate(index: number, inCluster: number, data: Uint8Array, m: ClusterMapping, fillBelow: FillBelow): Promise<void> {
    const s = this.store;
    const cs = s.cs;
    // A whole cluster is written from the caller's buffer; only a partial one needs the rest filled in.
    let cluster = data;
    if (data.length !== cs) {
      const covered = Math.min(cs, this.size - index * cs);
      const whole = inCluster === 0 && data.length >= covered;
      cluster = new Uint8Array(cs);
      if (!whole) {
        if (m.kind === "compressed") cluster.set(await this.decompress(m));
        else if (m.kind === "data") await this.readMapped(m, 0, cluster); // shared (refcount > 1): copy before writing
        else if (m.kind === "unallocated") await fillBelow(cluster);
      }
      cluster.set(data, inCluster);
    }
    const hasBacking = this.backingFile !== null;
    if (isZero(cluster)) {
      // Zeros need no storage: nothing where nothing shows through, a zero flag (v3) where a backing file would.
      if (m.kind === "unallocated" && !hasBacking) return;
      if (m.kind === "zero" && m.host === 0) return;
      if (this.version === 3) {
        s.setMapping(index, 0, ZERO_FLAG);
        s.release(m);
        return;
      }
    }
    if (m.kind === "zero" && m.host !== 0) {
      // A preallocated zero cluster: fill it in place, then drop the flag.
      await this.writeHost(m.host, cluster);
      s.setMapping(index, m.host);
      return;
    }
    const host = s.allocate(1);
    await this.writeHost(host, cluster);
    s.setMapping(index, host);
    s.release(m);
  }

  /** Requests already submitted finish first, then the metadata is written back in order. */
  protected async writeBack(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
    await this.store.flushMetadata();
  }

  /**
   * Drop whole clusters inside the range: unallocated (no backing file) or zero-flagged (v3 with
   * a backing file, which must stay hidden). Their host clusters are released. Partial clusters,
   * and v2 images with a backing file, keep their data.
   */
  override async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, length, this.path);
    const cs = this.blockSize;
    const first = Math.ceil(offset / cs);
    const end = offset + length;
    const last = end === this.size ? Math.ceil(end / cs) : Math.floor(end / cs);
    const hasBacking = this.backingFile !== null;
    if (first >= last || (hasBacking && this.version === 2)) return;
    const job = (async () => {
      await this.beginSession();
      for (let i = first; i < last; i++) {
        await this.allocations.settled(i);
        const m = this.store.lookup(i);
        if (m.kind === "unallocated" && !hasBacking) continue;
        if (m.kind === "zero" && m.host === 0) continue;
        this.store.setMapping(i, 0, hasBacking ? ZERO_FLAG : 0);
        this.store.release(m);
      }
    })();
    this.inflight.add(job);
    const forget = () => this.inflight.delete(job);
    job.then(forget, forget);
    await job;
  }

  /**
   * Grow the disk (as `qemu-img resize`; shrinking is refused): the new space reads as zeros, or
   * from the backing file where it is as large. Requests already submitted finish first.
   */
  async resize(size: number): Promise<void> {
    this.checkWritable();
    if (this.store.header.nbSnapshots > 0) throw new MediumError("unsupported", "cannot resize a qcow2 image with internal snapshots", { path: this.path });
    if (size < this.size) throw new MediumError("unsupported", `shrinking from ${this.size} to ${size} bytes would lose data`, { path: this.path });
    const l1Entries = checkedL1Entries(size, this.store.clusterBits, { path: this.path });
    if (size === this.size) return;
    await this.beginSession();
    await Promise.allSettled([...this.inflight]);
    try {
      await this.store.grow(size, l1Entries);
    } catch (e) {
      throw asMediumError(e, this.path, "resize");
    }
  }

  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const out: Extent[] = [];
    const cs = this.blockSize;
    const per = this.store.l2Entries;
    for (const li of [...this.store.l2.keys()].sort((a, b) => a - b)) {
      for (let i = li * per; i < (li + 1) * per && i * cs < this.size; i++) {
        const state = this.blockState(i);
        if (state === "unallocated") continue;
        const offset = i * cs;
        const length = Math.min(cs, this.size - offset);
        const prev = out[out.length - 1];
        if (prev && prev.state === state && prev.offset + prev.length === offset) prev.length += length;
        else out.push({ offset, length, state });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await Promise.allSettled([...this.inflight]);
      if (!this.readOnly) await this.store.flushMetadata();
    } catch (e) {
      throw asMediumError(e, this.path, "close");
    } finally {
      await this.store.file.close();
    }
  }

  // --- chain layer ------------------------------------------------------------------------------

  blockState(index: number): BlockState {
    if (index * this.blockSize >= this.size) return "unallocated";
    const m = this.store.lookup(index);
    if (m.kind === "unallocated") return "unallocated";
    return m.kind === "zero" ? "zero" : "data";
  }

  async readBlockPart(index: number, offsetInBlock: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    const m = this.store.lookup(index);
    if (m.kind === "unallocated") throw new MediumError("corrupt", `cluster ${index} is not stored in this image`, { path: this.path });
    await this.readMapped(m, offsetInBlock, buf);
  }

  async writeBlockPart(index: number, offsetInBlock: number, data: Uint8Array, fillBelow: FillBelow): Promise<void> {
    this.checkWritable();
    const cs = this.blockSize;
    if (index * cs + offsetInBlock + data.length > this.size || offsetInBlock + data.length > cs) {
      throw new MediumError("out-of-bounds", `write of ${data.length} bytes at cluster ${index}+${offsetInBlock} is outside the image`, { path: this.path });
    }
    const job = (async () => {
      await this.beginSession();
      await this.writeInCluster(index, offsetInBlock, data, fillBelow);
    })();
    await this.track(index, index, job);
  }
}

/** Open a qcow2 file through an opener; the file is closed again if the image is refused. */
export async function openQcow2(opener: FileOpener, path: string, options: Qcow2OpenOptions & { direct?: boolean } = {}): Promise<Qcow2Image> {
  return openImageFile(opener, path, options, (file) => Qcow2Image.open(file, options));
}

/** Create a qcow2 file (it must not exist); on failure the partial file is removed. */
export async function createQcow2(opener: FileOpener, path: string, options: Qcow2CreateOptions & { direct?: boolean }): Promise<Qcow2Image> {
  return createImageFile(opener, path, options, (file) => Qcow2Image.create(file, options));
}
