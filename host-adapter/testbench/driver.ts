/**
 * Test-side driver library (in the manner of QEMU's libqos): what a BIOS and a guest driver would
 * do to a PCI function, written against TestHost's CPU-side accessors so a device test reads like
 * a driver: find the function, assign its BARs, enable it, poke registers, build descriptors in
 * guest RAM, wait for the interrupt.
 */
import type { AccessSize } from "../host.js";
import {
  CMD_BUS_MASTER,
  CMD_IO,
  CMD_MEMORY,
  PCI_BAR0,
  PCI_COMMAND,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_STATUS,
  STATUS_INTERRUPT,
} from "../pci-config.js";
import { pciIntxIsaIrq } from "./interrupts.js";
import type { TestHost } from "./test-host.js";

// ---- I/O space allocation (the BIOS's job) ----

/** Hands out I/O ranges as SeaBIOS does on a small machine: upward from 0xC000, each aligned to its size. */
export class IoSpaceAllocator {
  constructor(
    private next = 0xc000,
    private readonly end = 0x10000,
  ) {}

  alloc(size: number): number {
    const base = Math.ceil(this.next / size) * size;
    if (base + size > this.end) throw new Error(`I/O space exhausted: no room for ${size} ports`);
    this.next = base + size;
    return base;
  }
}

const ioAllocators = new WeakMap<TestHost, IoSpaceAllocator>();

/** The allocator every PciDriver on `host` shares unless given its own. */
export function ioAllocatorFor(host: TestHost): IoSpaceAllocator {
  let a = ioAllocators.get(host);
  if (!a) ioAllocators.set(host, (a = new IoSpaceAllocator()));
  return a;
}

// ---- PCI functions ----

export type BarKind = "io" | "memory";

export interface BarInfo {
  index: number;
  kind: BarKind;
  size: number;
  base: number;
}

/** Register access through one BAR at the base the guest programmed. Offsets past the BAR throw. */
export class BarAccess {
  constructor(
    private readonly host: TestHost,
    readonly kind: BarKind,
    readonly base: number,
    readonly size: number,
  ) {}

  read(offset: number, size: AccessSize): number {
    this.check(offset, size);
    return this.kind === "io" ? this.host.portIn(this.base + offset, size) : this.host.readMmio(this.base + offset, size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    this.check(offset, size);
    if (this.kind === "io") this.host.portOut(this.base + offset, size, value);
    else this.host.writeMmio(this.base + offset, size, value);
  }

  read8(offset: number): number {
    return this.read(offset, 1);
  }
  read16(offset: number): number {
    return this.read(offset, 2);
  }
  read32(offset: number): number {
    return this.read(offset, 4);
  }
  write8(offset: number, value: number): void {
    this.write(offset, 1, value);
  }
  write16(offset: number, value: number): void {
    this.write(offset, 2, value);
  }
  write32(offset: number, value: number): void {
    this.write(offset, 4, value);
  }

  private check(offset: number, size: AccessSize): void {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.size) {
      throw new RangeError(`BAR access of ${size} bytes at offset ${offset} is outside its ${this.size} bytes`);
    }
  }
}

export interface EnableBits {
  io?: boolean;
  memory?: boolean;
  busMaster?: boolean;
}

/** One PCI function as its driver (and, for setup(), its BIOS) sees it. */
export class PciDriver {
  private readonly sizes = new Map<number, { kind: BarKind; size: number } | undefined>();

  constructor(
    readonly host: TestHost,
    readonly devfn: number,
    private readonly ioSpace: IoSpaceAllocator = ioAllocatorFor(host),
  ) {
    if (this.configRead(0, 2) === 0xffff) throw new Error(`no PCI function at devfn 0x${devfn.toString(16)}`);
  }

  /** The `index`-th function with these IDs (lowest devfn first). */
  static find(host: TestHost, vendorId: number, deviceId: number, index = 0): PciDriver {
    const devfn = host.pciFind(vendorId, deviceId)[index];
    if (devfn === undefined) throw new Error(`PCI ${vendorId.toString(16)}:${deviceId.toString(16)} #${index} not found`);
    return new PciDriver(host, devfn);
  }

  configRead(offset: number, size: AccessSize): number {
    return this.host.configRead(this.devfn, offset, size);
  }

  configWrite(offset: number, size: AccessSize, value: number): void {
    this.host.configWrite(this.devfn, offset, size, value);
  }

