/**
 * The VHDX metadata log (MS-VHDX 2.3): finding the active sequence and turning it into the
 * writes a replay would make. Pure: the caller reads the log region and applies the result in
 * memory (log-overlay.ts); nothing here writes.
 *
 * - The log is a circular buffer of 4 KiB sectors. An entry is a 64-byte header, 32-byte
 *   descriptors (header and descriptors fill whole sectors), then one data sector per data
 *   descriptor. An entry counts when its signature, log GUID, length, non-zero sequence number and
 *   CRC-32C (over the whole entry, checksum field as zero) hold; anything else is a torn or stale
 *   entry and is ignored.
 * - The newest such entry is the head. Its Tail field names the first entry of its sequence; the
 *   entries from there to the head must all count, follow one another in the buffer and have
 *   consecutive sequence numbers. Entries newer than the last intact one (a torn write at a
 *   crash) are simply not there; but an intact head whose sequence is broken means the log was
 *   damaged after it was written, and is refused (`corrupt`) rather than replayed in part.
 * - Replay checks (corrupt otherwise): every descriptor well formed with the entry's sequence
 *   number; the file at least FlushedFileOffset long (else it was truncated); writes only inside
 *   max(file size, LastFileOffset), never to the file identifier, the headers or the log itself.
 */
import { uuidFromGuidBytes } from "../uuid.js";
import { crc32c } from "./crc32c.js";
import { KiB, REGION_TABLE1_OFFSET, VhdxParseError } from "./structures.js";

export const LOG_SECTOR = 4 * KiB;
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;
export const LOG_SIGNATURE = { entry: 0x65676f6c, zero: 0x6f72657a, desc: 0x63736564, data: 0x61746164 } as const; // "loge" "zero" "desc" "data"

/** The log may never write the file identifier or the headers (the headers locate the log). */
const PROTECTED_END = REGION_TABLE1_OFFSET;

export interface LogEntryHeader {
  /** Offset of the entry in the log region. */
  at: number;
  entryLength: number;
  tail: number;
  sequence: bigint;
  descriptorCount: number;
  flushedFileOffset: number;
  lastFileOffset: number;
}

/** One write of a replay: a 4 KiB sector's new contents, or a run of zeros. */
export type LogWrite = { fileOffset: number; data: Uint8Array } | { fileOffset: number; zeroLength: number };

export interface LogReplay {
  /** The active sequence, oldest first. */
  entries: LogEntryHeader[];
  /** In replay order. */
  writes: LogWrite[];
  /** The file size after replay: the file, grown to the largest LastFileOffset of the sequence. */
  fileSize: number;
}

const corrupt = (m: string): VhdxParseError => new VhdxParseError("corrupt", m);

/** u64 as a number, NaN beyond 2^53 (never a valid offset). */
function u64(v: DataView, at: number): number {
  const hi = v.getUint32(at + 4, true);
  return hi < 0x200000 ? hi * 2 ** 32 + v.getUint32(at, true) : NaN;
}

/** Bytes [at, at+n) of the circular log (a view when they do not wrap). */
function circular(log: Uint8Array, at: number, n: number): Uint8Array {
  if (at + n <= log.length) return log.subarray(at, at + n);
  const out = new Uint8Array(n);
  const first = log.length - at;
  out.set(log.subarray(at), 0);
  out.set(log.subarray(0, n - first), first);
  return out;
}

