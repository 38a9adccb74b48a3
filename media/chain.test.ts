import { describe, expect, it } from "vitest";
import { MediumError } from "./block.js";
import { ImageChain, MAX_CHAIN_DEPTH, checkChain, openChain, readFromLayer, type LayeredImage } from "./chain.js";
import { BLOCK_ZERO } from "./formats/vdi/block-map.js";
import { VdiShelf, allZero, firstDiff, pattern } from "./formats/vdi/test-support.js";
import type { VdiImage } from "./formats/vdi/vdi-image.js";

const KiB = 1024;
const BS = 64 * KiB;
const SIZE = 1024 * KiB;

async function expectKind(p: Promise<unknown> | (() => unknown), kind: string): Promise<void> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(MediumError);
    expect((e as MediumError).kind).toBe(kind);
    return;
  }
  throw new Error(`expected a MediumError of kind ${kind}`);
}

const link = (img: VdiImage) => ({ uuid: img.uuid, modifyUuid: img.modifyUuid });

/** base with data in blocks 0..3; a child of it. */
async function twoLevels(shelf = new VdiShelf()) {
  const base = await shelf.create("base.vdi", { size: SIZE, blockSize: BS });
  await base.write(0, pattern(0, 4 * BS, 1));
  await base.close();
  const parent = await shelf.open(base.uuid, { readOnly: true });
  const child = await shelf.create("child.vdi", { size: SIZE, blockSize: BS, parent: link(parent) });
  return { shelf, base: parent, child, chain: new ImageChain([child, parent]) };
}

async function readChain(chain: ImageChain): Promise<Uint8Array> {
  const out = new Uint8Array(chain.size);
  await chain.read(0, out);
  return out;
}

