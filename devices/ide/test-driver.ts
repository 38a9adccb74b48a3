/**
 * Test-side driver for the IDE controller (in the manner of QEMU's libqos ide helpers): what a
 * BIOS or an ATA driver does at the register level — select a drive, load the task file, issue a
 * command, move PIO data with 16- or 32-bit accesses, build PRD tables in guest RAM and run the
 * bus master. Written against the CPU-side accessors of the TestHost, described structurally so
 * this file stays free of testbench imports (devices/ may use the testbench only in *.test.ts).
 */

/** The parts of the TestHost a driver uses (the test plays the CPU). */
export interface IdeTestMachine {
  in8(port: number): number;
  in16(port: number): number;
  in32(port: number): number;
  out8(port: number, value: number): void;
  out16(port: number, value: number): void;
  out32(port: number, value: number): void;
  configRead(devfn: number, offset: number, size: 1 | 2 | 4): number;
  configWrite(devfn: number, offset: number, size: 1 | 2 | 4, value: number): void;
  readonly ram: Uint8Array;
  irqLevel(irq: number): boolean;
  settle(): Promise<void>;
}

export const STATUS_BSY = 0x80;
export const STATUS_DRDY = 0x40;
export const STATUS_DRQ = 0x08;
export const STATUS_ERR = 0x01;

export const CMD = {
  READ_SECTORS: 0x20,
  READ_SECTORS_EXT: 0x24,
  READ_DMA_EXT: 0x25,
  WRITE_SECTORS: 0x30,
  WRITE_DMA_EXT: 0x35,
  EXECUTE_DEVICE_DIAGNOSTIC: 0x90,
  PACKET: 0xa0,
  IDENTIFY_PACKET_DEVICE: 0xa1,
  READ_MULTIPLE: 0xc4,
  SET_MULTIPLE_MODE: 0xc6,
  READ_DMA: 0xc8,
  WRITE_DMA: 0xca,
  FLUSH_CACHE: 0xe7,
  IDENTIFY_DEVICE: 0xec,
  SET_FEATURES: 0xef,
} as const;

export interface PrdEntry {
  addr: number;
  /** Bytes; 65536 is written as 0. */
  len: number;
  eot?: boolean;
}

export interface TaskFileWrite {
  features?: number;
  count?: number;
  lbaLow?: number;
  lbaMid?: number;
  lbaHigh?: number;
  device?: number;
  /** LBA48: the HOB bytes, written first. */
  hob?: { features?: number; count?: number; lbaLow?: number; lbaMid?: number; lbaHigh?: number };
}

/** One channel of an IDE controller in compatibility mode. */
export class IdeTestDriver {
  readonly base: number;
  readonly ctl: number;
  readonly irq: number;

  constructor(
    readonly m: IdeTestMachine,
    readonly channel: 0 | 1,
    /** Base of this channel's eight bus master ports (BAR4 base + 8 * channel). */
    readonly bm: number,
  ) {
    this.base = channel === 0 ? 0x1f0 : 0x170;
    this.ctl = channel === 0 ? 0x3f6 : 0x376;
    this.irq = channel === 0 ? 14 : 15;
  }

  /** Assign BAR4 and enable I/O decoding and bus mastering (the BIOS's job). */
  static setupPci(m: IdeTestMachine, devfn: number, bmBase = 0xc000, busMaster = true): void {
    m.configWrite(devfn, 0x20, 4, bmBase | 1);
    const cmd = m.configRead(devfn, 0x04, 2);
    m.configWrite(devfn, 0x04, 2, cmd | 1 | (busMaster ? 4 : 0));
  }

  // ---- registers ----

  status(): number {
    return this.m.in8(this.base + 7);
  }
  altStatus(): number {
    return this.m.in8(this.ctl);
  }
  error(): number {
    return this.m.in8(this.base + 1);
  }
  reg(offset: number): number {
    return this.m.in8(this.base + offset);
  }
  setReg(offset: number, value: number): void {
    this.m.out8(this.base + offset, value);
  }
  devctl(value: number): void {
    this.m.out8(this.ctl, value);
  }
  get irqUp(): boolean {
    return this.m.irqLevel(this.irq);
  }

