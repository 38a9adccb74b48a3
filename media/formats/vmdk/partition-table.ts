/**
 * A host disk's partition table, read for raw host-disk VMDKs (raw-disk.ts): which partitions it
 * has, numbered as Linux and VirtualBox number them, and which sectors hold the tables.
 *
 *   MBR: four primary entries in sector 0 (partitions 1-4). An extended partition (type 05h, 0Fh
 *        or 85h) holds a chain of EBRs: in each, entry 1 is a logical partition (its start
 *        relative to that EBR) and entry 2 links to the next EBR (relative to the extended
 *        partition's start). Logical partitions are numbered 5, 6, ... in chain order; an EBR
 *        without a partition takes no number.
 *   GPT: a protective MBR (an EEh entry), the header at LBA 1 ("EFI PART"; CRC-32 over the header
 *        and over the entry array) and its backup (entry array, then header) at the header's
 *        alternate LBA, normally the disk's last sector. Partition N is entry N-1; an unused
 *        entry (all-zero type GUID) leaves its number unused.
 *
 * 512-byte sectors only. Everything is checked before a descriptor points at the disk: a bad
 * CRC, an EBR chain that loops or leaves its extended partition, partitions overlapping each
 * other or a table → "corrupt".
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { uuidFromGuidBytes } from "../uuid.js";
import { readFully } from "./util.js";

const SECTOR = 512;
/** MBR types of an extended partition (CHS, LBA, Linux). */
const EXTENDED = new Set([0x05, 0x0f, 0x85]);
const PROTECTIVE = 0xee;
/** Linux's default limit of partitions per disk: a longer EBR chain is not worth following. */
const MAX_EBRS = 256;
/** Far above the usual 16 KiB; bounds what a damaged header can make us read. */
const MAX_GPT_ARRAY = 4 << 20;

export interface HostPartition {
  number: number;
  /** First sector. */
  start: number;
  sectors: number;
  /** The MBR type as two hex digits, or the GPT type GUID. */
  type: string;
}

export interface SectorRange {
  start: number;
  sectors: number;
}

export interface PartitionTable {
  scheme: "mbr" | "gpt";
  /** Partitions holding data (not extended partitions), by start. */
  partitions: HostPartition[];
  /** Numbers of MBR extended partitions: containers of logical partitions, not data. */
  extended: number[];
  /** Sectors holding the tables (MBR, EBRs, GPT headers and entry arrays), by start, disjoint. */
  tables: SectorRange[];
}

/** Reads whole sectors, refusing ranges past the disk's end. */
export type SectorReader = (lba: number, sectors: number) => Promise<Uint8Array>;

interface Labelled extends SectorRange {
  what: string;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** The standard CRC-32 (reflected 0xEDB88320, as zlib and the UEFI GPT use). */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = (c >>> 8) ^ CRC_TABLE[(c ^ data[i]!) & 0xff]!;
  return ~c >>> 0;
}

function corrupt(message: string, path: string): MediumError {
  return new MediumError("corrupt", message, { path });
}

const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);
const hasSignature = (s: Uint8Array): boolean => s[510] === 0x55 && s[511] === 0xaa;

interface MbrEntry {
  type: number;
  start: number;
  sectors: number;
}

function mbrEntries(s: Uint8Array): MbrEntry[] {
  const v = new DataView(s.buffer, s.byteOffset, SECTOR);
  return [0, 1, 2, 3].map((i) => {
    const e = 446 + 16 * i;
    return { type: s[e + 4]!, start: v.getUint32(e + 8, true), sectors: v.getUint32(e + 12, true) };
  });
}

/** Ranges inside the disk that do not overlap; sorted by start. */
function checkDisjoint(ranges: Labelled[], totalSectors: number, path: string): void {
  ranges.sort((a, b) => a.start - b.start);
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!;
    if (r.sectors <= 0 || r.start + r.sectors > totalSectors) {
      throw corrupt(`${r.what} (sectors ${r.start}+${r.sectors}) lies outside the disk (${totalSectors} sectors)`, path);
    }
    const prev = ranges[i - 1];
    if (prev && r.start < prev.start + prev.sectors) {
      throw corrupt(`${r.what} (sectors ${r.start}+${r.sectors}) overlaps ${prev.what} (sectors ${prev.start}+${prev.sectors})`, path);
    }
  }
}

