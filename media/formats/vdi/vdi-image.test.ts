import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { BLOCK_FREE, BLOCK_ZERO, isAllocated, parseBlockMap } from "./block-map.js";
import { HEADER_READ_SIZE, parseHeader, VdiImageType } from "./header.js";
import { allZero, firstDiff, pattern, uuidCounter } from "./test-support.js";
import { VdiImage, type VdiCreateOptions } from "./vdi-image.js";

const KiB = 1024;
const MiB = 1024 * KiB;

async function memImage(options: Partial<VdiCreateOptions> = {}) {
  const file = new MemoryFile();
  const io = new HeldFileIo(new MemoryFileIo(file, "/mem.vdi"));
  const img = await VdiImage.create(io, { size: 8 * MiB, blockSize: 64 * KiB, newUuid: uuidCounter(1), ...options });
  return { file, io, img };
}

function reopen(file: MemoryFile, readOnly = false) {
  const io = new HeldFileIo(new MemoryFileIo(file, "/mem.vdi", readOnly));
  return VdiImage.open(io, { newUuid: uuidCounter(2) }).then((img) => ({ io, img }));
}

/** Header and map as they are in the file. */
function onDisk(file: MemoryFile) {
  const bytes = file.bytes();
  const h = parseHeader(bytes.subarray(0, HEADER_READ_SIZE));
  const map = parseBlockMap(bytes.subarray(h.blockMapOffset), h, bytes.length);
  return { h, map };
}

async function readAll(img: VdiImage): Promise<Uint8Array> {
  const out = new Uint8Array(img.size);
  await img.read(0, out);
  return out;
}

/** Release held requests (newest first, to shake out ordering bugs) until `p` settles; then stop holding. */
async function drain<T>(io: HeldFileIo, p: Promise<T>): Promise<T> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  while (!settled) {
    await new Promise((r) => setTimeout(r, 0));
    io.releaseAll("reverse");
  }
  io.stopHolding();
  return p;
}

async function expectKind(p: Promise<unknown>, kind: string): Promise<void> {
  await expect(p).rejects.toBeInstanceOf(MediumError);
  await p.catch((e: MediumError) => expect(e.kind).toBe(kind));
}

describe("VDI image: create and open", () => {
  it("creates a dynamic image as VirtualBox lays it out, reading zeros", async () => {
    const { file, img } = await memImage({ size: 64 * MiB, blockSize: undefined });
    expect(img.type).toBe(VdiImageType.normal);
    expect(img.size).toBe(64 * MiB);
    expect(file.size).toBe(2 * MiB); // header and map each aligned to 1 MiB, no data yet
    const { h, map } = onDisk(file);
    expect(h.blockMapOffset).toBe(MiB);
    expect(h.dataOffset).toBe(2 * MiB);
    expect(Array.from(map).every((e) => e === BLOCK_FREE)).toBe(true);
    expect(await img.allocatedExtents()).toEqual([]);
    expect(allZero(await readAll(img))).toBe(true);
  });

  it("creates a fixed image with every block in place", async () => {
    const { file, img } = await memImage({ variant: "fixed" });
    const { h, map } = onDisk(file);
    expect(h.type).toBe(VdiImageType.fixed);
    expect(h.blocksAllocated).toBe(128);
    expect(Array.from(map)).toEqual(Array.from({ length: 128 }, (_, i) => i));
    expect(file.size).toBe(h.dataOffset + 8 * MiB);
    expect(await img.allocatedExtents()).toEqual([{ offset: 0, length: 8 * MiB, state: "data" }]);
    await img.write(3 * MiB, pattern(3 * MiB, 100 * KiB));
    expect(onDisk(file).h.blocksAllocated).toBe(128);
    expect(firstDiff(file.bytes().subarray(h.dataOffset + 3 * MiB, h.dataOffset + 3 * MiB + 100 * KiB), pattern(3 * MiB, 100 * KiB))).toBe(-1);
  });

  it("opens without writing anything, read-write or not", async () => {
    const { file, img } = await memImage();
    await img.write(0, pattern(0, 4096));
    await img.close();
    const before = file.bytes();
    const { io, img: again } = await reopen(file);
    await readAll(again);
    await again.flush();
    await again.close();
    expect(io.counts.write + io.counts.truncate + io.counts.punchHole).toBe(0);
    expect(firstDiff(file.bytes(), before)).toBe(-1);
  });

  it("refuses undo images, and requests out of bounds, read-only and after close", async () => {
    const { file, img } = await memImage();
    await expectKind(img.read(8 * MiB, new Uint8Array(512)), "out-of-bounds");
    await expectKind(img.write(100, new Uint8Array(512)), "out-of-bounds");
    await img.close();
    await expectKind(img.read(0, new Uint8Array(512)), "closed");
    const { img: ro } = await reopen(file, true);
    await expectKind(ro.write(0, new Uint8Array(512)), "read-only");
    await expectKind(ro.discard(0, 64 * KiB), "read-only");
    const undo = file.bytes();
    new DataView(undo.buffer).setUint32(0x4c, VdiImageType.undo, true);
    const f = new MemoryFile();
    f.write(0, undo);
    await expectKind(VdiImage.open(new MemoryFileIo(f, "/undo.vdi")), "unsupported");
  });
});

