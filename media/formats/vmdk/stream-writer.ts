/**
 * Writing a streamOptimized VMDK from any BlockBackend (a clone target; VBoxManage's
 * `--variant Stream`), in the layout VMware and VirtualBox write: the file is produced front to
 * back and never revisited, so the grain directory goes at the end.
 *
 *   sector 0        header, gdOffset = GD_AT_END (the real one is the footer)
 *   sector 1..      embedded descriptor, then zeros up to the first grain boundary (overHead)
 *   grains          {u64 lba, u32 size, zlib data} padded to 512, in LBA order; all-zero
 *                   grains and what the source reports unallocated are not stored
 *   after each GT's grains: a GT marker sector, then the 512-entry grain table (empty tables
 *                   are left out with a zero directory entry, as VMware and VirtualBox do)
 *   end             GD marker + grain directory, footer marker + footer (the header with the
 *                   real gdOffset), end-of-stream marker
 *
 * The header's capacity is the exact sector count (as qemu writes it, so every reader sees the
 * source's size); a last partial grain is compressed as a whole grain padded with zeros, since
 * VirtualBox insists that every grain inflates to a full grain.
 * On any failure the partly written file is removed (createImageFile).
 */
import { MediumError, type BlockBackend, type Extent } from "../../block.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { createImageFile } from "../image-file.js";
import { encodeUtf8 } from "../text-codec.js";
import { randomUuid } from "../uuid.js";
import { VmdkDescriptor } from "./descriptor.js";
import {
  COMPRESS_DEFLATE,
  FLAG_COMPRESSED,
  FLAG_MARKERS,
  FLAG_NL_TEST,
  GD_AT_END,
  MARKER_EOS,
  MARKER_FOOTER,
  MARKER_GD,
  MARKER_GT,
  MAX_CAPACITY_SECTORS,
  SECTOR,
  serializeMarker,
  serializeSparseHeader,
  sparseGeometry,
  type SparseHeader,
} from "./sparse-header.js";
import { isZero } from "../../bytes.js";
import { asMediumError } from "./util.js";
import { baseName } from "../paths.js";

/** Compresses one grain into a zlib (RFC 1950) stream; injected so this file needs no node:zlib. */
export type Deflate = (data: Uint8Array) => Uint8Array | Promise<Uint8Array>;

export interface StreamWriteOptions {
  /** See node/zlib.ts (nodeDeflateAsync compresses off the main thread). */
  deflate: Deflate;
  /** ddb.uuid.image (default: a random one). */
  uuid?: string;
  newUuid?: () => string;
  newCid?: () => number;
  adapterType?: "ide" | "buslogic" | "lsilogic" | "legacyESX";
  /** `done` of `total` bytes of the source handled (total: what allocatedExtents says to read). */
  onProgress?: (done: number, total: number) => void;
  /** Bytes read from the source per request, a multiple of the 64 KiB grain (default 1 MiB). */
  chunkSize?: number;
  /** Chunks read and compressed ahead of the one being written (default 3). */
  readAhead?: number;
  direct?: boolean;
}

/** Grain size in sectors: 64 KiB, as VMware, VirtualBox and qemu write. */
const GRAIN_SECTORS = 128;
const GRAIN_BYTES = GRAIN_SECTORS * SECTOR;
const GT_ENTRIES = 512;
/** Descriptor area reserved at sector 1 (as qemu and our monolithicSparse): room for later edits. */
const DESCRIPTOR_SECTORS = 20;
const DEFAULT_CHUNK = 1 << 20;
/** File writes are gathered up to this size: the stream goes out in large sequential writes. */
const WRITE_BUFFER = 1 << 20;

/** One stored grain, ready to append: its index and its marker + data, padded to a sector. */
interface PackedGrain {
  grain: number;
  bytes: Uint8Array;
}

/** The chunks holding data, as sorted, merged runs [start, end) of chunk indexes. */
function dataRuns(extents: readonly Extent[], chunk: number, size: number): [number, number][] {
  const runs = extents
    .filter((e) => e.state === "data" && e.length > 0 && e.offset < size)
    .map((e): [number, number] => [Math.floor(e.offset / chunk), Math.ceil(Math.min(e.offset + e.length, size) / chunk)])
    .sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}

function* chunkIndexes(runs: readonly [number, number][]): Generator<number> {
  for (const [start, end] of runs) for (let c = start; c < end; c++) yield c;
}

