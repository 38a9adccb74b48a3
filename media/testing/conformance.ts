/**
 * One conformance suite for every BlockBackend (raw, VDI, VMDK, VHD, HDD, chains, iSCSI): only
 * the constructor differs. A backend's test file calls
 *
 *   describeBlockBackendConformance("raw on memory", async ({ size, wrapOpener }) => {
 *     const opener = wrapOpener(new MemoryFileOpener());
 *     const backend = await createRaw(opener, "disk.raw", size);
 *     return { backend, reopen: (o) => openRaw(opener, "disk.raw", o) };
 *   });
 *
 * Backends built on files should open them through `wrapOpener(...)`: the suite then holds,
 * reorders and fails file requests (HeldFileOpener) to prove ordering and error handling. A
 * backend without files (iSCSI) ignores it and those tests check what they can without.
 *
 * Uses vitest, so it lives outside the common (pure) project.
 */
import { describe, expect, it } from "vitest";
import { type BlockBackend, MediumError, type MediumErrorKind } from "../block.js";
import { isZero } from "../bytes.js";
import { FaultControl, HeldFileOpener } from "../io/fault-io.js";
import type { FileOpener } from "../io/file-io.js";

export interface ConformanceEnv {
  /** The virtual size the backend should have (it may differ; the suite uses backend.size). */
  size: number;
  /** Wrap the opener the backend opens its files with, so the suite can hold and fail requests. */
  wrapOpener(opener: FileOpener): FileOpener;
}

export interface ConformanceSubject {
  backend: BlockBackend;
  /** Open the same medium again after backend.close() (data survives; readOnly is honoured). */
  reopen?: (options?: { readOnly?: boolean }) => Promise<BlockBackend>;
  /** Remove what the factory made (files, folders). */
  cleanup?: () => Promise<void>;
}

export interface ConformanceOptions {
  /** Virtual size asked of the factory (default 5 MiB: crosses 64 KiB chunks and 1 MiB blocks). */
  size?: number;
}

export type ConformanceFactory = (env: ConformanceEnv) => Promise<ConformanceSubject>;

interface Ctx extends ConformanceSubject {
  /** Set when the factory opened its files through wrapOpener. */
  control: FaultControl | null;
  s: number;
  model: SectorModel;
}

