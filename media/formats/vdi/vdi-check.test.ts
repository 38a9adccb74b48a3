/**
 * The VDI checker: corruption (whatever an open refuses) apart from leaked space (slots no block
 * uses, bytes past the last slot, a header counting too many slots), on memory files; it never
 * writes; compact gives the leaks back. Then the same files through `qemu-img check`: where the
 * two verdicts agree, and the two places where they knowingly differ.
 */
import * as fs from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { hasQemu, qemuTool, tempFiles } from "../../testing/qemu.js";
import { BLOCK_FREE } from "./block-map.js";
import { HEADER_READ_SIZE, parseHeader, type VdiHeader } from "./header.js";
import { firstDiff, pattern, uuidCounter } from "./test-support.js";
import { checkVdi, type VdiCheckReport } from "./vdi-check.js";
import { VdiImage } from "./vdi-image.js";

const MiB = 1 << 20;
const NAME = "/check.vdi";

/** A 16 MiB dynamic image with data in blocks 0, 2, 4, 6 (slots 0..3), 1 MiB blocks as qemu needs. */
async function goodImage(options: { variant?: "dynamic" | "fixed"; blocks?: number[] } = {}): Promise<MemoryFile> {
  const f = new MemoryFile();
  const img = await VdiImage.create(new MemoryFileIo(f, NAME), { size: 16 * MiB, variant: options.variant, newUuid: uuidCounter(3) });
  for (const b of options.blocks ?? [0, 2, 4, 6]) await img.write(b * MiB, pattern(b * MiB, MiB, b + 1));
  await img.close();
  return f;
}

function headerOf(f: MemoryFile): VdiHeader {
  const head = new Uint8Array(HEADER_READ_SIZE);
  f.read(0, head);
  return parseHeader(head);
}

function poke32(f: MemoryFile, at: number, value: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value >>> 0, true);
  f.write(at, b);
}

const mapEntry = (f: MemoryFile, block: number): number => headerOf(f).blockMapOffset + 4 * block;
const junk = (n: number): Uint8Array => new Uint8Array(n).fill(0x5a);

/** Check through a read-only handle that counts requests; fails if anything but reading happened. */
async function check(f: MemoryFile): Promise<VdiCheckReport> {
  const before = f.bytes();
  const io = new HeldFileIo(new MemoryFileIo(f, NAME, true));
  const r = await checkVdi(io);
  expect(io.counts.write + io.counts.truncate + io.counts.flush + io.counts.punchHole).toBe(0);
  expect(firstDiff(f.bytes(), before)).toBe(-1);
  return r;
}

interface Case {
  name: string;
  damage: (f: MemoryFile) => void;
  /** Our verdict. */
  verdict: "clean" | "leaky" | "corrupt";
  /** Exit status of `qemu-img check` (7.2) on the same file: 0 clean, 1 cannot open, 2 corrupt. */
  qemu: 0 | 1 | 2;
  /** Why qemu's clean/corrupt verdict differs from ours, where it does. */
  differs?: string;
}

const SLOT = MiB;
const cases: Case[] = [
  { name: "an intact image", damage: () => {}, verdict: "clean", qemu: 0 },
  { name: "junk appended past the last slot", damage: (f) => f.write(f.size, junk(4096)), verdict: "leaky", qemu: 0 },
  {
    name: "blocksAllocated raised by 2 in the header",
    damage: (f) => poke32(f, 0x184, 6),
    verdict: "leaky",
    qemu: 2,
    differs: "qemu counts any blocks-allocated mismatch as a corruption; VirtualBox's vdiRepair does not flag it, nothing is lost",
  },
  {
    name: "the map entry of a middle slot removed",
    damage: (f) => poke32(f, mapEntry(f, 2), BLOCK_FREE),
    verdict: "leaky",
    qemu: 2,
    differs: "the same blocks-allocated mismatch",
  },
  {
    name: "the map entry of the last slot removed",
    damage: (f) => poke32(f, mapEntry(f, 6), BLOCK_FREE),
    verdict: "leaky",
    qemu: 2,
    differs: "the same blocks-allocated mismatch",
  },
  { name: "a flipped signature byte", damage: (f) => poke32(f, 0x40, 0xbeda10ff), verdict: "corrupt", qemu: 1 },
  { name: "a map entry beyond blocksAllocated", damage: (f) => poke32(f, mapEntry(f, 8), 9), verdict: "corrupt", qemu: 2 },
  {
    name: "a map entry below blocksAllocated whose slot is past the end of the file",
    damage: (f) => {
      poke32(f, 0x184, 5);
      poke32(f, mapEntry(f, 8), 4);
    },
    verdict: "corrupt",
    qemu: 0,
    differs: "qemu's check never compares slots with the file size (VirtualBox's vdiRepair does, and clears such entries)",
  },
  { name: "two map entries sharing a slot", damage: (f) => poke32(f, mapEntry(f, 1), 0), verdict: "corrupt", qemu: 2 },
];