/** {u64 lba, u32 size, data}, padded to a whole sector. */
function grainMarker(lba: number, z: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil((12 + z.length) / SECTOR) * SECTOR);
  const v = new DataView(out.buffer);
  v.setUint32(0, lba % 2 ** 32, true);
  v.setUint32(4, Math.floor(lba / 2 ** 32), true);
  v.setUint32(8, z.length, true);
  out.set(z, 12);
  return out;
}

/** Sequential output with large writes; `pos` is where the next byte lands. */
class Appender {
  pos = 0;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  constructor(private readonly file: FileIo) {}

  async append(bytes: Uint8Array): Promise<void> {
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    this.pos += bytes.length;
    if (this.pendingBytes >= WRITE_BUFFER) await this.drain();
  }

  async drain(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const at = this.pos - this.pendingBytes;
    let buf: Uint8Array;
    if (this.pending.length === 1) buf = this.pending[0]!;
    else {
      buf = new Uint8Array(this.pendingBytes);
      let o = 0;
      for (const p of this.pending) {
        buf.set(p, o);
        o += p.length;
      }
    }
    this.pending = [];
    this.pendingBytes = 0;
    try {
      await this.file.write(at, buf);
    } catch (e) {
      throw asMediumError(e, this.file.path, "write");
    }
  }
}

function checkOptions(source: BlockBackend, path: string, chunk: number, readAhead: number): void {
  const size = source.size;
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size / SECTOR > MAX_CAPACITY_SECTORS) {
    throw new MediumError("unsupported", `a stream VMDK of ${size} bytes cannot be written (a positive multiple of 512 up to ${MAX_CAPACITY_SECTORS * SECTOR})`, { path });
  }
  if (!Number.isSafeInteger(chunk) || chunk <= 0 || chunk % GRAIN_BYTES !== 0) {
    throw new MediumError("unsupported", `chunk size ${chunk} is not a multiple of the ${GRAIN_BYTES}-byte grain`, { path });
  }
  if (!Number.isSafeInteger(readAhead) || readAhead < 0) throw new MediumError("unsupported", `read-ahead ${readAhead} is not a count`, { path });
}

function streamHeader(capacity: number, gdOffset: number): SparseHeader {
  return {
    version: 3,
    flags: FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
    capacity,
    grainSize: GRAIN_SECTORS,
    descriptorOffset: 1,
    descriptorSize: DESCRIPTOR_SECTORS,
    numGTEsPerGT: GT_ENTRIES,
    rgdOffset: 0,
    gdOffset,
    overHead: Math.ceil((1 + DESCRIPTOR_SECTORS) / GRAIN_SECTORS) * GRAIN_SECTORS,
    uncleanShutdown: false,
    compressAlgorithm: COMPRESS_DEFLATE,
  };
}

function streamDescriptor(path: string, size: number, options: StreamWriteOptions): string {
  const gen = options.newUuid ?? randomUuid;
  const cid = options.newCid ? options.newCid() >>> 0 : parseInt(randomUuid().slice(0, 8), 16) >>> 0;
  const d = VmdkDescriptor.create({ cid, createType: "streamOptimized" });
  // RDONLY as VMware and VirtualBox write it: a stream is never written in place.
  d.extents = [{ access: "RDONLY", sectors: size / SECTOR, type: "SPARSE", file: baseName(path), offset: 0 }];
  d.setDiskDatabase({ size, adapterType: options.adapterType ?? "ide", uuid: options.uuid ?? gen(), modification: gen() });
  const text = d.toString();
  if (encodeUtf8(text).length > DESCRIPTOR_SECTORS * SECTOR) throw new MediumError("unsupported", "descriptor does not fit the embedded area", { path });
  return text;
}

/**
 * Write `source` as a new streamOptimized VMDK at `path` (which must not exist). The source is
 * read in order, only where allocatedExtents reports data; the file is written front to back.
 * The file is removed again if anything fails (a source read error included).
 */
