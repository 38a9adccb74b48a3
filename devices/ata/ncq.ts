/**
 * Native Command Queuing for AHCI (SATA 2.6 / ACS-2 13.6): READ/WRITE FPDMA QUEUED (60h/61h)
 * decoding and execution, and the NCQ command error log (READ LOG EXT page 10h).
 *
 * The AHCI port owns the queue (PxSACT/PxCI, SDB FISes, aborting the other slots after an error);
 * the core executes one queued command at a time per call, many calls in flight at once, and
 * records the first error in the log. Until the host reads page 10h, new queued commands are
 * aborted (the device stops accepting them after an NCQ error).
 */
import type { AtaDevice } from "./device.js";
import { dmaReadWrite, type DmaIo } from "./rw.js";
import { putSectorChecksum } from "./smart.js";
import { ERROR, lba48, STATUS, type TaskFile } from "./task-file.js";
import type { AtaDmaTransport, DmaOutcome } from "./transport.js";

export const READ_FPDMA_QUEUED = 0x60;
export const WRITE_FPDMA_QUEUED = 0x61;

export interface FpdmaCommand {
  /** Queue tag (count bits 7:3). */
  tag: number;
  write: boolean;
  lba: number;
  /** Sectors (features 15:0; 0 means 65536). */
  count: number;
  /** Forced unit access (device bit 7): write through to stable storage. */
  fua: boolean;
  /** Priority (HOB count bits 7:6); not used for scheduling. */
  priority: number;
}

/** Decode a Register H2D FIS's task file as an FPDMA command; undefined for any other opcode. */
export function decodeFpdma(tf: TaskFile): FpdmaCommand | undefined {
  const op = tf.command & 0xff;
  if (op !== READ_FPDMA_QUEUED && op !== WRITE_FPDMA_QUEUED) return undefined;
  const count = tf.hobFeatures << 8 | tf.features;
  return {
    tag: tf.count >> 3 & 0x1f,
    write: op === WRITE_FPDMA_QUEUED,
    lba: lba48(tf),
    count: count === 0 ? 65536 : count,
    fua: (tf.device & 0x80) !== 0,
    priority: tf.hobCount >> 6 & 0x03,
  };
}

export type QueuedResult = { ok: true } | { ok: false; status: number; error: number; dmaFault?: "short" | "fault" };

export interface NcqErrorEntry {
  tag: number;
  status: number;
  error: number;
  lba: number;
  count: number;
  device: number;
}

/** The NCQ command error log (page 10h) and the "error pending" condition it carries. */
export class NcqLog {
  private entry: NcqErrorEntry | undefined;

  /** An NCQ error happened and the host has not read page 10h yet. */
  get pending(): boolean {
    return this.entry !== undefined;
  }

  record(e: NcqErrorEntry): void {
    if (!this.entry) this.entry = e; // the first error is the one reported
  }

  clear(): void {
    this.entry = undefined;
  }

  /** Page 10h. With no error pending NQ is set (no queued command failed). Reading clears the log. */
  readPage(): Uint8Array {
    const b = new Uint8Array(512);
    const e = this.entry;
    if (!e) {
      b[0] = 0x80;
    } else {
      b[0] = e.tag & 0x1f;
      b[2] = e.status;
      b[3] = e.error;
      b[4] = e.lba & 0xff;
      b[5] = e.lba >>> 8 & 0xff;
      b[6] = e.lba >>> 16 & 0xff;
      b[7] = e.device;
      const high = Math.floor(e.lba / 0x1000000);
      b[8] = e.lba >>> 24 & 0xff;
      b[9] = high >>> 8 & 0xff;
      b[10] = high >>> 16 & 0xff;
      b[12] = e.count & 0xff;
      b[13] = e.count >> 8 & 0xff;
    }
    putSectorChecksum(b);
    this.entry = undefined;
    return b;
  }

  save(): NcqErrorEntry | null {
    return this.entry ? { ...this.entry } : null;
  }

  restore(e: NcqErrorEntry | null): void {
    this.entry = e ? { ...e } : undefined;
  }
}

/** Execute one queued command with the slot's transport. See AtaDevice.executeQueued. */
export async function executeQueued(dev: AtaDevice, q: FpdmaCommand, transport: AtaDmaTransport): Promise<QueuedResult> {
  const epoch = dev.resets;
  const abort = (why: string): QueuedResult => {
    dev.trace(`FPDMA tag ${q.tag}: ${why}`);
    return { ok: false, status: STATUS.DRDY | STATUS.ERR, error: ERROR.ABRT };
  };
  const logged = (error: number, lba: number, dmaFault?: "short" | "fault"): QueuedResult => {
    const status = STATUS.DRDY | STATUS.ERR;
    dev.ncqLog.record({ tag: q.tag, status, error, lba, count: q.count, device: 0x40 });
    return { ok: false, status, error, ...(dmaFault ? { dmaFault } : {}) };
  };
  if (dev.kind !== "ata" || !dev.config.ncq) return abort("NCQ not offered");
  if (!dev.medium) return abort("no medium");
  if (dev.settings.power === "sleep") return abort("drive is asleep");
  if (dev.ncqLog.pending) return abort("NCQ error pending (log page 10h not read)");
  if (q.count < 1 || q.lba + q.count > dev.capacity) {
    dev.trace(`FPDMA tag ${q.tag}: LBA ${q.lba}+${q.count} beyond capacity ${dev.capacity}`);
    return logged(ERROR.IDNF, q.lba);
  }
  if (q.write && dev.medium.readOnly) {
    dev.trace(`FPDMA tag ${q.tag}: medium is read-only`);
    return logged(ERROR.ABRT, q.lba);
  }
  if (dev.settings.power !== "active") dev.settings.power = "active";
  const alive = (): boolean => dev.resets === epoch;
  const io: DmaIo = {
    alive,
    transfer: async (direction, buf) => {
      let out: DmaOutcome;
      try {
        out = await transport.dmaTransfer(direction, buf);
      } catch (e) {
        dev.trace(`FPDMA tag ${q.tag}: dmaTransfer threw: ${String(e)}`);
        out = { bytes: 0, fault: true };
      }
      return alive() ? out : undefined;
    },
  };
  dev.queuedInFlight++;
  try {
    const r = await dmaReadWrite(dev, io, q.lba, q.count, q.write, q.write && (q.fua || !dev.settings.writeCache));
    if (r === "cancelled") return abort("cancelled by reset");
    if (r.ok) return { ok: true };
    return logged(r.error, r.lba ?? q.lba, r.dmaFault);
  } catch (e) {
    return abort(`internal error: ${String(e)}`);
  } finally {
    if (alive()) dev.queuedInFlight--;
  }
}

