/**
 * A test-only PCI function that proves a host adapter right from inside a real guest: identity
 * and BARs in sysfs, a scratch register reachable through both an I/O BAR and a memory BAR, an
 * INTx the guest can raise and lower, and a DMA engine (fill or copy, with a programmable delay
 * so a save can catch it in flight). It has no Linux driver; uio_pci_generic can bind to it
 * because it implements the INTx status and disable bits.
 *
 * Both BARs expose the same registers (offsets in bytes, 32-bit little endian):
 */
import type { AccessSize, DeviceState, Host, PciFunction, RegionHandler, TimerHandle } from "../../host-adapter/host.js";

export const FIXTURE_VENDOR = 0x1234;
export const FIXTURE_DEVICE = 0x7573;
export const FIXTURE_MAGIC = 0x76737472; // "vstr"

export const REG = {
  MAGIC: 0x00, // RO
  SCRATCH: 0x04, // RW
  IRQ: 0x08, // RW: bit 0 = INTx level requested by the guest
  DMA_SRC: 0x0c, // guest-physical source (copy mode)
  DMA_DST: 0x10, // guest-physical destination
  DMA_LEN: 0x14, // bytes, at most MAX_DMA
  DMA_FILL: 0x18, // fill byte (fill mode)
  DMA_DELAY_US: 0x1c, // time from start to completion
  DMA_CMD: 0x20, // W: bit 0 start, bit 1 fill (else copy), bit 2 raise INTx when done
  DMA_STATUS: 0x24, // RO: bit 0 busy, bit 1 done, bit 2 error (DMA outside RAM, absurd length)
  DMA_COUNT: 0x28, // RO: completed transfers
} as const;

export const DMA_CMD_START = 1;
export const DMA_CMD_FILL = 2;
export const DMA_CMD_IRQ = 4;
export const DMA_STATUS_BUSY = 1;
export const DMA_STATUS_DONE = 2;
export const DMA_STATUS_ERROR = 4;
const MAX_DMA = 1 << 20;
const REG_BYTES = 0x40;

interface Regs {
  scratch: number;
  irq: number;
  src: number;
  dst: number;
  len: number;
  fill: number;
  delayUs: number;
  status: number;
  count: number;
  /** The command of a transfer in flight, and when it completes (host clock, ns). */
  pendingCmd: number;
  dueNs: number;
}

export class TestFixture {
  readonly pci: PciFunction;
  private r: Regs = TestFixture.powerOn();
  private timer?: TimerHandle;

  constructor(
    private readonly host: Host,
    readonly id: string,
    options: { slot?: number } = {},
  ) {
    const regs: RegionHandler = {
      read: (off, size) => this.read(off, size),
      write: (off, size, value) => this.write(off, size, value),
    };
    this.pci = host.registerPciFunction({
      name: `vstor-fixture-${id}`,
      vendorId: FIXTURE_VENDOR,
      deviceId: FIXTURE_DEVICE,
      classCode: 0xff0000,
      interruptPin: 1,
      slot: options.slot,
      bars: [
        { kind: "io", size: REG_BYTES, handler: regs },
        { kind: "memory", size: 0x1000, handler: regs },
      ],
    });
    host.onReset(() => this.reset());
    host.registerState(`fixture-${id}`, {
      save: (): DeviceState => ({ version: 1, data: { ...this.r } }),
      restore: (s) => {
        this.timer?.cancel();
        this.r = { ...(s.data as Regs) };
        if (this.r.status & DMA_STATUS_BUSY) this.arm(Math.max(0, this.r.dueNs - host.clock.nowNs()));
        // The INTx level itself comes back with the host's PCI state.
      },
    });
  }

  private static powerOn(): Regs {
    return { scratch: 0, irq: 0, src: 0, dst: 0, len: 0, fill: 0, delayUs: 0, status: 0, count: 0, pendingCmd: 0, dueNs: 0 };
  }

  private reset(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.r = TestFixture.powerOn();
  }

  private read(off: number, size: AccessSize): number {
    const word = this.readReg(off & ~3);
    const shift = 8 * (off & 3);
    const mask = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    return ((word >>> shift) & mask) >>> 0;
  }

  private readReg(off: number): number {
    const r = this.r;
    switch (off) {
      case REG.MAGIC: return FIXTURE_MAGIC;
      case REG.SCRATCH: return r.scratch;
      case REG.IRQ: return r.irq;
      case REG.DMA_SRC: return r.src;
      case REG.DMA_DST: return r.dst;
      case REG.DMA_LEN: return r.len;
      case REG.DMA_FILL: return r.fill;
      case REG.DMA_DELAY_US: return r.delayUs;
      case REG.DMA_STATUS: return r.status;
      case REG.DMA_COUNT: return r.count;
      default: return 0;
    }
  }

  /** Byte and word writes merge into the 32-bit register, as on real hardware with byte enables. */
  private write(off: number, size: AccessSize, value: number): void {
    const reg = off & ~3;
    const shift = 8 * (off & 3);
    const mask = (size === 4 ? 0xffffffff : ((1 << (8 * size)) - 1) << shift) >>> 0;
    const merged = ((this.readReg(reg) & ~mask) | ((value << shift) & mask)) >>> 0;
    const r = this.r;
    switch (reg) {
      case REG.SCRATCH: r.scratch = merged; break;
      case REG.IRQ:
        r.irq = merged & 1;
        this.pci.irq.set(r.irq === 1); // the host defers this if we are inside an MMIO access
        break;
      case REG.DMA_SRC: r.src = merged; break;
      case REG.DMA_DST: r.dst = merged; break;
      case REG.DMA_LEN: r.len = merged; break;
      case REG.DMA_FILL: r.fill = merged & 0xff; break;
      case REG.DMA_DELAY_US: r.delayUs = merged; break;
      case REG.DMA_CMD: if (merged & DMA_CMD_START) this.start(merged); break;
      default: break; // read-only or unused: ignored, as hardware does
    }
  }

  private start(cmd: number): void {
    const r = this.r;
    if (r.status & DMA_STATUS_BUSY) {
      this.host.trace(this.pci.spec.name, "DMA start while busy ignored");
      return;
    }
    r.status = DMA_STATUS_BUSY;
    r.pendingCmd = cmd;
    const delayNs = r.delayUs * 1000;
    r.dueNs = this.host.clock.nowNs() + delayNs;
    this.arm(delayNs);
  }

  private arm(delayNs: number): void {
    // Even a zero delay completes through the timer: never DMA inside the register access.
    this.timer = this.host.clock.setTimer(delayNs, () => this.complete());
  }

  private complete(): void {
    const r = this.r;
    this.timer = undefined;
    const cmd = r.pendingCmd;
    let ok = r.len <= MAX_DMA && this.pci.busMasterEnabled;
    if (ok) {
      const data = new Uint8Array(r.len);
      if (cmd & DMA_CMD_FILL) data.fill(r.fill);
      else ok = this.host.memory.read(r.src, data);
      ok = ok && this.host.memory.write(r.dst, data);
    }
    if (!ok) this.host.trace(this.pci.spec.name, `DMA refused: src=${r.src.toString(16)} dst=${r.dst.toString(16)} len=${r.len}`);
    r.status = ok ? DMA_STATUS_DONE : DMA_STATUS_DONE | DMA_STATUS_ERROR;
    if (ok) r.count = (r.count + 1) >>> 0;
    if (cmd & DMA_CMD_IRQ) {
      r.irq = 1;
      this.pci.irq.set(true);
    }
  }
}
