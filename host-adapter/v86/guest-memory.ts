/**
 * Guest RAM as a bus master sees it, on v86. Every access is checked against RAM and against the
 * legacy VGA window (DMA there would bypass v86's VGA), and every write goes through write_blob,
 * which tells the JIT to forget code compiled from the bytes we overwrite. Never per byte through
 * cpu.mem8: that is a Proxy that builds a new typed array on every access.
 */
import type { GuestMemory, SgSegment } from "../host.js";
import type { V86Cpu } from "./internals.js";

const VGA_WINDOW_START = 0xa0000;
const VGA_WINDOW_END = 0xc0000;

export class V86GuestMemory implements GuestMemory {
  constructor(private readonly cpu: V86Cpu) {}

  get size(): number {
    return this.cpu.memory_size[0] >>> 0;
  }

  /** True when [addr, addr + len) is plain RAM. */
  private inRam(addr: number, len: number): boolean {
    if (!Number.isInteger(addr) || !Number.isInteger(len) || addr < 0 || len < 0) return false;
    if (addr + len > this.size) return false;
    return len === 0 || addr + len <= VGA_WINDOW_START || addr >= VGA_WINDOW_END;
  }

  read(addr: number, dst: Uint8Array): boolean {
    if (!this.inRam(addr, dst.length)) return false;
    // read_blob returns a live view of wasm memory: copy at once, before anything can grow it.
    if (dst.length) dst.set(this.cpu.read_blob(addr, dst.length));
    return true;
  }

  write(addr: number, src: Uint8Array): boolean {
    if (!this.inRam(addr, src.length)) return false;
    if (src.length) this.cpu.write_blob(src, addr);
    return true;
  }

  private checkSg(sg: readonly SgSegment[], total: number): boolean {
    let left = total;
    for (const s of sg) {
      if (left <= 0) break;
      if (!this.inRam(s.addr, Math.min(s.len, left))) return false;
      left -= s.len;
    }
    return true;
  }

  readSg(sg: readonly SgSegment[], dst: Uint8Array): boolean {
    if (!this.checkSg(sg, dst.length)) return false;
    let at = 0;
    for (const s of sg) {
      if (at >= dst.length) break;
      const n = Math.min(s.len, dst.length - at);
      if (n) dst.set(this.cpu.read_blob(s.addr, n), at);
      at += n;
    }
    return true;
  }

  writeSg(sg: readonly SgSegment[], src: Uint8Array): boolean {
    if (!this.checkSg(sg, src.length)) return false;
    let at = 0;
    for (const s of sg) {
      if (at >= src.length) break;
      const n = Math.min(s.len, src.length - at);
      if (n) this.cpu.write_blob(src.subarray(at, at + n), s.addr);
      at += n;
    }
    return true;
  }

  read32(addr: number): number | undefined {
    if (!this.inRam(addr, 4)) return undefined;
    return this.cpu.read32s(addr) >>> 0;
  }

  write32(addr: number, value: number): boolean {
    if (!this.inRam(addr, 4)) return false;
    this.cpu.write32(addr, value | 0);
    return true;
  }
}
