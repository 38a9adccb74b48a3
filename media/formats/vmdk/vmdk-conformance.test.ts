/** The shared BlockBackend conformance suite on every VMDK variant we write, and on a VMDK chain. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "vitest";
import { ImageChain } from "../../chain.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import type { FileOpener } from "../../io/file-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { describeBlockBackendConformance } from "../../testing/conformance.js";
import { createVmdk, parentLinkOf, type VmdkCreateOptions } from "./vmdk-create.js";
import { openVmdk } from "./vmdk-open.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-vmdk-conf-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let serial = 0;

function suite(name: string, options: Partial<VmdkCreateOptions>, onDisk = false): void {
  describeBlockBackendConformance(name, async ({ size, wrapOpener }) => {
    const dir = onDisk ? fs.mkdtempSync(path.join(tmpRoot, `${serial++}-`)) : "";
    const opener = wrapOpener(onDisk ? new NodeFileOpener() : new MemoryFileOpener());
    const file = path.join(dir, "disk.vmdk");
    const backend = await createVmdk(opener, file, { size, ...options });
    return {
      backend,
      reopen: (o) => openVmdk(opener, file, o),
      cleanup: async () => {
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

suite("vmdk monolithicSparse on memory files", {});
suite("vmdk monolithicSparse with zeroed grains on memory files", { zeroedGrains: true });
suite("vmdk monolithicFlat on memory files", { variant: "monolithicFlat" });
suite("vmdk twoGbMaxExtentSparse, 1 MiB pieces, on memory files", { variant: "twoGbMaxExtentSparse", splitSize: 1024 * 1024 });
suite("vmdk twoGbMaxExtentFlat, 1 MiB pieces, on memory files", { variant: "twoGbMaxExtentFlat", splitSize: 1024 * 1024 });
suite("vmdk monolithicSparse on Node files", {}, true);

async function chainOn(opener: FileOpener, options: { readOnly?: boolean } = {}) {
  const base = await openVmdk(opener, "base.vmdk", { readOnly: true });
  const child = await openVmdk(opener, "child.vmdk", { readOnly: options.readOnly });
  return new ImageChain([child, base], { readOnly: options.readOnly });
}

describeBlockBackendConformance("vmdk differencing chain on memory files", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new MemoryFileOpener());
  const base = await createVmdk(opener, "base.vmdk", { size });
  const link = parentLinkOf(base, "base.vmdk");
  await base.close();
  const child = await createVmdk(opener, "child.vmdk", { size, parent: link });
  await child.close();
  return { backend: await chainOn(opener), reopen: (o) => chainOn(opener, o) };
});
