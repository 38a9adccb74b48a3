/**
 * TestHost: the Host interface over plain memory, a PCI bus 0, a virtual clock and an IRQ log, so
 * a device can be driven register by register without booting anything.
 *
 * The test plays the CPU: `in*`/`out*`, `readMmio`/`writeMmio` and `configRead`/`configWrite` are
 * what guest instructions would do. It also plays time: nothing runs until it calls `flush()`,
 * `advance()`, `runUntilIdle()` or `settle()` (the accessors flush on their own unless `autoFlush`
 * is off).
 *
 * Like the v86 host, an MMIO handler runs in an "MMIO context": an IRQ change a device makes there is
 * queued and applied only when deferred work runs, and counted in `irqChangesInMmio` (on v86 such a
 * change is dispatched on stale CPU state and loses the interrupt). Devices should latch the write
 * and `defer()` the work; tests can assert the counter stays 0.
 */
import type {
  AccessSize,
  DeviceState,
  Host,
  IrqLine,
  PciFunction,
  PciFunctionSpec,
  RegionHandler,
  StateHooks,
} from "../host.js";
import { CMD_BUS_MASTER, CMD_IO, CMD_MEMORY, PciConfigSpace } from "../pci-config.js";
import { AddressSpace, allOnes, type Region } from "./address-space.js";
import { TestGuestMemory } from "./guest-ram.js";
import { InterruptRouter, type IrqEdge, type IrqSource, pciIntxIsaIrq } from "./interrupts.js";
import { VirtualClock } from "./virtual-clock.js";

export interface TestHostOptions {
  /** Guest RAM in bytes (default 16 MiB). */
  memorySize?: number;
  /** Run deferred work after every top-level register access (default true). */
  autoFlush?: boolean;
  /**
   * How settle() lets pending promises run. Common code has no timers, so the default only drains
   * microtasks; Node tests should pass `() => new Promise((r) => setImmediate(r))`.
   */
  yieldToEventLoop?: () => Promise<void>;
  /** settle() returns after this many rounds in a row with no device activity (default 10). */
  settleIdleRounds?: number;
  /** flush() throws after running this many deferred items in one go (default 100 000). */
  maxFlushSteps?: number;
  /** advance()/runUntilIdle() throw after firing this many timers in one call (default 1 000 000). */
  maxTimersPerRun?: number;
}

export interface TraceEntry {
  /** Virtual time, ns. */
  time: number;
  device: string;
  message: string;
}

/**
 * Everything saveState() captures. JSON-compatible apart from the Uint8Arrays (RAM, config spaces
 * and whatever blobs the devices return). Pending timers are not part of it: they are closures, so
 * loadState() drops them and each device re-arms its own timers in its restore hook.
 */
export interface TestHostState {
  version: 1;
  timeNs: number;
  ram: Uint8Array;
  configAddress: number;
  functions: { devfn: number; name: string; config: Uint8Array; intx: boolean }[];
  /** Levels of the isaIrq() lines, in the order they were handed out. */
  isaIrqs: { irq: number; level: boolean }[];
  devices: Record<string, DeviceState>;
}

interface FunctionEntry {
  readonly spec: PciFunctionSpec;
  readonly devfn: number;
  readonly config: PciConfigSpace;
  readonly intx: IrqSource | undefined;
  readonly view: PciFunction;
  /** Decoded base of each BAR as of the last refresh (to dispatch and to report changes). */
  decoded: (number | undefined)[];
}

/** Memory BARs get fixed bases from here up, each aligned to its size (at least 4 KiB). */
export const MMIO_WINDOW_BASE = 0xf000_0000;
/** Below the IOAPIC. */
const MMIO_WINDOW_END = 0xfec0_0000;
const MIN_MMIO_SPAN = 0x1000;
/** Configuration mechanism #1 (CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC) and the PIIX reset control register at 0xCF9. */
const CONFIG_PORTS = 0xcf8;
const RESET_CONTROL_OFFSET = 1;
const RST_CPU = 1 << 2;
const NO_IRQ: IrqLine = { set() {}, level: false };

export class TestHost implements Host {
  readonly memory: TestGuestMemory;
  readonly clock: VirtualClock;
  readonly traces: TraceEntry[] = [];
  /** IRQ level changes a device asked for inside an MMIO handler (queued, see the file comment). */
  irqChangesInMmio = 0;
  /** Guest-memory accesses a device made inside an MMIO handler (allowed, but better deferred). */
  dmaInMmio = 0;
  autoFlush: boolean;