export async function writeStreamVmdk(opener: FileOpener, path: string, source: BlockBackend, options: StreamWriteOptions): Promise<void> {
  const chunk = options.chunkSize ?? DEFAULT_CHUNK;
  const readAhead = options.readAhead ?? 3;
  checkOptions(source, path, chunk, readAhead);
  const size = source.size;
  const capacity = size / SECTOR;
  const header = streamHeader(capacity, GD_AT_END);
  const geometry = sparseGeometry(header);
  const descriptor = encodeUtf8(streamDescriptor(path, size, options));
  const runs = dataRuns(await source.allocatedExtents(), chunk, size);
  const chunkLength = (c: number) => Math.min(chunk, size - c * chunk);
  const total = runs.reduce((n, [start, end]) => n + Math.min(end * chunk, size) - start * chunk, 0);

  /** Read one chunk and compress its grains that are not all zeros. */
  const pack = async (c: number): Promise<PackedGrain[]> => {
    const buf = new Uint8Array(chunkLength(c));
    await source.read(c * chunk, buf);
    const jobs: Promise<PackedGrain>[] = [];
    for (let at = 0; at < buf.length; at += GRAIN_BYTES) {
      let data = buf.subarray(at, Math.min(at + GRAIN_BYTES, buf.length));
      if (isZero(data)) continue;
      if (data.length < GRAIN_BYTES) {
        const full = new Uint8Array(GRAIN_BYTES);
        full.set(data);
        data = full;
      }
      const grain = (c * chunk + at) / GRAIN_BYTES;
      jobs.push(Promise.resolve(options.deflate(data)).then((z) => ({ grain, bytes: grainMarker(grain * GRAIN_SECTORS, z) })));
    }
    return Promise.all(jobs);
  };

  await createImageFile(opener, path, { direct: options.direct }, async (file) => {
    const out = new Appender(file);
    const head = new Uint8Array(header.overHead * SECTOR);
    head.set(serializeSparseHeader(header));
    head.set(descriptor, SECTOR);
    await out.append(head);

    const gd = new Uint32Array(geometry.gtCount);
    const gt = new Uint32Array(GT_ENTRIES);
    let table = 0;
    let tableUsed = false;
    /** Table `table` is complete: append its marker and entries (nothing when it is empty). */
    const closeTable = async (): Promise<void> => {
      if (!tableUsed) return;
      await out.append(serializeMarker(MARKER_GT, geometry.gtSectors));
      gd[table] = sectorOf(out.pos, path);
      await out.append(littleEndian(gt, geometry.gtSectors * SECTOR));
      gt.fill(0);
      tableUsed = false;
    };

    let done = 0;
    options.onProgress?.(0, total);
    // Chunks are read and compressed up to `readAhead` ahead, and written strictly in order.
    const queue: { index: number; grains: Promise<PackedGrain[]> }[] = [];
    const pending = chunkIndexes(runs);
    const refill = () => {
      while (queue.length <= readAhead) {
        const n = pending.next();
        if (n.done) return;
        const grains = pack(n.value);
        grains.catch(() => undefined); // awaited in order below; an early failure must not go unhandled
        queue.push({ index: n.value, grains });
      }
    };
    try {
      for (refill(); queue.length > 0; refill()) {
        const job = queue.shift()!;
        for (const g of await job.grains) {
          const t = Math.floor(g.grain / GT_ENTRIES);
          if (t !== table) {
            await closeTable();
            table = t;
          }
          gt[g.grain % GT_ENTRIES] = sectorOf(out.pos, path);
          tableUsed = true;
          await out.append(g.bytes);
        }
        done += chunkLength(job.index);
        options.onProgress?.(done, total);
      }
    } catch (e) {
      // Let reads still running finish before the file goes away.
      await Promise.allSettled(queue.map((j) => j.grains));
      throw e;
    }
    await closeTable();

    await out.append(serializeMarker(MARKER_GD, geometry.gdSectors));
    const gdAt = out.pos / SECTOR;
    await out.append(littleEndian(gd, geometry.gdSectors * SECTOR));
    await out.append(serializeMarker(MARKER_FOOTER, 1));
    await out.append(serializeSparseHeader({ ...header, gdOffset: gdAt }));
    await out.append(serializeMarker(MARKER_EOS, 0));
    await out.drain();
    try {
      await file.flush();
      await file.close();
    } catch (e) {
      throw asMediumError(e, path, "flush");
    }
  });
}

/** A file position as a grain table or directory entry: a u32 sector number. */
function sectorOf(pos: number, path: string): number {
  const sector = pos / SECTOR;
  if (sector > 0xffffffff) throw new MediumError("unsupported", "a stream VMDK cannot grow past 2 TiB (u32 sector offsets)", { path });
  return sector;
}

/** u32 entries as little-endian bytes, zero-padded to `length`. */
function littleEndian(entries: Uint32Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const v = new DataView(out.buffer);
  for (let i = 0; i < entries.length; i++) v.setUint32(4 * i, entries[i]!, true);
  return out;
}
