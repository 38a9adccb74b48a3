/**
 * Interop with qemu-img / qemu-io 7.2: images we make pass `qemu-img check` and compare equal to
 * what we wrote; images qemu makes (and writes across cluster boundaries) read byte for byte here.
 */
import { describe, expect, it } from "vitest";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuCheckClean, expectQemuSees as qemuSees, hasQemu, qemu, qemuIo, qemuTool, tempFiles } from "../../testing/qemu.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { createParallels, openParallels, type ParallelsCreateOptions, type ParallelsImage } from "./parallels-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-hdd-");
const expectQemuSees = (p: string, model: Uint8Array) => qemuSees(p, "parallels", model);

async function readAll(img: ParallelsImage): Promise<Uint8Array> {
  const out = new Uint8Array(img.size);
  await img.read(0, out);
  return out;
}

async function writeSome(img: ParallelsImage, model: Uint8Array): Promise<void> {
  const cs = img.clusterSize;
  const writes: [number, Uint8Array][] = [
    [0, pattern(0, MiB, 1)],
    [5 * MiB + 512, pattern(5 * MiB + 512, 3072, 2)],
    [3 * cs - 4096, pattern(3 * cs - 4096, 8192, 3)],
    [9 * cs - 512, pattern(9 * cs - 512, 2 * cs + 1024, 4)],
    [img.size - 512, pattern(0, 512, 5)],
  ];
  await Promise.all(writes.map(([at, data]) => img.write(at, data)));
  for (const [at, data] of writes) model.set(data, at);
}

describe.skipIf(!hasQemu)("Parallels interop with qemu-img", () => {
  const shapes: [string, Omit<ParallelsCreateOptions, "size">][] = [
    ["dynamic, legacy form", {}],
    ["dynamic, ext form, 64 KiB clusters", { form: "ext", clusterSize: 64 * 1024 }],
    ["dynamic, 63-sector clusters", { clusterSize: 63 * 512 }],
    ["fixed", { variant: "fixed" }],
  ];
  for (const [label, options] of shapes) {
    it(`a ${label} image we create passes qemu-img check and compares equal`, async () => {
      const p = file(`ours-${label.replace(/\W+/g, "-")}.hdd`);
      const img = await createParallels(opener, p, { size: 32 * MiB, ...options });
      const model = new Uint8Array(img.size);
      await writeSome(img, model);
      await img.close();
      expectQemuCheckClean(p, "parallels");
      expectQemuSees(p, model);
      // And it reopens here with the same content.
      const again = await openParallels(opener, p, { readOnly: true });
      expect(firstDiff(await readAll(again), model)).toBe(-1);
      await again.close();
    });
  }

  for (const cluster of ["1M", "4k"]) {
    it(`reads an image qemu made (${cluster} clusters) and wrote across cluster boundaries, then writes it qemu-compatibly`, async () => {
      const p = file(`qemu-${cluster}.hdd`);
      qemu("qemu-img", "create", "-f", "parallels", "-o", `cluster_size=${cluster}`, p, "16M");
      qemuIo(p, "parallels", "write -P 0xab 1020k 8k", "write -P 0xcd 5M 3k", "write -P 0x5a 16380k 4k");
      const model = new Uint8Array(16 * MiB);
      model.fill(0xab, 1020 * 1024, 1028 * 1024);
      model.fill(0xcd, 5 * MiB, 5 * MiB + 3072);
      model.fill(0x5a, 16380 * 1024, 16 * MiB);
      const ro = await openParallels(opener, p, { readOnly: true });
      expect(ro.header.form).toBe("ext");
      expect(firstDiff(await readAll(ro), model)).toBe(-1);
      await ro.close();
      const rw = await openParallels(opener, p);
      await writeSome(rw, model);
      await rw.close();
      expect(qemuTool("qemu-img", "check", "-f", "parallels", p).out).toMatch(/No errors were found on the image/);
      expectQemuSees(p, model);
    });
  }

  it("lets qemu-io write a legacy-form image with 63-sector clusters we made, and reads it back", async () => {
    // qemu writes only the ext form; a legacy image is made by us, filled by qemu-io, read back.
    const p = file("legacy-qemu-written.hdd");
    const img = await createParallels(opener, p, { size: 8 * MiB, clusterSize: 63 * 512 });
    await img.close();
    qemuIo(p, "parallels", "write -P 0x77 30k 70k", "write -P 0x78 8000k 192k");
    const model = new Uint8Array(8 * MiB);
    model.fill(0x77, 30 * 1024, 100 * 1024);
    model.fill(0x78, 8000 * 1024, 8192 * 1024);
    const ro = await openParallels(opener, p, { readOnly: true });
    expect(firstDiff(await readAll(ro), model)).toBe(-1);
    await ro.close();
  });
});
