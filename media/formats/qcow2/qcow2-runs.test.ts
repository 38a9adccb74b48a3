/**
 * Requests as runs of clusters (request-plan.ts): what a read or write of many clusters costs in
 * file requests, and that the data, the zeros and the metadata come out as cluster by cluster.
 * On memory files with 4 KiB clusters (an L2 table maps 512 clusters: 2 MiB).
 */
import { describe, expect, it } from "vitest";
import { HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { checkQcow2 } from "./qcow2-check.js";
import { Qcow2Image, type Qcow2CreateOptions } from "./qcow2-image.js";
import { planRead, planWrite, type WriteRules } from "./request-plan.js";
import type { ClusterMapping } from "./tables.js";

const CS = 4096;
const MiB = 1 << 20;

describe("request plans", () => {
  const data = (host: number): ClusterMapping => ({ kind: "data", host, copied: true });

  it("a read joins clusters that follow each other on the host, whatever the request's alignment", () => {
    const map: ClusterMapping[] = [data(10 * CS), data(11 * CS), data(5 * CS), { kind: "unallocated" }, data(12 * CS), data(13 * CS)];
    const plan = planRead(CS / 2, 6 * CS - CS, CS, (i) => map[i]!);
    expect(plan).toEqual([
      { kind: "stored", host: 10 * CS + CS / 2, start: 0, end: CS + CS / 2 },
      { kind: "stored", host: 5 * CS, start: CS + CS / 2, end: 2 * CS + CS / 2 },
      { kind: "cluster", mapping: { kind: "unallocated" }, inCluster: 0, start: 2 * CS + CS / 2, end: 3 * CS + CS / 2 },
      { kind: "stored", host: 12 * CS, start: 3 * CS + CS / 2, end: 5 * CS },
    ]);
  });

  it("a write joins in-place clusters by host and whole new clusters into one run; partial ones go alone", () => {
    const map: ClusterMapping[] = [{ kind: "unallocated" }, { kind: "unallocated" }, data(7 * CS), data(8 * CS), { kind: "unallocated" }, { kind: "unallocated" }, { kind: "unallocated" }];
    const rules: WriteRules = {
      lookup: (i) => map[i]!,
      storedAt: (m) => (m.kind === "data" ? m.host : null),
      fresh: (i) => i !== 5, // say cluster 5 is being allocated by another request
    };
    const buf = new Uint8Array(7 * CS - CS / 2);
    expect(planWrite(0, buf, CS, rules)).toEqual([
      { kind: "fresh", first: 0, old: [map[0], map[1]], start: 0, end: 2 * CS },
      { kind: "in-place", host: 7 * CS, start: 2 * CS, end: 4 * CS },
      { kind: "fresh", first: 4, old: [map[4]], start: 4 * CS, end: 5 * CS },
      { kind: "cluster", index: 5, inCluster: 0, start: 5 * CS, end: 6 * CS },
      { kind: "cluster", index: 6, inCluster: 0, start: 6 * CS, end: 7 * CS - CS / 2 },
    ]);
    // A partial first cluster is never fresh (it needs the rest filled in).
    expect(planWrite(CS / 2, new Uint8Array(CS + CS / 2), CS, rules).map((p) => p.kind)).toEqual(["cluster", "fresh"]);
  });
});

async function newImage(options: Partial<Qcow2CreateOptions> = {}) {
  const file = new MemoryFile();
  const io = new HeldFileIo(new MemoryFileIo(file, "runs.qcow2"));
  const img = await Qcow2Image.create(io, { size: 8 * MiB, clusterSize: CS, ...options });
  return { file, io, img };
}

/** File reads and writes `step` makes (metadata is written at flush, not here). */
async function requests(io: HeldFileIo, step: () => Promise<unknown>): Promise<{ reads: number; writes: number }> {
  const [r, w] = [io.counts.read, io.counts.write];
  await step();
  return { reads: io.counts.read - r, writes: io.counts.write - w };
}

async function readAt(img: Qcow2Image, at: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await img.read(at, buf);
  return buf;
}

/** Closed, reopened and read whole, it holds `model`; the checker finds no corruption and no leak. */
async function expectStored(file: MemoryFile, img: Qcow2Image, model: Uint8Array): Promise<void> {
  await img.close();
  const report = await checkQcow2(new MemoryFileIo(file, "runs.qcow2", true));
  expect(report).toMatchObject({ corruptions: [], leakedClusters: 0 });
  const back = await Qcow2Image.open(new MemoryFileIo(file, "runs.qcow2", true));
  expect(firstDiff(await readAt(back, 0, back.size), model)).toBe(-1);
  await back.close();
}

describe("qcow2 I/O in runs", () => {
  it("whole new clusters: one write from the caller's buffer and one read back, across an L2 boundary too", async () => {
    const { file, io, img } = await newImage();
    const model = new Uint8Array(img.size);
    const a = pattern(0, MiB, 1);
    expect(await requests(io, () => img.write(0, a))).toEqual({ reads: 0, writes: 1 });
    model.set(a, 0);
    const b = pattern(2 * MiB - 8 * CS, 16 * CS, 2);
    expect(await requests(io, () => img.write(2 * MiB - 8 * CS, b))).toEqual({ reads: 0, writes: 1 });
    model.set(b, 2 * MiB - 8 * CS);
    let got: Uint8Array = new Uint8Array(0);
    expect(await requests(io, async () => (got = await readAt(img, 512, MiB - 1024)))).toEqual({ reads: 1, writes: 0 });
    expect(firstDiff(got, model.subarray(512, MiB - 512))).toBe(-1);
    expect(await requests(io, async () => (got = await readAt(img, 2 * MiB - 8 * CS, 16 * CS)))).toEqual({ reads: 1, writes: 0 });
    expect(firstDiff(got, b)).toBe(-1);
    expect(img.header.l1Size).toBeGreaterThan(1);
    await expectStored(file, img, model);
  });

  it("over stored and new clusters: one write per run of each; reads follow the runs on the host", async () => {
    const { file, io, img } = await newImage();
    const model = new Uint8Array(img.size);
    const write = async (at: number, data: Uint8Array) => {
      await img.write(at, data);
      model.set(data, at);
    };
    await write(2 * CS, pattern(2 * CS, CS, 1));
    await write(5 * CS, pattern(5 * CS, CS, 2));
    // new 0-1, stored 2, new 3-4, stored 5, new 6-7
    expect(await requests(io, () => write(0, pattern(0, 8 * CS, 3)))).toEqual({ reads: 0, writes: 5 });
    let got: Uint8Array = new Uint8Array(0);
    expect(await requests(io, async () => (got = await readAt(img, 0, 8 * CS)))).toEqual({ reads: 5, writes: 0 });
    expect(firstDiff(got, model.subarray(0, 8 * CS))).toBe(-1);
    // Written one by one in order, clusters 20-23 follow each other on the host: one read, even
    // with unallocated clusters around them and partial ends.
    for (let c = 20; c < 24; c++) await write(c * CS, pattern(c * CS, CS, 4));
    expect(await requests(io, async () => (got = await readAt(img, 19 * CS, 6 * CS)))).toEqual({ reads: 1, writes: 0 });
    expect(firstDiff(got, model.subarray(19 * CS, 25 * CS))).toBe(-1);
    expect(await requests(io, async () => (got = await readAt(img, 20 * CS + 512, 3 * CS)))).toEqual({ reads: 1, writes: 0 });
    expect(firstDiff(got, model.subarray(20 * CS + 512, 23 * CS + 512))).toBe(-1);
    // Written backwards, 30-33 do not: one read each. Rewritten in place: one write each too.
    for (let c = 33; c >= 30; c--) await write(c * CS, pattern(c * CS, CS, 5));
    expect(await requests(io, async () => (got = await readAt(img, 30 * CS, 4 * CS)))).toEqual({ reads: 4, writes: 0 });
    expect(firstDiff(got, model.subarray(30 * CS, 34 * CS))).toBe(-1);
    expect(await requests(io, () => write(30 * CS + 512, pattern(30 * CS + 512, 4 * CS - 1024, 6)))).toEqual({ reads: 0, writes: 4 });
    await expectStored(file, img, model);
  });

  it("partial ends are filled in (zeros here) and the whole clusters between are one run", async () => {
    const { file, io, img } = await newImage();
    const model = new Uint8Array(img.size);
    const data = pattern(CS / 2, 6 * CS, 1);
    expect(await requests(io, () => img.write(CS / 2, data))).toEqual({ reads: 0, writes: 3 });
    model.set(data, CS / 2);
    expect(await img.allocatedExtents()).toEqual([{ offset: 0, length: 7 * CS, state: "data" }]);
    // The last cluster of an image whose size is not a whole number of clusters.
    const odd = await newImage({ size: 8 * CS + 1024 });
    const tail = pattern(7 * CS, CS + 1024, 2);
    await odd.img.write(7 * CS, tail);
    const oddModel = new Uint8Array(odd.img.size);
    oddModel.set(tail, 7 * CS);
    await expectStored(odd.file, odd.img, oddModel);
    await expectStored(file, img, model);
  });

  it("whole clusters of zeros in a write: not stored alone, a zero flag over a backing file (v3), stored data over one in v2", async () => {
    const data = pattern(0, 4 * CS, 1);
    data.fill(0, CS, 2 * CS);
    const alone = await newImage();
    expect(await requests(alone.io, () => alone.img.write(0, data))).toEqual({ reads: 0, writes: 2 });
    expect(await alone.img.allocatedExtents()).toEqual([
      { offset: 0, length: CS, state: "data" },
      { offset: 2 * CS, length: 2 * CS, state: "data" },
    ]);
    const model = new Uint8Array(8 * MiB);
    model.set(data);
    await expectStored(alone.file, alone.img, model);
    const v3 = await newImage({ backing: { file: "base.qcow2", format: "qcow2" } });
    await v3.img.write(0, data);
    expect([0, 1, 2, 3].map((i) => v3.img.blockState(i))).toEqual(["data", "zero", "data", "data"]);
    await expectStored(v3.file, v3.img, model);
    const v2 = await newImage({ version: 2, backing: { file: "base.qcow2", format: "qcow2" } });
    await v2.img.write(0, data);
    expect([0, 1, 2, 3].map((i) => v2.img.blockState(i))).toEqual(["data", "data", "data", "data"]);
    await expectStored(v2.file, v2.img, model);
  });

  it("overlapping writes in flight together land in submission order, whatever order the file completes them in", async () => {
    for (const order of ["fifo", "reverse"] as const) {
      const { file, io, img } = await newImage();
      const model = new Uint8Array(img.size);
      const writes: [number, Uint8Array][] = [
        [0, pattern(0, 4 * CS, 1)], // new clusters 0-3
        [2 * CS + 512, pattern(2 * CS + 512, 512, 2)], // inside cluster 2 while it is allocated
        [CS, pattern(CS, 2 * CS, 3)], // whole clusters 1-2 again
        [3 * CS - 512, pattern(3 * CS - 512, 2 * CS, 4)], // the end of 2, 3 and part of the new 4
        [4 * CS, pattern(4 * CS, 4 * CS, 5)], // 4 again, whole, and new 5-7
      ];
      io.hold(["write"]);
      let settled = false;
      const all = Promise.all(writes.map(([at, data]) => img.write(at, data))).finally(() => (settled = true));
      for (const [at, data] of writes) model.set(data, at);
      // A read issued after them all waits for them all.
      const read = readAt(img, 0, 8 * CS);
      while (!settled) {
        await new Promise((r) => setTimeout(r, 0));
        io.releaseAll(order);
      }
      await all;
      expect(firstDiff(await read, model.subarray(0, 8 * CS)), order).toBe(-1);
      await all;
      io.stopHolding();
      io.releaseAll();
      await expectStored(file, img, model);
    }
  });
});