describe("VDI image: UUIDs", () => {
  it("changes the modification UUID once per write session, on disk before the data", async () => {
    const { file, img } = await memImage();
    await img.close();
    const { io, img: rw } = await reopen(file);
    const created = rw.modifyUuid;
    expect(onDisk(file).h.modifyUuid).toBe(created);
    io.hold(["write"]);
    const w = rw.write(64 * KiB, pattern(64 * KiB, 512));
    await io.whenHeld(1);
    // The first request of the session is the header with the new modification UUID.
    expect(io.held.map((r) => r.pos)).toEqual([0]);
    expect(rw.modifyUuid).not.toBe(created);
    await drain(io, w);
    const session = rw.modifyUuid;
    expect(onDisk(file).h.modifyUuid).toBe(session);
    await rw.write(0, pattern(0, 512));
    expect(rw.modifyUuid).toBe(session);
    await rw.close();
    const { img: next } = await reopen(file);
    expect(next.modifyUuid).toBe(session);
    expect(next.uuid).toBe(img.uuid);
  });

  it("sets UUIDs and parent links, and becomes a base image when unlinked", async () => {
    const parent = { uuid: "11111111-2222-4333-8444-555555555555", modifyUuid: "66666666-7777-4888-8999-aaaaaaaaaaaa" };
    const { file, img } = await memImage({ parent });
    expect(img.type).toBe(VdiImageType.diff);
    expect(img.parentUuid).toBe(parent.uuid);
    expect(img.parentModifyUuid).toBe(parent.modifyUuid);
    await img.setUuid("01234567-89ab-4cde-8f01-23456789abcd");
    await img.setParentUuid("fedcba98-7654-4321-8fed-cba987654321");
    await img.setParentModifyUuid("00000000-0000-0000-0000-000000000000");
    let h = onDisk(file).h;
    expect([h.uuid, h.parentUuid, h.parentModifyUuid]).toEqual([
      "01234567-89ab-4cde-8f01-23456789abcd",
      "fedcba98-7654-4321-8fed-cba987654321",
      "00000000-0000-0000-0000-000000000000",
    ]);
    await expectKind(img.setUuid("not a uuid"), "unsupported");
    await img.setParent(null);
    h = onDisk(file).h;
    expect(h.type).toBe(VdiImageType.normal);
    expect(img.parentUuid).toBeNull();
    await img.setParent(parent);
    expect(onDisk(file).h.type).toBe(VdiImageType.diff);
  });
});

