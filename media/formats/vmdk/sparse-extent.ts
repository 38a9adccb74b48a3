/**
 * A hosted sparse extent ("KDMV" file) as a VmdkExtent: monolithicSparse, the pieces of
 * twoGbMaxExtentSparse, and streamOptimized (compressed grains, read only).
 *
 * - The grain directory and every grain table are read at open into one array of grain
 *   entries (GTEs), validated against the file, so finding a grain costs no I/O.
 * - New grains are appended at the end of the file: the grain's data first, then its GTE in the
 *   grain table, then in the redundant table, so a crash never leaves an entry pointing at
 *   unwritten data. A missing grain table (foreign files) is appended zeroed before the
 *   directory entries point at it.
 * - One allocation per grain at a time: concurrent partial writes into a new grain wait for the
 *   first, then write in place (the rest of the grain is filled once).
 * - A write spanning grains is split as little as it can be: stored grains adjacent in the file
 *   take one write, and whole new grains of data side by side are appended in one write with
 *   their entries in one grain table write (a 1 MiB write: 3 writes, not 16 data + 32 entries).
 */
import { Allocations } from "../allocations.js";
import { MediumError } from "../../block.js";
import { isZero } from "../../bytes.js";
import type { BlockState } from "../../chain.js";
import type { QueuedFileIo } from "../../io/request-queue.js";
import { Mutex } from "../async-lock.js";
import { ScratchBuffers } from "../scratch-buffers.js";
import type { ExtentLine } from "./descriptor.js";
import type { GrainFill, VmdkExtent } from "./extents.js";
import {
  FLAG_COMPRESSED,
  FLAG_RGD,
  FLAG_ZERO_GRAIN,
  GD_AT_END,
  SECTOR,
  parseSparseHeader,
  serializeSparseHeader,
  sparseGeometry,
  type SparseHeader,
} from "./sparse-header.js";
import { asMediumError, readFully } from "./util.js";

/** Inflates one zlib (RFC 1950) stream; injected so the pure code needs no node:zlib. */
export type Inflate = (data: Uint8Array) => Uint8Array | Promise<Uint8Array>;

/** Grains we index at most (256 MiB of entries; 16 TiB at 64 KiB grains). */
const MAX_GRAINS = 2 ** 26;

export interface SparseOpenOptions {
  writable: boolean;
  inflate?: Inflate;
}

/** The validated metadata of a sparse extent, as an open reads it (shared with the checker). */
export interface SparseMetadata {
  /** The header in force (the footer's copy for a stream with GD_AT_END). */
  header: SparseHeader;
  /** The header at offset 0 as found. */
  fileHeader: SparseHeader;
  gd: Uint32Array;
  rgd: Uint32Array | null;
  gte: Uint32Array;
  fileSize: number;
}

function corrupt(message: string, path: string, offset?: number): MediumError {
  return new MediumError("corrupt", message, { path, offset });
}

