import { describe, expect, it } from "vitest";
import { MediumError } from "../block.js";
import { HeldFileIo, MemoryFile, MemoryFileIo } from "./fault-io.js";
import { DEFAULT_MAX_IN_FLIGHT, queued } from "./request-queue.js";

/** A queue over a held memory file; everything is held until released. */
function setup(maxInFlight = 8, ops: Parameters<HeldFileIo["hold"]>[0] = ["read", "write", "flush", "size", "truncate", "punchHole"]) {
  const file = new MemoryFile();
  const held = new HeldFileIo(new MemoryFileIo(file, "m"));
  held.hold(ops);
  const q = queued(held, { maxInFlight });
  return { file, held, q };
}

const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
const settle = () => new Promise<void>((r) => setImmediate(r));
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Track whether a promise has settled. */
function track<T>(p: Promise<T>) {
  const t = { done: false, value: undefined as T | undefined, error: undefined as unknown, p };
  p.then(
    (v) => ((t.done = true), (t.value = v)),
    (e) => ((t.done = true), (t.error = e)),
  );
  return t;
}

describe("request queue", () => {
  it("runs at most maxInFlight requests at once, and starts the rest in order", async () => {
    const { held, q } = setup(4);
    const reads = Array.from({ length: 20 }, (_, i) => track(q.read(i * 512, new Uint8Array(512))));
    await settle();
    expect(held.held.length).toBe(4);
    expect(held.held.map((r) => r.pos)).toEqual([0, 512, 1024, 1536]);
    held.release(2);
    await settle();
    expect(held.held.map((r) => r.pos)).toEqual([0, 512, 1536, 2048]);
    while (held.held.length) {
      held.releaseAll("reverse");
      await settle();
    }
    await Promise.all(reads.map((r) => r.p));
    expect(q.stats.maxInFlight).toBe(4);
    expect(q.stats.slotWaits).toBe(16);
    expect(q.stats.inFlight).toBe(0);
    expect(q.stats.completed).toBe(20);
  });

  it("runs non-overlapping writes together", async () => {
    const { held, q } = setup(8);
    const ws = [q.write(0, fill(512, 1)), q.write(512, fill(512, 2)), q.write(4096, fill(1024, 3))];
    await settle();
    expect(held.held.length).toBe(3);
    expect(q.stats.waits).toBe(0);
    held.releaseAll("reverse");
    await Promise.all(ws);
  });

  it("completes overlapping writes in submission order, even when the file would reorder them", async () => {
    const { file, held, q } = setup(8);
    const order: number[] = [];
    // Each overlaps the one before it (the third overlaps both).
    const ws = [q.write(0, fill(1024, 1)), q.write(512, fill(1024, 2)), q.write(256, fill(512, 3))].map((p, i) => p.then(() => order.push(i)));
    await settle();
    expect(held.held.length).toBe(1);
    while (order.length < 3) {
      held.releaseAll("reverse");
      await settle();
    }
    await Promise.all(ws);
    expect(order).toEqual([0, 1, 2]);
    expect([...file.bytes().subarray(0, 1536)]).toEqual([...fill(256, 1), ...fill(512, 3), ...fill(768, 2)]);
    expect(q.stats.waits).toBe(2);
  });

  it("makes a read wait for an earlier partly overlapping write", async () => {
    const { held, q } = setup(8);
    const w = track(q.write(1024, fill(1024, 7)));
    const buf = new Uint8Array(2048);
    const r = track(q.read(0, buf));
    await settle();
    expect(held.held.map((x) => x.op)).toEqual(["write"]);
    expect(r.done).toBe(false);
    held.release();
    await w.p;
    await held.whenHeld(1);
    held.release();
    expect(await r.p).toBe(2048);
    expect([...buf]).toEqual([...fill(1024, 0), ...fill(1024, 7)]);
    expect(q.stats.waits).toBe(1);
  });

  it("serves a read covered by the latest earlier write from that write, at once", async () => {
    const { held, q } = setup(8);
    q.write(0, fill(4096, 1));
    const w2 = q.write(1024, fill(1024, 2));
    const buf = new Uint8Array(512);
    const served = track(q.read(1536, buf));
    await settle();
    expect(served.done).toBe(true); // while both writes are still held
    expect(served.value).toBe(512);
    expect(buf.every((x) => x === 2)).toBe(true);
    expect(q.stats.servedFromWrites).toBe(1);
    // Not when a later, partly overlapping write is the latest: that read waits.
    q.write(1024, fill(512, 3));
    const r = track(q.read(1024, new Uint8Array(1024)));
    await settle();
    expect(r.done).toBe(false);
    while (held.held.length) {
      held.releaseAll();
      await settle();
    }
    await w2;
    await r.p;
    held.stopHolding();
    const after = new Uint8Array(1024);
    await q.read(1024, after);
    expect([...after]).toEqual([...fill(512, 3), ...fill(512, 2)]);
  });

  it("does not let a write overtake an earlier overlapping read", async () => {
    const { file, held, q } = setup(8);
    file.write(0, fill(512, 9));
    const buf = new Uint8Array(512);
    const r = q.read(0, buf);
    const w = q.write(0, fill(512, 4));
    await settle();
    expect(held.held.map((x) => x.op)).toEqual(["read"]);
    while (held.held.length) {
      held.releaseAll("reverse");
      await settle();
    }
    await Promise.all([r, w]);
    expect(buf.every((x) => x === 9)).toBe(true);
  });

  it("lets reads of one range run together", async () => {
    const { held, q } = setup(8);
    const rs = [q.read(0, new Uint8Array(4096)), q.read(0, new Uint8Array(4096)), q.read(512, new Uint8Array(512))];
    await settle();
    expect(held.held.length).toBe(3);
    held.releaseAll();
    await Promise.all(rs);
  });

  it("makes flush wait for every earlier write, but not later reads and writes", async () => {
    const { file, held, q } = setup(8);
    const w1 = q.write(0, fill(512, 1));
    const w2 = q.write(1 << 20, fill(512, 2));
    const f = track(q.flush());
    const w3 = q.write(0, fill(512, 3)); // overlaps w1, so it waits for w1 only
    const r = q.read(8192, new Uint8Array(512));
    const w4 = q.write(4096, fill(512, 4));
    await settle();
    expect(held.held.map((x) => `${x.op}@${x.pos}`)).toEqual(["write@0", `write@${1 << 20}`, "read@8192", "write@4096"]);
    held.release(2);
    held.release(2);
    await Promise.all([r, w4]);
    expect(f.done).toBe(false);
    held.release(1); // w2
    await w2;
    await settle();
    expect(f.done).toBe(false);
    expect(held.held.map((x) => `${x.op}@${x.pos}`)).toEqual(["write@0"]);
    held.release(); // w1: now the flush and w3 may go
    await w1;
    await settle();
    expect(held.held.map((x) => x.op).sort()).toEqual(["flush", "write"]);
    held.releaseAll();
    await Promise.all([f.p, w3]);
    expect(file.flushes).toBe(1);
  });

  it("does not make a later write wait for a flush", async () => {
    const { held, q } = setup(8);
    const f = q.flush();
    const w = q.write(0, fill(512, 1));
    await settle();
    expect(held.held.map((x) => x.op)).toEqual(["flush", "write"]);
    held.releaseAll("reverse");
    await Promise.all([f, w]);
  });

  it("makes truncate a barrier both ways", async () => {
    const { file, held, q } = setup(8);
    const w1 = q.write(8192, fill(512, 1));
    const t = q.truncate(4096);
    const r = q.read(0, new Uint8Array(512));
    const w2 = q.write(0, fill(512, 2));
    await settle();
    expect(held.held.map((x) => x.op)).toEqual(["write"]);
    while (held.held.length) {
      held.releaseAll("reverse");
      await settle();
    }
    await Promise.all([w1, t, r, w2]);
    held.stopHolding();
    expect(file.size).toBe(4096);
    expect(await q.size()).toBe(4096);
  });

  it("orders size() after earlier writes", async () => {
    const { held, q } = setup(8);
    q.write(0, fill(65536, 1));
    const s = q.size();
    await settle();
    expect(held.held.map((x) => x.op)).toEqual(["write"]);
    while (held.held.length) {
      held.releaseAll();
      await settle();
    }
    expect(await s).toBe(65536);
  });

  it("orders punchHole like a write", async () => {
    const { file, held, q } = setup(8);
    const w = q.write(0, fill(65536, 1));
    const p = q.punchHole!(0, 65536);
    const r = new Uint8Array(512);
    const rp = q.read(512, r);
    await settle();
    expect(held.held.map((x) => x.op)).toEqual(["write"]);
    while (held.held.length) {
      held.releaseAll("reverse");
      await settle();
    }
    await Promise.all([w, p, rp]);
    expect(r.every((x) => x === 0)).toBe(true);
    expect(file.allocatedBytes).toBe(0);
  });

  it("has no punchHole when the file has none", () => {
    const inner = new MemoryFileIo(new MemoryFile());
    const plain = { path: "p", readOnly: false, read: inner.read.bind(inner), write: inner.write.bind(inner), flush: inner.flush.bind(inner), size: inner.size.bind(inner), truncate: inner.truncate.bind(inner), close: inner.close.bind(inner) };
    expect(queued(plain).punchHole).toBeUndefined();
    expect(queued(inner).punchHole).toBeTypeOf("function");
  });

  it("closes after earlier requests and refuses later ones with closed", async () => {
    const { held, q } = setup(8);
    const w = q.write(0, fill(512, 1));
    const c = track(q.close());
    await settle();
    expect(c.done).toBe(false);
    await expect(q.read(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "closed" });
    await expect(q.write(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "closed" });
    await expect(q.flush()).rejects.toMatchObject({ kind: "closed" });
    held.releaseAll();
    await w;
    await c.p;
    expect(q.close()).toBe(c.p);
  });

  it("passes errors through, and later requests still run", async () => {
    const { held, q } = setup(8, []);
    held.failNth(1, new MediumError("io", "boom"));
    await expect(q.write(0, fill(512, 1))).rejects.toMatchObject({ kind: "io", message: "boom" });
    await q.write(0, fill(512, 2));
    const b = new Uint8Array(512);
    await q.read(0, b);
    expect(b.every((x) => x === 2)).toBe(true);
    expect(q.stats.inFlight).toBe(0);
  });

  it("turns a synchronous throw of the file into a rejection", async () => {
    const inner = new MemoryFileIo(new MemoryFile());
    const bad = Object.assign(Object.create(inner) as MemoryFileIo, {
      read: () => {
        throw new MediumError("io", "sync");
      },
    });
    const q = queued(bad);
    await expect(q.read(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "io" });
    expect(q.stats.inFlight).toBe(0);
  });

  it("refuses a nonsensical maxInFlight and defaults to DEFAULT_MAX_IN_FLIGHT", () => {
    const io = new MemoryFileIo(new MemoryFile());
    expect(() => queued(io, { maxInFlight: 0 })).toThrow(RangeError);
    expect(queued(io).maxInFlight).toBe(DEFAULT_MAX_IN_FLIGHT);
  });

  // Every read must see exactly the writes submitted before it, whatever order the file
  // completes requests in: so its result is what a one-at-a-time model gives.
  it("matches a sequential model under random requests and random completion order", async () => {
    let x = 0x1234567;
    const rnd = (n: number) => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x % n;
    };
    for (let round = 0; round < 40; round++) {
      const { file, held, q } = setup(1 + rnd(8));
      const model = new Uint8Array(64 * 512);
      let modelSize = 0;
      const checks: Promise<void>[] = [];
      for (let i = 0; i < 60; i++) {
        const kind = rnd(10);
        const pos = rnd(60) * 512 + (rnd(4) === 0 ? rnd(512) : 0);
        const len = 1 + rnd(4 * 512);
        if (kind < 4) {
          const data = new Uint8Array(len);
          for (let k = 0; k < len; k++) data[k] = rnd(256);
          const copy = data.slice();
          checks.push(q.write(pos, data));
          model.set(copy.subarray(0, Math.max(0, Math.min(len, model.length - pos))), pos);
          modelSize = Math.max(modelSize, pos + len);
        } else if (kind < 8) {
          const buf = new Uint8Array(len);
          const n = Math.max(0, Math.min(len, modelSize - pos));
          const want = model.slice(pos, pos + n);
          checks.push(
            q.read(pos, buf).then((got) => {
              // Where the file ends depends on writes outside this read's range (earlier or
              // later) that ran before it, so the count may differ from the model's; the bytes
              // in between are zeros either way, which is what a caller fills a short read with.
              buf.fill(0, got);
              const padded = new Uint8Array(len);
              padded.set(want);
              expect(same(buf, padded), `read ${pos}+${len}`).toBe(true);
            }),
          );
        } else if (kind === 8) {
          checks.push(q.flush());
        } else {
          const to = rnd(64 * 512);
          checks.push(q.truncate(to));
          if (to < modelSize) model.fill(0, to);
          modelSize = to;
        }
      }
      let settled = false;
      const all = Promise.all(checks).finally(() => (settled = true));
      while (!settled) {
        // Release a random held request, or all in a random direction.
        if (held.held.length && rnd(3)) held.release(rnd(held.held.length));
        else held.releaseAll(rnd(2) ? "fifo" : "reverse");
        await settle();
      }
      await all;
      expect(file.size).toBe(modelSize);
      expect(same(file.bytes(), model.subarray(0, modelSize))).toBe(true);
      expect(q.stats.maxInFlight).toBeLessThanOrEqual(q.maxInFlight);
    }
  });
});

