/**
 * A VHDX image (fixed, dynamic or differencing, 512-byte logical sectors) as a read-only
 * BlockBackend and chain layer.
 *
 * - Open reads and validates all metadata (vhdx-metadata.ts) and writes nothing. A log left by
 *   a crash is replayed in memory (log.ts, log-overlay.ts): every later read goes through it.
 *   The BAT and the sector bitmaps of partially present blocks stay in memory: where a sector
 *   lives is known without I/O.
 * - Blocks that are zero (and, in a differencing image, undefined or unmapped) read as zeros;
 *   fully present blocks from the file; partially present ones sector by sector as their bitmap
 *   says; not present ones from the parent (zeros when opened alone or in a base image).
 * - Chain identity: `uuid` is the page 83 data (the disk's own GUID), `modifyUuid` the header's
 *   DataWriteGuid. A child names its parent by file (relative_path) and records the parent's
 *   DataWriteGuid as parent_linkage (or parent_linkage2): bindParent accepts a parent only if
 *   they match (MS-VHDX requires it), and only then does parentUuid name that parent.
 * - write, flush, discard and setParent reject with `read-only`; opening writable is refused.
 */
import { MediumError, checkRequest, type Extent } from "../../block.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import type { BlockState, FillBelow, LayeredImage, ParentLink, StoredRun } from "../../chain.js";
import { PayloadState, decodeEntry, payloadIndex, sectorRuns } from "./bat.js";
import { parentFileName, type ParentLocator } from "./parent-locator.js";
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

export class VhdxImage implements LayeredImage {
  readonly sectorSize = 512;
  readonly readOnly = true;
  readonly discardZeroes = false;
  /** Reads through the in-memory log replay, if there was one. */
  private readonly file: FileIo;
  private readonly m: VhdxMetadata;
  private closed = false;
  /** The parent bindParent accepted, and which linkage value matched its DataWriteGuid. */
  private bound: ParentLink | null = null;

  private constructor(m: VhdxMetadata) {
    this.file = m.file;
    this.m = m;
  }

