import { describe, expect, it } from "vitest";
import { MediumError } from "./block.js";
import { ImageChain, mergeChildIntoParent, mergeParentIntoChild, openChain, type MergeOptions } from "./chain.js";
import { VdiImageType } from "./formats/vdi/header.js";
import { VdiShelf, firstDiff, pattern } from "./formats/vdi/test-support.js";
import type { VdiImage } from "./formats/vdi/vdi-image.js";

const KiB = 1024;
const BS = 64 * KiB;
const SIZE = 8 * BS;

const link = (img: VdiImage) => ({ uuid: img.uuid, modifyUuid: img.modifyUuid });
const noOtherChildren: MergeOptions = { hasOtherChildren: () => false };

/**
 * base <- mid <- top, every kind of block at every level:
 *   base: data in 0..3, a zero marker in 5;
 *   mid: a partial write in 1 (copy-on-write), a discard of 2 (zero over the base's data), data in 6;
 *   top: a partial write in 1, data in 3.
 * All flushed and closed; returns the UUIDs.
 */
async function buildChain(shelf: VdiShelf): Promise<{ base: string; mid: string; top: string }> {
  const base = await shelf.create("base.vdi", { size: SIZE, blockSize: BS });
  await base.write(0, pattern(0, 4 * BS, 1));
  await base.write(5 * BS, new Uint8Array(BS));
  await base.close();
  const baseRo = await shelf.open(base.uuid, { readOnly: true });
  const mid = await shelf.create("mid.vdi", { size: SIZE, blockSize: BS, parent: link(baseRo) });
  const c1 = new ImageChain([mid, baseRo]);
  await c1.write(BS + 1024, pattern(0, 2048, 2));
  await c1.discard(2 * BS, BS);
  await c1.write(6 * BS, pattern(6 * BS, BS, 3));
  await c1.close();
  const midRo = await shelf.open(mid.uuid, { readOnly: true });
  const baseRo2 = await shelf.open(base.uuid, { readOnly: true });
  const top = await shelf.create("top.vdi", { size: SIZE, blockSize: BS, parent: link(midRo) });
  const c2 = new ImageChain([top, midRo, baseRo2]);
  await c2.write(BS + 8192, pattern(0, 4096, 4));
  await c2.write(3 * BS, pattern(3 * BS, BS, 5));
  await c2.close();
  return { base: base.uuid, mid: mid.uuid, top: top.uuid };
}

/** The disk as seen from the image with this UUID, following parents by UUID on the shelf. */
async function view(shelf: VdiShelf, uuid: string): Promise<{ data: Uint8Array; chain: ImageChain }> {
  const top = await shelf.open(uuid, { readOnly: true });
  const chain = await openChain(top, (u) => shelf.open(u, { readOnly: true }), { readOnly: true });
  const data = new Uint8Array(chain.size);
  await chain.read(0, data);
  await chain.close();
  return { data, chain };
}

type Direction = "forward" | "backward";

/**
 * Open base, mid and top read-write and merge: forward merges mid into base, backward merges
 * base into mid (mid becomes the base). Returns the result.
 */
async function merge(shelf: VdiShelf, ids: { base: string; mid: string; top: string }, direction: Direction) {
  const layers = [await shelf.open(ids.top), await shelf.open(ids.mid), await shelf.open(ids.base)];
  return direction === "forward" ? mergeChildIntoParent(layers, 1, noOtherChildren) : mergeParentIntoChild(layers, 1, noOtherChildren);
}

/**
 * What a caller does after an interrupted merge: follow the top's parents; if the merged-away
 * image is still in the chain, merge again; if not, only the top's link to the survivor may be
 * stale: re-link it.
 */
async function resume(shelf: VdiShelf, topUuid: string, direction: Direction): Promise<void> {
  const layers = [await shelf.open(topUuid)];
  for (let p = layers[0]!.parentUuid; p !== null; p = layers[layers.length - 1]!.parentUuid) layers.push(await shelf.open(p));
  if (layers.length === 3) {
    const result = direction === "forward" ? await mergeChildIntoParent(layers, 1, noOtherChildren) : await mergeParentIntoChild(layers, 1, noOtherChildren);
    await result.removed.close();
    shelf.files.delete(result.removed.uuid);
  } else {
    await layers[0]!.setParent(link(layers[1]!));
  }
  for (const l of layers) await l.close();
}

