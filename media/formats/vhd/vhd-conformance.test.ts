/** The shared BlockBackend conformance suite on VHD images and VHD chains. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "vitest";
import { ImageChain } from "../../chain.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import type { FileOpener } from "../../io/file-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { describeBlockBackendConformance } from "../../testing/conformance.js";
import { createVhd, openVhd, type VhdCreateOptions } from "./vhd-image.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-vhd-conf-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let serial = 0;

function vhdSuite(name: string, options: Partial<VhdCreateOptions>, onDisk = false): void {
  describeBlockBackendConformance(name, async ({ size, wrapOpener }) => {
    const dir = onDisk ? fs.mkdtempSync(path.join(tmpRoot, `${serial++}-`)) : "";
    const opener = wrapOpener(onDisk ? new NodeFileOpener() : new MemoryFileOpener());
    const file = path.join(dir, "disk.vhd");
    const backend = await createVhd(opener, file, { size, ...options });
    return {
      backend,
      reopen: (o) => openVhd(opener, file, o),
      cleanup: async () => {
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

vhdSuite("vhd dynamic on memory files", {});
vhdSuite("vhd dynamic, 64 KiB blocks, on memory files", { blockSize: 64 * 1024 });
vhdSuite("vhd fixed on memory files", { variant: "fixed" });
vhdSuite("vhd dynamic on Node files", {}, true);
vhdSuite("vhd fixed on Node files", { variant: "fixed" }, true);

/** A base with a differencing child, through ImageChain. */
async function chainOn(opener: FileOpener, options: { readOnly?: boolean } = {}) {
  const base = await openVhd(opener, "/base.vhd", { readOnly: true });
  const child = await openVhd(opener, "/child.vhd", { readOnly: options.readOnly });
  return new ImageChain([child, base], { readOnly: options.readOnly });
}

for (const blockSize of [64 * 1024, 2 * 1024 * 1024]) {
  describeBlockBackendConformance(`vhd differencing chain (${blockSize / 1024} KiB blocks) on memory files`, async ({ size, wrapOpener }) => {
    const opener = wrapOpener(new MemoryFileOpener());
    const base = await createVhd(opener, "/base.vhd", { size, blockSize });
    const parent = { uuid: base.uuid, timestamp: base.timestamp, path: "/base.vhd" };
    await base.close();
    const child = await createVhd(opener, "/child.vhd", { size, blockSize, parent });
    await child.close();
    return { backend: await chainOn(opener), reopen: (o) => chainOn(opener, o) };
  });
}

describeBlockBackendConformance("vhd differencing (64 KiB blocks) over a fixed VHD on memory files", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new MemoryFileOpener());
  const base = await createVhd(opener, "/base.vhd", { size, variant: "fixed" });
  const parent = { uuid: base.uuid, modifyUuid: base.modifyUuid, path: "/base.vhd" };
  await base.close();
  const child = await createVhd(opener, "/child.vhd", { size, blockSize: 64 * 1024, parent });
  await child.close();
  return { backend: await chainOn(opener), reopen: (o) => chainOn(opener, o) };
});