/** Sectors holding the header and `count` descriptors. */
export function descriptorSectors(count: number): number {
  return Math.ceil((LOG_ENTRY_HEADER_SIZE + count * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR);
}

/** The entry header at `at` if the entry counts (see the file comment), else null. */
export function readLogEntry(log: Uint8Array, at: number, logGuid: string): LogEntryHeader | null {
  const v = new DataView(log.buffer, log.byteOffset + at, LOG_ENTRY_HEADER_SIZE);
  if (v.getUint32(0, true) !== LOG_SIGNATURE.entry) return null;
  const entryLength = v.getUint32(8, true);
  if (entryLength < LOG_SECTOR || entryLength % LOG_SECTOR || entryLength > log.length) return null;
  const sequence = v.getBigUint64(16, true);
  if (sequence === 0n) return null;
  if (uuidFromGuidBytes(log, at + 32) !== logGuid) return null;
  const descriptorCount = v.getUint32(24, true);
  if (descriptorSectors(descriptorCount) > entryLength / LOG_SECTOR) return null;
  const entry = circular(log, at, entryLength);
  let c = crc32c(entry.subarray(0, 4));
  c = crc32c(new Uint8Array(4), c);
  if (crc32c(entry.subarray(8), c) !== v.getUint32(4, true)) return null;
  return {
    at,
    entryLength,
    tail: v.getUint32(12, true),
    sequence,
    descriptorCount,
    flushedFileOffset: u64(v, 48),
    lastFileOffset: u64(v, 56),
  };
}

/** The writes of one entry, validated (corrupt when malformed: the entry's checksum held). */
function entryWrites(log: Uint8Array, h: LogEntryHeader): LogWrite[] {
  const entry = circular(log, h.at, h.entryLength);
  const v = new DataView(entry.buffer, entry.byteOffset, entry.byteLength);
  const where = `log entry ${h.sequence} (at ${h.at} in the log)`;
  const out: LogWrite[] = [];
  let dataSector = descriptorSectors(h.descriptorCount);
  for (let i = 0; i < h.descriptorCount; i++) {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    const signature = v.getUint32(d, true);
    const fileOffset = u64(v, d + 16);
    if (v.getBigUint64(d + 24, true) !== h.sequence) throw corrupt(`${where}: descriptor ${i} has another sequence number`);
    if (!(fileOffset % LOG_SECTOR === 0)) throw corrupt(`${where}: descriptor ${i} targets ${fileOffset}, not a 4 KiB boundary`);
    if (signature === LOG_SIGNATURE.zero) {
      const zeroLength = u64(v, d + 8);
      if (!(zeroLength % LOG_SECTOR === 0)) throw corrupt(`${where}: zero descriptor ${i} has length ${zeroLength}, not a multiple of 4 KiB`);
      out.push({ fileOffset, zeroLength });
    } else if (signature === LOG_SIGNATURE.desc) {
      if ((dataSector + 1) * LOG_SECTOR > h.entryLength) throw corrupt(`${where}: data descriptor ${i} has no data sector`);
      const s = entry.subarray(dataSector * LOG_SECTOR, (dataSector + 1) * LOG_SECTOR);
      const sv = new DataView(s.buffer, s.byteOffset, LOG_SECTOR);
      const seq = (BigInt(sv.getUint32(4, true)) << 32n) | BigInt(sv.getUint32(LOG_SECTOR - 4, true));
      if (sv.getUint32(0, true) !== LOG_SIGNATURE.data || seq !== h.sequence) throw corrupt(`${where}: data sector ${dataSector} is not the one descriptor ${i} needs`);
      // The sector's first 8 and last 4 bytes live in the descriptor (the data sector's own
      // signature and sequence number take their place).
      const data = new Uint8Array(LOG_SECTOR);
      data.set(entry.subarray(d + 8, d + 16), 0);
      data.set(s.subarray(8, LOG_SECTOR - 4), 8);
      data.set(entry.subarray(d + 4, d + 8), LOG_SECTOR - 4);
      out.push({ fileOffset, data });
      dataSector++;
    } else {
      throw corrupt(`${where}: descriptor ${i} has an unknown signature 0x${signature.toString(16)}`);
    }
  }
  return out;
}

export interface LogPlace {
  logGuid: string;
  /** Where the log region is in the file (it must not write itself). */
  logOffset: number;
  fileSize: number;
}

/**
 * The replay the log `log` (the whole log region) asks for, or null when it holds no entry for
 * this log GUID (an empty log: nothing was logged before a crash, or it was already replayed).
 * Throws VhdxParseError("corrupt") as described in the file comment.
 */
export function findLogReplay(log: Uint8Array, place: LogPlace): LogReplay | null {
  const present = new Map<number, LogEntryHeader>();
  let head: LogEntryHeader | undefined;
  for (let at = 0; at + LOG_SECTOR <= log.length; at += LOG_SECTOR) {
    const h = readLogEntry(log, at, place.logGuid);
    if (!h) continue;
    present.set(at, h);
    if (!head || h.sequence > head.sequence) head = h;
  }
  if (!head) return null;

  // Walk the head's sequence from its tail.
  const entries: LogEntryHeader[] = [];
  const broken = (why: string) =>
    corrupt(`the log's newest entry (sequence ${head!.sequence}, at ${head!.at} in the log) cannot be replayed: ${why}`);
  if (head.tail % LOG_SECTOR || head.tail >= log.length) throw broken(`its tail ${head.tail} is not a log sector`);
  let span = 0;
  for (let at = head.tail; ; ) {
    const e = present.get(at);
    if (!e) throw broken(`the entry at ${at} in its sequence is missing or damaged`);
    const prev = entries[entries.length - 1];
    if (prev && e.sequence !== prev.sequence + 1n) throw broken(`the entry at ${at} has sequence ${e.sequence}, not ${prev.sequence + 1n}`);
    entries.push(e);
    span += e.entryLength;
    if (span > log.length) throw broken("its sequence is longer than the log");
    if (e === head) break;
    at = (at + e.entryLength) % log.length;
  }

  // Replay checks.
  let fileSize = place.fileSize;
  for (const e of entries) {
    if (!(e.flushedFileOffset <= place.fileSize)) {
      throw corrupt(`log entry ${e.sequence} says the file was at least ${e.flushedFileOffset} bytes, but it is ${place.fileSize}: it was truncated`);
    }
    if (!Number.isSafeInteger(e.lastFileOffset)) throw corrupt(`log entry ${e.sequence} has last file offset ${e.lastFileOffset}`);
    fileSize = Math.max(fileSize, e.lastFileOffset);
  }
  const writes: LogWrite[] = [];
  const logEnd = place.logOffset + log.length;
  for (const e of entries) {
    for (const w of entryWrites(log, e)) {
      const length = "data" in w ? LOG_SECTOR : w.zeroLength;
      const end = w.fileOffset + length;
      const what = `log entry ${e.sequence} writes ${w.fileOffset}+${length}`;
      if (!(end <= fileSize)) throw corrupt(`${what}, outside the file (${fileSize} bytes after replay)`);
      if (w.fileOffset < PROTECTED_END) throw corrupt(`${what}, into the file identifier or headers`);
      if (w.fileOffset < logEnd && place.logOffset < end) throw corrupt(`${what}, into the log itself`);
      writes.push(w);
    }
  }
  return { entries, writes, fileSize };
}
