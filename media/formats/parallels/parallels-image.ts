/**
 * A Parallels HDD v2 image as a BlockBackend, over a FileIo.
 *
 * - The whole BAT is read at open and kept in memory; opening validates everything and writes
 *   nothing, read-write or not.
 * - The first change marks the header in use (as qemu does; on disk before any data), close
 *   clears the mark again. An image found marked in use is refused read-write, as qemu refuses it:
 *   another program may have it open, or it was not closed cleanly.
 * - New clusters go at the end of the data area; the data is written before the BAT entry that
 *   points at it, so a crash leaves at worst an unreferenced cluster past the last one used.
 *   One allocation per cluster at a time: concurrent writers into it wait for the first.
 * - "fixed": every BAT entry points at its cluster from the start (file extended with truncate,
 *   sparse where the file system allows). A headerless "plain" .hdd is raw data: open it with the
 *   raw backend.
 * Not a chain layer: clusters need not be a power of two (VirtualBox uses 63 sectors), and
 * neither qemu nor VirtualBox makes Parallels differencing images.
 */
import { Allocations } from "../allocations.js";
import { createImageFile, openImageFile } from "../image-file.js";
import { ImageBase } from "../image-base.js";
import { MediumError, checkRequest, type Extent } from "../../block.js";
import { isZero } from "../../bytes.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { queued } from "../../io/request-queue.js";
import { Mutex } from "../async-lock.js";
import { ScratchBuffers } from "../scratch-buffers.js";
import { asMediumError, readFully } from "../file-helpers.js";
import {
  HEADER_SIZE,
  INUSE_MAGIC,
  SECTOR,
  batValue,
  clusterSize,
  dataOffset,
  newHeader,
  parseBat,
  parseHeader,
  serializeHeader,
  virtualSize,
  type ParallelsForm,
  type ParallelsHeader,
} from "./header.js";

export { isParallels } from "./header.js";

export interface ParallelsOpenOptions {
  readOnly?: boolean;
  maxInFlight?: number;
}

export interface ParallelsCreateOptions {
  /** Virtual size in bytes, a multiple of 512. */
  size: number;
  /** "dynamic" (default): clusters allocated on first write; "fixed": all allocated at creation. */
  variant?: "dynamic" | "fixed";
  /** Bytes, a multiple of 512; 1 MiB by default. */
  clusterSize?: number;
  /**
   * "legacy" ("WithoutFreeSpace", BAT in sectors: the form VirtualBox opens; the default) or
   * "ext" ("WithouFreSpacExt", BAT in clusters: what qemu creates).
   */
  form?: ParallelsForm;
  maxInFlight?: number;
}

/** A Parallels file's validated metadata, as an open reads it (shared with the checker). */
export interface ParallelsMetadata {
  header: ParallelsHeader;
  /** Byte offset of each cluster's data, 0 = not allocated. */
  bat: Float64Array;
  fileSize: number;
}

/** Read and validate header and BAT: every check an open makes, nothing written. */
export async function readParallelsMetadata(file: FileIo): Promise<ParallelsMetadata> {
  const ctx = { path: file.path };
  const fileSize = await file.size();
  const head = new Uint8Array(Math.min(fileSize, HEADER_SIZE));
  const got = await readFully(file, 0, head);
  const header = parseHeader(head.subarray(0, got), ctx);
  const batBytes = new Uint8Array(4 * header.batEntries);
  const batGot = await readFully(file, HEADER_SIZE, batBytes);
  const bat = parseBat(batBytes.subarray(0, batGot), header, fileSize, ctx);
  return { header, bat, fileSize };
}

export class ParallelsImage extends ImageBase {
  readonly sectorSize = SECTOR;
  /** Discard is the base's hint: clusters stay allocated (the BAT has no "zero" state to hide old data with). */
  readonly discardZeroes = false;
  readonly readOnly: boolean;
  readonly header: ParallelsHeader;
  private readonly bat: Float64Array;
  /** Where the next new cluster goes. */
  private end: number;
  private readonly meta = new Mutex();
  private readonly allocations = new Allocations();
  private readonly unstoredWrites = new Map<number, Promise<unknown>>();
  /** Cluster-sized buffers for new clusters written in part. */
  private readonly scratch: ScratchBuffers;

