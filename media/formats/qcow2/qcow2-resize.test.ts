/**
 * Growing qcow2 images (`modifymedium --resize`): the L1 table stays in place while it fits its
 * clusters and moves to the end when it does not (the old clusters given back); data before the
 * old end is kept, the new space reads as zeros and takes writes; qemu-img check finds no errors
 * or leaks and compare agrees at every step. Shrinking and absurd sizes are refused, unchanged.
 */
import * as fs from "node:fs";
import { describe, expect, it } from "vitest";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuCheckClean, expectQemuSees, hasQemu, qemuInfo, qemuTool, tempFiles } from "../../testing/qemu.js";
import { createQcow2, openQcow2 } from "./qcow2-image.js";

const KiB = 1024;
const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-qcow2-resize-");

function qemuAgrees(p: string, model: Uint8Array): void {
  expectQemuCheckClean(p, "qcow2");
  expectQemuSees(p, "qcow2", model);
}

const fill = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (seed + i * 7 + (i >> 9)) & 0xff);

describe.skipIf(!hasQemu)("qcow2 resize", () => {
  it("grows with the L1 table in place, then moved to the end; data kept, new space zero and writable", async () => {
    const p = file("grow.qcow2");
    // 512-byte clusters: an L2 table maps 32 KiB, one L1 cluster holds 64 entries (2 MiB).
    const img = await createQcow2(opener, p, { size: 1 * MiB, clusterSize: 512 });
    let model = new Uint8Array(1 * MiB);
    const put = async (at: number, data: Uint8Array) => {
      await img.write(at, data);
      model.set(data, at);
    };
    await put(0, fill(8 * KiB, 1));
    await put(MiB - 4 * KiB, fill(4 * KiB, 2));
    const l1Before = img["store"].header.l1TableOffset;

    await img.resize(2 * MiB); // still fits the L1 cluster
    expect(img.size).toBe(2 * MiB);
    expect(img["store"].header.l1TableOffset).toBe(l1Before);
    model = Uint8Array.from([...model, ...new Uint8Array(MiB)]);
    await put(2 * MiB - 512, fill(512, 3));

    await img.resize(16 * MiB); // 512 entries: the L1 table moves
    expect(img["store"].header.l1TableOffset).not.toBe(l1Before);
    const grown = new Uint8Array(16 * MiB);
    grown.set(model);
    model = grown;
    await put(10 * MiB, fill(64 * KiB, 4));
    await put(16 * MiB - 1024, fill(1024, 5));
    await img.close();
    qemuAgrees(p, model);

    const again = await openQcow2(opener, p, { readOnly: true });
    const back = new Uint8Array(16 * MiB);
    await again.read(0, back);
    await again.close();
    expect(Buffer.from(back).equals(Buffer.from(model))).toBe(true);
  });

  it("grows an image qemu made with a backing file; shrinking and absurd sizes are refused and change nothing", async () => {
    const base = file("base.qcow2");
    const top = file("top.qcow2");
    expect(qemuTool("qemu-img", "create", "-f", "qcow2", base, "4M").status).toBe(0);
    expect(qemuTool("qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top).status).toBe(0);
    const img = await openQcow2(opener, top);
    await img.resize(64 * MiB);
    await img.write(60 * MiB, fill(4096, 9));
    await img.flush();
    const before = fs.readFileSync(top);
    await expect(img.resize(32 * MiB)).rejects.toThrow(/shrinking/);
    await expect(img.resize(2 ** 53)).rejects.toThrow(/2\^52/);
    await expect(img.resize(64 * MiB + 1)).rejects.toThrow(/multiple of 512/);
    await img.close();
    expect(fs.readFileSync(top).equals(before)).toBe(true);
    const info = qemuInfo(top);
    expect(info["virtual-size"]).toBe(64 * MiB);
    const model = new Uint8Array(64 * MiB);
    model.set(fill(4096, 9), 60 * MiB);
    qemuAgrees(top, model);
  });
});