  /** Select device 0 or 1 (with the LBA bit and obsolete bits 7/5 set, as drivers write it). */
  select(dev: 0 | 1, extra = 0x40): void {
    this.setReg(6, 0xa0 | extra | (dev << 4));
  }

  /** Load the task file (HOB bytes first) and write the command. */
  command(command: number, tf: TaskFileWrite = {}): void {
    if (tf.device !== undefined) this.setReg(6, tf.device);
    const h = tf.hob;
    if (h) {
      this.setReg(1, h.features ?? 0);
      this.setReg(2, h.count ?? 0);
      this.setReg(3, h.lbaLow ?? 0);
      this.setReg(4, h.lbaMid ?? 0);
      this.setReg(5, h.lbaHigh ?? 0);
    }
    this.setReg(1, tf.features ?? 0);
    this.setReg(2, tf.count ?? 0);
    this.setReg(3, tf.lbaLow ?? 0);
    this.setReg(4, tf.lbaMid ?? 0);
    this.setReg(5, tf.lbaHigh ?? 0);
    this.setReg(7, command);
  }

  /** Task file of a 28-bit LBA command for device `dev`. */
  static lba28(dev: 0 | 1, lba: number, count: number): TaskFileWrite {
    return {
      count: count & 0xff,
      lbaLow: lba & 0xff,
      lbaMid: (lba >>> 8) & 0xff,
      lbaHigh: (lba >>> 16) & 0xff,
      device: 0xe0 | (dev << 4) | ((lba >>> 24) & 0x0f),
    };
  }

  static lba48(dev: 0 | 1, lba: number, count: number): TaskFileWrite {
    const high = Math.floor(lba / 0x1000000);
    return {
      count: count & 0xff,
      lbaLow: lba & 0xff,
      lbaMid: (lba >>> 8) & 0xff,
      lbaHigh: (lba >>> 16) & 0xff,
      device: 0x40 | (dev << 4),
      hob: { count: (count >> 8) & 0xff, lbaLow: high & 0xff, lbaMid: (high >>> 8) & 0xff, lbaHigh: (high >>> 16) & 0xff },
    };
  }

  /** Let the device work (medium I/O runs on promises) until `cond` holds; false if it never does. */
  async until(cond: () => boolean, rounds = 2000): Promise<boolean> {
    for (let i = 0; i < rounds; i++) {
      if (cond()) return true;
      await this.m.settle();
    }
    return cond();
  }

  /** Poll alternate status until BSY clears (does not clear the interrupt). */
  async waitNotBusy(): Promise<number> {
    let s = this.altStatus();
    await this.until(() => !((s = this.altStatus()) & STATUS_BSY));
    if (s & STATUS_BSY) throw new Error(`device still busy (status ${s.toString(16)})`);
    return s;
  }

  /** Wait for INTRQ; false if it does not come. */
  waitIrq(): Promise<boolean> {
    return this.until(() => this.irqUp);
  }

  // ---- PIO ----

  /** Read `bytes` from the data port with accesses of `width` bytes. */
  readData(bytes: number, width: 2 | 4 = 2): Uint8Array {
    const out = new Uint8Array(bytes);
    const view = new DataView(out.buffer);
    for (let i = 0; i < bytes; i += width) {
      if (width === 4 && i + 4 <= bytes) view.setUint32(i, this.m.in32(this.base), true);
      else view.setUint16(i, this.m.in16(this.base), true);
    }
    return out;
  }

  writeData(data: Uint8Array, width: 2 | 4 = 2): void {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    for (let i = 0; i < data.length; i += width) {
      if (width === 4 && i + 4 <= data.length) this.m.out32(this.base, view.getUint32(i, true));
      else this.m.out16(this.base, view.getUint16(i, true));
    }
  }

