/**
 * Reading a VHD file's metadata and validating all of it against the file: the footer (and its
 * copy at offset 0), the dynamic header, the BAT, the parent locators and the sector bitmaps of
 * stored blocks. Every check an open makes, nothing written: shared by open (vhd-image.ts) and
 * the checker (vhd-check.ts), so both refuse exactly the same files. Pure (a FileIo in).
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { isNullUuid } from "../uuid.js";
import { BLOCK_UNUSED, isFull, parseBat } from "./bat.js";
import { HEADER_SIZE, LocatorCode, bitmapSize, decodeLocator, parseDynamicHeader, type VhdDynamicHeader } from "./dynamic-header.js";
import { FOOTER_SIZE, SECTOR_SIZE, VhdDiskType, hasFooterCookie, parseFooter, type VhdFooter } from "./footer.js";

export { asMediumError, readFully } from "../file-helpers.js";
import { asMediumError, readFully } from "../file-helpers.js";

/**
 * Whether `bytes` look like a VHD: the footer cookie in the last 512 bytes (every VHD) or at
 * offset 0 (the footer copy of a dynamic or differencing VHD). Pass the whole file, or its first
 * and last 512 bytes as `head` and `tail`.
 */
export function isVhd(head: Uint8Array, tail: Uint8Array = head): boolean {
  return hasFooterCookie(head, 0) || (tail.length >= FOOTER_SIZE && hasFooterCookie(tail, tail.length - FOOTER_SIZE));
}

export interface VhdLocatorInfo {
  code: number;
  /** The path it holds ("" if its data could not be read). */
  path: string;
}

/** A VHD file's validated metadata, as an open reads it. */
export interface VhdMetadata {
  footer: VhdFooter;
  fileSize: number;
  /** Where the footer is: the end of the data. */
  footerOffset: number;
  /** Dynamic and differencing: whether the copy at offset 0 matches the footer (qemu reads the copy). */
  copyMatches: boolean | null;
  header: VhdDynamicHeader | null;
  bat: Uint32Array | null;
  /** Bitmaps of stored blocks that do not mark every sector stored (a full one is not kept). */
  partial: Map<number, Uint8Array>;
  /** Bytes of bitmap in front of each block (0 for fixed). */
  bitmapSize: number;
  /** Where the metadata ends and blocks may begin (0 for fixed). */
  dataStart: number;
  locators: VhdLocatorInfo[];
}

const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** Virtual size we present: the footer's current size rounded down to whole sectors (VirtualBox's rule). */
export function virtualSize(footer: VhdFooter): number {
  return footer.currentSize - (footer.currentSize % SECTOR_SIZE);
}

/**
 * Read and validate everything an open needs. Throws MediumError (or the file's own error) for
 * anything an open refuses; reads only.
 */