/** Counts blockState lookups on a layer. */
function counted(layer: LayeredImage, counter: { lookups: number }): LayeredImage {
  return new Proxy(layer, {
    get(target, prop) {
      if (prop === "blockState") {
        return (i: number) => {
          counter.lookups++;
          return target.blockState(i);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

describe("chain: reads and writes", () => {
  it("reads fall through unallocated blocks to the parent, zeros below the base", async () => {
    const { chain } = await twoLevels();
    const all = await readChain(chain);
    expect(firstDiff(all.subarray(0, 4 * BS), pattern(0, 4 * BS, 1))).toBe(-1);
    expect(allZero(all.subarray(4 * BS))).toBe(true);
  });

  it("writes go to the top; a partial write copies the rest of the block from below", async () => {
    const { shelf, base, child, chain } = await twoLevels();
    const baseBefore = shelf.bytes(base.uuid);
    await chain.write(BS + 4096, pattern(0, 512, 7));
    expect(firstDiff(shelf.bytes(base.uuid), baseBefore)).toBe(-1);
    expect(child.blockState(1)).toBe("data");
    const expected = pattern(0, 4 * BS, 1);
    expected.set(pattern(0, 512, 7), BS + 4096);
    const all = await readChain(chain);
    expect(firstDiff(all.subarray(0, 4 * BS), expected)).toBe(-1);
    // The child alone holds the whole block, not just the sectors written.
    const own = new Uint8Array(BS);
    await child.read(BS, own);
    expect(firstDiff(own, expected.subarray(BS, 2 * BS))).toBe(-1);
  });

  it("copies a block from below exactly once for concurrent partial writes", async () => {
    const { shelf, chain, child } = await twoLevels();
    const readsBefore = shelf.control.counts.read;
    shelf.control.hold(["read", "write"]);
    const writes = Array.from({ length: 16 }, (_, i) => chain.write(2 * BS + i * 4096, pattern(i * 4096, 4096, 20 + i)));
    let settled = false;
    const all = Promise.all(writes).finally(() => (settled = true));
    while (!settled) {
      await new Promise((r) => setTimeout(r, 0));
      shelf.control.releaseAll("reverse");
    }
    await all;
    shelf.control.stopHolding();
    expect(shelf.control.counts.read - readsBefore).toBe(1); // one read of the parent's block
    expect(child.header.blocksAllocated).toBe(1);
    const back = new Uint8Array(BS);
    await chain.read(2 * BS, back);
    for (let i = 0; i < 16; i++) expect(firstDiff(back.subarray(i * 4096, (i + 1) * 4096), pattern(i * 4096, 4096, 20 + i))).toBe(-1);
  });

  it("a discard in the child marks blocks zero, so the parent's data does not reappear", async () => {
    const { chain, child } = await twoLevels();
    await chain.write(0, pattern(0, BS, 9)); // block 0 now in the child
    await chain.discard(0, 2 * BS); // block 0 (allocated in the child) and block 1 (only in the parent)
    expect(child.store.map[0]).toBe(BLOCK_ZERO);
    expect(child.store.map[1]).toBe(BLOCK_ZERO);
    const all = await readChain(chain);
    expect(allZero(all.subarray(0, 2 * BS))).toBe(true);
    expect(firstDiff(all.subarray(2 * BS, 4 * BS), pattern(2 * BS, 2 * BS, 1))).toBe(-1);
    expect(await chain.allocatedExtents()).toEqual([
      { offset: 0, length: 2 * BS, state: "zero" },
      { offset: 2 * BS, length: 2 * BS, state: "data" },
    ]);
  });

  it("a child larger than its parent reads zeros past the parent's end", async () => {
    const { base, child } = await twoLevels();
    await child.resize(2 * SIZE);
    const chain = new ImageChain([child, base]);
    const all = await readChain(chain);
    expect(firstDiff(all.subarray(0, 4 * BS), pattern(0, 4 * BS, 1))).toBe(-1);
    expect(allZero(all.subarray(4 * BS))).toBe(true);
    await chain.write(SIZE + 512, pattern(0, 512, 3)); // into a block the parent does not have
    const tail = new Uint8Array(BS);
    await chain.read(SIZE, tail);
    expect(firstDiff(tail.subarray(512, 1024), pattern(0, 512, 3))).toBe(-1);
  });

  it("serves two children of one parent independently (a tree)", async () => {
    const { shelf, base, child: a } = await twoLevels();
    const b = await shelf.create("b.vdi", { size: SIZE, blockSize: BS, parent: link(base) });
    const ca = new ImageChain([a, base]);
    const cb = new ImageChain([b, base]);
    await ca.write(0, pattern(0, 512, 50));
    await cb.write(0, pattern(0, 512, 60));
    const ra = new Uint8Array(BS);
    const rb = new Uint8Array(BS);
    await ca.read(0, ra);
    await cb.read(0, rb);
    expect(firstDiff(ra.subarray(0, 512), pattern(0, 512, 50))).toBe(-1);
    expect(firstDiff(rb.subarray(0, 512), pattern(0, 512, 60))).toBe(-1);
    expect(firstDiff(ra.subarray(512), pattern(512, BS - 512, 1))).toBe(-1);
    expect(firstDiff(rb.subarray(512), pattern(512, BS - 512, 1))).toBe(-1);
  });
});

describe("chain: opening", () => {
  it("opens by UUID through a finder, and refuses a missing or wrong parent", async () => {
    const { shelf, child, base } = await twoLevels();
    const chain = await openChain(child, (uuid) => shelf.open(uuid, { readOnly: true }));
    expect(chain.layers.map((l) => l.uuid)).toEqual([child.uuid, base.uuid]);
    await expectKind(
      openChain(child, async (uuid) => {
        throw new MediumError("not-found", `no medium {${uuid}}`);
      }),
      "not-found",
    );
    const stranger = await shelf.create("stranger.vdi", { size: SIZE, blockSize: BS });
    await expectKind(async () => new ImageChain([child, stranger]), "not-found");
    await expectKind(async () => new ImageChain([child]), "not-found");
  });

  it("reports a parent modified after its child was made; read-write only when allowed", async () => {
    const { shelf, base, child } = await twoLevels();
    const writable = await shelf.open(base.uuid);
    await writable.write(0, pattern(0, 512, 99)); // a write session: new modification UUID
    await writable.close();
    const parent = await shelf.open(base.uuid, { readOnly: true });
    expect(parent.modifyUuid).not.toBe(child.parentModifyUuid);
    await expectKind(async () => new ImageChain([child, parent]), "parent-modified");
    const ro = new ImageChain([child, parent], { readOnly: true });
    expect(ro.parentModified).toEqual([{ child: child.uuid, parent: parent.uuid, recorded: child.parentModifyUuid, actual: parent.modifyUuid }]);
    await expectKind(ro.write(0, new Uint8Array(512)), "read-only");
    const allowed = new ImageChain([child, parent], { allowParentModified: true });
    await allowed.write(0, new Uint8Array(512));
  });

  it("builds chains of any depth, with the same lookup cost per level, up to the limit", async () => {
    const shelf = new VdiShelf();
    const base = await shelf.create("l0.vdi", { size: SIZE, blockSize: BS });
    await base.write(0, pattern(0, BS, 1));
    const layers: VdiImage[] = [base];
    for (let i = 1; i < MAX_CHAIN_DEPTH; i++) {
      layers.unshift(await shelf.create(`l${i}.vdi`, { size: SIZE, blockSize: BS, parent: link(layers[0]!) }));
    }
    await layers[0]!.write(2 * BS, pattern(0, BS, 2)); // block 2 in the top
    const lookups = async (sub: LayeredImage[], block: number): Promise<number> => {
      const counter = { lookups: 0 };
      await readFromLayer(sub.map((l) => counted(l, counter)), 0, block * BS, new Uint8Array(BS));
      return counter.lookups;
    };
    // A block stored only in the base: one in-memory lookup per level, at any depth.
    expect(await lookups(layers, 0)).toBe(MAX_CHAIN_DEPTH);
    expect(await lookups(layers.slice(MAX_CHAIN_DEPTH - 10), 0)).toBe(10);
    expect(await lookups(layers, 2)).toBe(1);
    const chain = new ImageChain(layers, { readOnly: true });
    const b0 = new Uint8Array(BS);
    await chain.read(0, b0);
    expect(firstDiff(b0, pattern(0, BS, 1))).toBe(-1);
    const deeper = await shelf.create("too-deep.vdi", { size: SIZE, blockSize: BS, parent: link(layers[0]!) });
    await expectKind(async () => new ImageChain([deeper, ...layers]), "unsupported");
    await expectKind(openChain(deeper, (uuid) => shelf.open(uuid, { readOnly: true })), "unsupported");
    expect(checkChain(layers, { readOnly: true })).toEqual([]);
  });
});
