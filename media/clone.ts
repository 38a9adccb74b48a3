/**
 * Cloning a medium: copy what a guest sees on one BlockBackend (a single image or a whole
 * differencing chain, which the copy flattens) into another. Pure: BlockBackend and FileOpener
 * only, no Node types; MediumManager.clone adds the registry around it.
 *
 * - Only what the source stores is read (allocatedExtents), in aligned chunks, several at once.
 * - A fresh target reads as zeros everywhere, so chunks of zeros are not written: a sparse
 *   source stays sparse. An existing target gets zeros written (or discarded, where that reads
 *   back as zeros) only where it may itself hold data.
 * - Formats take part through IMAGE_CREATORS (make a new, empty image); reading needs nothing
 *   more than the BlockBackend a format's open returns.
 */
import { MediumError, type BlockBackend, type Extent } from "./block.js";
import { isZero } from "./bytes.js";
import type { FileOpener } from "./io/file-io.js";
import type { LayeredImage } from "./chain.js";
import { createParallels } from "./formats/parallels/parallels-image.js";
import { createQcow2 } from "./formats/qcow2/qcow2-image.js";
import { createRaw } from "./formats/raw/raw.js";
import { createVdi } from "./formats/vdi/vdi-image.js";
import { createVhd } from "./formats/vhd/vhd-image.js";
import { createVmdk } from "./formats/vmdk/index.js";

/** ESX: a VMDK of createType "vmfs" (descriptor + preallocated VMFS flat extent), as VBoxManage's --variant ESX. */
export type ImageVariant = "Standard" | "Fixed" | "ESX";

export interface CreateImageOptions {
  /** Virtual size in bytes. */
  size: number;
  /** Standard: dynamic/sparse; Fixed: all space taken (or reserved) now. */
  variant: ImageVariant;
  /** VMDK only: split into 2 GB pieces (twoGbMaxExtent*); other formats refuse it. */
  split?: boolean;
}

const noSplit = (format: string, path: string, o: CreateImageOptions): void => {
  if (o.split) throw new MediumError("unsupported", `${format} images cannot be split (Split2G is VMDK only)`, { path });
  if (o.variant === "ESX") throw new MediumError("unsupported", `${format} images have no ESX variant (it is VMDK only)`, { path });
};

/** Make a new image that reads as zeros everywhere, open read-write; the file must not exist. */
export type CreateImage = (opener: FileOpener, path: string, options: CreateImageOptions) => Promise<BlockBackend>;

/** The formats vstor can create, and how. A new format adds its line here. */
export const IMAGE_CREATORS = {
  VDI: async (opener, path, o) => {
    noSplit("VDI", path, o);
    return createVdi(opener, path, { size: o.size, variant: o.variant === "Fixed" ? "fixed" : "dynamic" });
  },
  VMDK: (opener, path, o) => {
    if (o.variant === "ESX") {
      if (o.split) throw new MediumError("unsupported", "an ESX (vmfs) VMDK is one flat extent: it cannot be split", { path });
      return createVmdk(opener, path, { size: o.size, variant: "vmfs" });
    }
    const fixed = o.variant === "Fixed";
    const variant = o.split ? (fixed ? "twoGbMaxExtentFlat" : "twoGbMaxExtentSparse") : fixed ? "monolithicFlat" : "monolithicSparse";
    return createVmdk(opener, path, { size: o.size, variant });
  },
  VHD: async (opener, path, o) => {
    noSplit("VHD", path, o);
    return createVhd(opener, path, { size: o.size, variant: o.variant === "Fixed" ? "fixed" : "dynamic" });
  },
  HDD: async (opener, path, o) => {
    noSplit("HDD", path, o);
    return createParallels(opener, path, { size: o.size, variant: o.variant === "Fixed" ? "fixed" : "dynamic" });
  },
  QCOW2: async (opener, path, o) => {
    noSplit("QCOW2", path, o);
    if (o.variant === "Fixed") throw new MediumError("unsupported", "QCOW2 images are created Standard (no preallocation)", { path });
    return createQcow2(opener, path, { size: o.size });
  },
  RAW: async (opener, path, o) => {
    noSplit("RAW", path, o);
    return createRaw(opener, path, o.size, { preallocate: o.variant === "Fixed" });
  },
} satisfies Record<string, CreateImage>;

