import { describe, expect, it } from "vitest";
import { MediumError } from "../block.js";
import { FaultControl, HeldFileIo, HeldFileOpener, MEMORY_CHUNK, MemoryFile, MemoryFileIo, MemoryFileOpener } from "./fault-io.js";

const TiB = 2 ** 40;
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
const settle = () => new Promise<void>((r) => setTimeout(r, 0));

describe("memory files", () => {
  it("hold a 2 TiB sparse file in a few chunks", async () => {
    const opener = new MemoryFileOpener();
    const f = await opener.open("big", { create: true });
    await f.truncate(2 * TiB);
    expect(await f.size()).toBe(2 * TiB);
    await f.write(2 * TiB - 512, fill(512, 0xaa));
    await f.write(TiB + 100, fill(MEMORY_CHUNK, 0xbb)); // straddles two chunks
    expect(opener.file("big").chunks.size).toBe(3);
    const b = new Uint8Array(1024);
    expect(await f.read(2 * TiB - 1024, b)).toBe(1024);
    expect([...b]).toEqual([...fill(512, 0), ...fill(512, 0xaa)]);
    const c = new Uint8Array(MEMORY_CHUNK + 200);
    await f.read(TiB, c);
    expect([...c.subarray(0, 100)]).toEqual([...fill(100, 0)]);
    expect(c.subarray(100, 100 + MEMORY_CHUNK).every((x) => x === 0xbb)).toBe(true);
    expect(c.subarray(100 + MEMORY_CHUNK).every((x) => x === 0)).toBe(true);
  });

  it("stay sparse when zeros are written where nothing is", async () => {
    const file = new MemoryFile();
    const f = new MemoryFileIo(file);
    await f.write(0, new Uint8Array(4 * MEMORY_CHUNK));
    expect(file.size).toBe(4 * MEMORY_CHUNK);
    expect(file.allocatedBytes).toBe(0);
    await f.write(MEMORY_CHUNK, fill(1, 1));
    expect(file.allocatedBytes).toBe(MEMORY_CHUNK);
    // Zeros over data do replace it.
    await f.write(MEMORY_CHUNK, new Uint8Array(1));
    expect(file.bytes()[MEMORY_CHUNK]).toBe(0);
  });

  it("read short at the end of the file, and nothing past it", async () => {
    const f = new MemoryFileIo(new MemoryFile());
    await f.write(0, fill(1000, 3));
    const b = new Uint8Array(2048).fill(9);
    expect(await f.read(0, b)).toBe(1000);
    expect(b.subarray(0, 1000).every((x) => x === 3)).toBe(true);
    expect(await f.read(5000, b)).toBe(0);
  });

  it("zero what truncate cuts off, so growing again shows zeros", async () => {
    const file = new MemoryFile();
    const f = new MemoryFileIo(file);
    await f.write(0, fill(3 * MEMORY_CHUNK, 7));
    await f.truncate(MEMORY_CHUNK + 10);
    expect(file.allocatedBytes).toBe(2 * MEMORY_CHUNK);
    await f.truncate(3 * MEMORY_CHUNK);
    const b = new Uint8Array(3 * MEMORY_CHUNK);
    await f.read(0, b);
    expect(b.subarray(0, MEMORY_CHUNK + 10).every((x) => x === 7)).toBe(true);
    expect(b.subarray(MEMORY_CHUNK + 10).every((x) => x === 0)).toBe(true);
  });

  it("punch holes: whole chunks go, partial ones are zeroed", async () => {
    const file = new MemoryFile();
    const f = new MemoryFileIo(file);
    await f.write(0, fill(4 * MEMORY_CHUNK, 5));
    await f.punchHole(100, 2 * MEMORY_CHUNK);
    expect(file.allocatedBytes).toBe(3 * MEMORY_CHUNK);
    expect(file.size).toBe(4 * MEMORY_CHUNK);
    const b = file.bytes();
    expect(b.subarray(0, 100).every((x) => x === 5)).toBe(true);
    expect(b.subarray(100, 100 + 2 * MEMORY_CHUNK).every((x) => x === 0)).toBe(true);
    expect(b.subarray(100 + 2 * MEMORY_CHUNK).every((x) => x === 5)).toBe(true);
  });

  it("refuse writes when read-only, anything after close, and bad positions", async () => {
    const opener = new MemoryFileOpener();
    await (await opener.open("a", { create: true })).write(0, fill(512, 1));
    const ro = await opener.open("a", { readOnly: true });
    await expect(ro.write(0, fill(512, 2))).rejects.toMatchObject({ kind: "read-only" });
    await expect(ro.truncate(0)).rejects.toMatchObject({ kind: "read-only" });
    await expect(ro.punchHole(0, 512)).rejects.toMatchObject({ kind: "read-only" });
    await ro.close();
    await expect(ro.read(0, new Uint8Array(1))).rejects.toMatchObject({ kind: "closed" });
    const rw = await opener.open("a");
    await expect(rw.read(-1, new Uint8Array(1))).rejects.toMatchObject({ kind: "out-of-bounds" });
    await expect(rw.write(2 ** 53, new Uint8Array(1))).rejects.toMatchObject({ kind: "out-of-bounds" });
  });

  it("open, create, rename and remove like a folder", async () => {
    const opener = new MemoryFileOpener();
    await expect(opener.open("x")).rejects.toMatchObject({ kind: "not-found" });
    await opener.open("x", { create: true });
    await expect(opener.open("x", { create: true })).rejects.toMatchObject({ kind: "io" });
    await opener.rename("x", "y");
    expect(await opener.exists("x")).toBe(false);
    expect(await opener.exists("y")).toBe(true);
    await opener.remove("y");
    await expect(opener.remove("y")).rejects.toMatchObject({ kind: "not-found" });
    await expect(opener.rename("y", "z")).rejects.toMatchObject({ kind: "not-found" });
  });
});

