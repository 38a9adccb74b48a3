/**
 * Creating VMDK images: monolithicSparse (one file, descriptor embedded), monolithicFlat
 * (descriptor + "-flat" file), vmfs (VBoxManage's ESX variant: the same two files, the extent
 * typed VMFS), and the split variants twoGbMaxExtentSparse / twoGbMaxExtentFlat
 * (descriptor + "-s001", "-f001", ... pieces of VirtualBox's 2047 MiB). Differencing images are
 * sparse children naming their parent by CID, parentFileNameHint and ddb.uuid.parent.
 * The new files are written, closed, and opened again through openVmdk, so a created image has
 * passed the same checks as any other.
 */
import { MediumError } from "../../block.js";
import type { FileOpener } from "../../io/file-io.js";
import { randomUuid } from "../uuid.js";
import { encodeUtf8 } from "../text-codec.js";
import { VmdkDescriptor, type ExtentLine } from "./descriptor.js";
import { MAX_CAPACITY_SECTORS, SECTOR, newSparseLayout, serializeSparseHeader, sparseGeometry, type SparseHeader } from "./sparse-header.js";
import { baseName, dirOf } from "../paths.js";
import { VmdkImage, cidUuid } from "./vmdk-image.js";
import { openVmdk, type VmdkOpenOptions } from "./vmdk-open.js";

export type VmdkVariant = "monolithicSparse" | "monolithicFlat" | "twoGbMaxExtentSparse" | "twoGbMaxExtentFlat" | "vmfs";

/** VirtualBox's split size (VMDK_2G_SPLIT_SIZE); qemu splits at 2 GiB. */
export const SPLIT_SIZE = 2047 * 1024 * 1024;

/** Sectors of the descriptor area in a monolithic sparse file (as qemu and VirtualBox reserve). */
const EMBEDDED_DESCRIPTOR_SECTORS = 20;

export interface VmdkCreateOptions extends VmdkOpenOptions {
  /** Virtual size in bytes, a multiple of 512. */
  size: number;
  variant?: VmdkVariant;
  /** Make a differencing image of this parent (a sparse variant only). */
  parent?: { uuid: string; modifyUuid: string; fileNameHint: string };
  /** Record zeroed grains as GTE 1 (flag bit 2, qemu's zeroed_grain=on). */
  zeroedGrains?: boolean;
  adapterType?: "ide" | "buslogic" | "lsilogic" | "legacyESX";
  uuid?: string;
  /** Piece size for the split variants (tests use a small one); a multiple of 64 KiB. */
  splitSize?: number;
}

function checkSize(size: number, path: string): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size / SECTOR > MAX_CAPACITY_SECTORS) {
    throw new MediumError("unsupported", `size ${size} must be a positive multiple of 512 up to ${MAX_CAPACITY_SECTORS * SECTOR}`, { path });
  }
}

/** The bytes of a new, empty sparse extent: header, descriptor area, both directories and their (zeroed) tables. */
function sparseFile(h: SparseHeader, descriptorText: string | null): { pieces: [number, Uint8Array][]; length: number } {
  const g = sparseGeometry(h);
  const pieces: [number, Uint8Array][] = [[0, serializeSparseHeader(h)]];
  if (descriptorText !== null) {
    const bytes = encodeUtf8(descriptorText);
    if (bytes.length > h.descriptorSize * SECTOR) throw new MediumError("unsupported", "descriptor does not fit the embedded area");
    pieces.push([h.descriptorOffset * SECTOR, bytes]);
  }
  for (const dirAt of [h.rgdOffset, h.gdOffset]) {
    const dir = new Uint8Array(g.gdSectors * SECTOR);
    const v = new DataView(dir.buffer);
    const firstTable = dirAt + g.gdSectors;
    for (let i = 0; i < g.gtCount; i++) v.setUint32(4 * i, firstTable + i * g.gtSectors, true);
    pieces.push([dirAt * SECTOR, dir]);
  }
  return { pieces, length: h.overHead * SECTOR };
}

