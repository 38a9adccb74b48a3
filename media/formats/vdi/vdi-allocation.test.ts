/**
 * New blocks in a VDI: a whole block goes to its slot straight from the caller's buffer; a part
 * of one is completed (zeros, or the parent's data) in a reused scratch buffer; either way the
 * data lands before the header and the map entry, and a crash at any point leaves a consistent
 * image reading as before or with the write.
 */
import { countReads } from "../../testing/count-reads.js";
import { describe, expect, it } from "vitest";
import { ImageChain, type LayeredImage } from "../../chain.js";
import { HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { loggedFile, sameBytes, sharing, type LoggedWrite } from "../../testing/write-log.js";
import { crashAtEveryRequest, expectWrittenOrZero } from "../../testing/crash.js";
import { HEADER_READ_SIZE, parseHeader } from "./header.js";
import { VdiShelf, allZero, cloneMemoryFile, firstDiff, pattern, uuidCounter } from "./test-support.js";
import { checkVdi } from "./vdi-check.js";
import { VdiImage } from "./vdi-image.js";

const KiB = 1024;
const BS = 64 * KiB;
const SIZE = 64 * BS;

/** A new image on a memory file whose writes are logged (buffers as given). */
async function logged() {
  const file = new MemoryFile();
  const log: LoggedWrite[] = [];
  const img = await VdiImage.create(loggedFile(new MemoryFileIo(file, "/a.vdi"), log), { size: SIZE, blockSize: BS, newUuid: uuidCounter(1) });
  await img.write(0, new Uint8Array(512)); // the session's header write, out of the way (block 0: zero marker)
  log.length = 0;
  return { file, log, img };
}

function layout(file: MemoryFile) {
  return parseHeader(file.bytes().subarray(0, HEADER_READ_SIZE));
}

async function readBlock(img: VdiImage | ImageChain, index: number): Promise<Uint8Array> {
  const out = new Uint8Array(BS);
  await img.read(index * BS, out);
  return out;
}

describe("VDI: new blocks", () => {
  it("a whole block goes to its slot from the caller's buffer, before the header and the map entry", async () => {
    const { file, log, img } = await logged();
    const data = pattern(5 * BS, BS, 7);
    await img.write(5 * BS, data);
    const h = layout(file);
    expect(log.map((w) => [w.pos, w.data.length])).toEqual([
      [h.dataOffset, BS], // slot 0: the block itself
      [0, log[1]!.data.length], // the header: blocks allocated 0 -> 1
      [h.blockMapOffset + 4 * 5, 4], // the map entry last
    ]);
    expect(sameBytes(log[0]!.data, data)).toBe(true);
    expect(h.blocksAllocated).toBe(1);
    expect(firstDiff(await readBlock(img, 5), data)).toBe(-1);

    // Two whole blocks in one write: two slots, both written from views of the caller's buffer.
    log.length = 0;
    const two = pattern(8 * BS, 2 * BS, 8);
    await img.write(8 * BS, two);
    expect(sharing(log, two).map((w) => w.data.length)).toEqual([BS, BS]);
    await img.close();
    const again = await VdiImage.open(new MemoryFileIo(file, "/a.vdi"), { readOnly: true });
    expect(firstDiff(await readBlock(again, 8), two.subarray(0, BS))).toBe(-1);
    expect(firstDiff(await readBlock(again, 9), two.subarray(BS))).toBe(-1);
    expect(again.blockState(0)).toBe("zero");
  });

  it("a whole block over a stored one is written in place; whole zero blocks take a zero marker", async () => {
    const { file, log, img } = await logged();
    await img.write(3 * BS, pattern(0, BS, 1));
    log.length = 0;
    const second = pattern(0, BS, 2);
    await img.write(3 * BS, second);
    expect(log.map((w) => w.pos)).toEqual([layout(file).dataOffset]);
    expect(sameBytes(log[0]!.data, second)).toBe(true);
    expect(layout(file).blocksAllocated).toBe(1);
    log.length = 0;
    await img.write(4 * BS, new Uint8Array(BS));
    expect(log.map((w) => w.data.length)).toEqual([4]); // the map entry only
    expect(img.blockState(4)).toBe("zero");
  });

  it("partial writes into new blocks reuse one scratch buffer: no block keeps another's bytes", async () => {
    const { log, img } = await logged();
    const parts = [
      { block: 1, at: 0, data: pattern(0, 4 * KiB, 1) },
      { block: 2, at: 32 * KiB, data: pattern(0, 8 * KiB, 2) },
      { block: 3, at: BS - 512, data: pattern(0, 512, 3) },
    ];
    for (const p of parts) await img.write(p.block * BS + p.at, p.data);
    const slotWrites = log.filter((w) => w.data.length === BS);
    expect(slotWrites).toHaveLength(3);
    expect(slotWrites[1]!.data === slotWrites[0]!.data).toBe(true); // the same buffer, reused
    expect(slotWrites[2]!.data === slotWrites[0]!.data).toBe(true);
    for (const p of parts) {
      const got = await readBlock(img, p.block);
      expect(firstDiff(got.subarray(p.at, p.at + p.data.length), p.data)).toBe(-1);
      expect(allZero(got.subarray(0, p.at)) && allZero(got.subarray(p.at + p.data.length))).toBe(true);
    }
    // Many at once: more than the buffers kept, each block still exactly its own write.
    const many = Array.from({ length: 12 }, (_, i) => ({ block: 20 + i, at: (i % 4) * 8 * KiB, data: pattern(i, 4 * KiB, 10 + i) }));
    await Promise.all(many.map((p) => img.write(p.block * BS + p.at, p.data)));
    for (const p of many) {
      const got = await readBlock(img, p.block);
      expect(firstDiff(got.subarray(p.at, p.at + p.data.length), p.data)).toBe(-1);
      expect(allZero(got.subarray(0, p.at)) && allZero(got.subarray(p.at + p.data.length))).toBe(true);
    }
  });

  it("a differencing child completes a partly written block from its parent, and takes a whole block without reading it", async () => {
    const shelf = new VdiShelf();
    const base = await shelf.create("base.vdi", { size: SIZE, blockSize: BS });
    await base.write(0, pattern(0, 8 * BS, 1));
    await base.close();
    const parent = await shelf.open(base.uuid, { readOnly: true });
    const child = await shelf.create("child.vdi", { size: SIZE, blockSize: BS, parent: { uuid: parent.uuid, modifyUuid: parent.modifyUuid } });
    const { layer: countedParent, reads } = countReads(parent);
    const chain = new ImageChain([child, countedParent]);

    const whole = pattern(BS, BS, 5);
    await chain.write(BS, whole);
    expect(reads.n).toBe(0);
    expect(child.blockState(1)).toBe("data");
    expect(firstDiff(await readBlock(chain, 1), whole)).toBe(-1);

    // Partial writes into blocks 2 and 3, one after the other (the scratch buffer is reused).
    await chain.write(2 * BS + 4 * KiB, pattern(0, 4 * KiB, 6));
    await chain.write(3 * BS + 8 * KiB, pattern(0, 512, 7));
    expect(reads.n).toBeGreaterThan(0);
    const want2 = pattern(2 * BS, BS, 1);
    want2.set(pattern(0, 4 * KiB, 6), 4 * KiB);
    const want3 = pattern(3 * BS, BS, 1);
    want3.set(pattern(0, 512, 7), 8 * KiB);
    expect(firstDiff(await readBlock(child, 2), want2)).toBe(-1); // stored in the child itself
    expect(firstDiff(await readBlock(child, 3), want3)).toBe(-1);
    expect(firstDiff(await readBlock(chain, 4), pattern(4 * BS, BS, 1))).toBe(-1); // still the parent's
    await chain.close();
  });

  it("a crash at any request of a whole-block write leaves an image that checks clean and reads as before or with the write", async () => {
    const base = new MemoryFile();
    const img = await VdiImage.create(new MemoryFileIo(base, "/a.vdi"), { size: SIZE, blockSize: BS, newUuid: uuidCounter(1) });
    await img.write(0, pattern(0, BS, 1));
    await img.close();
    const data = pattern(6 * BS, 2 * BS, 2);
    await crashAtEveryRequest({
      requests: 10,
      fresh: () => cloneMemoryFile(base),
      open: (f, control) => VdiImage.open(new HeldFileIo(new MemoryFileIo(f, "/a.vdi"), control), { newUuid: uuidCounter(2) }),
      write: (open) => open.write(6 * BS, data),
      verify: async (f, wrote) => {
        const report = await checkVdi(new MemoryFileIo(f, "/a.vdi", true));
        expect(report.corruption).toBeNull();
        const after = await VdiImage.open(new MemoryFileIo(f, "/a.vdi", true), { readOnly: true });
        expect(firstDiff(await readBlock(after, 0), pattern(0, BS, 1))).toBe(-1);
        for (const b of [6, 7]) expectWrittenOrZero(await readBlock(after, b), data.subarray((b - 6) * BS, (b - 5) * BS), wrote);
        await after.close();
      },
    });
  });
});