describe("VDI image: blocks", () => {
  it("allocates blocks at the end, data before the map entry", async () => {
    const { file, io, img } = await memImage();
    await img.write(0, new Uint8Array(512)); // start the session
    const h0 = onDisk(file).h;
    io.hold(["write"]);
    const w = img.write(5 * 64 * KiB + 1024, pattern(0, 2048, 9));
    const order: number[] = [];
    let done = false;
    w.then(() => (done = true));
    while (!done) {
      await new Promise((r) => setTimeout(r, 0));
      while (io.held.length) {
        order.push(io.held[0]!.pos);
        io.release(0);
        await new Promise((r) => setTimeout(r, 0));
      }
    }
    // data slot 0, then the header (blocks allocated 0 -> 1), then entry 5 of the map
    io.stopHolding();
    expect(order).toEqual([h0.dataOffset, 0, h0.blockMapOffset + 4 * 5]);
    const { h, map } = onDisk(file);
    expect(h.blocksAllocated).toBe(1);
    expect(map[5]).toBe(0);
    const back = new Uint8Array(64 * KiB);
    await img.read(5 * 64 * KiB, back);
    expect(back.subarray(1024, 3072)).toEqual(pattern(0, 2048, 9));
    expect(allZero(back.subarray(0, 1024)) && allZero(back.subarray(3072))).toBe(true);
  });

  it("concurrent partial writes into one unallocated block allocate it once", async () => {
    const { file, io, img } = await memImage();
    io.hold(["write", "read"]);
    const writes = Array.from({ length: 16 }, (_, i) => img.write(7 * 64 * KiB + i * 4096, pattern(i * 4096, 4096, i + 1)));
    await drain(io, Promise.all(writes));
    const { h, map } = onDisk(file);
    expect(h.blocksAllocated).toBe(1);
    expect(map.filter((e) => isAllocated(e)).length).toBe(1);
    const back = new Uint8Array(64 * KiB);
    await img.read(7 * 64 * KiB, back);
    for (let i = 0; i < 16; i++) expect(firstDiff(back.subarray(i * 4096, (i + 1) * 4096), pattern(i * 4096, 4096, i + 1))).toBe(-1);
  });

  it("finds blocks without file I/O: reads touch only data, one request per run of adjacent slots", async () => {
    const { file, img } = await memImage();
    await img.write(0, pattern(0, 3 * 64 * KiB)); // blocks 0..2 in slots 0..2
    await img.write(10 * 64 * KiB, pattern(0, 64 * KiB)); // block 10 in slot 3
    await img.write(5 * 64 * KiB, new Uint8Array(64 * KiB)); // block 5: zero marker
    await img.close();
    const { io, img: r } = await reopen(file, true);
    const opened = io.counts.read;
    await r.read(20 * 64 * KiB, new Uint8Array(20 * 64 * KiB)); // free blocks only
    await r.read(5 * 64 * KiB, new Uint8Array(64 * KiB)); // zero block
    expect(io.counts.read - opened).toBe(0);
    await r.read(0, new Uint8Array(3 * 64 * KiB)); // three adjacent slots: one read
    expect(io.counts.read - opened).toBe(1);
    await r.read(2 * 64 * KiB, new Uint8Array(9 * 64 * KiB)); // block 2 and block 10: two reads
    expect(io.counts.read - opened).toBe(3);
    for (let i = 0; i < 1000; i++) expect(r.blockState(i % 128)).toBeDefined();
    expect(io.counts.read - opened).toBe(3);
  });

  it("keeps zero blocks without storage: whole zero writes mark them, zero blocks read as zeros", async () => {
    const { file, img } = await memImage();
    await img.write(64 * KiB, new Uint8Array(128 * KiB));
    let disk = onDisk(file);
    expect([disk.map[1], disk.map[2], disk.h.blocksAllocated]).toEqual([BLOCK_ZERO, BLOCK_ZERO, 0]);
    await img.write(64 * KiB + 512, new Uint8Array(512)); // zeros into a zero block: nothing to do
    expect(onDisk(file).h.blocksAllocated).toBe(0);
    await img.write(64 * KiB + 512, pattern(0, 512)); // data into a zero block: allocated, rest zeros
    disk = onDisk(file);
    expect(disk.map[1]).toBe(0);
    const back = new Uint8Array(64 * KiB);
    await img.read(64 * KiB, back);
    expect(back.subarray(512, 1024)).toEqual(pattern(0, 512));
    expect(back.filter((b) => b !== 0).length).toBe(pattern(0, 512).filter((b) => b !== 0).length);
    expect(await img.allocatedExtents()).toEqual([
      { offset: 64 * KiB, length: 64 * KiB, state: "data" },
      { offset: 128 * KiB, length: 64 * KiB, state: "zero" },
    ]);
  });

  it("reports the tail block of an odd-sized disk and writes it as a whole", async () => {
    const { img } = await memImage({ size: 64 * KiB * 3 + 4096 });
    expect(img.size).toBe(3 * 64 * KiB + 4096);
    await img.write(3 * 64 * KiB, new Uint8Array(4096)); // covers the whole tail: a zero marker
    expect(img.blockState(3)).toBe("zero");
    await img.write(3 * 64 * KiB, pattern(0, 4096));
    expect(img.blockState(3)).toBe("data");
    expect(await img.allocatedExtents()).toEqual([{ offset: 3 * 64 * KiB, length: 4096, state: "data" }]);
  });
});

