/**
 * Medium commands: READ/WRITE SECTORS, MULTIPLE and DMA (28- and 48-bit, CHS or LBA), READ
 * VERIFY, SEEK, FLUSH CACHE, READ NATIVE MAX ADDRESS; and the DMA engine that NCQ reuses.
 *
 * PIO reads fetch the medium in chunks (a whole number of DRQ blocks) and keep one chunk ahead,
 * so consecutive blocks within a chunk are handed out synchronously from pioBlockDone(): a BIOS
 * polling READ SECTORS does not wait a scheduler turn per sector. DMA overlaps the medium with
 * the guest-memory transfer one chunk deep in both directions.
 */
import type { Handler } from "./command-table.js";
import type { AtaDevice, Cmd } from "./device.js";
import { dmaNow } from "./dma-now.js";
import { LBA28_LIMIT } from "./identify.js";
import { attempt, describe, failedSector, mediumErrorBits, readSectors, SECTOR, writeSectors, type Settled } from "./medium-io.js";
import {
  chsToLba,
  count28,
  count48,
  DEVICE_LBA,
  ERROR,
  lba28,
  lba48,
  setChs,
  setLba28,
  setLba48,
  type Addressing,
} from "./task-file.js";
import type { DataDirection, DmaOutcome } from "./transport.js";

/** Sectors per medium read for PIO (a multiple of every multiple-mode block size). */
const PIO_CHUNK = 256;
/** Sectors per medium request and dmaTransfer call for DMA. */
export const DMA_CHUNK = 2048;

export interface Request {
  lba: number;
  count: number;
  addressing: Addressing;
}

/** Address and count of a read/write/verify command; undefined when a CHS address is outside the translation. */
export function decodeRequest(dev: AtaDevice, cmd: Cmd): Request | undefined {
  const tf = dev.tf;
  if (cmd.spec.lba48) return { lba: lba48(tf), count: count48(tf), addressing: "lba48" };
  const count = count28(tf);
  if (tf.device & DEVICE_LBA) return { lba: lba28(tf), count, addressing: "lba28" };
  const lba = chsToLba(tf, dev.settings.chs);
  return lba === undefined ? undefined : { lba, count, addressing: "chs" };
}

/** Decode and bounds-check; on failure the command is finished with IDNF and undefined returned. */
function checkedRequest(dev: AtaDevice, cmd: Cmd): Request | undefined {
  const req = decodeRequest(dev, cmd);
  if (!req) {
    dev.trace(`${cmd.spec.name}: CHS address outside the current translation`);
    dev.finishError(cmd, ERROR.IDNF);
    return undefined;
  }
  if (req.lba + req.count > dev.capacity) {
    dev.trace(`${cmd.spec.name}: LBA ${req.lba}+${req.count} beyond capacity ${dev.capacity}`);
    dev.finishError(cmd, ERROR.IDNF);
    return undefined;
  }
  return req;
}

export function rwCommand(o: { write: boolean; mode: "sectors" | "multiple" | "dma" }): Handler {
  return (dev, cmd) => {
    if (o.mode === "multiple" && dev.settings.multipleCount === 0) {
      dev.trace(`${cmd.spec.name} without SET MULTIPLE MODE`);
      dev.finishError(cmd, ERROR.ABRT);
      return;
    }
    const req = checkedRequest(dev, cmd);
    if (!req) return;
    if (o.write && dev.medium!.readOnly) {
      dev.trace(`${cmd.spec.name}: medium is read-only`);
      dev.finishError(cmd, ERROR.ABRT);
      return;
    }
    if (o.mode === "dma") return dmaCommand(dev, cmd, req, o.write);
    const block = o.mode === "multiple" ? dev.settings.multipleCount : 1;
    if (o.write) pioWrite(dev, cmd, req, block);
    else pioRead(dev, cmd, req, block);
  };
}

