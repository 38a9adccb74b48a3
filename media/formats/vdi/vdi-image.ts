/**
 * A VDI image as a BlockBackend and a chain layer, over a FileIo.
 *
 * - The whole block map is read at open and kept in memory: finding a block costs no I/O.
 * - Opening validates everything and writes nothing, read-write or not; the first write (or
 *   discard, resize, compact) begins a write session: a new modification UUID is written to the
 *   header first, as VirtualBox does.
 * - New blocks go into an unused slot or at the end of the file; the data is written before the
 *   map entry that points at it. One allocation per block at a time: concurrent writers into the
 *   same unallocated block wait for the first, then write in place (copy-on-write happens once).
 *   A write of a whole block goes to its slot from the caller's buffer; a partial one builds the
 *   block in a reused scratch buffer.
 * - Maintenance (discard of whole blocks, compact, resize) runs alone: it waits for I/O in
 *   flight to finish and holds new I/O back (vdi-maintenance.ts).
 */
import { Allocations } from "../allocations.js";
import { createImageFile, openImageFile } from "../image-file.js";
import { ImageBase } from "../image-base.js";
import { MediumError, checkRequest, type Extent } from "../../block.js";
import { isZero } from "../../bytes.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { queued } from "../../io/request-queue.js";
import type { BlockState, FillBelow, LayeredImage, ParentLink } from "../../chain.js";
import { Gate } from "../async-lock.js";
import { ScratchBuffers } from "../scratch-buffers.js";
import { NULL_UUID, isNullUuid, isUuid, randomUuid } from "../uuid.js";
import { BLOCK_FREE, BLOCK_ZERO, isAllocated, parseBlockMap } from "./block-map.js";
import {
  HEADER_READ_SIZE,
  VdiImageType,
  checkHeaderAgainstFile,
  newHeader,
  parseHeader,
  serializeHeader,
  virtualSize,
  type VdiHeader,
} from "./header.js";
import { compactImage, discardBlock, growImage, type CompactOptions, type MaintenanceProgress } from "./vdi-maintenance.js";
import { VdiStore, asMediumError, readFully } from "./vdi-store.js";

export interface VdiOpenOptions {
  readOnly?: boolean;
  /** Requests in flight on the file (default: the request queue's). */
  maxInFlight?: number;
  /** UUID source for new modification UUIDs (tests pass a deterministic one). */
  newUuid?: () => string;
}

export interface VdiCreateOptions {
  /** Virtual size in bytes, a multiple of 512. */
  size: number;
  /**
   * "dynamic" (VDI type 1, grows on demand, the default) or "fixed" (type 2: every block has its
   * slot from the start; the file is extended with truncate, sparse where the file system allows,
   * as qemu's static=on does, since FileIo has no fallocate).
   */
  variant?: "dynamic" | "fixed";
  /** Make a differencing image (type 4) of this parent. */
  parent?: ParentLink;
  /** 1 MiB by default. */
  blockSize?: number;
  /** Alignment of block map and data area: 1 MiB (VirtualBox, default) or 512 (qemu). */
  dataAlign?: number;
  uuid?: string;
  comment?: string;
  newUuid?: () => string;
  maxInFlight?: number;
}

/** A VDI file's validated metadata, as an open reads it. */
export interface VdiMetadata {
  header: VdiHeader;
  map: Uint32Array;
  fileSize: number;
}

/**
 * Read and validate header and block map: every check an open makes, nothing written. Throws
 * MediumError (or the file's own error) for anything an open refuses. Shared by open and the
 * checker (vdi-check.ts), so both refuse exactly the same files.
 */
export async function readVdiMetadata(file: FileIo): Promise<VdiMetadata> {
  const ctx = { path: file.path };
  const fileSize = await file.size();
  const head = new Uint8Array(Math.min(fileSize, HEADER_READ_SIZE));
  const got = await readFully(file, 0, head);
  const header = parseHeader(head.subarray(0, got), ctx);
  checkHeaderAgainstFile(header, fileSize, ctx);
  if (header.type === VdiImageType.undo) {
    throw new MediumError("unsupported", "VDI undo images (type 3) are not supported", ctx);
  }
  const mapBytes = new Uint8Array(4 * header.blockCount);
  const mapGot = await readFully(file, header.blockMapOffset, mapBytes);
  const map = parseBlockMap(mapBytes.subarray(0, mapGot), header, fileSize, ctx);
  return { header, map, fileSize };
}