/** MBR primary partitions and the logical ones in each extended partition's EBR chain. */
export async function parseMbr(sector0: Uint8Array, read: SectorReader, totalSectors: number, path: string): Promise<PartitionTable> {
  if (!hasSignature(sector0)) throw new MediumError("invalid-format", "no MBR partition table (55AAh) in sector 0", { path });
  const primaries = mbrEntries(sector0)
    .map((e, i) => ({ ...e, number: i + 1 }))
    .filter((e) => e.type !== 0 && e.sectors > 0);
  // The MBR itself is a range too, so a primary starting at sector 0 counts as an overlap.
  checkDisjoint([{ start: 0, sectors: 1, what: "the MBR" }, ...primaries.map((p) => ({ start: p.start, sectors: p.sectors, what: `partition ${p.number}` }))], totalSectors, path);
  const hex = (t: number): string => t.toString(16).padStart(2, "0");
  const partitions: HostPartition[] = primaries.filter((p) => !EXTENDED.has(p.type)).map((p) => ({ number: p.number, start: p.start, sectors: p.sectors, type: hex(p.type) }));
  const tables: Labelled[] = [{ start: 0, sectors: 1, what: "the MBR" }];
  const extended: number[] = [];
  let next = 5;
  for (const x of primaries.filter((p) => EXTENDED.has(p.type))) {
    extended.push(x.number);
    const end = x.start + x.sectors;
    const seen = new Set<number>();
    for (let ebr = x.start; ; ) {
      if (seen.has(ebr)) throw corrupt(`the EBR chain of extended partition ${x.number} loops back to sector ${ebr}`, path);
      if (seen.size >= MAX_EBRS) throw new MediumError("unsupported", `extended partition ${x.number} has more than ${MAX_EBRS} EBRs`, { path });
      seen.add(ebr);
      tables.push({ start: ebr, sectors: 1, what: `the EBR at sector ${ebr}` });
      const s = await read(ebr, 1);
      if (!hasSignature(s)) {
        if (ebr === x.start && isZero(s)) break; // an extended partition with no logical ones yet
        throw corrupt(`no EBR (55AAh) at sector ${ebr} in the chain of extended partition ${x.number}`, path);
      }
      const [data, link] = mbrEntries(s) as [MbrEntry, MbrEntry];
      if (data.type !== 0 && data.sectors > 0) {
        const start = ebr + data.start;
        if (EXTENDED.has(data.type)) throw corrupt(`the EBR at sector ${ebr} has a link where its logical partition belongs`, path);
        if (data.start === 0 || start + data.sectors > end) {
          throw corrupt(`logical partition ${next} (sectors ${start}+${data.sectors}) lies outside extended partition ${x.number} (sectors ${x.start}+${x.sectors})`, path);
        }
        partitions.push({ number: next++, start, sectors: data.sectors, type: hex(data.type) });
      }
      if (!EXTENDED.has(link.type) || link.sectors === 0) break;
      const from = ebr;
      ebr = x.start + link.start;
      if (ebr >= end) throw corrupt(`the EBR at sector ${from} links to sector ${ebr}, outside extended partition ${x.number}`, path);
    }
  }
  return finish("mbr", partitions, extended, tables, totalSectors, path);
}

interface GptHeader {
  alternate: number;
  firstUsable: number;
  lastUsable: number;
  entryLba: number;
  count: number;
  entrySize: number;
  entriesCrc: number;
  entries: Uint8Array;
}

/** A GPT header and its entry array, both CRCs checked. */
async function readGptHeader(read: SectorReader, lba: number, which: string, totalSectors: number, path: string): Promise<GptHeader> {
  const s = await read(lba, 1);
  const v = new DataView(s.buffer, s.byteOffset, SECTOR);
  const u64 = (o: number): number => {
    const hi = v.getUint32(o + 4, true);
    if (hi > 0x1fffff) throw corrupt(`the ${which} GPT header holds an LBA beyond 2^53`, path);
    return hi * 2 ** 32 + v.getUint32(o, true);
  };
  if (String.fromCharCode(...s.subarray(0, 8)) !== "EFI PART") {
    if (lba === 1 && totalSectors > 8) {
      const s4k = await read(8, 1); // LBA 1 of a disk with 4096-byte sectors
      if (String.fromCharCode(...s4k.subarray(0, 8)) === "EFI PART") throw new MediumError("unsupported", "the GPT is laid out for 4096-byte sectors; only 512-byte sectors are supported", { path });
    }
    throw corrupt(`no ${which} GPT header ("EFI PART") at LBA ${lba}`, path);
  }
  const headerSize = v.getUint32(12, true);
  if (headerSize < 92 || headerSize > SECTOR) throw corrupt(`the ${which} GPT header's size ${headerSize} is not 92-512`, path);
  const copy = s.slice(0, headerSize);
  copy.fill(0, 16, 20); // the CRC is computed with its own field zeroed
  if (crc32(copy) !== v.getUint32(16, true)) throw corrupt(`the ${which} GPT header's CRC-32 is wrong`, path);
  if (u64(24) !== lba) throw corrupt(`the ${which} GPT header at LBA ${lba} says it is at LBA ${u64(24)}`, path);
  const h = {
    alternate: u64(32),
    firstUsable: u64(40),
    lastUsable: u64(48),
    entryLba: u64(72),
    count: v.getUint32(80, true),
    entrySize: v.getUint32(84, true),
    entriesCrc: v.getUint32(88, true),
  };
  // UEFI: 128 x 2^n bytes per entry.
  if (h.entrySize < 128 || (h.entrySize & (h.entrySize - 1)) !== 0) throw corrupt(`the ${which} GPT entry size ${h.entrySize} is not 128 x 2^n`, path);
  const bytes = h.count * h.entrySize;
  if (bytes > MAX_GPT_ARRAY) throw new MediumError("unsupported", `the ${which} GPT entry array is ${bytes} bytes (over ${MAX_GPT_ARRAY})`, { path });
  if (h.firstUsable > h.lastUsable + 1 || h.lastUsable >= totalSectors) {
    throw corrupt(`the ${which} GPT's usable sectors ${h.firstUsable}-${h.lastUsable} do not fit the disk (${totalSectors} sectors)`, path);
  }
  const sectors = Math.max(1, Math.ceil(bytes / SECTOR));
  if (h.entryLba + sectors > totalSectors) throw corrupt(`the ${which} GPT entry array (LBA ${h.entryLba}+${sectors}) lies outside the disk`, path);
  const entries = (await read(h.entryLba, sectors)).subarray(0, bytes);
  if (crc32(entries) !== h.entriesCrc) throw corrupt(`the ${which} GPT entry array's CRC-32 is wrong`, path);
  return { ...h, entries };
}

