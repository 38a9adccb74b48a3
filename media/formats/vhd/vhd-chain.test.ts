/**
 * Differencing VHDs through media/chain.ts: sector-exact fall-through of partly stored blocks,
 * parent timestamps, merges in both directions, and what a crash during an allocation leaves.
 */
import { describe, expect, it } from "vitest";
import { ImageChain, mergeChildIntoParent, mergeParentIntoChild } from "../../chain.js";
import { MediumError } from "../../block.js";
import { FaultControl, HeldFileIo, MemoryFile, MemoryFileIo, MemoryFileOpener } from "../../io/fault-io.js";
import { loggedFile, sameBytes, type LoggedWrite } from "../../testing/write-log.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { LocatorCode } from "./dynamic-header.js";
import { VhdDiskType } from "./footer.js";
import { checkVhd } from "./vhd-check.js";
import { VhdImage, createVhd, openVhd } from "./vhd-image.js";

const KiB = 1024;
const MiB = 1 << 20;
const SIZE = 8 * MiB;
let clock = Date.UTC(2024, 0, 1);
const now = () => (clock += 1000);

/** A dynamic parent full of a pattern, and a differencing child of it. */
async function family(blockSize = 2 * MiB) {
  const opener = new MemoryFileOpener();
  const base = await createVhd(opener, "/vm/base.vhd", { size: SIZE, blockSize, now });
  const model = pattern(0, SIZE, 1);
  await base.write(0, model);
  await base.close();
  const ro = await openVhd(opener, "/vm/base.vhd", { readOnly: true });
  const parent = { uuid: ro.uuid, timestamp: ro.timestamp, path: "/vm/base.vhd" };
  await ro.close();
  const child = await createVhd(opener, "/vm/snap/child.vhd", { size: SIZE, blockSize, parent, now });
  await child.close();
  const chain = async (readOnly = false) =>
    new ImageChain([await openVhd(opener, "/vm/snap/child.vhd", { readOnly, now }), await openVhd(opener, "/vm/base.vhd", { readOnly: true, now })], { readOnly });
  return { opener, model, chain };
}

/** Sector-sized writes here and there: inside blocks, across a block boundary, single sectors. */
const writes: [number, number][] = [
  [512, 512],
  [4 * KiB, 8 * KiB],
  [2 * MiB - 1024, 3 * KiB],
  [5 * MiB + 7 * 512, 512],
  [SIZE - 512, 512],
];

async function readAll(b: { size: number; read(o: number, buf: Uint8Array): Promise<void> }): Promise<Uint8Array> {
  const out = new Uint8Array(b.size);
  await b.read(0, out);
  return out;
}