const verdict = (r: VdiCheckReport): Case["verdict"] => (r.corruption ? "corrupt" : r.leaks.length ? "leaky" : "clean");

describe("checkVdi", () => {
  it("finds nothing in intact dynamic, fixed and empty images", async () => {
    for (const f of [await goodImage(), await goodImage({ variant: "fixed" }), await goodImage({ blocks: [] })]) {
      const r = await check(f);
      expect(r.corruption).toBeNull();
      expect(r.leaks).toEqual([]);
      expect(r.leakedBytes).toBe(0);
      expect(r.image!.expectedFileSize).toBe(r.fileSize);
    }
    const r = await check(await goodImage());
    expect(r.image).toMatchObject({ variant: "normal", size: 16 * MiB, blockCount: 16, dataBlocks: 4, zeroBlocks: 0, freeBlocks: 12, blocksAllocated: 4 });
  });

  for (const c of cases) {
    it(`${c.name}: ${c.verdict}`, async () => {
      const f = await goodImage();
      c.damage(f);
      expect(verdict(await check(f))).toBe(c.verdict);
    });
  }

  it("counts bytes past the end", async () => {
    const f = await goodImage();
    const end = f.size;
    f.write(end, junk(12345));
    const r = await check(f);
    expect(r.leaks).toMatchObject([{ kind: "bytes-past-end", bytes: 12345, offset: end }]);
    expect(r.leakedBytes).toBe(12345);
    expect(r.leaks[0]!.message).toContain("12345 bytes past the last data slot");
  });

  it("counts a header's extra slots, in the file or not", async () => {
    const f = await goodImage();
    poke32(f, 0x184, 6);
    let r = await check(f);
    expect(r.leaks).toMatchObject([{ kind: "unused-slots-at-end", slots: 2, bytes: 2 * SLOT }]);
    expect(r.leaks[0]!.message).toMatch(/counts 6 data slots but the last one in use is slot 3.*0 of them in the file/);
    // The same slots present in the file: still one leak of two slots, no bytes past the end.
    f.write(f.size, junk(2 * SLOT));
    r = await check(f);
    expect(r.leaks).toMatchObject([{ kind: "unused-slots-at-end", slots: 2, bytes: 2 * SLOT }]);
    expect(r.leakedBytes).toBe(2 * SLOT);
  });

  it("names unreferenced slots in the middle and counts each leaked byte once", async () => {
    const f = await goodImage({ blocks: [0, 1, 2, 3, 4, 5] });
    poke32(f, mapEntry(f, 1), BLOCK_FREE); // slot 1
    poke32(f, mapEntry(f, 3), BLOCK_FREE); // slot 3
    poke32(f, mapEntry(f, 5), BLOCK_FREE); // slot 5, the last: blocksAllocated 6 is now one too many
    f.write(f.size, junk(512));
    const r = await check(f);
    expect(r.corruption).toBeNull();
    expect(r.leaks).toMatchObject([
      { kind: "unreferenced-slots", slots: 2, bytes: 2 * SLOT },
      { kind: "unused-slots-at-end", slots: 1, bytes: SLOT },
      { kind: "bytes-past-end", bytes: 512 },
    ]);
    expect(r.leaks[0]!.message).toContain("slots 1, 3");
    expect(r.leakedBytes).toBe(3 * SLOT + 512);
    expect(r.leakedBytes).toBe(r.fileSize - (headerOf(f).dataOffset + 3 * SLOT));
  });

  it("reports what the open refuses, with the open's kind and message", async () => {
    const f = await goodImage();
    poke32(f, 0x40, 0xbeda10ff);
    let r = await check(f);
    expect(r.image).toBeNull();
    expect(r.corruption).toMatchObject({ kind: "invalid-format", offset: 0x40 });
    expect(r.corruption!.message).toBe(`${NAME}: not a VDI image: signature 0xbeda10ff is not 0xbeda107f`);

    const g = await goodImage();
    poke32(g, 0x184, 5);
    poke32(g, mapEntry(g, 8), 4);
    r = await check(g);
    expect(r.corruption).toMatchObject({ kind: "corrupt" });
    expect(r.corruption!.message).toMatch(/entry 8 is 4, whose data ends at \d+, past the end of the file/);
  });

  it("agrees with the open on arbitrary damage, and never writes", async () => {
    const source = await goodImage();
    const original = source.bytes();
    const metaEnd = headerOf(source).dataOffset;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(metaEnd - 1), fc.nat(255)), { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(original.length + 3 * SLOT), { nil: undefined }),
        async (flips, cut) => {
          const bytes = original.slice();
          for (const [at, v] of flips) bytes[at] = v;
          const f = new MemoryFile();
          f.write(0, bytes);
          if (cut !== undefined) f.truncate(cut);
          const r = await check(f);
          const opened = await VdiImage.open(new MemoryFileIo(f, NAME, true), { readOnly: true }).then(
            async (img) => (await img.close(), null),
            (e: Error) => e.message,
          );
          expect(r.corruption?.message ?? null).toBe(opened);
          if (r.image) expect(r.leakedBytes).toBe(r.leaks.reduce((n, l) => n + l.bytes, 0));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("compact gives every kind of leak back", async () => {
    const f = await goodImage({ blocks: [0, 1, 2, 3, 4, 5] });
    poke32(f, mapEntry(f, 1), BLOCK_FREE);
    poke32(f, mapEntry(f, 5), BLOCK_FREE);
    f.write(f.size, junk(4096));
    expect((await check(f)).leaks.map((l) => l.kind)).toEqual(["unreferenced-slots", "unused-slots-at-end", "bytes-past-end"]);
    const img = await VdiImage.open(new MemoryFileIo(f, NAME), { newUuid: uuidCounter(4) });
    const before = new Uint8Array(img.size);
    await img.read(0, before);
    await img.compact();
    await img.close();
    const r = await check(f);
    expect(r.leaks).toEqual([]);
    expect(r.fileSize).toBe(headerOf(f).dataOffset + 4 * SLOT);
    const again = await VdiImage.open(new MemoryFileIo(f, NAME, true), { readOnly: true });
    const after = new Uint8Array(again.size);
    await again.read(0, after);
    await again.close();
    expect(firstDiff(after, before)).toBe(-1);
  });
});

describe.skipIf(!hasQemu)("checkVdi beside qemu-img check", () => {
  const file = tempFiles("vstor-vdi-check-");
  const onDisk = (f: MemoryFile, name: string): string => {
    const p = file(name);
    fs.writeFileSync(p, f.bytes());
    return p;
  };
  const qemuCheck = (p: string) => qemuTool("qemu-img", "check", "-f", "vdi", p);

  for (const [i, c] of cases.entries()) {
    it(`${c.name}: we say ${c.verdict}, qemu-img check exits ${c.qemu}${c.differs ? " (differs knowingly)" : ""}`, async () => {
      const f = await goodImage();
      c.damage(f);
      const ours = verdict(await check(f));
      const q = qemuCheck(onDisk(f, `case-${i}.vdi`));
      expect(q.status, q.out).toBe(c.qemu);
      const weSayCorrupt = ours === "corrupt";
      const qemuSaysCorrupt = c.qemu !== 0;
      if (c.differs) expect(weSayCorrupt).not.toBe(qemuSaysCorrupt);
      else expect(weSayCorrupt).toBe(qemuSaysCorrupt);
    });
  }

  it("qemu reads our leaky images as we do, and after our compact qemu-img check passes", async () => {
    for (const [i, c] of cases.filter((x) => x.verdict === "leaky").entries()) {
      const f = await goodImage();
      c.damage(f);
      const p = onDisk(f, `leaky-${i}.vdi`);
      const img = await VdiImage.open(new MemoryFileIo(f, NAME), { newUuid: uuidCounter(6) });
      const ours = new Uint8Array(img.size);
      await img.read(0, ours);
      const raw = `${p}.raw`;
      expect(qemuTool("qemu-img", "convert", "-f", "vdi", "-O", "raw", p, raw).status).toBe(0);
      expect(firstDiff(new Uint8Array(fs.readFileSync(raw)), ours)).toBe(-1);
      await img.compact();
      await img.close();
      expect((await check(f)).leaks).toEqual([]);
      const q = qemuCheck(onDisk(f, `compacted-${i}.vdi`));
      expect(q.status, `${c.name}: ${q.out}`).toBe(0);
    }
  });
});
