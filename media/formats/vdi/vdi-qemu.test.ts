/**
 * Interop with qemu-img / qemu-io (Debian qemu-utils 7.2) on real files: images we make pass
 * `qemu-img check` and read back identically through qemu; images qemu makes open and read
 * correctly here, and stay valid for qemu after we write and resize them.
 */
import { describe, expect, it } from "vitest";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuCheckClean, expectQemuSees as qemuSees, hasQemu, qemu, qemuInfo, qemuIo, qemuRaw, tempFiles } from "../../testing/qemu.js";
import { allZero, firstDiff, pattern } from "./test-support.js";
import { createVdi, openVdi, type VdiImage } from "./vdi-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-vdi-");
const expectCheckPasses = (p: string) => expectQemuCheckClean(p, "vdi");
const info = (p: string) => qemuInfo(p, "vdi");
/** qemu-img compare against a sparse raw file of `size` bytes holding `pieces`, zeros elsewhere. */
const expectQemuSees = (p: string, size: number, pieces: [number, Uint8Array][]) => qemuSees(p, "vdi", { size, pieces });

async function readAll(img: VdiImage): Promise<Uint8Array> {
  const out = new Uint8Array(img.size);
  await img.read(0, out);
  return out;
}

/** Writes of every shape: whole blocks, partial blocks, across a block boundary, zeros. */
async function writeSome(img: VdiImage, model: Uint8Array): Promise<void> {
  const writes: [number, Uint8Array][] = [
    [0, pattern(0, MiB, 1)],
    [5 * MiB + 512, pattern(5 * MiB + 512, 3072, 2)],
    [9 * MiB - 4096, pattern(9 * MiB - 4096, 8192, 3)],
    [20 * MiB, new Uint8Array(MiB)],
    [img.size - 512, pattern(0, 512, 4)],
  ];
  await Promise.all(writes.map(([at, data]) => img.write(at, data)));
  for (const [at, data] of writes) model.set(data, at);
}

describe.skipIf(!hasQemu)("VDI interop with qemu-img", () => {
  for (const variant of ["dynamic", "fixed"] as const) {
    it(`a ${variant} image we create passes qemu-img check and reads back identically through qemu`, async () => {
      const p = file(`ours-${variant}.vdi`);
      const img = await createVdi(opener, p, { size: 64 * MiB, variant });
      const model = new Uint8Array(img.size);
      await writeSome(img, model);
      await img.close();
      expectCheckPasses(p);
      const i = info(p);
      expect(i.format).toBe("vdi");
      expect(i["virtual-size"]).toBe(64 * MiB);
      expect(firstDiff(qemuRaw(p, "vdi"), model)).toBe(-1);
      expectQemuSees(p, model.length, [[0, model]]);
    });
  }

  it("stays valid for qemu after discard, compact and resize", async () => {
    const p = file("ours-maint.vdi");
    const img = await createVdi(opener, p, { size: 32 * MiB });
    const model = new Uint8Array(img.size);
    await writeSome(img, model);
    await img.write(12 * MiB, pattern(12 * MiB, 2 * MiB, 5));
    model.set(pattern(12 * MiB, 2 * MiB, 5), 12 * MiB);
    await img.discard(0, MiB); // the first block goes, the last one moves into its place
    model.fill(0, 0, MiB);
    await img.write(12 * MiB, new Uint8Array(MiB)); // zeros in place: compact drops the block
    model.fill(0, 12 * MiB, 13 * MiB);
    await img.compact();
    await img.resize(3000 * MiB); // past what the 1 MiB map area holds: the map moves
    await img.close();
    expectCheckPasses(p);
    expect(info(p)["virtual-size"]).toBe(3000 * MiB);
    expectQemuSees(p, 3000 * MiB, [[0, model]]);
  });

  for (const stat of [false, true]) {
    it(`opens and reads an image qemu made${stat ? " (static)" : ""} and written by qemu-io, then writes it qemu-compatibly`, async () => {
      const p = file(`qemu${stat ? "-static" : ""}.vdi`);
      qemu("qemu-img", "create", "-f", "vdi", ...(stat ? ["-o", "static=on"] : []), p, "64M");
      qemuIo(p, "vdi", "write -P 0xab 1M 64k", "write -P 0xcd 10M 4k");
      const ro = await openVdi(opener, p, { readOnly: true });
      expect(ro.header.headerSize).toBe(0x180);
      expect(ro.header.blockMapOffset).toBe(0x200);
      const data = await readAll(ro);
      await ro.close();
      const model = new Uint8Array(64 * MiB);
      model.fill(0xab, MiB, MiB + 64 * 1024);
      model.fill(0xcd, 10 * MiB, 10 * MiB + 4096);
      expect(firstDiff(data, model)).toBe(-1);
      expect(allZero(data.subarray(0, MiB))).toBe(true);

      const rw = await openVdi(opener, p);
      await writeSome(rw, model);
      await rw.close();
      expectCheckPasses(p);
      expectQemuSees(p, model.length, [[0, model]]);
    });
  }

  for (const size of ["100M", "1G"]) {
    it(`resizes an image qemu made to ${size} (map ${size === "1G" ? "moved into the data area" : "grown in place"}) and qemu-img check passes`, async () => {
      const p = file(`qemu-resize-${size}.vdi`);
      qemu("qemu-img", "create", "-f", "vdi", p, "64M");
      qemuIo(p, "vdi", "write -P 0x11 0 1M", "write -P 0x22 3M 64k", "write -P 0x33 63M 1M");
      const img = await openVdi(opener, p);
      const newSize = size === "1G" ? 1024 * MiB : 100 * MiB;
      await img.resize(newSize);
      const mapAt = img.header.blockMapOffset;
      await img.write(newSize - MiB, pattern(0, MiB, 6));
      await img.close();
      expect(mapAt).toBe(size === "1G" ? 0x400 : 0x200);
      expectCheckPasses(p);
      expect(info(p)["virtual-size"]).toBe(newSize);
      const first = new Uint8Array(64 * MiB);
      first.fill(0x11, 0, MiB);
      first.fill(0x22, 3 * MiB, 3 * MiB + 64 * 1024);
      first.fill(0x33, 63 * MiB, 64 * MiB);
      expectQemuSees(p, newSize, [
        [0, first],
        [newSize - MiB, pattern(0, MiB, 6)],
      ]);
    });
  }
});
