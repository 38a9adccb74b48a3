/** Damaged Parallels images are refused with the right kind and are never written. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { expectOpenLeavesFiles, fuzzOpenRefusedOrReadable, onMemory } from "../../testing/corrupt.js";
import { ParallelsImage, createParallels, openParallels } from "./parallels-image.js";
import { INUSE_MAGIC } from "./header.js";
import { checkParallels } from "./parallels-check.js";

/** A good 1 MiB ext image with 4 KiB clusters and two written clusters, in memory. */
async function good(): Promise<{ opener: MemoryFileOpener; bytes: Uint8Array }> {
  const opener = new MemoryFileOpener();
  const img = await createParallels(opener, "a.hdd", { size: 1 << 20, clusterSize: 4096, form: "ext" });
  await img.write(0, new Uint8Array(4096).fill(1));
  await img.write(8192, new Uint8Array(4096).fill(2));
  await img.close();
  return { opener, bytes: opener.file("a.hdd").bytes() };
}

async function refusedUnchanged(bytes: Uint8Array, want: string, readOnly = false): Promise<void> {
  await expectOpenLeavesFiles(await onMemory(bytes, "b.hdd"), (o) => openParallels(o, "b.hdd", { readOnly }), want);
}

describe("corrupt Parallels images", () => {
  it("opens the good image, and clears its in-use mark on close", async () => {
    const { bytes } = await good();
    expect(new DataView(bytes.buffer).getUint32(44, true)).toBe(0);
  });

  it("refuses damage with the right kind and writes nothing, even read-write", async () => {
    const { bytes } = await good();
    const cases: [string, (b: Uint8Array, v: DataView) => Uint8Array, string][] = [
      ["bad signature", (b) => ((b[3] = 0), b), "invalid-format"],
      ["bad version", (b, v) => (v.setUint32(16, 1, true), b), "invalid-format"],
      ["truncated header", (b) => b.slice(0, 50), "corrupt"],
      ["truncated BAT", (b) => b.slice(0, 200), "corrupt"],
      ["BAT entry past the end", (b, v) => (v.setUint32(64 + 8, 1000, true), b), "corrupt"],
      ["two entries share a cluster", (b, v) => (v.setUint32(64 + 4, v.getUint32(64, true), true), b), "corrupt"],
      ["absurd cluster size", (b, v) => (v.setUint32(28, 0x00ffffff, true), b), "unsupported"],
      ["BAT too small for the size", (b, v) => (v.setUint32(32, 3, true), b), "corrupt"],
    ];
    for (const [label, damage, want] of cases) {
      const copy = bytes.slice();
      const damaged = damage(copy, new DataView(copy.buffer));
      await refusedUnchanged(damaged, want).catch((e) => {
        throw new Error(`${label}: ${e}`);
      });
    }
  });

  it("refuses a legacy BAT entry pointing into the header and BAT", async () => {
    const opener = new MemoryFileOpener();
    const img = await createParallels(opener, "l.hdd", { size: 1 << 20, clusterSize: 4096 });
    await img.write(0, new Uint8Array(4096).fill(1));
    await img.close();
    const bytes = opener.file("l.hdd").bytes();
    new DataView(bytes.buffer).setUint32(64, 1, true); // sector 1: inside the BAT
    await refusedUnchanged(bytes, "corrupt", true);
  });

  it("refuses an image marked in use read-write (as qemu does), reads it read-only", async () => {
    const { bytes } = await good();
    new DataView(bytes.buffer).setUint32(44, INUSE_MAGIC, true);
    await refusedUnchanged(bytes, "in-use");
    await refusedUnchanged(bytes, "ok", true);
  });
});

describe("checkParallels", () => {
  it("reports a clean image, an unclean one, leaks and corruption", async () => {
    const { bytes } = await good();
    const check = async (b: Uint8Array) => {
      const opener = new MemoryFileOpener();
      const f = await opener.open("c.hdd", { create: true });
      await f.write(0, b);
      return checkParallels(f);
    };
    expect(await check(bytes)).toMatchObject({ corruption: null, unclean: false, leakedBytes: 0, allocatedClusters: 2, form: "ext" });
    const unclean = bytes.slice();
    new DataView(unclean.buffer).setUint32(44, INUSE_MAGIC, true);
    expect((await check(unclean)).unclean).toBe(true);
    const longer = new Uint8Array(bytes.length + 4096);
    longer.set(bytes);
    expect((await check(longer)).leakedBytes).toBe(4096);
    const hole = bytes.slice();
    new DataView(hole.buffer).setUint32(64, 0, true); // drop cluster 0's entry: its cluster leaks
    expect((await check(hole)).leakedBytes).toBe(4096);
    const bad = bytes.slice();
    bad[0] = 0;
    expect((await check(bad)).corruption?.kind).toBe("invalid-format");
  });
});

describe("damaged Parallels images in memory (fuzzed)", () => {
  it("any damage to header or BAT: refused with a MediumError and nothing written, or opened and readable", async () => {
    const { bytes: original } = await good();
    await fuzzOpenRefusedOrReadable({ original, at: fc.nat(64 + 4 * 256 - 1), name: "/fuzz.hdd", open: (io) => ParallelsImage.open(io), numRuns: 300 });
  });
});
