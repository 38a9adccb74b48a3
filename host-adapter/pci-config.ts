/**
 * PCI configuration space of one function (type 0 header), with the semantics real hardware
 * has and the npm v86 build lacks: per-bit write masks, write-1-to-clear status bits, BAR sizing,
 * read-only identity. Both hosts (V86Host, TestHost) keep one of these per registered function
 * and treat it as the only truth; v86's own copy is just a mirror for its latched reads.
 */
import type { AccessSize, PciFunctionSpec } from "./host.js";

/** Standard header offsets (PCI Local Bus 3.0, 6.1). */
export const PCI_VENDOR_ID = 0x00;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CACHE_LINE = 0x0c;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BAR0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR = 0x2c;
export const PCI_CAP_PTR = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;

export const CMD_IO = 1 << 0;
export const CMD_MEMORY = 1 << 1;
export const CMD_BUS_MASTER = 1 << 2;
export const CMD_PARITY = 1 << 6;
export const CMD_SERR = 1 << 8;
export const CMD_INTX_DISABLE = 1 << 10;

export const STATUS_INTERRUPT = 1 << 3;
export const STATUS_CAP_LIST = 1 << 4;
/** Error bits the guest clears by writing 1: parity, signalled/received aborts, SERR. */
const STATUS_W1C = 0xf900;

export const CONFIG_SIZE = 256;

/** What a guest config write changed, so the host can remap ports or re-evaluate INTx. */
export interface ConfigWriteEffect {
  barsChanged: number[];
  commandChanged: boolean;
}

export class PciConfigSpace {
  readonly bytes = new Uint8Array(CONFIG_SIZE);
  private readonly writeMask = new Uint8Array(CONFIG_SIZE);
  private readonly w1cMask = new Uint8Array(CONFIG_SIZE);
  private readonly resetImage = new Uint8Array(CONFIG_SIZE);
  /** Size mask of each BAR (0 = not implemented). */
  private readonly barMask: number[] = [0, 0, 0, 0, 0, 0];

  /** `fixedMemoryBases[i]` is where memory BAR i lives; the guest cannot move it (see host docs). */
  constructor(
    readonly spec: PciFunctionSpec,
    private readonly fixedMemoryBases: readonly (number | undefined)[],
  ) {
    const b = this.bytes;
    this.put(PCI_VENDOR_ID, 2, spec.vendorId);
    this.put(0x02, 2, spec.deviceId);
    this.put(PCI_REVISION, 1, spec.revision ?? 0);
    this.put(PCI_CLASS_PROG, 1, spec.classCode & 0xff);
    this.put(0x0a, 2, (spec.classCode >>> 8) & 0xffff);
    b[PCI_HEADER_TYPE] = spec.multifunction ? 0x80 : 0x00;
    this.put(PCI_SUBSYSTEM_VENDOR, 2, spec.subsystemVendorId ?? spec.vendorId);
    this.put(0x2e, 2, spec.subsystemId ?? 0);
    b[PCI_INTERRUPT_PIN] = spec.interruptPin;

    this.maskBits(PCI_COMMAND, 2, CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE);
    this.w1cBits(PCI_STATUS, 2, STATUS_W1C);
    this.maskBits(PCI_CACHE_LINE, 1, 0xff);
    this.maskBits(0x0d, 1, 0xff); // latency timer
    this.maskBits(PCI_INTERRUPT_LINE, 1, 0xff);

    spec.bars.slice(0, 6).forEach((bar, i) => {
      if (!bar) return;
      if (bar.size & (bar.size - 1)) throw new Error(`${spec.name}: BAR${i} size ${bar.size} is not a power of two`);
      const size = Math.max(bar.size, bar.kind === "io" ? 4 : 16);
      this.barMask[i] = ~(size - 1) >>> 0;
      const off = PCI_BAR0 + 4 * i;
      if (bar.kind === "io") {
        this.put(off, 4, 1);
      } else {
        const base = fixedMemoryBases[i];
        if (base === undefined || base % size) throw new Error(`${spec.name}: memory BAR${i} needs a base aligned to ${size}`);
        this.put(off, 4, base);
      }
    });

    const extra = spec.extraConfig;
    if (extra) {
      if (extra.offset < 0x40 || extra.offset + extra.initial.length > CONFIG_SIZE) {
        throw new Error(`${spec.name}: device config registers must lie in 0x40..0xff`);
      }
      b.set(extra.initial, extra.offset);
      if (extra.writeMask) this.writeMask.set(extra.writeMask, extra.offset);
      if (extra.w1cMask) this.w1cMask.set(extra.w1cMask, extra.offset);
      if (extra.capabilityPointer) {
        b[PCI_CAP_PTR] = extra.capabilityPointer;
        this.put(PCI_STATUS, 2, STATUS_CAP_LIST);
      }
    }
    this.resetImage.set(b);
  }

