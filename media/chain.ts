/**
 * Differencing images: a chain of layers (top -> ... -> base) seen as one BlockBackend.
 * Generic over `LayeredImage`, which VDI and VHD implement (VMDK later).
 *
 * - Reads: for each block, the first layer (from the top) that stores data or a zero marker
 *   answers; unallocated blocks fall through; below the base, zeros. Deciding where a block lives
 *   is an in-memory lookup per layer (`blockState`), never file I/O. A layer that records presence
 *   per sector inside a stored block (VHD's sector bitmaps) says which parts it stores
 *   (`storedRuns`); the other parts of that block fall through like an unallocated block.
 * - Writes go to the top. A partial write to a block the top does not store is completed with
 *   the rest of the block read from below (copy-on-write); the layer does that exactly once per
 *   block even with concurrent writers (`writeBlockPart` takes a per-block lock).
 * - Discard goes to the top, which marks whole blocks zero (so the parent's data stays hidden).
 * - Merge (snapshot deletion) in either direction, ordered so that a crash at any point leaves a
 *   chain that reads as before: see mergeChildIntoParent / mergeParentIntoChild.
 *
 * Pure: no Node types. Finding a parent by UUID is the caller's (the media registry's) job.
 */
import { MediumError, checkRequest, type BlockBackend, type Extent } from "./block.js";

/** Deepest chain we open (Cloud Hypervisor caps at 10; VirtualBox has no fixed cap). */
export const MAX_CHAIN_DEPTH = 100;

/** What one layer says about one of its blocks. */
export type BlockState = "data" | "zero" | "unallocated";

/** A layer's parent reference: the parent's UUID and its modification UUID when last linked. */
export interface ParentLink {
  uuid: string;
  modifyUuid: string;
  /**
   * The parent's file, for formats that also name it (a VMDK's parentFileNameHint, a VHD's parent
   * name and locators, a qcow2 backing file): given when a merge re-links a child, so other tools
   * still find the parent once the merged image is gone.
   */
  path?: string;
}

/** A run of bytes inside a block, stored in this layer or not (then read from below). */
export interface StoredRun {
  length: number;
  stored: boolean;
}

/** Fills a whole-block buffer (covering virtual bytes [index*blockSize, +blockSize)) from the layers below. */
export type FillBelow = (block: Uint8Array) => Promise<void>;

/** A medium that can be a layer of a chain. */
export interface LayeredImage extends BlockBackend {
  /** For messages. */
  readonly path: string;
  /** Allocation granularity in bytes (a power of two, a multiple of sectorSize). */
  readonly blockSize: number;
  readonly uuid: string;
  /** Changes when a write session begins. */
  readonly modifyUuid: string;
  /** Null for a base image. */
  readonly parentUuid: string | null;
  /** The parent's modifyUuid as recorded in this image; null for a base image. */
  readonly parentModifyUuid: string | null;
  /** Where block `index` lives, from memory (no I/O). Blocks past this layer's size are "unallocated". */
  blockState(index: number): BlockState;
  /**
   * Optional, for formats that record presence per sector inside a stored block (VHD): the parts
   * of [offsetInBlock, offsetInBlock+length) of a "data" block this layer stores, as consecutive
   * runs covering the range in order; `stored: false` runs read from the layers below. From
   * memory, no I/O. Absent: a "data" block is stored whole.
   */
  storedRuns?(index: number, offsetInBlock: number, length: number): StoredRun[];
  /** Read from a block whose state is "data" (only from its stored runs, if it has storedRuns). */
  readBlockPart(index: number, offsetInBlock: number, buf: Uint8Array): Promise<void>;
  /**
   * Write into block `index`. If the block is not stored in this layer and the write does not
   * cover it, the layer calls `fillBelow` (once, under its per-block lock) for the rest of it,
   * unless it has storedRuns (then the rest simply stays not stored).
   */
  writeBlockPart(index: number, offsetInBlock: number, data: Uint8Array, fillBelow: FillBelow): Promise<void>;
  /**
   * A write submitted earlier that may still change where block `index` lives (it was not
   * stored here when the write was submitted); a read submitted later waits for it, so it sees
   * the write. Undefined when there is none.
   */
  pendingWrite?(index: number): Promise<unknown> | undefined;
  /** Re-link to another parent (null: become a base image). Written to the file at once. */
  setParent(link: ParentLink | null): Promise<void>;
  /** Grow the virtual size, if the format can. */
  resize?(size: number): Promise<void>;
}

const zeroFill: FillBelow = async () => undefined;

