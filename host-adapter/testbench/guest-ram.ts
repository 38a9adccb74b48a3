/**
 * Guest RAM as a bus master sees it on the test machine. Every access is checked before anything
 * moves: an address or length that is negative, fractional or NaN, or a range not wholly inside RAM,
 * moves nothing, returns false (or undefined) and bumps `dmaErrors`.
 */
import type { GuestMemory, SgSegment } from "../host.js";

export class TestGuestMemory implements GuestMemory {
  readonly ram: Uint8Array;
  /** Refused accesses (out of RAM or malformed), for tests to assert on. */
  dmaErrors = 0;

  /** `onAccess` runs before every access (the host counts activity and DMA inside MMIO handlers). */
  constructor(
    size: number,
    private readonly onAccess: () => void = () => {},
  ) {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`memory size ${size} must be a positive integer`);
    this.ram = new Uint8Array(size);
  }

  get size(): number {
    return this.ram.length;
  }

  read(addr: number, dst: Uint8Array): boolean {
    this.onAccess();
    if (!this.inRam(addr, dst.length)) return this.refuse();
    dst.set(this.ram.subarray(addr, addr + dst.length));
    return true;
  }

  write(addr: number, src: Uint8Array): boolean {
    this.onAccess();
    if (!this.inRam(addr, src.length)) return this.refuse();
    this.ram.set(src, addr);
    return true;
  }

  /**
   * Gather into `dst` until it or the list runs out. Every segment the transfer reaches is checked
   * before the first byte moves; segments after `dst` is full are not looked at (a PRD table may be
   * longer than the transfer).
   */
  readSg(sg: readonly SgSegment[], dst: Uint8Array): boolean {
    this.onAccess();
    const plan = this.plan(sg, dst.length);
    if (!plan) return this.refuse();
    let at = 0;
    for (let i = 0; i < plan.length; i += 2) {
      dst.set(this.ram.subarray(plan[i], plan[i] + plan[i + 1]), at);
      at += plan[i + 1];
    }
    return true;
  }

  /** Scatter `src` over the segments; same checking rule as readSg. */
  writeSg(sg: readonly SgSegment[], src: Uint8Array): boolean {
    this.onAccess();
    const plan = this.plan(sg, src.length);
    if (!plan) return this.refuse();
    let at = 0;
    for (let i = 0; i < plan.length; i += 2) {
      this.ram.set(src.subarray(at, at + plan[i + 1]), plan[i]);
      at += plan[i + 1];
    }
    return true;
  }

  read32(addr: number): number | undefined {
    this.onAccess();
    if (!this.inRam(addr, 4)) {
      this.refuse();
      return undefined;
    }
    const r = this.ram;
    return (r[addr] | (r[addr + 1] << 8) | (r[addr + 2] << 16) | (r[addr + 3] << 24)) >>> 0;
  }

  write32(addr: number, value: number): boolean {
    this.onAccess();
    if (!this.inRam(addr, 4)) return this.refuse();
    for (let i = 0; i < 4; i++) this.ram[addr + i] = (value >>> (8 * i)) & 0xff;
    return true;
  }

  private inRam(addr: number, len: number): boolean {
    return Number.isSafeInteger(addr) && Number.isSafeInteger(len) && addr >= 0 && len >= 0 && addr + len <= this.ram.length;
  }

  private refuse(): false {
    this.dmaErrors++;
    return false;
  }

  /** Flat [addr, len, addr, len, ...] of the pieces to move, or undefined if any reached segment is bad. */
  private plan(sg: readonly SgSegment[], total: number): number[] | undefined {
    const pieces: number[] = [];
    let left = total;
    for (const seg of sg) {
      if (left === 0) break;
      if (!Number.isSafeInteger(seg.len) || seg.len < 0) return undefined;
      const n = Math.min(seg.len, left);
      if (!this.inRam(seg.addr, n)) return undefined;
      pieces.push(seg.addr, n);
      left -= n;
    }
    return pieces;
  }
}
