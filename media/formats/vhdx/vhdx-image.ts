/**
 * A VHDX image (fixed or dynamic, 512-byte logical sectors) as a read-only BlockBackend.
 *
 * - Open reads and validates all metadata (vhdx-metadata.ts) and writes nothing. The BAT stays
 *   in memory: where a block lives is known without I/O.
 * - Blocks that are not present, undefined, zero or unmapped read as zeros; fully present blocks
 *   from the file. Differencing images (partially present blocks), 4 KiB logical sectors and
 *   logs that need replay are refused as `unsupported`.
 * - write, flush and discard reject with `read-only`; opening writable is refused.
 */
import { MediumError, checkRequest, type BlockBackend, type Extent } from "../../block.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { PayloadState, decodeEntry, payloadIndex } from "./bat.js";
import { asMediumError, readFully, readVhdxMetadata, type VhdxMetadata } from "./vhdx-metadata.js";

export { isVhdx } from "./structures.js";

export interface VhdxOpenOptions {
  /** Must be absent or true: this reader never writes. */
  readOnly?: boolean;
}

/** One piece of a request: `length` bytes at `at` in the buffer, from `filePos` or zeros (null). */
interface Piece {
  at: number;
  length: number;
  filePos: number | null;
}

export class VhdxImage implements BlockBackend {
  readonly sectorSize = 512;
  readonly readOnly = true;
  readonly discardZeroes = false;
  private readonly file: FileIo;
  private readonly m: VhdxMetadata;
  private closed = false;

  private constructor(file: FileIo, m: VhdxMetadata) {
    this.file = file;
    this.m = m;
  }

  /** Validate and open `file` (opened read-only by the caller). Writes nothing. */
  static async open(file: FileIo): Promise<VhdxImage> {
    try {
      return new VhdxImage(file, await readVhdxMetadata(file));
    } catch (e) {
      throw asMediumError(e, file.path, "open");
    }
  }

  get path(): string {
    return this.file.path;
  }
  get size(): number {
    return this.m.params.virtualDiskSize;
  }
  get blockSize(): number {
    return this.m.params.blockSize;
  }
  get logicalSectorSize(): number {
    return this.m.params.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.m.params.physicalSectorSize;
  }
  /** The page 83 data GUID: the disk's identity. */
  get uuid(): string {
    return this.m.params.page83;
  }
  get leaveBlocksAllocated(): boolean {
    return this.m.params.leaveBlocksAllocated;
  }
  /** "fixed" when the file parameters ask blocks to stay allocated (qemu's and Hyper-V's fixed disks). */
  get variant(): "fixed" | "dynamic" {
    return this.m.params.leaveBlocksAllocated ? "fixed" : "dynamic";
  }
  get creator(): string {
    return this.m.creator;
  }
  get chunkRatio(): number {
    return this.m.geometry.chunkRatio;
  }
  /** The current header's data write GUID (changes whenever the disk's contents change). */
  get dataWriteGuid(): string {
    return this.m.header.dataWriteGuid;
  }
  get fileWriteGuid(): string {
    return this.m.header.fileWriteGuid;
  }

  /** Payload block `i`'s state and file offset. */
  blockEntry(i: number): { state: number; offset: number } {
    return decodeEntry(this.m.bat, payloadIndex(i, this.m.geometry.chunkRatio));
  }

  private checkOpen(): void {
    if (this.closed) throw new MediumError("closed", "image is closed", { path: this.path });
  }

  private pieces(offset: number, length: number): Piece[] {
    const bs = this.blockSize;
    const out: Piece[] = [];
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const block = Math.floor(pos / bs);
      const within = pos - block * bs;
      const n = Math.min(bs - within, length - at);
      const e = this.blockEntry(block);
      const filePos = e.state === PayloadState.fullyPresent ? e.offset + within : null;
      const prev = out[out.length - 1];
      if (prev && ((prev.filePos === null && filePos === null) || (prev.filePos !== null && filePos !== null && prev.filePos + prev.length === filePos))) {
        prev.length += n;
      } else {
        out.push({ at, length: n, filePos });
      }
      at += n;
    }
    return out;
  }

  private short(pos: number): MediumError {
    return new MediumError("corrupt", `block data at ${pos} is beyond the end of the file`, { path: this.path, offset: pos });
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    await Promise.all(
      this.pieces(offset, buf.length).map(async (p) => {
        const dst = buf.subarray(p.at, p.at + p.length);
        if (p.filePos === null) {
          dst.fill(0);
          return;
        }
        let n: number;
        try {
          n = await readFully(this.file, p.filePos, dst);
        } catch (e) {
          throw asMediumError(e, this.path, "read");
        }
        if (n < dst.length) throw this.short(p.filePos + n);
      }),
    );
  }

  readSync(offset: number, buf: Uint8Array): boolean {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    const pieces = this.pieces(offset, buf.length);
    if (!this.file.readSync && pieces.some((p) => p.filePos !== null)) return false;
    for (const p of pieces) {
      const dst = buf.subarray(p.at, p.at + p.length);
      if (p.filePos === null) {
        dst.fill(0);
        continue;
      }
      let done = 0;
      while (done < dst.length) {
        const n = this.file.readSync!(p.filePos + done, dst.subarray(done));
        if (n === undefined) return false;
        if (n <= 0) throw this.short(p.filePos + done);
        done += n;
      }
    }
    return true;
  }

  private refuse(what: string): Promise<never> {
    return Promise.reject(
      this.closed
        ? new MediumError("closed", "image is closed", { path: this.path })
        : new MediumError("read-only", `${what}: VHDX images are read-only here`, { path: this.path }),
    );
  }
  write(_offset: number, _buf: Uint8Array): Promise<void> {
    return this.refuse("write");
  }
  flush(): Promise<void> {
    return this.refuse("flush");
  }
  discard(_offset: number, _length: number): Promise<void> {
    return this.refuse("discard");
  }

  /** Fully present blocks as data; blocks in the zero state as zero. Others are not stored. */
  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const out: Extent[] = [];
    const bs = this.blockSize;
    for (let i = 0; i < this.m.geometry.payloadBlocks; i++) {
      const { state } = this.blockEntry(i);
      const kind = state === PayloadState.fullyPresent ? "data" : state === PayloadState.zero ? "zero" : null;
      if (!kind) continue;
      const offset = i * bs;
      const length = Math.min(bs, this.size - offset);
      const prev = out[out.length - 1];
      if (prev && prev.state === kind && prev.offset + prev.length === offset) prev.length += length;
      else out.push({ offset, length, state: kind });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.file.close();
  }
}

/**
 * Open a VHDX file read-only. A writable open (`readOnly: false`) is refused as `read-only`
 * before the file is touched.
 */
export async function openVhdx(opener: FileOpener, path: string, options: VhdxOpenOptions = {}): Promise<VhdxImage> {
  if (options.readOnly === false) throw new MediumError("read-only", "VHDX images can only be opened read-only", { path });
  const file = await opener.open(path, { readOnly: true });
  try {
    return await VhdxImage.open(file);
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}