/** Read and validate header, grain directory and grain tables; nothing is written. */
export async function readSparseMetadata(file: QueuedFileIo): Promise<SparseMetadata> {
  const path = file.path;
  const fileSize = await file.size();
  const head = new Uint8Array(SECTOR);
  const got = await readFully(file, 0, head);
  const fileHeader = parseSparseHeader(head.subarray(0, got), { path });
  let header = fileHeader;
  if (header.gdOffset === GD_AT_END) {
    // Stream layout: the real header is a footer copy 1024 bytes before the end (then EOS).
    if (fileSize < 3 * SECTOR) throw corrupt("stream too short for its footer", path);
    const foot = new Uint8Array(SECTOR);
    await readFully(file, fileSize - 2 * SECTOR, foot);
    header = parseSparseHeader(foot, { path });
    if (header.gdOffset === GD_AT_END) throw corrupt("stream footer has no grain directory offset", path, fileSize - 2 * SECTOR);
  }
  const g = sparseGeometry(header);
  if (g.grains > MAX_GRAINS) throw new MediumError("unsupported", `${g.grains} grains is more than we index (${MAX_GRAINS})`, { path });
  const compressed = (header.flags & FLAG_COMPRESSED) !== 0;
  const gtBytes = header.numGTEsPerGT * 4;
  const readDirectory = async (at: number, what: string): Promise<Uint32Array> => {
    const pos = at * SECTOR;
    if (pos < SECTOR || pos + g.gtCount * 4 > fileSize) throw corrupt(`${what} at sector ${at} lies past the end of the file (${fileSize})`, path, pos);
    const bytes = new Uint8Array(g.gtCount * 4);
    await readFully(file, pos, bytes);
    const v = new DataView(bytes.buffer);
    const out = new Uint32Array(g.gtCount);
    for (let i = 0; i < g.gtCount; i++) {
      const e = v.getUint32(4 * i, true);
      if (e !== 0 && (e * SECTOR < SECTOR || e * SECTOR + gtBytes > fileSize)) {
        throw corrupt(`${what} entry ${i} points at sector ${e}, past the end of the file`, path, pos + 4 * i);
      }
      out[i] = e;
    }
    return out;
  };
  const gd = await readDirectory(header.gdOffset, "grain directory");
  const hasRgd = !compressed && (header.flags & FLAG_RGD) !== 0 && header.rgdOffset !== 0;
  const rgd = hasRgd ? await readDirectory(header.rgdOffset, "redundant grain directory") : null;

  const gte = new Uint32Array(g.gtCount * header.numGTEsPerGT);
  const reads: Promise<void>[] = [];
  for (let i = 0; i < g.gtCount; ) {
    if (gd[i] === 0) {
      i++;
      continue;
    }
    // Tables next to each other in the file are read in one request.
    let n = 1;
    while (i + n < g.gtCount && gd[i + n] === gd[i]! + (n * gtBytes) / SECTOR && n < 256) n++;
    const first = i;
    reads.push(
      (async () => {
        const bytes = new Uint8Array(n * gtBytes);
        await readFully(file, gd[first]! * SECTOR, bytes);
        const v = new DataView(bytes.buffer);
        for (let k = 0; k < n * header.numGTEsPerGT; k++) gte[first * header.numGTEsPerGT + k] = v.getUint32(4 * k, true);
      })(),
    );
    i += n;
  }
  await Promise.all(reads);
  validateEntries(header, gte, g.grains, fileSize, path);
  return { header, fileHeader, gd, rgd, gte, fileSize };
}

/** Every GTE must point inside the file, past the metadata, and (uncompressed) at its own grain. */
function validateEntries(h: SparseHeader, gte: Uint32Array, grains: number, fileSize: number, path: string): void {
  const compressed = (h.flags & FLAG_COMPRESSED) !== 0;
  const zeroOk = (h.flags & FLAG_ZERO_GRAIN) !== 0;
  const grainBytes = h.grainSize * SECTOR;
  const used: number[] = [];
  for (let i = 0; i < gte.length; i++) {
    const e = gte[i]!;
    if (e === 0 || (e === 1 && zeroOk)) continue;
    if (i >= grains) continue; // entries past the capacity are never used
    const pos = e * SECTOR;
    const need = compressed ? 12 : Math.min(grainBytes, h.capacity * SECTOR - i * grainBytes);
    if (pos + need > fileSize) throw corrupt(`grain ${i} at sector ${e} lies past the end of the file (${fileSize})`, path);
    if (!compressed && h.overHead > 0 && e < h.overHead) throw corrupt(`grain ${i} at sector ${e} lies inside the metadata (overhead ${h.overHead})`, path);
    if (!compressed) used.push(e);
  }
  if (used.length > 1) {
    const sorted = Uint32Array.from(used).sort();
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]! - sorted[i - 1]! < h.grainSize) throw corrupt(`two grains overlap at sector ${sorted[i]}`, path);
    }
  }
}

/**
 * Whether a sparse header's capacity fits the descriptor's extent size: equal (VMware, qemu), or
 * rounded up to a whole grain, as VirtualBox writes stream images; the descriptor's size counts.
 */
export function capacityFits(h: SparseHeader, descriptorSectors: number): boolean {
  return descriptorSectors <= h.capacity && h.capacity - descriptorSectors < h.grainSize;
}

export class SparseExtent implements VmdkExtent {
  readonly size: number;
  readonly grainBytes: number;
  readonly writable: boolean;
  readonly compressed: boolean;
  private readonly zeroGrains: boolean;
  private readonly meta = new Mutex();
  private readonly allocations = new Allocations();
  /** Grain-sized buffers for new grains written in part. */
  private readonly scratch: ScratchBuffers;
  /** Where the next grain or table goes. */
  private fileEnd: number;
  private cache: { grain: number; data: Uint8Array } | null = null;

