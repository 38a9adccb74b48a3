/** checkVhd on good images, leaked space, a stale footer copy, and qemu-made images. */
import { describe, expect, it } from "vitest";
import { FaultControl, HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { hasQemu, qemu, qemuIo, tempFiles } from "../../testing/qemu.js";
import { pattern } from "../vdi/test-support.js";
import { checkVhd } from "./vhd-check.js";
import { VhdImage } from "./vhd-image.js";

const MiB = 1 << 20;
const file = tempFiles("vstor-vhd-check-");

async function image(variant: "dynamic" | "fixed" = "dynamic"): Promise<MemoryFile> {
  const f = new MemoryFile();
  const img = await VhdImage.create(new MemoryFileIo(f, "/c.vhd"), { size: 8 * MiB, variant });
  await img.write(MiB, pattern(MiB, 4096, 1));
  await img.close();
  return f;
}

describe("checkVhd", () => {
  it("finds nothing wrong in images we make, and writes nothing", async () => {
    for (const variant of ["dynamic", "fixed"] as const) {
      const f = await image(variant);
      const io = new HeldFileIo(new MemoryFileIo(f, "/c.vhd", true));
      const r = await checkVhd(io);
      expect(r.corruption).toBeNull();
      expect(r.leaks).toEqual([]);
      expect(r.warnings).toEqual([]);
      expect(r.image).toMatchObject({ variant, size: 8 * MiB, creatorApp: "vbox", storedBlocks: variant === "fixed" ? 0 : 1, partialBlocks: 0 });
      expect(io.counts.write + io.counts.truncate + io.counts.flush).toBe(0);
    }
  });

  it("reports the space an interrupted allocation leaves as leaked, and the image still opens", async () => {
    const f = await image();
    const control = new FaultControl();
    const img = await VhdImage.open(new HeldFileIo(new MemoryFileIo(f, "/c.vhd"), control));
    // Let the session footers and the moved footer through, then die before bitmap, data and BAT.
    control.dieAfter(control.counts.total + 4);
    await expect(img.write(5 * MiB, pattern(0, 4096, 2))).rejects.toMatchObject({ kind: "io" });
    await img.close().catch(() => undefined);
    const r = await checkVhd(new MemoryFileIo(f, "/c.vhd", true));
    expect(r.corruption).toBeNull();
    expect(r.leakedBytes).toBe(2 * MiB + 512);
    const again = await VhdImage.open(new MemoryFileIo(f, "/c.vhd", true));
    expect(again.blockState(2)).toBe("unallocated");
    await again.close();
  });

  it("warns when the footer copy at offset 0 differs from the footer", async () => {
    const f = await image();
    f.write(100, Uint8Array.of(0x55));
    const r = await checkVhd(new MemoryFileIo(f, "/c.vhd", true));
    expect(r.corruption).toBeNull();
    expect(r.warnings.join()).toMatch(/footer copy at offset 0/);
  });

  it.skipIf(!hasQemu)("finds nothing wrong in images qemu makes (but notes qemu's larger BAT)", async () => {
    for (const sub of ["dynamic", "fixed"]) {
      const p = file(`q-${sub}.vhd`);
      qemu("qemu-img", "create", "-f", "vpc", "-o", `subformat=${sub}`, p, "16M");
      qemuIo(p, "vpc", "write -P 0x11 1M 3M");
      const opener = new NodeFileOpener();
      const io = await opener.open(p, { readOnly: true });
      const r = await checkVhd(io);
      await io.close();
      expect(r.corruption).toBeNull();
      expect(r.leaks).toEqual([]);
      expect(r.image?.creatorApp).toBe("qemu");
      expect(r.image?.chsSize).toBe(r.image?.size);
      if (sub === "dynamic") expect(r.image?.storedBlocks).toBe(2);
    }
  });
});