/**
 * Read virtual bytes [offset, offset+buf.length) as seen from layer `from` of `layers` (top
 * first). Bytes past a layer's size read as zeros (a parent smaller than its child). Lookups:
 * one `blockState` call per block per layer visited.
 */
export async function readFromLayer(layers: readonly LayeredImage[], from: number, offset: number, buf: Uint8Array): Promise<void> {
  const first = layers[from];
  if (first?.pendingWrite && buf.length > 0) {
    const waits: Promise<unknown>[] = [];
    const bs = first.blockSize;
    for (let b = Math.floor(offset / bs); b * bs < offset + buf.length; b++) {
      const p = first.pendingWrite(b);
      if (p) waits.push(p);
    }
    if (waits.length) await Promise.allSettled(waits);
  }
  const reads: Promise<void>[] = [];
  const visit = (level: number, at: number, dst: Uint8Array): void => {
    const layer = layers[level];
    if (!layer) {
      dst.fill(0);
      return;
    }
    const bs = layer.blockSize;
    let pos = 0;
    while (pos < dst.length) {
      const abs = at + pos;
      if (abs >= layer.size) {
        dst.fill(0, pos);
        return;
      }
      const index = Math.floor(abs / bs);
      const inBlock = abs - index * bs;
      const n = Math.min(bs - inBlock, dst.length - pos, layer.size - abs);
      const part = dst.subarray(pos, pos + n);
      const state = layer.blockState(index);
      if (state === "data" && layer.storedRuns) {
        let at = 0;
        for (const run of layer.storedRuns(index, inBlock, n)) {
          const sub = part.subarray(at, at + run.length);
          if (run.stored) reads.push(layer.readBlockPart(index, inBlock + at, sub));
          else visit(level + 1, abs + at, sub);
          at += run.length;
        }
      } else if (state === "data") reads.push(layer.readBlockPart(index, inBlock, part));
      else if (state === "zero") part.fill(0);
      else visit(level + 1, abs, part);
      pos += n;
    }
  };
  visit(from, offset, buf);
  await Promise.all(reads);
}

/** Write `data` at virtual `offset` into layer `to`, copying the rest of touched blocks from below it. */
export async function writeToLayer(layers: readonly LayeredImage[], to: number, offset: number, data: Uint8Array): Promise<void> {
  const layer = layers[to]!;
  const bs = layer.blockSize;
  const writes: Promise<void>[] = [];
  let pos = 0;
  while (pos < data.length) {
    const abs = offset + pos;
    const index = Math.floor(abs / bs);
    const inBlock = abs - index * bs;
    const n = Math.min(bs - inBlock, data.length - pos);
    const fill: FillBelow = to + 1 < layers.length ? (block) => readFromLayer(layers, to + 1, index * bs, block) : zeroFill;
    writes.push(layer.writeBlockPart(index, inBlock, data.subarray(pos, pos + n), fill));
    pos += n;
  }
  await Promise.all(writes);
}

export interface ChainOptions {
  readOnly?: boolean;
  /** Open read-write even if a parent's modification UUID differs from what its child recorded. */
  allowParentModified?: boolean;
}

/** A child whose recorded parent modification UUID differs from the parent's current one. */
export interface ParentModified {
  child: string;
  parent: string;
  recorded: string | null;
  actual: string;
}

/**
 * Check that `layers` (top first) form a chain: each layer's parent UUID is the next layer's
 * UUID, the last one is a base, and the depth is within MAX_CHAIN_DEPTH. Returns the layers
 * whose parent was modified after they were linked; throws "parent-modified" for them unless
 * the chain is read-only or the caller allows it.
 */
export function checkChain(layers: readonly LayeredImage[], options: ChainOptions = {}): ParentModified[] {
  if (layers.length === 0) throw new MediumError("not-found", "empty chain");
  if (layers.length > MAX_CHAIN_DEPTH) {
    throw new MediumError("unsupported", `chain of ${layers.length} images is deeper than ${MAX_CHAIN_DEPTH}`, { path: layers[0]!.path });
  }
  const modified: ParentModified[] = [];
  for (let i = 0; i < layers.length; i++) {
    const child = layers[i]!;
    const parent = layers[i + 1];
    if (!parent) {
      if (child.parentUuid !== null) {
        throw new MediumError("not-found", `parent {${child.parentUuid}} of ${child.path} is missing`, { path: child.path });
      }
      break;
    }
    if (child.parentUuid !== parent.uuid) {
      throw new MediumError("not-found", `${child.path} has parent {${child.parentUuid ?? "none"}}, not ${parent.path} {${parent.uuid}}`, {
        path: child.path,
      });
    }
    if (child.parentModifyUuid !== parent.modifyUuid) {
      modified.push({ child: child.uuid, parent: parent.uuid, recorded: child.parentModifyUuid, actual: parent.modifyUuid });
    }
  }
  const writable = !options.readOnly && !layers[0]!.readOnly;
  if (modified.length > 0 && writable && !options.allowParentModified) {
    const m = modified[0]!;
    throw new MediumError(
      "parent-modified",
      `parent {${m.parent}} of {${m.child}} was modified after the child was made (recorded {${m.recorded}}, now {${m.actual}})`,
      { path: layers[0]!.path },
    );
  }
  return modified;
}

