/**
 * V86Host: the Host interface over the npm v86 build. Every v86 quirk that devices must not see
 * is handled here (see ../../README.md "Plugging vstor into your own v86 setup"):
 * - config space: v86 has no write masks or W1C bits and drops 32-bit command writes, so our
 *   functions' config writes are intercepted and run through PciConfigSpace; v86's copy mirrors it.
 * - I/O BARs: moved by us (v86 cannot relocate below 0x1000 and captures handlers at registration).
 * - memory BARs: fixed addresses in the PCI hole, one dispatcher per 128 KiB block shared by functions.
 * - interrupts: wired-OR per line, and never changed while guest code sits inside an MMIO handler.
 * - DMA: bounds-checked, through write_blob so the JIT forgets code we overwrite.
 * - timers through the emulator's hardware-timer hook; reset and save/restore hooks.
 */
import type {
  AccessSize,
  Clock,
  DeviceState,
  GuestMemory,
  Host,
  IrqLine,
  PciFunction,
  PciFunctionSpec,
  RegionHandler,
  StateHooks,
  TimerHandle,
} from "../host.js";
import { PciConfigSpace } from "../pci-config.js";
import { removeBuiltinIde } from "./builtin-ide.js";
import { checkInternals, type V86Cpu, type V86Emulator, type V86IoEntry } from "./internals.js";
import { InterruptLines } from "./interrupts.js";
import { V86GuestMemory } from "./guest-memory.js";

export interface V86HostOptions {
  /** Take over v86's built-in IDE (PCI 00:1e.0, ports 0x1F0/0x170/0x3F6/0x376, IRQ 14/15). */
  replaceBuiltinIde?: boolean;
  /** Where fixed memory BARs are placed; must be in the PCI hole, clear of v86's own mappings. */
  mmioBase?: number;
  /**
   * Called instead of v86's own reset when the guest or the embedder resets the machine. The npm
   * build's in-place reset crashes a booted Linux guest ("Unimplemented: #GP handler"), so an
   * embedder can rebuild the emulator instead (machine/guest-session.ts does).
   */
  onReboot?(): void;
  /** Receives device trace lines (guest mistakes, unusual events). */
  onTrace?(device: string, message: string): void;
}

const MMIO_BLOCK = 0x20000; // v86 maps MMIO in 128 KiB blocks
const DEFAULT_MMIO_BASE = 0xf0000000;
const MMIO_LIMIT = 0xfeb00000; // v86's VGA ROM mapping starts here
/** Index in v86's CPU state array where our devices are saved (v86 uses 0..91). */
const STATE_SLOT = 128;
const STATE_MAGIC = "vstor-state-1";
/** Free device numbers on bus 0 in the npm build, in the order we hand them out. */
const FREE_SLOTS = [3, 4, 8, 9, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1f, 2];

interface MmioRegion {
  start: number;
  end: number;
  fn: V86PciFunction;
  bar: number;
  handler: RegionHandler;
}

class V86PciFunction implements PciFunction {
  readonly config: PciConfigSpace;
  /** Level the device asks for; the line also needs INTx enabled. */
  requested = false;
  routedIrq = -1;
  readonly ioBases: (number | undefined)[] = [];
  readonly irq: IrqLine;

  constructor(
    private readonly host: V86Host,
    readonly spec: PciFunctionSpec,
    readonly devfn: number,
    memoryBases: (number | undefined)[],
    readonly mirror: Int32Array,
  ) {
    this.config = new PciConfigSpace(spec, memoryBases);
    const self = this;
    this.irq = {
      set(level: boolean) {
        self.requested = level;
        host.updateIntx(self);
      },
      get level() {
        return self.requested;
      },
    };
  }

