import { describe, expect, it } from "vitest";
import type { AccessSize, DeviceState, Host, PciFunction, RegionHandler, TimerHandle } from "../host.js";
import { CMD_INTX_DISABLE, CMD_IO, CMD_MEMORY, PCI_BAR0, PCI_COMMAND, PCI_INTERRUPT_LINE, PCI_STATUS, STATUS_INTERRUPT } from "../pci-config.js";
import {
  GuestAllocator,
  IoSpaceAllocator,
  MMIO_WINDOW_BASE,
  PciDriver,
  TestHost,
  type TestHostOptions,
  readBytes,
  readU16,
  readU32,
  waitIrq,
  writeBytes,
  writeU8,
  writeU16,
  writeU32,
} from "./index.js";

// ---- A toy device that uses the host the way the real controllers will ----

const TOY_VENDOR = 0x1234;
const TOY_DEVICE = 0x5678;

/** Toy registers: one block, reachable through the I/O BAR (64 ports) and the MMIO BAR (4 KiB). */
const REG_SCRATCH = 0x00;
/** Write: raise INTx at the next safe point (the right way). */
const REG_DOORBELL = 0x04;
/** Read: ST_*; write 1s to clear. */
const REG_STATUS = 0x08;
const REG_DMA_SRC = 0x0c;
const REG_DMA_DST = 0x10;
const REG_DMA_LEN = 0x14;
/** Write: copy DMA_LEN bytes from DMA_SRC to DMA_DST in guest memory, then interrupt. */
const REG_DMA_GO = 0x18;
/** Write n: interrupt n ns from now. */
const REG_TIMER = 0x20;
/** Write: raise INTx directly inside the handler (what a device must not do from MMIO). */
const REG_BAD_DOORBELL = 0x24;
/** Read-only identification, at the very end of the I/O BAR. */
const REG_ID = 0x3c;
const TOY_ID = 0xa5a5_5a5a;

const ST_IRQ = 1 << 0;
const ST_DMA_DONE = 1 << 1;
const ST_DMA_ERROR = 1 << 2;

interface ToyOptions {
  name?: string;
  slot?: number;
  fn?: number;
  stateId?: string;
  /** Complete DMA through a promise that resolves on a later event-loop turn (like media I/O). */
  asyncDma?: boolean;
}

class ToyDevice {
  scratch = 0;
  status = 0;
  dmaSrc = 0;
  dmaDst = 0;
  dmaLen = 0;
  resets = 0;
  timerDeadline: number | undefined;
  readonly barChanges: [number, number | undefined][] = [];
  readonly configWrites: { offset: number; size: AccessSize; value: number; stored: number }[] = [];
  readonly pci: PciFunction;
  private timer: TimerHandle | undefined;

  constructor(
    private readonly host: Host,
    private readonly opts: ToyOptions = {},
  ) {
    const regs: RegionHandler = { read: (o) => this.read(o), write: (o, _s, v) => this.write(o, v) };
    this.pci = host.registerPciFunction({
      name: opts.name ?? "toy",
      vendorId: TOY_VENDOR,
      deviceId: TOY_DEVICE,
      classCode: 0xff_0000,
      interruptPin: 1,
      slot: opts.slot,
      fn: opts.fn,
      bars: [
        { kind: "io", size: 64, handler: regs },
        { kind: "memory", size: 4096, handler: regs },
      ],
      onBarChange: (i, base) => this.barChanges.push([i, base]),
      onConfigWrite: (offset, size, value) => this.configWrites.push({ offset, size, value, stored: this.pci.configRead(offset, size) }),
    });
    host.onReset(() => this.reset());
    host.registerState(opts.stateId ?? opts.name ?? "toy", { save: () => this.save(), restore: (s) => this.restore(s) });
  }

  private read(offset: number): number {
    const shift = 8 * (offset & 3);
    return this.register(offset & ~3) >>> shift;
  }

  private register(offset: number): number {
    switch (offset) {
      case REG_SCRATCH:
        return this.scratch;
      case REG_STATUS:
        return this.status;
      case REG_DMA_SRC:
        return this.dmaSrc;
      case REG_DMA_DST:
        return this.dmaDst;
      case REG_DMA_LEN:
        return this.dmaLen;
      case REG_ID:
        return TOY_ID;
      default:
        return 0;
    }
  }

  private write(offset: number, value: number): void {
    switch (offset) {
      case REG_SCRATCH:
        this.scratch = value;
        break;
      case REG_DOORBELL:
        this.host.defer(() => this.interrupt(0));
        break;
      case REG_STATUS:
        this.status &= ~value;
        this.host.defer(() => this.updateIrq());
        break;
      case REG_DMA_SRC:
        this.dmaSrc = value;
        break;
      case REG_DMA_DST:
        this.dmaDst = value;
        break;
      case REG_DMA_LEN:
        this.dmaLen = value;
        break;
      case REG_DMA_GO:
        this.host.defer(() => (this.opts.asyncDma ? void this.dmaAsync() : this.dma()));
        break;
      case REG_TIMER:
        this.arm(this.host.clock.nowNs() + value);
        break;
      case REG_BAD_DOORBELL:
        this.status |= ST_IRQ;
        this.updateIrq();
        break;
    }
  }