function pioRead(dev: AtaDevice, cmd: Cmd, req: Request, blockSectors: number): void {
  const medium = dev.medium!;
  let lba = req.lba; // next sector to hand out
  let left = req.count;
  let chunk: { lba: number; data: Uint8Array; used: number } | undefined;
  let ahead: { lba: number; count: number; result: Promise<Settled<Uint8Array>> } | undefined;

  const fetch = (at: number): typeof ahead => {
    const end = req.lba + req.count;
    const count = Math.min(PIO_CHUNK, end - at);
    return count > 0 ? { lba: at, count, result: readSectors(medium, at, count) } : undefined;
  };

  const step = (): void => {
    if (left === 0) {
      dev.finishOk(cmd, { interrupt: false }); // the last block's DRQ interrupt was the last one
      return;
    }
    if (!chunk && !ahead && medium.readSync) {
      // Synchronous medium (IDE on a page-cached file): the chunk is ready before this returns,
      // so a BIOS polling for DRQ never waits for an event-loop turn.
      const count = Math.min(PIO_CHUNK, req.lba + req.count - lba);
      const data = new Uint8Array(count * SECTOR);
      try {
        if (medium.readSync(lba * SECTOR, data)) chunk = { lba, data, used: 0 };
      } catch (e) {
        dev.trace(`${cmd.spec.name}: read error at LBA ${lba}: ${describe(e)}`);
        dev.finishError(cmd, mediumErrorBits(e, "read"), { lba: failedSector(e, lba, count), addressing: req.addressing });
        return;
      }
    }
    if (!chunk) {
      const next = ahead ?? fetch(lba)!;
      ahead = undefined;
      void next.result.then((r) => {
        if (!dev.live(cmd)) return;
        if (!r.ok) {
          dev.trace(`${cmd.spec.name}: read error at LBA ${next.lba}: ${describe(r.error)}`);
          const at = failedSector(r.error, next.lba, next.count);
          dev.finishError(cmd, mediumErrorBits(r.error, "read"), { lba: at, addressing: req.addressing });
          return;
        }
        chunk = { lba: next.lba, data: r.value, used: 0 };
        ahead = fetch(next.lba + next.count);
        dev.run(cmd, step);
      });
      return;
    }
    const n = Math.min(blockSectors, left);
    const block = chunk.data.subarray(chunk.used * SECTOR, (chunk.used + n) * SECTOR);
    chunk.used += n;
    if (chunk.used * SECTOR >= chunk.data.length) chunk = undefined;
    lba += n;
    left -= n;
    dev.pioIn(cmd, block, left === 0, step);
  };
  step();
}

function pioWrite(dev: AtaDevice, cmd: Cmd, req: Request, blockSectors: number): void {
  const medium = dev.medium!;
  let lba = req.lba;
  let left = req.count;
  const step = (): void => {
    if (left === 0) {
      void finishWrite(dev, cmd);
      return;
    }
    const n = Math.min(blockSectors, left);
    const block = new Uint8Array(n * SECTOR);
    dev.pioOut(cmd, block, n === left, () => {
      void writeSectors(medium, lba, block).then((r) => {
        if (!dev.live(cmd)) return;
        if (!r.ok) {
          dev.trace(`${cmd.spec.name}: write error at LBA ${lba}: ${describe(r.error)}`);
          const at = failedSector(r.error, lba, n);
          dev.finishError(cmd, mediumErrorBits(r.error, "write"), { lba: at, addressing: req.addressing });
          return;
        }
        lba += n;
        left -= n;
        dev.run(cmd, step);
      });
    });
  };
  step();
}

/** End a successful write; with the write cache off, the data must be on stable storage first. */
async function finishWrite(dev: AtaDevice, cmd: Cmd): Promise<void> {
  if (!dev.settings.writeCache) {
    const f = await attempt(() => dev.medium!.flush());
    if (!f.ok) {
      dev.trace(`${cmd.spec.name}: flush failed: ${describe(f.error)}`);
      dev.finishError(cmd, ERROR.ABRT);
      return;
    }
  }
  dev.finishOk(cmd);
}

