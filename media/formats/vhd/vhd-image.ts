/**
 * A VHD image (fixed, dynamic or differencing) as a BlockBackend and a chain layer, over a FileIo.
 *
 * - Open reads and validates all metadata (vhd-metadata.ts) and writes nothing, read-write or
 *   not. The BAT and the bitmaps of partly stored blocks stay in memory: where a sector lives is
 *   known without I/O.
 * - The first change after open begins a write session: the footer's timestamp moves on (both
 *   copies), which is what a child's recorded parent timestamp is compared with (VHD has no
 *   modification UUID; see footer.ts timestampToken).
 * - A new block goes where the footer is: the footer is first rewritten one block further on (so
 *   the file always ends with a valid footer), then the block's bitmap and data are written, and
 *   the BAT entry last (data before metadata, as the VDI backend does). A crash in between leaks
 *   the block's space, nothing else.
 * - Dynamic images mark every sector of a new block stored (as qemu does; the rest of the block
 *   is fresh file space, zeros). Differencing images mark only the sectors written: the others
 *   keep reading from the parent, through the chain's storedRuns.
 * - VHD has no discard (neither has VirtualBox's backend): discard is accepted and keeps the
 *   data. Compact is refused. Resize grows (moving blocks out of a growing BAT's way).
 */
import { Allocations } from "../allocations.js";
import { createImageFile, openImageFile } from "../image-file.js";
import { ImageBase } from "../image-base.js";
import { MediumError, checkRequest, type Extent } from "../../block.js";
import { isZero } from "../../bytes.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { queued, type QueuedFileIo } from "../../io/request-queue.js";
import type { BlockState, FillBelow, LayeredImage, ParentLink, StoredRun } from "../../chain.js";
import { Gate, Mutex } from "../async-lock.js";
import { NULL_UUID, isNullUuid, isUuid } from "../uuid.js";
import { BLOCK_UNUSED, allSet, bitmapRuns, isFull, serializeBat, setBits } from "./bat.js";
import {
  DEFAULT_BLOCK_SIZE,
  LocatorCode,
  encodeUtf16,
  noLocators,
  serializeDynamicHeader,
  type VhdDynamicHeader,
} from "./dynamic-header.js";
import { baseName, relativePath } from "../paths.js";
import {
  FOOTER_SIZE,
  MAX_VHD_SIZE,
  SECTOR_SIZE,
  VhdDiskType,
  chsGeometry,
  serializeFooter,
  timestampToken,
  tokenTimestamp,
  vhdTimestamp,
  type VhdFooter,
} from "./footer.js";
import { asMediumError, readFully, readVhdMetadata, virtualSize } from "./vhd-metadata.js";
import { writeNewImage, type VhdCreateOptions, type VhdImageState } from "./vhd-create.js";

export type { VhdCreateOptions, VhdParentRef } from "./vhd-create.js";

export interface VhdOpenOptions {
  readOnly?: boolean;
  /** Requests in flight on the file (default: the request queue's). */
  maxInFlight?: number;
  /** Clock in Unix milliseconds for footer timestamps (tests pass a fixed one). */
  now?: () => number;
}

const unsupported = (message: string, path: string): MediumError => new MediumError("unsupported", message, { path });

export class VhdImage extends ImageBase implements LayeredImage {
  readonly sectorSize = 512;
  /** VHD has no discard (nor has VirtualBox's VHD backend): discard is the base's hint, the data stays. */
  readonly discardZeroes = false;
  readonly readOnly: boolean;
  private readonly file: QueuedFileIo;
  private footer: VhdFooter;
  private header: VhdDynamicHeader | null;
  private bat: Uint32Array | null;
  /** Bitmaps of stored blocks not fully marked stored; absent for full blocks. */
  private readonly partial: Map<number, Uint8Array>;
  private readonly bmSize: number;
  /** Where the footer is (the end of the data). */
  private eod: number;
  private readonly meta = new Mutex();
  private readonly gate = new Gate();
  private readonly allocations = new Allocations();
  private readonly unstoredWrites = new Map<number, Promise<unknown>>();
  private readonly now: () => number;

  private constructor(
    file: QueuedFileIo,
    init: VhdImageState,
    readOnly: boolean,
    now: () => number,
  ) {
    super();
    this.file = file;
    this.footer = init.footer;
    this.header = init.header;
    this.bat = init.bat;
    this.partial = init.partial;
    this.bmSize = init.bitmapSize;
    this.eod = init.eod;
    this.readOnly = readOnly;
    this.now = now;
  }

