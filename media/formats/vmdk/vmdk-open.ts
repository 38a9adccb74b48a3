/**
 * Opening VMDK images: a monolithic sparse file (descriptor embedded) or a descriptor file
 * naming its extents, and chains of differencing images found through parentFileNameHint.
 * Every file opened is closed again when the open is refused; nothing is written.
 */
import { MediumError } from "../../block.js";
import { ImageChain, MAX_CHAIN_DEPTH, type ChainOptions } from "../../chain.js";
import type { FileIo, FileOpener } from "../../io/file-io.js";
import { queued, type QueuedFileIo } from "../../io/request-queue.js";
import { decodeCString, encodeUtf8 } from "../text-codec.js";
import { MAX_DESCRIPTOR_BYTES, VmdkDescriptor, hex8, looksLikeDescriptor } from "./descriptor.js";
import { FlatExtent, ZeroExtent, type VmdkExtent } from "./extents.js";
import { MAX_CAPACITY_SECTORS, SECTOR, hasSparseMagic } from "./sparse-header.js";
import { SparseExtent, capacityFits, readSparseMetadata, type Inflate, type SparseMetadata } from "./sparse-extent.js";
import { asMediumError, readFully } from "./util.js";
import { baseName, resolveBeside } from "../paths.js";
import { VmdkImage, type DescriptorStore } from "./vmdk-image.js";

export interface VmdkOpenOptions {
  readOnly?: boolean;
  direct?: boolean;
  /** Requests in flight per file. */
  maxInFlight?: number;
  /** Needed to read compressed (streamOptimized) grains; see node/zlib.ts. */
  inflate?: Inflate;
  newUuid?: () => string;
  newCid?: () => number;
}

/** Content probe: a sparse extent ("KDMV") or a text descriptor. */
export function isVmdk(firstBytes: Uint8Array): boolean {
  return hasSparseMagic(firstBytes) || looksLikeDescriptor(firstBytes);
}

/** The descriptor embedded in a sparse file, rewritten in place (NUL padded to its area). */
function embeddedStore(file: FileIo, offset: number, sectors: number): DescriptorStore {
  return {
    async write(text) {
      const bytes = encodeUtf8(text);
      if (bytes.length > sectors * SECTOR) {
        throw new MediumError("unsupported", `descriptor of ${bytes.length} bytes does not fit its ${sectors * SECTOR}-byte area`, { path: file.path });
      }
      const area = new Uint8Array(sectors * SECTOR);
      area.set(bytes);
      await file.write(offset * SECTOR, area);
    },
    async close() {},
  };
}

/** A descriptor file of its own: rewritten whole, then cut to length. */
function fileStore(file: FileIo): DescriptorStore {
  return {
    async write(text) {
      const bytes = encodeUtf8(text);
      await file.write(0, bytes);
      await file.truncate(bytes.length);
      await file.flush();
    },
    close: () => file.close(),
  };
}

const noStore: DescriptorStore = { async write() {}, async close() {} };

/** The descriptor embedded in a sparse file (a made-up one when the file has none). */
async function embeddedDescriptor(file: QueuedFileIo, md: SparseMetadata): Promise<VmdkDescriptor> {
  const h = md.fileHeader;
  const path = file.path;
  if (h.descriptorOffset === 0 || h.descriptorSize === 0) {
    // A bare sparse extent (a split image's piece, opened on its own): describe it as monolithic.
    const d = VmdkDescriptor.create({ cid: 0xfffffffe, createType: "monolithicSparse" });
    d.extents = [{ access: "RW", sectors: md.header.capacity, type: "SPARSE", file: baseName(path), offset: 0 }];
    return d;
  }
  const pos = h.descriptorOffset * SECTOR;
  const len = h.descriptorSize * SECTOR;
  if (pos + len > md.fileSize) throw new MediumError("corrupt", `embedded descriptor at ${pos} lies past the end of the file`, { path, offset: pos });
  const bytes = new Uint8Array(len);
  await readFully(file, pos, bytes);
  const d = VmdkDescriptor.parse(decodeCString(bytes), { path });
  const ex = d.extents;
  if (ex.length !== 1 || ex[0]!.type !== "SPARSE") {
    throw new MediumError("corrupt", `embedded descriptor lists ${ex.length} extents; a monolithic sparse file has one SPARSE extent`, { path });
  }
  return d;
}

