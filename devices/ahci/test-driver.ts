/**
 * Test-side AHCI driver (in the manner of QEMU's libqos ahci helpers): what SeaBIOS or libahci
 * does at the register level — enable AHCI, reset the HBA, give a port its command list and
 * received-FIS area, build command headers, command tables and PRDTs in guest RAM, issue slots
 * (with PxSACT for NCQ), wait for them, and read the FISes the HBA posted. Written against the
 * CPU-side accessors of the TestHost, described structurally so this file stays free of
 * testbench imports (devices/ may use the testbench only in *.test.ts).
 */
import type { TaskFile } from "../ata/task-file.js";
import { lba48Regs } from "../ata/test-support.js";
import { headerFlags, prdFlags, type PrdSpec } from "./command-list.js";
import { encodeH2d } from "./fis.js";
import { CMD_HEADER_SIZE, CMD_TABLE, GHC, HBA_REG, PORT_BASE, PORT_REG, PORT_STRIDE, PRD_SIZE, PxCMD, PxIS, RX_FIS } from "./registers.js";

export type { PrdSpec } from "./command-list.js";

/** The parts of the TestHost a driver uses (the test plays the CPU). */
export interface AhciTestMachine {
  readMmio(addr: number, size: 1 | 2 | 4): number;
  writeMmio(addr: number, size: 1 | 2 | 4, value: number): void;
  configRead(devfn: number, offset: number, size: 1 | 2 | 4): number;
  configWrite(devfn: number, offset: number, size: 1 | 2 | 4, value: number): void;
  readonly ram: Uint8Array;
  settle(): Promise<void>;
}

/** Guest memory for descriptors and buffers (the testbench's GuestAllocator fits). */
export interface Allocator {
  alloc(size: number, align?: number): number;
}

export const ATA = {
  READ_SECTORS: 0x20,
  READ_DMA_EXT: 0x25,
  READ_LOG_EXT: 0x2f,
  WRITE_SECTORS: 0x30,
  WRITE_DMA_EXT: 0x35,
  DATA_SET_MANAGEMENT: 0x06,
  READ_FPDMA_QUEUED: 0x60,
  WRITE_FPDMA_QUEUED: 0x61,
  PACKET: 0xa0,
  IDENTIFY_PACKET_DEVICE: 0xa1,
  READ_DMA: 0xc8,
  WRITE_DMA: 0xca,
  FLUSH_CACHE_EXT: 0xea,
  IDENTIFY_DEVICE: 0xec,
  SET_FEATURES: 0xef,
} as const;

/** The PxIE libahci programs (DEF_PORT_IRQ): errors, hot-plug, and every completion FIS. */
export const LINUX_IE = (PxIS.TFES | PxIS.HBFS | PxIS.HBDS | PxIS.IFS | PxIS.IPMS | PxIS.PRCS | PxIS.PCS | PxIS.UFS | PxIS.DPS | PxIS.SDBS | PxIS.DSS | PxIS.PSS | PxIS.DHRS) >>> 0;

export type H2dRegs = Partial<Omit<TaskFile, "status" | "error">>;

/** Task file of a 48-bit LBA command. */
export function lba48(command: number, lba: number, count: number, extra: H2dRegs = {}): H2dRegs {
  return { ...lba48Regs(command, lba, count), ...extra };
}

/** Task file of a 28-bit LBA command. */
export function lba28(command: number, lba: number, count: number): H2dRegs {
  return { command, count: count & 0xff, lbaLow: lba & 0xff, lbaMid: lba >>> 8 & 0xff, lbaHigh: lba >>> 16 & 0xff, device: 0x40 | lba >>> 24 & 0x0f };
}

/** READ/WRITE FPDMA QUEUED: tag in count 7:3, sector count in features. */
export function fpdma(write: boolean, tag: number, lba: number, count: number): H2dRegs {
  return lba48(write ? ATA.WRITE_FPDMA_QUEUED : ATA.READ_FPDMA_QUEUED, lba, 0, { count: tag << 3, hobCount: 0, features: count & 0xff, hobFeatures: count >> 8 & 0xff });
}