  private readonly router: InterruptRouter;
  private readonly functions = new Map<number, FunctionEntry>();
  private readonly isaSources: IrqSource[] = [];
  private readonly fixedPorts: Region[] = [];
  private ioBars: Region[] = [];
  private memoryBars: Region[] = [];
  private readonly ports: AddressSpace;
  private readonly mmio: AddressSpace;
  private readonly work: (() => void)[] = [];
  private readonly resetHooks: (() => void)[] = [];
  private readonly stateHooks = new Map<string, StateHooks>();
  private nextMmioBase = MMIO_WINDOW_BASE;
  private configAddress = 0;
  private resetControl = 0;
  /** Nesting of register accesses in progress; > 0 means a device handler is on the stack. */
  private depth = 0;
  private mmioDepth = 0;
  private flushing = false;
  /** Bumped by every device call into the host; settle() waits for it to stop moving. */
  private activity = 0;
  private readonly yieldToEventLoop: () => Promise<void>;
  private readonly settleIdleRounds: number;
  private readonly maxFlushSteps: number;
  private readonly maxTimersPerRun: number;

  constructor(options: TestHostOptions = {}) {
    this.autoFlush = options.autoFlush ?? true;
    this.yieldToEventLoop = options.yieldToEventLoop ?? (() => Promise.resolve());
    this.settleIdleRounds = options.settleIdleRounds ?? 10;
    this.maxFlushSteps = options.maxFlushSteps ?? 100_000;
    this.maxTimersPerRun = options.maxTimersPerRun ?? 1_000_000;
    this.memory = new TestGuestMemory(options.memorySize ?? 16 << 20, () => {
      this.activity++;
      if (this.mmioDepth > 0) this.dmaInMmio++;
    });
    this.clock = new VirtualClock(() => this.activity++);
    this.router = new InterruptRouter(() => this.clock.nowNs());
    this.ports = new AddressSpace("port", 0x10000, (port) => findRegion(this.fixedPorts, port) ?? findRegion(this.ioBars, port));
    this.mmio = new AddressSpace("MMIO", 2 ** 32, (addr) => findRegion(this.memoryBars, addr));
    this.fixedPorts.push({ base: CONFIG_PORTS, length: 8, handler: this.configMechanism() });
  }

  // ---- Host (the device side) ----

  registerPciFunction(spec: PciFunctionSpec): PciFunction {
    const fn = spec.fn ?? 0;
    if (!Number.isInteger(fn) || fn < 0 || fn > 7) throw new RangeError(`${spec.name}: function number ${fn} out of range`);
    const devfn = (this.pickSlot(spec, fn) << 3) | fn;
    const mmioMark = this.nextMmioBase;
    let config: PciConfigSpace;
    try {
      const bases = spec.bars.slice(0, 6).map((bar) => (bar?.kind === "memory" ? this.allocateMmio(spec, bar.size) : undefined));
      config = new PciConfigSpace(spec, bases);
    } catch (e) {
      this.nextMmioBase = mmioMark;
      throw e;
    }
    const isa = pciIntxIsaIrq(devfn >> 3, spec.interruptPin);
    const intx = isa === undefined ? undefined : this.router.addSource(isa, (level) => config.setInterruptStatus(level));
    const view: PciFunction = {
      spec,
      devfn,
      irq: intx ? this.irqLine(intx) : NO_IRQ,
      barBase: (i) => config.barBase(i),
      get busMasterEnabled() {
        return (config.command & CMD_BUS_MASTER) !== 0;
      },
      get ioEnabled() {
        return (config.command & CMD_IO) !== 0;
      },
      get memoryEnabled() {
        return (config.command & CMD_MEMORY) !== 0;
      },
      configRead: (offset, size) => config.read(offset, size),
      configSet: (offset, size, value) => {
        config.set(offset, size, value);
        this.notifyBars(entry, this.refresh(entry));
      },
    };
    const entry: FunctionEntry = { spec, devfn, config, intx, view, decoded: [] };
    this.functions.set(devfn, entry);
    this.refresh(entry);
    return view;
  }

