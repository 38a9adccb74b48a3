/**
 * Test doubles for the ATA core (used by devices/ata/*.test.ts, and by front-end tests that want
 * a disk): an in-memory BlockBackend with held completions and injected MediumErrors, and an
 * AtaTransport that records what moves. Plain ES2022: no Node, no timers.
 */
import { checkRequest, MediumError, type BlockBackend, type Extent, type MediumErrorKind } from "../../media/block.js";
import { AtaDevice } from "./device.js";
import type { AtaDeviceConfig } from "./config.js";
import type { TaskFile } from "./task-file.js";
import type { AtaCompletion, AtaTransport, DataDirection, DmaOutcome, PioBlock } from "./transport.js";
import { concatBytes } from "../scsi/bytes.js";

export interface InjectedError {
  op: "read" | "write" | "flush" | "discard";
  /** First sector the error covers (read/write/discard); the error's offset points at it. */
  lba?: number;
  kind: MediumErrorKind;
}

/** A RAM disk. `hold = true` parks completions until release(). */
export class MemoryDisk implements BlockBackend {
  readonly sectorSize: number;
  readonly data: Uint8Array;
  readonly readOnly: boolean;
  readonly discardZeroes: boolean;
  hold = false;
  errors: InjectedError[] = [];
  readonly discards: { offset: number; length: number }[] = [];
  readonly writes: { offset: number; length: number }[] = [];
  readonly reads: { offset: number; length: number }[] = [];
  /** Every call, successful or not, in order. */
  readonly calls: { op: InjectedError["op"]; offset: number; length: number }[] = [];
  flushes = 0;
  private held: (() => void)[] = [];

  /** Synchronous requests served (readSync/writeSync that returned true). */
  syncOps = 0;
  readSync?: (offset: number, buf: Uint8Array) => boolean;
  writeSync?: (offset: number, buf: Uint8Array) => boolean;

  /** `sync`: offer readSync/writeSync (declined while `hold` is set, as a busy queue would). */
  constructor(sectors: number, opts: { readOnly?: boolean; discardZeroes?: boolean; sectorSize?: number; sync?: boolean } = {}) {
    this.sectorSize = opts.sectorSize ?? 512;
    this.data = new Uint8Array(sectors * this.sectorSize);
    this.readOnly = opts.readOnly ?? false;
    this.discardZeroes = opts.discardZeroes ?? false;
    if (opts.sync) {
      this.readSync = (offset, buf) => this.syncOp("read", offset, buf.length, () => buf.set(this.data.subarray(offset, offset + buf.length)));
      this.writeSync = (offset, buf) => this.syncOp("write", offset, buf.length, () => this.store(offset, buf));
    }
  }

  get size(): number {
    return this.data.length;
  }

  /** Fill with a pattern where every sector is recognisable: byte i of sector s = (s * 7 + i) & 0xff, first 4 bytes = s. */
  fillPattern(): this {
    const sectors = this.data.length / 512;
    for (let s = 0; s < sectors; s++) {
      const o = s * 512;
      for (let i = 0; i < 512; i++) this.data[o + i] = (s * 7 + i) & 0xff;
      this.data[o] = s & 0xff;
      this.data[o + 1] = s >>> 8 & 0xff;
      this.data[o + 2] = s >>> 16 & 0xff;
      this.data[o + 3] = s >>> 24 & 0xff;
    }
    return this;
  }

  sector(lba: number, count = 1): Uint8Array {
    return this.data.slice(lba * 512, (lba + count) * 512);
  }

  /** Let held completions go (in order). */
  release(): void {
    const h = this.held;
    this.held = [];
    for (const f of h) f();
  }

  get heldCount(): number {
    return this.held.length;
  }

  read(offset: number, buf: Uint8Array): Promise<void> {
    return this.op("read", offset, buf.length, () => buf.set(this.data.subarray(offset, offset + buf.length)));
  }

  write(offset: number, buf: Uint8Array): Promise<void> {
    return this.op("write", offset, buf.length, () => this.store(offset, buf));
  }

  private store(offset: number, buf: Uint8Array): void {
    if (this.readOnly) throw new MediumError("read-only", "read-only medium", { offset });
    this.data.set(buf, offset);
    this.writes.push({ offset, length: buf.length });
  }

  flush(): Promise<void> {
    return this.op("flush", 0, 0, () => {
      this.flushes++;
    });
  }

  discard(offset: number, length: number): Promise<void> {
    return this.op("discard", offset, length, () => {
      this.discards.push({ offset, length });
      if (this.discardZeroes) this.data.fill(0, offset, offset + length);
    });
  }

