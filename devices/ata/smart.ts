/**
 * SMART (B0h; ATA/ATAPI-7 6.54, 7.52): ENABLE/DISABLE OPERATIONS, ATTRIBUTE AUTOSAVE (accepted,
 * nothing to save), READ DATA, READ THRESHOLDS and RETURN STATUS. Self-tests, off-line data
 * collection and the SMART logs are not offered (capability bytes say so; IDENTIFY word 84 does
 * not claim SMART error logging or self-test), and abort.
 *
 * A few plausible attributes: reallocated sectors (0), power-on hours (from the host clock),
 * power cycles, temperature.
 */
import type { Handler } from "./command-table.js";
import type { AtaDevice } from "./device.js";
import { hex } from "./medium-io.js";
import { ERROR } from "./task-file.js";

/** Subcommands (features register). */
export const SMART = {
  READ_DATA: 0xd0,
  READ_THRESHOLDS: 0xd1,
  ATTRIBUTE_AUTOSAVE: 0xd2,
  ENABLE: 0xd8,
  DISABLE: 0xd9,
  RETURN_STATUS: 0xda,
} as const;

/** LBA mid/high key every SMART command carries, and RETURN STATUS's "good" answer. */
export const SMART_KEY_MID = 0x4f;
export const SMART_KEY_HIGH = 0xc2;
/** RETURN STATUS when a threshold is exceeded. */
export const SMART_FAIL_MID = 0xf4;
export const SMART_FAIL_HIGH = 0x2c;

export interface SmartAttribute {
  id: number;
  /** bit 0 pre-failure, bit 1 updated on-line, ... */
  flags: number;
  value: number;
  worst: number;
  raw: number;
  threshold: number;
}

/** Temperature reported (°C). */
const TEMPERATURE = 30;

export function smartAttributes(powerOnHours: number): SmartAttribute[] {
  return [
    { id: 0x05, flags: 0x0033, value: 100, worst: 100, raw: 0, threshold: 36 }, // reallocated sectors
    { id: 0x09, flags: 0x0032, value: 100, worst: 100, raw: powerOnHours, threshold: 0 }, // power-on hours
    { id: 0x0c, flags: 0x0032, value: 100, worst: 100, raw: 1, threshold: 0 }, // power cycle count
    { id: 0xc2, flags: 0x0022, value: 100 - TEMPERATURE, worst: 100 - TEMPERATURE, raw: TEMPERATURE, threshold: 0 }, // temperature
  ];
}

/** Byte 511: makes the 512 bytes sum to 0 (mod 256). */
export function putSectorChecksum(b: Uint8Array): void {
  let sum = 0;
  for (let i = 0; i < 511; i++) sum += b[i]!;
  b[511] = -sum & 0xff;
}

function putRaw48(b: Uint8Array, off: number, v: number): void {
  for (let i = 0; i < 6; i++) b[off + i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
}

/** SMART READ DATA: revision, 30 attribute slots of 12 bytes, capability bytes, checksum. */
export function smartData(attrs: readonly SmartAttribute[]): Uint8Array {
  const b = new Uint8Array(512);
  b[0] = 0x10; // data structure revision
  attrs.slice(0, 30).forEach((a, i) => {
    const o = 2 + 12 * i;
    b[o] = a.id;
    b[o + 1] = a.flags & 0xff;
    b[o + 2] = a.flags >> 8;
    b[o + 3] = a.value;
    b[o + 4] = a.worst;
    putRaw48(b, o + 5, a.raw);
  });
  b[362] = 0x00; // off-line data collection: never started
  b[363] = 0x00; // self-test execution status: none
  b[367] = 0x00; // off-line data collection capability: none
  b[368] = 0x03; // SMART capability: saves data before power-saving modes; attribute autosave
  b[370] = 0x00; // no SMART error logging
  putSectorChecksum(b);
  return b;
}

/** SMART READ THRESHOLDS: revision, 30 slots of (id, threshold, 10 reserved), checksum. */
export function smartThresholds(attrs: readonly SmartAttribute[]): Uint8Array {
  const b = new Uint8Array(512);
  b[0] = 0x10;
  attrs.slice(0, 30).forEach((a, i) => {
    b[2 + 12 * i] = a.id;
    b[3 + 12 * i] = a.threshold;
  });
  putSectorChecksum(b);
  return b;
}

export function thresholdExceeded(attrs: readonly SmartAttribute[]): boolean {
  return attrs.some((a) => a.threshold > 0 && a.value <= a.threshold);
}

export const smartCommand: Handler = (dev, cmd) => {
  const tf = dev.tf;
  const sub = tf.features;
  if (tf.lbaMid !== SMART_KEY_MID || tf.lbaHigh !== SMART_KEY_HIGH) {
    dev.trace(`SMART ${hex(sub)} without the 4Fh/C2h key`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  if (!dev.settings.smartEnabled && sub !== SMART.ENABLE) {
    dev.trace(`SMART ${hex(sub)} while SMART is disabled`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  const attrs = (): SmartAttribute[] => smartAttributes(dev.powerOnHours());
  switch (sub) {
    case SMART.ENABLE:
    case SMART.DISABLE:
      dev.settings.smartEnabled = sub === SMART.ENABLE;
      dev.finishOk(cmd);
      return;
    case SMART.ATTRIBUTE_AUTOSAVE:
      if (tf.count !== 0x00 && tf.count !== 0xf1) break;
      dev.finishOk(cmd);
      return;
    case SMART.RETURN_STATUS:
      returnStatus(dev, thresholdExceeded(attrs()));
      dev.finishOk(cmd);
      return;
    case SMART.READ_DATA:
    case SMART.READ_THRESHOLDS: {
      const data = sub === SMART.READ_DATA ? smartData(attrs()) : smartThresholds(attrs());
      dev.pioIn(cmd, data, true, () => dev.finishOk(cmd, { interrupt: false }));
      return;
    }
  }
  dev.trace(`SMART ${hex(sub)} not supported`);
  dev.finishError(cmd, ERROR.ABRT);
};

function returnStatus(dev: AtaDevice, exceeded: boolean): void {
  dev.tf.lbaMid = exceeded ? SMART_FAIL_MID : SMART_KEY_MID;
  dev.tf.lbaHigh = exceeded ? SMART_FAIL_HIGH : SMART_KEY_HIGH;
}