export async function readVhdMetadata(file: FileIo): Promise<VhdMetadata> {
  const ctx = { path: file.path };
  const fail = (kind: "corrupt" | "invalid-format", message: string, offset?: number): never => {
    throw new MediumError(kind, message, { path: file.path, offset });
  };
  const fileSize = await file.size();
  if (fileSize < FOOTER_SIZE) fail("invalid-format", `too small for a VHD (${fileSize} bytes)`);
  const footerOffset = fileSize - FOOTER_SIZE;
  const tail = new Uint8Array(FOOTER_SIZE);
  await readFully(file, footerOffset, tail);
  const head = new Uint8Array(FOOTER_SIZE);
  await readFully(file, 0, head);
  if (!hasFooterCookie(tail)) {
    // VirtualBox: a copy at offset 0 without a footer at the end is a damaged dynamic image.
    if (hasFooterCookie(head)) fail("corrupt", `the VHD footer at the end of the file (offset ${footerOffset}) is missing; only the copy at offset 0 is there`, footerOffset);
    fail("invalid-format", `not a VHD: no "conectix" footer at the end of the file or at offset 0`);
  }
  const footer = parseFooter(tail, { ...ctx, offset: footerOffset });
  const size = virtualSize(footer);
  const base = { footer, fileSize, footerOffset, partial: new Map<number, Uint8Array>(), locators: [] as VhdLocatorInfo[] };

  if (footer.diskType === VhdDiskType.fixed) {
    if (size > footerOffset) fail("corrupt", `fixed VHD is truncated: ${size} bytes of data need a file of ${size + FOOTER_SIZE}, the file has ${fileSize}`, footerOffset);
    return { ...base, copyMatches: null, header: null, bat: null, bitmapSize: 0, dataStart: 0 };
  }

  const headerOffset = footer.dataOffset!;
  if (headerOffset < FOOTER_SIZE || headerOffset % SECTOR_SIZE !== 0 || headerOffset + HEADER_SIZE > footerOffset) {
    fail("corrupt", `VHD dynamic header offset ${headerOffset} is not a sector between the footer copy and the footer (at ${footerOffset})`, footerOffset);
  }
  const headerBytes = new Uint8Array(HEADER_SIZE);
  await readFully(file, headerOffset, headerBytes);
  const header = parseDynamicHeader(headerBytes, { ...ctx, offset: headerOffset });
  const entries = header.maxTableEntries;
  if (entries * header.blockSize < size) {
    fail("corrupt", `VHD block table of ${entries} entries of ${header.blockSize} bytes cannot hold the disk size ${size}`, headerOffset);
  }
  const t = header.tableOffset;
  const tableEnd = t + 4 * entries;
  if (t < FOOTER_SIZE || (t < headerOffset + HEADER_SIZE && tableEnd > headerOffset)) {
    fail("corrupt", `VHD block table at ${t} overlaps the footer copy or the dynamic header`, headerOffset);
  }
  if (tableEnd > footerOffset) fail("corrupt", `VHD file is truncated: the block table ends at ${tableEnd}, the footer is at ${footerOffset}`, t);
  if (footer.diskType === VhdDiskType.differencing && isNullUuid(header.parentUuid)) {
    fail("corrupt", "differencing VHD without a parent UUID", headerOffset);
  }
  const batBytes = new Uint8Array(4 * entries);
  await readFully(file, t, batBytes);
  const bmSize = bitmapSize(header.blockSize);
  const dataStart = Math.max(headerOffset + HEADER_SIZE, tableEnd);
  const bat = parseBat(batBytes, entries, { tableOffset: t, blockSize: header.blockSize, bitmapSize: bmSize, dataStart, dataEnd: footerOffset }, ctx);

  // Parent locators of a differencing image: their data must be in the file and clear of blocks.
  const locators: VhdLocatorInfo[] = [];
  if (footer.diskType === VhdDiskType.differencing) {
    const stride = bmSize + header.blockSize;
    for (const [i, l] of header.locators.entries()) {
      if (l.code === LocatorCode.none) continue;
      const end = l.dataOffset + l.dataLength;
      if (l.dataLength > 64 * 1024 || end > footerOffset || l.dataOffset < FOOTER_SIZE) {
        fail("corrupt", `VHD parent locator ${i} (${l.dataLength} bytes at ${l.dataOffset}) is not inside the file`, headerOffset);
      }
      for (let b = 0; b < bat.length; b++) {
        const e = bat[b]!;
        if (e === BLOCK_UNUSED) continue;
        const s = e * SECTOR_SIZE;
        if (l.dataLength > 0 && l.dataOffset < s + stride && end > s) fail("corrupt", `VHD parent locator ${i} overlaps block ${b}`, headerOffset);
      }
      const data = new Uint8Array(l.dataLength);
      await readFully(file, l.dataOffset, data);
      locators.push({ code: l.code, path: decodeLocator(l.code, data) });
    }
  }

  // Sector bitmaps of stored blocks, kept in memory so that presence is known without I/O.
  const sectors = header.blockSize / SECTOR_SIZE;
  const partial = new Map<number, Uint8Array>();
  const stored: number[] = [];
  for (let b = 0; b < bat.length; b++) if (bat[b] !== BLOCK_UNUSED) stored.push(b);
  const reading: Promise<void>[] = [];
  for (const b of stored) {
    reading.push(
      (async () => {
        const bm = new Uint8Array(bmSize);
        await readFully(file, bat[b]! * SECTOR_SIZE, bm);
        if (!isFull(bm, sectors)) partial.set(b, bm);
      })(),
    );
    // Bounded: the file's request queue limits what runs, this limits what waits in memory.
    if (reading.length >= 256) await Promise.all(reading.splice(0));
  }
  await Promise.all(reading);

  let copyMatches = false;
  if (hasFooterCookie(head)) copyMatches = same(head, tail);
  return { ...base, copyMatches, header, bat, partial, bitmapSize: bmSize, dataStart, locators };
}