export interface CommandSpec {
  /** The command FIS (a Register H2D FIS; see encodeH2d) or its registers. */
  fis: Uint8Array | H2dRegs;
  /** ATAPI command bytes (ACMD). */
  acmd?: ArrayLike<number>;
  prdt?: readonly PrdSpec[];
  write?: boolean;
  atapi?: boolean;
  /** PRDTL to put in the header (default prdt.length): lets a test lie about it. */
  prdtl?: number;
  /** Header flags to add (reset, clear busy). */
  reset?: boolean;
  clearBusy?: boolean;
  /** Where to put the command table (default: allocated). */
  table?: number;
}

export interface PortMemory {
  clb: number;
  fb: number;
}

export interface D2hFis {
  type: number;
  interrupt: boolean;
  status: number;
  error: number;
  /** Signature fields (count, LBA low/mid/high). */
  count: number;
  lbaLow: number;
  lbaMid: number;
  lbaHigh: number;
}

/** One AHCI function: ABAR access plus per-port command memory. */
export class AhciTestDriver {
  readonly abar: number;
  readonly portMemory = new Map<number, PortMemory>();

  constructor(
    readonly m: AhciTestMachine,
    readonly devfn: number,
    readonly alloc: Allocator,
  ) {
    this.abar = (m.configRead(devfn, 0x24, 4) & ~0xf) >>> 0;
  }

  /** Enable memory decoding and bus mastering, write the interrupt line (the BIOS's job). */
  static setupPci(m: AhciTestMachine, devfn: number, opts: { busMaster?: boolean; irqLine?: number } = {}): void {
    const cmd = m.configRead(devfn, 0x04, 2);
    m.configWrite(devfn, 0x04, 2, cmd | 0x02 | (opts.busMaster ?? true ? 0x04 : 0));
    if (opts.irqLine !== undefined) m.configWrite(devfn, 0x3c, 1, opts.irqLine);
  }

  // ---- registers ----

  hba(reg: number): number {
    return this.m.readMmio(this.abar + reg, 4);
  }
  setHba(reg: number, value: number): void {
    this.m.writeMmio(this.abar + reg, 4, value >>> 0);
  }
  reg(port: number, reg: number): number {
    return this.m.readMmio(this.abar + PORT_BASE + port * PORT_STRIDE + reg, 4);
  }
  setReg(port: number, reg: number, value: number): void {
    this.m.writeMmio(this.abar + PORT_BASE + port * PORT_STRIDE + reg, 4, value >>> 0);
  }
  /** Clear PxIS (all bits it reads) and the port's IS bit, as an interrupt handler does. */
  ackPort(port: number): number {
    const is = this.reg(port, PORT_REG.IS);
    this.setReg(port, PORT_REG.IS, is);
    this.setHba(HBA_REG.IS, 1 << port);
    return is;
  }

  /** GHC.AE then GHC.HR, waiting for HR to clear (libahci's ahci_reset_controller). */
  resetHba(): void {
    this.setHba(HBA_REG.GHC, GHC.AE);
    this.setHba(HBA_REG.GHC, GHC.AE | GHC.HR);
    if (this.hba(HBA_REG.GHC) & GHC.HR) throw new Error("GHC.HR did not clear");
  }

  /** Interrupts on (GHC.IE). */
  enableInterrupts(on = true): void {
    this.setHba(HBA_REG.GHC, GHC.AE | (on ? GHC.IE : 0));
  }

  // ---- port bring-up ----