  barBase(index: number): number | undefined {
    return this.config.barBase(index);
  }
  get busMasterEnabled(): boolean {
    return (this.config.command & 4) !== 0;
  }
  get ioEnabled(): boolean {
    return (this.config.command & 1) !== 0;
  }
  get memoryEnabled(): boolean {
    return (this.config.command & 2) !== 0;
  }
  configRead(offset: number, size: AccessSize): number {
    return this.config.read(offset, size);
  }
  configSet(offset: number, size: AccessSize, value: number): void {
    this.config.set(offset, size, value);
    this.syncMirror();
  }
  syncMirror(): void {
    new Uint8Array(this.mirror.buffer, this.mirror.byteOffset, 256).set(this.config.bytes);
  }
}

interface Timer {
  deadline: number; // ms, performance.now() scale (v86's microtick)
  fn: () => void;
  cancelled: boolean;
}

export class V86Host implements Host {
  readonly memory: GuestMemory;
  readonly clock: Clock;
  private readonly functions: V86PciFunction[] = [];
  private readonly byDevfn = new Map<number, V86PciFunction>();
  private readonly fixedPorts: { base: number; length: number; handler: RegionHandler }[] = [];
  private readonly mmioBlocks = new Map<number, MmioRegion[]>();
  private nextMmio: number;
  private readonly lines: InterruptLines;
  private mmioDepth = 0;
  private deferred: (() => void)[] = [];
  private flushScheduled = false;
  private timers: Timer[] = [];
  private readonly resetHooks: (() => void)[] = [];
  private readonly stateHooks = new Map<string, StateHooks>();
  private readonly isaIrqs = new Map<number, IrqLine>();
  /** Keeps the device clock continuous across save/restore into another process. */
  private clockOffsetMs = 0;