/** Register the suite under `describe(name)`. */
export function describeBlockBackendConformance(name: string, factory: ConformanceFactory, options: ConformanceOptions = {}): void {
  const size = options.size ?? 5 * 1024 * 1024;

  async function withSubject(fn: (c: Ctx) => Promise<void>): Promise<void> {
    const control = new FaultControl();
    let wrapped = false;
    const subject = await factory({
      size,
      wrapOpener: (opener) => {
        wrapped = true;
        return new HeldFileOpener(opener, control);
      },
    });
    const c: Ctx = { ...subject, control: wrapped ? control : null, s: subject.backend.sectorSize, model: new SectorModel(subject.backend.sectorSize) };
    try {
      await fn(c);
    } finally {
      control.stopHolding();
      control.releaseAll();
      control.revive();
      await c.backend.close().catch(() => {});
      await subject.cleanup?.();
    }
  }

  describe(`BlockBackend conformance: ${name}`, () => {
    it("has a sane shape", () =>
      withSubject(async ({ backend: b }) => {
        expect([512, 2048, 4096]).toContain(b.sectorSize);
        expect(Number.isSafeInteger(b.size) && b.size > 0 && b.size % b.sectorSize === 0).toBe(true);
        expect(b.readOnly).toBe(false);
      }));

    it("reads zeros from a fresh medium", () =>
      withSubject(async (c) => {
        await verifyAll(c);
        const last = new Uint8Array(c.s).fill(0xcc);
        await c.backend.read(c.backend.size - c.s, last);
        expect(isZero(last)).toBe(true);
      }));

    it("reads back what was written, at many offsets and sizes, including the last sector", () =>
      withSubject(async (c) => {
        const S = c.backend.size / c.s;
        const cases: [number, number][] = [
          [0, 1], [1, 1], [7, 2], [127, 2], [2047, 2], [3, 300], [2040, 2049], [Math.floor(S / 2), 256],
          [S - 1, 1], [S - 8, 8], [S - 300, 300], [5, 1], [0, 16], [130, 4],
        ];
        let seed = 1;
        for (const [first, count] of cases) {
          if (first < 0 || first + count > S) continue;
          const data = pattern(seed++, count * c.s);
          await c.backend.write(first * c.s, data);
          c.model.apply(first * c.s, data);
          // Read exactly that range, and the range with a sector on each side.
          const back = new Uint8Array(count * c.s);
          await c.backend.read(first * c.s, back);
          expect(equal(back, data), `range ${first}+${count} sectors`).toBe(true);
          const lo = Math.max(0, first - 1);
          const hi = Math.min(S, first + count + 1);
          const around = new Uint8Array((hi - lo) * c.s);
          await c.backend.read(lo * c.s, around);
          expect(equal(around, c.model.expected(lo * c.s, around.length)), `around ${first}+${count}`).toBe(true);
        }
        // Zeros written over data replace it (a backend must not take zeros for "nothing to do").
        for (const [first, count] of [[100, 50], [2040, 16]]) {
          const zeros = new Uint8Array(count * c.s);
          await c.backend.write(first * c.s, zeros);
          c.model.apply(first * c.s, zeros);
        }
        await verifyAll(c);
      }));

    it("rejects misaligned and out-of-range requests with out-of-bounds, and writes nothing", () =>
      withSubject(async (c) => {
        const b = c.backend;
        const s = c.s;
        const bad: [number, number][] = [
          [1, s], [s / 2, s], [0, s - 1], [s, s + 1], [b.size, s], [b.size - s, 2 * s], [b.size + s, s],
          [-s, s], [Number.NaN, s], [1.5, s], [2 ** 53, s], [Number.MAX_SAFE_INTEGER - s + 1, s],
        ];
        for (const [offset, length] of bad) {
          const label = `${offset}+${length}`;
          await expectKind(b.read(offset, new Uint8Array(length)), "out-of-bounds", `read ${label}`);
          await expectKind(b.write(offset, new Uint8Array(length).fill(0xee)), "out-of-bounds", `write ${label}`);
          await expectKind(b.discard(offset, length), "out-of-bounds", `discard ${label}`);
        }
        await verifyAll(c);
      }));

    it("completes 64 concurrent writes to distinct ranges, then 64 concurrent reads", () =>
      withSubject(async (c) => {
        const S = c.backend.size / c.s;
        const stride = Math.floor(S / 64);
        const ranges = Array.from({ length: 64 }, (_, i) => ({ first: i * stride + (i % 3), count: 1 + ((i * 7) % Math.min(16, stride - 3)) }));
        const data = ranges.map((r, i) => pattern(100 + i, r.count * c.s));
        await Promise.all(ranges.map((r, i) => c.backend.write(r.first * c.s, data[i])));
        ranges.forEach((r, i) => c.model.apply(r.first * c.s, data[i]));
        const back = ranges.map((r) => new Uint8Array(r.count * c.s));
        await Promise.all(ranges.map((r, i) => c.backend.read(r.first * c.s, back[i])));
        ranges.forEach((r, i) => expect(equal(back[i], data[i]), `range ${i}`).toBe(true));
        await verifyAll(c);
      }));

    it("ends overlapping concurrent writes with the last submitted winning, whatever order the file completes them in", () =>
      withSubject(async (c) => {
        const rand = xorshift(7);
        for (const order of ["fifo", "reverse"] as const) {
          if (c.control) c.control.hold(["write"]);
          const writes: Promise<void>[] = [];
          for (let i = 0; i < 24; i++) {
            // Windows straddling a 64 KiB and a 1 MiB boundary.
            const base = (i % 2 ? 2048 : 128) - 32;
            const first = base + (rand() % 48);
            const count = 1 + (rand() % 16);
            const data = pattern(1000 + i, count * c.s);
            writes.push(c.backend.write(first * c.s, data));
            c.model.apply(first * c.s, data);
          }
          await releaseUntilSettled(c.control, Promise.all(writes), order);
          await verifyAll(c);
        }
      }));

    it("lets a read issued after a write see the new data, even while the write is held", () =>
      withSubject(async (c) => {
        const off = 130 * c.s;
        const old = pattern(5, 16 * c.s);
        await c.backend.write(off, old);
        c.model.apply(off, old);
        const data = pattern(6, 8 * c.s);
        c.control?.hold(["write"]);
        const w = c.backend.write(off + 4 * c.s, data);
        c.model.apply(off + 4 * c.s, data);
        if (c.control) await c.control.whenHeld(1);
        // The same range, and one that overlaps it partly.
        const same = new Uint8Array(8 * c.s);
        const partial = new Uint8Array(16 * c.s);
        const reads = Promise.all([c.backend.read(off + 4 * c.s, same), c.backend.read(off, partial)]);
        await ticks(3);
        await releaseUntilSettled(c.control, Promise.all([w, reads]), "fifo");
        expect(equal(same, data)).toBe(true);
        expect(equal(partial, c.model.expected(off, partial.length))).toBe(true);
      }));

    it("flushes everything written before flush() was called", () =>
      withSubject(async (c) => {
        const data = pattern(9, 32 * c.s);
        c.control?.hold(["write"]);
        const w = c.backend.write(64 * c.s, data);
        c.model.apply(64 * c.s, data);
        if (c.control) await c.control.whenHeld(1);
        let flushed = false;
        const f = c.backend.flush().then(() => (flushed = true));
        await ticks(3);
        // While a write from before it has not reached the file, a flush cannot be done.
        if (c.control) expect(flushed).toBe(false);
        await releaseUntilSettled(c.control, Promise.all([w, f]), "fifo");
        if (c.control) expect(c.control.counts.flush).toBeGreaterThan(0);
        await c.backend.flush();
        await verifyAll(c);
      }));

    it("discards as its discardZeroes flag says, leaving the neighbours alone", () =>
      withSubject(async (c) => {
        const S = c.backend.size / c.s;
        const first = 2000;
        const data = pattern(11, 300 * c.s);
        await c.backend.write(first * c.s, data);
        c.model.apply(first * c.s, data);
        // Whole 64 KiB chunks and a 1 MiB block boundary inside, ragged ends.
        await c.backend.discard((first + 10) * c.s, 250 * c.s);
        await c.backend.discard(0, 0);
        await c.backend.discard((S - 1) * c.s, c.s);
        const back = new Uint8Array(300 * c.s);
        await c.backend.read(first * c.s, back);
        for (let i = 0; i < 300; i++) {
          const got = back.subarray(i * c.s, (i + 1) * c.s);
          const old = data.subarray(i * c.s, (i + 1) * c.s);
          const discarded = i >= 10 && i < 260;
          if (!discarded) expect(equal(got, old), `sector ${first + i} kept`).toBe(true);
          else if (c.backend.discardZeroes) expect(isZero(got), `sector ${first + i} zero`).toBe(true);
          else expect(isZero(got) || equal(got, old), `sector ${first + i} zero or old`).toBe(true);
        }
      }));

    it("reports allocated extents sorted, in bounds, and covering every written sector", () =>
      withSubject(async (c) => {
        const writes: [number, number][] = [[0, 1], [129, 3], [2047, 2], [c.backend.size / c.s - 1, 1]];
        for (const [i, [first, count]] of writes.entries()) await c.backend.write(first * c.s, pattern(20 + i, count * c.s));
        const extents = await c.backend.allocatedExtents();
        let end = 0;
        for (const e of extents) {
          expect(e.offset).toBeGreaterThanOrEqual(end);
          expect(e.length).toBeGreaterThan(0);
          expect(e.offset % c.s).toBe(0);
          expect(e.length % c.s).toBe(0);
          end = e.offset + e.length;
        }
        expect(end).toBeLessThanOrEqual(c.backend.size);
        for (const [first, count] of writes) {
          for (let sct = first; sct < first + count; sct++) {
            const pos = sct * c.s;
            expect(extents.some((e) => e.state === "data" && e.offset <= pos && pos < e.offset + e.length), `sector ${sct} in a data extent`).toBe(true);
          }
        }
      }));

    it("keeps its data across close and reopen", () =>
      withSubject(async (c) => {
        if (!c.reopen) return;
        const S = c.backend.size / c.s;
        for (const [i, first] of [0, 127, 2047, S - 4].entries()) {
          const data = pattern(30 + i, 4 * c.s);
          await c.backend.write(first * c.s, data);
          c.model.apply(first * c.s, data);
        }
        const size = c.backend.size;
        await c.backend.close();
        c.backend = await c.reopen();
        expect(c.backend.size).toBe(size);
        await verifyAll(c);
      }));

    it("refuses writes and discards when read-only, and still reads", () =>
      withSubject(async (c) => {
        if (!c.reopen) return;
        const data = pattern(40, 8 * c.s);
        await c.backend.write(8 * c.s, data);
        c.model.apply(8 * c.s, data);
        await c.backend.close();
        c.backend = await c.reopen({ readOnly: true });
        expect(c.backend.readOnly).toBe(true);
        await expectKind(c.backend.write(8 * c.s, new Uint8Array(c.s).fill(1)), "read-only", "write");
        await expectKind(c.backend.write(0, new Uint8Array(c.s).fill(1)), "read-only", "write at 0");
        await expectKind(c.backend.discard(8 * c.s, c.s), "read-only", "discard");
        await c.backend.flush();
        await verifyAll(c);
      }));

    it("rejects every use after close with closed", () =>
      withSubject(async (c) => {
        const b = c.backend;
        await b.close();
        await expectKind(b.read(0, new Uint8Array(c.s)), "closed", "read");
        await expectKind(b.write(0, new Uint8Array(c.s)), "closed", "write");
        await expectKind(b.flush(), "closed", "flush");
        await expectKind(b.discard(0, c.s), "closed", "discard");
        await expectKind(b.allocatedExtents(), "closed", "allocatedExtents");
        await b.close();
      }));

    it("turns failing file requests into MediumError io", () =>
      withSubject(async (c) => {
        if (!c.control) return;
        const data = pattern(50, 8 * c.s);
        await c.backend.write(0, data);
        // One failed write, then the medium works again.
        c.control.failWhen((r) => r.op === "write", new MediumError("io", "injected EIO"));
        await expectKind(c.backend.write(16 * c.s, pattern(51, 8 * c.s)), "io", "write with a failing file");
        const again = pattern(52, 8 * c.s);
        await c.backend.write(16 * c.s, again);
        const back = new Uint8Array(8 * c.s);
        await c.backend.read(16 * c.s, back);
        expect(equal(back, again)).toBe(true);
        // The file dies: reads and writes fail, and keep failing.
        c.control.die();
        await expectKind(c.backend.read(0, new Uint8Array(8 * c.s)), "io", "read of a dead file");
        await expectKind(c.backend.write(0, pattern(53, 8 * c.s)), "io", "write to a dead file");
        await expectKind(c.backend.read(0, new Uint8Array(8 * c.s)), "io", "read of a dead file, again");
      }));
  });
}

