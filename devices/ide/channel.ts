/**
 * One IDE channel: the command block (eight ports at 1F0h/170h), the control block (3F6h/376h),
 * INTRQ, the bus master engine, and up to two drives (master = device 0, slave = device 1), each
 * an AtaDevice from the shared ATA core or absent.
 *
 * Register decode (ATA/ATAPI-7 section 6):
 *
 *   +0 data (16/32-bit; 8-bit accesses move one byte)    +4 LBA mid / cylinder low
 *   +1 error (read) / features (write)                    +5 LBA high / cylinder high
 *   +2 sector count                                       +6 device (DEV bit 4 selects the drive)
 *   +3 LBA low / sector number                            +7 status (read) / command (write)
 *   control block +0: alternate status (read) / device control (write: nIEN, SRST, HOB)
 *
 * Writes to the command block go to both drives (each keeps its own copy, as on the cable);
 * the command goes to the selected drive only. Reading status clears the selected drive's pending
 * interrupt, reading alternate status does not, writing a command clears it too.
 *
 * INTRQ: each drive has an interrupt-pending flag; the channel's line is up while the selected
 * drive has one pending and nIEN is clear (a deselected drive's INTRQ is released). Every time a
 * drive asserts its interrupt with nIEN clear, the bus master status interrupt bit is set (the
 * engine watches the line), whether or not the command used DMA.
 *
 * Absent drives (the rules Linux's ata_devchk/ata_sff_dev_classify and SeaBIOS's probe rely on):
 *  - A channel with no drive reads 7Fh on every port (nothing drives the bus; DD7 is pulled down
 *    so status never looks busy) and ignores writes.
 *  - Device 1 absent, device 0 present, device 1 selected: device 0 answers for it. Status and
 *    alternate status read 00h, error 00h; an ATA device 0 returns its other registers (which hold
 *    what the host wrote), a packet device 0 returns 00h. Commands are ignored.
 *  - Device 0 absent, device 1 present, device 0 selected: nothing answers; reads return 7Fh.
 *
 * Software reset (SRST): while SRST is asserted every drive present is reset (commands in flight
 * are cancelled) and shows BSY; when SRST is released the drives hold their signatures (ATA:
 * count/LBA 01h 01h 00h 00h, status DRDY; ATAPI: 01h 01h 14h EBh, status 00h) and device 0 is
 * selected. No interrupt follows a software reset.
 *
 * EXECUTE DEVICE DIAGNOSTIC runs on both drives whatever the selection; device 0 (or device 1
 * alone) reports and interrupts, with 81h in its error register if device 1 failed.
 */
import type { AccessSize, IrqLine } from "../../host-adapter/host.js";
import type { AtaDeviceConfig } from "../ata/config.js";
import { AtaDevice, type AtaDeviceState } from "../ata/device.js";
import { ERROR, STATUS, readShadow, writeShadow, type ShadowRegister } from "../ata/task-file.js";
import type { AtaCompletion, AtaTransport, DataDirection, DmaOutcome, PioBlock } from "../ata/transport.js";
import { BusMaster, BM_STATUS, type BusMasterEnv, type BusMasterState } from "./bus-master.js";

/** Command block register offsets. */
export const ATA_REG = {
  DATA: 0,
  ERROR: 1,
  FEATURES: 1,
  COUNT: 2,
  LBA_LOW: 3,
  LBA_MID: 4,
  LBA_HIGH: 5,
  DEVICE: 6,
  STATUS: 7,
  COMMAND: 7,
} as const;

/** Device control register bits. */
export const DEVCTL = { NIEN: 0x02, SRST: 0x04, HOB: 0x80 } as const;

/** What an empty bus reads (DD7 pulled down, the rest floating high). */
export const EMPTY_BUS = 0x7f;
/** Status shown while SRST is asserted. */
const RESET_STATUS = STATUS.BSY | STATUS.DSC;

