/**
 * Hand-built VHDX log entries for tests (pure, in memory), from the MS-VHDX 2.3 tables: a
 * 64-byte entry header, 32-byte zero and data descriptors filling whole 4 KiB sectors, one data
 * sector per data descriptor (its first 8 and last 4 bytes kept in the descriptor), CRC-32C over
 * the whole entry. qemu-img never leaves a log behind, so replay is tested with these.
 */
import { uuidToGuidBytes } from "../uuid.js";
import { crc32c } from "./crc32c.js";
import { LOG_SECTOR, LOG_SIGNATURE, descriptorSectors } from "./log.js";
import { HEADER1_OFFSET, HEADER2_OFFSET, serializeHeader, type VhdxHeader } from "./structures.js";

export type LogEntryWrite = { at: number; data: Uint8Array } | { at: number; zero: number };

export interface LogEntrySpec {
  sequence: bigint | number;
  /** Offset in the log of the first entry of this entry's sequence (itself for the first). */
  tail: number;
  logGuid: string;
  writes: LogEntryWrite[];
  flushedFileOffset: number;
  lastFileOffset: number;
  /** Override the descriptor sequence number of descriptor `i` (to make a malformed entry). */
  badDescriptorSequence?: number;
}

const setU64 = (v: DataView, at: number, n: bigint | number) => v.setBigUint64(at, BigInt(n), true);

/** The entry's bytes, checksummed. */
export function encodeLogEntry(spec: LogEntrySpec): Uint8Array {
  const seq = BigInt(spec.sequence);
  const dataCount = spec.writes.filter((w) => "data" in w).length;
  const descSectors = descriptorSectors(spec.writes.length);
  const out = new Uint8Array((descSectors + dataCount) * LOG_SECTOR);
  const v = new DataView(out.buffer);
  v.setUint32(0, LOG_SIGNATURE.entry, true);
  v.setUint32(8, out.length, true);
  v.setUint32(12, spec.tail, true);
  setU64(v, 16, seq);
  v.setUint32(24, spec.writes.length, true);
  uuidToGuidBytes(spec.logGuid, out, 32);
  setU64(v, 48, spec.flushedFileOffset);
  setU64(v, 56, spec.lastFileOffset);
  let sector = descSectors;
  spec.writes.forEach((w, i) => {
    const d = 64 + 32 * i;
    setU64(v, d + 16, w.at);
    setU64(v, d + 24, spec.badDescriptorSequence === i ? seq + 1n : seq);
    if ("zero" in w) {
      v.setUint32(d, LOG_SIGNATURE.zero, true);
      setU64(v, d + 8, w.zero);
      return;
    }
    if (w.data.length !== LOG_SECTOR) throw new RangeError("a data write is one 4 KiB sector");
    v.setUint32(d, LOG_SIGNATURE.desc, true);
    out.set(w.data.subarray(LOG_SECTOR - 4), d + 4); // trailing bytes
    out.set(w.data.subarray(0, 8), d + 8); // leading bytes
    const s = sector * LOG_SECTOR;
    v.setUint32(s, LOG_SIGNATURE.data, true);
    v.setUint32(s + 4, Number(seq >> 32n), true);
    out.set(w.data.subarray(8, LOG_SECTOR - 4), s + 8);
    v.setUint32(s + LOG_SECTOR - 4, Number(seq & 0xffffffffn), true);
    sector++;
  });
  v.setUint32(4, crc32c(out), true);
  return out;
}

/** Copy `entry` into the circular log of `file` at offset `at` of the log. */
export function putLogEntry(file: Uint8Array, log: { offset: number; length: number }, at: number, entry: Uint8Array): void {
  for (let i = 0; i < entry.length; i++) file[log.offset + ((at + i) % log.length)] = entry[i]!;
}

/** Make `header` (with `logGuid`) current: both copies rewritten, checksummed. */
export function setHeader(file: Uint8Array, header: VhdxHeader): void {
  file.set(serializeHeader(header), HEADER1_OFFSET);
  file.set(serializeHeader({ ...header, sequenceNumber: header.sequenceNumber - 1 }), HEADER2_OFFSET);
}

/** A copy of the 4 KiB sector of `file` at `offset`. */
export function sectorAt(file: Uint8Array, offset: number): Uint8Array {
  return file.slice(offset, offset + LOG_SECTOR);
}
