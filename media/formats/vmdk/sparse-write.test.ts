/**
 * Writes spanning grains of a hosted sparse extent: whole new grains of data side by side are
 * appended in one write from the caller's buffer, their entries in one grain table write and one
 * redundant table write, in that order; stored grains adjacent in the file take one write; zero
 * and partial grains go grain by grain as before. A crash at any request leaves each grain
 * reading as before or with the write.
 */
import { countReads } from "../../testing/count-reads.js";
import { describe, expect, it } from "vitest";
import { ImageChain, type LayeredImage } from "../../chain.js";
import { FaultControl, HeldFileOpener, MemoryFile, MemoryFileOpener } from "../../io/fault-io.js";
import { loggedOpener, sameBytes, type LoggedWrite } from "../../testing/write-log.js";
import { allZero, cloneMemoryFile, firstDiff, pattern } from "../vdi/test-support.js";
import { crashAtEveryRequest, expectWrittenOrZero } from "../../testing/crash.js";
import { parseSparseHeader, SECTOR } from "./sparse-header.js";
import { createVmdk, parentLinkOf } from "./vmdk-create.js";
import { openVmdk } from "./vmdk-open.js";
import type { VmdkImage } from "./vmdk-image.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GRAIN = 64 * KiB;

/** A new monolithicSparse image whose writes are logged; the session already begun. */
async function logged(size = 4 * MiB) {
  const memory = new MemoryFileOpener();
  const log: LoggedWrite[] = [];
  const img = await createVmdk(loggedOpener(memory, log), "a.vmdk", { size });
  await img.write(0, new Uint8Array(512)); // zeros: no grain, but the session's header writes
  log.length = 0;
  return { memory, log, img };
}

/** Directory entry `t` (sectors) of the grain directory and of the redundant one, from the file. */
function tables(file: MemoryFile, t: number): { gt: number; rgt: number } {
  const bytes = file.bytes();
  const h = parseSparseHeader(bytes.subarray(0, SECTOR));
  const v = new DataView(bytes.buffer, bytes.byteOffset);
  return { gt: v.getUint32(h.gdOffset * SECTOR + 4 * t, true), rgt: v.getUint32(h.rgdOffset * SECTOR + 4 * t, true) };
}

/** Grain table entries [first, first + count) as the file holds them (grain table `t` = 0). */
function entries(file: MemoryFile, first: number, count: number): number[] {
  const { gt } = tables(file, 0);
  const v = new DataView(file.bytes().buffer);
  return Array.from({ length: count }, (_, k) => v.getUint32(gt * SECTOR + 4 * (first + k), true));
}

async function readAt(img: VmdkImage | ImageChain, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await img.read(offset, out);
  return out;
}