  /** Open and validate an image. Nothing is written until the first change. */
  static async open(rawFile: FileIo, options: VhdOpenOptions = {}): Promise<VhdImage> {
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    try {
      const m = await readVhdMetadata(file);
      return new VhdImage(file, { ...m, eod: m.footerOffset }, !!options.readOnly || file.readOnly, options.now ?? Date.now);
    } catch (e) {
      throw asMediumError(e, file.path, "open");
    }
  }

  /** Create a new image in an empty file (layout in vhd-create.ts). */
  static async create(rawFile: FileIo, options: VhdCreateOptions): Promise<VhdImage> {
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    const state = await writeNewImage(file, options);
    return new VhdImage(file, state, false, options.now ?? Date.now);
  }

  // --- identity ---------------------------------------------------------------------------------

  get path(): string {
    return this.file.path;
  }
  get size(): number {
    return virtualSize(this.footer);
  }
  /** Allocation granularity: the dynamic header's block size; 2 MiB for fixed images (nothing is allocated). */
  get blockSize(): number {
    return this.header?.blockSize ?? DEFAULT_BLOCK_SIZE;
  }
  get variant(): "fixed" | "dynamic" | "differencing" {
    const t = this.footer.diskType;
    return t === VhdDiskType.fixed ? "fixed" : t === VhdDiskType.differencing ? "differencing" : "dynamic";
  }
  get isDifferencing(): boolean {
    return this.footer.diskType === VhdDiskType.differencing;
  }
  get uuid(): string {
    return this.footer.uuid;
  }
  /** The footer's timestamp (seconds since 2000-01-01 UTC). */
  get timestamp(): number {
    return this.footer.timestamp;
  }
  get modifyUuid(): string {
    return timestampToken(this.footer.timestamp);
  }
  get parentUuid(): string | null {
    return this.isDifferencing && this.header ? this.header.parentUuid : null;
  }
  get parentModifyUuid(): string | null {
    return this.isDifferencing && this.header ? timestampToken(this.header.parentTimestamp) : null;
  }
  /** The parent's file name as the header records it ("" if none). */
  get parentName(): string {
    return this.isDifferencing && this.header ? this.header.parentName : "";
  }
  /** Copies of the on-disk structures as they are in memory (for tools and tests). */
  get footerCopy(): Readonly<VhdFooter> {
    return { ...this.footer };
  }
  get headerCopy(): Readonly<VhdDynamicHeader> | null {
    return this.header ? { ...this.header, locators: this.header.locators.map((l) => ({ ...l })) } : null;
  }
  /** File size the image occupies now. */
  get fileSize(): number {
    return this.eod + FOOTER_SIZE;
  }

  // --- metadata writes (callers hold `meta`) -----------------------------------------------------

  /** The footer at the end (and the copy at offset 0 first, for dynamic images). */
  private async writeFooters(): Promise<void> {
    const bytes = serializeFooter(this.footer);
    if (this.header) await this.file.write(0, bytes);
    await this.file.write(this.eod, bytes);
  }

  private async writeHeader(): Promise<void> {
    await this.file.write(this.footer.dataOffset!, serializeDynamicHeader(this.header!, { path: this.path }));
  }

  private blockPos(index: number): number {
    return this.bat![index]! * SECTOR_SIZE;
  }

  // --- BlockBackend ------------------------------------------------------------------------------

  /** The first change after open moves the footer timestamp on, on disk before anything else. */
  protected startSession(): Promise<void> {
    return this.meta.run(async () => {
      const old = this.footer.timestamp;
      this.footer.timestamp = Math.min(0xffffffff, Math.max(vhdTimestamp(this.now()), old + 1));
      try {
        await this.writeFooters();
      } catch (e) {
        this.footer.timestamp = old;
        throw asMediumError(e, this.path, "footer write");
      }
    });
  }

  pendingWrite(index: number): Promise<unknown> | undefined {
    return this.unstoredWrites.get(index);
  }

  /** Whether a write of [inBlock, +length) in block `index` may change which sectors are stored. */
  private changesPresence(index: number, inBlock: number, length: number): boolean {
    if (!this.bat) return false;
    if (this.bat[index] === BLOCK_UNUSED) return true;
    const bm = this.partial.get(index);
    return !!bm && !allSet(bm, inBlock / SECTOR_SIZE, Math.ceil(length / SECTOR_SIZE));
  }