  /**
   * Stop the port, give it a command list and FIS area (new ones unless it has some), clear
   * SERR/IS, enable FIS receive, let the signature arrive, start it, and set PxIE.
   */
  async startPort(port: number, opts: { ie?: number; start?: boolean } = {}): Promise<PortMemory> {
    this.stopPort(port);
    let mem = this.portMemory.get(port);
    if (!mem) {
      mem = { clb: this.alloc.alloc(1024, 1024), fb: this.alloc.alloc(256, 256) };
      this.portMemory.set(port, mem);
    }
    this.setReg(port, PORT_REG.CLB, mem.clb);
    this.setReg(port, PORT_REG.FB, mem.fb);
    this.setReg(port, PORT_REG.SERR, this.reg(port, PORT_REG.SERR));
    this.setReg(port, PORT_REG.IS, this.reg(port, PORT_REG.IS));
    this.setReg(port, PORT_REG.CMD, this.reg(port, PORT_REG.CMD) | PxCMD.FRE);
    await this.m.settle();
    if (opts.start ?? true) this.setReg(port, PORT_REG.CMD, this.reg(port, PORT_REG.CMD) | PxCMD.ST);
    if (opts.ie !== undefined) this.setReg(port, PORT_REG.IE, opts.ie);
    return mem;
  }

  stopPort(port: number): void {
    const cmd = this.reg(port, PORT_REG.CMD);
    this.setReg(port, PORT_REG.CMD, cmd & ~(PxCMD.ST | PxCMD.FRE));
    if (this.reg(port, PORT_REG.CMD) & (PxCMD.CR | PxCMD.FR)) throw new Error(`port ${port}: CR/FR did not clear`);
  }

  /** Cycle ST (the error recovery of AHCI 6.2.2). */
  restartEngine(port: number): void {
    const cmd = this.reg(port, PORT_REG.CMD);
    this.setReg(port, PORT_REG.CMD, cmd & ~PxCMD.ST);
    this.setReg(port, PORT_REG.SERR, this.reg(port, PORT_REG.SERR));
    this.setReg(port, PORT_REG.IS, this.reg(port, PORT_REG.IS));
    this.setReg(port, PORT_REG.CMD, cmd | PxCMD.ST);
  }

  /** COMRESET: SCTL.DET = 1, then 0. */
  comreset(port: number): void {
    const sctl = this.reg(port, PORT_REG.SCTL) & ~0xf;
    this.setReg(port, PORT_REG.SCTL, sctl | 1);
    this.setReg(port, PORT_REG.SCTL, sctl);
  }

  // ---- commands ----

  /** Build a slot's command header and table; returns the table's address. */
  buildCommand(port: number, slot: number, c: CommandSpec): number {
    const mem = this.mem(port);
    const prdt = c.prdt ?? [];
    const table = c.table ?? this.alloc.alloc(CMD_TABLE.PRDT + Math.max(1, prdt.length) * PRD_SIZE, 128);
    const ram = this.m.ram;
    ram.fill(0, table, table + CMD_TABLE.PRDT);
    ram.set(c.fis instanceof Uint8Array ? c.fis : encodeH2d(c.fis), table);
    if (c.acmd) ram.set(Array.from(c.acmd).slice(0, 16), table + CMD_TABLE.ACMD);
    const view = new DataView(ram.buffer, ram.byteOffset);
    prdt.forEach((e, i) => {
      const at = table + CMD_TABLE.PRDT + i * PRD_SIZE;
      view.setUint32(at, e.addr >>> 0, true);
      view.setUint32(at + 4, 0, true);
      view.setUint32(at + 8, 0, true);
      view.setUint32(at + 12, prdFlags(e.len, e.interrupt), true);
    });
    const header = mem.clb + slot * CMD_HEADER_SIZE;
    view.setUint32(header, headerFlags({ prdtl: c.prdtl ?? prdt.length, write: c.write, atapi: c.atapi, reset: c.reset, clearBusy: c.clearBusy, prefetch: c.atapi }), true);
    view.setUint32(header + 4, 0x5a5a_5a5a, true); // PRDBC: the HBA must overwrite it
    view.setUint32(header + 8, table, true);
    view.setUint32(header + 12, 0, true);
    return table;
  }

  /** Issue slots: PxSACT first for queued commands, then PxCI. */
  issue(port: number, slots: number, queued = false): void {
    if (queued) this.setReg(port, PORT_REG.SACT, slots);
    this.setReg(port, PORT_REG.CI, slots);
  }