export async function createVmdk(opener: FileOpener, path: string, options: VmdkCreateOptions): Promise<VmdkImage> {
  const variant = options.variant ?? "monolithicSparse";
  checkSize(options.size, path);
  const sparse = variant === "monolithicSparse" || variant === "twoGbMaxExtentSparse";
  if (options.parent && !sparse) throw new MediumError("unsupported", "a differencing VMDK must be sparse", { path });
  const split = options.splitSize ?? SPLIT_SIZE;
  if (!Number.isSafeInteger(split) || split <= 0 || split % (64 * 1024) !== 0) throw new MediumError("unsupported", `split size ${split} is not a multiple of 64 KiB`, { path });
  const gen = options.newUuid ?? randomUuid;
  const cid = options.newCid ? options.newCid() >>> 0 : parseInt(randomUuid().slice(0, 8), 16) >>> 0;

  const d = VmdkDescriptor.create({
    cid,
    parentCid: options.parent ? parseInt(options.parent.modifyUuid.slice(0, 8), 16) >>> 0 : undefined,
    createType: variant,
    parentFileNameHint: options.parent?.fileNameHint,
  });
  const stem = baseName(path).replace(/\.vmdk$/i, "");
  const sectors = options.size / SECTOR;
  const lines: ExtentLine[] = [];
  if (variant === "monolithicSparse") lines.push({ access: "RW", sectors, type: "SPARSE", file: baseName(path), offset: 0 });
  else if (variant === "monolithicFlat") lines.push({ access: "RW", sectors, type: "FLAT", file: `${stem}-flat.vmdk`, offset: 0 });
  else if (variant === "vmfs") lines.push({ access: "RW", sectors, type: "VMFS", file: `${stem}-flat.vmdk`, offset: 0 });
  else {
    const kind = sparse ? "s" : "f";
    for (let at = 0, i = 1; at < sectors; at += split / SECTOR, i++) {
      const n = Math.min(split / SECTOR, sectors - at);
      lines.push({ access: "RW", sectors: n, type: sparse ? "SPARSE" : "FLAT", file: `${stem}-${kind}${String(i).padStart(3, "0")}.vmdk`, offset: 0 });
    }
  }
  d.extents = lines;
  // VirtualBox sets lsilogic on ESX disks: ESX refuses an image naming a controller it lacks.
  const adapterType = options.adapterType ?? (variant === "vmfs" ? "lsilogic" : "ide");
  d.setDiskDatabase({ size: options.size, adapterType, uuid: options.uuid ?? gen(), modification: gen(), parent: options.parent });

  const made: string[] = [];
  const writeFile = async (p: string, pieces: [number, Uint8Array][], length: number): Promise<void> => {
    const f = await opener.open(p, { create: true, direct: options.direct });
    made.push(p);
    try {
      for (const [at, bytes] of pieces) await f.write(at, bytes);
      await f.truncate(length);
      await f.flush();
    } finally {
      await f.close();
    }
  };
  try {
    if (variant === "monolithicSparse") {
      const h = newSparseLayout(sectors, { descriptorSectors: EMBEDDED_DESCRIPTOR_SECTORS, zeroedGrains: options.zeroedGrains });
      const f = sparseFile(h, d.toString());
      await writeFile(path, f.pieces, f.length);
    } else {
      const dir = dirOf(path);
      for (const line of lines) {
        if (sparse) {
          const f = sparseFile(newSparseLayout(line.sectors, { descriptorSectors: 0, zeroedGrains: options.zeroedGrains }), null);
          await writeFile(dir + line.file!, f.pieces, f.length);
        } else {
          await writeFile(dir + line.file!, [], line.sectors * SECTOR);
        }
      }
      const text = encodeUtf8(d.toString());
      await writeFile(path, [[0, text]], text.length);
    }
    return await openVmdk(opener, path, { ...options, readOnly: false });
  } catch (e) {
    for (const p of made) await opener.remove(p).catch(() => undefined);
    throw e;
  }
}

/** The parent link a child created under `parent` records (for createVmdk's `parent`). */
export function parentLinkOf(parent: VmdkImage, fileNameHint: string): { uuid: string; modifyUuid: string; fileNameHint: string } {
  return { uuid: parent.uuid, modifyUuid: cidUuid(parent.cid), fileNameHint };
}