  registerIoPorts(base: number, length: number, handler: RegionHandler): void {
    if (!Number.isInteger(base) || !Number.isInteger(length) || base < 0 || length <= 0 || base + length > 0x10000) {
      throw new RangeError(`I/O port range ${base}+${length} is not inside 0..0xffff`);
    }
    const clash = this.fixedPorts.find((r) => base < r.base + r.length && r.base < base + length);
    if (clash) throw new Error(`I/O ports ${hex(base)}+${length} overlap ports ${hex(clash.base)}+${clash.length}`);
    this.fixedPorts.push({ base, length, handler });
  }

  /** Each call hands out a separate source on the line (sharers are wired-OR). */
  isaIrq(irq: number): IrqLine {
    const source = this.router.addSource(irq);
    this.isaSources.push(source);
    return this.irqLine(source);
  }

  defer(fn: () => void): void {
    this.activity++;
    this.work.push(fn);
  }

  onReset(fn: () => void): void {
    this.resetHooks.push(fn);
  }

  registerState(id: string, hooks: StateHooks): void {
    if (this.stateHooks.has(id)) throw new Error(`state id "${id}" registered twice`);
    this.stateHooks.set(id, hooks);
  }

  trace(device: string, message: string): void {
    this.activity++;
    this.traces.push({ time: this.clock.nowNs(), device, message });
  }

  // ---- The guest's CPU (the test side) ----

  in8(port: number): number {
    return this.portIn(port, 1);
  }
  in16(port: number): number {
    return this.portIn(port, 2);
  }
  in32(port: number): number {
    return this.portIn(port, 4);
  }
  out8(port: number, value: number): void {
    this.portOut(port, 1, value);
  }
  out16(port: number, value: number): void {
    this.portOut(port, 2, value);
  }
  out32(port: number, value: number): void {
    this.portOut(port, 4, value);
  }

  /** `in` of any width; unclaimed ports read all-ones. */
  portIn(port: number, size: AccessSize): number {
    this.ports.check(port, size);
    return this.access(false, () => this.ports.read(port, size));
  }

  /** `out` of any width; writes nobody claims are dropped and counted. */
  portOut(port: number, size: AccessSize, value: number): void {
    this.ports.check(port, size);
    this.access(false, () => this.ports.write(port, size, value));
  }

  /** An MMIO read, inside the MMIO context; unclaimed addresses read all-ones. */
  readMmio(addr: number, size: AccessSize): number {
    this.mmio.check(addr, size);
    return this.access(true, () => this.mmio.read(addr, size));
  }

  /** An MMIO write, inside the MMIO context (IRQ changes made by the handler are queued). */
  writeMmio(addr: number, size: AccessSize, value: number): void {
    this.mmio.check(addr, size);
    this.access(true, () => this.mmio.write(addr, size, value));
  }

  /** Config read of bus 0 as the chipset would do it; an absent function reads all-ones. */
  configRead(devfn: number, offset: number, size: AccessSize): number {
    checkConfigAddress(devfn, offset);
    return this.access(false, () => this.configReadNow(devfn, offset, size));
  }

  /**
   * Config write: masks and W1C via PciConfigSpace, then I/O BARs are remapped and INTx masking is
   * re-evaluated; then onConfigWrite runs, then onBarChange for each BAR whose decoded base changed
   * (the order V86Host uses).
   */
  configWrite(devfn: number, offset: number, size: AccessSize, value: number): void {
    checkConfigAddress(devfn, offset);
    this.access(false, () => this.configWriteNow(devfn, offset, size, value));
  }

  // ---- Inspection ----

  get ram(): Uint8Array {
    return this.memory.ram;
  }
  get dmaErrors(): number {
    return this.memory.dmaErrors;
  }
  get irqLog(): readonly IrqEdge[] {
    return this.router.log;
  }
  get unclaimedPortReads(): number {
    return this.ports.unclaimedReads;
  }
  get unclaimedPortWrites(): number {
    return this.ports.unclaimedWrites;
  }
  get unclaimedMmioReads(): number {
    return this.mmio.unclaimedReads;
  }
  get unclaimedMmioWrites(): number {
    return this.mmio.unclaimedWrites;
  }

  /** Level of ISA line `irq`: the OR of every unmasked source on it. */
  irqLevel(irq: number): boolean {
    return this.router.level(irq);
  }

