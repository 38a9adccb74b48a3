/**
 * Raw images: the disk's bytes, sector for sector, in one file (VirtualBox "fixed" raw, QEMU
 * `-f raw`, ISO files). There is no header: the virtual size is the file size, rounded up to
 * whole sectors (the missing tail of an odd-sized file reads as zeros; writing it grows the file).
 *
 * I/O goes through the request queue, so requests overlap freely with a disk's ordering.
 * Discard punches a hole when the file can (`discardZeroes` is then true: discarded sectors read
 * as zeros); otherwise, as on Node, it does nothing and the sectors keep their data.
 * allocatedExtents reports the whole disk as data: finding holes needs SEEK_DATA/SEEK_HOLE, which
 * Node does not offer.
 */
import { type BlockBackend, type Extent, MediumError, checkRequest } from "../../block.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { type QueuedFileIo, queued } from "../../io/request-queue.js";

export interface RawOpenOptions {
  readOnly?: boolean;
  /** Bypass the host page cache (host I/O cache off). */
  direct?: boolean;
  /** 512 (default) for disks, 2048 for CD/DVD images. */
  sectorSize?: number;
  /** Requests in flight on the file (default: the queue's). */
  maxInFlight?: number;
}

export interface RawCreateOptions extends Omit<RawOpenOptions, "readOnly"> {
  /** Write zeros over the whole disk so its space is taken now (default: a sparse file). */
  preallocate?: boolean;
}

export interface ResizeOptions {
  /** Shrinking throws the tail away; it is refused unless this is set. */
  allowShrink?: boolean;
}

const ZERO_CHUNK = 1 << 20;

/** Create a raw image of `size` bytes (a multiple of the sector size) and open it read-write. */
export async function createRaw(opener: FileOpener, path: string, size: number, options: RawCreateOptions = {}): Promise<RawBackend> {
  const sectorSize = options.sectorSize ?? 512;
  checkSize(size, sectorSize, path);
  const file = await opener.open(path, { create: true, direct: options.direct });
  try {
    if (options.preallocate) {
      const zeros = new Uint8Array(Math.min(ZERO_CHUNK, size));
      for (let pos = 0; pos < size; pos += ZERO_CHUNK) {
        await file.write(pos, pos + zeros.length <= size ? zeros : zeros.subarray(0, size - pos));
      }
    }
    await file.truncate(size);
  } catch (e) {
    await file.close().catch(() => {});
    await opener.remove(path).catch(() => {});
    throw e;
  }
  return new RawBackend(file, size, sectorSize, options.maxInFlight);
}

/** Open an existing raw image. */
export async function openRaw(opener: FileOpener, path: string, options: RawOpenOptions = {}): Promise<RawBackend> {
  const sectorSize = options.sectorSize ?? 512;
  const file = await opener.open(path, { readOnly: options.readOnly, direct: options.direct });
  let fileSize: number;
  try {
    fileSize = await file.size();
  } catch (e) {
    await file.close().catch(() => {});
    throw e;
  }
  return new RawBackend(file, Math.ceil(fileSize / sectorSize) * sectorSize, sectorSize, options.maxInFlight);
}

function checkSize(size: number, sectorSize: number, path: string): void {
  if (!Number.isSafeInteger(size) || size < 0 || size % sectorSize) {
    throw new MediumError("out-of-bounds", `size ${size} is not a whole number of ${sectorSize}-byte sectors`, { path });
  }
}

export class RawBackend implements BlockBackend {
  readonly sectorSize: number;
  readonly readOnly: boolean;
  readonly discardZeroes: boolean;
  readonly path: string;
  /** The ordering queue over the file (its stats are useful in tests). */
  readonly queue: QueuedFileIo;
  #size: number;
  #closed = false;

  /** Use createRaw / openRaw; this takes ownership of an open file. */
  constructor(file: FileIo, size: number, sectorSize = 512, maxInFlight?: number) {
    this.queue = queued(file, { maxInFlight });
    this.path = file.path;
    this.readOnly = file.readOnly;
    this.sectorSize = sectorSize;
    this.discardZeroes = file.punchHole !== undefined;
    this.#size = size;
  }

  get size(): number {
    return this.#size;
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.#check(offset, buf.length, false);
    const n = await this.queue.read(offset, buf);
    // Past the end of an odd-sized (or externally truncated) file: zeros.
    if (n < buf.length) buf.fill(0, n);
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.#check(offset, buf.length, true);
    await this.queue.write(offset, buf);
  }

  readSync(offset: number, buf: Uint8Array): boolean {
    this.#check(offset, buf.length, false);
    const n = this.queue.readSync(offset, buf);
    if (n === undefined) return false;
    if (n < buf.length) buf.fill(0, n);
    return true;
  }

  writeSync(offset: number, buf: Uint8Array): boolean {
    this.#check(offset, buf.length, true);
    return this.queue.writeSync(offset, buf);
  }

  async flush(): Promise<void> {
    this.#check(0, 0, false);
    if (!this.readOnly) await this.queue.flush();
  }

  /** Punches a hole where the file can (reads back zeros), else does nothing (keeps the data). */
  async discard(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    if (this.queue.punchHole && length > 0) await this.queue.punchHole(offset, length);
  }

  /** The whole disk as one data extent: Node cannot ask the file system for holes. */
  async allocatedExtents(): Promise<Extent[]> {
    this.#check(0, 0, false);
    return this.#size > 0 ? [{ offset: 0, length: this.#size, state: "data" }] : [];
  }

  /**
   * Grow or shrink the disk. New space reads as zeros. Requests already submitted finish first;
   * requests made after this call see the new size.
   */
  async resize(newSize: number, options: ResizeOptions = {}): Promise<void> {
    this.#check(0, 0, true);
    checkSize(newSize, this.sectorSize, this.path);
    if (newSize < this.#size && !options.allowShrink) {
      throw new MediumError("unsupported", `shrinking from ${this.#size} to ${newSize} bytes loses data; pass { allowShrink: true }`, { path: this.path });
    }
    this.#size = newSize;
    await this.queue.truncate(newSize);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.queue.close();
  }

  #check(offset: number, length: number, writing: boolean): void {
    if (this.#closed) throw new MediumError("closed", "medium used after close", { path: this.path });
    if (writing && this.readOnly) throw new MediumError("read-only", "medium is read-only", { path: this.path, offset });
    checkRequest(this, offset, length, this.path);
  }
}