  /** Remember `job` for the blocks whose presence it may change, so later reads wait for it. */
  private track<T>(offset: number, length: number, job: Promise<T>): Promise<T> {
    const bs = this.blockSize;
    const watched: number[] = [];
    for (let b = Math.floor(offset / bs); b * bs < offset + length; b++) {
      const from = Math.max(offset, b * bs);
      const to = Math.min(offset + length, (b + 1) * bs);
      if (this.changesPresence(b, from - b * bs, to - from)) {
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

  private async waitForWrites(offset: number, length: number): Promise<void> {
    if (this.unstoredWrites.size === 0) return;
    const waits: Promise<unknown>[] = [];
    const bs = this.blockSize;
    for (let b = Math.floor(offset / bs); b * bs < offset + length; b++) {
      const p = this.unstoredWrites.get(b);
      if (p) waits.push(p);
    }
    if (waits.length) await Promise.allSettled(waits);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    await this.waitForWrites(offset, buf.length);
    await this.gate.runShared(() => this.readVirtual(offset, buf));
  }

  private async readFile(pos: number, dst: Uint8Array): Promise<void> {
    let n: number;
    try {
      n = await readFully(this.file, pos, dst);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
    if (n < dst.length) throw new MediumError("corrupt", `data at ${pos} is cut short by the end of the file`, { path: this.path, offset: pos });
  }

  /** Read virtual bytes of this image alone: sectors not stored here read as zeros. */
  private async readVirtual(offset: number, buf: Uint8Array): Promise<void> {
    if (!this.bat) return this.readFile(offset, buf);
    const bs = this.blockSize;
    const reads: Promise<void>[] = [];
    for (let done = 0; done < buf.length; ) {
      const abs = offset + done;
      const index = Math.floor(abs / bs);
      const inBlock = abs - index * bs;
      const n = Math.min(bs - inBlock, buf.length - done);
      if (this.bat[index] === BLOCK_UNUSED) buf.fill(0, done, done + n);
      else {
        let at = 0;
        for (const run of this.storedRuns(index, inBlock, n)) {
          const dst = buf.subarray(done + at, done + at + run.length);
          if (run.stored) reads.push(this.readFile(this.blockPos(index) + this.bmSize + inBlock + at, dst));
          else dst.fill(0);
          at += run.length;
        }
      }
      done += n;
    }
    await Promise.all(reads);
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, buf.length, this.path);
    if (buf.length === 0) return;
    await this.track(offset, buf.length, this.writeVirtual(offset, buf));
  }

  private async writeVirtual(offset: number, buf: Uint8Array): Promise<void> {
    await this.beginSession();
    await this.gate.runShared(async () => {
      if (!this.bat) {
        try {
          await this.file.write(offset, buf);
        } catch (e) {
          throw asMediumError(e, this.path, "write");
        }
        return;
      }
      const bs = this.blockSize;
      const parts: Promise<void>[] = [];
      for (let done = 0; done < buf.length; ) {
        const abs = offset + done;
        const index = Math.floor(abs / bs);
        const inBlock = abs - index * bs;
        const n = Math.min(bs - inBlock, buf.length - done);
        parts.push(this.writeInBlock(index, inBlock, buf.subarray(done, done + n)));
        done += n;
      }
      await Promise.all(parts);
    });
  }

  /** Write within one block of a dynamic image; allocate it (once, whoever comes first) if needed. */
  private async writeInBlock(index: number, inBlock: number, data: Uint8Array): Promise<void> {
    const bat = this.bat!;
    for (;;) {
      if (bat[index] !== BLOCK_UNUSED) {
        try {
          await this.file.write(this.blockPos(index) + this.bmSize + inBlock, data);
          const bm = this.partial.get(index);
          if (bm && !allSet(bm, inBlock / SECTOR_SIZE, data.length / SECTOR_SIZE)) await this.markStored(index, inBlock, data.length);
        } catch (e) {
          throw asMediumError(e, this.path, "write");
        }
        return;
      }
      if (await this.allocations.once(index, () => this.allocate(index, inBlock, data))) return;
    }
  }

  /** Mark sectors stored after their data is written: in memory, then the bitmap on disk. */
  private markStored(index: number, inBlock: number, length: number): Promise<void> {
    return this.meta.run(async () => {
      const bm = this.partial.get(index);
      if (!bm || !setBits(bm, inBlock / SECTOR_SIZE, length / SECTOR_SIZE)) return;
      await this.file.write(this.blockPos(index), bm.slice());
      if (isFull(bm, this.blockSize / SECTOR_SIZE)) this.partial.delete(index);
    });
  }

  private async allocate(index: number, inBlock: number, data: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const diff = this.isDifferencing;
    // Zeros into a block a dynamic image does not store change nothing: it reads zeros already.
    if (!diff && isZero(data)) return;
    const sectors = bs / SECTOR_SIZE;
    const bitmap = new Uint8Array(this.bmSize);
    const covered = Math.min(bs, this.size - index * bs);
    if (!diff || (inBlock === 0 && data.length >= covered)) setBits(bitmap, 0, sectors);
    else setBits(bitmap, inBlock / SECTOR_SIZE, data.length / SECTOR_SIZE);
    const stride = this.bmSize + bs;
    try {
      // Room first: the footer moves one block on, so the file never ends without one.
      const pos = await this.meta.run(async () => {
        const at = this.eod;
        if ((at + stride) / SECTOR_SIZE >= BLOCK_UNUSED) throw unsupported("the image file would grow past 2 TiB, which a VHD block table cannot address", this.path);
        await this.moveFooterTo(at + stride);
        return at;
      });
      await Promise.all([this.file.write(pos, bitmap), this.file.write(pos + this.bmSize + inBlock, data)]);
      await this.meta.run(async () => {
        const entry = new Uint32Array([pos / SECTOR_SIZE]);
        await this.file.write(this.header!.tableOffset + 4 * index, serializeBat(entry));
        this.bat![index] = entry[0]!;
        if (!isFull(bitmap, sectors)) this.partial.set(index, bitmap);
      });
    } catch (e) {
      throw asMediumError(e, this.path, "write");
    }
  }

  protected writeBack(): Promise<void> {
    return this.file.flush();
  }

  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const size = this.size;
    if (!this.bat) return size > 0 ? [{ offset: 0, length: size, state: "data" }] : [];
    const out: Extent[] = [];
    const bs = this.blockSize;
    for (let i = 0; i < this.bat.length && i * bs < size; i++) {
      if (this.bat[i] === BLOCK_UNUSED) continue;
      let at = i * bs;
      for (const run of this.storedRuns(i, 0, Math.min(bs, size - i * bs))) {
        if (run.stored) {
          const prev = out[out.length - 1];
          if (prev && prev.offset + prev.length === at) prev.length += run.length;
          else out.push({ offset: at, length: run.length, state: "data" });
        }
        at += run.length;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.gate.runExclusive(async () => {
      this.closed = true;
      try {
        if (!this.readOnly && this.sessionStarted) await this.file.flush();
      } finally {
        await this.file.close();
      }
    });
  }

  // --- chain layer ---------------------------------------------------------------------------------

  blockState(index: number): BlockState {
    if (index < 0 || index * this.blockSize >= this.size) return "unallocated";
    if (!this.bat) return "data";
    const e = this.bat[index];
    return e === undefined || e === BLOCK_UNUSED ? "unallocated" : "data";
  }

  storedRuns(index: number, offsetInBlock: number, length: number): StoredRun[] {
    return bitmapRuns(this.partial.get(index) ?? null, offsetInBlock, length);
  }

  async readBlockPart(index: number, offsetInBlock: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    await this.gate.runShared(async () => {
      if (!this.bat) return this.readFile(index * this.blockSize + offsetInBlock, buf);
      if (this.bat[index] === BLOCK_UNUSED) throw new MediumError("corrupt", `block ${index} is not stored in this image`, { path: this.path });
      await this.readFile(this.blockPos(index) + this.bmSize + offsetInBlock, buf);
    });
  }

  /** The rest of a block is never copied from below: VHD's bitmap leaves it to the parent. */
  async writeBlockPart(index: number, offsetInBlock: number, data: Uint8Array, _fillBelow: FillBelow): Promise<void> {
    this.checkWritable();
    const bs = this.blockSize;
    if (index * bs + offsetInBlock + data.length > this.size || offsetInBlock + data.length > bs) {
      throw new MediumError("out-of-bounds", `write of ${data.length} bytes at block ${index}+${offsetInBlock} is outside the image`, { path: this.path });
    }
    if (data.length === 0) return;
    await this.track(index * bs + offsetInBlock, data.length, this.writeVirtual(index * bs + offsetInBlock, data));
  }

  /**
   * Re-link to another parent (null: become a dynamic base image). `parentPath`, when given,
   * updates the parent name and rewrites the W2ku/W2ru locators where they have room.
   */
  async setParent(link: ParentLink | null, parentPath = link?.path): Promise<void> {
    this.checkWritable();
    if (!this.header) {
      if (link === null) return;
      throw unsupported("a fixed VHD cannot have a parent", this.path);
    }
    if (link && (!isUuid(link.uuid) || isNullUuid(link.uuid))) throw unsupported(`${JSON.stringify(link.uuid)} is not a usable UUID`, this.path);
    await this.gate.runExclusive(() =>
      this.meta.run(async () => {
        const h = this.header!;
        const beforeHeader = { ...h, locators: h.locators.map((l) => ({ ...l })) };
        const beforeType = this.footer.diskType;
        try {
          if (link === null) {
            this.footer.diskType = VhdDiskType.dynamic;
            h.parentUuid = NULL_UUID;
            h.parentTimestamp = 0;
            h.parentName = "";
            h.locators = noLocators();
          } else {
            this.footer.diskType = VhdDiskType.differencing;
            h.parentUuid = link.uuid;
            h.parentTimestamp = tokenTimestamp(link.modifyUuid) ?? 0;
            if (parentPath !== undefined) {
              h.parentName = baseName(parentPath);
              for (const l of h.locators) {
                const text = l.code === LocatorCode.w2ku ? parentPath : l.code === LocatorCode.w2ru ? relativePath(this.path, parentPath) : null;
                const bytes = text === null ? null : encodeUtf16(text, false, l.dataSpace);
                if (!bytes) continue;
                const area = new Uint8Array(l.dataSpace);
                area.set(bytes);
                await this.file.write(l.dataOffset, area);
                l.dataLength = bytes.length;
              }
            }
          }
          await this.writeHeader();
          await this.writeFooters();
        } catch (e) {
          this.header = beforeHeader;
          this.footer.diskType = beforeType;
          throw asMediumError(e, this.path, "header write");
        }
      }),
    );
  }

  /**
   * Repair: give the image another unique id (both footer copies, checksum recomputed). The
   * timestamp stays, so children still see their parent unmodified.
   */
  async setUuid(uuid: string): Promise<void> {
    this.checkWritable();
    if (!isUuid(uuid) || isNullUuid(uuid)) throw unsupported(`${JSON.stringify(uuid)} is not a usable UUID`, this.path);
    await this.gate.runExclusive(() =>
      this.meta.run(async () => {
        const before = this.footer.uuid;
        this.footer.uuid = uuid;
        try {
          await this.writeFooters();
        } catch (e) {
          this.footer.uuid = before;
          throw asMediumError(e, this.path, "footer write");
        }
      }),
    );
  }

  /** Repair: change only the parent unique id a differencing image records (its dynamic header). */
  async setParentUuid(uuid: string): Promise<void> {
    this.checkWritable();
    if (!this.header || !this.isDifferencing) throw unsupported("not a differencing image", this.path);
    if (!isUuid(uuid) || isNullUuid(uuid)) throw unsupported(`${JSON.stringify(uuid)} is not a usable UUID`, this.path);
    await this.gate.runExclusive(() =>
      this.meta.run(async () => {
        const h = this.header!;
        const before = h.parentUuid;
        h.parentUuid = uuid;
        try {
          await this.writeHeader();
        } catch (e) {
          h.parentUuid = before;
          throw asMediumError(e, this.path, "header write");
        }
      }),
    );
  }

  // --- maintenance -----------------------------------------------------------------------------------

  /**
   * Grow the virtual size. Fixed: the footer moves to the new end. Dynamic and differencing: the
   * BAT grows in place; blocks and parent locator data in its way move to the end of the file
   * first, as VirtualBox does (the space they leave is leaked: compact is not implemented).
   */
  async resize(size: number, options: { onProgress?: (done: number, total: number, phase: "move") => void } = {}): Promise<void> {
    this.checkWritable();
    if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE) throw unsupported(`size ${size} is not a positive multiple of 512`, this.path);
    if (size < this.size) throw unsupported("a VHD cannot shrink", this.path);
    if (size > MAX_VHD_SIZE - 2 * 1024 * 1024 * 1024) throw unsupported(`size ${size} is larger than VHD allows (2040 GiB)`, this.path);
    if (size === this.size) return;
    await this.beginSession();
    await this.gate.runExclusive(() =>
      this.meta.run(async () => {
        try {
          if (!this.header) await this.growFixed(size);
          else await this.growDynamic(size, options.onProgress);
        } catch (e) {
          throw asMediumError(e, this.path, "resize");
        }
      }),
    );
  }

  private async growFixed(size: number): Promise<void> {
    const oldSize = this.size;
    const oldEod = this.eod;
    const newEod = Math.max(size, oldEod + FOOTER_SIZE);
    this.footer.currentSize = size;
    this.footer.geometry = chsGeometry(size);
    this.eod = newEod;
    await this.writeFooters();
    await this.file.flush();
    // The old footer (and any bytes past the old data) now lie inside the disk: zero them.
    const end = Math.min(size, oldEod + FOOTER_SIZE);
    if (end > oldSize) await this.file.write(oldSize, new Uint8Array(end - oldSize));
  }

  private async growDynamic(size: number, onProgress?: (done: number, total: number, phase: "move") => void): Promise<void> {
    const h = this.header!;
    const bs = h.blockSize;
    const entries = Math.ceil(size / bs);
    if (entries > h.maxTableEntries) {
      const tableEnd = h.tableOffset + 4 * entries;
      const room = Math.ceil(tableEnd / SECTOR_SIZE) * SECTOR_SIZE;
      if (room > this.eod) {
        // Nothing stored after the table's room: move the footer out of the way first.
        await this.moveFooterTo(room);
      }
      // Blocks and locator data in the way move to the end, each made durable before the next.
      const bat = this.bat!;
      const stride = this.bmSize + bs;
      const inTheWay = [...bat.keys()].filter((i) => bat[i] !== BLOCK_UNUSED && bat[i]! * SECTOR_SIZE < room);
      for (const [n, i] of inTheWay.entries()) {
        const to = await this.relocate(bat[i]! * SECTOR_SIZE, stride);
        const entry = new Uint32Array([to / SECTOR_SIZE]);
        await this.file.write(h.tableOffset + 4 * i, serializeBat(entry));
        bat[i] = entry[0]!;
        onProgress?.(n + 1, inTheWay.length, "move");
      }
      for (const l of h.locators) {
        if (l.code === LocatorCode.none || l.dataOffset >= room || l.dataOffset + l.dataSpace <= h.tableOffset) continue;
        l.dataOffset = await this.relocate(l.dataOffset, Math.ceil(Math.max(l.dataSpace, l.dataLength) / SECTOR_SIZE) * SECTOR_SIZE);
        await this.writeHeader();
      }
      await this.file.flush();
      const grown = new Uint32Array(entries).fill(BLOCK_UNUSED);
      grown.set(bat);
      await this.file.write(h.tableOffset + 4 * h.maxTableEntries, serializeBat(grown, h.maxTableEntries));
      h.maxTableEntries = entries;
      this.bat = grown;
      await this.writeHeader();
    }
    this.footer.currentSize = size;
    this.footer.geometry = chsGeometry(size);
    await this.writeFooters();
  }

  /** The footer to a new end; the copy at offset 0 holds the same bytes and stays as it is. */
  private async moveFooterTo(eod: number): Promise<void> {
    const old = this.eod;
    this.eod = eod;
    try {
      await this.file.write(eod, serializeFooter(this.footer));
    } catch (e) {
      this.eod = old;
      await this.file.truncate(old + FOOTER_SIZE).catch(() => undefined);
      throw e;
    }
  }

  /** Copy `length` bytes at `from` to the end (the footer moves on first); returns where they went. */
  private async relocate(from: number, length: number): Promise<number> {
    const to = this.eod;
    const bytes = new Uint8Array(length);
    await this.readFile(from, bytes);
    await this.moveFooterTo(to + length);
    await this.file.write(to, bytes);
    await this.file.flush();
    return to;
  }

  /** Not implemented for VHD: refused. */
  async compact(): Promise<void> {
    this.checkWritable();
    throw unsupported("compacting a VHD is not supported", this.path);
  }
}

/** Open a VHD file through an opener; the file is closed again if the image is refused. */
export async function openVhd(opener: FileOpener, path: string, options: VhdOpenOptions & { direct?: boolean } = {}): Promise<VhdImage> {
  return openImageFile(opener, path, options, (file) => VhdImage.open(file, options));
}

/** Create a VHD file (it must not exist); on failure the partial file is removed. */
export async function createVhd(opener: FileOpener, path: string, options: VhdCreateOptions & { direct?: boolean }): Promise<VhdImage> {
  return createImageFile(opener, path, options, (file) => VhdImage.create(file, options));
}
