/**
 * Damaged and hostile VMDK files: every refusal has a typed kind, and a refused open (even
 * read-write) writes nothing. Also the session bookkeeping on a good file: unclean flag while
 * written, cleared on close, a new CID per session and none without writes.
 */
import { describe, expect, it } from "vitest";
import type { MediumErrorKind } from "../../block.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { expectOpenLeavesFiles } from "../../testing/corrupt.js";
import { isVmdk } from "./vmdk-open.js";
import { createVmdk } from "./vmdk-create.js";
import { openVmdk } from "./vmdk-open.js";

const MiB = 1 << 20;

async function sparseImage(): Promise<MemoryFileOpener> {
  const opener = new MemoryFileOpener();
  const img = await createVmdk(opener, "d.vmdk", { size: 4 * MiB, newCid: () => 0x1111 });
  await img.write(0, new Uint8Array(64 * 1024).fill(7));
  await img.write(3 * MiB, new Uint8Array(512).fill(8));
  await img.close();
  return opener;
}

async function expectRefused(o: MemoryFileOpener, path: string, kind: MediumErrorKind): Promise<void> {
  await expectOpenLeavesFiles(o, (files) => openVmdk(files, path), kind);
}

function poke(o: MemoryFileOpener, path: string, at: number, bytes: number[] | Uint8Array): void {
  o.file(path).write(at, Uint8Array.from(bytes));
}

function u32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
}

const HEADER = { capacity: 12, gdOffset: 56, rgdOffset: 48, grainSize: 20 };

describe("VMDK corrupt input", () => {
  it("refuses a bad signature as invalid-format", async () => {
    const o = await sparseImage();
    poke(o, "d.vmdk", 0, [0x58, 0x58, 0x58, 0x58]);
    await expectRefused(o, "d.vmdk", "invalid-format");
    expect(isVmdk(o.file("d.vmdk").bytes().subarray(0, 512))).toBe(false);
  });

  it("refuses an unknown version as unsupported, and a bad newline check as corrupt", async () => {
    const o = await sparseImage();
    poke(o, "d.vmdk", 4, u32(7));
    await expectRefused(o, "d.vmdk", "unsupported");
    const p = await sparseImage();
    poke(p, "d.vmdk", 73, [0x0a, 0x20, 0x0a, 0x0a]);
    await expectRefused(p, "d.vmdk", "corrupt");
  });

  it("refuses a truncated file", async () => {
    const o = await sparseImage();
    const f = o.file("d.vmdk");
    f.size = 20 * 512; // inside the descriptor area
    await expectRefused(o, "d.vmdk", "corrupt");
  });

  it("refuses a grain directory past the end of the file", async () => {
    const o = await sparseImage();
    poke(o, "d.vmdk", HEADER.gdOffset, [...u32(0x100000), 0, 0, 0, 0]);
    await expectRefused(o, "d.vmdk", "corrupt");
  });

  it("refuses a grain table entry pointing outside the file, or into the metadata, or at another grain", async () => {
    for (const value of [0x7fffffff, 5, -1]) {
      const o = await sparseImage();
      const bytes = o.file("d.vmdk").bytes();
      const dv = new DataView(bytes.buffer);
      const gdOffset = dv.getUint32(HEADER.gdOffset, true);
      const gt0 = dv.getUint32(gdOffset * 512, true);
      const first = dv.getUint32(gt0 * 512, true);
      // -1: grain 1 points at grain 0's data (two grains overlap).
      poke(o, "d.vmdk", gt0 * 512 + 4, u32(value === -1 ? first : value));
      await expectRefused(o, "d.vmdk", "corrupt");
    }
  });

  it("refuses a descriptor whose size disagrees with the sparse header, and absurd capacities", async () => {
    const o = await sparseImage();
    poke(o, "d.vmdk", HEADER.capacity, [0, 0x10, 0, 0]); // 2 MiB of sectors in the header, 4 MiB in the descriptor
    await expectRefused(o, "d.vmdk", "corrupt");
    const p = await sparseImage();
    poke(p, "d.vmdk", HEADER.capacity, [0, 0, 0, 0, 0, 0, 0, 0x40]);
    await expectRefused(p, "d.vmdk", "corrupt");
    const q = await sparseImage();
    poke(q, "d.vmdk", HEADER.grainSize, u32(100)); // not a power of two
    await expectRefused(q, "d.vmdk", "corrupt");
  });

  it("refuses a flat extent shorter than its descriptor says, a missing extent file, and text that is no descriptor", async () => {
    const o = new MemoryFileOpener();
    const img = await createVmdk(o, "f.vmdk", { size: 2 * MiB, variant: "monolithicFlat" });
    await img.close();
    o.file("f-flat.vmdk").size = MiB;
    await expectRefused(o, "f.vmdk", "corrupt");
    await o.remove("f-flat.vmdk");
    await expectRefused(o, "f.vmdk", "not-found");
    const g = await o.open("g.vmdk", { create: true });
    await g.write(0, new TextEncoder().encode("hello, world\n"));
    await expectRefused(o, "g.vmdk", "invalid-format");
    const h = await o.open("h.vmdk", { create: true });
    await h.write(0, new TextEncoder().encode('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 99999999999999 FLAT "x" 0\n'));
    await expectRefused(o, "h.vmdk", "corrupt");
  });

  it("sets the unclean flag while written, clears it on close, and changes the CID once per session", async () => {
    const o = new MemoryFileOpener();
    let next = 0x100;
    const img = await createVmdk(o, "s.vmdk", { size: 2 * MiB, newCid: () => next++ });
    const created = img.cid;
    expect(o.file("s.vmdk").bytes()[72]).toBe(0);
    await img.write(0, new Uint8Array(512).fill(1));
    expect(o.file("s.vmdk").bytes()[72]).toBe(1);
    const first = img.cid;
    expect(first).not.toBe(created);
    await img.write(512, new Uint8Array(512).fill(2));
    expect(img.cid).toBe(first);
    await img.close();
    expect(o.file("s.vmdk").bytes()[72]).toBe(0);
    const again = await openVmdk(o, "s.vmdk", { newCid: () => next++ });
    expect(again.cid).toBe(first);
    const untouched = o.file("s.vmdk").bytes();
    await again.close(); // no writes: nothing changes
    expect(Buffer.compare(o.file("s.vmdk").bytes(), untouched)).toBe(0);
  });
});