describe("VDI image: discard, compact", () => {
  it("discard frees whole blocks, moves the last block into the hole and shrinks the file", async () => {
    const { file, img } = await memImage();
    for (const b of [4, 9, 2, 7]) await img.write(b * 64 * KiB, pattern(b * 64 * KiB, 64 * KiB)); // slots 0..3
    const h0 = onDisk(file).h;
    expect(file.size).toBe(h0.dataOffset + 4 * 64 * KiB);
    await img.discard(9 * 64 * KiB - 512, 64 * KiB + 1024); // covers block 9 only, plus bits of 8 and 10
    const { h, map } = onDisk(file);
    expect(map[9]).toBe(BLOCK_FREE);
    expect(map[7]).toBe(1); // block 7 moved from slot 3 into slot 1
    expect(h.blocksAllocated).toBe(3);
    expect(file.size).toBe(h.dataOffset + 3 * 64 * KiB);
    for (const b of [4, 2, 7]) {
      const back = new Uint8Array(64 * KiB);
      await img.read(b * 64 * KiB, back);
      expect(firstDiff(back, pattern(b * 64 * KiB, 64 * KiB))).toBe(-1);
    }
    const nine = new Uint8Array(64 * KiB);
    await img.read(9 * 64 * KiB, nine);
    expect(allZero(nine)).toBe(true);
  });

  it("discard in a differencing image marks blocks zero, free ones too", async () => {
    const { file, img } = await memImage({ parent: { uuid: "11111111-2222-4333-8444-555555555555", modifyUuid: "66666666-7777-4888-8999-aaaaaaaaaaaa" } });
    await img.write(64 * KiB, pattern(0, 64 * KiB));
    await img.discard(0, 3 * 64 * KiB);
    const { h, map } = onDisk(file);
    expect([map[0], map[1], map[2], map[3]]).toEqual([BLOCK_ZERO, BLOCK_ZERO, BLOCK_ZERO, BLOCK_FREE]);
    expect(h.blocksAllocated).toBe(0);
  });

  it("discard is a hint on a fixed image", async () => {
    const { file, img } = await memImage({ variant: "fixed" });
    await img.write(0, pattern(0, 64 * KiB));
    const before = file.bytes();
    await img.discard(0, 8 * MiB);
    expect(firstDiff(file.bytes(), before)).toBe(-1);
  });

  it("compact drops zero-filled blocks, fills holes from the end and truncates", async () => {
    const { file, img } = await memImage();
    for (let b = 0; b < 6; b++) await img.write(b * 64 * KiB, pattern(b * 64 * KiB, 64 * KiB));
    await img.write(1 * 64 * KiB, new Uint8Array(64 * KiB)); // zeros written in place: still allocated
    await img.write(3 * 64 * KiB, new Uint8Array(64 * KiB));
    expect(onDisk(file).h.blocksAllocated).toBe(6);
    const before = await readAll(img);
    await img.compact();
    const { h, map } = onDisk(file);
    expect(h.blocksAllocated).toBe(4);
    expect([map[1], map[3]]).toEqual([BLOCK_FREE, BLOCK_FREE]);
    expect(new Set([map[0], map[2], map[4], map[5]])).toEqual(new Set([0, 1, 2, 3]));
    expect(file.size).toBe(h.dataOffset + 4 * 64 * KiB);
    expect(firstDiff(await readAll(img), before)).toBe(-1);
  });

  it("compact reports progress: every stored block read, then every block moved", async () => {
    const { img } = await memImage();
    for (let b = 0; b < 8; b++) await img.write(b * 64 * KiB, b % 3 === 0 ? new Uint8Array(64 * KiB).fill(1) : pattern(b * 64 * KiB, 64 * KiB));
    await img.write(0, new Uint8Array(64 * KiB)); // block 0 (slot 0) and block 3 (slot 3) become zeros
    await img.write(3 * 64 * KiB, new Uint8Array(64 * KiB));
    const seen: string[] = [];
    await img.compact({ onProgress: (done, total, phase) => seen.push(`${phase} ${done}/${total}`) });
    // 8 stored blocks read; 6 remain in slots 0..7 with holes at 0 and 3: two moves fill them.
    expect(seen).toEqual([...Array.from({ length: 8 }, (_, i) => `scan ${i + 1}/8`), "move 1/2", "move 2/2"]);
  });

  it("compact cuts bytes past the last slot", async () => {
    const { file, img } = await memImage();
    await img.write(0, pattern(0, 64 * KiB));
    await img.close();
    const end = file.size;
    file.write(end, new Uint8Array(3000).fill(7));
    const { img: again } = await reopen(file);
    await again.compact();
    expect(file.size).toBe(end);
    expect(onDisk(file).h.blocksAllocated).toBe(1);
  });
});