  /**
   * Attach to a V86 instance right after `new V86(...)`. `setup` runs when the emulator's devices
   * exist but before the BIOS runs (v86's "emulator-ready"); register every device there.
   */
  static install(emulator: V86Emulator, options: V86HostOptions, setup: (host: V86Host) => void): Promise<V86Host> {
    return new Promise((resolve, reject) => {
      emulator.add_listener("emulator-ready", () => {
        try {
          const host = new V86Host(checkInternals(emulator), options);
          setup(host);
          resolve(host);
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  constructor(
    readonly cpu: V86Cpu,
    private readonly options: V86HostOptions = {},
  ) {
    this.nextMmio = options.mmioBase ?? DEFAULT_MMIO_BASE;
    this.lines = new InterruptLines(cpu);
    this.memory = new V86GuestMemory(cpu);
    this.clock = {
      nowNs: () => (performance.now() + this.clockOffsetMs) * 1e6,
      setTimer: (delayNs, fn) => this.setTimer(delayNs, fn),
    };
    if (options.replaceBuiltinIde) removeBuiltinIde(cpu);
    this.hookConfigWrites();
    this.hookTimers();
    this.hookReset();
    this.hookState();
  }

  // ---- PCI ---------------------------------------------------------------------------------

  registerPciFunction(spec: PciFunctionSpec): PciFunction {
    const pci = this.cpu.devices.pci;
    const fnNo = spec.fn ?? 0;
    const free = (slot: number) => !pci.devices[(slot << 3) | fnNo];
    let slot = spec.slot !== undefined && free(spec.slot) ? spec.slot : FREE_SLOTS.find(free);
    if (slot === undefined) throw new Error(`vstor: no free PCI slot for ${spec.name}`);
    const devfn = (slot << 3) | fnNo;

    const memoryBases = spec.bars.map((bar) => (bar?.kind === "memory" ? this.allocateMmio(bar.size) : undefined));
    // Register with no BARs: v86 must not move ports on its own; we decode BARs ourselves.
    const mirror = pci.register_device({ pci_id: devfn, pci_space: new Array(256).fill(0), pci_bars: [], name: spec.name });
    const fn = new V86PciFunction(this, spec, devfn, memoryBases, mirror);
    fn.syncMirror();
    this.functions.push(fn);
    this.byDevfn.set(devfn, fn);
    spec.bars.forEach((bar, i) => {
      if (bar?.kind === "memory") this.mapMmio(fn, i, memoryBases[i]!, bar);
    });
    return fn;
  }

  private allocateMmio(size: number): number {
    const align = Math.max(size, 0x1000);
    const base = Math.ceil(this.nextMmio / align) * align;
    if (base + size > MMIO_LIMIT) throw new Error("vstor: out of fixed MMIO space for memory BARs");
    this.nextMmio = base + size;
    return base;
  }

  private mapMmio(fn: V86PciFunction, bar: number, base: number, spec: { size: number; handler: RegionHandler }): void {
    const size = Math.max(spec.size, 16);
    for (let block = Math.floor(base / MMIO_BLOCK); block * MMIO_BLOCK < base + size; block++) {
      let regions = this.mmioBlocks.get(block);
      if (!regions) {
        this.mmioBlocks.set(block, (regions = []));
        this.installMmioBlock(block * MMIO_BLOCK, regions);
      }
      regions.push({ start: base, end: base + size, fn, bar, handler: spec.handler });
    }
  }

  /** One v86 mapping per 128 KiB block; it finds the function and BAR that own the address. */
  private installMmioBlock(blockBase: number, regions: MmioRegion[]): void {
    const find = (addr: number): MmioRegion | undefined => {
      const a = addr >>> 0; // addresses at or above 2 GiB arrive negative
      for (const r of regions) if (a >= r.start && a < r.end && r.fn.config.barBase(r.bar) !== undefined) return r;
      return undefined;
    };
    const read = (addr: number, size: AccessSize): number => {
      const r = find(addr);
      if (!r) return size === 4 ? -1 : 0xff;
      this.mmioDepth++;
      try {
        return r.handler.read((addr >>> 0) - r.start, size);
      } catch (e) {
        this.trace(r.fn.spec.name, `MMIO read handler failed: ${String(e)}`);
        return size === 4 ? 0xffffffff : 0xff;
      } finally {
        this.mmioDepth--;
      }
    };
    const write = (addr: number, size: AccessSize, value: number): void => {
      const r = find(addr);
      if (!r) return;
      this.mmioDepth++;
      try {
        r.handler.write((addr >>> 0) - r.start, size, size === 4 ? value >>> 0 : value & 0xff);
      } catch (e) {
        this.trace(r.fn.spec.name, `MMIO write handler failed: ${String(e)}`);
      } finally {
        this.mmioDepth--;
      }
    };
    this.cpu.io.mmap_register(
      blockBase,
      MMIO_BLOCK,
      (a) => read(a, 1) & 0xff,
      (a, v) => write(a, 1, v),
      (a) => read(a, 4) | 0,
      (a, v) => write(a, 4, v),
    );
  }

  /** Intercept config writes to our functions; run them through our model, then mirror. */
  private hookConfigWrites(): void {
    const pci = this.cpu.devices.pci;
    const wrap = (size: AccessSize, orig: (a: number, v: number) => void) =>
      function (this: unknown, address: number, value: number) {
        const devfn = (address >> 8) & 0xffff;
        const fn = host.byDevfn.get(devfn);
        if (fn) return host.configWrite(fn, address & 0xff, size, value);
        // v86 throws on byte/word writes to an empty slot; a probing guest must not crash us.
        if (!pci.device_spaces[devfn]) return;
        return orig.call(pci, address, value);
      };
    const host = this;
    pci.pci_write8 = wrap(1, pci.pci_write8);
    pci.pci_write16 = wrap(2, pci.pci_write16);
    pci.pci_write32 = wrap(4, pci.pci_write32);
  }

  private configWrite(fn: V86PciFunction, offset: number, size: AccessSize, value: number): void {
    const mask = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    const decodedBefore = fn.spec.bars.map((_, i) => fn.config.barBase(i));
    const effect = fn.config.write(offset & ~(size - 1), size, (value & mask) >>> 0);
    fn.syncMirror();
    if (effect.commandChanged || effect.barsChanged.length) this.remapIo(fn);
    if (effect.commandChanged) this.updateIntx(fn);
    try {
      fn.spec.onConfigWrite?.(offset, size, value >>> 0);
      fn.spec.bars.forEach((bar, i) => {
        const now = fn.config.barBase(i);
        if (bar && now !== decodedBefore[i]) fn.spec.onBarChange?.(i, now);
      });
    } catch (e) {
      this.trace(fn.spec.name, `config write hook failed: ${String(e)}`);
    }
    this.cpu.devices.pci.pci_query(); // v86 latches reads at CF8 time: refresh the latch
  }

  /** Move an I/O BAR's port handlers to where its config space now says they live. */
  private remapIo(fn: V86PciFunction): void {
    fn.spec.bars.forEach((bar, i) => {
      if (bar?.kind !== "io") return;
      const want = fn.config.barBase(i);
      const have = fn.ioBases[i];
      if (want === have) return;
      const size = Math.max(bar.size, 4);
      if (have !== undefined) this.unmapPorts(have, size);
      fn.ioBases[i] = want;
      if (want !== undefined) this.mapPorts(want, size, bar.handler, fn.spec.name);
    });
  }

  // ---- Port I/O ----------------------------------------------------------------------------

  registerIoPorts(base: number, length: number, handler: RegionHandler): void {
    for (const r of this.fixedPorts) {
      if (base < r.base + r.length && r.base < base + length) {
        throw new Error(`vstor: I/O ports ${base.toString(16)}+${length} overlap ${r.base.toString(16)}+${r.length}`);
      }
    }
    this.fixedPorts.push({ base, length, handler });
    this.mapPorts(base, length, handler, `ports ${base.toString(16)}`);
  }

  private mapPorts(base: number, length: number, handler: RegionHandler, name: string): void {
    const ports = this.cpu.io.ports;
    const guard = <T>(what: string, fallback: T, f: () => T): T => {
      try {
        return f();
      } catch (e) {
        this.trace(name, `${what} failed: ${String(e)}`);
        return fallback;
      }
    };
    for (let i = 0; i < length; i++) {
      const off = i;
      const entry: V86IoEntry = {
        read8: () => guard("read", 0xff, () => handler.read(off, 1) & 0xff),
        read16: () => guard("read", 0xffff, () => handler.read(off, 2) & 0xffff),
        read32: () => guard("read", -1, () => handler.read(off, 4) | 0),
        write8: (v) => guard("write", undefined, () => handler.write(off, 1, v & 0xff)),
        write16: (v) => guard("write", undefined, () => handler.write(off, 2, v & 0xffff)),
        write32: (v) => guard("write", undefined, () => handler.write(off, 4, v >>> 0)),
        device: undefined,
      };
      ports[base + i] = entry;
    }
  }

  private unmapPorts(base: number, length: number): void {
    const io = this.cpu.io;
    for (let p = base; p < base + length; p++) {
      // Never clobber a fixed legacy range another device of ours owns.
      if (this.fixedPorts.some((r) => p >= r.base && p < r.base + r.length)) continue;
      io.ports[p] = io.create_empty_entry();
    }
  }

  // ---- Interrupts --------------------------------------------------------------------------

  /** Re-evaluate a function's INTx: requested level, INTx disable, PIRQ routing. */
  updateIntx(fn: V86PciFunction): void {
    if (this.mmioDepth > 0 && fn.requested && !fn.config.intxDisabled) {
      // Raising inside an MMIO handler would dispatch the interrupt on the JIT's stale state
      // (v86-internals: the interrupt is lost), so it waits for the flush. Lowering goes at once:
      // a line left up until the flush makes the PIC (level mode) interrupt the guest again
      // after its handler cleared the cause, and on the npm build that storm ends with the
      // master's cascade input stuck in service (measured with AHCI: every later interrupt on
      // IRQ 10 lost). Lowering dispatches nothing: with IF=1 no request is left pending.
      this.defer(() => this.updateIntx(fn));
      return;
    }
    const pin = fn.spec.interruptPin;
    fn.config.setInterruptStatus(fn.requested);
    fn.syncMirror();
    if (!pin) return;
    const level = fn.requested && !fn.config.intxDisabled;
    const slot = fn.devfn >> 3;
    // PIIX3 routing: PIRQ[(pin - 1 + slot - 1) & 3], read live so guest reprogramming is honoured.
    const irq = this.cpu.devices.pci.isa_bridge_space8[0x60 + ((pin - 1 + slot - 1) & 3)];
    if (fn.routedIrq >= 0 && fn.routedIrq !== irq) this.lines.drive(fn, fn.routedIrq, false);
    if (irq & 0x80 || irq > 15) {
      fn.routedIrq = -1; // PIRQ routing disabled
      return;
    }
    fn.routedIrq = irq;
    this.lines.drive(fn, irq, level);
  }

  isaIrq(irq: number): IrqLine {
    let line = this.isaIrqs.get(irq);
    if (line) return line;
    const who = {};
    let level = false;
    line = {
      set: (l: boolean) => {
        level = l;
        // As updateIntx: only a raise inside an MMIO handler waits for the flush.
        if (this.mmioDepth > 0 && l) this.defer(() => this.lines.drive(who, irq, level));
        else this.lines.drive(who, irq, l);
      },
      get level() {
        return level;
      },
    };
    this.isaIrqs.set(irq, line);
    return line;
  }

  // ---- Deferred work and timers ------------------------------------------------------------

  defer(fn: () => void): void {
    this.deferred.push(fn);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // A microtask runs once v86's slice of guest code has returned to the event loop.
      queueMicrotask(() => this.flush());
    }
  }

  /** Run deferred work. Only called where no guest code is on the stack. */
  private flush(): void {
    this.flushScheduled = false;
    for (let rounds = 0; this.deferred.length && rounds < 64; rounds++) {
      const work = this.deferred;
      this.deferred = [];
      for (const fn of work) {
        try {
          fn();
        } catch (e) {
          this.trace("host", `deferred work failed: ${String(e)}`);
        }
      }
    }
    if (this.deferred.length && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush()); // a device that keeps deferring must not starve the guest
    }
  }

  private setTimer(delayNs: number, fn: () => void): TimerHandle {
    const delayMs = Math.max(0, delayNs / 1e6);
    const t: Timer = { deadline: performance.now() + delayMs, fn, cancelled: false };
    let i = this.timers.length;
    while (i > 0 && this.timers[i - 1].deadline > t.deadline) i--;
    this.timers.splice(i, 0, t);
    // The timer hook runs between guest instruction batches; this wakes a halted CPU too.
    const wake = setTimeout(() => this.runDueTimers(performance.now()), delayMs);
    (wake as { unref?: () => void }).unref?.();
    return {
      cancel: () => {
        t.cancelled = true;
        clearTimeout(wake);
      },
    };
  }

  private runDueTimers(now: number): void {
    this.flush();
    while (this.timers.length && (this.timers[0].cancelled || this.timers[0].deadline <= now)) {
      const t = this.timers.shift()!;
      if (t.cancelled) continue;
      t.cancelled = true;
      try {
        t.fn();
      } catch (e) {
        this.trace("host", `timer callback failed: ${String(e)}`);
      }
      this.flush();
    }
  }

  private hookTimers(): void {
    const cpu = this.cpu;
    const orig = cpu.run_hardware_timers.bind(cpu);
    cpu.run_hardware_timers = (acpi: boolean, now: number) => {
      const next = orig(acpi, now);
      this.runDueTimers(now);
      const first = this.timers.find((t) => !t.cancelled);
      return first ? Math.min(next, Math.max(0, first.deadline - now)) : next;
    };
  }

  // ---- Reset ---------------------------------------------------------------------------------

  onReset(fn: () => void): void {
    this.resetHooks.push(fn);
  }

  private hookReset(): void {
    const cpu = this.cpu;
    const orig = cpu.reboot_internal.bind(cpu);
    cpu.reboot_internal = () => {
      if (this.options.onReboot) {
        this.options.onReboot();
        return;
      }
      orig();
      this.resetDevices();
    };
  }

  private resetDevices(): void {
    for (const fn of this.functions) {
      fn.config.reset();
      fn.syncMirror();
      fn.requested = false;
      fn.routedIrq = -1;
      this.remapIo(fn);
    }
    for (const line of this.isaIrqs.values()) line.set(false);
    this.lines.releaseAll();
    for (const hook of this.resetHooks) {
      try {
        hook();
      } catch (e) {
        this.trace("host", `reset hook failed: ${String(e)}`);
      }
    }
  }

  // ---- Save / restore ------------------------------------------------------------------------

  registerState(id: string, hooks: StateHooks): void {
    if (this.stateHooks.has(id)) throw new Error(`vstor: state id '${id}' registered twice`);
    this.stateHooks.set(id, hooks);
  }

  private hookState(): void {
    const cpu = this.cpu;
    const origGet = cpu.get_state.bind(cpu);
    const origSet = cpu.set_state.bind(cpu);
    cpu.get_state = () => {
      const state = origGet();
      state[STATE_SLOT] = this.saveSlot();
      return state;
    };
    cpu.set_state = (state: unknown[]) => {
      origSet(state);
      const slot = state[STATE_SLOT];
      if (Array.isArray(slot) && slot[0] === STATE_MAGIC) this.restoreSlot(slot);
    };
  }

  /** [magic, json, ...blobs]: v86's state writer keeps strings and typed arrays as they are. */
  private saveSlot(): unknown[] {
    const blobs: Uint8Array[] = [];
    const addBlob = (b: Uint8Array) => blobs.push(b.slice()) - 1;
    const functions = this.functions.map((fn) => ({
      devfn: fn.devfn,
      name: fn.spec.name,
      config: addBlob(fn.config.bytes),
      requested: fn.requested,
    }));
    const isa = [...this.isaIrqs].map(([irq, line]) => ({ irq, level: line.level }));
    const devices: { id: string; version: number; data: unknown; blobs: number[] }[] = [];
    for (const [id, hooks] of this.stateHooks) {
      const s = hooks.save();
      devices.push({ id, version: s.version, data: s.data, blobs: (s.blobs ?? []).map(addBlob) });
    }
    const clockMs = performance.now() + this.clockOffsetMs;
    return [STATE_MAGIC, JSON.stringify({ clockMs, functions, isa, devices }), ...blobs];
  }

  private restoreSlot(slot: unknown[]): void {
    const saved = JSON.parse(slot[1] as string) as {
      clockMs: number;
      functions: { devfn: number; name: string; config: number; requested: boolean }[];
      isa: { irq: number; level: boolean }[];
      devices: { id: string; version: number; data: unknown; blobs: number[] }[];
    };
    const blob = (i: number) => slot[2 + i] as Uint8Array;
    this.clockOffsetMs = saved.clockMs - performance.now();
    this.lines.forgetAll();
    this.lines.adoptingRestoredState = true;
    for (const s of saved.functions) {
      const fn = this.byDevfn.get(s.devfn);
      if (!fn || fn.spec.name !== s.name) {
        this.trace("host", `saved state has ${s.name} at devfn ${s.devfn.toString(16)}, not configured now`);
        continue;
      }
      fn.config.bytes.set(blob(s.config));
      fn.syncMirror();
      fn.requested = s.requested;
      this.remapIo(fn);
      this.updateIntx(fn);
    }
    for (const s of saved.isa) this.isaIrq(s.irq).set(s.level);
    this.lines.adoptingRestoredState = false;
    for (const d of saved.devices) {
      const hooks = this.stateHooks.get(d.id);
      if (!hooks) {
        this.trace("host", `saved state for '${d.id}' has no device to go to`);
        continue;
      }
      const state: DeviceState = { version: d.version, data: d.data, blobs: d.blobs.map(blob) };
      hooks.restore(state);
    }
  }

  trace(device: string, message: string): void {
    this.options.onTrace?.(device, message);
  }
}