  constructor(
    readonly line: ExtentLine,
    readonly file: QueuedFileIo,
    readonly md: SparseMetadata,
    options: SparseOpenOptions,
    private readonly inflate?: Inflate,
  ) {
    const h = md.header;
    this.size = line.sectors * SECTOR;
    this.grainBytes = h.grainSize * SECTOR;
    this.scratch = new ScratchBuffers(this.grainBytes);
    this.compressed = (h.flags & FLAG_COMPRESSED) !== 0;
    this.zeroGrains = (h.flags & FLAG_ZERO_GRAIN) !== 0;
    this.writable = options.writable && !this.compressed && md.fileHeader.gdOffset !== GD_AT_END;
    this.fileEnd = Math.max(Math.ceil(md.fileSize / SECTOR) * SECTOR, h.overHead * SECTOR);
  }

  static async open(line: ExtentLine, file: QueuedFileIo, options: SparseOpenOptions): Promise<SparseExtent> {
    const md = await readSparseMetadata(file);
    if (!capacityFits(md.header, line.sectors)) {
      throw corrupt(`sparse extent holds ${md.header.capacity} sectors, the descriptor says ${line.sectors}`, file.path);
    }
    return new SparseExtent(line, file, md, options, options.inflate);
  }

  get path(): string {
    return this.file.path;
  }
  get header(): SparseHeader {
    return this.md.header;
  }

  state(local: number): BlockState {
    const e = this.md.gte[Math.floor(local / this.grainBytes)];
    if (!e) return "unallocated";
    return e === 1 && this.zeroGrains ? "zero" : "data";
  }

  private isData(e: number): boolean {
    return e > 1 || (e === 1 && !this.zeroGrains);
  }