export class VdiImage extends ImageBase implements LayeredImage {
  readonly sectorSize = 512;
  /** Only whole blocks are dropped by discard; the rest of a range keeps its data. */
  readonly discardZeroes = false;
  readonly readOnly: boolean;
  /** @internal shared with vdi-maintenance.ts */
  readonly store: VdiStore;
  private readonly gate = new Gate();
  /** Blocks being allocated (or marked zero) right now. */
  private readonly allocations = new Allocations();
  /** The latest write submitted to each block that was not stored when it was submitted. */
  private readonly unstoredWrites = new Map<number, Promise<unknown>>();
  /** Slot-sized buffers for new blocks written in part (the rest filled from below). */
  private readonly scratch: ScratchBuffers;
  private readonly newUuid: () => string;

  private constructor(store: VdiStore, readOnly: boolean, newUuid: () => string) {
    super();
    this.store = store;
    this.readOnly = readOnly;
    this.newUuid = newUuid;
    this.scratch = new ScratchBuffers(store.slotSize);
  }

  /** Open and validate an image. Nothing is written, even read-write, until the first change. */
  static async open(rawFile: FileIo, options: VdiOpenOptions = {}): Promise<VdiImage> {
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    try {
      const { header, map } = await readVdiMetadata(file);
      return new VdiImage(new VdiStore(file, header, map), !!options.readOnly || file.readOnly, options.newUuid ?? randomUuid);
    } catch (e) {
      throw asMediumError(e, file.path, "open");
    }
  }

  /** Create a new image in an empty file: dynamic, fixed (preallocated) or differencing. */
  static async create(rawFile: FileIo, options: VdiCreateOptions): Promise<VdiImage> {
    const ctx = { path: rawFile.path };
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    const gen = options.newUuid ?? randomUuid;
    if (options.parent && options.variant === "fixed") {
      throw new MediumError("unsupported", "a differencing image cannot be fixed-size", ctx);
    }
    if (file.readOnly) throw new MediumError("read-only", "cannot create an image in a read-only file", ctx);
    const type = options.parent ? VdiImageType.diff : options.variant === "fixed" ? VdiImageType.fixed : VdiImageType.normal;
    const header = newHeader(
      {
        diskSize: options.size,
        type,
        uuid: options.uuid ?? gen(),
        modifyUuid: gen(),
        parentUuid: options.parent?.uuid,
        parentModifyUuid: options.parent?.modifyUuid,
        blockSize: options.blockSize,
        dataAlign: options.dataAlign,
        comment: options.comment,
      },
      ctx,
    );
    const map = new Uint32Array(header.blockCount);
    for (let i = 0; i < map.length; i++) map[i] = type === VdiImageType.fixed ? i : BLOCK_FREE;
    const store = new VdiStore(file, header, map);
    try {
      await store.writeHeader();
      await store.writeMap();
      await file.truncate(store.slotOffset(header.blocksAllocated));
      await file.flush();
    } catch (e) {
      throw asMediumError(e, file.path, "create");
    }
    return new VdiImage(store, false, gen);
  }

  // --- identity -------------------------------------------------------------------------------

  get path(): string {
    return this.store.path;
  }
  /** The header as it is in memory (do not change it). */
  get header(): Readonly<VdiHeader> {
    return this.store.header;
  }
  get size(): number {
    return virtualSize(this.store.header);
  }
  get blockSize(): number {
    return this.store.header.blockSize;
  }
  get blockCount(): number {
    return this.store.header.blockCount;
  }
  get type(): VdiImageType {
    return this.store.header.type;
  }
  get isDifferencing(): boolean {
    return this.store.header.type === VdiImageType.diff;
  }
  get uuid(): string {
    return this.store.header.uuid;
  }
  get modifyUuid(): string {
    return this.store.header.modifyUuid;
  }
  get parentUuid(): string | null {
    const u = this.store.header.parentUuid;
    return this.isDifferencing && !isNullUuid(u) ? u : null;
  }
  get parentModifyUuid(): string | null {
    return this.parentUuid === null ? null : this.store.header.parentModifyUuid;
  }

  /** Change the image UUID (repair, or a clone that must not clash). */
  setUuid(uuid: string): Promise<void> {
    return this.changeHeader((h) => {
      h.uuid = this.checkUuid(uuid, false);
    });
  }