  get vendorId(): number {
    return this.configRead(0x00, 2);
  }
  get deviceId(): number {
    return this.configRead(0x02, 2);
  }
  /** class << 16 | subclass << 8 | programming interface */
  get classCode(): number {
    return this.configRead(0x08, 4) >>> 8;
  }
  get command(): number {
    return this.configRead(PCI_COMMAND, 2);
  }
  get status(): number {
    return this.configRead(PCI_STATUS, 2);
  }
  /** Status bit 3: the function is asserting INTx (whether or not INTx is disabled). */
  get intxPending(): boolean {
    return (this.status & STATUS_INTERRUPT) !== 0;
  }
  /** The ISA IRQ the BIOS wrote to the Interrupt Line register. */
  get interruptLine(): number {
    return this.configRead(PCI_INTERRUPT_LINE, 1);
  }

  /** Set the given command bits (others unchanged). */
  enable(bits: EnableBits): void {
    this.configWrite(PCI_COMMAND, 2, this.command | commandBits(bits));
  }

  /** Clear the given command bits (others unchanged). */
  disable(bits: EnableBits): void {
    this.configWrite(PCI_COMMAND, 2, this.command & ~commandBits(bits));
  }

  /**
   * Size BAR `index` as a BIOS does: decoding off, write all-ones, read the mask back, put the old
   * value back, restore the command register. Undefined for an unimplemented BAR.
   */
  sizeBar(index: number): { kind: BarKind; size: number } | undefined {
    const off = PCI_BAR0 + 4 * index;
    const command = this.command;
    this.configWrite(PCI_COMMAND, 2, command & ~(CMD_IO | CMD_MEMORY));
    const old = this.configRead(off, 4);
    this.configWrite(off, 4, 0xffffffff);
    const probe = this.configRead(off, 4);
    this.configWrite(off, 4, old);
    this.configWrite(PCI_COMMAND, 2, command);
    let result: { kind: BarKind; size: number } | undefined;
    if (probe === 0) result = undefined;
    else if (probe & 1) result = { kind: "io", size: (~(probe & ~3) & 0xffff) + 1 };
    else result = { kind: "memory", size: (~(probe & ~0xf) >>> 0) + 1 };
    this.sizes.set(index, result);
    return result;
  }

  /**
   * What the BIOS does for this function: size every BAR, give each I/O BAR a base from the I/O
   * allocator (memory BARs keep the host's fixed base), write the Interrupt Line (PIIX swizzle onto
   * PIRQA..D = 10, 10, 11, 11), and enable decoding for the BAR kinds present.
   */
  setup(options: { busMaster?: boolean } = {}): BarInfo[] {
    const bars: BarInfo[] = [];
    for (let i = 0; i < 6; i++) {
      const sized = this.sizeBar(i);
      if (!sized) continue;
      if (sized.kind === "io") this.configWrite(PCI_BAR0 + 4 * i, 4, this.ioSpace.alloc(sized.size));
      bars.push({ index: i, ...sized, base: this.barRegisterBase(i) });
    }
    const pin = this.configRead(PCI_INTERRUPT_PIN, 1);
    const line = pciIntxIsaIrq(this.devfn >> 3, pin);
    if (line !== undefined) this.configWrite(PCI_INTERRUPT_LINE, 1, line);
    this.enable({
      io: bars.some((b) => b.kind === "io"),
      memory: bars.some((b) => b.kind === "memory"),
      busMaster: options.busMaster ?? false,
    });
    return bars;
  }

  /** Registers behind BAR `index`, at the base currently in the BAR register. */
  bar(index: number): BarAccess {
    const sized = this.sizes.has(index) ? this.sizes.get(index) : this.sizeBar(index);
    if (!sized) throw new Error(`BAR${index} is not implemented`);
    const base = this.barRegisterBase(index);
    if (base === 0) throw new Error(`BAR${index} has no base assigned (run setup() first)`);
    return new BarAccess(this.host, sized.kind, base, sized.size);
  }

  /** Wait for this function's interrupt line (from the Interrupt Line register) to go up. */
  waitIrq(options?: WaitIrqOptions): Promise<boolean> {
    return waitIrq(this.host, this.interruptLine, options);
  }

  private barRegisterBase(index: number): number {
    const raw = this.configRead(PCI_BAR0 + 4 * index, 4);
    return raw & 1 ? raw & 0xfffc : (raw & ~0xf) >>> 0;
  }
}

