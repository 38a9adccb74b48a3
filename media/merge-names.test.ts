/**
 * A merge re-links the surviving child by name as well as by identity: after base <- mid <- top
 * loses mid (forward: mid into base; backward: mid into top), top's VMDK parentFileNameHint and
 * parentCID, qcow2 backing file, or VHD parent name and locators name base, so qemu-img (VMDK,
 * qcow2) reads top through the chain with mid's file gone, and we find base by file name too.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { mergeChildIntoParent, mergeParentIntoChild, type LayeredImage } from "./chain.js";
import { bindParent, linksByUuid, openLayer, parentFileOf } from "./formats.js";
import { VhdImage } from "./formats/vhd/vhd-image.js";
import { NodeFileOpener } from "./io/node/node-file-io.js";
import { MediaRegistry } from "./registry.js";
import { MediumManager } from "./medium-manager.js";

const MiB = 1 << 20;
const SIZE = 4 * MiB;
const work = mkdtempSync(join(tmpdir(), "vstor-merge-names-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0;

const fill = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (seed + i * 11 + (i >> 9)) & 0xff || 1);

async function family(format: "VMDK" | "QCOW2" | "VHD", tag: string) {
  const dir = join(work, `${format}-${tag}`);
  mkdirSync(dir);
  const mm = new MediumManager(new MediaRegistry(join(dir, "home")), new NodeFileOpener());
  const ext = format.toLowerCase();
  const paths = { base: join(dir, `base.${ext}`), mid: join(dir, `mid.${ext}`), top: join(dir, `top.${ext}`) };
  const model = new Uint8Array(SIZE);
  const write = async (path: string, at: number, data: Uint8Array) => {
    const b = await mm.open(path);
    await b.write(at, data);
    await b.close();
    model.set(data, at);
  };
  await mm.create({ path: paths.base, format, size: SIZE });
  await write(paths.base, 0, fill(MiB, 1));
  await mm.create({ path: paths.mid, parent: paths.base });
  await write(paths.mid, 512 * 1024, fill(MiB, 2));
  await mm.create({ path: paths.top, parent: paths.mid });
  await write(paths.top, 3 * MiB, fill(4096, 3));
  return { mm, paths, model };
}

/** The three layers, top first, opened read-write and bound as the medium manager binds them. */
async function layers(paths: { base: string; mid: string; top: string }): Promise<LayeredImage[]> {
  const opener = new NodeFileOpener();
  const [top, mid, base] = await Promise.all([paths.top, paths.mid, paths.base].map((p) => openLayer(opener, p, { readOnly: false })));
  for (const [child, parent] of [[top!, mid!], [mid!, base!]] as const) if (!linksByUuid(child)) bindParent(child, parent);
  return [top!, mid!, base!];
}

function qemuSees(path: string, driver: string, model: Uint8Array): void {
  const raw = `${path}.expected`;
  writeFileSync(raw, model);
  const r = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", driver, raw, path], { encoding: "utf8" });
  rmSync(raw);
  expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
}

describe("merges re-link the surviving child by name", () => {
  for (const format of ["VMDK", "QCOW2", "VHD"] as const) {
    for (const direction of ["forward", "backward"] as const) {
      it.skipIf(!hasQemu)(`${format}, ${direction}: top names base once mid is gone`, async () => {
        const { paths, model } = await family(format, direction);
        const chain = await layers(paths);
        const result =
          direction === "forward"
            ? await mergeChildIntoParent(chain, 1, { hasOtherChildren: () => false })
            : await mergeParentIntoChild(chain, 0, { hasOtherChildren: () => false });
        expect(result.removed.path).toBe(paths.mid);
        await Promise.all(chain.map((l) => l.close()));
        rmSync(paths.mid);

        const top = await openLayer(new NodeFileOpener(), paths.top, { readOnly: true });
        expect(parentFileOf(top)).toBe(paths.base);
        if (top instanceof VhdImage) expect(top.parentName).toBe("base.vhd");
        await top.close();
        // A registry that never knew mid: the chain is found from top's own records alone.
        const fresh = new MediumManager(new MediaRegistry(join(paths.top, "..", "fresh-home")), new NodeFileOpener());
        const whole = await fresh.open(paths.top, { readOnly: true });
        const got = new Uint8Array(SIZE);
        await whole.read(0, got);
        await whole.close();
        expect(Buffer.from(got).equals(Buffer.from(model))).toBe(true);
        if (format !== "VHD") qemuSees(paths.top, format === "VMDK" ? "vmdk" : "qcow2", model);
      });
    }
  }
});