/** A GPT disk (sector 0 holds a protective MBR): the primary header and entries, the backup checked too. */
export async function parseGpt(read: SectorReader, totalSectors: number, path: string): Promise<PartitionTable> {
  const primary = await readGptHeader(read, 1, "primary", totalSectors, path);
  if (primary.alternate >= totalSectors || primary.alternate <= 1) {
    throw corrupt(`the backup GPT header's LBA ${primary.alternate} lies outside the disk (${totalSectors} sectors)`, path);
  }
  const backup = await readGptHeader(read, primary.alternate, "backup", totalSectors, path);
  if (backup.alternate !== 1 || backup.entriesCrc !== primary.entriesCrc || backup.count !== primary.count || backup.entrySize !== primary.entrySize) {
    throw corrupt(`the backup GPT at LBA ${primary.alternate} does not match the primary one`, path);
  }
  const arraySectors = Math.max(1, Math.ceil((primary.count * primary.entrySize) / SECTOR));
  const tables: Labelled[] = [
    { start: 0, sectors: 1, what: "the protective MBR" },
    { start: 1, sectors: 1, what: "the GPT header" },
    { start: primary.entryLba, sectors: arraySectors, what: "the GPT entry array" },
    { start: backup.entryLba, sectors: arraySectors, what: "the backup GPT entry array" },
    { start: primary.alternate, sectors: 1, what: "the backup GPT header" },
  ];
  const e = primary.entries;
  const v = new DataView(e.buffer, e.byteOffset, e.length);
  const partitions: HostPartition[] = [];
  for (let i = 0; i < primary.count; i++) {
    const o = i * primary.entrySize;
    if (isZero(e.subarray(o, o + 16))) continue; // unused entry
    const lba = (at: number): number => v.getUint32(at + 4, true) * 2 ** 32 + v.getUint32(at, true);
    const first = lba(o + 32);
    const last = lba(o + 40); // inclusive
    if (last < first || first < primary.firstUsable || last > primary.lastUsable) {
      throw corrupt(`GPT partition ${i + 1} (LBA ${first}-${last}) lies outside the usable sectors ${primary.firstUsable}-${primary.lastUsable}`, path);
    }
    partitions.push({ number: i + 1, start: first, sectors: last - first + 1, type: uuidFromGuidBytes(e, o) });
  }
  return finish("gpt", partitions, [], tables, totalSectors, path);
}

function finish(scheme: "mbr" | "gpt", partitions: HostPartition[], extended: number[], tables: Labelled[], totalSectors: number, path: string): PartitionTable {
  checkDisjoint([...tables, ...partitions.map((p) => ({ start: p.start, sectors: p.sectors, what: `partition ${p.number}` }))], totalSectors, path);
  partitions.sort((a, b) => a.start - b.start);
  tables.sort((a, b) => a.start - b.start);
  return { scheme, partitions, extended, tables: tables.map(({ start, sectors }) => ({ start, sectors })) };
}

/** The partition table of a disk of `totalSectors` sectors: MBR (with logical partitions) or GPT. */
export async function readPartitionTable(file: FileIo, totalSectors: number): Promise<PartitionTable> {
  const read: SectorReader = async (lba, sectors) => {
    if (lba < 0 || lba + sectors > totalSectors) throw corrupt(`sectors ${lba}+${sectors} lie past the disk's end (${totalSectors} sectors)`, file.path);
    const buf = new Uint8Array(sectors * SECTOR);
    if ((await readFully(file, lba * SECTOR, buf)) < buf.length) throw corrupt(`the disk ends before sector ${lba + sectors}`, file.path);
    return buf;
  };
  const sector0 = await read(0, 1);
  if (hasSignature(sector0) && mbrEntries(sector0).some((e) => e.type === PROTECTIVE)) return parseGpt(read, totalSectors, file.path);
  return parseMbr(sector0, read, totalSectors, file.path);
}
