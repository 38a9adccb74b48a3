/**
 * One address space of the test machine (I/O ports or MMIO) as the CPU sees it: an access goes to
 * the region that holds it; an access nobody claims reads all-ones and a write to it is dropped
 * (both counted). An access that runs off the end of its region is split into bytes, each decoded
 * on its own, as byte enables would on a real bus.
 */
import type { AccessSize, RegionHandler } from "../host.js";

export interface Region {
  base: number;
  length: number;
  handler: RegionHandler;
}

export function allOnes(size: AccessSize): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

function toWidth(value: number, size: AccessSize): number {
  return size === 4 ? value >>> 0 : value & allOnes(size);
}

export class AddressSpace {
  unclaimedReads = 0;
  unclaimedWrites = 0;

  /** `lookup` returns the region holding an address (the host keeps the maps). */
  constructor(
    readonly name: string,
    /** One past the highest address. */
    readonly limit: number,
    private readonly lookup: (addr: number) => Region | undefined,
  ) {}

  /** Throws on a malformed address: that is a bug in the test, not something a guest can do. */
  check(addr: number, size: AccessSize): void {
    if (!Number.isInteger(addr) || addr < 0 || addr + size > this.limit) {
      throw new RangeError(`${this.name} access of ${size} bytes at ${addr} is outside 0..${this.limit - 1}`);
    }
  }

  read(addr: number, size: AccessSize): number {
    const r = this.lookup(addr);
    if (r && addr + size <= r.base + r.length) return toWidth(r.handler.read(addr - r.base, size), size);
    if (!r && !this.claimsAny(addr, size)) {
      this.unclaimedReads++;
      return allOnes(size);
    }
    let v = 0;
    for (let k = 0; k < size; k++) v |= this.read(addr + k, 1) << (8 * k);
    return v >>> 0;
  }

  write(addr: number, size: AccessSize, value: number): void {
    value = toWidth(value, size);
    const r = this.lookup(addr);
    if (r && addr + size <= r.base + r.length) {
      r.handler.write(addr - r.base, size, value);
      return;
    }
    if (!r && !this.claimsAny(addr, size)) {
      this.unclaimedWrites++;
      return;
    }
    for (let k = 0; k < size; k++) this.write(addr + k, 1, (value >>> (8 * k)) & 0xff);
  }

  private claimsAny(addr: number, size: number): boolean {
    for (let k = 0; k < size; k++) if (this.lookup(addr + k)) return true;
    return false;
  }
}