/**
 * Open a chain from its top: ask `findParent` (the registry) for each parent by UUID until a base.
 * Images found are closed again if the chain is refused.
 */
export async function openChain(
  top: LayeredImage,
  findParent: (uuid: string, child: LayeredImage) => Promise<LayeredImage>,
  options: ChainOptions = {},
): Promise<ImageChain> {
  const layers: LayeredImage[] = [top];
  try {
    for (let image = top; image.parentUuid !== null; ) {
      if (layers.length >= MAX_CHAIN_DEPTH) {
        throw new MediumError("unsupported", `chain of ${top.path} is deeper than ${MAX_CHAIN_DEPTH}`, { path: top.path });
      }
      if (layers.some((l) => l.uuid === image.parentUuid)) {
        throw new MediumError("corrupt", `chain of ${top.path} loops back to {${image.parentUuid}}`, { path: image.path });
      }
      image = await findParent(image.parentUuid, image);
      layers.push(image);
    }
    return new ImageChain(layers, options);
  } catch (e) {
    await Promise.allSettled(layers.slice(1).map((l) => l.close()));
    throw e;
  }
}

/** A differencing chain as one medium. Owns its layers: close() closes them all. */
export class ImageChain implements BlockBackend {
  readonly layers: readonly LayeredImage[];
  readonly readOnly: boolean;
  /** Parents modified after their child was linked (open read-only, or allowed by the caller). */
  readonly parentModified: readonly ParentModified[];
  private closed = false;

  constructor(layers: readonly LayeredImage[], options: ChainOptions = {}) {
    this.parentModified = checkChain(layers, options);
    this.layers = [...layers];
    this.readOnly = !!options.readOnly || layers[0]!.readOnly;
  }

  get top(): LayeredImage {
    return this.layers[0]!;
  }
  get size(): number {
    return this.top.size;
  }
  get sectorSize(): number {
    return this.top.sectorSize;
  }

  private check(offset: number, length: number, write: boolean): void {
    if (this.closed) throw new MediumError("closed", "chain is closed", { path: this.top.path });
    if (write && this.readOnly) throw new MediumError("read-only", "chain is read-only", { path: this.top.path, offset });
    checkRequest(this, offset, length, this.top.path);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.check(offset, buf.length, false);
    await readFromLayer(this.layers, 0, offset, buf);
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.check(offset, buf.length, true);
    await writeToLayer(this.layers, 0, offset, buf);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new MediumError("closed", "chain is closed", { path: this.top.path });
    if (!this.readOnly) await this.top.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    await this.top.discard(offset, length);
  }