  /** ISA IRQ that a function's INTx reaches (PIIX swizzle, PIRQA..D = 10, 10, 11, 11). */
  intxIrq(devfn: number): number | undefined {
    return this.functions.get(devfn)?.intx?.irq;
  }

  /** devfns of the functions with these IDs, lowest first. */
  pciFind(vendorId: number, deviceId: number): number[] {
    return this.pciDevfns().filter((d) => {
      const s = this.functions.get(d)!.spec;
      return s.vendorId === vendorId && s.deviceId === deviceId;
    });
  }

  pciDevfns(): number[] {
    return [...this.functions.keys()].sort((a, b) => a - b);
  }

  pciFunction(devfn: number): PciFunction | undefined {
    return this.functions.get(devfn)?.view;
  }

  // ---- Time and deferred work ----

  nowNs(): number {
    return this.clock.nowNs();
  }
  get pendingTimers(): number {
    return this.clock.pendingTimers;
  }
  nextTimerDeadline(): number | undefined {
    return this.clock.nextDeadline();
  }
  /** Deferred items (including IRQ changes queued in MMIO handlers) not yet run. */
  get pendingWork(): number {
    return this.work.length;
  }

  /** Run deferred work (and queued IRQ changes) in order until none is left. No-op inside a handler. */
  flush(): void {
    if (this.flushing || this.depth > 0) return;
    this.flushing = true;
    try {
      for (let steps = 0; this.work.length; steps++) {
        if (steps >= this.maxFlushSteps) throw new Error(`flush: deferred work still queued after ${steps} items (livelock?)`);
        this.work.shift()!();
      }
    } finally {
      this.flushing = false;
    }
  }

  /** Move virtual time forward by `ns`, firing due timers in deadline order with flushes between them. */
  advance(ns: number): void {
    if (!Number.isFinite(ns) || ns < 0) throw new RangeError(`advance(${ns}): need a finite, non-negative time`);
    this.assertOutsideHandler("advance");
    const target = this.clock.nowNs() + ns;
    this.flush();
    this.fireTimers(target, () => false);
    this.clock.advanceTo(target);
  }

  /**
   * Run deferred work and timers until nothing is pending; returns the virtual time that passed.
   * Throws if a timer is still pending `maxNs` from now, or too many fire (a device that keeps
   * re-arming itself).
   */
  runUntilIdle(maxNs = 60e9): number {
    this.assertOutsideHandler("runUntilIdle");
    const start = this.clock.nowNs();
    this.flush();
    this.fireTimers(Infinity, (deadline) => deadline > start + maxNs);
    return this.clock.nowNs() - start;
  }

  /**
   * Let promises (media I/O, async device work) run, flushing between turns, until a number of
   * turns in a row pass with no device activity. Does not advance virtual time.
   */
  async settle(options: { idleRounds?: number; maxRounds?: number } = {}): Promise<void> {
    const idleRounds = options.idleRounds ?? this.settleIdleRounds;
    const maxRounds = options.maxRounds ?? 10_000;
    let idle = 0;
    for (let round = 0; round < maxRounds; round++) {
      const mark = this.activity;
      this.flush();
      await this.yieldToEventLoop();
      if (this.activity !== mark || this.work.length) idle = 0;
      else if (++idle >= idleRounds) return;
    }
    throw new Error(`settle: devices still active after ${maxRounds} rounds`);
  }

  // ---- Reset and state ----

  /** Machine reset: config spaces to power-on values (BARs unassigned, decoding off), then the hooks. */
  reset(): void {
    this.assertOutsideHandler("reset");
    this.configAddress = 0;
    this.resetControl = 0;
    for (const e of this.sortedFunctions()) {
      e.config.reset();
      this.notifyBars(e, this.refresh(e));
    }
    for (const hook of this.resetHooks) hook();
    this.flush();
  }

  /** Flushes, then captures RAM, time, config spaces, IRQ levels and every registered device. */
  saveState(): TestHostState {
    this.assertOutsideHandler("saveState");
    this.flush();
    const devices: Record<string, DeviceState> = {};
    for (const [id, hooks] of this.stateHooks) devices[id] = hooks.save();
    return {
      version: 1,
      timeNs: this.clock.nowNs(),
      ram: this.ram.slice(),
      configAddress: this.configAddress,
      functions: this.sortedFunctions().map((e) => ({
        devfn: e.devfn,
        name: e.spec.name,
        config: e.config.bytes.slice(),
        intx: e.intx?.requested ?? false,
      })),
      isaIrqs: this.isaSources.map((s) => ({ irq: s.irq, level: s.requested })),
      devices,
    };
  }

