/**
 * The image formats the medium manager knows, in one table: how each is recognised (by content,
 * never by file name), opened as a single layer, and described. Creating goes through
 * clone.ts's IMAGE_CREATORS (pure, shared with cloning). Node side: it passes node:zlib to the
 * formats whose compressed data needs it (streamOptimized VMDK, compressed qcow2 clusters).
 */
import { dirname, isAbsolute, resolve } from "node:path";
import { MediumError, type BlockBackend } from "./block.js";
import type { LayeredImage } from "./chain.js";
import type { FileIo, FileOpener } from "./io/file-io.js";
import type { CheckIssue, MediumCheckReport } from "./medium-manager.js";
import { checkParallels } from "./formats/parallels/parallels-check.js";
import { isParallels, openParallels } from "./formats/parallels/parallels-image.js";
import { nodeInflate as qcow2Inflate } from "./formats/qcow2/node/inflate.js";
import { checkQcow2 } from "./formats/qcow2/qcow2-check.js";
import { isQcow2, openQcow2, Qcow2Image } from "./formats/qcow2/qcow2-image.js";
import { openRaw } from "./formats/raw/raw.js";
import { VDI_SIGNATURE, VdiImageType } from "./formats/vdi/header.js";
import { openVdi, VdiImage } from "./formats/vdi/vdi-image.js";
import { openVhd, VhdImage } from "./formats/vhd/vhd-image.js";
import { checkVhd } from "./formats/vhd/vhd-check.js";
import { isVhd } from "./formats/vhd/vhd-metadata.js";
import { isVhdx, openVhdx, VhdxImage } from "./formats/vhdx/vhdx-image.js";
import { isVmdk, openVmdk, VmdkImage } from "./formats/vmdk/index.js";
import { nodeInflate as vmdkInflate } from "./formats/vmdk/node/zlib.js";

export type MediumFormat = "VDI" | "VMDK" | "VHD" | "VHDX" | "HDD" | "QCOW2" | "RAW";
export type MediumVariant = "Standard" | "Fixed" | "Diff" | "Split2G" | "Split2G,Fixed" | "Stream";

export const MEDIUM_FORMATS: readonly MediumFormat[] = ["VDI", "VMDK", "VHD", "VHDX", "HDD", "QCOW2", "RAW"];

/** What a probe sees of a file: its first bytes and its last 512 (a fixed VHD's footer). */
export interface ProbeBytes {
  head: Uint8Array;
  tail: Uint8Array;
  fileSize: number;
}

export interface OpenLayerOptions {
  readOnly: boolean;
  /** The UUID the registry knows the file by, for formats that store none (qcow2, qemu's VMDKs). */
  uuid?: string;
}

export interface FormatEntry {
  name: MediumFormat;
  /** "yes": this format's signature; "damaged": its markers without a valid signature. */
  probe(p: ProbeBytes): "yes" | "damaged" | "no";
  /** Open one image (no parents). */
  open(opener: FileOpener, path: string, o: OpenLayerOptions): Promise<BlockBackend>;
  variantOf(image: BlockBackend): MediumVariant | Promise<MediumVariant>;
}

const PROBE_HEAD = 4096;
const text = (b: Uint8Array): string => String.fromCharCode(...b);
const has = (b: Uint8Array, s: string): boolean => text(b).includes(s);
const VDI_SIGNATURE_OFFSET = 0x40;