  /** Ranges stored somewhere in the chain (data) or hidden by a zero marker (zero), coalesced. */
  async allocatedExtents(): Promise<Extent[]> {
    if (this.closed) throw new MediumError("closed", "chain is closed", { path: this.top.path });
    return chainExtents(this.layers, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled(this.layers.map((l) => l.close()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }
}

/** The extents of the chain seen from layer `from`, from block states alone (no I/O). */
export function chainExtents(layers: readonly LayeredImage[], from: number): Extent[] {
  const out: Extent[] = [];
  const push = (offset: number, length: number, state: Extent["state"]): void => {
    const last = out[out.length - 1];
    if (last && last.state === state && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length, state });
  };
  const visit = (level: number, at: number, length: number): void => {
    const layer = layers[level];
    if (!layer) return;
    const bs = layer.blockSize;
    const end = Math.min(at + length, layer.size);
    for (let abs = at; abs < end; ) {
      const index = Math.floor(abs / bs);
      const n = Math.min((index + 1) * bs, end) - abs;
      const state = layer.blockState(index);
      if (state === "unallocated") visit(level + 1, abs, n);
      else if (state === "data" && layer.storedRuns) {
        let at = abs;
        for (const run of layer.storedRuns(index, abs - index * bs, n)) {
          if (run.stored) push(at, run.length, "data");
          else visit(level + 1, at, run.length);
          at += run.length;
        }
      } else push(abs, n, state);
      abs += n;
    }
  };
  const top = layers[from];
  if (top) visit(from, 0, top.size);
  return out;
}

// --- merge (snapshot deletion) -------------------------------------------------------------------

export interface MergeOptions {
  /**
   * Whether `parent` has children other than `child` (asked of the media registry). Merging is
   * refused ("in-use") if so: the other children would see their parent change or disappear.
   */
  hasOtherChildren: (parent: LayeredImage, child: LayeredImage) => boolean | Promise<boolean>;
  /**
   * Children, outside `layers`, of the image whose modification UUID changes or which goes away
   * (the merged child in a forward merge, the child in a backward merge): re-linked like the
   * layer above it. Opened read-write by the caller.
   */
  otherChildren?: readonly LayeredImage[];
  /** Called after each block copied. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Runs each block's copy (an online merge passes the running disk's exclusive section, so a
   * guest request never interleaves with a copy step). Default: run it directly.
   */
  step?: (copy: () => Promise<void>) => Promise<void>;
}

const direct = (copy: () => Promise<void>) => copy();

/** A merge copies up to this much per step (one buffer, reused). */
const MERGE_RUN_BYTES = 1 << 20;

export interface MergeResult {
  /** The chain without the merged-away image, top first. */
  layers: LayeredImage[];
  /** The image merged away: the caller closes it, deletes its file and forgets it in the registry. */
  removed: LayeredImage;
}

function mergePair(layers: readonly LayeredImage[], childIndex: number): { child: LayeredImage; parent: LayeredImage } {
  checkChain(layers, { readOnly: true });
  const child = layers[childIndex];
  const parent = layers[childIndex + 1];
  if (!child || !parent) {
    throw new MediumError("not-found", `no child/parent pair at layer ${childIndex} of a chain of ${layers.length}`, { path: layers[0]?.path });
  }
  return { child, parent };
}

async function relink(children: readonly (LayeredImage | undefined)[], to: LayeredImage): Promise<void> {
  for (const c of children) {
    if (!c) continue;
    await c.setParent({ uuid: to.uuid, modifyUuid: to.modifyUuid, path: to.path });
    await c.flush();
  }
}

/**
 * Forward merge: the child's blocks (data and zero markers) are written into its parent, then
 * the child's children are re-linked to the parent and the child is returned for deletion.
 *
 * Crash safety: while blocks are copied the parent's content changes, but only where the child
 * stores the block, so reads through the child are unchanged; the parent is flushed before any
 * child is re-linked; the child goes last. After an interruption the chain reads as before; its
 * recorded parent modification UUID is stale, so open it with `allowParentModified` (or
 * read-only) and run the merge again.
 */
export async function mergeChildIntoParent(layers: readonly LayeredImage[], childIndex: number, options: MergeOptions): Promise<MergeResult> {
  const { child, parent } = mergePair(layers, childIndex);
  if (await options.hasOtherChildren(parent, child)) {
    throw new MediumError("in-use", `cannot merge into ${parent.path}: it has other children`, { path: parent.path });
  }
  if (parent.readOnly) throw new MediumError("read-only", "the parent must be open read-write to merge into it", { path: parent.path });
  if (child.size > parent.size) {
    if (!parent.resize) throw new MediumError("unsupported", `${parent.path} cannot grow to its child's size`, { path: parent.path });
    await parent.resize(child.size);
  }
  const bs = child.blockSize;
  const total = Math.ceil(child.size / bs);
  const step = options.step ?? direct;
  const scratch = new Uint8Array(Math.max(bs, MERGE_RUN_BYTES));
  for (let b = 0; b < total; ) {
    const state = child.blockState(b);
    if (state === "unallocated") {
      b++;
      continue;
    }
    if (state === "data" && !child.storedRuns) {
      // Whole stored blocks side by side go in one read and one write (small qcow2 clusters).
      let n = 1;
      while (b + n < total && (n + 1) * bs <= scratch.length && child.blockState(b + n) === "data") n++;
      const start = b * bs;
      const run = scratch.subarray(0, Math.min(n * bs, child.size - start));
      await step(async () => {
        await readFromLayer(layers, childIndex, start, run);
        await writeToLayer(layers, childIndex + 1, start, run);
      });
      b += n;
    } else {
      const block = b++;
      await step(() => copyChildBlock(layers, childIndex, block, scratch));
    }
    options.onProgress?.(b, total);
  }
  await parent.flush();
  await relink([layers[childIndex - 1], ...(options.otherChildren ?? [])], parent);
  return { layers: layers.filter((_, i) => i !== childIndex), removed: child };
}

/** One block of a forward merge: what the child stores of block `b` goes into the parent. */
async function copyChildBlock(layers: readonly LayeredImage[], childIndex: number, b: number, scratch: Uint8Array): Promise<void> {
  const child = layers[childIndex]!;
  const state = child.blockState(b);
  if (state === "unallocated") return;
  const bs = child.blockSize;
  const start = b * bs;
  const length = Math.min(bs, child.size - start);
  if (state === "data" && child.storedRuns) {
    // Only the parts the child stores: the rest of the parent's block stays as it is.
    let at = 0;
    for (const run of child.storedRuns(b, 0, length)) {
      if (run.stored) {
        const part = scratch.subarray(0, run.length);
        await child.readBlockPart(b, at, part);
        await writeToLayer(layers, childIndex + 1, start + at, part);
      }
      at += run.length;
    }
    return;
  }
  const buf = scratch.subarray(0, length);
  if (state === "data") await child.readBlockPart(b, 0, buf);
  else buf.fill(0);
  await writeToLayer(layers, childIndex + 1, start, buf);
}

/** Whether `layer` stores data or a zero marker anywhere in [offset, offset+length). */
function storesAny(layer: LayeredImage, offset: number, length: number): boolean {
  const bs = layer.blockSize;
  const end = Math.min(offset + length, layer.size);
  for (let b = Math.floor(offset / bs); b * bs < end; b++) if (layer.blockState(b) !== "unallocated") return true;
  return false;
}

/**
 * Backward merge: the child gets the parent's blocks it lacks (data and zero markers), then takes
 * the parent's parent (becoming a base image if the parent was one); the parent is returned for
 * deletion. The child's children are re-linked, as its modification UUID changed.
 *
 * Crash safety: a block copied into the child holds what reads through the child saw before;
 * the child is flushed before it is re-linked, and the parent goes last.
 */
export async function mergeParentIntoChild(layers: readonly LayeredImage[], childIndex: number, options: MergeOptions): Promise<MergeResult> {
  const { child, parent } = mergePair(layers, childIndex);
  if (await options.hasOtherChildren(parent, child)) {
    throw new MediumError("in-use", `cannot merge ${parent.path} into one child: it has other children`, { path: parent.path });
  }
  if (child.readOnly) throw new MediumError("read-only", "the child must be open read-write to merge into it", { path: child.path });
  const bs = child.blockSize;
  const total = Math.ceil(child.size / bs);
  const step = options.step ?? direct;
  const scratch = new Uint8Array(bs);
  for (let b = 0; b < total; b++) {
    const start = b * bs;
    if (!storesAny(parent, start, Math.min(bs, child.size - start))) continue;
    let copied = false;
    await step(async () => {
      copied = await copyParentBlock(layers, childIndex, b, scratch);
    });
    if (copied) options.onProgress?.(b + 1, total);
  }
  await child.flush();
  const grandparent = layers[childIndex + 2];
  await child.setParent(grandparent ? { uuid: grandparent.uuid, modifyUuid: grandparent.modifyUuid, path: grandparent.path } : null);
  await child.flush();
  await relink([layers[childIndex - 1], ...(options.otherChildren ?? [])], child);
  return { layers: layers.filter((_, i) => i !== childIndex + 1), removed: parent };
}

/**
 * One block of a backward merge: the child gets what it lacks of block `b` from the parent.
 * Decided inside the step, as a guest write may have filled the block meanwhile.
 */
async function copyParentBlock(layers: readonly LayeredImage[], childIndex: number, b: number, scratch: Uint8Array): Promise<boolean> {
  const child = layers[childIndex]!;
  const bs = child.blockSize;
  const start = b * bs;
  const length = Math.min(bs, child.size - start);
  const state = child.blockState(b);
  if (state === "data" && child.storedRuns) {
    // The parts of a stored block the child does not store come from the parent.
    let at = 0;
    for (const run of child.storedRuns(b, 0, length)) {
      if (!run.stored) {
        const part = scratch.subarray(0, run.length);
        await readFromLayer(layers, childIndex + 1, start + at, part);
        await writeToLayer(layers, childIndex, start + at, part);
      }
      at += run.length;
    }
    return true;
  }
  if (state !== "unallocated") return false;
  const buf = scratch.subarray(0, length);
  await readFromLayer(layers, childIndex + 1, start, buf);
  await writeToLayer(layers, childIndex, start, buf);
  return true;
}