  /**
   * Restore into a host with the same devices registered the same way. Pending timers and deferred
   * work are dropped; devices re-arm their timers in their restore hooks. onBarChange is not called:
   * a device reads barBase() in restore if it needs to.
   */
  loadState(state: TestHostState): void {
    this.assertOutsideHandler("loadState");
    if (state.version !== 1) throw new Error(`unknown TestHost state version ${state.version}`);
    if (state.ram.length !== this.ram.length) throw new Error(`state has ${state.ram.length} bytes of RAM, host ${this.ram.length}`);
    const entries = this.sortedFunctions();
    const saved = state.functions.map((f) => `${hex(f.devfn)}:${f.name}`).join();
    const present = entries.map((e) => `${hex(e.devfn)}:${e.spec.name}`).join();
    if (saved !== present) throw new Error(`PCI functions differ: state [${saved}], host [${present}]`);
    if (state.isaIrqs.map((s) => s.irq).join() !== this.isaSources.map((s) => s.irq).join()) {
      throw new Error("ISA IRQ lines differ between state and host");
    }
    const ids = [...this.stateHooks.keys()].sort().join();
    if (Object.keys(state.devices).sort().join() !== ids) throw new Error(`device state ids differ from registered ids (${ids})`);

    this.clock.resetTo(state.timeNs);
    this.work.length = 0;
    this.ram.set(state.ram);
    this.configAddress = state.configAddress;
    state.functions.forEach((f, i) => {
      const e = entries[i];
      e.config.bytes.set(f.config);
      this.refresh(e);
      if (e.intx) this.applyNow(e.intx, f.intx);
    });
    state.isaIrqs.forEach((s, i) => this.applyNow(this.isaSources[i], s.level));
    for (const [id, hooks] of this.stateHooks) hooks.restore(state.devices[id]);
    this.flush();
  }

  // ---- Internals ----

  /** Run one CPU access; flush afterwards when it was the outermost one. */
  private access<T>(mmio: boolean, fn: () => T): T {
    this.depth++;
    if (mmio) this.mmioDepth++;
    let result: T;
    try {
      result = fn();
    } finally {
      this.depth--;
      if (mmio) this.mmioDepth--;
    }
    if (this.autoFlush && this.depth === 0) this.flush();
    return result;
  }

  private configReadNow(devfn: number, offset: number, size: AccessSize): number {
    const e = this.functions.get(devfn);
    return e ? e.config.read(offset, size) : allOnes(size);
  }

  private configWriteNow(devfn: number, offset: number, size: AccessSize, value: number): void {
    const e = this.functions.get(devfn);
    if (!e) return;
    const effect = e.config.write(offset, size, value);
    const moved = effect.barsChanged.length || effect.commandChanged ? this.refresh(e) : [];
    e.spec.onConfigWrite?.(offset, size, value);
    this.notifyBars(e, moved);
  }

  /**
   * Re-read BAR decoding and INTx masking of one function after its config space changed; returns
   * the BARs whose decoded base changed.
   */
  private refresh(e: FunctionEntry): number[] {
    const before = e.decoded;
    e.decoded = [0, 1, 2, 3, 4, 5].map((i) => e.config.barBase(i));
    if (e.intx) {
      this.router.setMasked(e.intx, e.config.intxDisabled);
      e.config.setInterruptStatus(e.intx.applied);
    }
    this.ioBars = [];
    this.memoryBars = [];
    for (const f of this.sortedFunctions()) {
      f.spec.bars.slice(0, 6).forEach((bar, i) => {
        const base = f.decoded[i];
        if (!bar || base === undefined) return;
        const length = Math.max(bar.size, bar.kind === "io" ? 4 : 16);
        (bar.kind === "io" ? this.ioBars : this.memoryBars).push({ base, length, handler: bar.handler });
      });
    }
    return [0, 1, 2, 3, 4, 5].filter((i) => before[i] !== e.decoded[i]);
  }

  private notifyBars(e: FunctionEntry, moved: number[]): void {
    for (const i of moved) e.spec.onBarChange?.(i, e.decoded[i]);
  }

