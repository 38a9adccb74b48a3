/** The shared BlockBackend conformance suite on VDI images and VDI chains. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "vitest";
import { ImageChain } from "../../chain.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import type { FileOpener } from "../../io/file-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { describeBlockBackendConformance } from "../../testing/conformance.js";
import { createVdi, openVdi, type VdiCreateOptions } from "./vdi-image.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-vdi-conf-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let serial = 0;

function vdiSuite(name: string, options: Partial<VdiCreateOptions>, onDisk = false): void {
  describeBlockBackendConformance(name, async ({ size, wrapOpener }) => {
    const dir = onDisk ? fs.mkdtempSync(path.join(tmpRoot, `${serial++}-`)) : "";
    const opener = wrapOpener(onDisk ? new NodeFileOpener() : new MemoryFileOpener());
    const file = path.join(dir, "disk.vdi");
    const backend = await createVdi(opener, file, { size, ...options });
    return {
      backend,
      reopen: (o) => openVdi(opener, file, o),
      cleanup: async () => {
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

vdiSuite("vdi dynamic on memory files", {});
vdiSuite("vdi dynamic, 64 KiB blocks, qemu layout, on memory files", { blockSize: 64 * 1024, dataAlign: 512 });
vdiSuite("vdi fixed on memory files", { variant: "fixed" });
vdiSuite("vdi dynamic on Node files", {}, true);

/** A base with a differencing child, through ImageChain. */
async function chainOn(opener: FileOpener, options: { readOnly?: boolean } = {}) {
  const base = await openVdi(opener, "base.vdi", { readOnly: true });
  const child = await openVdi(opener, "child.vdi", { readOnly: options.readOnly });
  return new ImageChain([child, base], { readOnly: options.readOnly });
}

describeBlockBackendConformance("vdi differencing chain on memory files", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new MemoryFileOpener());
  const base = await createVdi(opener, "base.vdi", { size, blockSize: 64 * 1024 });
  const link = { uuid: base.uuid, modifyUuid: base.modifyUuid };
  await base.close();
  const child = await createVdi(opener, "child.vdi", { size, blockSize: 64 * 1024, parent: link });
  await child.close();
  return { backend: await chainOn(opener), reopen: (o) => chainOn(opener, o) };
});