describe("held files", () => {
  it("hold requests before they reach the file, and release them in any order", async () => {
    const file = new MemoryFile();
    const h = new HeldFileIo(new MemoryFileIo(file));
    h.hold(["write"]);
    const order: number[] = [];
    const ws = [1, 2, 3].map((v) => h.write(0, fill(512, v)).then(() => order.push(v)));
    await h.whenHeld(3);
    expect(file.size).toBe(0); // nothing reached the file yet
    expect(h.held.map((r) => [r.n, r.op, r.pos, r.length])).toEqual([[1, "write", 0, 512], [2, "write", 0, 512], [3, "write", 0, 512]]);
    // Reads are not held.
    expect(await h.read(0, new Uint8Array(512))).toBe(0);
    expect(h.releaseAll("reverse")).toBe(3);
    await Promise.all(ws);
    expect(order).toEqual([3, 2, 1]);
    expect(file.bytes()[0]).toBe(1); // the first submitted ran last
    expect(h.counts).toMatchObject({ write: 3, read: 1, total: 4 });
  });

  it("in after mode, run at once and hold only the completion", async () => {
    const file = new MemoryFile();
    const h = new HeldFileIo(new MemoryFileIo(file), { mode: "after" });
    h.hold();
    let done = false;
    const w = h.write(0, fill(512, 4)).then(() => (done = true));
    await h.whenHeld();
    await settle();
    expect(file.bytes()[0]).toBe(4);
    expect(done).toBe(false);
    h.release();
    await w;
  });

  it("fail a held request on demand", async () => {
    const file = new MemoryFile();
    const h = new HeldFileIo(new MemoryFileIo(file));
    h.hold(["write"]);
    const w = h.write(0, fill(512, 4));
    await h.whenHeld();
    h.held[0].fail(new MediumError("io", "no"));
    await expect(w).rejects.toMatchObject({ kind: "io" });
    expect(file.size).toBe(0);
    expect(() => h.release()).toThrow();
  });

  it("fail the Nth request, and only that one", async () => {
    const h = new HeldFileIo(new MemoryFileIo(new MemoryFile()));
    h.failNth(2);
    await h.write(0, fill(512, 1));
    await expect(h.read(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "io" });
    await h.read(0, new Uint8Array(512));
    const custom = new Error("custom");
    h.failNth(4, custom);
    await expect(h.flush()).rejects.toBe(custom);
  });

  it("die after a point: every later request fails with io, until revived", async () => {
    const h = new HeldFileIo(new MemoryFileIo(new MemoryFile(), "disk"));
    h.dieAfter(2);
    await h.write(0, fill(512, 1));
    await h.flush();
    for (const p of [h.read(0, new Uint8Array(1)), h.write(0, fill(1, 1)), h.flush(), h.size(), h.truncate(0), h.punchHole!(0, 1)]) {
      await expect(p).rejects.toMatchObject({ kind: "io", path: "disk" });
    }
    h.revive();
    await h.read(0, new Uint8Array(1));
    h.die();
    await expect(h.size()).rejects.toBeInstanceOf(MediumError);
  });

  it("share one control across the files of a HeldFileOpener", async () => {
    const control = new FaultControl();
    const opener = new HeldFileOpener(new MemoryFileOpener(), control);
    const a = await opener.open("a", { create: true });
    const b = await opener.open("b", { create: true });
    control.hold(["write"]);
    const ws = [a.write(0, fill(1, 1)), b.write(0, fill(1, 2))];
    await control.whenHeld(2);
    expect(control.held.map((r) => r.path)).toEqual(["a", "b"]);
    control.releaseAll();
    await Promise.all(ws);
    expect(opener.files).toHaveLength(2);
    expect(control.counts.total).toBe(2);
    expect(await opener.exists("a")).toBe(true);
  });

  it("offer punchHole only when the inner file has it", () => {
    const inner = new MemoryFileIo(new MemoryFile());
    const { punchHole: _, ...noPunch } = { path: "p", readOnly: false, read: inner.read.bind(inner), write: inner.write.bind(inner), flush: inner.flush.bind(inner), size: inner.size.bind(inner), truncate: inner.truncate.bind(inner), close: inner.close.bind(inner), punchHole: undefined };
    expect(new HeldFileIo(noPunch).punchHole).toBeUndefined();
    expect(new HeldFileIo(inner).punchHole).toBeTypeOf("function");
  });
});