  private constructor(
    private readonly file: FileIo,
    m: ParallelsMetadata,
    readOnly: boolean,
  ) {
    super();
    this.header = m.header;
    this.bat = m.bat;
    this.readOnly = readOnly;
    const cs = clusterSize(m.header);
    this.scratch = new ScratchBuffers(cs);
    let end = dataOffset(m.header);
    for (const pos of m.bat) if (pos > 0) end = Math.max(end, pos + cs);
    // Ext entries count clusters, so a new cluster must start on a cluster multiple.
    this.end = m.header.form === "ext" ? Math.ceil(end / cs) * cs : end;
  }

  static async open(rawFile: FileIo, options: ParallelsOpenOptions = {}): Promise<ParallelsImage> {
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    const readOnly = !!options.readOnly || file.readOnly;
    try {
      const m = await readParallelsMetadata(file);
      if (!readOnly && m.header.inUse === INUSE_MAGIC) {
        throw new MediumError("in-use", "Parallels image is marked in use (open elsewhere, or not closed cleanly): open it read-only, or repair it with qemu-img check -r all", {
          path: file.path,
        });
      }
      return new ParallelsImage(file, m, readOnly);
    } catch (e) {
      throw asMediumError(e, file.path, "open");
    }
  }

  static async create(rawFile: FileIo, options: ParallelsCreateOptions): Promise<ParallelsImage> {
    const ctx = { path: rawFile.path };
    const file = queued(rawFile, { maxInFlight: options.maxInFlight });
    if (file.readOnly) throw new MediumError("read-only", "cannot create an image in a read-only file", ctx);
    const header = newHeader({ size: options.size, clusterSize: options.clusterSize, form: options.form }, ctx);
    const cs = clusterSize(header);
    const bat = new Float64Array(header.batEntries);
    const start = dataOffset(header);
    if (options.variant === "fixed") for (let i = 0; i < bat.length; i++) bat[i] = start + i * cs;
    const table = new Uint8Array(4 * bat.length);
    const v = new DataView(table.buffer);
    for (let i = 0; i < bat.length; i++) v.setUint32(4 * i, batValue(header, bat[i]!), true);
    try {
      await file.write(0, serializeHeader(header));
      await file.write(HEADER_SIZE, table);
      await file.truncate(options.variant === "fixed" ? start + bat.length * cs : start);
      await file.flush();
    } catch (e) {
      throw asMediumError(e, file.path, "create");
    }
    return new ParallelsImage(file, { header, bat, fileSize: start }, false);
  }

  get path(): string {
    return this.file.path;
  }
  get size(): number {
    return virtualSize(this.header);
  }
  get clusterSize(): number {
    return clusterSize(this.header);
  }

  /** The first change marks the image in use, on disk before any data. */
  protected startSession(): Promise<void> {
    return this.writeInUse(INUSE_MAGIC);
  }

  private writeInUse(value: number): Promise<void> {
    return this.meta.run(async () => {
      this.header.inUse = value;
      await this.file.write(0, serializeHeader(this.header));
      if (value === INUSE_MAGIC) await this.file.flush();
    });
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    const cs = this.clusterSize;
    if (this.unstoredWrites.size > 0) {
      const waits: Promise<unknown>[] = [];
      for (let c = Math.floor(offset / cs); c * cs < offset + buf.length; c++) {
        const p = this.unstoredWrites.get(c);
        if (p) waits.push(p);
      }
      if (waits.length) await Promise.allSettled(waits);
    }
    // Clusters next to each other in the file (a clone's, or 63-sector ones) take one read.
    const reads: Promise<void>[] = [];
    let runPos = 0;
    let runStart = 0;
    let runLen = 0;
    const issue = (): void => {
      if (runLen > 0) reads.push(this.readAt(runPos, buf.subarray(runStart, runStart + runLen)));
      runLen = 0;
    };
    for (let done = 0; done < buf.length; ) {
      const abs = offset + done;
      const index = Math.floor(abs / cs);
      const inCluster = abs - index * cs;
      const n = Math.min(cs - inCluster, buf.length - done);
      const pos = this.bat[index]!;
      if (pos === 0) {
        issue();
        buf.fill(0, done, done + n);
      } else if (runLen > 0 && runPos + runLen === pos + inCluster) {
        runLen += n;
      } else {
        issue();
        runPos = pos + inCluster;
        runStart = done;
        runLen = n;
      }
      done += n;
    }
    issue();
    await Promise.all(reads);
  }