  /** PIO data-in: wait for DRQ per block, read it. Returns the data and the final status. */
  async pioIn(blocks: number, blockBytes = 512, width: 2 | 4 = 2): Promise<{ data: Uint8Array; status: number }> {
    const data = new Uint8Array(blocks * blockBytes);
    for (let b = 0; b < blocks; b++) {
      if (!(await this.waitIrq())) throw new Error(`no interrupt for block ${b}`);
      const s = this.status(); // clears INTRQ
      if ((s & (STATUS_BSY | STATUS_DRQ | STATUS_ERR)) !== STATUS_DRQ) throw new Error(`block ${b}: status ${s.toString(16)} (error ${this.error().toString(16)})`);
      data.set(this.readData(blockBytes, width), b * blockBytes);
    }
    return { data, status: await this.waitNotBusy() };
  }

  /** PIO data-out: first block on DRQ without an interrupt, later ones after their interrupt. */
  async pioOut(data: Uint8Array, blockBytes = 512, width: 2 | 4 = 2): Promise<number> {
    for (let off = 0; off < data.length; off += blockBytes) {
      if (off > 0 && !(await this.waitIrq())) throw new Error(`no interrupt before block at ${off}`);
      const s = off > 0 ? this.status() : await this.waitNotBusy();
      if ((s & (STATUS_BSY | STATUS_DRQ | STATUS_ERR)) !== STATUS_DRQ) throw new Error(`block at ${off}: status ${s.toString(16)}`);
      this.writeData(data.subarray(off, off + blockBytes), width);
    }
    if (!(await this.waitIrq())) throw new Error("no completion interrupt");
    return this.status();
  }

  async identify(dev: 0 | 1, width: 2 | 4 = 2, command: number = CMD.IDENTIFY_DEVICE): Promise<Uint16Array> {
    this.select(dev);
    this.command(command, { device: 0xa0 | (dev << 4) });
    const { data } = await this.pioIn(1, 512, width);
    return new Uint16Array(data.buffer, 0, 256);
  }

  // ---- bus master ----

  bmCommand(value: number): void {
    this.m.out8(this.bm, value);
  }
  bmStatus(): number {
    return this.m.in8(this.bm + 2);
  }
  /** Write-1-to-clear interrupt and error. */
  bmClear(): void {
    this.m.out8(this.bm + 2, this.bmStatus() | 0x06);
  }
  bmPrd(addr: number): void {
    this.m.out32(this.bm + 4, addr);
  }

  /** Write a PRD table at `at`. */
  writePrd(at: number, entries: readonly PrdEntry[]): void {
    const view = new DataView(this.m.ram.buffer, this.m.ram.byteOffset);
    entries.forEach((e, i) => {
      view.setUint32(at + 8 * i, e.addr >>> 0, true);
      view.setUint32(at + 8 * i + 4, ((e.len & 0xffff) | (e.eot ? 0x80000000 : 0)) >>> 0, true);
    });
  }

  /**
   * A DMA command as Linux's libata runs it: PRD pointer, direction with start clear, clear the
   * status bits, issue the command, start the engine, wait for the interrupt, stop the engine,
   * read status. Returns the BM status at the interrupt and the ATA status.
   */
  async dma(command: number, tf: TaskFileWrite, prdTable: number, toMemory: boolean): Promise<{ bmStatus: number; status: number; irq: boolean }> {
    this.bmPrd(prdTable);
    this.bmCommand(toMemory ? 0x08 : 0x00);
    this.bmClear();
    this.command(command, tf);
    this.bmCommand((toMemory ? 0x08 : 0x00) | 0x01);
    const irq = await this.waitIrq();
    const bmStatus = this.bmStatus();
    this.bmCommand(toMemory ? 0x08 : 0x00);
    const status = this.status();
    this.bmClear();
    return { bmStatus, status, irq };
  }
}

/** Read IDENTIFY string words (byte-swapped ASCII). */
export function identifyString(id: Uint16Array, first: number, words: number): string {
  let s = "";
  for (let i = 0; i < words; i++) s += String.fromCharCode(id[first + i]! >> 8, id[first + i]! & 0xff);
  return s.trimEnd();
}