/** Open one extent file the descriptor names. */
async function openExtent(
  opener: FileOpener,
  descriptorPath: string,
  line: VmdkDescriptor["extents"][number],
  options: VmdkOpenOptions,
  opened: FileIo[],
): Promise<VmdkExtent> {
  if (line.type === "ZERO" || line.access === "NOACCESS") return new ZeroExtent(line, descriptorPath);
  if (line.type === "VMFSRDM" || line.type === "VMFSRAW" || line.type === "SESPARSE") {
    throw new MediumError("unsupported", `${line.type} extents are not supported`, { path: descriptorPath });
  }
  const path = resolveBeside(descriptorPath, line.file!);
  const readOnly = !!options.readOnly || line.access === "RDONLY";
  const raw = await opener.open(path, { readOnly, direct: options.direct });
  opened.push(raw);
  const file = queued(raw, { maxInFlight: options.maxInFlight });
  opened[opened.length - 1] = file;
  if (line.type === "FLAT" || line.type === "VMFS") return FlatExtent.open(line, file, !readOnly && !file.readOnly);
  const head = new Uint8Array(4);
  await readFully(file, 0, head);
  if (!hasSparseMagic(head)) {
    const cowd = head[0] === 0x43 && head[1] === 0x4f && head[2] === 0x57 && head[3] === 0x44;
    throw new MediumError(cowd ? "unsupported" : "invalid-format", cowd ? "COWD (ESX vmfsSparse) extents are not supported" : "sparse extent has no KDMV signature", { path });
  }
  return SparseExtent.open(line, file, { writable: !readOnly && !file.readOnly, inflate: options.inflate });
}

/** Open a VMDK by its descriptor file or its monolithic file. Nothing is written. */
export async function openVmdk(opener: FileOpener, path: string, options: VmdkOpenOptions = {}): Promise<VmdkImage> {
  const first = await opener.open(path, { readOnly: options.readOnly, direct: options.direct });
  const opened: FileIo[] = [first];
  try {
    const head = new Uint8Array(SECTOR);
    const n = await readFully(first, 0, head);
    const ctx = { path };
    if (hasSparseMagic(head)) {
      const file = queued(first, { maxInFlight: options.maxInFlight });
      opened[0] = file;
      const md = await readSparseMetadata(file);
      const descriptor = await embeddedDescriptor(file, md);
      const line = descriptor.extents[0]!;
      if (!capacityFits(md.header, line.sectors)) {
        throw new MediumError("corrupt", `descriptor says ${line.sectors} sectors, the sparse header ${md.header.capacity}`, ctx);
      }
      const writable = !options.readOnly && !first.readOnly && line.access === "RW";
      const extent = new SparseExtent(line, file, md, { writable }, options.inflate);
      const h = md.fileHeader;
      const store = h.descriptorOffset && h.descriptorSize ? embeddedStore(file, h.descriptorOffset, h.descriptorSize) : noStore;
      return new VmdkImage({ path, descriptor, store, extents: [extent], readOnly: !extent.writable, newUuid: options.newUuid, newCid: options.newCid });
    }
    if (!looksLikeDescriptor(head.subarray(0, n))) throw new MediumError("invalid-format", "not a VMDK image (no KDMV signature or descriptor)", ctx);
    const size = await first.size();
    if (size > MAX_DESCRIPTOR_BYTES) throw new MediumError("corrupt", `descriptor file of ${size} bytes is too large`, ctx);
    const bytes = new Uint8Array(size);
    await readFully(first, 0, bytes);
    const descriptor = VmdkDescriptor.parse(decodeCString(bytes), ctx);
    if (descriptor.totalSectors > MAX_CAPACITY_SECTORS) throw new MediumError("corrupt", `extents add up to ${descriptor.totalSectors} sectors, which is absurd`, ctx);
    if (descriptor.totalSectors === 0) throw new MediumError("corrupt", "extents add up to nothing", ctx);
    const extents: VmdkExtent[] = [];
    for (const line of descriptor.extents) extents.push(await openExtent(opener, path, line, options, opened));
    const readOnly = !!options.readOnly || first.readOnly || extents.every((e) => !e.writable);
    return new VmdkImage({ path, descriptor, store: fileStore(first), extents, readOnly, newUuid: options.newUuid, newCid: options.newCid });
  } catch (e) {
    await Promise.allSettled(opened.map((f) => f.close()));
    throw asMediumError(e, path, "open");
  }
}

/**
 * Open a differencing VMDK and its parents by parentFileNameHint (relative to each child), as
 * qemu finds them; parents are opened read-only. Each child's parentCID must match its parent's
 * CID unless the chain is read-only or allowParentModified is given (media/chain.ts's check).
 */
export async function openVmdkChain(opener: FileOpener, path: string, options: VmdkOpenOptions & ChainOptions = {}): Promise<ImageChain> {
  const layers: VmdkImage[] = [await openVmdk(opener, path, options)];
  try {
    for (let img = layers[0]!; img.hasParent; ) {
      if (layers.length >= MAX_CHAIN_DEPTH) throw new MediumError("unsupported", `chain of ${path} is deeper than ${MAX_CHAIN_DEPTH}`, { path });
      const hint = img.parentFileNameHint;
      if (!hint) throw new MediumError("not-found", `differencing image (parentCID ${hex8(img.descriptor.parentCid!)}) names no parent file`, { path: img.path });
      const parentPath = resolveBeside(img.path, hint);
      if (layers.some((l) => l.path === parentPath)) throw new MediumError("corrupt", `chain loops back to ${parentPath}`, { path: img.path });
      const parent = await openVmdk(opener, parentPath, { ...options, readOnly: true });
      layers.push(parent);
      img.bindParent(parent);
      img = parent;
    }
    return new ImageChain(layers, options);
  } catch (e) {
    await Promise.allSettled(layers.map((l) => l.close()));
    throw e;
  }
}
