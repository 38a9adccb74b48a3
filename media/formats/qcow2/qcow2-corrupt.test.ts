/**
 * Damaged qcow2 images are refused with the right kind and never written; the checker reports
 * what the open refuses, and a crash at any point of a write session leaves an image that opens
 * and checks without corruption (leaks allowed) and holds everything flushed before it.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryFile, MemoryFileIo, MemoryFileOpener } from "../../io/fault-io.js";
import { expectOpenLeavesFiles, fuzzOpenRefusedOrReadable, onMemory } from "../../testing/corrupt.js";
import { nodeInflate } from "./node/inflate.js";
import { cloneMemoryFile, firstDiff, pattern } from "../vdi/test-support.js";
import { checkQcow2 } from "./qcow2-check.js";
import { Qcow2Image, createQcow2, openQcow2 } from "./qcow2-image.js";

const CS = 4096;

/** A good 4 MiB image with 4 KiB clusters: data in clusters 0, 1 and 600 (a second L2 table). */
async function good(): Promise<Uint8Array> {
  const opener = new MemoryFileOpener();
  const img = await createQcow2(opener, "a.qcow2", { size: 4 << 20, clusterSize: CS });
  await img.write(0, pattern(0, 2 * CS, 1));
  await img.write(600 * CS, pattern(600 * CS, CS, 2));
  await img.close();
  return opener.file("a.qcow2").bytes();
}

const u64 = (b: Uint8Array, at: number) => Number(new DataView(b.buffer).getBigUint64(at));
const setU64 = (b: Uint8Array, at: number, value: number) => new DataView(b.buffer).setBigUint64(at, BigInt(value));
/** The offset in an L1 or L2 entry (bits 9-55). */
const entryAt = (b: Uint8Array, at: number) => Number(new DataView(b.buffer).getBigUint64(at) & 0x00fffffffffffe00n);

describe("corrupt qcow2 images", () => {
  it("the good image checks clean", async () => {
    const r = await checkQcow2(new MemoryFileIo(Object.assign(new MemoryFile(), {}), "x"));
    expect(r.corruptions.length).toBe(1); // an empty file is not qcow2
    const opener = await onMemory(await good(), "b.qcow2");
    const report = await checkQcow2(await opener.open("b.qcow2", { readOnly: true }));
    expect(report).toMatchObject({ corruptions: [], leakedClusters: 0, refcountsChecked: true, version: 3 });
  });

  it("refuses damage with the right kind, writes nothing even read-write, and the checker agrees", async () => {
    const bytes = await good();
    const l1 = u64(bytes, 40);
    const rt = u64(bytes, 48);
    const l2 = entryAt(bytes, l1);
    const cases: [string, (b: Uint8Array) => Uint8Array, string][] = [
      ["bad magic", (b) => ((b[0] = 0), b), "invalid-format"],
      ["version 1", (b) => ((b[7] = 1), b), "invalid-format"],
      ["truncated header", (b) => b.slice(0, 60), "corrupt"],
      ["truncated L2 table", (b) => b.slice(0, l2 + 100), "corrupt"],
      ["L1 table past the end", (b) => (setU64(b, 40, 1 << 30), b), "corrupt"],
      ["refcount table past the end", (b) => (setU64(b, 48, 1 << 30), b), "corrupt"],
      ["L1 overlapping the refcount table", (b) => (setU64(b, 40, rt), b), "corrupt"],
      ["L2 table on the L1 table", (b) => (setU64(b, l1, l1), b), "corrupt"],
      ["L2 table not aligned", (b) => (setU64(b, l1, l2 + 512), b), "corrupt"],
      ["data cluster not aligned", (b) => (setU64(b, l2, entryAt(b, l2) + 512), b), "corrupt"],
      ["data cluster on the refcount table", (b) => (setU64(b, l2, rt), b), "corrupt"],
      ["data cluster past the end", (b) => (setU64(b, l2, 1 << 30), b), "corrupt"],
      ["absurd size", (b) => (setU64(b, 24, 2 ** 60), b), "unsupported"],
      ["unknown incompatible feature", (b) => ((b[79] |= 0x40), b), "unsupported"],
      ["encrypted", (b) => ((b[35] = 2), b), "unsupported"],
    ];
    for (const [label, damage, want] of cases) {
      const damaged = damage(bytes.slice());
      const opener = await onMemory(damaged, "b.qcow2");
      await expectOpenLeavesFiles(opener, (o) => openQcow2(o, "b.qcow2"), want, label);
      const report = await checkQcow2(await opener.open("b.qcow2", { readOnly: true }));
      expect(report.corruptions[0]?.kind, label).toBe(want);
    }
  });

  it("the checker finds a refcount too low (corruption) and one too high (leak)", async () => {
    const bytes = await good();
    const rt = u64(bytes, 48);
    const rb = u64(bytes, rt);
    const low = bytes.slice();
    new DataView(low.buffer).setUint16(rb + 2 * (entryAt(bytes, entryAt(bytes, u64(bytes, 40))) / CS), 0); // the first data cluster
    const lowReport = await checkQcow2(await (await onMemory(low, "b.qcow2")).open("b.qcow2", { readOnly: true }));
    expect(lowReport.corruptions.length).toBe(1);
    const high = bytes.slice();
    new DataView(high.buffer).setUint16(rb + 2 * 2000, 1); // a cluster nothing uses
    const highReport = await checkQcow2(await (await onMemory(high, "b.qcow2")).open("b.qcow2", { readOnly: true }));
    expect(highReport).toMatchObject({ corruptions: [], leakedClusters: 1 });
  });
});