  private irqLine(source: IrqSource): IrqLine {
    const host = this;
    return {
      set(level: boolean) {
        host.activity++;
        if (level === source.requested) return;
        source.requested = level;
        if (host.mmioDepth > 0) {
          // Applied later with whatever level is wanted then, as V86Host does (no glitch pulses).
          host.irqChangesInMmio++;
          host.work.push(() => host.router.apply(source, source.requested));
        } else {
          host.router.apply(source, level);
        }
      },
      get level() {
        return source.requested;
      },
    };
  }

  private applyNow(source: IrqSource, level: boolean): void {
    source.requested = level;
    this.router.apply(source, level);
  }

  /** Fire timers due by `limit` in order; `tooLate(deadline)` aborts with an error. */
  private fireTimers(limit: number, tooLate: (deadline: number) => boolean): void {
    for (let fired = 0; ; fired++) {
      const next = this.clock.nextDeadline();
      if (next === undefined || next > limit) return;
      if (tooLate(next)) throw new Error(`timers still pending at ${next} ns (livelock or missing completion?)`);
      if (fired >= this.maxTimersPerRun) throw new Error(`${fired} timers fired in one run (a device re-arming forever?)`);
      this.clock.takeDue(limit)!();
      this.flush();
    }
  }

  private pickSlot(spec: PciFunctionSpec, fn: number): number {
    const want = spec.slot;
    if (want !== undefined && Number.isInteger(want) && want >= 0 && want < 32 && !this.functions.has((want << 3) | fn)) return want;
    if (fn !== 0) throw new Error(`${spec.name}: function ${fn} needs the free slot of its function 0`);
    for (let slot = 2; slot < 32; slot++) {
      if (![0, 1, 2, 3, 4, 5, 6, 7].some((f) => this.functions.has((slot << 3) | f))) return slot;
    }
    throw new Error(`${spec.name}: no free PCI slot`);
  }

  private allocateMmio(spec: PciFunctionSpec, size: number): number {
    const span = Math.max(size, MIN_MMIO_SPAN);
    const base = Math.ceil(this.nextMmioBase / span) * span;
    if (base + span > MMIO_WINDOW_END) throw new Error(`${spec.name}: no room for a ${size}-byte memory BAR`);
    this.nextMmioBase = base + span;
    return base;
  }

  private sortedFunctions(): FunctionEntry[] {
    return this.pciDevfns().map((d) => this.functions.get(d)!);
  }

  private assertOutsideHandler(what: string): void {
    if (this.depth > 0) throw new Error(`${what}() called from inside a device register handler`);
  }

  /** Ports 0xCF8..0xCFF: CONFIG_ADDRESS (dword at 0xCF8), reset control (byte at 0xCF9), CONFIG_DATA. */
  private configMechanism(): RegionHandler {
    const dataTarget = (offset: number): [number, number] | undefined => {
      const a = this.configAddress;
      if (!(a & 0x8000_0000) || (a >>> 16) & 0xff) return undefined; // disabled, or not bus 0
      return [(a >>> 8) & 0xff, (a & 0xfc) + offset - 4];
    };
    return {
      read: (offset, size) => {
        if (offset === 0 && size === 4) return this.configAddress;
        if (offset === RESET_CONTROL_OFFSET && size === 1) return this.resetControl;
        const t = offset >= 4 ? dataTarget(offset) : undefined;
        return t ? this.configReadNow(t[0], t[1], size) : allOnes(size);
      },
      write: (offset, size, value) => {
        if (offset === 0 && size === 4) this.configAddress = (value & 0x80ff_fffc) >>> 0;
        else if (offset === RESET_CONTROL_OFFSET && size === 1) {
          this.resetControl = value & ~RST_CPU;
          if (value & RST_CPU) this.defer(() => this.reset());
        } else if (offset >= 4) {
          const t = dataTarget(offset);
          if (t) this.configWriteNow(t[0], t[1], size, value);
        }
      },
    };
  }
}

function findRegion(regions: readonly Region[], addr: number): Region | undefined {
  return regions.find((r) => addr >= r.base && addr < r.base + r.length);
}

function checkConfigAddress(devfn: number, offset: number): void {
  if (!Number.isInteger(devfn) || devfn < 0 || devfn > 0xff) throw new RangeError(`devfn ${devfn} out of range`);
  if (!Number.isInteger(offset) || offset < 0 || offset > 0xff) throw new RangeError(`config offset ${offset} out of range`);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