// ---- helpers ----

/** What the medium should hold: written sectors; everything else zero. */
class SectorModel {
  readonly s: number;
  readonly sectors = new Map<number, Uint8Array>();
  constructor(sectorSize: number) {
    this.s = sectorSize;
  }
  apply(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i += this.s) this.sectors.set((offset + i) / this.s, data.slice(i, i + this.s));
  }
  expected(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i += this.s) {
      const d = this.sectors.get((offset + i) / this.s);
      if (d) out.set(d, i);
    }
    return out;
  }
}

/** Read the whole medium (1 MiB at a time) and compare it with the model. */
async function verifyAll(c: Ctx): Promise<void> {
  const chunk = 1 << 20;
  for (let pos = 0; pos < c.backend.size; pos += chunk) {
    const buf = new Uint8Array(Math.min(chunk, c.backend.size - pos)).fill(0xcd);
    await c.backend.read(pos, buf);
    const want = c.model.expected(pos, buf.length);
    if (!equal(buf, want)) {
      const at = firstDifference(buf, want);
      expect.fail(`medium differs from what was written at byte ${pos + at} (sector ${Math.floor((pos + at) / c.s)}): got ${buf[at]}, want ${want[at]}`);
    }
  }
}

async function expectKind(p: Promise<unknown>, kind: MediumErrorKind, what: string): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `${what} should reject with ${kind}`).toBeInstanceOf(MediumError);
  expect((err as MediumError).kind, `${what}: ${(err as Error).message}`).toBe(kind);
}

/** Release held requests (in the given order) until the promise settles. */
async function releaseUntilSettled(control: FaultControl | null, p: Promise<unknown>, order: "fifo" | "reverse"): Promise<void> {
  let settled = false;
  const done = p.then(
    () => (settled = true),
    () => (settled = true),
  );
  while (!settled && control) {
    control.releaseAll(order);
    await ticks(1);
  }
  control?.stopHolding();
  control?.releaseAll();
  await done;
  await p;
}

/** Let queued callbacks and I/O completions run. */
function ticks(n: number): Promise<void> {
  return new Promise((resolve) => {
    const step = (left: number) => (left === 0 ? resolve() : setTimeout(() => step(left - 1), 0));
    step(n);
  });
}

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Bytes that differ per seed and per position (no two sectors alike). */
export function pattern(seed: number, length: number): Uint8Array {
  const next = xorshift(seed * 2654435761);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 4) {
    const v = next();
    out[i] = v;
    out[i + 1] = v >>> 8;
    out[i + 2] = v >>> 16;
    out[i + 3] = v >>> 24;
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && firstDifference(a, b) === -1;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