  /** Clusters cut short by the end of the file read as zeros past it (as qemu reads them). */
  private async readAt(pos: number, dst: Uint8Array): Promise<void> {
    try {
      const n = await readFully(this.file, pos, dst);
      dst.fill(0, n);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, buf.length, this.path);
    if (buf.length === 0) return;
    const cs = this.clusterSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + buf.length - 1) / cs);
    const job = (async () => {
      await this.beginSession();
      const parts: Promise<void>[] = [];
      for (let done = 0; done < buf.length; ) {
        const abs = offset + done;
        const index = Math.floor(abs / cs);
        const inCluster = abs - index * cs;
        const n = Math.min(cs - inCluster, buf.length - done);
        parts.push(this.writeInCluster(index, inCluster, buf.subarray(done, done + n)));
        done += n;
      }
      await Promise.all(parts);
    })();
    // Reads submitted later wait for writes into clusters not stored yet (the BAT entry makes them visible).
    const watched: number[] = [];
    for (let c = first; c <= last; c++) {
      if (this.bat[c] === 0) {
        this.unstoredWrites.set(c, job);
        watched.push(c);
      }
    }
    try {
      await job;
    } finally {
      for (const c of watched) if (this.unstoredWrites.get(c) === job) this.unstoredWrites.delete(c);
    }
  }

  private async writeInCluster(index: number, inCluster: number, data: Uint8Array): Promise<void> {
    for (;;) {
      const pos = this.bat[index]!;
      if (pos !== 0) {
        try {
          await this.file.write(pos + inCluster, data);
        } catch (e) {
          throw asMediumError(e, this.path, "write");
        }
        return;
      }
      if (this.allocations.busy(index)) {
        await this.allocations.settled(index);
        continue;
      }
      // Zeros into a cluster that stores nothing read the same without storage.
      if (isZero(data)) return;
      if (await this.allocations.once(index, () => this.allocate(index, inCluster, data))) return;
    }
  }

  private async allocate(index: number, inCluster: number, data: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    const pos = this.end;
    this.end += cs;
    // A whole cluster (a clone's chunk) is written from the caller's buffer; a part of one is
    // completed with zeros in a reused scratch buffer, so the file always holds whole clusters.
    const scratch = inCluster === 0 && data.length === cs ? null : this.scratch.take();
    scratch?.set(data, inCluster);
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, batValue(this.header, pos), true);
    try {
      await this.file.write(pos, scratch ?? data);
      await this.meta.run(() => this.file.write(HEADER_SIZE + 4 * index, entry));
      this.bat[index] = pos;
    } catch (e) {
      // The space stays reserved (never reused this session): the cluster may be half written.
      throw asMediumError(e, this.path, "write");
    } finally {
      if (scratch) this.scratch.give(scratch);
    }
  }

  protected writeBack(): Promise<void> {
    return this.file.flush();
  }

  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const out: Extent[] = [];
    const cs = this.clusterSize;
    for (let i = 0; i < this.bat.length && i * cs < this.size; i++) {
      if (this.bat[i] === 0) continue;
      const offset = i * cs;
      const length = Math.min(cs, this.size - offset);
      const prev = out[out.length - 1];
      if (prev && prev.offset + prev.length === offset) prev.length += length;
      else out.push({ offset, length, state: "data" });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.sessionStarted) {
        await this.allocations.all();
        await this.file.flush();
        await this.writeInUse(0);
        await this.file.flush();
      }
    } catch (e) {
      throw asMediumError(e, this.path, "close");
    } finally {
      await this.file.close();
    }
  }
}

/** Open a Parallels file through an opener; the file is closed again if the image is refused. */
export async function openParallels(opener: FileOpener, path: string, options: ParallelsOpenOptions & { direct?: boolean } = {}): Promise<ParallelsImage> {
  return openImageFile(opener, path, options, (file) => ParallelsImage.open(file, options));
}

/** Create a Parallels file (it must not exist); on failure the partial file is removed. */
export async function createParallels(opener: FileOpener, path: string, options: ParallelsCreateOptions & { direct?: boolean }): Promise<ParallelsImage> {
  return createImageFile(opener, path, options, (file) => ParallelsImage.create(file, options));
}
