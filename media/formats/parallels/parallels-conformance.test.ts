/** The shared BlockBackend conformance suite on Parallels images. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "vitest";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { describeBlockBackendConformance } from "../../testing/conformance.js";
import { createParallels, openParallels, type ParallelsCreateOptions } from "./parallels-image.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-hdd-conf-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let serial = 0;

function suite(name: string, options: Omit<ParallelsCreateOptions, "size">, onDisk = false): void {
  describeBlockBackendConformance(name, async ({ size, wrapOpener }) => {
    const dir = onDisk ? fs.mkdtempSync(path.join(tmpRoot, `${serial++}-`)) : "";
    const opener = wrapOpener(onDisk ? new NodeFileOpener() : new MemoryFileOpener());
    const file = path.join(dir, "disk.hdd");
    const backend = await createParallels(opener, file, { size, ...options });
    return {
      backend,
      reopen: (o) => openParallels(opener, file, o),
      cleanup: async () => {
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

suite("parallels dynamic (legacy form, 1 MiB clusters) on memory files", {});
suite("parallels dynamic (ext form, 64 KiB clusters) on memory files", { form: "ext", clusterSize: 64 * 1024 });
suite("parallels dynamic (legacy form, 63-sector clusters as VirtualBox makes) on memory files", { clusterSize: 63 * 512 });
suite("parallels fixed on memory files", { variant: "fixed" });
suite("parallels dynamic on Node files", {}, true);