  /** Back to power-on values (BARs unassigned, decoding off). */
  reset(): void {
    this.bytes.set(this.resetImage);
  }

  read(offset: number, size: AccessSize): number {
    if (offset < 0 || offset + size > CONFIG_SIZE) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | this.bytes[offset + i];
    return v >>> 0;
  }

  /** A guest write: masks, W1C and BAR rules apply. */
  write(offset: number, size: AccessSize, value: number): ConfigWriteEffect {
    const effect: ConfigWriteEffect = { barsChanged: [], commandChanged: false };
    if (offset < 0 || offset + size > CONFIG_SIZE) return effect;
    const oldCommand = this.command;
    const oldBars = this.barWords();
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      const byte = (value >>> (8 * i)) & 0xff;
      if (at >= PCI_BAR0 && at < PCI_BAR0 + 24) {
        this.writeBarByte(at, byte);
        continue;
      }
      const mask = this.writeMask[at];
      const w1c = this.w1cMask[at];
      let cur = this.bytes[at];
      cur = (cur & ~mask) | (byte & mask);
      cur &= ~(byte & w1c);
      this.bytes[at] = cur;
    }
    // Memory BARs cannot move: anything but the sizing pattern falls back to the fixed base.
    for (let i = 0; i < 6; i++) {
      const bar = this.spec.bars[i];
      if (bar?.kind !== "memory") continue;
      const off = PCI_BAR0 + 4 * i;
      if (this.read(off, 4) !== this.barMask[i]) this.put(off, 4, this.fixedMemoryBases[i]!);
    }
    const newBars = this.barWords();
    for (let i = 0; i < 6; i++) if (oldBars[i] !== newBars[i]) effect.barsChanged.push(i);
    effect.commandChanged = oldCommand !== this.command;
    return effect;
  }

  /** A device-side update (status bits, device registers): no guest masks. */
  set(offset: number, size: AccessSize, value: number): void {
    this.put(offset, size, value);
  }

  get command(): number {
    return this.read(PCI_COMMAND, 2);
  }

  /** Reflect the function's INTx level in status bit 3 (the Interrupt Status bit). */
  setInterruptStatus(level: boolean): void {
    const s = this.read(PCI_STATUS, 2);
    this.put(PCI_STATUS, 2, level ? s | STATUS_INTERRUPT : s & ~STATUS_INTERRUPT);
  }

  get intxDisabled(): boolean {
    return (this.command & CMD_INTX_DISABLE) !== 0;
  }

  /**
   * Decoded base of BAR i: undefined while its decode enable is off, while it holds the sizing
   * pattern, or while it is unassigned (0).
   */
  barBase(i: number): number | undefined {
    const bar = this.spec.bars[i];
    if (!bar || !this.barMask[i]) return undefined;
    const raw = this.read(PCI_BAR0 + 4 * i, 4);
    if (bar.kind === "io") {
      if (!(this.command & CMD_IO)) return undefined;
      const base = (raw & this.barMask[i]) >>> 0;
      const size = (~this.barMask[i] >>> 0) + 1;
      if (base === 0 || base + size > 0x10000) return undefined;
      return base;
    }
    if (!(this.command & CMD_MEMORY) || raw === this.barMask[i]) return undefined;
    return this.fixedMemoryBases[i];
  }

  private writeBarByte(at: number, byte: number): void {
    const i = (at - PCI_BAR0) >> 2;
    const shift = 8 * ((at - PCI_BAR0) & 3);
    const mask = this.barMask[i];
    if (!mask) return; // unimplemented BARs read as 0
    const maskByte = (mask >>> shift) & 0xff;
    // Type bits (I/O: bit 0; memory: bits 0-3) are read-only and already in place.
    this.bytes[at] = (this.bytes[at] & ~maskByte) | (byte & maskByte);
  }

  private barWords(): number[] {
    return [0, 1, 2, 3, 4, 5].map((i) => this.read(PCI_BAR0 + 4 * i, 4));
  }

  private put(offset: number, size: number, value: number): void {
    for (let i = 0; i < size; i++) this.bytes[offset + i] = (value >>> (8 * i)) & 0xff;
  }

  private maskBits(offset: number, size: number, bits: number): void {
    for (let i = 0; i < size; i++) this.writeMask[offset + i] |= (bits >>> (8 * i)) & 0xff;
  }

  private w1cBits(offset: number, size: number, bits: number): void {
    for (let i = 0; i < size; i++) this.w1cMask[offset + i] |= (bits >>> (8 * i)) & 0xff;
  }
}