  /** Change the parent (linkage) UUID only (repair). */
  setParentUuid(uuid: string): Promise<void> {
    return this.changeHeader((h) => {
      if (!this.isDifferencing) throw new MediumError("unsupported", "not a differencing image", { path: this.path });
      h.parentUuid = this.checkUuid(uuid, false);
    });
  }

  /** Change the recorded parent modification UUID only (repair, re-link after a merge). */
  setParentModifyUuid(uuid: string): Promise<void> {
    return this.changeHeader((h) => {
      if (!this.isDifferencing) throw new MediumError("unsupported", "not a differencing image", { path: this.path });
      h.parentModifyUuid = this.checkUuid(uuid, true);
    });
  }

  /** Re-link to a new parent, or (null) become a normal base image. */
  setParent(link: ParentLink | null): Promise<void> {
    return this.changeHeader((h) => {
      if (link === null) {
        if (h.type === VdiImageType.diff) h.type = VdiImageType.normal;
        h.parentUuid = NULL_UUID;
        h.parentModifyUuid = NULL_UUID;
        return;
      }
      if (h.type === VdiImageType.fixed) throw new MediumError("unsupported", "a fixed image cannot have a parent", { path: this.path });
      h.type = VdiImageType.diff;
      h.parentUuid = this.checkUuid(link.uuid, false);
      h.parentModifyUuid = this.checkUuid(link.modifyUuid, true);
    });
  }

  private checkUuid(uuid: string, nullOk: boolean): string {
    if (!isUuid(uuid) || (!nullOk && isNullUuid(uuid))) {
      throw new MediumError("unsupported", `${JSON.stringify(uuid)} is not a usable UUID`, { path: this.path });
    }
    return uuid;
  }

  private async changeHeader(edit: (h: VdiHeader) => void): Promise<void> {
    this.checkWritable();
    await this.gate.runExclusive(async () => {
      const before = { ...this.store.header };
      edit(this.store.header);
      try {
        await this.store.writeHeader();
      } catch (e) {
        this.store.header = before;
        throw asMediumError(e, this.path, "header write");
      }
    });
  }

  // --- BlockBackend -----------------------------------------------------------------------------

  /** The first change after open gets a new modification UUID, on disk before anything else. */
  protected async startSession(): Promise<void> {
    const old = this.store.header.modifyUuid;
    this.store.header.modifyUuid = this.newUuid();
    try {
      await this.store.writeHeader();
    } catch (e) {
      this.store.header.modifyUuid = old;
      throw e;
    }
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    if (this.unstoredWrites.size > 0) {
      const waits: Promise<unknown>[] = [];
      const bs = this.blockSize;
      for (let b = Math.floor(offset / bs); b * bs < offset + buf.length; b++) {
        const p = this.unstoredWrites.get(b);
        if (p) waits.push(p);
      }
      if (waits.length) await Promise.allSettled(waits);
    }
    await this.gate.runShared(() => this.readRuns(offset, buf, false));
  }

  pendingWrite(index: number): Promise<unknown> | undefined {
    return this.unstoredWrites.get(index);
  }

  /**
   * Remember `job` as the latest write to the blocks it touches that are not stored yet, until it
   * settles, so reads submitted after it wait for it (an allocation makes the data visible only
   * when the map entry is written).
   */
  private track<T>(first: number, last: number, job: Promise<T>): Promise<T> {
    const watched: number[] = [];
    for (let b = first; b <= last; b++) {
      if (!isAllocated(this.store.map[b]!)) {
        this.unstoredWrites.set(b, job);
        watched.push(b);
      }
    }
    if (watched.length === 0) return job;
    const forget = () => {
      for (const b of watched) if (this.unstoredWrites.get(b) === job) this.unstoredWrites.delete(b);
    };
    job.then(forget, forget);
    return job;
  }