/** A FileIo over memory that logs every write and flush, to replay a crash after any of them. */
class LoggedFileIo extends MemoryFileIo {
  readonly log: ({ op: "write"; pos: number; data: Uint8Array } | { op: "flush" })[] = [];
  override async write(pos: number, buf: Uint8Array): Promise<void> {
    this.log.push({ op: "write", pos, data: buf.slice() });
    await super.write(pos, buf);
  }
  override async flush(): Promise<void> {
    this.log.push({ op: "flush" });
    await super.flush();
  }
}

/**
 * Write `writes` in order to a new 2 MiB image (a flush after every third),
 * then replay a crash after every logged write, with or without the writes since the last flush:
 * each image must check without corruption and hold everything flushed before the crash (each
 * sector as flushed, or as a later write left it).
 */
async function expectCrashSafe(writes: { at: number; data: Uint8Array }[], clusterSize = 512): Promise<void> {
  const io = new LoggedFileIo(new MemoryFile(), "crash.qcow2");
  const img = await Qcow2Image.create(io, { size: 2 << 20, clusterSize });
  const created = io.log.length;
  const flushed: { at: number; data: Uint8Array }[] = [];
  const model = new Uint8Array(img.size);
  const states: { at: number; data: Uint8Array }[] = [];
  for (const [i, { at, data }] of writes.entries()) {
    await img.write(at, data);
    model.set(data, at);
    states.push({ at: io.log.length, data: model.slice() });
    if (i % 3 === 2) {
      await img.flush();
      flushed.push({ at: io.log.length, data: model.slice() });
    }
  }
  await img.close();
  flushed.push({ at: io.log.length, data: model.slice() });
  // Replay: `kept` holds every write up to the crash, `durable` only what the last flush made durable.
  const kept = new MemoryFile();
  const keptIo = new MemoryFileIo(kept, "replay");
  let durable = cloneMemoryFile(kept);
  let durableAt = 0;
  for (let k = 0; k <= io.log.length; k++) {
    const e = io.log[k - 1];
    if (e?.op === "write") await keptIo.write(e.pos, e.data);
    if (e?.op === "flush") {
      durable = cloneMemoryFile(kept);
      durableAt = k;
    }
    if (k < created) continue;
    for (const f of e?.op === "write" ? [kept, durable] : [kept]) {
      const report = await checkQcow2(new MemoryFileIo(f, "replay"));
      expect(report.corruptions, `crash after op ${k}`).toEqual([]);
      // Everything flushed before the crash is there; sectors written since show old or new data.
      const promise = [...flushed].reverse().find((p) => p.at <= durableAt);
      if (!promise) continue;
      const allowed = [promise.data, ...states.filter((st) => st.at > promise.at).map((st) => st.data)];
      const back = await Qcow2Image.open(new MemoryFileIo(f, "replay"), { readOnly: true });
      const got = new Uint8Array(back.size);
      await back.read(0, got);
      for (let s = 0; s < got.length; s += 512) {
        const sector = got.subarray(s, s + 512);
        if (!allowed.some((d) => firstDiff(sector, d.subarray(s, s + 512)) === -1)) expect.fail(`crash after op ${k}: sector ${s / 512} lost flushed data`);
      }
    }
  }
}

describe("qcow2 crash consistency", () => {
  it("a crash after any write, with or without the writes since the last flush, leaves a consistent image", async () => {
    const writes: { at: number; data: Uint8Array }[] = [];
    for (let i = 0; i < 12; i++) {
      const at = ((i * 7919) % 3000) * 512;
      const data = pattern(at, 512 * (1 + (i % 5)), i + 1);
      if (at + data.length <= 2 << 20) writes.push({ at, data });
    }
    await expectCrashSafe(writes);
  });

  it("the same with writes of many clusters: over stored and new ones, partial ends, across L2 tables, zeros among data", async () => {
    const K = 1024;
    const zerosInside = pattern(600 * K, 12 * K, 5);
    zerosInside.fill(0, 2 * K, 6 * K); // two whole clusters of zeros: not stored
    // 2 KiB clusters: an L2 table maps 512 KiB.
    await expectCrashSafe(
      [
        { at: 16 * K, data: pattern(16 * K, 16 * K, 1) }, // 8 new clusters
        { at: 510 * K, data: pattern(510 * K, 4 * K, 2) }, // across the first L2 boundary
        { at: 8 * K + 512, data: pattern(8 * K + 512, 12 * K, 3) }, // partial ends, new then stored clusters
        { at: 20 * K, data: pattern(20 * K, 500 * K, 4) }, // stored, new, stored, across the boundary
        { at: 600 * K, data: zerosInside },
        { at: 1023 * K + 512, data: pattern(0, 3 * K, 6) }, // across the second boundary
        { at: 0, data: pattern(0, 1100 * K, 7) }, // over all of it
      ],
      2048,
    );
  });
});

describe("damaged qcow2 images in memory (fuzzed)", () => {
  it("any damage to the metadata: refused with a MediumError and nothing written, or opened and readable", async () => {
    const original = await good();
    const metaEnd = 6 * CS; // header, refcount table and block, L1, first L2 table
    await fuzzOpenRefusedOrReadable({
      original,
      at: fc.nat(metaEnd - 1),
      name: "/fuzz.qcow2",
      open: (io) => Qcow2Image.open(io, { inflate: nodeInflate }),
      numRuns: 300,
      after: async (f) => {
        const report = await checkQcow2(new MemoryFileIo(f, "/fuzz.qcow2"));
        // The checker refuses exactly what a read-only open refuses (plus refcounts too low).
        if (report.corruptions.length === 0) await (await Qcow2Image.open(new MemoryFileIo(f, "/fuzz.qcow2"), { readOnly: true })).close();
      },
    });
  });
});