describe("VDI image: resize", () => {
  it("grows in place when the map has room", async () => {
    const { file, img } = await memImage({ size: 4 * MiB, blockSize: MiB });
    await img.write(MiB, pattern(MiB, MiB));
    await img.resize(100 * MiB);
    const { h } = onDisk(file);
    expect([h.diskSize, h.blockCount, h.blockMapOffset, h.dataOffset]).toEqual([100 * MiB, 100, MiB, 2 * MiB]);
    const { img: again } = await reopen(file);
    const back = new Uint8Array(MiB);
    await again.read(MiB, back);
    expect(firstDiff(back, pattern(MiB, MiB))).toBe(-1);
    await again.write(99 * MiB, pattern(0, 4096));
  });

  for (const full of [false, true]) {
    it(`moves the map and the first data blocks when the map must grow (${full ? "every block allocated" : "spare blocks"})`, async () => {
      // 512-byte alignment: map at 0x200 right after the header, data behind it (as qemu makes them).
      const { file, img } = await memImage({ size: 1 * MiB, blockSize: 64 * KiB, dataAlign: 512 });
      const blocks = full ? 16 : 5;
      for (let b = 0; b < blocks; b++) await img.write(b * 64 * KiB, pattern(b * 64 * KiB, 64 * KiB, 3));
      const h0 = onDisk(file).h;
      expect([h0.blockMapOffset, h0.dataOffset]).toEqual([0x200, 0x400]);
      const before = await readAll(img);
      const seen: string[] = [];
      await img.resize(40 * MiB, { onProgress: (done, total, phase) => seen.push(`${phase} ${done}/${total}`) }); // 640 entries: 2560 bytes of map, more than the 512 there are
      expect(seen).toEqual(["move 0/1", "move 1/1"]); // one block's place becomes the new map
      const { h, map } = onDisk(file);
      expect(h.blockCount).toBe(640);
      expect(h.blockMapOffset).toBe(0x400);
      expect(h.dataOffset).toBe(0x400 + 64 * KiB);
      expect(h.blocksAllocated).toBe(blocks);
      expect(map.filter(isAllocated).length).toBe(blocks);
      const { img: again } = await reopen(file);
      const after = await readAll(again);
      expect(firstDiff(after.subarray(0, MiB), before)).toBe(-1);
      expect(allZero(after.subarray(MiB))).toBe(true);
      await again.write(39 * MiB, pattern(39 * MiB, 64 * KiB));
      const tail = new Uint8Array(64 * KiB);
      await again.read(39 * MiB, tail);
      expect(firstDiff(tail, pattern(39 * MiB, 64 * KiB))).toBe(-1);
    });
  }

  it("refuses to shrink and to resize fixed images", async () => {
    const { img } = await memImage();
    await expectKind(img.resize(4 * MiB), "unsupported");
    const fixed = await memImage({ variant: "fixed" });
    await expectKind(fixed.img.resize(16 * MiB), "unsupported");
  });
});