  allocatedExtents(): Promise<Extent[]> {
    return Promise.resolve([{ offset: 0, length: this.size, state: "data" }]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private syncOp(op: "read" | "write", offset: number, length: number, body: () => void): boolean {
    if (this.hold) return false;
    this.calls.push({ op, offset, length });
    this.execute(op, offset, length, body);
    this.syncOps++;
    return true;
  }

  /** Checks, injected errors, bookkeeping and the body; throws what a request would reject with. */
  private execute(op: InjectedError["op"], offset: number, length: number, body: () => void): void {
    if (op !== "flush") checkRequest(this, offset, length);
    const hit = this.errors.find((e) => e.op === op && (e.lba === undefined || (e.lba * 512 >= offset && e.lba * 512 < offset + Math.max(length, 1))));
    if (hit) throw new MediumError(hit.kind, `injected ${op} error`, { offset: hit.lba !== undefined ? hit.lba * 512 : offset });
    if (op === "read") this.reads.push({ offset, length });
    body();
  }

  private op(op: InjectedError["op"], offset: number, length: number, body: () => void): Promise<void> {
    this.calls.push({ op, offset, length });
    return new Promise<void>((resolve, reject) => {
      const go = (): void => {
        try {
          this.execute(op, offset, length, body);
          resolve();
        } catch (e) {
          reject(e);
        }
      };
      if (this.hold) this.held.push(go);
      else void Promise.resolve().then(go);
    });
  }
}

/**
 * A huge disk that stores only the sectors written (reads elsewhere return zeros): for LBA48
 * addresses beyond what a RAM disk can hold.
 */
export class SparseDisk implements BlockBackend {
  readonly sectorSize = 512;
  readonly readOnly = false;
  readonly sectors = new Map<number, Uint8Array>();
  constructor(readonly size: number) {}

  read(offset: number, buf: Uint8Array): Promise<void> {
    return this.op(offset, buf.length, (lba, i) => buf.set(this.sectors.get(lba) ?? new Uint8Array(512), i * 512));
  }

  write(offset: number, buf: Uint8Array): Promise<void> {
    return this.op(offset, buf.length, (lba, i) => this.sectors.set(lba, buf.slice(i * 512, i * 512 + 512)));
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  discard(): Promise<void> {
    return Promise.resolve();
  }

  allocatedExtents(): Promise<Extent[]> {
    return Promise.resolve([]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private op(offset: number, length: number, each: (lba: number, i: number) => void): Promise<void> {
    try {
      checkRequest(this, offset, length);
      for (let i = 0; i < length / 512; i++) each(offset / 512 + i, i);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/** How the test transport answers a PIO block. */
export type PioMode = "sync" | "microtask" | "manual";

/**
 * Records PIO blocks, DMA and completions. Host data for data-out comes from `hostData`
 * (consumed in order by pioOut and dmaTransfer("out")). `dmaCapacity` models the PRD table size
 * per command (bytes; Infinity by default); `dmaFault` makes every DMA fault.
 */
export class TestTransport implements AtaTransport {
  /** The device this transport serves (unset for an NCQ slot transport). */
  device: AtaDevice | undefined;
  pioMode: PioMode = "microtask";
  hostData: Uint8Array = new Uint8Array(0);
  private hostOffset = 0;
  dmaCapacity = Infinity;
  dmaFault = false;
  /** Resolve DMA only when the test calls releaseDma() (an IDE guest that has not started the bus master). */
  holdDma = false;
  private heldDma: (() => void)[] = [];
  private dmaMoved = 0;

  readonly pioInBlocks: { data: Uint8Array; info: PioBlock; status: number; count: number; byteCount: number }[] = [];
  readonly pioOutBlocks: { length: number; info: PioBlock; status: number; count: number; byteCount: number }[] = [];
  readonly dmaCalls: { direction: DataDirection; length: number; status: number }[] = [];
  readonly dmaInData: Uint8Array[] = [];
  readonly completions: AtaCompletion[] = [];
  private waitingBlock: (() => void) | undefined;

  pioIn(block: Uint8Array, info: PioBlock): void {
    const tf = this.device!.tf;
    this.pioInBlocks.push({ data: block.slice(), info, status: tf.status, count: tf.count, byteCount: tf.lbaMid | tf.lbaHigh << 8 });
    this.answer();
  }

  pioOut(block: Uint8Array, info: PioBlock): void {
    const tf = this.device!.tf;
    this.pioOutBlocks.push({ length: block.length, info, status: tf.status, count: tf.count, byteCount: tf.lbaMid | tf.lbaHigh << 8 });
    block.set(this.takeHost(block.length));
    this.answer();
  }

  dmaTransfer(direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome> {
    this.dmaCalls.push({ direction, length: buf.length, status: this.device?.tf.status ?? 0 });
    const run = (): DmaOutcome => {
      if (this.dmaFault) return { bytes: 0, fault: true };
      const bytes = Math.max(0, Math.min(buf.length, this.dmaCapacity - this.dmaMoved));
      this.dmaMoved += bytes;
      if (direction === "in") this.dmaInData.push(buf.slice(0, bytes));
      else buf.set(this.takeHost(bytes));
      return { bytes };
    };
    if (!this.holdDma) return Promise.resolve().then(run);
    return new Promise((resolve) => this.heldDma.push(() => resolve(run())));
  }

  releaseDma(): void {
    const h = this.heldDma;
    this.heldDma = [];
    for (const f of h) f();
  }

  commandComplete(c: AtaCompletion): void {
    this.completions.push(c);
    this.dmaMoved = 0;
  }

  /** Manual mode: the host has moved the outstanding block. */
  finishBlock(): void {
    const w = this.waitingBlock;
    this.waitingBlock = undefined;
    w?.();
  }

  get blockWaiting(): boolean {
    return this.waitingBlock !== undefined;
  }

  /** Everything the device sent by PIO, concatenated. */
  pioInData(): Uint8Array {
    return concat(this.pioInBlocks.map((b) => b.data));
  }

  dmaInBytes(): Uint8Array {
    return concat(this.dmaInData);
  }

  private takeHost(n: number): Uint8Array {
    const out = new Uint8Array(n);
    out.set(this.hostData.subarray(this.hostOffset, this.hostOffset + n));
    this.hostOffset += n;
    return out;
  }

  setHostData(d: Uint8Array): void {
    this.hostData = d;
    this.hostOffset = 0;
  }

  private answer(): void {
    const done = (): void => this.device!.pioBlockDone();
    if (this.pioMode === "sync") done();
    else if (this.pioMode === "microtask") void Promise.resolve().then(done);
    else this.waitingBlock = done;
  }
}

/** Concatenate byte arrays (the shared helper, under the name these tests use). */
export const concat = concatBytes;

/** A device on a test transport. */
export function makeDevice(config: Partial<AtaDeviceConfig> = {}): { dev: AtaDevice; t: TestTransport; traces: string[] } {
  const t = new TestTransport();
  const traces: string[] = [];
  const cfg: AtaDeviceConfig = { kind: "ata", trace: (m) => traces.push(m), ...config };
  const dev = new AtaDevice(cfg, t);
  t.device = dev;
  return { dev, t, traces };
}

/** Let microtasks run until `cond` holds (or give up after many rounds). */
export async function until(cond: () => boolean, rounds = 100_000): Promise<boolean> {
  for (let i = 0; i < rounds && !cond(); i++) await Promise.resolve();
  return cond();
}

/** Write registers, execute, and wait for the completion. */
export async function issue(dev: AtaDevice, t: TestTransport, regs: Partial<TaskFile>): Promise<AtaCompletion> {
  Object.assign(dev.tf, regs);
  const n = t.completions.length;
  dev.execute();
  if (!(await until(() => t.completions.length > n))) throw new Error(`command ${regs.command?.toString(16)} did not complete`);
  return t.completions[n]!;
}

/** Task-file values for a 28-bit LBA command. */
export function lba28Regs(command: number, lba: number, count: number): Partial<TaskFile> {
  return { command, count: count & 0xff, lbaLow: lba & 0xff, lbaMid: lba >>> 8 & 0xff, lbaHigh: lba >>> 16 & 0xff, device: 0x40 | lba >>> 24 & 0x0f };
}

/** Task-file values for a 48-bit command. */
export function lba48Regs(command: number, lba: number, count: number): Partial<TaskFile> {
  const high = Math.floor(lba / 0x1000000);
  return {
    command,
    count: count & 0xff,
    hobCount: count >> 8 & 0xff,
    lbaLow: lba & 0xff,
    lbaMid: lba >>> 8 & 0xff,
    lbaHigh: lba >>> 16 & 0xff,
    hobLbaLow: high & 0xff,
    hobLbaMid: high >>> 8 & 0xff,
    hobLbaHigh: high >>> 16 & 0xff,
    device: 0x40,
  };
}

/** Task-file values for a CHS command. */
export function chsRegs(command: number, cylinder: number, head: number, sector: number, count: number): Partial<TaskFile> {
  return { command, count: count & 0xff, lbaLow: sector, lbaMid: cylinder & 0xff, lbaHigh: cylinder >> 8, device: head & 0x0f };
}

/** -1 when `a` and `b` hold the same bytes, else the first index where they differ (or the shorter length). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