  /** Validate and open `file` (opened read-only by the caller). Writes nothing. */
  static async open(file: FileIo): Promise<VhdxImage> {
    try {
      return new VhdxImage(await readVhdxMetadata(file));
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
  get variant(): "fixed" | "dynamic" | "differencing" {
    return this.m.params.hasParent ? "differencing" : this.m.params.leaveBlocksAllocated ? "fixed" : "dynamic";
  }
  get hasParent(): boolean {
    return this.m.params.hasParent;
  }
  /** What the log replay at open did (null: the log was empty). The file itself is unchanged. */
  get logReplay(): VhdxMetadata["replay"] {
    return this.m.replay;
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

  // --- chain identity ----------------------------------------------------------------------------

  /** Changes whenever the disk's contents change (Hyper-V's DataWriteGuid). */
  get modifyUuid(): string {
    return this.m.header.dataWriteGuid;
  }
  /** The bound parent's UUID; before binding, parent_linkage (no image has it as its uuid). */
  get parentUuid(): string | null {
    const l = this.m.parentLocator;
    return l ? (this.bound?.uuid ?? l.linkage) : null;
  }
  /** The parent's DataWriteGuid as this image recorded it (the linkage that matched, once bound). */
  get parentModifyUuid(): string | null {
    const l = this.m.parentLocator;
    return l ? (this.bound?.modifyUuid ?? l.linkage) : null;
  }
  /** A copy of the parent locator (null for a base image). */
  get parentLocator(): ParentLocator | null {
    const l = this.m.parentLocator;
    return l ? { ...l, entries: new Map(l.entries) } : null;
  }
  /** The parent's file as this host looks for it, relative to this image's folder (see parent-locator.ts). */
  get parentFileName(): string | null {
    return this.m.parentLocator ? parentFileName(this.m.parentLocator) : null;
  }

  /**
   * Accept `parent` (found by file name) if its DataWriteGuid is one the locator records; only
   * then does parentUuid name it, so a chain over any other file is refused by checkChain.
   */
  bindParent(parent: LayeredImage): boolean {
    const l = this.m.parentLocator;
    if (!l || (parent.modifyUuid !== l.linkage && parent.modifyUuid !== l.linkage2)) return false;
    this.bound = { uuid: parent.uuid, modifyUuid: parent.modifyUuid };
    return true;
  }

  setParent(_link: ParentLink | null): Promise<void> {
    return this.refuse("set parent");
  }

  // --- blocks ------------------------------------------------------------------------------------

  /** Payload block `i`'s state and file offset. */
  blockEntry(i: number): { state: number; offset: number } {
    return decodeEntry(this.m.bat, payloadIndex(i, this.m.geometry.chunkRatio));
  }

  blockState(index: number): BlockState {
    if (index < 0 || index * this.blockSize >= this.size) return "unallocated";
    switch (this.blockEntry(index).state) {
      case PayloadState.fullyPresent:
        return "data";
      case PayloadState.partiallyPresent:
        return this.m.partial.get(index) ? "data" : "unallocated";
      case PayloadState.zero:
        return "zero";
      case PayloadState.undefined:
      case PayloadState.unmapped:
        // Stored states of their own: in a child they hide the parent (and read as zeros).
        return this.hasParent ? "zero" : "unallocated";
      default:
        return "unallocated";
    }
  }

  storedRuns(index: number, offsetInBlock: number, length: number): StoredRun[] {
    const bitmap = this.blockEntry(index).state === PayloadState.partiallyPresent ? this.m.partial.get(index) : undefined;
    return bitmap ? sectorRuns(bitmap, offsetInBlock, length) : [{ length, stored: bitmap !== null }];
  }

  async readBlockPart(index: number, offsetInBlock: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.blockState(index) !== "data") throw new MediumError("corrupt", `block ${index} is not stored in this image`, { path: this.path });
    const pos = this.blockEntry(index).offset + offsetInBlock;
    let n: number;
    try {
      n = await readFully(this.file, pos, buf);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
    if (n < buf.length) throw this.short(pos + n);
  }

  writeBlockPart(_index: number, _offsetInBlock: number, _data: Uint8Array, _fillBelow: FillBelow): Promise<void> {
    return this.refuse("write");
  }

  private checkOpen(): void {
    if (this.closed) throw new MediumError("closed", "image is closed", { path: this.path });
  }

  /** A request as file ranges and zeros (sectors a child leaves to its parent read as zeros here). */
  private pieces(offset: number, length: number): Piece[] {
    const bs = this.blockSize;
    const out: Piece[] = [];
    const push = (at: number, n: number, filePos: number | null): void => {
      const prev = out[out.length - 1];
      if (prev && ((prev.filePos === null && filePos === null) || (prev.filePos !== null && filePos !== null && prev.filePos + prev.length === filePos))) {
        prev.length += n;
      } else {
        out.push({ at, length: n, filePos });
      }
    };
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const block = Math.floor(pos / bs);
      const within = pos - block * bs;
      const n = Math.min(bs - within, length - at);
      const base = this.blockState(block) === "data" ? this.blockEntry(block).offset : null;
      if (base === null) push(at, n, null);
      else {
        let r = 0;
        for (const run of this.storedRuns(block, within, n)) {
          push(at + r, run.length, run.stored ? base + within + r : null);
          r += run.length;
        }
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

  /** What this file stores: its present sectors as data, blocks it marks zero as zero. */
  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const out: Extent[] = [];
    const push = (offset: number, length: number, state: Extent["state"]): void => {
      const prev = out[out.length - 1];
      if (prev && prev.state === state && prev.offset + prev.length === offset) prev.length += length;
      else out.push({ offset, length, state });
    };
    const bs = this.blockSize;
    for (let i = 0; i < this.m.geometry.payloadBlocks; i++) {
      const state = this.blockState(i);
      if (state === "unallocated") continue;
      const offset = i * bs;
      const length = Math.min(bs, this.size - offset);
      if (state === "zero") {
        push(offset, length, "zero");
        continue;
      }
      let at = offset;
      for (const run of this.storedRuns(i, 0, length)) {
        if (run.stored) push(at, run.length, "data");
        at += run.length;
      }
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
