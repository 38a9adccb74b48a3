/**
 * Frame Information Structures (SATA 2.6 section 10.3) as the HBA sees them: the Register
 * Host-to-Device FIS it fetches from a command table (decoded into the ATA core's task file), and
 * the device-to-host FISes it copies into the received-FIS area — Register D2H, PIO Setup and
 * Set Device Bits. Pure byte layouts; where they land and what they set is the port's business.
 */
import type { TaskFile } from "../ata/task-file.js";

export const FIS_TYPE = {
  REG_H2D: 0x27,
  REG_D2H: 0x34,
  DMA_SETUP: 0x41,
  PIO_SETUP: 0x5f,
  SDB: 0xa1,
} as const;

/** Byte 1 of device-to-host FISes. */
const FIS_I = 0x40;
/** PIO Setup: data moves device → host. */
const FIS_D = 0x20;
/** Register H2D byte 1: the FIS carries a command (else it updates Device Control). */
const H2D_C = 0x80;
/** Device Control bit SRST (byte 15 of a Register H2D FIS). */
export const CONTROL_SRST = 0x04;

export const D2H_SIZE = 20;
export const PIO_SETUP_SIZE = 20;
export const SDB_SIZE = 8;

/** A Register H2D FIS as the HBA found it. */
export type H2dFis =
  | { kind: "command"; tf: Omit<TaskFile, "status" | "error">; pmp: number; control: number }
  | { kind: "control"; control: number; pmp: number };

/** Decode a command FIS (at least 20 bytes); undefined when it is not a Register H2D FIS. */
export function decodeH2d(b: Uint8Array): H2dFis | undefined {
  if (b.length < 20 || b[0] !== FIS_TYPE.REG_H2D) return undefined;
  const pmp = b[1]! & 0x0f;
  const control = b[15]!;
  if (!(b[1]! & H2D_C)) return { kind: "control", control, pmp };
  return {
    kind: "command",
    pmp,
    control,
    tf: {
      command: b[2]!,
      features: b[3]!,
      lbaLow: b[4]!,
      lbaMid: b[5]!,
      lbaHigh: b[6]!,
      device: b[7]!,
      hobLbaLow: b[8]!,
      hobLbaMid: b[9]!,
      hobLbaHigh: b[10]!,
      hobFeatures: b[11]!,
      count: b[12]!,
      hobCount: b[13]!,
    },
  };
}

/** Encode a Register H2D FIS (the test driver builds commands with it). */
export function encodeH2d(tf: Partial<Omit<TaskFile, "status" | "error">>, opts: { command?: boolean; control?: number; pmp?: number } = {}): Uint8Array {
  const b = new Uint8Array(20);
  b[0] = FIS_TYPE.REG_H2D;
  b[1] = (opts.command ?? true ? H2D_C : 0) | (opts.pmp ?? 0) & 0x0f;
  b[2] = tf.command ?? 0;
  b[3] = tf.features ?? 0;
  b[4] = tf.lbaLow ?? 0;
  b[5] = tf.lbaMid ?? 0;
  b[6] = tf.lbaHigh ?? 0;
  b[7] = tf.device ?? 0;
  b[8] = tf.hobLbaLow ?? 0;
  b[9] = tf.hobLbaMid ?? 0;
  b[10] = tf.hobLbaHigh ?? 0;
  b[11] = tf.hobFeatures ?? 0;
  b[12] = tf.count ?? 0;
  b[13] = tf.hobCount ?? 0;
  b[15] = opts.control ?? 0;
  return b;
}

/** The task-file fields a device-to-host register FIS carries. */
export type FisRegisters = Pick<TaskFile, "status" | "error" | "lbaLow" | "lbaMid" | "lbaHigh" | "device" | "hobLbaLow" | "hobLbaMid" | "hobLbaHigh" | "count" | "hobCount">;

function putRegisters(b: Uint8Array, r: FisRegisters): void {
  b[2] = r.status;
  b[3] = r.error;
  b[4] = r.lbaLow;
  b[5] = r.lbaMid;
  b[6] = r.lbaHigh;
  b[7] = r.device;
  b[8] = r.hobLbaLow;
  b[9] = r.hobLbaMid;
  b[10] = r.hobLbaHigh;
  b[12] = r.count;
  b[13] = r.hobCount;
}

/** Register Device-to-Host FIS. */
export function encodeD2h(r: FisRegisters, interrupt: boolean): Uint8Array {
  const b = new Uint8Array(D2H_SIZE);
  b[0] = FIS_TYPE.REG_D2H;
  b[1] = interrupt ? FIS_I : 0;
  putRegisters(b, r);
  return b;
}

/**
 * PIO Setup FIS: `status` is what PxTFD shows while the block moves (DRQ set), `endStatus` the
 * status once it has moved (E_Status), `transferCount` the block's bytes.
 */
export function encodePioSetup(r: FisRegisters, o: { toHost: boolean; interrupt: boolean; endStatus: number; transferCount: number }): Uint8Array {
  const b = new Uint8Array(PIO_SETUP_SIZE);
  b[0] = FIS_TYPE.PIO_SETUP;
  b[1] = (o.interrupt ? FIS_I : 0) | (o.toHost ? FIS_D : 0);
  putRegisters(b, r);
  b[15] = o.endStatus;
  b[16] = o.transferCount & 0xff;
  b[17] = o.transferCount >> 8 & 0xff;
  return b;
}

/** Status bits a Set Device Bits FIS can change: 6:4 and 2:0 (never BSY or DRQ). */
export const SDB_STATUS_MASK = 0x77;

/** Set Device Bits FIS: completions of queued commands (SActive) and/or an error. */
export function encodeSdb(o: { status: number; error: number; sactive: number; interrupt: boolean }): Uint8Array {
  const b = new Uint8Array(SDB_SIZE);
  b[0] = FIS_TYPE.SDB;
  b[1] = o.interrupt ? FIS_I : 0;
  b[2] = o.status & SDB_STATUS_MASK;
  b[3] = o.error;
  new DataView(b.buffer).setUint32(4, o.sactive >>> 0, true);
  return b;
}