  async read(local: number, buf: Uint8Array): Promise<void> {
    const gb = this.grainBytes;
    const reads: Promise<void>[] = [];
    let runPos = -1;
    let runStart = 0;
    let runLen = 0;
    const issue = (): void => {
      if (runLen === 0) return;
      const dst = buf.subarray(runStart, runStart + runLen);
      const pos = runPos;
      reads.push(
        readFully(this.file, pos, dst).then((n) => {
          if (n < dst.length) throw corrupt(`grain data at ${pos} is cut short by the end of the file`, this.path, pos);
        }),
      );
      runLen = 0;
    };
    for (let done = 0; done < buf.length; ) {
      const abs = local + done;
      const grain = Math.floor(abs / gb);
      const inGrain = abs - grain * gb;
      const n = Math.min(gb - inGrain, buf.length - done);
      const e = this.md.gte[grain]!;
      if (!this.isData(e)) {
        issue();
        buf.fill(0, done, done + n);
      } else if (this.compressed) {
        issue();
        const dst = buf.subarray(done, done + n);
        reads.push(this.readCompressed(grain, e).then((g) => dst.set(g.subarray(inGrain, inGrain + n))));
      } else {
        const pos = e * SECTOR + inGrain;
        if (runLen > 0 && runPos + runLen === pos && runStart + runLen === done) runLen += n;
        else {
          issue();
          runPos = pos;
          runStart = done;
          runLen = n;
        }
      }
      done += n;
    }
    issue();
    try {
      await Promise.all(reads);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
  }

  /** Read a grain marker {u64 lba, u32 size, zlib data} and inflate it to one grain. */
  private async readCompressed(grain: number, sector: number): Promise<Uint8Array> {
    if (this.cache?.grain === grain) return this.cache.data;
    if (!this.inflate) throw new MediumError("unsupported", "compressed VMDK grains need an inflate function (openVmdk's inflate option)", { path: this.path });
    const pos = sector * SECTOR;
    const head = new Uint8Array(12);
    if ((await readFully(this.file, pos, head)) < 12) throw corrupt(`grain marker at ${pos} is cut short`, this.path, pos);
    const v = new DataView(head.buffer);
    const lba = v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32;
    const size = v.getUint32(8, true);
    if (lba !== grain * this.md.header.grainSize) throw corrupt(`grain marker at ${pos} is for sector ${lba}, not ${grain * this.md.header.grainSize}`, this.path, pos);
    if (size === 0 || size > 2 * this.grainBytes + 1024) throw corrupt(`compressed grain at ${pos} claims ${size} bytes`, this.path, pos);
    const data = new Uint8Array(size);
    if ((await readFully(this.file, pos + 12, data)) < size) throw corrupt(`compressed grain at ${pos} is cut short by the end of the file`, this.path, pos);
    let out: Uint8Array;
    try {
      out = await this.inflate(data);
    } catch (e) {
      throw corrupt(`compressed grain at ${pos} does not inflate: ${e instanceof Error ? e.message : String(e)}`, this.path, pos);
    }
    const need = Math.min(this.grainBytes, this.size - grain * this.grainBytes);
    if (out.length < need) throw corrupt(`compressed grain at ${pos} inflates to ${out.length} bytes, not ${need}`, this.path, pos);
    if (out.length < this.grainBytes) {
      const full = new Uint8Array(this.grainBytes);
      full.set(out);
      out = full;
    }
    this.cache = { grain, data: out };
    return out;
  }

  /**
   * Write [local, local + data.length), which may span grains. Stored grains next to each other
   * in the file take one write; runs of whole new grains holding data are allocated together
   * (allocateRun); any other grain goes through writeGrain.
   */
  async write(local: number, data: Uint8Array, fill: GrainFill, hidesParent: boolean): Promise<void> {
    if (!this.writable) throw new MediumError("read-only", this.compressed ? "a streamOptimized extent cannot be written in place" : "extent is read-only", { path: this.path });
    const gb = this.grainBytes;
    const perGt = this.md.header.numGTEsPerGT;
    const jobs: Promise<void>[] = [];
    let runPos = -1;
    let runStart = 0;
    let runLen = 0;
    const issue = (): void => {
      if (runLen > 0) jobs.push(this.writeStored(runPos, data.subarray(runStart, runStart + runLen)));
      runLen = 0;
    };
    for (let at = 0; at < data.length; ) {
      const grain = Math.floor((local + at) / gb);
      const inGrain = local + at - grain * gb;
      const n = Math.min(gb - inGrain, data.length - at);
      const e = this.md.gte[grain]!;
      if (this.isData(e)) {
        const pos = e * SECTOR + inGrain;
        if (runLen > 0 && runPos + runLen === pos) runLen += n;
        else {
          issue();
          runPos = pos;
          runStart = at;
          runLen = n;
        }
        at += n;
        continue;
      }
      issue();
      let count = 0;
      while (inGrain === 0 && at + (count + 1) * gb <= data.length && this.joinsRun(grain + count, data.subarray(at + count * gb, at + (count + 1) * gb))) {
        count++;
        if ((grain + count) % perGt === 0) break; // one run, one grain table
      }
      if (count > 1) {
        jobs.push(this.allocateRun(grain, data.subarray(at, at + count * gb)));
        at += count * gb;
      } else {
        jobs.push(this.writeGrain(grain, inGrain, data.subarray(at, at + n), fill, hidesParent));
        at += n;
      }
    }
    issue();
    try {
      await Promise.all(jobs);
    } catch (err) {
      throw asMediumError(err, this.path, "write");
    }
  }

  private async writeStored(pos: number, data: Uint8Array): Promise<void> {
    await this.file.write(pos, data);
  }

  /**
   * Whether `grain`, all of it in `data`, can be allocated in a run: not stored, nobody
   * allocating it, inside the extent, and not zeros (which may need no storage, or a zeroed-grain
   * entry: writeGrain decides).
   */
  private joinsRun(grain: number, data: Uint8Array): boolean {
    if (this.isData(this.md.gte[grain]!) || this.allocations.busy(grain)) return false;
    return (grain + 1) * this.grainBytes <= this.size && !isZero(data);
  }

  /**
   * Whole new grains holding data, side by side: their data goes to the end of the file in one
   * write from the caller's buffer, then their entries in one grain table write, then the
   * redundant table's (the same order as one grain's, so a crash never leaves an entry pointing
   * at unwritten data).
   */
  private allocateRun(first: number, data: Uint8Array): Promise<void> {
    const count = data.length / this.grainBytes;
    return this.allocations.runAll(first, count, async () => {
      const pos = this.fileEnd;
      this.fileEnd += data.length;
      await this.file.write(pos, data);
      const values = new Uint32Array(count);
      for (let k = 0; k < count; k++) values[k] = pos / SECTOR + k * this.md.header.grainSize;
      await this.setEntries(first, values);
    });
  }

  /** Write inside one grain; allocate it (once, whoever comes first) if it is not stored. */
  private async writeGrain(grain: number, inGrain: number, data: Uint8Array, fill: GrainFill, hidesParent: boolean): Promise<void> {
    for (;;) {
      const e = this.md.gte[grain]!;
      if (this.isData(e)) {
        await this.file.write(e * SECTOR + inGrain, data);
        return;
      }
      if (await this.allocations.once(grain, () => this.allocate(grain, inGrain, data, fill, hidesParent))) return;
    }
  }

  private async allocate(grain: number, inGrain: number, data: Uint8Array, fill: GrainFill, hidesParent: boolean): Promise<void> {
    const gb = this.grainBytes;
    const entry = this.md.gte[grain]!;
    const covered = Math.min(gb, this.size - grain * gb);
    const whole = inGrain === 0 && data.length >= covered;
    const zeros = isZero(data);
    // A whole grain of data is stored from the caller's buffer; anything else is completed in a
    // scratch grain. A zeroed grain (GTE 1) hides what is below: its rest is zeros, not the
    // parent's data.
    const buf = whole && data.length === gb && !zeros ? null : this.scratch.take();
    try {
      if (buf) {
        if (!whole && entry === 0) await fill(buf);
        buf.set(data, inGrain);
        if (zeros && isZero(buf)) {
          // Nothing to store: below reads zeros already, or a zeroed-grain entry says so.
          if (entry === 1 || (!hidesParent && entry === 0)) return;
          if (this.zeroGrains) return await this.setEntries(grain, Uint32Array.of(1));
        }
      }
      const pos = this.fileEnd;
      this.fileEnd += gb;
      await this.file.write(pos, buf ?? data);
      await this.setEntries(grain, Uint32Array.of(pos / SECTOR));
    } finally {
      if (buf) this.scratch.give(buf);
    }
  }

  /**
   * Point grains [first, first + values.length), all in one grain table, at `values`: the grain
   * table, then the redundant one (a table is made if missing).
   */
  private async setEntries(first: number, values: Uint32Array): Promise<void> {
    const perGt = this.md.header.numGTEsPerGT;
    const t = Math.floor(first / perGt);
    if (this.md.gd[t] === 0) await this.meta.run(() => this.allocateTable(t));
    const bytes = new Uint8Array(4 * values.length);
    const v = new DataView(bytes.buffer);
    for (let k = 0; k < values.length; k++) v.setUint32(4 * k, values[k]!, true);
    const slot = (first % perGt) * 4;
    await this.file.write(this.md.gd[t]! * SECTOR + slot, bytes);
    if (this.md.rgd && this.md.rgd[t]) await this.file.write(this.md.rgd[t]! * SECTOR + slot, bytes);
    this.md.gte.set(values, first);
    if (this.cache && this.cache.grain >= first && this.cache.grain < first + values.length) this.cache = null;
  }

  /** Append zeroed grain tables (and redundant ones) for directory entry `t`, then point the directories at them. */
  private async allocateTable(t: number): Promise<void> {
    if (this.md.gd[t] !== 0) return;
    const gtBytes = Math.ceil((this.md.header.numGTEsPerGT * 4) / SECTOR) * SECTOR;
    const entry = new Uint8Array(4);
    const v = new DataView(entry.buffer);
    if (this.md.rgd) {
      const rpos = this.fileEnd;
      this.fileEnd += gtBytes;
      await this.file.write(rpos, new Uint8Array(gtBytes));
      v.setUint32(0, rpos / SECTOR, true);
      await this.file.write(this.md.header.rgdOffset * SECTOR + 4 * t, entry);
      this.md.rgd[t] = rpos / SECTOR;
    }
    const pos = this.fileEnd;
    this.fileEnd += gtBytes;
    await this.file.write(pos, new Uint8Array(gtBytes));
    v.setUint32(0, pos / SECTOR, true);
    await this.file.write(this.md.header.gdOffset * SECTOR + 4 * t, entry);
    this.md.gd[t] = pos / SECTOR;
  }

  stored(): { offset: number; length: number; state: "data" | "zero" }[] {
    const out: { offset: number; length: number; state: "data" | "zero" }[] = [];
    const gb = this.grainBytes;
    for (let i = 0; i * gb < this.size; i++) {
      const e = this.md.gte[i]!;
      if (e === 0) continue;
      const state = e === 1 && this.zeroGrains ? "zero" : "data";
      const offset = i * gb;
      const length = Math.min(gb, this.size - offset);
      const prev = out[out.length - 1];
      if (prev && prev.state === state && prev.offset + prev.length === offset) prev.length += length;
      else out.push({ offset, length, state });
    }
    return out;
  }

  private async writeHeader(unclean: boolean): Promise<void> {
    const h = { ...this.md.fileHeader, uncleanShutdown: unclean };
    try {
      await this.file.write(0, serializeSparseHeader(h));
      this.md.fileHeader.uncleanShutdown = unclean;
    } catch (e) {
      throw asMediumError(e, this.path, "header write");
    }
  }

  beginSession(): Promise<void> {
    return this.writeHeader(true);
  }

  async endSession(): Promise<void> {
    await this.flush();
    await this.writeHeader(false);
  }

  async flush(): Promise<void> {
    if (!this.writable) return;
    try {
      await this.file.flush();
    } catch (e) {
      throw asMediumError(e, this.path, "flush");
    }
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