  /** Build, issue, and wait until the slot's PxCI bit clears or the port reports an error. */
  async run(port: number, slot: number, c: CommandSpec): Promise<{ is: number; tfd: number; ci: number; prdbc: number }> {
    this.buildCommand(port, slot, c);
    this.issue(port, 1 << slot);
    await this.until(() => !(this.reg(port, PORT_REG.CI) & 1 << slot) || (this.reg(port, PORT_REG.IS) & ERROR_BITS) !== 0);
    return { is: this.reg(port, PORT_REG.IS), tfd: this.reg(port, PORT_REG.TFD), ci: this.reg(port, PORT_REG.CI), prdbc: this.prdbc(port, slot) };
  }

  /** The header's PRDBC. */
  prdbc(port: number, slot: number): number {
    return new DataView(this.m.ram.buffer, this.m.ram.byteOffset).getUint32(this.mem(port).clb + slot * CMD_HEADER_SIZE + 4, true);
  }

  /** Let the device work until `cond` holds; false if it never does. */
  async until(cond: () => boolean, rounds = 2000): Promise<boolean> {
    for (let i = 0; i < rounds; i++) {
      if (cond()) return true;
      await this.m.settle();
    }
    return cond();
  }

  // ---- received FISes ----

  fisArea(port: number): Uint8Array {
    const fb = this.mem(port).fb;
    return this.m.ram.slice(fb, fb + RX_FIS.SIZE);
  }

  d2h(port: number): D2hFis {
    return regFis(this.fisArea(port).subarray(RX_FIS.RFIS));
  }

  pioSetup(port: number): D2hFis & { toHost: boolean; endStatus: number; transferCount: number } {
    const b = this.fisArea(port).subarray(RX_FIS.PSFIS);
    return { ...regFis(b), toHost: (b[1]! & 0x20) !== 0, endStatus: b[15]!, transferCount: b[16]! | b[17]! << 8 };
  }

  sdb(port: number): { type: number; interrupt: boolean; status: number; error: number; sactive: number } {
    const b = this.fisArea(port).subarray(RX_FIS.SDBFIS);
    return { type: b[0]!, interrupt: (b[1]! & 0x40) !== 0, status: b[2]!, error: b[3]!, sactive: new DataView(b.buffer, b.byteOffset).getUint32(4, true) };
  }

  // ---- common commands ----

  /** IDENTIFY (PACKET) DEVICE by PIO into a fresh buffer; returns the words and the outcome. */
  async identify(port: number, slot = 0, command: number = ATA.IDENTIFY_DEVICE): Promise<{ words: Uint16Array; is: number; tfd: number; ci: number; prdbc: number; buf: number }> {
    const buf = this.alloc.alloc(512, 2);
    const r = await this.run(port, slot, { fis: { command }, prdt: [{ addr: buf, len: 512 }] });
    const words = new Uint16Array(256);
    for (let i = 0; i < 256; i++) words[i] = this.m.ram[buf + 2 * i]! | this.m.ram[buf + 2 * i + 1]! << 8;
    return { words, ...r, buf };
  }

  private mem(port: number): PortMemory {
    const mem = this.portMemory.get(port);
    if (!mem) throw new Error(`port ${port} has no command list (startPort first)`);
    return mem;
  }
}

/** PxIS bits that end a wait: the fatal ones. */
const ERROR_BITS = PxIS.TFES | PxIS.HBFS | PxIS.HBDS | PxIS.IFS;

function regFis(b: Uint8Array): D2hFis {
  return { type: b[0]!, interrupt: (b[1]! & 0x40) !== 0, status: b[2]!, error: b[3]!, lbaLow: b[4]!, lbaMid: b[5]!, lbaHigh: b[6]!, count: b[12]! };
}

/** IDENTIFY string words (byte-swapped ASCII). */
export function identifyString(id: Uint16Array, first: number, words: number): string {
  let s = "";
  for (let i = 0; i < words; i++) s += String.fromCharCode(id[first + i]! >> 8, id[first + i]! & 0xff);
  return s.trimEnd();
}