const EXECUTE_DEVICE_DIAGNOSTIC = 0x90;
const DEVICE_RESET = 0x08;
/** Diagnostic code: device passed. Bit 7 in device 0's code: device 1 failed. */
const DIAG_PASSED = 0x01;

const SHADOW: (ShadowRegister | undefined)[] = [undefined, "features", "count", "lbaLow", "lbaMid", "lbaHigh"];

/** An IDE drive: the ATA core's config minus what the controller decides (chipset, position, trace, clock). */
export type IdeDriveConfig = Omit<AtaDeviceConfig, "chipset" | "deviceNumber" | "trace" | "clock" | "sata" | "ncq" | "ncqDepth">;

interface PioBuffer {
  buf: Uint8Array;
  pos: number;
  direction: DataDirection;
}

class Drive {
  irqPending = false;
  pio: PioBuffer | undefined;
  /** The current command has called dmaTransfer. */
  usedDma = false;
  readonly device: AtaDevice;

  constructor(channel: IdeChannel, readonly position: 0 | 1, config: AtaDeviceConfig) {
    const transport: AtaTransport = {
      pioIn: (block: Uint8Array, info: PioBlock) => channel.pioReady(this, block, "in", info),
      pioOut: (block: Uint8Array, info: PioBlock) => channel.pioReady(this, block, "out", info),
      dmaTransfer: (direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome> => {
        this.usedDma = true;
        return channel.bm.transfer(direction, buf);
      },
      dmaTransferNow: (direction: DataDirection, buf: Uint8Array, done: (o: DmaOutcome) => void): void => {
        this.usedDma = true;
        channel.bm.transferNow(direction, buf, done);
      },
      commandComplete: (c: AtaCompletion) => channel.completed(this, c),
    };
    this.device = new AtaDevice(config, transport);
  }
}

export interface ChannelEnv extends BusMasterEnv {
  line: IrqLine;
}

export interface DriveState {
  kind: "ata" | "atapi";
  irqPending: boolean;
  /** A command was in flight when saved (see restore). */
  busy: boolean;
  ata: AtaDeviceState;
}

export interface ChannelState {
  selected: 0 | 1;
  devctl: number;
  drives: (DriveState | null)[];
  bm: BusMasterState;
}

export class IdeChannel {
  readonly drives: readonly (Drive | undefined)[];
  readonly bm: BusMaster;
  selected: 0 | 1 = 0;
  /** Device control as last written (nIEN, SRST, HOB). */
  devctl = 0;
  /** The IDETIM decode enable bit: the legacy ports answer. */
  decode = true;
  /** An EXECUTE DEVICE DIAGNOSTIC in progress: drives still to report, and their codes. */
  private diagnostic: { waiting: Set<Drive>; codes: Map<Drive, number>; reporter: Drive } | undefined;

  constructor(
    readonly index: 0 | 1,
    private readonly env: ChannelEnv,
    configs: readonly (AtaDeviceConfig | undefined)[],
  ) {
    this.bm = new BusMaster(env);
    this.drives = [0, 1].map((p) => {
      const c = configs[p];
      return c ? new Drive(this, p as 0 | 1, c) : undefined;
    });
  }

  get empty(): boolean {
    return !this.drives[0] && !this.drives[1];
  }

  /** The AtaDevice at a position, if present. */
  device(position: 0 | 1): AtaDevice | undefined {
    return this.drives[position]?.device;
  }

  /** INTRQ as the channel drives it now. */
  get irqLevel(): boolean {
    return this.env.line.level;
  }

  // ---- reset -----------------------------------------------------------------------------------

  /** Machine reset: every drive to power-on defaults, registers and bus master to reset values. */
  powerOn(): void {
    this.diagnostic = undefined;
    for (const d of this.drives) {
      if (!d) continue;
      d.pio = undefined;
      d.usedDma = false;
      d.irqPending = false;
      d.device.reset("power-on");
    }
    this.bm.powerOn(this.drives.map((d) => d !== undefined));
    this.selected = 0;
    this.devctl = 0;
    this.updateLine();
  }