export const FORMATS: Record<MediumFormat, FormatEntry> = {
  VDI: {
    name: "VDI",
    probe: ({ head }) => {
      if (head.length >= VDI_SIGNATURE_OFFSET + 4 && new DataView(head.buffer, head.byteOffset).getUint32(VDI_SIGNATURE_OFFSET, true) === VDI_SIGNATURE) return "yes";
      // A VDI pre-header ("<<< ... VirtualBox Disk Image >>>") whose signature is damaged.
      return head.length >= 40 && text(head.subarray(0, 4)) === "<<< " && head.subarray(0, 40).includes(0x56) ? "damaged" : "no";
    },
    open: (opener, path, o) => openVdi(opener, path, { readOnly: o.readOnly }),
    variantOf: (img) => {
      const v = img as VdiImage;
      return v.type === VdiImageType.fixed ? "Fixed" : v.isDifferencing ? "Diff" : "Standard";
    },
  },
  QCOW2: {
    name: "QCOW2",
    probe: ({ head }) => (isQcow2(head) ? "yes" : text(head.subarray(0, 3)) === "QFI" ? "damaged" : "no"),
    open: (opener, path, o) => openQcow2(opener, path, { readOnly: o.readOnly, uuid: o.uuid, inflate: qcow2Inflate }),
    variantOf: (img) => ((img as Qcow2Image).backingFile !== null ? "Diff" : "Standard"),
  },
  VMDK: {
    name: "VMDK",
    probe: ({ head }) => {
      if (isVmdk(head)) return "yes";
      // A sparse extent whose magic is damaged still has its embedded descriptor at sector 1;
      // a descriptor file whose first line is damaged still has its createType and extents.
      return has(head, "# Disk DescriptorFile") || (has(head, "createType=") && has(head, "ddb.")) || text(head.subarray(0, 4)) === "KDM" ? "damaged" : "no";
    },
    open: (opener, path, o) => openVmdk(opener, path, { readOnly: o.readOnly, inflate: vmdkInflate, ...(o.uuid ? { newUuid: () => o.uuid! } : {}) }),
    variantOf: (img) => {
      const v = img as VmdkImage;
      if (v.hasParent) return "Diff";
      switch (v.createType) {
        case "monolithicFlat":
        case "vmfs":
          return "Fixed";
        case "twoGbMaxExtentSparse":
          return "Split2G";
        case "twoGbMaxExtentFlat":
          return "Split2G,Fixed";
        case "streamOptimized":
          return "Stream";
        default:
          return "Standard";
      }
    },
  },
  VHD: {
    name: "VHD",
    probe: ({ head, tail }) => {
      if (isVhd(head.subarray(0, 512), tail)) return "yes";
      // A dynamic VHD's header ("cxsparse" at 512) with both footers damaged.
      return text(head.subarray(512, 520)) === "cxsparse" ? "damaged" : "no";
    },
    open: (opener, path, o) => openVhd(opener, path, { readOnly: o.readOnly }),
    variantOf: (img) => {
      const v = (img as VhdImage).variant;
      return v === "fixed" ? "Fixed" : v === "differencing" ? "Diff" : "Standard";
    },
  },
  // Hyper-V's format: read-only here (a crash's log is replayed in memory; never written).
  VHDX: {
    name: "VHDX",
    probe: ({ head }) => (isVhdx(head) ? "yes" : "no"),
    open: (opener, path) => openVhdx(opener, path),
    variantOf: (img) => ({ fixed: "Fixed", dynamic: "Standard", differencing: "Diff" } as const)[(img as VhdxImage).variant],
  },
  HDD: {
    name: "HDD",
    probe: ({ head }) => (isParallels(head) ? "yes" : text(head.subarray(0, 7)) === "Without" || text(head.subarray(0, 9)) === "WithouFre" ? "damaged" : "no"),
    open: (opener, path, o) => openParallels(opener, path, { readOnly: o.readOnly }),
    // Fixed: every cluster allocated from the start.
    variantOf: async (img) => {
      const data = (await img.allocatedExtents()).filter((e) => e.state === "data");
      return img.size > 0 && data.reduce((n, e) => n + e.length, 0) >= img.size ? "Fixed" : "Standard";
    },
  },
  RAW: {
    name: "RAW",
    probe: () => "yes",
    open: (opener, path, o) => openRaw(opener, path, { readOnly: o.readOnly }),
    variantOf: () => "Fixed",
  },
};

/** Probe order: signatures at the start first; VHD (which may only have a footer) and raw last. */
const PROBE_ORDER: MediumFormat[] = ["VDI", "QCOW2", "VMDK", "VHDX", "HDD", "VHD"];

/**
 * A file's format by content: the first format whose signature it carries; else, if it carries
 * another format's markers (a damaged image), that format as `damaged`; else RAW.
 */
export async function probeFormat(opener: FileOpener, path: string): Promise<{ format: MediumFormat; damaged: boolean }> {
  const f = await opener.open(path, { readOnly: true });
  let p: ProbeBytes;
  try {
    const fileSize = await f.size();
    const head = new Uint8Array(Math.min(PROBE_HEAD, fileSize));
    if (head.length) await f.read(0, head);
    const tail = new Uint8Array(Math.min(512, fileSize));
    if (tail.length) await f.read(fileSize - tail.length, tail);
    p = { head, tail, fileSize };
  } finally {
    await f.close();
  }
  for (const name of PROBE_ORDER) if (FORMATS[name].probe(p) === "yes") return { format: name, damaged: false };
  for (const name of PROBE_ORDER) if (FORMATS[name].probe(p) === "damaged") return { format: name, damaged: true };
  return { format: "RAW", damaged: false };
}

/**
 * Detect a file's format by content. A file with no signature is RAW only if it carries no other
 * format's markers: a damaged image of a known format is refused ("corrupt"), never read as raw.
 */
export async function detectFormat(opener: FileOpener, path: string): Promise<MediumFormat> {
  const { format, damaged } = await probeFormat(opener, path);
  if (damaged) throw new MediumError("corrupt", `looks like a ${format} image (its markers are there) but its signature is damaged; not opened as raw`, { path });
  return format;
}

/** Open any image as a chain layer (a parent), by content; formats without layers are refused. */
export async function openLayer(opener: FileOpener, path: string, o: OpenLayerOptions): Promise<LayeredImage> {
  const format = await detectFormat(opener, path);
  const img = await FORMATS[format].open(opener, path, o);
  const layer = asLayer(img);
  if (!layer) {
    await img.close();
    throw new MediumError("unsupported", `a ${format} image cannot be the parent of a differencing image here`, { path });
  }
  return layer;
}

