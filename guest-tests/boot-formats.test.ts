/**
 * A real guest boots from a VMDK, a VHD, a Parallels HDD and a qcow2 image on our IDE controller:
 * images made by qemu-img from build/guest/boot.img (what a user brings from qemu, VMware,
 * Hyper-V or Parallels), opened the way `vstor` opens any medium (detected by content), and booted
 * by SeaBIOS from the primary master. The guest then writes a file into the FAT partition through
 * our format writer; after the guest stops, qemu-img checks the image and reads the file back
 * through its own driver (convert to raw, then mtools).
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IdeChipset } from "../devices/ide/chipset.js";
import { MediaRegistry } from "../media/registry.js";
import { MediumManager } from "../media/medium-manager.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { INSPECT, bootDisk, bootFromDisk, bootImg, bootTimes, checkInspect, checkLoader, sh, shutdown, type Machine } from "./support/boot-disk.js";

const IMAGES: { name: string; file: string; qemu: string; options: string[]; check: boolean; chipset: IdeChipset; detected: string }[] = [
  { name: "VMDK (monolithicSparse)", file: "boot.vmdk", qemu: "vmdk", options: [], check: true, chipset: "piix4", detected: "VMDK" },
  { name: "VHD (dynamic)", file: "boot.vhd", qemu: "vpc", options: ["-o", "subformat=dynamic,force_size=on"], check: false, chipset: "ich6", detected: "VHD" },
  { name: "Parallels HDD", file: "boot.hdd", qemu: "parallels", options: [], check: true, chipset: "piix3", detected: "HDD" },
  { name: "qcow2", file: "boot.qcow2", qemu: "qcow2", options: [], check: true, chipset: "piix4", detected: "QCOW2" },
];

const md5 = (data: Uint8Array) => createHash("md5").update(data).digest("hex");

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr || r.error}`);
  return r.stdout;
}

afterAll(() => {
  if (bootTimes.length) console.log(`boot times (start to marker):\n  ${bootTimes.join("\n  ")}`);
});

for (const image of IMAGES) {
  describe.runIf(bootDisk)(`SeaBIOS boots boot.img as ${image.name} made by qemu-img, from the IDE (${image.chipset}) primary master`, () => {
    let m: Machine | undefined;
    let path = "";

    beforeAll(async () => {
      m = await bootFromDisk(`${image.chipset} ${image.name}`, image.chipset, async (dir) => {
        // An empty registry of this test's own: the image is opened by path, as `vstor` opens an unregistered file.
        const manager = new MediumManager(new MediaRegistry(dir), new NodeFileOpener());
        path = join(dir, image.file);
        run("qemu-img", ["convert", "-f", "raw", "-O", image.qemu, ...image.options, bootImg, path]);
        expect(await manager.detectFormat(path)).toBe(image.detected);
        return manager.open(path);
      }, false);
    }, 600_000);

    afterAll(() => shutdown(m));

    it("went SeaBIOS -> syslinux -> kernel -> init through the format's reader", () => {
      checkLoader(m!.guest);
    });

    it("runs the kernel with syslinux.cfg's command line, from the FAT partition on /dev/sda1", async () => {
      const out = await sh(m!.guest, INSPECT);
      checkInspect(out);
    });

    it("keeps a file the guest wrote: qemu-img checks the image and reads the file back", async () => {
      const out = await sh(m!.guest, `set -e
        mount -t vfat /dev/sda1 /mnt
        dd if=/dev/urandom of=/mnt/marker.bin bs=64k count=24 2>/dev/null
        echo "md5 $(md5sum < /mnt/marker.bin)"
        umount /mnt
        sync
        echo 1 > /proc/sys/vm/drop_caches
        mount -t vfat -o ro /dev/sda1 /mnt
        echo "again $(md5sum < /mnt/marker.bin)"
        umount /mnt`);
      const sum = /^md5 ([0-9a-f]{32})/m.exec(out)?.[1];
      expect(sum).toBeTruthy();
      expect(out).toContain(`again ${sum}`);
      await m!.guest.stop();
      await m!.medium.close();
      if (image.check) run("qemu-img", ["check", "-f", image.qemu, path]);
      const raw = `${path}.raw`;
      run("qemu-img", ["convert", "-f", image.qemu, "-O", "raw", path, raw]);
      const copy = `${path}.marker`;
      run("mcopy", ["-n", "-i", `${raw}@@${bootDisk!.partition.startSector * 512}`, "::marker.bin", copy]);
      expect(md5(readFileSync(copy))).toBe(sum);
      writeFileSync(copy, "");
    });
  });
}