  private softwareReset(): void {
    this.diagnostic = undefined;
    this.bm.cancel();
    for (const d of this.drives) {
      if (!d) continue;
      d.pio = undefined;
      d.usedDma = false;
      d.irqPending = false;
      d.device.reset("software");
    }
    this.selected = 0;
    this.updateLine();
  }

  private get resetting(): boolean {
    return (this.devctl & DEVCTL.SRST) !== 0;
  }

  // ---- command block ---------------------------------------------------------------------------

  readCommandBlock(offset: number, size: AccessSize): number {
    if (!this.decode) return allOnes(size);
    if (this.empty) return emptyBus(size);
    if (offset === ATA_REG.DATA) return this.readData(size);
    let v = 0;
    for (let i = 0; i < size; i++) {
      const reg = offset + i;
      v |= (reg < 8 ? this.readRegister(reg) : 0xff) << (8 * i);
    }
    return v >>> 0;
  }

  writeCommandBlock(offset: number, size: AccessSize, value: number): void {
    if (!this.decode || this.empty) return;
    if (offset === ATA_REG.DATA) {
      this.writeData(size, value);
      return;
    }
    for (let i = 0; i < size && offset + i < 8; i++) this.writeRegister(offset + i, (value >>> (8 * i)) & 0xff);
  }

  private readRegister(reg: number): number {
    const d = this.drives[this.selected];
    if (!d) {
      const other = this.drives[this.selected ^ 1];
      if (this.selected === 0 || !other) return EMPTY_BUS; // nobody answers for an absent device 0
      // Device 0 answers for an absent device 1.
      if (reg === ATA_REG.STATUS || reg === ATA_REG.ERROR || other.device.kind === "atapi") return 0;
      return this.taskFileRegister(other, reg);
    }
    if (reg === ATA_REG.STATUS) {
      const status = this.resetting ? RESET_STATUS : d.device.tf.status;
      if (d.irqPending) {
        d.irqPending = false;
        this.updateLine();
      }
      return status;
    }
    return this.taskFileRegister(d, reg);
  }

  private taskFileRegister(d: Drive, reg: number): number {
    const tf = d.device.tf;
    if (reg === ATA_REG.ERROR) return tf.error;
    if (reg === ATA_REG.DEVICE) return tf.device;
    return readShadow(tf, SHADOW[reg]!, (this.devctl & DEVCTL.HOB) !== 0);
  }

  private writeRegister(reg: number, v: number): void {
    // Any write to the command block clears HOB (ATA-7 6.20).
    this.devctl &= ~DEVCTL.HOB;
    if (reg === ATA_REG.COMMAND) {
      this.writeCommand(v);
      return;
    }
    for (const d of this.drives) {
      if (!d) continue;
      if (reg === ATA_REG.DEVICE) d.device.tf.device = v;
      else writeShadow(d.device.tf, SHADOW[reg]!, v);
    }
    if (reg === ATA_REG.DEVICE) {
      this.selected = ((v >> 4) & 1) as 0 | 1;
      this.updateLine();
    }
  }

  private writeCommand(opcode: number): void {
    if (this.resetting) {
      this.trace(`command ${hex(opcode)} written while SRST is asserted: ignored`);
      return;
    }
    if (opcode === EXECUTE_DEVICE_DIAGNOSTIC) {
      this.executeDiagnostic();
      return;
    }
    const d = this.drives[this.selected];
    if (!d) {
      this.trace(`command ${hex(opcode)} to absent device ${this.selected}: ignored`);
      return;
    }
    if (d.irqPending) {
      d.irqPending = false;
      this.updateLine();
    }
    const dev = d.device;
    if (opcode === DEVICE_RESET && dev.kind === "atapi" && dev.busy) {
      // DEVICE RESET is the one command a packet device takes while busy (ATA-7 6.14).
      this.trace("DEVICE RESET while busy: the command in flight is cancelled");
      this.cancelCommand(d);
      dev.reset("software");
    }
    dev.tf.command = opcode;
    dev.execute();
  }