/**
 * The parent file a differencing image names next to itself, resolved against its folder: a
 * VHD's parent name, a VMDK's parentFileNameHint, a qcow2 backing file, a VHDX's relative_path.
 * Null if it names none.
 */
export function parentFileOf(child: LayeredImage): string | null {
  const name =
    child instanceof VhdImage ? child.parentName : child instanceof VmdkImage ? child.parentFileNameHint : child instanceof Qcow2Image ? child.backingFile : child instanceof VhdxImage ? child.parentFileName : null;
  if (!name) return null;
  return isAbsolute(name) ? name : resolve(dirname(child.path), name);
}

/**
 * Link a child to the parent found by file name (formats that link by name, not UUID). A VHDX
 * child accepts only a parent whose DataWriteGuid it recorded; otherwise it stays unlinked and
 * the chain is refused.
 */
export function bindParent(child: LayeredImage, parent: LayeredImage): void {
  if (child instanceof VmdkImage) child.bindParent(parent);
  else if (child instanceof Qcow2Image) child.attachBacking(parent);
  else if (child instanceof VhdxImage) child.bindParent(parent);
}

/** Whether the child names its parent by a UUID the parent stores (else by file name). */
export function linksByUuid(child: LayeredImage): boolean {
  if (child instanceof VdiImage || child instanceof VhdImage) return true;
  if (child instanceof VmdkImage) return !!child.descriptor.uuid("parent") && !/^0{8}-0{4}/.test(child.descriptor.uuid("parent")!);
  return false;
}

/** The layer interface of an opened image, if its format has one (not RAW or HDD). */
export function asLayer(b: BlockBackend): LayeredImage | null {
  return b instanceof VdiImage || b instanceof VhdImage || b instanceof VmdkImage || b instanceof Qcow2Image || b instanceof VhdxImage ? b : null;
}

/** Whether the format stores its own UUID (else the registry's is the medium's identity). */
export function storesUuid(b: BlockBackend): boolean {
  if (b instanceof VdiImage || b instanceof VhdImage || b instanceof VhdxImage) return true; // VHDX: page 83 data
  if (b instanceof VmdkImage) return !!b.descriptor.uuid("image") && !/^0{8}-/.test(b.descriptor.uuid("image")!);
  return false;
}

/** Parse a format name (case-insensitive; "parallels" means HDD). */
export function parseFormat(v: string): MediumFormat | undefined {
  const f = v.toUpperCase();
  if (f === "PARALLELS") return "HDD";
  return (MEDIUM_FORMATS as readonly string[]).includes(f) ? (f as MediumFormat) : undefined;
}

/** `check` of a raw image: only its size can be judged. */
export function rawCheckReport(location: string, fileSize: number, uuid: string | undefined): MediumCheckReport {
  const issues: CheckIssue[] = [];
  if (fileSize % 512) {
    issues.push({
      severity: "warning",
      code: "odd-size",
      location,
      message: `${location}: ${fileSize} bytes is not a whole number of 512-byte sectors; the last ${fileSize % 512} bytes read as a sector padded with zeros`,
    });
  }
  const size = Math.ceil(fileSize / 512) * 512;
  return { location, format: "RAW", ...(uuid ? { uuid } : {}), registered: !!uuid, variant: "Fixed", size, fileSize, chain: [], corrupt: false, leakedBytes: 0, issues };
}

/** What a format's own checker found in one file (no parents): errors, and leaked space. */
export interface FileCheck {
  errors: { kind: string; message: string }[];
  leakedBytes: number;
  warnings: string[];
}

/**
 * The format's own read-only checker (VHD, qcow2, Parallels; VDI has its fuller report in the
 * medium manager), or undefined where the format has none and opening is the check (VMDK).
 */
export function fileChecker(format: MediumFormat): ((file: FileIo) => Promise<FileCheck>) | undefined {
  switch (format) {
    case "VHD":
      return async (file) => {
        const r = await checkVhd(file);
        return { errors: r.corruption ? [r.corruption] : [], leakedBytes: r.leakedBytes, warnings: [...r.leaks.map((l) => l.message), ...r.warnings] };
      };
    case "QCOW2":
      return async (file) => {
        const r = await checkQcow2(file);
        return { errors: r.corruptions, leakedBytes: r.leakedClusters * r.clusterSize, warnings: r.leakedClusters ? [`${r.leakedClusters} leaked clusters (refcount above their references)`] : [] };
      };
    case "HDD":
      return async (file) => {
        const r = await checkParallels(file);
        const warnings = [...(r.leakedBytes ? [`${r.leakedBytes} bytes no BAT entry uses`] : []), ...(r.unclean ? ["the image is marked in use (not closed cleanly)"] : [])];
        return { errors: r.corruption ? [r.corruption] : [], leakedBytes: r.leakedBytes, warnings };
      };
    default:
      return undefined;
  }
}