describe("request queue: synchronous requests", () => {
  /** A held file whose synchronous path reaches the memory file directly (never held). */
  function syncSetup() {
    const file = new MemoryFile();
    const mem = new MemoryFileIo(file, "m");
    const held = new HeldFileIo(mem);
    held.hold(["read", "write", "flush", "truncate"]);
    const inner = Object.assign(held, { readSync: mem.readSync.bind(mem), writeSync: mem.writeSync.bind(mem) });
    return { file, held, q: queued(inner) };
  }

  it("runs at once when nothing conflicting is in flight, and counts as submitted and completed", () => {
    const { file, q } = syncSetup();
    expect(q.writeSync(0, fill(512, 7))).toBe(true);
    const buf = new Uint8Array(512);
    expect(q.readSync(0, buf)).toBe(512);
    expect(same(buf, fill(512, 7))).toBe(true);
    expect(file.read(0, new Uint8Array(1))).toBe(1);
    expect(q.stats).toMatchObject({ submitted: 2, completed: 2, synchronous: 2, inFlight: 0 });
  });

  it("declines a read overlapping a write in flight, and a write overlapping a read or write in flight", async () => {
    const { held, q } = syncSetup();
    const w = track(q.write(1024, fill(512, 1)));
    const r = track(q.read(4096, new Uint8Array(512)));
    await settle();
    expect(q.readSync(1024, new Uint8Array(512))).toBeUndefined(); // under the write
    expect(q.writeSync(1024, fill(512, 2))).toBe(false); // over the write
    expect(q.writeSync(4096, fill(512, 2))).toBe(false); // over the read
    expect(q.readSync(4096, new Uint8Array(512))).toBe(0); // reads do not conflict with reads (past the end: 0 bytes)
    expect(q.writeSync(8192, fill(512, 3))).toBe(true); // elsewhere: free
    held.releaseAll();
    await Promise.all([w.p, r.p]);
    expect(q.writeSync(1024, fill(512, 4))).toBe(true);
  });

  it("declines everything while a truncate is in flight and after close, and without a synchronous inner file", async () => {
    const { held, q } = syncSetup();
    const t = track(q.truncate(65536));
    await settle();
    expect(q.readSync(0, new Uint8Array(512))).toBeUndefined();
    expect(q.writeSync(60000 - 60000 % 512, fill(512, 1))).toBe(false);
    held.releaseAll();
    await t.p;
    void q.close();
    expect(q.readSync(0, new Uint8Array(512))).toBeUndefined();
    const plain = queued(new HeldFileIo(new MemoryFileIo(new MemoryFile(), "p")));
    expect(plain.readSync(0, new Uint8Array(512))).toBeUndefined();
    expect(plain.writeSync(0, fill(512, 1))).toBe(false);
  });
});