  /** Drop what the channel holds for a drive's command (PIO buffer, bus master transfer). */
  private cancelCommand(d: Drive): void {
    d.pio = undefined;
    if (d.usedDma) {
      d.usedDma = false;
      this.bm.cancel();
    }
  }

  private executeDiagnostic(): void {
    const present = this.drives.filter((d): d is Drive => d !== undefined);
    const idle = present.filter((d) => {
      if (d.device.busy) this.trace(`EXECUTE DEVICE DIAGNOSTIC: device ${d.position} is busy and does not take part`);
      return !d.device.busy;
    });
    if (idle.length === 0) return;
    this.diagnostic = { waiting: new Set(idle), codes: new Map(), reporter: idle[0]! };
    for (const d of idle) {
      if (d.irqPending) d.irqPending = false;
      d.device.tf.command = EXECUTE_DEVICE_DIAGNOSTIC;
      d.device.execute();
    }
    this.updateLine();
  }

  // ---- data port -------------------------------------------------------------------------------

  private readData(size: AccessSize): number {
    const d = this.drives[this.selected];
    const p = d?.pio;
    if (!d || !p || p.direction !== "in" || this.resetting) return allOnes(size);
    const { buf } = p;
    let v: number;
    if (size === 2 && p.pos + 2 <= buf.length) v = buf[p.pos]! | (buf[p.pos + 1]! << 8);
    else {
      v = 0;
      for (let i = 0; i < size; i++) v |= (p.pos + i < buf.length ? buf[p.pos + i]! : 0) << (8 * i);
    }
    p.pos += size;
    if (p.pos >= buf.length) this.blockDone(d);
    return v >>> 0;
  }

  private writeData(size: AccessSize, value: number): void {
    const d = this.drives[this.selected];
    const p = d?.pio;
    if (!d || !p || p.direction !== "out" || this.resetting) return;
    const { buf } = p;
    for (let i = 0; i < size && p.pos + i < buf.length; i++) buf[p.pos + i] = (value >>> (8 * i)) & 0xff;
    p.pos += size;
    if (p.pos >= buf.length) this.blockDone(d);
  }

  private blockDone(d: Drive): void {
    d.pio = undefined;
    d.device.pioBlockDone();
  }

  // ---- control block ---------------------------------------------------------------------------

  readControl(size: AccessSize): number {
    if (!this.decode) return allOnes(size);
    if (this.empty) return emptyBus(size);
    const d = this.drives[this.selected];
    let status: number;
    if (d) status = this.resetting ? RESET_STATUS : d.device.tf.status;
    else status = this.selected === 1 ? 0 : EMPTY_BUS;
    return (status | (allOnes(size) & ~0xff)) >>> 0;
  }

  writeControl(_size: AccessSize, value: number): void {
    if (!this.decode || this.empty) return;
    const v = value & 0xff;
    const old = this.devctl;
    this.devctl = v & (DEVCTL.NIEN | DEVCTL.SRST | DEVCTL.HOB);
    if (!(old & DEVCTL.SRST) && v & DEVCTL.SRST) this.softwareReset();
    else if (old & DEVCTL.SRST && !(v & DEVCTL.SRST)) this.softwareReset(); // signatures, fresh state
    if ((old ^ v) & DEVCTL.NIEN) {
      // Re-enabling interrupts with one pending raises the line (and sets BM interrupt) again.
      const d = this.drives[this.selected];
      if (!(v & DEVCTL.NIEN) && d?.irqPending) this.bm.status |= BM_STATUS.INTERRUPT;
    }
    this.updateLine();
  }

  // ---- bus master ports ------------------------------------------------------------------------

  readBusMaster(offset: number, size: AccessSize): number {
    return this.bm.read(offset, size);
  }

  writeBusMaster(offset: number, size: AccessSize, value: number): void {
    this.bm.write(offset, size, value);
  }

  // ---- transport callbacks (from the ATA core) --------------------------------------------------