  /**
   * Read virtual bytes; blocks not stored here read as zeros. Adjacent blocks that are adjacent
   * in the file become one file read. With `dataOnly`, every touched block must be stored.
   */
  private async readRuns(offset: number, buf: Uint8Array, dataOnly: boolean): Promise<void> {
    const s = this.store;
    const bs = s.header.blockSize;
    const reads: Promise<void>[] = [];
    let runPos = -1;
    let runStart = 0;
    let runLen = 0;
    const issue = (): void => {
      if (runLen === 0) return;
      const dst = buf.subarray(runStart, runStart + runLen);
      const pos = runPos;
      reads.push(
        readFully(s.file, pos, dst).then(
          (n) => {
            if (n < dst.length) throw new MediumError("corrupt", `data block at ${pos} is cut short by the end of the file`, { path: this.path, offset: pos });
          },
          (e) => {
            throw asMediumError(e, this.path, "read");
          },
        ),
      );
      runLen = 0;
    };
    let done = 0;
    while (done < buf.length) {
      const abs = offset + done;
      const index = Math.floor(abs / bs);
      const inBlock = abs - index * bs;
      const n = Math.min(bs - inBlock, buf.length - done);
      const e = s.map[index]!;
      if (isAllocated(e)) {
        const pos = s.dataPos(e) + inBlock;
        if (runLen > 0 && runPos + runLen === pos && runStart + runLen === done) runLen += n;
        else {
          issue();
          runPos = pos;
          runStart = done;
          runLen = n;
        }
      } else {
        if (dataOnly) throw new MediumError("corrupt", `block ${index} is not stored in this image`, { path: this.path });
        issue();
        buf.fill(0, done, done + n);
      }
      done += n;
    }
    issue();
    await Promise.all(reads);
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, buf.length, this.path);
    const bs = this.blockSize;
    if (buf.length === 0) return;
    await this.track(Math.floor(offset / bs), Math.floor((offset + buf.length - 1) / bs), this.writeBlocks(offset, buf));
  }

  private async writeBlocks(offset: number, buf: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    await this.beginSession();
    await this.gate.runShared(async () => {
      const parts: Promise<void>[] = [];
      for (let done = 0; done < buf.length; ) {
        const abs = offset + done;
        const index = Math.floor(abs / bs);
        const inBlock = abs - index * bs;
        const n = Math.min(bs - inBlock, buf.length - done);
        parts.push(this.writeInBlock(index, inBlock, buf.subarray(done, done + n), async () => undefined));
        done += n;
      }
      await Promise.all(parts);
    });
  }

  /** Write within one block; allocate it (once, whoever comes first) if it is not stored. */
  private async writeInBlock(index: number, inBlock: number, data: Uint8Array, fillBelow: FillBelow): Promise<void> {
    const s = this.store;
    for (;;) {
      const e = s.map[index]!;
      if (isAllocated(e)) {
        try {
          await s.file.write(s.dataPos(e) + inBlock, data);
        } catch (err) {
          throw asMediumError(err, this.path, "write");
        }
        return;
      }
      if (await this.allocations.once(index, () => this.allocate(index, inBlock, data, e, fillBelow))) return;
    }
  }

  private async allocate(index: number, inBlock: number, data: Uint8Array, entry: number, fillBelow: FillBelow): Promise<void> {
    const s = this.store;
    const bs = s.header.blockSize;
    const covered = Math.min(bs, this.size - index * bs);
    const whole = inBlock === 0 && data.length >= covered;
    const zeros = isZero(data);
    if (zeros && (whole || entry === BLOCK_ZERO)) {
      // Zeros into a block that stores nothing need no storage. A whole zero block gets an
      // explicit zero marker: in a differencing image a free block would show the parent.
      if (entry !== BLOCK_ZERO) await this.markZero(index);
      return;
    }
    // A whole block (a clone's chunk): its slot is written straight from the caller's buffer.
    if (whole && data.length === bs && s.header.blockExtra === 0) return this.storeSlot(index, data);
    const slotBuf = this.scratch.take();
    try {
      const block = slotBuf.subarray(s.header.blockExtra);
      if (!whole && entry === BLOCK_FREE) await fillBelow(block);
      block.set(data, inBlock);
      // Only zeros written can leave the block all zeros (the parent's data included): a marker
      // then says the same.
      if (zeros && isZero(block)) await this.markZero(index);
      else await this.storeSlot(index, slotBuf);
    } finally {
      this.scratch.give(slotBuf);
    }
  }

  private markZero(index: number): Promise<void> {
    return this.store.setEntry(index, BLOCK_ZERO).catch((e) => Promise.reject(asMediumError(e, this.path, "write")));
  }

  /** Write a whole slot (service data, then the block) to a free slot, then point the map at it. */
  private async storeSlot(index: number, slotBytes: Uint8Array): Promise<void> {
    const s = this.store;
    const slot = s.reserveSlot();
    try {
      await s.file.write(s.slotOffset(slot), slotBytes);
      await s.setEntry(index, slot);
    } catch (e) {
      if (s.map[index] !== slot) s.releaseSlot(slot);
      throw asMediumError(e, this.path, "write");
    }
  }

  protected writeBack(): Promise<void> {
    return this.store.file.flush();
  }

  /**
   * Drop whole blocks inside the range: free in a normal image, zero in a differencing one (the
   * parent's data must not reappear). Their space is given back at once: the last data block
   * moves into the hole and the file shrinks, as VirtualBox does. A fixed image keeps its
   * blocks (discard is a hint). Partial blocks are left as they are.
   */
  override async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, length, this.path);
    if (this.type === VdiImageType.fixed || length === 0) return;
    const bs = this.blockSize;
    const first = Math.ceil(offset / bs);
    const end = offset + length;
    const last = end === this.size ? Math.ceil(end / bs) : Math.floor(end / bs);
    if (first >= last) return;
    await this.beginSession();
    await this.gate.runExclusive(async () => {
      for (let i = first; i < last; i++) await discardBlock(this.store, i, this.isDifferencing ? BLOCK_ZERO : BLOCK_FREE);
    });
  }

  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const out: Extent[] = [];
    const bs = this.blockSize;
    const size = this.size;
    for (let i = 0; i < this.store.map.length && i * bs < size; i++) {
      const e = this.store.map[i]!;
      if (e === BLOCK_FREE) continue;
      const state = e === BLOCK_ZERO ? "zero" : "data";
      const offset = i * bs;
      const length = Math.min(bs, size - offset);
      const prev = out[out.length - 1];
      if (prev && prev.state === state && prev.offset + prev.length === offset) prev.length += length;
      else out.push({ offset, length, state });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.gate.runExclusive(async () => {
      this.closed = true;
      try {
        if (!this.readOnly && this.sessionStarted) await this.store.file.flush();
      } finally {
        await this.store.file.close();
      }
    });
  }

  // --- chain layer ------------------------------------------------------------------------------

  blockState(index: number): BlockState {
    const e = this.store.map[index];
    if (e === undefined || e === BLOCK_FREE || index * this.blockSize >= this.size) return "unallocated";
    return e === BLOCK_ZERO ? "zero" : "data";
  }

  async readBlockPart(index: number, offsetInBlock: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    await this.gate.runShared(() => this.readRuns(index * this.blockSize + offsetInBlock, buf, true));
  }

  async writeBlockPart(index: number, offsetInBlock: number, data: Uint8Array, fillBelow: FillBelow): Promise<void> {
    this.checkWritable();
    const bs = this.blockSize;
    if (index * bs + offsetInBlock + data.length > this.size || offsetInBlock + data.length > bs) {
      throw new MediumError("out-of-bounds", `write of ${data.length} bytes at block ${index}+${offsetInBlock} is outside the image`, { path: this.path });
    }
    const job = (async () => {
      await this.beginSession();
      await this.gate.runShared(() => this.writeInBlock(index, offsetInBlock, data, fillBelow));
    })();
    await this.track(index, index, job);
  }

  // --- maintenance ------------------------------------------------------------------------------

  /** Grow the virtual size (dynamic and differencing images; shrinking is not supported). */
  async resize(size: number, options: { onProgress?: MaintenanceProgress } = {}): Promise<void> {
    this.checkWritable();
    await this.beginSession();
    await this.gate.runExclusive(() => growImage(this.store, size, options.onProgress));
  }

  /**
   * Drop blocks that hold only zeros (and, given `sameAsParent`, blocks identical to the
   * parent's), move the last blocks into the holes, and truncate the file.
   */
  async compact(options: CompactOptions = {}): Promise<void> {
    this.checkWritable();
    if (this.type === VdiImageType.fixed) return;
    await this.beginSession();
    await this.gate.runExclusive(() => compactImage(this.store, this.isDifferencing, options));
  }

  /** The header bytes as they would be written now (for tools and tests). */
  headerBytes(): Uint8Array {
    return serializeHeader(this.store.header);
  }
}

/** Open a VDI file through an opener; the file is closed again if the image is refused. */
export async function openVdi(opener: FileOpener, path: string, options: VdiOpenOptions & { direct?: boolean } = {}): Promise<VdiImage> {
  return openImageFile(opener, path, options, (file) => VdiImage.open(file, options));
}

/** Create a VDI file (it must not exist); on failure the partial file is removed. */
export async function createVdi(opener: FileOpener, path: string, options: VdiCreateOptions & { direct?: boolean }): Promise<VdiImage> {
  return createImageFile(opener, path, options, (file) => VdiImage.create(file, options));
}