  private dma(): void {
    const buf = new Uint8Array(this.dmaLen);
    const ok = this.pci.busMasterEnabled && this.host.memory.read(this.dmaSrc, buf) && this.host.memory.write(this.dmaDst, buf);
    this.interrupt(ok ? ST_DMA_DONE : ST_DMA_ERROR);
  }

  private async dmaAsync(): Promise<void> {
    const buf = new Uint8Array(this.dmaLen);
    if (!this.host.memory.read(this.dmaSrc, buf)) return this.interrupt(ST_DMA_ERROR);
    await new Promise((r) => setImmediate(r)); // the medium takes a while
    await Promise.resolve();
    this.interrupt(this.host.memory.write(this.dmaDst, buf) ? ST_DMA_DONE : ST_DMA_ERROR);
  }

  private arm(deadline: number): void {
    this.timer?.cancel();
    this.timerDeadline = deadline;
    this.timer = this.host.clock.setTimer(deadline - this.host.clock.nowNs(), () => {
      this.timer = this.timerDeadline = undefined;
      this.interrupt(0);
    });
  }

  private interrupt(bits: number): void {
    this.status |= ST_IRQ | bits;
    this.updateIrq();
  }

  private updateIrq(): void {
    this.pci.irq.set((this.status & ST_IRQ) !== 0);
  }

  private reset(): void {
    this.resets++;
    this.timer?.cancel();
    this.timer = this.timerDeadline = undefined;
    this.scratch = this.status = this.dmaSrc = this.dmaDst = this.dmaLen = 0;
    this.updateIrq();
  }

  private save(): DeviceState {
    const { scratch, status, dmaSrc, dmaDst, dmaLen, timerDeadline } = this;
    return { version: 1, data: { scratch, status, dmaSrc, dmaDst, dmaLen, timerDeadline: timerDeadline ?? null } };
  }

  private restore(state: DeviceState): void {
    const d = state.data as { scratch: number; status: number; dmaSrc: number; dmaDst: number; dmaLen: number; timerDeadline: number | null };
    Object.assign(this, { scratch: d.scratch, status: d.status, dmaSrc: d.dmaSrc, dmaDst: d.dmaDst, dmaLen: d.dmaLen });
    if (d.timerDeadline !== null) this.arm(d.timerDeadline);
    this.updateIrq();
  }
}

const nodeYield = () => new Promise<void>((r) => setImmediate(r));

function machine(options: TestHostOptions = {}) {
  const host = new TestHost({ yieldToEventLoop: nodeYield, ...options });
  const toy = new ToyDevice(host, { asyncDma: false });
  const drv = PciDriver.find(host, TOY_VENDOR, TOY_DEVICE);
  return { host, toy, drv };
}

/** A toy that the BIOS has set up: I/O BAR at 0xC000, memory BAR at its fixed base, bus master on. */
function readyMachine(options: TestHostOptions = {}) {
  const m = machine(options);
  const bars = m.drv.setup({ busMaster: true });
  return { ...m, bars, io: m.drv.bar(0), mem: m.drv.bar(1) };
}

// ---- Guest memory ----

