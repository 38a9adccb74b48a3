/**
 * SeaBIOS boots from our disks: v86 gets no kernel, initramfs or command line (bootFrom "disk"),
 * only our IDE controller with a copy of build/guest/boot.img on the primary master. SeaBIOS's
 * ATA driver finds the disk through the controller's PCI class and legacy ports, runs syslinux's
 * MBR, syslinux loads the kernel and the initramfs from the FAT partition through INT 13h, and the
 * guest comes up in agent mode (syslinux.cfg passes VSTOR_MODE=agent).
 *
 * - ICH6 with the VirtualBox layout (empty DVD drive on the secondary master): boot.img as raw.
 * - PIIX3 with only the disk: boot.img converted to a dynamic VDI by qemu-img, through our VDI
 *   backend (a boot from a VDI on our controller).
 *
 * VSTOR_BOOT_COMPARE=1 adds a kernel boot (v86 loads vmlinuz/initrd.img) of the same machine, to
 * compare the times to "@@VSTOR BOOTED".
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdeController } from "../devices/ide/controller.js";
import { defaultIdeLayout } from "../devices/ide/layout.js";
import { bootGuest } from "../machine/guest-session.js";
import { openRaw } from "../media/formats/raw/raw.js";
import { openVdi } from "../media/formats/vdi/vdi-image.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { INSPECT, bootDisk, bootFromDisk, bootImg, bootTimes, checkInspect, checkLoader, sh, shutdown, type Machine } from "./support/boot-disk.js";

describe.runIf(bootDisk)("SeaBIOS boots boot.img (raw) from the IDE (ICH6) primary master", () => {
  let m: Machine | undefined;

  beforeAll(async () => {
    m = await bootFromDisk("ICH6 raw", "ich6", async (dir) => {
      const path = join(dir, "boot.img");
      copyFileSync(bootImg, path);
      return openRaw(new NodeFileOpener(), path);
    }, true);
  }, 600_000);

  afterAll(() => shutdown(m));

  it("went SeaBIOS -> syslinux -> kernel -> init: BOOTED, READY and the agent", () => {
    expect(m!.ide?.pci.devfn).toBe(0x09);
    checkLoader(m!.guest);
  });

  it("runs the kernel with syslinux.cfg's command line, from the FAT partition on /dev/sda1", async () => {
    const out = await sh(m!.guest, INSPECT);
    console.log(out);
    checkInspect(out);
  });

  it("has the empty DVD drive too, after the hard disk in the CMOS boot order SeaBIOS read (0x312)", async () => {
    // CMOS 38h bits 7:4 and 3Dh hold the order, one nibble per class (2 disk, 1 floppy, 3 CD).
    const cmos = (reg: number) => `printf '\\${reg.toString(8).padStart(3, "0")}' | dd of=/dev/port bs=1 seek=${0x70} count=1 conv=notrunc 2>/dev/null
      dd if=/dev/port bs=1 skip=${0x71} count=1 2>/dev/null | hexdump -v -e '1/1 "%02x"'; echo`;
    const out = await sh(m!.guest, `ls /dev/sr0
 echo "cmos38 $(${cmos(0x38)})"
 echo "cmos3d $(${cmos(0x3d)})"`);
    expect(out).toContain("/dev/sr0");
    const reg38 = parseInt(/cmos38 ([0-9a-f]{2})/.exec(out)![1]!, 16);
    const reg3d = parseInt(/cmos3d ([0-9a-f]{2})/.exec(out)![1]!, 16);
    expect(((reg38 & 0xf0) << 4) | reg3d).toBe(0x312);
  });
});

describe.runIf(bootDisk)("SeaBIOS boots boot.img converted to VDI from the IDE (PIIX3) primary master", () => {
  let m: Machine | undefined;

  beforeAll(async () => {
    m = await bootFromDisk("PIIX3 VDI", "piix3", async (dir) => {
      const path = join(dir, "boot.vdi");
      const r = spawnSync("qemu-img", ["convert", "-f", "raw", "-O", "vdi", bootImg, path], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`qemu-img convert failed (${r.status}): ${r.stderr || r.error}`);
      return openVdi(new NodeFileOpener(), path, { readOnly: true });
    }, false);
  }, 600_000);

  afterAll(() => shutdown(m));

  it("went SeaBIOS -> syslinux -> kernel -> init through the VDI backend", () => {
    checkLoader(m!.guest);
  });

  it("runs the kernel with syslinux.cfg's command line, from the FAT partition on /dev/sda1", async () => {
    const out = await sh(m!.guest, `${INSPECT}\n  echo "id $(cat /sys/bus/pci/devices/0000:00:01.1/device)"`);
    console.log(out);
    checkInspect(out);
    expect(out).toContain("id 0x7010");
  });
});

describe.runIf(bootDisk && process.env.VSTOR_BOOT_COMPARE === "1")("kernel boot of the same machine, for comparison", () => {
  it("boots with v86 loading the kernel and the initramfs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vstor-boot-kernel-"));
    const path = join(dir, "boot.img");
    copyFileSync(bootImg, path);
    const medium = await openRaw(new NodeFileOpener(), path);
    try {
      const guest = await bootGuest({
        setup: (host) => void new IdeController(host, { chipset: "ich6", ...defaultIdeLayout({ disks: [medium] }) }),
      });
      bootTimes.push(`kernel boot (ICH6, same disk): BOOTED ${guest.timings.booted.toFixed(1)} s, READY ${guest.timings.ready.toFixed(1)} s`);
      await guest.stop();
    } finally {
      await medium.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

afterAll(() => {
  if (bootTimes.length) console.log(`boot times (start to marker):\n  ${bootTimes.join("\n  ")}`);
});

it("build/guest has boot.img (make images)", () => {
  expect(bootDisk, "manifest.json has no boot.img: run node images/build.mjs").toBeTruthy();
  expect(statSync(bootImg).size).toBe(bootDisk!.size);
});
