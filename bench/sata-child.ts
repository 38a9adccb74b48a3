/**
 * One SATA benchmark boot, in its own process (sata.bench.ts runs it with --v8-pool-size=1).
 * usage: node sata-child.mjs ahci|ahci-nocache|ide|v86-buffer IMAGE
 *   ahci:         our AhciController, IMAGE (raw) on port 0 through the page cache
 *   ahci-nocache: the same with the host I/O cache off (O_DIRECT; SATA's default in a machine)
 *   ide:          our IdeController (ICH6), IMAGE on the primary master
 *   v86-buffer:   plain v86 (no vstor code), IMAGE in an ArrayBuffer as hda (its fastest disk)
 * The guest runs vstor-io workloads from a boot script; vstor-io times its own I/O loop with the
 * guest clock. Prints one JSON line: { mode, results: { workload: { mbps, iops } }, output }.
 */
import { AhciController } from "../devices/ahci/index.js";
import { IdeController } from "../devices/ide/controller.js";
import { bootGuest } from "../machine/guest-session.js";
import type { BlockBackend } from "../media/block.js";
import { openRaw } from "../media/formats/raw/raw.js";
import { withoutHostCache } from "../media/io/file-io.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { readImageBuffer, startPlainV86 } from "./v86-peer.js";

const mode = process.argv[2] ?? "ahci";
const image = process.argv[3]!;

/** name → vstor-io arguments. The region is the first 200 MiB of the 256 MiB image. */
export const SATA_WORKLOADS: Record<string, string> = {
  "rand4k-qd1": "--op randread --bs 4096 --qd 1 --count 2000 --size 200m",
  "rand4k-qd32": "--op randread --bs 4096 --qd 32 --count 8000 --size 200m",
  "seqread-1m-qd4": "--op read --bs 1m --qd 4 --count 200",
  "seqwrite-1m-qd4": "--op write --bs 1m --qd 4 --count 200",
};

const script = Object.entries(SATA_WORKLOADS)
  .map(([name, args]) => `echo "@@W ${name} $(vstor-io --dev /dev/sda ${args} 2>&1 | tail -1)"`)
  .join("\n");

let output: string;
if (mode === "v86-buffer") {
  const v86 = startPlainV86(script, { hda: { buffer: readImageBuffer(image) } });
  output = (await v86.console.result("0", 900_000)).output;
  await v86.stop();
} else {
  const opener = mode === "ahci-nocache" ? withoutHostCache(new NodeFileOpener()) : new NodeFileOpener();
  const medium: BlockBackend = await openRaw(opener, image);
  const drive = { kind: "ata" as const, medium, serial: "VSTOR-BENCH-SATA", model: "VSTOR BENCH DISK" };
  const s = await bootGuest({
    script,
    bootTimeoutMs: 300_000,
    setup: (host) => {
      if (mode === "ide") new IdeController(host, { chipset: "ich6", primary: { master: drive } });
      else if (mode === "ahci" || mode === "ahci-nocache") new AhciController(host, { portCount: 1, ports: { 0: drive } });
      else throw new Error(`unknown mode ${mode}`);
    },
  });
  output = (await s.console.result("0", 900_000)).output;
  await s.stop();
  await medium.close();
}

const results: Record<string, { mbps: number; iops: number }> = {};
for (const name of Object.keys(SATA_WORKLOADS)) {
  const m = new RegExp(`@@W ${name} vstor-io: op=\\S+ .*MBps=([0-9.]+) iops=(\\d+)`).exec(output);
  if (!m) throw new Error(`no figure for ${name} (${mode}):\n${output}`);
  results[name] = { mbps: Number(m[1]), iops: Number(m[2]) };
}
console.log(JSON.stringify({ mode, results, output }));
process.exit(0);