describe("VMDK sparse extents: writes spanning grains", () => {
  it("1 MiB into new grains: the data in one write from the caller's buffer, then one grain table write, then one redundant", async () => {
    const { memory, log, img } = await logged();
    const data = pattern(MiB, MiB, 1);
    await img.write(MiB, data);
    const file = memory.file("a.vmdk");
    const { gt, rgt } = tables(file, 0);
    const first = MiB / GRAIN;
    expect(log.map((w) => [w.pos, w.data.length])).toEqual([
      [log[0]!.pos, MiB],
      [gt * SECTOR + 4 * first, 4 * 16],
      [rgt * SECTOR + 4 * first, 4 * 16],
    ]);
    expect(sameBytes(log[0]!.data, data)).toBe(true);
    // Side by side in the file, in order.
    const e = entries(file, first, 16);
    expect(e[0]).toBe(log[0]!.pos / SECTOR);
    expect(e.every((s, k) => s === e[0]! + k * (GRAIN / SECTOR))).toBe(true);

    // Rewriting them: stored grains adjacent in the file take one write, in place.
    log.length = 0;
    const again = pattern(MiB, MiB, 2);
    await img.write(MiB, again);
    expect(log.map((w) => [w.pos, w.data.length])).toEqual([[e[0]! * SECTOR, MiB]]);
    await img.close();
    const back = await openVmdk(memory, "a.vmdk", { readOnly: true });
    expect(firstDiff(await readAt(back, MiB, MiB), again)).toBe(-1);
    expect(allZero(await readAt(back, 0, MiB))).toBe(true);
    await back.close();
  });

  it("a write over stored, new, zero and partial grains: each as it needs, the same bytes as a plain array", async () => {
    const { memory, log, img } = await logged();
    await img.write(2 * GRAIN, pattern(0, GRAIN, 3)); // grain 2 stored
    const model = new Uint8Array(img.size);
    model.set(pattern(0, GRAIN, 3), 2 * GRAIN);
    const at = GRAIN / 2;
    const data = pattern(at, 8 * GRAIN, 4); // half of grain 0, grains 1-7 whole, half of grain 8
    data.fill(0, 5 * GRAIN - at, 6 * GRAIN - at); // grain 5: zeros
    model.set(data, at);
    log.length = 0;
    await img.write(at, data);
    // From the caller's buffer: grain 1 (new, alone), grain 2 (in place), grains 3-4 and 6-7
    // (one write each); grains 0 and 8 are completed in a scratch grain.
    const fromCaller = log.filter((w) => w.data.buffer === data.buffer).map((w) => w.data.length);
    expect(fromCaller.sort((a, b) => a - b)).toEqual([GRAIN, GRAIN, 2 * GRAIN, 2 * GRAIN]);
    expect(log.filter((w) => w.data.length === GRAIN && w.data.buffer !== data.buffer)).toHaveLength(2);
    expect(img.blockState(5)).toBe("unallocated"); // zeros in a base image: nothing stored
    expect(img.blockState(0)).toBe("data");
    expect(img.blockState(8)).toBe("data");
    await img.close();
    const back = await openVmdk(memory, "a.vmdk", { readOnly: true });
    expect(firstDiff(await readAt(back, 0, back.size), model)).toBe(-1);
    await back.close();
  });

  it("a run of grains stops at a grain table's end, and appends a table that is missing", async () => {
    const size = 64 * MiB; // two grain tables of 512 grains
    const memory = new MemoryFileOpener();
    await (await createVmdk(memory, "a.vmdk", { size })).close();
    // A foreign file without the second table: both directories' entry 1 cleared.
    const file = memory.file("a.vmdk");
    const h = parseSparseHeader(file.bytes().subarray(0, SECTOR));
    file.write(h.gdOffset * SECTOR + 4, new Uint8Array(4));
    file.write(h.rgdOffset * SECTOR + 4, new Uint8Array(4));
    const img = await openVmdk(memory, "a.vmdk");
    const at = 32 * MiB - MiB;
    const data = pattern(at, 2 * MiB, 5);
    await img.write(at, data);
    expect(tables(file, 1).gt).not.toBe(0);
    expect(tables(file, 1).rgt).not.toBe(0);
    await img.close();
    const back = await openVmdk(memory, "a.vmdk", { readOnly: true });
    expect(firstDiff(await readAt(back, at, 2 * MiB), data)).toBe(-1);
    expect(allZero(await readAt(back, 0, at))).toBe(true);
    await back.close();
  });

  it("a partial write into a grain of a run being allocated waits for it, then lands in place", async () => {
    const control = new FaultControl();
    const memory = new MemoryFileOpener();
    const img = await createVmdk(new HeldFileOpener(memory, control), "a.vmdk", { size: 4 * MiB });
    await img.write(0, new Uint8Array(512));
    control.hold(["write"]);
    const run = pattern(0, MiB, 6);
    const small = pattern(0, 4 * KiB, 7);
    const writes = Promise.all([img.write(MiB, run), img.write(MiB + 3 * GRAIN + 512, small)]);
    let done = false;
    void writes.then(() => (done = true));
    while (!done) {
      await new Promise((r) => setTimeout(r, 0));
      control.releaseAll("reverse");
    }
    control.stopHolding();
    await writes;
    const want = run.slice();
    want.set(small, 3 * GRAIN + 512);
    expect(firstDiff(await readAt(img, MiB, MiB), want)).toBe(-1);
    const grains = (await img.allocatedExtents()).reduce((n, e) => n + e.length, 0) / GRAIN;
    expect(grains).toBe(16); // allocated once
    await img.close();
    const back = await openVmdk(memory, "a.vmdk", { readOnly: true });
    expect(firstDiff(await readAt(back, MiB, MiB), want)).toBe(-1);
    await back.close();
  });

  it("a differencing child completes partial grains from its parent, and takes whole grains without reading it", async () => {
    const memory = new MemoryFileOpener();
    const base = await createVmdk(memory, "b.vmdk", { size: 2 * MiB });
    await base.write(0, pattern(0, 2 * MiB, 1));
    await base.close();
    const parent = await openVmdk(memory, "b.vmdk", { readOnly: true });
    const child = await createVmdk(memory, "c.vmdk", { size: 2 * MiB, parent: parentLinkOf(parent, "b.vmdk") });
    const { layer: counted, reads } = countReads(parent);
    const chain = new ImageChain([child, counted]);
    const whole = pattern(0, 4 * GRAIN, 2);
    await chain.write(4 * GRAIN, whole);
    expect(reads.n).toBe(0);
    await chain.write(9 * GRAIN + 512, pattern(0, 1024, 3));
    expect(reads.n).toBeGreaterThan(0);
    const want = pattern(0, 2 * MiB, 1);
    want.set(whole, 4 * GRAIN);
    want.set(pattern(0, 1024, 3), 9 * GRAIN + 512);
    expect(firstDiff(await readAt(chain, 0, 2 * MiB), want)).toBe(-1);
    // The partial grain is stored whole in the child, the parent's bytes around the write.
    expect(firstDiff(await readAt(child, 9 * GRAIN, GRAIN), want.subarray(9 * GRAIN, 10 * GRAIN))).toBe(-1);
    await chain.close();
  });

  it("a crash at any request of a multi-grain write leaves an image that opens, each grain as before or with the write", async () => {
    const memory = new MemoryFileOpener();
    const img = await createVmdk(memory, "a.vmdk", { size: 4 * MiB });
    await img.write(0, pattern(0, GRAIN, 1));
    await img.close();
    const saved = cloneMemoryFile(memory.file("a.vmdk"));
    const at = 2 * GRAIN + GRAIN / 2;
    const data = pattern(at, 6 * GRAIN, 2); // half of grain 2, grains 3-7, half of grain 8
    await crashAtEveryRequest({
      requests: 12,
      fresh: () => {
        const files = new MemoryFileOpener();
        files.files.set("a.vmdk", cloneMemoryFile(saved));
        return files;
      },
      open: (files, control) => openVmdk(new HeldFileOpener(files, control), "a.vmdk"),
      write: (open) => open.write(at, data),
      verify: async (files, wrote) => {
        const after = await openVmdk(files, "a.vmdk", { readOnly: true });
        expect(firstDiff(await readAt(after, 0, GRAIN), pattern(0, GRAIN, 1))).toBe(-1);
        const got = await readAt(after, at, data.length);
        for (let g = 2; g <= 8; g++) {
          const from = Math.max(0, g * GRAIN - at);
          const to = Math.min(data.length, (g + 1) * GRAIN - at);
          expectWrittenOrZero(got.subarray(from, to), data.subarray(from, to), wrote);
        }
        await after.close();
      },
    });
  });
});