function commandBits(bits: EnableBits): number {
  return (bits.io ? CMD_IO : 0) | (bits.memory ? CMD_MEMORY : 0) | (bits.busMaster ? CMD_BUS_MASTER : 0);
}

// ---- Interrupts ----

export interface WaitIrqOptions {
  /** Give up after this much virtual time (default 1 s). */
  timeoutNs?: number;
}

/**
 * Advance virtual time, timer by timer, settling promises in between, until ISA line `irq` is up.
 * Returns false if it is still down `timeoutNs` later (the clock then stands at the timeout).
 */
export async function waitIrq(host: TestHost, irq: number, options: WaitIrqOptions = {}): Promise<boolean> {
  const deadline = host.nowNs() + (options.timeoutNs ?? 1e9);
  for (let turns = 0; turns < 1_000_000; turns++) {
    await host.settle();
    if (host.irqLevel(irq)) return true;
    const next = host.nextTimerDeadline();
    if (next === undefined || next > deadline) {
      host.advance(Math.max(0, deadline - host.nowNs()));
      await host.settle();
      return host.irqLevel(irq);
    }
    host.advance(next - host.nowNs());
  }
  throw new Error(`waitIrq(${irq}): timers keep firing without time passing`);
}

// ---- Guest RAM (the driver's own accesses: no DMA accounting, out of range is a test bug) ----

/** Anything with guest RAM (a TestHost). */
export interface HasRam {
  readonly ram: Uint8Array;
}

/** Bump allocator over guest RAM for descriptor tables and buffers, from 1 MiB up by default. */
export class GuestAllocator {
  private next: number;

  constructor(
    private readonly host: HasRam,
    readonly start = 0x10_0000,
    readonly end = host.ram.length,
  ) {
    this.next = start;
  }

  /** `align` must be a power of two. */
  alloc(size: number, align = 16): number {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`alloc(${size}): bad size`);
    if (!Number.isInteger(align) || align <= 0 || align & (align - 1)) throw new RangeError(`alloc: alignment ${align} is not a power of two`);
    const addr = Math.ceil(this.next / align) * align;
    if (addr + size > this.end) throw new RangeError(`guest allocator: ${size} bytes do not fit below 0x${this.end.toString(16)}`);
    this.next = addr + size;
    return addr;
  }

  /** Allocate room for `data` and copy it in. */
  put(data: Uint8Array, align = 16): number {
    const addr = this.alloc(data.length, align);
    this.host.ram.set(data, addr);
    return addr;
  }

  /** Bytes handed out so far (including alignment padding). */
  get used(): number {
    return this.next - this.start;
  }

  reset(): void {
    this.next = this.start;
  }
}

function ramRange(host: HasRam, addr: number, len: number): void {
  if (!Number.isInteger(addr) || addr < 0 || addr + len > host.ram.length) {
    throw new RangeError(`guest RAM access of ${len} bytes at ${addr} is outside RAM`);
  }
}

function readLe(host: HasRam, addr: number, len: number): number {
  ramRange(host, addr, len);
  let v = 0;
  for (let i = len - 1; i >= 0; i--) v = (v << 8) | host.ram[addr + i];
  return v >>> 0;
}

function writeLe(host: HasRam, addr: number, len: number, value: number): void {
  ramRange(host, addr, len);
  for (let i = 0; i < len; i++) host.ram[addr + i] = (value >>> (8 * i)) & 0xff;
}

export const readU8 = (host: HasRam, addr: number): number => readLe(host, addr, 1);
export const readU16 = (host: HasRam, addr: number): number => readLe(host, addr, 2);
export const readU32 = (host: HasRam, addr: number): number => readLe(host, addr, 4);
export const writeU8 = (host: HasRam, addr: number, value: number): void => writeLe(host, addr, 1, value);
export const writeU16 = (host: HasRam, addr: number, value: number): void => writeLe(host, addr, 2, value);
export const writeU32 = (host: HasRam, addr: number, value: number): void => writeLe(host, addr, 4, value);

/** A copy of `len` bytes of guest RAM. */
export function readBytes(host: HasRam, addr: number, len: number): Uint8Array {
  ramRange(host, addr, len);
  return host.ram.slice(addr, addr + len);
}

export function writeBytes(host: HasRam, addr: number, data: Uint8Array): void {
  ramRange(host, addr, data.length);
  host.ram.set(data, addr);
}
