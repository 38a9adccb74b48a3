/**
 * SCSI status codes and sense data (SPC-4 4.5): the conditions every target reports, in one
 * table, and the fixed-format (70h) sense data that carries them — in autosense to a SCSI HBA, or
 * by REQUEST SENSE over ATAPI (where the key also lands in the ATA error register).
 */

/** SAM status byte. */
export const STATUS = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

/** Sense keys (SPC-4 table 47). */
export const SENSE_KEY = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  ABORTED_COMMAND: 0xb,
} as const;

/** One reportable condition: sense key plus additional sense code and qualifier. */
export interface Sense {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  /** Fixed-format INFORMATION field (e.g. the failing LBA); sets the VALID bit. */
  readonly info?: number;
  /** Incorrect length indicator. */
  readonly ili?: boolean;
  /** End of medium. */
  readonly eom?: boolean;
}

const sense = (key: number, asc: number, ascq: number): Sense => Object.freeze({ key, asc, ascq });

/**
 * Every condition the targets report, by name (key / ASC / ASCQ from SPC-4 annex D and MMC-6).
 * Code never spells out these numbers anywhere else.
 */
export const SENSE = {
  NO_SENSE: sense(SENSE_KEY.NO_SENSE, 0x00, 0x00),
  // NOT READY
  BECOMING_READY: sense(SENSE_KEY.NOT_READY, 0x04, 0x01),
  MEDIUM_NOT_PRESENT: sense(SENSE_KEY.NOT_READY, 0x3a, 0x00),
  MEDIUM_NOT_PRESENT_TRAY_CLOSED: sense(SENSE_KEY.NOT_READY, 0x3a, 0x01),
  MEDIUM_NOT_PRESENT_TRAY_OPEN: sense(SENSE_KEY.NOT_READY, 0x3a, 0x02),
  // MEDIUM ERROR
  UNRECOVERED_READ_ERROR: sense(SENSE_KEY.MEDIUM_ERROR, 0x11, 0x00),
  WRITE_ERROR: sense(SENSE_KEY.MEDIUM_ERROR, 0x0c, 0x00),
  // HARDWARE ERROR
  INTERNAL_TARGET_FAILURE: sense(SENSE_KEY.HARDWARE_ERROR, 0x44, 0x00),
  // ILLEGAL REQUEST
  PARAMETER_LIST_LENGTH_ERROR: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x1a, 0x00),
  INVALID_COMMAND_OPERATION_CODE: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x20, 0x00),
  LBA_OUT_OF_RANGE: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x21, 0x00),
  INVALID_FIELD_IN_CDB: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x24, 0x00),
  LOGICAL_UNIT_NOT_SUPPORTED: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x25, 0x00),
  INVALID_FIELD_IN_PARAMETER_LIST: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x26, 0x00),
  INCOMPATIBLE_MEDIUM_FORMAT: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x30, 0x02),
  SAVING_PARAMETERS_NOT_SUPPORTED: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x39, 0x00),
  MEDIUM_REMOVAL_PREVENTED: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x53, 0x02),
  ILLEGAL_MODE_FOR_THIS_TRACK: sense(SENSE_KEY.ILLEGAL_REQUEST, 0x64, 0x00),
  // UNIT ATTENTION
  NOT_READY_TO_READY_CHANGE: sense(SENSE_KEY.UNIT_ATTENTION, 0x28, 0x00),
  POWER_ON_RESET: sense(SENSE_KEY.UNIT_ATTENTION, 0x29, 0x00),
  BUS_RESET: sense(SENSE_KEY.UNIT_ATTENTION, 0x29, 0x02),
  MODE_PARAMETERS_CHANGED: sense(SENSE_KEY.UNIT_ATTENTION, 0x2a, 0x01),
  // DATA PROTECT
  WRITE_PROTECTED: sense(SENSE_KEY.DATA_PROTECT, 0x27, 0x00),
  // ABORTED COMMAND
  ABORTED_COMMAND: sense(SENSE_KEY.ABORTED_COMMAND, 0x00, 0x00),
} as const satisfies Record<string, Sense>;

/** Length of the fixed-format sense data this code produces (additional length 10). */
export const FIXED_SENSE_LENGTH = 18;

/** Fixed-format sense data (response code 70h, current error), SPC-4 4.5.3. */
export function fixedSense(s: Sense): Uint8Array {
  const d = new Uint8Array(FIXED_SENSE_LENGTH);
  const hasInfo = s.info !== undefined && Number.isInteger(s.info) && s.info >= 0 && s.info <= 0xffffffff;
  d[0] = 0x70 | (hasInfo ? 0x80 : 0);
  d[2] = (s.key & 0x0f) | (s.ili ? 0x20 : 0) | (s.eom ? 0x40 : 0);
  if (hasInfo) {
    const v = s.info!;
    d[3] = v >>> 24 & 0xff;
    d[4] = v >>> 16 & 0xff;
    d[5] = v >>> 8 & 0xff;
    d[6] = v & 0xff;
  }
  d[7] = FIXED_SENSE_LENGTH - 8;
  d[12] = s.asc;
  d[13] = s.ascq;
  return d;
}

/**
 * Read key/ASC/ASCQ back from sense data (fixed 70h/71h or descriptor 72h/73h format); anything
 * unparseable reads as NO SENSE.
 */
export function parseSense(d: Uint8Array | undefined): Sense {
  if (!d || d.length < 3) return SENSE.NO_SENSE;
  const code = d[0]! & 0x7f;
  if (code === 0x72 || code === 0x73) {
    return { key: d[1]! & 0x0f, asc: d[2] ?? 0, ascq: d[3] ?? 0 };
  }
  if (code !== 0x70 && code !== 0x71) return SENSE.NO_SENSE;
  const out: { key: number; asc: number; ascq: number; info?: number; ili?: boolean; eom?: boolean } = {
    key: d[2]! & 0x0f,
    asc: d[12] ?? 0,
    ascq: d[13] ?? 0,
  };
  if (d[0]! & 0x80 && d.length >= 7) out.info = (d[3]! << 24 | d[4]! << 16 | d[5]! << 8 | d[6]!) >>> 0;
  if (d[2]! & 0x20) out.ili = true;
  if (d[2]! & 0x40) out.eom = true;
  return out;
}

/** The same condition (key, ASC, ASCQ), ignoring INFORMATION and flags. */
export function sameCondition(a: Sense, b: Sense): boolean {
  return a.key === b.key && a.asc === b.asc && a.ascq === b.ascq;
}

/** "05/24/00" style, for traces and test messages. */
export function senseName(s: Sense): string {
  const h = (n: number): string => n.toString(16).padStart(2, "0");
  return `${h(s.key)}/${h(s.asc)}/${h(s.ascq)}`;
}