describe("guest memory", () => {
  const size = 64 * 1024;

  it("moves whole ranges up to the last byte of RAM", () => {
    const { memory, ram } = new TestHost({ memorySize: size });
    expect(memory.size).toBe(size);
    expect(memory.write(size - 4, Uint8Array.of(1, 2, 3, 4))).toBe(true);
    const back = new Uint8Array(4);
    expect(memory.read(size - 4, back)).toBe(true);
    expect(back).toEqual(Uint8Array.of(1, 2, 3, 4));
    expect(memory.read32(size - 4)).toBe(0x0403_0201);
    expect(memory.write32(0, 0xdead_beef)).toBe(true);
    expect([...ram.subarray(0, 4)]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    expect(memory.read(size, new Uint8Array(0))).toBe(true);
  });

  it("refuses accesses not wholly inside RAM, moving nothing", () => {
    const host = new TestHost({ memorySize: size });
    const { memory, ram } = host;
    ram.fill(0x11);
    const dst = new Uint8Array(8).fill(0x77);
    expect(memory.read(size - 4, dst)).toBe(false); // straddles the end
    expect(dst).toEqual(new Uint8Array(8).fill(0x77));
    expect(memory.write(size - 4, new Uint8Array(8))).toBe(false);
    expect(ram.subarray(size - 4).every((b) => b === 0x11)).toBe(true);
    for (const addr of [-1, -8, Number.NaN, 1.5, Infinity, 2 ** 53]) {
      expect(memory.read(addr, dst)).toBe(false);
      expect(memory.write(addr, new Uint8Array(1))).toBe(false);
    }
    expect(memory.read32(size - 3)).toBeUndefined();
    expect(memory.write32(size - 2, 0)).toBe(false);
    expect(memory.read32(-4)).toBeUndefined();
    expect(ram.every((b) => b === 0x11)).toBe(true);
    expect(host.dmaErrors).toBe(2 + 12 + 3);
  });

  it("gathers and scatters segments in order", () => {
    const { memory, ram } = new TestHost({ memorySize: size });
    ram.set([1, 2, 3], 0x100);
    ram.set([4, 5], 0x200);
    const dst = new Uint8Array(4);
    expect(memory.readSg([{ addr: 0x100, len: 3 }, { addr: 0x200, len: 2 }], dst)).toBe(true);
    expect(dst).toEqual(Uint8Array.of(1, 2, 3, 4)); // stops when dst is full
    expect(memory.writeSg([{ addr: 0x300, len: 1 }, { addr: 0x400, len: 8 }], Uint8Array.of(9, 8, 7))).toBe(true);
    expect([ram[0x300], ram[0x400], ram[0x401], ram[0x402]]).toEqual([9, 8, 7, 0]);
  });

  it("moves nothing when one segment of a list is bad", () => {
    const host = new TestHost({ memorySize: size });
    const { memory, ram } = host;
    ram.fill(0x22);
    const bad = [
      [{ addr: 0, len: 4 }, { addr: size - 2, len: 4 }], // straddles the end
      [{ addr: 0, len: 4 }, { addr: -4, len: 4 }], // negative address
      [{ addr: 0, len: 4 }, { addr: 8, len: -1 }], // negative length
      [{ addr: 0, len: 4 }, { addr: Number.NaN, len: 4 }],
    ];
    for (const sg of bad) {
      const dst = new Uint8Array(8);
      expect(memory.readSg(sg, dst)).toBe(false);
      expect(dst.every((b) => b === 0)).toBe(true);
      expect(memory.writeSg(sg, new Uint8Array(8).fill(0x33))).toBe(false);
    }
    expect(ram.every((b) => b === 0x22)).toBe(true);
    expect(host.dmaErrors).toBe(8);
    // Segments past the end of the transfer are not reached, so they do not fail it.
    expect(memory.readSg([{ addr: 0, len: 8 }, { addr: -1, len: 8 }], new Uint8Array(8))).toBe(true);
  });
});

// ---- PCI bus ----

describe("PCI bus", () => {
  it("places functions in their preferred slot, else the lowest free slot from 2", () => {
    const host = new TestHost();
    const a = new ToyDevice(host, { name: "a", slot: 5 });
    const b = new ToyDevice(host, { name: "b", slot: 5 });
    const c = new ToyDevice(host, { name: "c" });
    const d = new ToyDevice(host, { name: "d", slot: 5, fn: 1 });
    const e = new ToyDevice(host, { name: "e", slot: 1 });
    expect([a, b, c, d, e].map((t) => t.pci.devfn)).toEqual([5 << 3, 2 << 3, 3 << 3, (5 << 3) | 1, 1 << 3]);
    expect(host.pciFind(TOY_VENDOR, TOY_DEVICE)).toEqual([8, 16, 24, 40, 41]);
    expect(host.pciFind(TOY_VENDOR, 0x9999)).toEqual([]);
    expect(() => new ToyDevice(host, { name: "f", fn: 2 })).toThrow(/function 0/);
  });

  it("answers config reads like the chipset, also through ports 0xCF8/0xCFC", () => {
    const { host, toy } = machine();
    const devfn = toy.pci.devfn;
    expect(host.configRead(devfn, 0, 4)).toBe((TOY_DEVICE << 16) | TOY_VENDOR);
    expect(host.configRead(0x00, 0, 4)).toBe(0xffff_ffff); // empty slot
    host.out32(0xcf8, 0x8000_0000 | (devfn << 8));
    expect(host.in32(0xcfc)).toBe((TOY_DEVICE << 16) | TOY_VENDOR);
    expect(host.in16(0xcfe)).toBe(TOY_DEVICE);
    host.out32(0xcf8, 0x8000_0000 | (devfn << 8) | PCI_COMMAND);
    host.out16(0xcfc, CMD_IO);
    expect(host.configRead(devfn, PCI_COMMAND, 2)).toBe(CMD_IO);
    host.out32(0xcf8, devfn << 8); // enable bit clear
    expect(host.in32(0xcfc)).toBe(0xffff_ffff);
    host.out32(0xcf8, 0x8001_0000 | (devfn << 8)); // bus 1 does not exist
    expect(host.in32(0xcfc)).toBe(0xffff_ffff);
  });

  it("resets the machine on a CPU reset through port 0xCF9", () => {
    const { host, toy, io } = readyMachine();
    io.write32(REG_SCRATCH, 42);
    host.out8(0xcf9, 0x06);
    expect(toy.resets).toBe(1);
    expect(toy.scratch).toBe(0);
    expect(host.configRead(toy.pci.devfn, PCI_COMMAND, 2)).toBe(0);
  });

  it("gives memory BARs fixed bases from 0xF0000000, each aligned to its size", () => {
    const host = new TestHost();
    const regs: RegionHandler = { read: () => 0, write: () => {} };
    const f = (name: string, sizes: number[]) =>
      host.registerPciFunction({ name, vendorId: 1, deviceId: 2, classCode: 0, interruptPin: 0, bars: sizes.map((size) => ({ kind: "memory" as const, size, handler: regs })) });
    const a = f("a", [16, 0x2000]);
    const b = f("b", [0x20000]);
    const bar = (fn: PciFunction, i: number) => host.configRead(fn.devfn, PCI_BAR0 + 4 * i, 4);
    expect([bar(a, 0), bar(a, 1), bar(b, 0)]).toEqual([MMIO_WINDOW_BASE, MMIO_WINDOW_BASE + 0x2000, MMIO_WINDOW_BASE + 0x20000]);
  });

  it("moves port handlers when the guest relocates an I/O BAR", () => {
    const { host, toy, drv, io } = readyMachine();
    expect(io.base).toBe(0xc000);
    expect(toy.barChanges).toContainEqual([0, 0xc000]);
    io.write32(REG_SCRATCH, 0x1234_5678);
    expect(host.in32(0xc000)).toBe(0x1234_5678);
    drv.configWrite(PCI_BAR0, 4, 0xd000);
    expect(toy.barChanges.at(-1)).toEqual([0, 0xd000]);
    expect(host.in32(0xc000)).toBe(0xffff_ffff); // nobody there any more
    expect(host.in32(0xd000)).toBe(0x1234_5678);
    expect(drv.bar(0).read32(REG_SCRATCH)).toBe(0x1234_5678);
    drv.disable({ io: true });
    expect(toy.barChanges.at(-1)).toEqual([0, undefined]);
    expect(host.in32(0xd000)).toBe(0xffff_ffff);
    expect(host.readMmio(drv.bar(1).base, 4)).toBe(0x1234_5678); // the MMIO BAR still decodes
  });

  it("keeps memory BARs at their fixed base and decodes them only while enabled", () => {
    const { host, toy, drv, mem } = readyMachine();
    const off = PCI_BAR0 + 4;
    expect(mem.base).toBe(MMIO_WINDOW_BASE);
    drv.configWrite(off, 4, 0xe000_0000);
    expect(drv.configRead(off, 4)).toBe(MMIO_WINDOW_BASE);
    mem.write32(REG_SCRATCH, 7);
    expect(host.readMmio(MMIO_WINDOW_BASE, 4)).toBe(7);
    expect(host.readMmio(0xe000_0000, 4)).toBe(0xffff_ffff);
    drv.disable({ memory: true });
    expect(toy.barChanges.at(-1)).toEqual([1, undefined]);
    expect(host.readMmio(MMIO_WINDOW_BASE, 4)).toBe(0xffff_ffff);
    host.writeMmio(MMIO_WINDOW_BASE, 4, 99);
    expect(toy.scratch).toBe(7);
    expect(host.unclaimedMmioReads).toBe(2);
    expect(host.unclaimedMmioWrites).toBe(1);
  });

  it("reads all-ones from unclaimed ports, drops and counts writes to them", () => {
    const { host, toy, io } = readyMachine();
    expect([host.in8(0x80), host.in16(0x80), host.in32(0x80)]).toEqual([0xff, 0xffff, 0xffff_ffff]);
    host.out8(0x80, 1);
    host.out32(0x84, 1);
    expect(host.unclaimedPortReads).toBe(3);
    expect(host.unclaimedPortWrites).toBe(2);
    // An access that runs off the end of the BAR: the device answers its bytes, nobody the rest.
    expect(host.in32(io.base + REG_ID + 2)).toBe(0xffff_a5a5);
    expect(toy.scratch).toBe(0);
  });

  it("refuses overlapping fixed port ranges", () => {
    const host = new TestHost();
    const regs: RegionHandler = { read: () => 0x5a, write: () => {} };
    host.registerIoPorts(0x1f0, 8, regs);
    host.registerIoPorts(0x3f6, 1, regs);
    expect(() => host.registerIoPorts(0x1f7, 2, regs)).toThrow(/overlap/);
    expect(() => host.registerIoPorts(0xcfc, 4, regs)).toThrow(/overlap/); // the config mechanism's ports
    expect(() => host.registerIoPorts(0xfffe, 4, regs)).toThrow(RangeError);
    expect(host.in8(0x1f7)).toBe(0x5a);
    expect(host.in8(0x1f8)).toBe(0xff);
  });

  it("calls onConfigWrite after the masks were applied", () => {
    const { toy, drv } = machine();
    drv.configWrite(0x00, 2, 0xffff);
    drv.configWrite(PCI_COMMAND, 2, 0xffff);
    expect(toy.configWrites).toEqual([
      { offset: 0x00, size: 2, value: 0xffff, stored: TOY_VENDOR },
      { offset: PCI_COMMAND, size: 2, value: 0xffff, stored: 0x0547 },
    ]);
  });

  it("runs onConfigWrite before onBarChange, and onBarChange only when a decoded base changes", () => {
    const host = new TestHost();
    const events: string[] = [];
    const fn = host.registerPciFunction({
      name: "hooks",
      vendorId: 1,
      deviceId: 1,
      classCode: 0,
      interruptPin: 1,
      bars: [{ kind: "io", size: 16, handler: { read: () => 0, write: () => {} } }],
      onConfigWrite: (offset) => events.push(`config ${offset}`),
      onBarChange: (i, base) => events.push(`bar${i} ${base}`),
    });
    host.configWrite(fn.devfn, PCI_BAR0, 4, 0xc100);
    host.configWrite(fn.devfn, PCI_COMMAND, 2, CMD_IO);
    host.configWrite(fn.devfn, PCI_COMMAND, 2, CMD_IO | CMD_INTX_DISABLE); // decoding unchanged
    fn.configSet(PCI_COMMAND, 2, 0); // a device-side change is tracked too
    expect(events).toEqual([`config ${PCI_BAR0}`, `config ${PCI_COMMAND}`, `bar0 ${0xc100}`, `config ${PCI_COMMAND}`, "bar0 undefined"]);
  });

  it("returns config spaces to power-on values on reset and unmaps the BARs", () => {
    const { host, toy, drv, io } = readyMachine();
    const powerOn = new TestHost();
    new ToyDevice(powerOn);
    io.write32(REG_SCRATCH, 5);
    drv.configWrite(PCI_INTERRUPT_LINE, 1, 3);
    host.reset();
    expect(toy.resets).toBe(1);
    expect(toy.scratch).toBe(0);
    for (let off = 0; off < 0x40; off += 4) expect(drv.configRead(off, 4)).toBe(powerOn.configRead(toy.pci.devfn, off, 4));
    expect(host.in32(io.base)).toBe(0xffff_ffff);
    expect(toy.barChanges.slice(-2)).toEqual([
      [0, undefined],
      [1, undefined],
    ]);
  });
});

// ---- Interrupts ----

describe("interrupts", () => {
  it("routes INTx with the PIIX swizzle onto PIRQ A..D = IRQ 10, 10, 11, 11", () => {
    const host = new TestHost();
    const toys = [2, 3, 4, 5, 1].map((slot) => new ToyDevice(host, { name: `t${slot}`, slot }));
    expect(toys.map((t) => host.intxIrq(t.pci.devfn))).toEqual([10, 11, 11, 10, 10]);
    const drv = new PciDriver(host, toys[1].pci.devfn);
    drv.setup();
    expect(drv.interruptLine).toBe(11);
  });

  it("keeps a shared line up while any sharer asserts it (wired-OR)", () => {
    const host = new TestHost();
    const a = new ToyDevice(host, { name: "a", slot: 2 });
    const b = new ToyDevice(host, { name: "b", slot: 5 });
    expect(host.intxIrq(a.pci.devfn)).toBe(10);
    expect(host.intxIrq(b.pci.devfn)).toBe(10);
    a.pci.irq.set(true);
    host.advance(100);
    b.pci.irq.set(true);
    host.advance(100);
    a.pci.irq.set(false);
    expect(host.irqLevel(10)).toBe(true);
    host.advance(100);
    b.pci.irq.set(false);
    expect(host.irqLevel(10)).toBe(false);
    expect(host.irqLog).toEqual([
      { time: 0, irq: 10, level: true },
      { time: 300, irq: 10, level: false },
    ]);
  });

  it("masks a function's contribution while INTx Disable is set, but not its status bit", () => {
    const host = new TestHost();
    const a = new ToyDevice(host, { name: "a", slot: 2 });
    const b = new ToyDevice(host, { name: "b", slot: 5 });
    const status = (t: ToyDevice) => host.configRead(t.pci.devfn, PCI_STATUS, 2) & STATUS_INTERRUPT;
    a.pci.irq.set(true);
    b.pci.irq.set(true);
    host.configWrite(a.pci.devfn, PCI_COMMAND, 2, CMD_INTX_DISABLE);
    expect(host.irqLevel(10)).toBe(true); // b still asserts
    b.pci.irq.set(false);
    expect(host.irqLevel(10)).toBe(false); // a asserts but is masked
    expect(status(a)).toBe(STATUS_INTERRUPT);
    expect(status(b)).toBe(0);
    host.configWrite(a.pci.devfn, PCI_COMMAND, 2, 0);
    expect(host.irqLevel(10)).toBe(true);
    a.pci.irq.set(false);
    expect(status(a)).toBe(0);
  });

  it("keeps ISA IRQ sources separate and logs edges at virtual time", () => {
    const host = new TestHost();
    const primary = host.isaIrq(14);
    const other = host.isaIrq(14);
    host.advance(50);
    primary.set(true);
    other.set(true);
    primary.set(false);
    expect(host.irqLevel(14)).toBe(true);
    host.advance(25);
    other.set(false);
    expect(host.irqLevel(15)).toBe(false);
    expect(host.irqLog).toEqual([
      { time: 50, irq: 14, level: true },
      { time: 75, irq: 14, level: false },
    ]);
    expect(() => host.isaIrq(16)).toThrow(RangeError);
  });

  it("queues an IRQ change made inside an MMIO handler until deferred work runs", () => {
    const { host, drv, mem } = readyMachine({ autoFlush: false });
    const irq = drv.interruptLine;
    mem.write32(REG_BAD_DOORBELL, 1);
    expect(host.irqLevel(irq)).toBe(false);
    expect(host.irqChangesInMmio).toBe(1);
    expect(host.pendingWork).toBe(1);
    host.flush();
    expect(host.irqLevel(irq)).toBe(true);
    expect(drv.intxPending).toBe(true);
  });

  it("applies a queued change with the level wanted at flush time, without a glitch", () => {
    const host = new TestHost({ autoFlush: false });
    let irq: PciFunction["irq"] | undefined;
    const pulse: RegionHandler = {
      read: () => 0,
      write: () => {
        irq!.set(true);
        irq!.set(false);
      },
    };
    const fn = host.registerPciFunction({ name: "pulse", vendorId: 1, deviceId: 1, classCode: 0, interruptPin: 1, bars: [{ kind: "memory", size: 16, handler: pulse }] });
    irq = fn.irq;
    host.configWrite(fn.devfn, PCI_COMMAND, 2, CMD_MEMORY);
    host.writeMmio(fn.barBase(0)!, 4, 1);
    expect(host.irqChangesInMmio).toBe(2);
    host.flush();
    expect(host.irqLog).toEqual([]);
    expect(fn.irq.level).toBe(false);
  });

  it("applies the queued change right after the access returns when auto-flush is on", () => {
    const { host, drv, io, mem } = readyMachine();
    mem.write32(REG_BAD_DOORBELL, 1);
    expect(host.irqLevel(drv.interruptLine)).toBe(true);
    expect(host.irqChangesInMmio).toBe(1);
    mem.write32(REG_STATUS, ST_IRQ); // a well-behaved path: the device defers the line update
    expect(host.irqLevel(drv.interruptLine)).toBe(false);
    io.write32(REG_BAD_DOORBELL, 1); // port I/O handlers may change IRQs at once
    expect(host.irqChangesInMmio).toBe(1);
    mem.write32(REG_DOORBELL, 1);
    expect(host.irqChangesInMmio).toBe(1);
    expect(host.irqLevel(drv.interruptLine)).toBe(true);
  });
});

// ---- Devices at work: DMA, timers, promises ----

describe("device work", () => {
  function program(m: ReturnType<typeof readyMachine>, src: number, dst: number, len: number) {
    m.mem.write32(REG_DMA_SRC, src);
    m.mem.write32(REG_DMA_DST, dst);
    m.mem.write32(REG_DMA_LEN, len);
    m.mem.write32(REG_DMA_GO, 1);
  }

  it("copies guest memory on the doorbell and raises INTx, all outside the MMIO handler", () => {
    const m = readyMachine({ autoFlush: false });
    const alloc = new GuestAllocator(m.host);
    const src = alloc.put(Uint8Array.of(1, 2, 3, 4, 5));
    const dst = alloc.alloc(5, 4096);
    program(m, src, dst, 5);
    expect(readBytes(m.host, dst, 5)).toEqual(new Uint8Array(5));
    m.host.flush();
    expect(readBytes(m.host, dst, 5)).toEqual(Uint8Array.of(1, 2, 3, 4, 5));
    expect(m.mem.read32(REG_STATUS)).toBe(ST_IRQ | ST_DMA_DONE);
    expect(m.host.irqLevel(m.drv.interruptLine)).toBe(true);
    expect(m.host.irqChangesInMmio).toBe(0);
    expect(m.host.dmaInMmio).toBe(0);
  });

  it("turns a DMA outside RAM into device status", () => {
    const m = readyMachine();
    program(m, m.host.ram.length - 2, 0x1000, 4);
    expect(m.mem.read32(REG_STATUS)).toBe(ST_IRQ | ST_DMA_ERROR);
    expect(m.host.dmaErrors).toBe(1);
    m.drv.disable({ busMaster: true });
    m.mem.write32(REG_STATUS, 0xff);
    program(m, 0x1000, 0x2000, 4);
    expect(m.mem.read32(REG_STATUS)).toBe(ST_IRQ | ST_DMA_ERROR);
  });

  it("lets promise-based completions run under settle()", async () => {
    const host = new TestHost({ yieldToEventLoop: nodeYield });
    const toy = new ToyDevice(host, { asyncDma: true });
    const drv = new PciDriver(host, toy.pci.devfn, new IoSpaceAllocator(0xe000));
    drv.setup({ busMaster: true });
    expect(drv.bar(0).base).toBe(0xe000);
    writeU32(host, 0x1000, 0xcafe_f00d);
    const mem = drv.bar(1);
    mem.write32(REG_DMA_SRC, 0x1000);
    mem.write32(REG_DMA_DST, 0x2000);
    mem.write32(REG_DMA_LEN, 4);
    mem.write32(REG_DMA_GO, 1);
    expect(host.irqLevel(drv.interruptLine)).toBe(false); // the medium has not answered yet
    await host.settle();
    expect(readU32(host, 0x2000)).toBe(0xcafe_f00d);
    expect(host.irqLevel(drv.interruptLine)).toBe(true);
  });

  it("fires timers in deadline order, same deadlines in the order set", () => {
    const host = new TestHost();
    const fired: string[] = [];
    const at = (name: string) => () => fired.push(`${name}@${host.nowNs()}`);
    host.clock.setTimer(300, at("c"));
    host.clock.setTimer(100, at("a"));
    host.clock.setTimer(100, at("b"));
    const cancelled = host.clock.setTimer(200, at("x"));
    host.clock.setTimer(50, () => {
      at("d")();
      host.clock.setTimer(100, at("e")); // due at 150, inside this advance
    });
    host.clock.setTimer(1000, at("late"));
    cancelled.cancel();
    host.advance(400);
    expect(fired).toEqual(["d@50", "a@100", "b@100", "e@150", "c@300"]);
    expect(host.nowNs()).toBe(400);
    expect(host.pendingTimers).toBe(1);
    expect(host.runUntilIdle()).toBe(600);
    expect(fired.at(-1)).toBe("late@1000");
  });

  it("runs deferred work queued by a timer before the next timer", () => {
    const host = new TestHost();
    const order: string[] = [];
    host.clock.setTimer(10, () => host.defer(() => order.push("deferred")));
    host.clock.setTimer(10, () => order.push("second timer"));
    host.advance(10);
    expect(order).toEqual(["deferred", "second timer"]);
  });

  it("catches devices that never go idle", () => {
    const host = new TestHost({ maxFlushSteps: 1000, maxTimersPerRun: 1000 });
    const again = (): void => void host.clock.setTimer(1_000, again);
    again();
    expect(() => host.runUntilIdle(1e6)).toThrow(/pending/);
    const spin = (): void => host.defer(spin);
    host.defer(spin);
    expect(() => host.flush()).toThrow(/livelock/);
    const busy = new TestHost({ maxTimersPerRun: 1000 });
    const now = (): void => void busy.clock.setTimer(0, now);
    now();
    expect(() => busy.advance(1)).toThrow(/re-arming/);
  });

  it("waits for an interrupt by advancing virtual time", async () => {
    const { host, drv, io } = readyMachine();
    io.write32(REG_TIMER, 5000);
    expect(await drv.waitIrq({ timeoutNs: 1000 })).toBe(false);
    expect(host.nowNs()).toBe(1000);
    expect(await drv.waitIrq()).toBe(true);
    expect(host.nowNs()).toBe(5000);
    expect(await waitIrq(host, 14, { timeoutNs: 10 })).toBe(false);
  });

  it("records traces with the virtual time", () => {
    const host = new TestHost();
    host.advance(7);
    host.trace("toy", "guest wrote a reserved bit");
    expect(host.traces).toEqual([{ time: 7, device: "toy", message: "guest wrote a reserved bit" }]);
  });
});

// ---- Save and restore ----

describe("save and restore", () => {
  it("round-trips RAM, config space, IRQ levels, device state and re-armed timers", () => {
    const m = readyMachine({ memorySize: 1 << 20 });
    m.drv.configWrite(PCI_BAR0, 4, 0xd000); // relocated by the guest
    const io = m.drv.bar(0);
    io.write32(REG_SCRATCH, 0xabcd_0123);
    io.write32(REG_DOORBELL, 1);
    io.write32(REG_TIMER, 700);
    writeBytes(m.host, 0x3000, Uint8Array.of(9, 8, 7));
    m.host.advance(200);
    const state = m.host.saveState();
    const { ram, functions, ...rest } = state;
    const copy = { ...(JSON.parse(JSON.stringify(rest)) as typeof rest), ram, functions };

    const host = new TestHost({ memorySize: 1 << 20 });
    const toy = new ToyDevice(host);
    host.loadState(copy);
    const drv = new PciDriver(host, toy.pci.devfn);
    expect(host.nowNs()).toBe(200);
    expect(readBytes(host, 0x3000, 3)).toEqual(Uint8Array.of(9, 8, 7));
    expect(drv.bar(0).base).toBe(0xd000);
    expect(host.in32(0xd000 + REG_SCRATCH)).toBe(0xabcd_0123);
    expect(host.in32(0xc000)).toBe(0xffff_ffff);
    expect(host.irqLevel(drv.interruptLine)).toBe(true);
    expect(drv.intxPending).toBe(true);
    expect(drv.command & (CMD_IO | CMD_MEMORY)).toBe(CMD_IO | CMD_MEMORY);

    drv.bar(0).write32(REG_STATUS, ST_IRQ);
    expect(host.irqLevel(drv.interruptLine)).toBe(false);
    host.advance(499);
    expect(host.irqLevel(drv.interruptLine)).toBe(false);
    host.advance(1);
    expect(host.irqLevel(drv.interruptLine)).toBe(true); // the restored timer fired at 700
  });

  it("refuses a state taken with different devices", () => {
    const { host } = machine({ memorySize: 1 << 20 });
    const state = host.saveState();
    const other = new TestHost({ memorySize: 1 << 20 });
    new ToyDevice(other, { name: "renamed" });
    expect(() => other.loadState(state)).toThrow(/differ/);
    expect(() => new TestHost({ memorySize: 2 << 20 }).loadState(state)).toThrow(/RAM/);
  });
});

// ---- Driver helpers ----

describe("driver helpers", () => {
  it("sizes BARs and assigns I/O bases from 0xC000, aligned to their size", () => {
    const host = new TestHost();
    const toys = [new ToyDevice(host, { name: "a" }), new ToyDevice(host, { name: "b" })];
    const big = host.registerPciFunction({
      name: "big",
      vendorId: 1,
      deviceId: 1,
      classCode: 0,
      interruptPin: 0,
      bars: [{ kind: "io", size: 256, handler: { read: () => 0, write: () => {} } }],
    });
    const drivers = [...toys.map((t) => t.pci.devfn), big.devfn].map((d) => new PciDriver(host, d));
    expect(drivers[0].sizeBar(0)).toEqual({ kind: "io", size: 64 });
    expect(drivers[0].sizeBar(1)).toEqual({ kind: "memory", size: 4096 });
    expect(drivers[0].sizeBar(2)).toBeUndefined();
    expect(drivers.map((d) => d.setup()[0].base)).toEqual([0xc000, 0xc040, 0xc100]);
    expect(drivers[0].command).toBe(CMD_IO | CMD_MEMORY);
    expect(drivers[2].command).toBe(CMD_IO);
    expect(() => drivers[0].bar(0).read32(64)).toThrow(RangeError);
    expect(drivers[0].bar(0).read32(REG_ID)).toBe(TOY_ID);
    expect(drivers[0].bar(1).read16(REG_ID + 2)).toBe(TOY_ID >>> 16);
  });

  it("allocates guest memory from 1 MiB with alignment and reads little-endian values", () => {
    const host = new TestHost({ memorySize: 2 << 20 });
    const alloc = new GuestAllocator(host);
    expect(alloc.alloc(3)).toBe(0x10_0000);
    expect(alloc.alloc(8, 4096)).toBe(0x10_1000);
    expect(alloc.put(Uint8Array.of(0x34, 0x12), 2)).toBe(0x10_1008);
    expect(readU16(host, 0x10_1008)).toBe(0x1234);
    expect(alloc.used).toBe(0x100a);
    expect(() => alloc.alloc(1 << 20)).toThrow(RangeError);
    expect(() => alloc.alloc(1, 3)).toThrow(RangeError);
    writeU8(host, 0, 0xff);
    writeU16(host, 1, 0xbeef);
    writeU32(host, 4, 0x8000_0001);
    expect([...host.ram.subarray(0, 8)]).toEqual([0xff, 0xef, 0xbe, 0, 0x01, 0, 0, 0x80]);
    expect(readU32(host, 4)).toBe(0x8000_0001);
    expect(() => readU32(host, host.ram.length - 2)).toThrow(RangeError);
    expect(host.dmaErrors).toBe(0);
  });
});