describe("merge", () => {
  for (const direction of ["forward", "backward"] as const) {
    it(`${direction}: the chain reads the same and is re-linked`, async () => {
      const shelf = new VdiShelf();
      const ids = await buildChain(shelf);
      const before = (await view(shelf, ids.top)).data;
      const midBefore = (await view(shelf, ids.mid)).data;
      const result = await merge(shelf, ids, direction);
      const survivor = direction === "forward" ? ids.base : ids.mid;
      const gone = direction === "forward" ? ids.mid : ids.base;
      expect(result.removed.uuid).toBe(gone);
      expect(result.layers.map((l) => l.uuid)).toEqual([ids.top, survivor]);
      for (const l of result.layers) await l.close();
      await result.removed.close();
      shelf.files.delete(gone); // the caller deletes the merged-away image
      const after = await view(shelf, ids.top);
      expect(firstDiff(after.data, before)).toBe(-1);
      expect(after.chain.parentModified).toEqual([]); // the top records the survivor's new modification UUID
      expect(firstDiff((await view(shelf, survivor)).data, midBefore)).toBe(-1);
      const s = await shelf.open(survivor, { readOnly: true });
      expect(s.parentUuid).toBeNull();
      expect(s.type).toBe(VdiImageType.normal);
    });
  }

  it("backward into the top of a three-level chain: the top takes its grandparent", async () => {
    const shelf = new VdiShelf();
    const ids = await buildChain(shelf);
    const before = (await view(shelf, ids.top)).data;
    const top = await shelf.open(ids.top);
    const mid = await shelf.open(ids.mid);
    const base = await shelf.open(ids.base);
    const result = await mergeParentIntoChild([top, mid, base], 0, noOtherChildren);
    expect(result.removed.uuid).toBe(ids.mid);
    expect(top.parentUuid).toBe(ids.base);
    expect(top.parentModifyUuid).toBe(base.modifyUuid);
    shelf.files.delete(ids.mid);
    expect(firstDiff((await view(shelf, ids.top)).data, before)).toBe(-1);
  });

  it("refuses to merge into a parent with other children (in-use), changing nothing", async () => {
    const shelf = new VdiShelf();
    const ids = await buildChain(shelf);
    const snapshot = [...shelf.files.keys()].map((u) => shelf.bytes(u));
    const opts: MergeOptions = { hasOtherChildren: (parent) => parent.uuid === ids.base };
    for (const run of [mergeChildIntoParent, mergeParentIntoChild]) {
      const layers = [await shelf.open(ids.top), await shelf.open(ids.mid), await shelf.open(ids.base)];
      await expect(run(layers, 1, opts)).rejects.toSatisfy((e) => e instanceof MediumError && e.kind === "in-use");
    }
    [...shelf.files.keys()].forEach((u, i) => expect(firstDiff(shelf.bytes(u), snapshot[i]!)).toBe(-1));
  });
});

describe("merge: interrupted at every write", () => {
  const mutating = new Set(["write", "truncate", "flush", "punchHole"]);

  /** Requests that change a file during a complete merge. */
  async function countSteps(direction: Direction): Promise<number> {
    const shelf = new VdiShelf();
    const ids = await buildChain(shelf);
    let steps = 0;
    shelf.control.failWhen((r) => mutating.has(r.op) && (steps++, false), null, Infinity);
    await merge(shelf, ids, direction);
    return steps;
  }

  for (const direction of ["forward", "backward"] as const) {
    it(`${direction}: after a crash at any point the chain reads as before, and the merge can be run again`, async () => {
      const steps = await countSteps(direction);
      expect(steps).toBeGreaterThan(5);
      // n = steps: the power goes right after the merge returns.
      for (let n = 0; n <= steps; n++) {
        const shelf = new VdiShelf();
        const ids = await buildChain(shelf);
        const before = (await view(shelf, ids.top)).data;
        let seen = 0;
        shelf.control.failWhen((r) => mutating.has(r.op) && ++seen > n, new MediumError("io", "power cut"), Infinity);
        if (n < steps) await expect(merge(shelf, ids, direction)).rejects.toThrow(/power cut/);
        else await merge(shelf, ids, direction);
        for (const what of ["kept", "durable"] as const) {
          const after = shelf.afterCrash(what);
          const got = (await view(after, ids.top)).data;
          expect(firstDiff(got, before), `${direction} merge cut after ${n} of ${steps} writes, ${what}`).toBe(-1);
          // Resume on what the crash left.
          await resume(after, ids.top, direction);
          const resumed = await view(after, ids.top);
          expect(firstDiff(resumed.data, before), `resumed after ${n} (${what})`).toBe(-1);
          expect(resumed.chain.parentModified).toEqual([]);
          expect(resumed.chain.layers.length).toBe(2);
        }
      }
    });
  }
});
