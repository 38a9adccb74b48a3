/**
 * Checking a VHD file without opening it for I/O: `vstor checkmedium`'s VHD part. Pure (a FileIo
 * in, a report out) and read-only: it never writes, truncates or flushes. `qemu-img check` does
 * not support VHD at all, so this is the only check there is.
 *
 * - corruption: exactly what an open refuses (readVhdMetadata runs), with the MediumError's kind.
 * - leaked space: bytes between the metadata and the footer that no block uses (what a crash
 *   between moving the footer on and writing a new block's BAT entry leaves). Harmless.
 * - warnings: a dynamic image whose footer copy at offset 0 is missing or differs from the
 *   footer (VirtualBox reads the footer at the end; qemu reads the copy), a block table larger
 *   than the disk needs (normal after qemu's CHS rounding), a saved-state flag.
 */
import { MediumError, type MediumErrorKind } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { BLOCK_UNUSED } from "./bat.js";
import { SECTOR_SIZE, VhdDiskType } from "./footer.js";
import { readVhdMetadata, virtualSize, type VhdLocatorInfo } from "./vhd-metadata.js";

export interface VhdCheckImage {
  uuid: string;
  /** Null unless the image is a differencing one. */
  parentUuid: string | null;
  /** The parent's footer timestamp as this child recorded it. */
  parentTimestamp: number | null;
  parentName: string | null;
  parentLocators: VhdLocatorInfo[];
  variant: "fixed" | "dynamic" | "differencing";
  creatorApp: string;
  /** Virtual size in bytes (the footer's current size). */
  size: number;
  /** The footer's geometry C/H/S and the size it gives (what qemu uses for most creators). */
  geometry: { cylinders: number; heads: number; sectors: number };
  chsSize: number;
  blockSize: number;
  tableEntries: number;
  /** Blocks stored, and those of them with some sectors not stored (they read from the parent). */
  storedBlocks: number;
  partialBlocks: number;
}

export interface VhdLeak {
  /** Leaked bytes between the metadata and the footer. */
  bytes: number;
  /** First offset concerned. */
  offset: number;
  message: string;
}

export interface VhdCheckReport {
  path: string;
  fileSize: number;
  image: VhdCheckImage | null;
  corruption: { kind: MediumErrorKind; message: string; offset?: number } | null;
  leaks: VhdLeak[];
  leakedBytes: number;
  warnings: string[];
}

/** Check the VHD in `file`. Throws only for host I/O errors; image problems are in the report. */
export async function checkVhd(file: FileIo): Promise<VhdCheckReport> {
  const path = file.path;
  let m;
  try {
    m = await readVhdMetadata(file);
  } catch (e) {
    if (!(e instanceof MediumError) || e.kind === "io") throw e;
    return {
      path,
      fileSize: await file.size(),
      image: null,
      corruption: { kind: e.kind, message: e.message, ...(e.offset !== undefined ? { offset: e.offset } : {}) },
      leaks: [],
      leakedBytes: 0,
      warnings: [],
    };
  }
  const { footer: f, header: h, bat } = m;
  const size = virtualSize(f);
  const warnings: string[] = [];
  const leaks: VhdLeak[] = [];
  let stored = 0;
  if (h && bat) {
    if (m.copyMatches === false) {
      warnings.push(`the footer copy at offset 0 is missing or differs from the footer at ${m.footerOffset} (qemu reads the copy)`);
    }
    const needed = Math.ceil(size / h.blockSize);
    if (h.maxTableEntries > needed) warnings.push(`the block table has ${h.maxTableEntries} entries, ${needed} are needed for ${size} bytes`);
    // Space between the metadata and the footer that no block (or locator) uses.
    const used: [number, number][] = [];
    const stride = m.bitmapSize + h.blockSize;
    for (const e of bat) {
      if (e === BLOCK_UNUSED) continue;
      stored++;
      used.push([e * SECTOR_SIZE, e * SECTOR_SIZE + stride]);
    }
    for (const l of h.locators) if (l.code !== 0 && l.dataOffset >= m.dataStart) used.push([l.dataOffset, l.dataOffset + Math.max(l.dataSpace, l.dataLength)]);
    used.sort((a, b) => a[0] - b[0]);
    let at = Math.ceil(m.dataStart / SECTOR_SIZE) * SECTOR_SIZE;
    const holes: [number, number][] = [];
    for (const [s, e] of used) {
      if (s > at) holes.push([at, s]);
      at = Math.max(at, e);
    }
    if (m.footerOffset > at) holes.push([at, m.footerOffset]);
    const bytes = holes.reduce((n, [s, e]) => n + e - s, 0);
    if (bytes > 0) {
      leaks.push({
        bytes,
        offset: holes[0]![0],
        message: `${bytes} bytes between the metadata and the footer hold no block (${holes.length} ${holes.length === 1 ? "range" : "ranges"}, the first at ${holes[0]![0]})`,
      });
    }
  } else if (m.footerOffset > size) {
    leaks.push({ bytes: m.footerOffset - size, offset: size, message: `${m.footerOffset - size} bytes between the end of the data (${size}) and the footer` });
  }
  if (f.savedState) warnings.push("the saved-state flag is set");
  const g = f.geometry;
  const variant = f.diskType === VhdDiskType.fixed ? "fixed" : f.diskType === VhdDiskType.differencing ? "differencing" : "dynamic";
  const diff = variant === "differencing" && h !== null;
  return {
    path,
    fileSize: m.fileSize,
    image: {
      uuid: f.uuid,
      parentUuid: diff ? h.parentUuid : null,
      parentTimestamp: diff ? h.parentTimestamp : null,
      parentName: diff ? h.parentName : null,
      parentLocators: m.locators,
      variant,
      creatorApp: f.creatorApp,
      size,
      geometry: { ...g },
      chsSize: g.cylinders * g.heads * g.sectors * SECTOR_SIZE,
      blockSize: h?.blockSize ?? 0,
      tableEntries: h?.maxTableEntries ?? 0,
      storedBlocks: stored,
      partialBlocks: m.partial.size,
    },
    corruption: null,
    leaks,
    leakedBytes: leaks.reduce((n, l) => n + l.bytes, 0),
    warnings,
  };
}