describe("differencing VHD", () => {
  it("is created as VirtualBox makes one: type 4, parent UUID, timestamp, name and W2ku/W2ru locators", async () => {
    const { opener } = await family();
    const base = await openVhd(opener, "/vm/base.vhd", { readOnly: true });
    const child = await openVhd(opener, "/vm/snap/child.vhd", { readOnly: true });
    expect(child.footerCopy.diskType).toBe(VhdDiskType.differencing);
    expect(child.parentUuid).toBe(base.uuid);
    expect(child.parentModifyUuid).toBe(base.modifyUuid);
    expect(child.parentName).toBe("base.vhd");
    const h = child.headerCopy!;
    expect(h.locators.slice(0, 2).map((l) => l.code)).toEqual([LocatorCode.w2ku, LocatorCode.w2ru]);
    const file = await opener.open("/vm/snap/child.vhd", { readOnly: true });
    const report = await checkVhd(file);
    expect(report.image?.parentLocators.map((l) => l.path)).toEqual(["/vm/base.vhd", "../base.vhd"]);
    expect(report.leaks).toEqual([]);
    expect(report.warnings).toEqual([]);
    await Promise.all([file.close(), base.close(), child.close()]);
  });

  for (const blockSize of [2 * MiB, 64 * KiB]) {
    it(`partial-block writes fall through to the parent sector by sector (${blockSize / KiB} KiB blocks)`, async () => {
      const { opener, model, chain } = await family(blockSize);
      const c = await chain();
      for (const [at, n] of writes) {
        const data = pattern(at, n, 9);
        await c.write(at, data);
        model.set(data, at);
      }
      expect(firstDiff(await readAll(c), model)).toBe(-1);
      // The child stores only the sectors written: alone it reads zeros elsewhere.
      const top = c.top as VhdImage;
      const alone = await readAll(top);
      for (let s = 0; s < SIZE; s += 512) {
        const written = writes.some(([at, n]) => s >= at && s < at + n);
        const want = written ? model.subarray(s, s + 512) : new Uint8Array(512);
        expect(firstDiff(alone.subarray(s, s + 512), want), `sector ${s / 512}`).toBe(-1);
      }
      expect(top.fileSize).toBeLessThan(8 * (blockSize + 512) + 8 * KiB);
      await c.close();
      // Still so after reopening (the bitmaps are on disk).
      const again = await chain(true);
      expect(firstDiff(await readAll(again), model)).toBe(-1);
      const extents = await again.allocatedExtents();
      expect(extents).toEqual([{ offset: 0, length: SIZE, state: "data" }]);
      await again.close();
      const file = await opener.open("/vm/snap/child.vhd", { readOnly: true });
      const report = await checkVhd(file);
      await file.close();
      expect(report.image?.partialBlocks).toBeGreaterThan(0);
      expect(report.leakedBytes).toBe(0);
    });
  }

  it("reports a parent written after the child was made as parent-modified", async () => {
    const { opener, chain } = await family();
    const base = await openVhd(opener, "/vm/base.vhd", { now });
    await base.write(0, new Uint8Array(512));
    await base.close();
    await expect(chain()).rejects.toMatchObject({ kind: "parent-modified" });
    const ro = await chain(true);
    expect(ro.parentModified.length).toBe(1);
    await ro.close();
  });

  it("merges the child into its parent copying only the sectors the child stores", async () => {
    const { opener, model, chain } = await family();
    const c = await chain();
    for (const [at, n] of writes) {
      const data = pattern(at, n, 9);
      await c.write(at, data);
      model.set(data, at);
    }
    await c.close();
    const child = await openVhd(opener, "/vm/snap/child.vhd", { readOnly: true });
    const parent = await openVhd(opener, "/vm/base.vhd", { now });
    const result = await mergeChildIntoParent([child, parent], 0, { hasOtherChildren: () => false });
    expect(result.removed).toBe(child);
    expect(firstDiff(await readAll(parent), model)).toBe(-1);
    await Promise.all([child.close(), parent.close()]);
  });

  it("merges the parent into the child, filling the sectors it lacked, and the child becomes a base", async () => {
    const { opener, model, chain } = await family();
    const c = await chain();
    for (const [at, n] of writes) {
      const data = pattern(at, n, 9);
      await c.write(at, data);
      model.set(data, at);
    }
    await c.close();
    const child = await openVhd(opener, "/vm/snap/child.vhd", { now });
    const parent = await openVhd(opener, "/vm/base.vhd", { readOnly: true });
    await mergeParentIntoChild([child, parent], 0, { hasOtherChildren: () => false });
    await Promise.all([child.close(), parent.close()]);
    const alone = await openVhd(opener, "/vm/snap/child.vhd", { readOnly: true });
    expect(alone.parentUuid).toBeNull();
    expect(alone.footerCopy.diskType).toBe(VhdDiskType.dynamic);
    expect(firstDiff(await readAll(alone), model)).toBe(-1);
    await alone.close();
  });

  it("re-links to another parent with its path, rewriting name and locators", async () => {
    const { opener } = await family();
    const other = await createVhd(opener, "/other/new-base.vhd", { size: SIZE, now });
    const child = await openVhd(opener, "/vm/snap/child.vhd", { now });
    await child.setParent({ uuid: other.uuid, modifyUuid: other.modifyUuid }, "/other/new-base.vhd");
    await Promise.all([child.close(), other.close()]);
    const again = await openVhd(opener, "/vm/snap/child.vhd", { readOnly: true });
    expect(again.parentUuid).toBe(other.uuid);
    expect(again.parentName).toBe("new-base.vhd");
    await again.close();
    const file = await opener.open("/vm/snap/child.vhd", { readOnly: true });
    expect((await checkVhd(file)).image?.parentLocators.map((l) => l.path)).toEqual(["/other/new-base.vhd", "../../other/new-base.vhd"]);
    await file.close();
  });
});

