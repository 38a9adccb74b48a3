/**
 * DATA SET MANAGEMENT (06h) with the TRIM bit (ACS-2 7.10): a DMA data-out of `count` 512-byte
 * blocks of LBA range entries, each 8 bytes little-endian: LBA in bits 47:0, sector count in bits
 * 63:48 (0 = unused entry). Only when the attachment enables discard (otherwise aborted, and
 * IDENTIFY does not offer it).
 */
import type { Handler } from "./command-table.js";
import { attempt, describe, SECTOR } from "./medium-io.js";
import { count16, ERROR } from "./task-file.js";

export interface TrimRange {
  lba: number;
  count: number;
}

/** The non-empty range entries of a DSM payload. */
export function parseTrimRanges(payload: Uint8Array): TrimRange[] {
  const out: TrimRange[] = [];
  for (let o = 0; o + 8 <= payload.length; o += 8) {
    const count = payload[o + 6]! | payload[o + 7]! << 8;
    if (count === 0) continue;
    let lba = 0;
    for (let i = 5; i >= 0; i--) lba = lba * 256 + payload[o + i]!;
    out.push({ lba, count });
  }
  return out;
}

/** Encode ranges as a DSM payload (tests, and front ends that translate UNMAP). */
export function encodeTrimRanges(ranges: readonly TrimRange[], blocks = Math.max(1, Math.ceil(ranges.length / 64))): Uint8Array {
  const b = new Uint8Array(blocks * SECTOR);
  ranges.slice(0, blocks * 64).forEach((r, i) => {
    let lba = r.lba;
    for (let j = 0; j < 6; j++) {
      b[8 * i + j] = lba % 256;
      lba = Math.floor(lba / 256);
    }
    b[8 * i + 6] = r.count & 0xff;
    b[8 * i + 7] = r.count >> 8 & 0xff;
  });
  return b;
}

export const dsmCommand: Handler = async (dev, cmd) => {
  const tf = dev.tf;
  const blocks = count16(tf);
  if (!dev.config.discard) {
    dev.trace("DATA SET MANAGEMENT: discard is off for this attachment");
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  if ((tf.features & 0x01) === 0 || blocks === 0 || blocks > dev.config.maxDsmBlocks) {
    dev.trace(`DATA SET MANAGEMENT: features ${tf.features}, ${blocks} blocks not supported`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  const medium = dev.medium!;
  if (medium.readOnly) {
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  const payload = new Uint8Array(blocks * SECTOR);
  const out = await dev.dma(cmd, "out", payload);
  if (!out) return;
  if (out.fault || out.bytes < payload.length) {
    dev.finishError(cmd, ERROR.ABRT, { dmaFault: out.fault ? "fault" : "short" });
    return;
  }
  const ranges = parseTrimRanges(payload);
  const bad = ranges.find((r) => r.lba + r.count > dev.capacity);
  if (bad) {
    dev.trace(`DATA SET MANAGEMENT: range ${bad.lba}+${bad.count} beyond capacity ${dev.capacity}`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  for (const r of ranges) {
    const d = await attempt(() => medium.discard(r.lba * SECTOR, r.count * SECTOR));
    if (!dev.live(cmd)) return;
    if (!d.ok) {
      dev.trace(`DATA SET MANAGEMENT: discard ${r.lba}+${r.count} failed: ${describe(d.error)}`);
      dev.finishError(cmd, ERROR.ABRT);
      return;
    }
  }
  dev.finishOk(cmd);
};