describe("VDI image: model check", () => {
  type Op =
    | { op: "write"; sector: number; count: number; tag: number }
    | { op: "zeros"; sector: number; count: number }
    | { op: "discard"; sector: number; count: number }
    | { op: "compact" }
    | { op: "reopen" }
    | { op: "grow"; mib: number };
  const range = { sector: fc.nat(4095), count: fc.integer({ min: 1, max: 400 }) };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant("write" as const), ...range, tag: fc.integer({ min: 1, max: 250 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("zeros" as const), ...range }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("discard" as const), ...range }) },
    { weight: 1, arbitrary: fc.constant({ op: "compact" as const }) },
    { weight: 1, arbitrary: fc.constant({ op: "reopen" as const }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("grow" as const), mib: fc.integer({ min: 1, max: 24 }) }) },
  );

  it("reads back what a plain byte array would hold, and stays consistent on disk", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 25 }), fc.boolean(), async (ops, diffImage) => {
        const bs = 64 * KiB;
        const parent = diffImage ? { uuid: "11111111-2222-4333-8444-555555555555", modifyUuid: "66666666-7777-4888-8999-aaaaaaaaaaaa" } : undefined;
        let { file, img } = await memImage({ size: 2 * MiB, blockSize: bs, dataAlign: 512, parent });
        let model = new Uint8Array(img.size);
        for (const o of ops) {
          const sectors = img.size / 512;
          if (o.op === "write" || o.op === "zeros" || o.op === "discard") {
            const sector = o.sector % sectors;
            const count = Math.min(o.count, sectors - sector);
            const at = sector * 512;
            const len = count * 512;
            if (o.op === "discard") {
              await img.discard(at, len);
              const end = at + len;
              const first = Math.ceil(at / bs);
              const last = end === img.size ? Math.ceil(end / bs) : Math.floor(end / bs);
              for (let b = first; b < last; b++) model.fill(0, b * bs, Math.min((b + 1) * bs, img.size));
            } else {
              const data = o.op === "write" ? pattern(at, len, o.tag) : new Uint8Array(len);
              await img.write(at, data);
              model.set(data, at);
            }
          } else if (o.op === "compact") {
            await img.compact();
          } else if (o.op === "reopen") {
            await img.close();
            img = (await reopen(file)).img;
          } else {
            const size = img.size + o.mib * MiB;
            await img.resize(size);
            const grown = new Uint8Array(size);
            grown.set(model);
            model = grown;
          }
        }
        expect(firstDiff(await readAll(img), model)).toBe(-1);
        await img.close();
        const { h, map } = onDisk(file); // validates the map against the file
        expect(map.filter(isAllocated).length).toBe(h.blocksAllocated); // what qemu-img check counts
        const again = await reopen(file, true);
        expect(firstDiff(await readAll(again.img), model)).toBe(-1);
      }),
      { numRuns: 100 },
    );
  });
});

describe("VDI image: ordering", () => {
  it("a read submitted after a write into an unallocated block sees the write, though the allocation is held", async () => {
    const { io, img } = await memImage();
    await img.write(0, pattern(0, 512)); // session started
    io.hold(["write"]);
    const w = img.write(3 * 64 * KiB + 512, pattern(0, 1024, 8));
    const back = new Uint8Array(2048);
    const r = img.read(3 * 64 * KiB, back);
    await io.whenHeld(1);
    await drain(io, Promise.all([w, r]));
    expect(firstDiff(back.subarray(512, 1536), pattern(0, 1024, 8))).toBe(-1);
  });
});