  pioReady(d: Drive, block: Uint8Array, direction: DataDirection, info: PioBlock): void {
    d.pio = { buf: block, pos: 0, direction };
    if (block.length === 0) this.env.defer(() => d.pio?.buf === block && this.blockDone(d));
    if (info.interrupt) this.raise(d);
  }

  completed(d: Drive, c: AtaCompletion): void {
    d.pio = undefined;
    if (d.usedDma) {
      d.usedDma = false;
      this.bm.endCommand();
    }
    if (c.dmaFault === "fault") this.bm.status |= BM_STATUS.ERROR;
    const diag = this.diagnostic;
    if (diag?.waiting.has(d)) {
      diag.waiting.delete(d);
      diag.codes.set(d, d.device.tf.error);
      if (diag.waiting.size > 0) return;
      this.diagnostic = undefined;
      const reporter = diag.reporter;
      const slave = this.drives[1];
      if (reporter.position === 0 && slave && diag.codes.has(slave) && diag.codes.get(slave) !== DIAG_PASSED) {
        reporter.device.tf.error = (reporter.device.tf.error & 0x7f) | 0x80;
      }
      if (c.interrupt) this.raise(reporter);
      return;
    }
    if (c.interrupt) this.raise(d);
  }

  // ---- interrupts ------------------------------------------------------------------------------

  private raise(d: Drive): void {
    d.irqPending = true;
    if (!(this.devctl & DEVCTL.NIEN)) this.bm.status |= BM_STATUS.INTERRUPT;
    this.updateLine();
  }

  updateLine(): void {
    const d = this.drives[this.selected];
    const level = !(this.devctl & DEVCTL.NIEN) && d !== undefined && d.irqPending;
    if (level !== this.env.line.level) this.env.line.set(level);
  }

  // ---- save / restore --------------------------------------------------------------------------

  save(): ChannelState {
    return {
      selected: this.selected,
      devctl: this.devctl,
      drives: this.drives.map((d) =>
        d ? { kind: d.device.kind, irqPending: d.irqPending, busy: d.device.busy, ata: d.device.saveState() } : null,
      ),
      bm: this.bm.save(),
    };
  }

  /**
   * Restore a saved channel. A command that was in flight when the state was saved cannot be
   * resumed (the core saves between commands only): it ends with ABRT and an interrupt, so the
   * guest's driver retries it instead of waiting for a timeout.
   */
  restore(s: ChannelState): void {
    this.diagnostic = undefined;
    this.bm.restore(s.bm);
    this.selected = s.selected === 1 ? 1 : 0;
    this.devctl = s.devctl & (DEVCTL.NIEN | DEVCTL.SRST | DEVCTL.HOB);
    this.drives.forEach((d, i) => {
      if (!d) return;
      const saved = s.drives[i];
      if (!saved || saved.kind !== d.device.kind) {
        this.trace(`saved state has ${saved ? `a ${saved.kind} drive` : "no drive"} at device ${i}; it keeps its power-on state`);
        return;
      }
      d.pio = undefined;
      d.usedDma = false;
      d.device.restoreState(saved.ata);
      d.irqPending = saved.irqPending;
      if (saved.busy) {
        this.trace(`device ${i} was saved in the middle of a command; the command ends with ABRT`);
        const tf = d.device.tf;
        tf.status = STATUS.DRDY | STATUS.ERR;
        tf.error = ERROR.ABRT;
        this.bm.endCommand();
        this.bm.status &= ~BM_STATUS.ACTIVE;
        this.raise(d);
      }
    });
    this.updateLine();
  }

  private trace(message: string): void {
    this.env.trace(`${this.index === 0 ? "primary" : "secondary"}: ${message}`);
  }
}

function allOnes(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

function emptyBus(size: number): number {
  return size === 4 ? 0x7f7f7f7f : size === 2 ? 0x7f7f : EMPTY_BUS;
}

function hex(n: number): string {
  return `${n.toString(16).padStart(2, "0")}h`;
}
