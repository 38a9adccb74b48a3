/**
 * Interop with qemu-img / qemu-io 7.2 on real files. `qemu-img check` does not support VHD (exit
 * 63), so agreement is shown with `qemu-img compare` and `qemu-img convert -O raw`. We write
 * creator "vbox", whose size qemu takes from the CHS geometry unless told
 * `force_size_calc=current_size`: the tests pass it (and pin the CHS size qemu sees without it).
 */
import { describe, expect, it } from "vitest";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuSees as qemuSees, hasQemu, qemu, qemuInfo, qemuIo, qemuRaw as qemuRawAs, qemuTool, tempFiles, type QemuFormat } from "../../testing/qemu.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { chsGeometry } from "./footer.js";
import { createVhd, openVhd, type VhdImage } from "./vhd-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-vhd-");
/** The image as qemu should see it: its footer's current size, whatever the creator. */
const vpc: QemuFormat = { imageOpts: (p) => `driver=vpc,force_size_calc=current_size,file.filename=${p}` };
const qemuSize = (p: string, force: boolean): number => qemuInfo(p, force ? vpc : "vpc")["virtual-size"];
/** The disk as qemu reads it. */
const qemuRaw = (p: string) => qemuRawAs(p, vpc);
/** qemu-img compare against `model` written as a raw file. */
const expectQemuSees = (p: string, model: Uint8Array) => qemuSees(p, vpc, model);

async function readAll(img: VhdImage): Promise<Uint8Array> {
  const out = new Uint8Array(img.size);
  await img.read(0, out);
  return out;
}

/** Writes of every shape: a whole block, partial blocks, across 2 MiB boundaries, zeros, the last sector. */
async function writeSome(img: VhdImage, model: Uint8Array): Promise<void> {
  const writes: [number, Uint8Array][] = [
    [0, pattern(0, 2 * MiB, 1)],
    [5 * MiB + 512, pattern(5 * MiB + 512, 3072, 2)],
    [8 * MiB - 4096, pattern(8 * MiB - 4096, 8192, 3)],
    [20 * MiB, new Uint8Array(MiB)],
    [30 * MiB - 512, pattern(30 * MiB - 512, 3 * MiB, 5)],
    [img.size - 512, pattern(0, 512, 4)],
  ];
  await Promise.all(writes.map(([at, data]) => img.write(at, data)));
  for (const [at, data] of writes) model.set(data, at);
}

describe.skipIf(!hasQemu)("VHD interop with qemu-img", () => {
  for (const variant of ["dynamic", "fixed"] as const) {
    it(`a ${variant} image we create reads back identically through qemu (compare and convert)`, async () => {
      const p = file(`ours-${variant}.vhd`);
      const img = await createVhd(opener, p, { size: 64 * MiB, variant });
      const model = new Uint8Array(img.size);
      await writeSome(img, model);
      expect(firstDiff(await readAll(img), model)).toBe(-1);
      await img.close();
      expect(qemuSize(p, true)).toBe(64 * MiB);
      const g = chsGeometry(64 * MiB);
      expect(qemuSize(p, false)).toBe(g.cylinders * g.heads * g.sectors * 512); // creator "vbox": qemu uses CHS
      expect(firstDiff(qemuRaw(p), model)).toBe(-1);
      expectQemuSees(p, model);
      // And our reads equal what qemu-img convert -O raw makes of the image.
      const again = await openVhd(opener, p, { readOnly: true });
      expect(firstDiff(await readAll(again), qemuRaw(p))).toBe(-1);
      await again.close();
    });
  }

  it("a grown image stays readable by qemu", async () => {
    const p = file("ours-grow.vhd");
    const img = await createVhd(opener, p, { size: 32 * MiB });
    const model = new Uint8Array(200 * MiB);
    await img.write(MiB, pattern(MiB, MiB, 7));
    model.set(pattern(MiB, MiB, 7), MiB);
    await img.resize(200 * MiB);
    await img.write(199 * MiB, pattern(0, MiB, 8));
    model.set(pattern(0, MiB, 8), 199 * MiB);
    await img.close();
    expect(qemuSize(p, true)).toBe(200 * MiB);
    expectQemuSees(p, model);
  });

  it("grows an image qemu made past its block table's room (stored blocks move) and qemu reads it", async () => {
    const p = file("qemu-grow.vhd");
    qemu("qemu-img", "create", "-f", "vpc", p, "64M");
    qemuIo(p, "vpc", "write -P 0x11 0 1M", "write -P 0x22 3M 64k", "write -P 0x33 62M 2M");
    const img = await openVhd(opener, p);
    const oldSize = img.size;
    await img.resize(300 * MiB); // 150 entries: more than the 128 its BAT sector holds
    await img.write(299 * MiB, pattern(0, MiB, 6));
    await img.close();
    const model = new Uint8Array(300 * MiB);
    model.fill(0x11, 0, MiB);
    model.fill(0x22, 3 * MiB, 3 * MiB + 64 * 1024);
    model.fill(0x33, 62 * MiB, Math.min(64 * MiB, oldSize));
    model.set(pattern(0, MiB, 6), 299 * MiB);
    expect(qemuSize(p, true)).toBe(300 * MiB);
    expectQemuSees(p, model);
  });

  for (const subformat of ["dynamic", "fixed"] as const) {
    it(`reads a ${subformat} image qemu made and wrote across 2 MiB blocks byte for byte, then writes it qemu-compatibly`, async () => {
      const p = file(`qemu-${subformat}.vhd`);
      qemu("qemu-img", "create", "-f", "vpc", "-o", `subformat=${subformat}`, p, "64M");
      const writes: [number, number, number][] = [
        [0xab, MiB, 64 * 1024],
        [0xcd, 2 * MiB - 4096, 8192],
        [0xef, 6 * MiB - 512, 2 * MiB + 1024],
        [0x5a, 40 * MiB, 4096],
      ];
      qemuIo(p, "vpc", ...writes.map(([v, at, n]) => `write -P 0x${v.toString(16)} ${at} ${n}`));
      const ro = await openVhd(opener, p, { readOnly: true });
      expect(ro.footerCopy.creatorApp).toBe("qemu");
      expect(ro.size).toBe(qemuSize(p, false)); // qemu's CHS-rounded size is its current size
      const model = new Uint8Array(ro.size);
      for (const [v, at, n] of writes) model.fill(v, at, at + n);
      const data = await readAll(ro);
      await ro.close();
      expect(firstDiff(data, model)).toBe(-1);
      expect(firstDiff(data, qemuRaw(p))).toBe(-1);

      const rw = await openVhd(opener, p);
      await writeSome(rw, model);
      await rw.close();
      expectQemuSees(p, model);
      const r = qemuTool("qemu-io", "-f", "vpc", "-c", `read -P 0x5a ${40 * MiB} 4096`, p);
      expect(r.status).toBe(0);
      expect(r.out).not.toMatch(/Pattern verification failed/);
    });
  }
});
