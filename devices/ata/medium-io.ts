/**
 * Medium access for the command modules: promises that never reject, and the mapping from a
 * MediumError to ATA error bits (a read error is UNC, a request outside the medium IDNF, anything
 * else ABRT), with the failing sector for the address registers.
 */
import { MediumError, type BlockBackend } from "../../media/block.js";
import { ERROR } from "./task-file.js";

export const SECTOR = 512;

/** A settled operation: never rejects. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

export function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  try {
    return p.then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
  } catch (error) {
    return Promise.resolve({ ok: false as const, error });
  }
}

/** Run a medium call, catching a synchronous throw as well as a rejection. */
export function attempt<T>(fn: () => Promise<T>): Promise<Settled<T>> {
  try {
    return settle(fn());
  } catch (error) {
    return Promise.resolve({ ok: false as const, error });
  }
}

/** Read `count` sectors at `lba` into a new buffer. */
export function readSectors(medium: BlockBackend, lba: number, count: number): Promise<Settled<Uint8Array>> {
  return attempt(async () => {
    const buf = new Uint8Array(count * SECTOR);
    await medium.read(lba * SECTOR, buf);
    return buf;
  });
}

export function writeSectors(medium: BlockBackend, lba: number, data: Uint8Array): Promise<Settled<void>> {
  return attempt(() => medium.write(lba * SECTOR, data));
}

/** Error register bits for a failed medium operation. */
export function mediumErrorBits(e: unknown, op: "read" | "write" | "other"): number {
  if (e instanceof MediumError && e.kind === "out-of-bounds") return ERROR.IDNF;
  if (op === "read") return ERROR.UNC;
  return ERROR.ABRT;
}

/** The sector a medium error points at, if its offset lies inside [lba, lba + count). */
export function failedSector(e: unknown, lba: number, count: number): number {
  if (e instanceof MediumError && e.offset !== undefined) {
    const s = Math.floor(e.offset / SECTOR);
    if (s >= lba && s < lba + count) return s;
  }
  return lba;
}

export function describe(e: unknown): string {
  if (e instanceof MediumError) return `${e.kind}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

export function hex(n: number): string {
  return n.toString(16).padStart(2, "0") + "h";
}