export type ImageFormat = keyof typeof IMAGE_CREATORS;

/** Whether vstor can create images of this format (VHDX, for one, is read-only here). */
export function isCreatable(format: string): format is ImageFormat {
  return Object.prototype.hasOwnProperty.call(IMAGE_CREATORS, format);
}

/** The format as one vstor can create, or a clear refusal. */
export function creatableFormat(format: string, path?: string): ImageFormat {
  if (!isCreatable(format)) throw new MediumError("unsupported", `vstor reads ${format} images but cannot create them`, { path });
  return format;
}

/** `done` of `total` bytes of the virtual disk handled. */
export type CloneProgress = (done: number, total: number) => void;

/**
 * Bytes per request: at least a VDI block, and a whole number of the target's blocks where it
 * says what they are (chunkSizeFor), so a fresh dynamic target allocates whole blocks, written
 * straight from the chunk.
 */
export const CLONE_CHUNK = 1 << 20;

/**
 * Chunks in flight at once. Each chunk is a read and then a write, so 4 keep libuv's 4 threads
 * busy with reads and writes side by side. More only queue up: measured on the 2-core machine
 * (256 MiB, page cache, bench/clone-one.ts, medians of 5-7), 16 in flight copied VDI to raw in
 * 116-178 ms and raw to VDI in 235-476 ms, 4 in flight in 83-104 ms and 156-168 ms.
 */
export const CLONE_IN_FLIGHT = 4;

/** Largest chunk chunkSizeFor picks to match a target's blocks; past it, CLONE_CHUNK. */
const MAX_AUTO_CHUNK = 8 << 20;

/** CLONE_CHUNK rounded up to a whole number of the target's blocks (VHD: 2 MiB). */
export function chunkSizeFor(target: BlockBackend): number {
  const unit = (target as Partial<LayeredImage>).blockSize;
  if (!unit || !Number.isSafeInteger(unit) || unit % target.sectorSize) return CLONE_CHUNK;
  const chunk = Math.ceil(CLONE_CHUNK / unit) * unit;
  return chunk <= MAX_AUTO_CHUNK ? chunk : CLONE_CHUNK;
}

export interface CopyOptions {
  /** Bytes per request, a multiple of the sector size (default chunkSizeFor(target)). */
  chunkSize?: number;
  /** Chunks in flight at once (default CLONE_IN_FLIGHT). */
  inFlight?: number;
  /**
   * The target was just created and reads as zeros everywhere: chunks of zeros are skipped.
   * Otherwise the target's own allocatedExtents say where zeros must be written.
   */
  fresh?: boolean;
  onProgress?: CloneProgress;
}

export interface CopyResult {
  /** Bytes of the virtual disk the copy went over (the progress total). */
  total: number;
  /** Bytes of data written to the target. */
  written: number;
  /** Bytes written as zeros (or discarded) over the target's own old data. */
  zeroed: number;
  /** Bytes read from the source that were zeros and needed no write. */
  skipped: number;
}

/** A run of chunk indexes [start, end). */
interface Run {
  start: number;
  end: number;
}