/** What the DMA engine needs from its caller (a non-queued command or an NCQ slot). */
export interface DmaIo {
  alive(): boolean;
  /** undefined: the command was cancelled. */
  transfer(direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome | undefined>;
}

export type RwOutcome =
  | { ok: true }
  | { ok: false; error: number; lba?: number; dmaFault?: "short" | "fault" }
  | "cancelled";

/** Move `count` sectors at `lba` between the medium and guest memory by DMA. */
export async function dmaReadWrite(dev: AtaDevice, io: DmaIo, lba: number, count: number, write: boolean, flushAfter: boolean): Promise<RwOutcome> {
  const medium = dev.medium!;
  const dmaError = (out: DmaOutcome, n: number): RwOutcome => {
    const kind = out.fault ? "fault" : "short";
    dev.trace(`DMA ${kind}: moved ${out.bytes} of ${n * SECTOR} bytes`);
    return { ok: false, error: ERROR.ABRT, dmaFault: kind };
  };
  let left = count;
  if (!write) {
    let ahead = readSectors(medium, lba, Math.min(left, DMA_CHUNK));
    while (left > 0) {
      const n = Math.min(left, DMA_CHUNK);
      const r = await ahead;
      if (!io.alive()) return "cancelled";
      if (!r.ok) {
        dev.trace(`DMA read error at LBA ${lba}: ${describe(r.error)}`);
        return { ok: false, error: mediumErrorBits(r.error, "read"), lba: failedSector(r.error, lba, n) };
      }
      if (left > n) ahead = readSectors(medium, lba + n, Math.min(left - n, DMA_CHUNK));
      const out = await io.transfer("in", r.value);
      if (!out) return "cancelled";
      if (out.fault || out.bytes < r.value.length) return dmaError(out, n);
      lba += n;
      left -= n;
    }
    return { ok: true };
  }
  let writing: { lba: number; count: number; result: Promise<Settled<void>> } | undefined;
  const settleWrite = async (): Promise<RwOutcome | undefined> => {
    if (!writing) return undefined;
    const w = writing;
    writing = undefined;
    const r = await w.result;
    if (!io.alive()) return "cancelled";
    if (r.ok) return undefined;
    dev.trace(`DMA write error at LBA ${w.lba}: ${describe(r.error)}`);
    return { ok: false, error: mediumErrorBits(r.error, "write"), lba: failedSector(r.error, w.lba, w.count) };
  };
  while (left > 0) {
    const n = Math.min(left, DMA_CHUNK);
    const buf = new Uint8Array(n * SECTOR);
    const out = await io.transfer("out", buf);
    if (!out) return "cancelled";
    const failed = await settleWrite();
    if (failed) return failed;
    if (out.fault || out.bytes < buf.length) return dmaError(out, n);
    writing = { lba, count: n, result: writeSectors(medium, lba, buf) };
    lba += n;
    left -= n;
  }
  const failed = await settleWrite();
  if (failed) return failed;
  if (flushAfter) {
    const f = await attempt(() => medium.flush());
    if (!io.alive()) return "cancelled";
    if (!f.ok) {
      dev.trace(`flush after write failed: ${describe(f.error)}`);
      return { ok: false, error: ERROR.ABRT };
    }
  }
  return { ok: true };
}

function dmaCommand(dev: AtaDevice, cmd: Cmd, req: Request, write: boolean): void {
  const flushAfter = write && !dev.settings.writeCache;
  const rest = (lba: number, count: number): void => dev.run(cmd, () => dmaAsync(dev, cmd, { ...req, lba, count }, write, flushAfter));
  if (!dmaNow(dev, cmd, req, write, flushAfter, rest)) rest(req.lba, req.count);
}

async function dmaAsync(dev: AtaDevice, cmd: Cmd, req: Request, write: boolean, flushAfter: boolean): Promise<void> {
  const io: DmaIo = { alive: () => dev.live(cmd), transfer: (d, b) => dev.dma(cmd, d, b) };
  const r = await dmaReadWrite(dev, io, req.lba, req.count, write, flushAfter);
  if (r === "cancelled") return;
  if (r.ok) dev.finishOk(cmd);
  else dev.finishError(cmd, r.error, { lba: r.lba, addressing: req.addressing, dmaFault: r.dmaFault });
}

/** READ VERIFY SECTORS (EXT): read without transferring, to surface medium errors. */
export const verifyCommand: Handler = async (dev, cmd) => {
  const req = checkedRequest(dev, cmd);
  if (!req) return;
  let lba = req.lba;
  let left = req.count;
  while (left > 0) {
    const n = Math.min(left, DMA_CHUNK);
    const r = await readSectors(dev.medium!, lba, n);
    if (!dev.live(cmd)) return;
    if (!r.ok) {
      dev.trace(`${cmd.spec.name}: read error at LBA ${lba}: ${describe(r.error)}`);
      dev.finishError(cmd, mediumErrorBits(r.error, "read"), { lba: failedSector(r.error, lba, n), addressing: req.addressing });
      return;
    }
    lba += n;
    left -= n;
  }
  dev.finishOk(cmd);
};

/** SEEK: nothing moves; an address outside the medium is IDNF. */
export const seekCommand: Handler = (dev, cmd) => {
  const req = decodeRequest(dev, cmd);
  if (!req || req.lba >= dev.capacity) {
    dev.finishError(cmd, ERROR.IDNF);
    return;
  }
  dev.finishOk(cmd);
};

export const flushCommand: Handler = async (dev, cmd) => {
  const r = await attempt(() => dev.medium!.flush());
  if (!r.ok) {
    dev.trace(`${cmd.spec.name} failed: ${describe(r.error)}`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  dev.finishOk(cmd);
};

/** READ NATIVE MAX ADDRESS (EXT): the last LBA (no host protected area, so also the current max). */
export const nativeMaxCommand: Handler = (dev, cmd) => {
  const tf = dev.tf;
  const max = Math.max(0, dev.capacity - 1);
  if (cmd.spec.lba48) setLba48(tf, max);
  else if (tf.device & DEVICE_LBA) setLba28(tf, Math.min(max, LBA28_LIMIT));
  else {
    const c = dev.settings.chs;
    setChs(tf, Math.min(max, c.cylinders * c.heads * c.sectors - 1), c);
  }
  dev.finishOk(cmd);
};
