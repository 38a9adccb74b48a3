/** The shared BlockBackend conformance suite on qcow2 images and a qcow2 chain. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "vitest";
import { ImageChain } from "../../chain.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import type { FileOpener } from "../../io/file-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { describeBlockBackendConformance } from "../../testing/conformance.js";
import { nodeInflate } from "./node/inflate.js";
import { createQcow2, openQcow2, type Qcow2CreateOptions } from "./qcow2-image.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-qcow2-conf-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let serial = 0;

function suite(name: string, options: Omit<Qcow2CreateOptions, "size">, onDisk = false): void {
  describeBlockBackendConformance(name, async ({ size, wrapOpener }) => {
    const dir = onDisk ? fs.mkdtempSync(path.join(tmpRoot, `${serial++}-`)) : "";
    const opener = wrapOpener(onDisk ? new NodeFileOpener() : new MemoryFileOpener());
    const file = path.join(dir, "disk.qcow2");
    const backend = await createQcow2(opener, file, { size, ...options });
    return {
      backend,
      reopen: (o) => openQcow2(opener, file, { ...o, inflate: nodeInflate }),
      cleanup: async () => {
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

suite("qcow2 v3, 64 KiB clusters, on memory files", {});
suite("qcow2 v2, 64 KiB clusters, on memory files", { version: 2 });
suite("qcow2 v3, 512-byte clusters (refcount table grows), on memory files", { clusterSize: 512 });
suite("qcow2 v3, 2 MiB clusters, on memory files", { clusterSize: 2 << 20 });
suite("qcow2 v3 on Node files", {}, true);

async function chainOn(opener: FileOpener, options: { readOnly?: boolean } = {}) {
  const base = await openQcow2(opener, "base.qcow2", { readOnly: true });
  const child = await openQcow2(opener, "child.qcow2", { readOnly: options.readOnly });
  child.attachBacking(base);
  return new ImageChain([child, base], { readOnly: options.readOnly });
}

describeBlockBackendConformance("qcow2 differencing chain on memory files", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new MemoryFileOpener());
  const base = await createQcow2(opener, "base.qcow2", { size, clusterSize: 4096 });
  await base.write(0, new Uint8Array(size)); // stored zeros: the child must copy them, not show stale data
  await base.close();
  const child = await createQcow2(opener, "child.qcow2", { size, backing: { file: "base.qcow2", format: "qcow2" } });
  await child.close();
  return { backend: await chainOn(opener), reopen: (o) => chainOn(opener, o) };
});
