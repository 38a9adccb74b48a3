/**
 * The VHDX metadata log, only as far as a reader needs it: whether it holds entries that would
 * have to be replayed before the BAT and metadata can be trusted. We never replay (that writes);
 * such an image is refused.
 *
 * A header whose log GUID is null has an empty log. Otherwise the log is a circular buffer of
 * 4 KiB-aligned entries; an entry counts when its signature, log GUID, length, sequence number
 * and CRC-32C all hold. Any such entry is taken as needing replay (conservative: a fully
 * flushed log is normally reset to a null GUID by its writer).
 */
import { isNullUuid, uuidFromGuidBytes } from "../uuid.js";
import { crc32c } from "./crc32c.js";
import { KiB } from "./structures.js";

const ENTRY_SIGNATURE = 0x65676f6c; // "loge"
export const LOG_SECTOR = 4 * KiB;

/** Bytes `[at, at+n)` of the circular log `log`. */
function circular(log: Uint8Array, at: number, n: number): Uint8Array {
  if (at + n <= log.length) return log.subarray(at, at + n);
  const out = new Uint8Array(n);
  const first = log.length - at;
  out.set(log.subarray(at), 0);
  out.set(log.subarray(0, n - first), first);
  return out;
}

/** File-relative positions of the log entries that are valid for `logGuid` (empty: nothing to replay). */
export function validLogEntries(log: Uint8Array, logGuid: string): number[] {
  if (isNullUuid(logGuid)) return [];
  const found: number[] = [];
  for (let at = 0; at + 64 <= log.length; at += LOG_SECTOR) {
    const v = new DataView(log.buffer, log.byteOffset + at, 64);
    if (v.getUint32(0, true) !== ENTRY_SIGNATURE) continue;
    const length = v.getUint32(8, true);
    if (length < LOG_SECTOR || length % LOG_SECTOR || length > log.length) continue;
    if (v.getUint32(16, true) === 0 && v.getUint32(20, true) === 0) continue; // sequence number 0 is never valid
    if (uuidFromGuidBytes(log, at + 32) !== logGuid) continue;
    const entry = circular(log, at, length);
    let c = crc32c(entry.subarray(0, 4));
    c = crc32c(new Uint8Array(4), c);
    c = crc32c(entry.subarray(8), c);
    if (c === v.getUint32(4, true)) found.push(at);
  }
  return found;
}
