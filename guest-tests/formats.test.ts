/**
 * Image formats under a real guest: a VMDK (monolithicSparse), a dynamic VHD, a qcow2 and a
 * Parallels image, created by vstor, on four ports of our AHCI controller. The Linux guest writes
 * vstor-io's pattern to each at queue depth 8 and verifies it; after the guest stops, qemu-img
 * judges the files (check where it has one) and reads the pattern back from each through its own
 * driver (convert to raw).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AhciController } from "../devices/ahci/index.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import type { BlockBackend } from "../media/block.js";
import { IMAGE_CREATORS } from "../media/clone.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { vstorIoSector } from "./support/ide-pattern.js";

const MiB = 1 << 20;
const SIZE = 32 * MiB;
const REGION = { offset: 4 * MiB, bytes: 12 * MiB };
const DISKS = [
  { format: "VMDK", file: "d.vmdk", qemu: "vmdk", check: true, seed: 101 },
  { format: "VHD", file: "d.vhd", qemu: "vpc", check: false, seed: 102 },
  { format: "QCOW2", file: "d.qcow2", qemu: "qcow2", check: true, seed: 103 },
  { format: "HDD", file: "d.hdd", qemu: "parallels", check: true, seed: 104 },
] as const;

const dir = mkdtempSync(join(tmpdir(), "vstor-formats-"));
let guest: GuestSession | undefined;
const media: BlockBackend[] = [];
afterAll(async () => {
  await guest?.stop().catch(() => undefined);
  for (const m of media) await m.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe("VMDK, VHD, qcow2 and Parallels disks on SATA in a Linux guest", () => {
  it("the guest writes and verifies each disk", async () => {
    const opener = new NodeFileOpener();
    for (const d of DISKS) media.push(await IMAGE_CREATORS[d.format](opener, join(dir, d.file), { size: SIZE, variant: "Standard" }));
    guest = await bootGuest({
      setup: (host) => void new AhciController(host, { portCount: 4, ports: Object.fromEntries(media.map((m, i) => [i, { kind: "ata", medium: m }])) }),
    });
    const devs = ["sda", "sdb", "sdc", "sdd"];
    const r = await guest.run(
      devs.map((dev, i) => `echo "${dev} $(cat /sys/block/${dev}/size)"; vstor-io --dev /dev/${dev} --op write --bs 65536 --qd 8 --seed ${DISKS[i]!.seed} --offset ${REGION.offset} --size ${REGION.bytes} || exit 1`).join("\n") +
        "\n" +
        devs.map((dev, i) => `vstor-io --dev /dev/${dev} --op verify --bs 65536 --qd 8 --seed ${DISKS[i]!.seed} --offset ${REGION.offset} --size ${REGION.bytes} || exit 1`).join("\n"),
      300_000,
    );
    console.log(r.output);
    expect(r.status, r.output).toBe(0);
    for (const dev of devs) expect(r.output).toContain(`${dev} ${SIZE / 512}`);
    expect(r.output.match(/verified=yes/g)?.length).toBe(4);
    await guest.stop();
    guest = undefined;
    for (const m of media.splice(0)) await m.close();
  });

  it.each(DISKS)("qemu-img reads the guest's data from the $format file ($qemu)", (d) => {
    const file = join(dir, d.file);
    if (d.check) {
      const c = spawnSync("qemu-img", ["check", "-f", d.qemu, file], { encoding: "utf8" });
      expect(c.status, c.stdout + c.stderr).toBe(0);
    }
    const raw = join(dir, `${d.file}.raw`);
    const src = d.qemu === "vpc" ? ["--image-opts", `driver=vpc,force_size_calc=current_size,file.filename=${file}`] : ["-f", d.qemu, file];
    const conv = spawnSync("qemu-img", ["convert", ...src, "-O", "raw", raw], { encoding: "utf8" });
    expect(conv.status, conv.stderr).toBe(0);
    const image = readFileSync(raw);
    expect(image.length).toBe(SIZE);
    let bad = -1;
    for (let off = REGION.offset; off < REGION.offset + REGION.bytes; off += 512) {
      if (Buffer.compare(image.subarray(off, off + 512), vstorIoSector(off / 512, d.seed)) !== 0) {
        bad = off;
        break;
      }
    }
    expect(bad).toBe(-1);
  });
});
