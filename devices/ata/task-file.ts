/**
 * The ATA task file as a plain structure, shared by every front end: IDE writes it through its
 * command-block registers, AHCI fills it from a Register H2D FIS and reads it back into D2H/PIO
 * Setup FISes. Register and bit names follow ATA/ATAPI-7 and ACS.
 *
 * LBA48 ("HOB", high-order byte): each of features, count and the three LBA registers is a
 * two-deep FIFO on the wire — a write pushes the previous value into the HOB slot. `writeShadow`
 * models that for IDE; AHCI sets both halves directly from the FIS.
 */

/** Status register (ATA-7 6.64). */
export const STATUS = {
  BSY: 0x80,
  DRDY: 0x40,
  /** Device fault. */
  DF: 0x20,
  /** Device seek complete (obsolete since ATA-4, still shown by most drives and emulators). */
  DSC: 0x10,
  DRQ: 0x08,
  CORR: 0x04,
  IDX: 0x02,
  ERR: 0x01,
} as const;

/** Error register (ATA-7 6.29). */
export const ERROR = {
  /** Interface CRC error (UDMA). */
  ICRC: 0x80,
  /** Uncorrectable data error (read). */
  UNC: 0x40,
  /** Media changed (removable). */
  MC: 0x20,
  /** ID not found: address outside the user-accessible range. */
  IDNF: 0x10,
  /** Media change request. */
  MCR: 0x08,
  /** Command aborted: not supported, bad parameter, or could not be completed. */
  ABRT: 0x04,
  TK0NF: 0x02,
  AMNF: 0x01,
} as const;

/** Device register bits. */
export const DEVICE_LBA = 0x40;
export const DEVICE_DEV = 0x10;

/** The status an idle, ready ATA disk shows. */
export const STATUS_READY = STATUS.DRDY | STATUS.DSC;

export interface TaskFile {
  features: number;
  count: number;
  lbaLow: number;
  lbaMid: number;
  lbaHigh: number;
  /** Device/Head: DEV (bit 4), LBA (bit 6), head or LBA 27:24 (bits 3:0). */
  device: number;
  command: number;
  status: number;
  error: number;
  /** The previous ("HOB") values: features 15:8, count 15:8, LBA 31:24, 39:32, 47:40. */
  hobFeatures: number;
  hobCount: number;
  hobLbaLow: number;
  hobLbaMid: number;
  hobLbaHigh: number;
}

export function newTaskFile(): TaskFile {
  return {
    features: 0,
    count: 0,
    lbaLow: 0,
    lbaMid: 0,
    lbaHigh: 0,
    device: 0,
    command: 0,
    status: 0,
    error: 0,
    hobFeatures: 0,
    hobCount: 0,
    hobLbaLow: 0,
    hobLbaMid: 0,
    hobLbaHigh: 0,
  };
}

/** The five registers that are FIFOs for LBA48. */
export type ShadowRegister = "features" | "count" | "lbaLow" | "lbaMid" | "lbaHigh";

const HOB: Record<ShadowRegister, "hobFeatures" | "hobCount" | "hobLbaLow" | "hobLbaMid" | "hobLbaHigh"> = {
  features: "hobFeatures",
  count: "hobCount",
  lbaLow: "hobLbaLow",
  lbaMid: "hobLbaMid",
  lbaHigh: "hobLbaHigh",
};

/** A host write to one of the FIFO registers (IDE): the current value moves into the HOB slot. */
export function writeShadow(tf: TaskFile, reg: ShadowRegister, value: number): void {
  tf[HOB[reg]] = tf[reg];
  tf[reg] = value & 0xff;
}

/** A host read of one of the FIFO registers; `hob` is the Device Control HOB bit (IDE). */
export function readShadow(tf: TaskFile, reg: ShadowRegister, hob: boolean): number {
  return hob ? tf[HOB[reg]] : tf[reg];
}

/** 28-bit LBA from LBA low/mid/high and device bits 3:0. */
export function lba28(tf: TaskFile): number {
  return ((tf.device & 0x0f) << 24 | tf.lbaHigh << 16 | tf.lbaMid << 8 | tf.lbaLow) >>> 0;
}

/** 48-bit LBA from the current and HOB LBA registers (a safe integer: at most 2^48 - 1). */
export function lba48(tf: TaskFile): number {
  const high = tf.hobLbaHigh << 16 | tf.hobLbaMid << 8 | tf.hobLbaLow;
  return high * 0x1000000 + (tf.lbaHigh << 16 | tf.lbaMid << 8 | tf.lbaLow);
}

/** Sector count of a 28-bit command: 0 means 256. */
export function count28(tf: TaskFile): number {
  return tf.count === 0 ? 256 : tf.count;
}

/** Sector count of a 48-bit command: 0 means 65536. */
export function count48(tf: TaskFile): number {
  const n = tf.hobCount << 8 | tf.count;
  return n === 0 ? 65536 : n;
}

/** 16-bit value of count (current + HOB) without the zero rule (DSM, READ LOG EXT). */
export function count16(tf: TaskFile): number {
  return tf.hobCount << 8 | tf.count;
}

export function setLba28(tf: TaskFile, lba: number): void {
  tf.lbaLow = lba & 0xff;
  tf.lbaMid = lba >>> 8 & 0xff;
  tf.lbaHigh = lba >>> 16 & 0xff;
  tf.device = tf.device & 0xf0 | lba >>> 24 & 0x0f;
}

export function setLba48(tf: TaskFile, lba: number): void {
  const low = lba % 0x1000000;
  const high = Math.floor(lba / 0x1000000);
  tf.lbaLow = low & 0xff;
  tf.lbaMid = low >>> 8 & 0xff;
  tf.lbaHigh = low >>> 16 & 0xff;
  tf.hobLbaLow = high & 0xff;
  tf.hobLbaMid = high >>> 8 & 0xff;
  tf.hobLbaHigh = high >>> 16 & 0xff;
}

/** A CHS translation: the default one from IDENTIFY words 1/3/6, or the one INITIALIZE DEVICE PARAMETERS set. */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectors: number;
}

/** Cylinder (LBA mid/high), head (device 3:0) and sector (LBA low, 1-based) to an LBA; undefined when outside the geometry. */
export function chsToLba(tf: TaskFile, g: Geometry): number | undefined {
  const cylinder = tf.lbaHigh << 8 | tf.lbaMid;
  const head = tf.device & 0x0f;
  const sector = tf.lbaLow;
  if (sector < 1 || sector > g.sectors || head >= g.heads || cylinder >= g.cylinders) return undefined;
  return (cylinder * g.heads + head) * g.sectors + sector - 1;
}

export function setChs(tf: TaskFile, lba: number, g: Geometry): void {
  const perCylinder = g.heads * g.sectors;
  const cylinder = Math.floor(lba / perCylinder);
  const rest = lba % perCylinder;
  tf.lbaHigh = cylinder >>> 8 & 0xff;
  tf.lbaMid = cylinder & 0xff;
  tf.device = tf.device & 0xf0 | Math.floor(rest / g.sectors) & 0x0f;
  tf.lbaLow = rest % g.sectors + 1;
}

/** How a command addresses the medium. */
export type Addressing = "chs" | "lba28" | "lba48";

/** Write `lba` back into the address registers in the command's own addressing. */
export function setAddress(tf: TaskFile, mode: Addressing, lba: number, g: Geometry): void {
  if (mode === "lba48") setLba48(tf, lba);
  else if (mode === "lba28") setLba28(tf, lba);
  else if (g.heads > 0 && g.sectors > 0) setChs(tf, lba, g);
}