/** The chunks the "data" extents below `limit` touch, sorted and coalesced. */
function chunkRuns(extents: readonly Extent[], chunk: number, limit: number): Run[] {
  const runs = extents
    .filter((e) => e.state === "data" && e.length > 0 && e.offset < limit)
    .map((e) => ({ start: Math.floor(e.offset / chunk), end: Math.ceil(Math.min(e.offset + e.length, limit) / chunk) }))
    .sort((a, b) => a.start - b.start);
  const out: Run[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

interface PlannedChunk {
  index: number;
  /** The source stores data here: read it. */
  source: boolean;
  /** The target may hold data here: zeros must be written. */
  target: boolean;
}

/** Every chunk in either list of runs, in order, with where it came from. */
function* plan(source: readonly Run[], target: readonly Run[]): Generator<PlannedChunk> {
  let i = 0;
  let j = 0;
  for (let c = 0; ; c++) {
    while (i < source.length && source[i]!.end <= c) i++;
    while (j < target.length && target[j]!.end <= c) j++;
    const nextS = i < source.length ? Math.max(c, source[i]!.start) : Infinity;
    const nextT = j < target.length ? Math.max(c, target[j]!.start) : Infinity;
    c = Math.min(nextS, nextT);
    if (c === Infinity) return;
    yield { index: c, source: nextS === c, target: nextT === c };
  }
}

/**
 * Make the first `source.size` bytes of `target` read as `source` does (a larger target keeps
 * the rest), then flush it. On failure no new request starts, those in flight finish, and the
 * first error is thrown; the target then holds part of the copy.
 */
export async function copyMedium(source: BlockBackend, target: BlockBackend, options: CopyOptions = {}): Promise<CopyResult> {
  const chunk = options.chunkSize ?? chunkSizeFor(target);
  if (target.readOnly) throw new MediumError("read-only", "the clone's target is read-only");
  if (target.sectorSize !== source.sectorSize) {
    throw new MediumError("unsupported", `cannot copy ${source.sectorSize}-byte sectors to a medium of ${target.sectorSize}-byte sectors`);
  }
  if (target.size < source.size) throw new MediumError("out-of-bounds", `the target (${target.size} bytes) is smaller than the source (${source.size} bytes)`);
  if (!Number.isSafeInteger(chunk) || chunk <= 0 || chunk % source.sectorSize) {
    throw new MediumError("out-of-bounds", `chunk size ${chunk} is not a whole number of ${source.sectorSize}-byte sectors`);
  }
  const size = source.size;
  const sourceRuns = chunkRuns(await source.allocatedExtents(), chunk, size);
  const targetRuns = options.fresh ? [] : chunkRuns(await target.allocatedExtents(), chunk, size);
  const lengthOf = (index: number) => Math.min(chunk, size - index * chunk);

  const result: CopyResult = { total: 0, written: 0, zeroed: 0, skipped: 0 };
  for (const c of plan(sourceRuns, targetRuns)) result.total += lengthOf(c.index);
  let done = 0;
  options.onProgress?.(0, result.total);

  const chunks = plan(sourceRuns, targetRuns);
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    const buf = new Uint8Array(chunk);
    while (!failure) {
      const next = chunks.next();
      if (next.done) return;
      const { index, source: fromSource, target: overData } = next.value;
      const offset = index * chunk;
      const view = buf.subarray(0, lengthOf(index));
      try {
        if (fromSource) await source.read(offset, view);
        if (fromSource && !isZero(view)) {
          await target.write(offset, view);
          result.written += view.length;
        } else if (overData) {
          if (target.discardZeroes) await target.discard(offset, view.length);
          else await target.write(offset, view.fill(0));
          result.zeroed += view.length;
        } else {
          result.skipped += view.length;
        }
      } catch (error) {
        failure ??= { error };
        return;
      }
      done += view.length;
      options.onProgress?.(done, result.total);
    }
  };
  const workers = Math.max(1, options.inFlight ?? CLONE_IN_FLIGHT);
  await Promise.all(Array.from({ length: workers }, worker));
  if (failure) throw (failure as { error: unknown }).error;
  await target.flush();
  return result;
}

export interface NewImage {
  opener: FileOpener;
  path: string;
  format: ImageFormat;
  variant?: ImageVariant;
  split?: boolean;
}

/**
 * Clone `source` into a new image of its size at `target.path` (refused if that file exists),
 * closed when this returns. On any failure the partial image is removed.
 */
export async function cloneToNew(source: BlockBackend, target: NewImage, options: Omit<CopyOptions, "fresh"> = {}): Promise<CopyResult> {
  const { opener, path } = target;
  if (await opener.exists(path)) {
    throw new MediumError("in-use", "already exists (a clone makes a new image; write into an existing one with --existing)", { path });
  }
  const create: CreateImage | undefined = IMAGE_CREATORS[target.format];
  if (!create) throw new MediumError("unsupported", `cannot create ${String(target.format)} images`, { path });
  const image = await create(opener, path, { size: source.size, variant: target.variant ?? "Standard", split: target.split });
  try {
    const result = await copyMedium(source, image, { ...options, fresh: true });
    await image.close();
    return result;
  } catch (e) {
    await image.close().catch(() => undefined);
    await opener.remove(path).catch(() => undefined);
    throw e;
  }
}