describe("VHD allocation and crashes", () => {
  it("a new block: the footer moves on (its copy at 0 left as it is), bitmap and data from the caller's buffer, the BAT entry last", async () => {
    const file = new MemoryFile();
    const log: LoggedWrite[] = [];
    const img = await VhdImage.create(loggedFile(new MemoryFileIo(file, "/a.vhd"), log), { size: SIZE, now });
    await img.write(0, pattern(0, 4096, 1)); // the session and block 0
    const end = img.fileSize - 512;
    log.length = 0;
    const data = pattern(2 * MiB, 2 * MiB, 2);
    await img.write(2 * MiB, data);
    const stride = 512 + 2 * MiB; // bitmap sector + block
    expect(log.map((w) => [w.pos, w.data.length]).sort((a, b) => a[0]! - b[0]!)).toEqual([
      [log.at(-1)!.pos, 4], // the BAT entry (before the data in the file)
      [end, 512], // the bitmap, where the footer was
      [end + 512, 2 * MiB], // the block
      [end + stride, 512], // the footer, one block further on
    ]);
    expect(log[0]!.pos).toBe(end + stride); // the footer first
    expect(log.at(-1)!.data.length).toBe(4); // the BAT entry last
    expect(sameBytes(log.find((w) => w.data.length === 2 * MiB)!.data, data)).toBe(true);
    await img.close();
    const report = await checkVhd(new MemoryFileIo(file, "/a.vhd", true));
    expect(report.corruption).toBeNull();
    expect(report.warnings).toEqual([]);
    const back = await VhdImage.open(new MemoryFileIo(file, "/a.vhd", true), { readOnly: true });
    const got = new Uint8Array(2 * MiB);
    await back.read(2 * MiB, got);
    expect(firstDiff(got, data)).toBe(-1);
    await back.close();
  });

  it("a crash at any request of an allocation leaves an image that opens and reads as before (or with the write)", async () => {
    const base = new MemoryFile();
    const img = await VhdImage.create(new MemoryFileIo(base, "/a.vhd"), { size: SIZE, now });
    await img.write(0, pattern(0, 4096, 1));
    await img.close();
    const before = pattern(0, 4096, 1);
    const data = pattern(3 * MiB, 8192, 2);
    for (let k = 0; k < 8; k++) {
      const f = new MemoryFile();
      f.write(0, base.bytes());
      const control = new FaultControl();
      const io = new HeldFileIo(new MemoryFileIo(f, "/a.vhd"), control);
      const open = await VhdImage.open(io, { now });
      control.dieAfter(control.counts.total + k);
      const wrote = await open.write(3 * MiB, data).then(
        () => true,
        (e) => {
          expect(e).toBeInstanceOf(MediumError);
          return false;
        },
      );
      await open.close().catch(() => undefined);
      const after = await VhdImage.open(new MemoryFileIo(f, "/a.vhd"), { readOnly: true });
      const got = await readAll(after);
      expect(firstDiff(got.subarray(0, 4096), before)).toBe(-1);
      const seen = got.subarray(3 * MiB, 3 * MiB + 8192);
      if (wrote) expect(firstDiff(seen, data)).toBe(-1);
      else expect(seen.every((b) => b === 0) || firstDiff(seen, data) === -1).toBe(true);
      await after.close();
    }
  });

  it("resizes: a fixed image grows with zeros where its footer was; shrinking and compact are refused", async () => {
    const opener = new MemoryFileOpener();
    const fixed = await createVhd(opener, "/f.vhd", { size: 4 * MiB, variant: "fixed", now });
    await fixed.write(4 * MiB - 512, pattern(0, 512, 3));
    await fixed.resize(6 * MiB);
    const tail = new Uint8Array(2 * MiB);
    await fixed.read(4 * MiB, tail);
    expect(tail.every((b) => b === 0)).toBe(true);
    await expect(fixed.resize(2 * MiB)).rejects.toMatchObject({ kind: "unsupported" });
    await expect(fixed.compact()).rejects.toMatchObject({ kind: "unsupported" });
    await fixed.close();
    const again = await openVhd(opener, "/f.vhd", { readOnly: true });
    expect(again.size).toBe(6 * MiB);
    await again.close();
  });

  it("grows a dynamic image whose block table runs into stored blocks by moving them to the end", async () => {
    const opener = new MemoryFileOpener();
    const img = await createVhd(opener, "/d.vhd", { size: 4 * MiB, blockSize: 64 * KiB, now });
    const model = new Uint8Array(64 * MiB);
    for (const at of [0, 64 * KiB + 512, 3 * MiB]) {
      const data = pattern(at, 8192, 1);
      await img.write(at, data);
      model.set(data, at);
    }
    await img.resize(8 * MiB); // 128 entries: still inside the BAT's sector
    await img.resize(64 * MiB); // 1024 entries: the first blocks move out of the way
    const last = pattern(0, 512, 2);
    await img.write(64 * MiB - 512, last);
    model.set(last, 64 * MiB - 512);
    expect(firstDiff(await readAll(img), model)).toBe(-1);
    await img.close();
    const again = await openVhd(opener, "/d.vhd", { readOnly: true });
    expect(again.size).toBe(64 * MiB);
    expect(firstDiff(await readAll(again), model)).toBe(-1);
    await again.close();
  });

  it("grows a differencing child, moving its parent locators, and the chain still reads through", async () => {
    const { opener, model, chain } = await family(64 * KiB);
    const c = await chain();
    await c.write(4096, pattern(4096, 1024, 9));
    model.set(pattern(4096, 1024, 9), 4096);
    const child = c.top as VhdImage;
    await child.resize(64 * MiB); // 1024 entries: BAT grows over the locator data
    const seen = new Uint8Array(SIZE);
    await c.read(0, seen);
    expect(firstDiff(seen, model)).toBe(-1);
    await c.close();
    const file = await opener.open("/vm/snap/child.vhd", { readOnly: true });
    const report = await checkVhd(file);
    await file.close();
    expect(report.corruption).toBeNull();
    expect(report.image?.parentLocators.map((l) => l.path)).toEqual(["/vm/base.vhd", "../base.vhd"]);
  });
});
