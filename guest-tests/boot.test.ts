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
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdeController } from "../devices/ide/controller.js";
import { defaultIdeLayout } from "../devices/ide/layout.js";
import type { IdeChipset } from "../devices/ide/chipset.js";
import { guestImages } from "../machine/guest-images.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import type { BlockBackend } from "../media/block.js";
import { openRaw } from "../media/formats/raw/raw.js";
import { openVdi } from "../media/formats/vdi/vdi-image.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";

interface BootDiskManifest {
  size: number;
  cmdline: string;
  partition: { startSector: number; sectors: number; label: string };
}

const images = guestImages();
const manifest = JSON.parse(readFileSync(join(images.dir, "manifest.json"), "utf8")) as {
  files: Record<string, unknown> & { "boot.img"?: BootDiskManifest };
};
const bootDisk = manifest.files["boot.img"];
const bootImg = join(images.dir, "boot.img");
const md5 = (data: Uint8Array) => createHash("md5").update(data).digest("hex");
const kernelMd5 = md5(readFileSync(images.kernel));
const initrdMd5 = md5(readFileSync(images.initrd));

/** Times to "@@VSTOR BOOTED", by case, printed at the end. */
const bootTimes: string[] = [];

interface Machine {
  guest: GuestSession;
  medium: BlockBackend;
  ide?: IdeController;
  dir: string;
}

async function bootFromDisk(name: string, chipset: IdeChipset, openDisk: (dir: string) => Promise<BlockBackend>, withCd: boolean): Promise<Machine> {
  const dir = mkdtempSync(join(tmpdir(), `vstor-boot-${name}-`));
  const medium = await openDisk(dir);
  const m: Partial<Machine> = { dir, medium };
  const t0 = performance.now();
  const at: Record<string, number> = {};
  try {
    m.guest = await bootGuest({
      bootFrom: "disk",
      onLine: (line) => {
        const seconds = (performance.now() - t0) / 1000;
        if (/^SYSLINUX \d/.test(line)) at.syslinux ??= seconds;
        if (/^Loading \/initrd\.img\.*ok/.test(line)) at.loaded ??= seconds;
      },
      setup: (host) => {
        m.ide = new IdeController(host, { chipset, ...defaultIdeLayout({ disks: [medium], cdrom: withCd ? undefined : false }) });
      },
      bootTimeoutMs: 300_000,
    });
  } catch (e) {
    await medium.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  bootTimes.push(`${name}: syslinux ${at.syslinux?.toFixed(1)} s, kernel+initrd loaded ${at.loaded?.toFixed(1)} s, ` +
    `BOOTED ${m.guest.timings.booted.toFixed(1)} s, READY ${m.guest.timings.ready.toFixed(1)} s`);
  return m as Machine;
}

async function shutdown(m: Machine | undefined): Promise<void> {
  if (!m) return;
  await m.guest.stop().catch(() => undefined);
  await m.medium.close().catch(() => undefined);
  rmSync(m.dir, { recursive: true, force: true });
}

async function sh(guest: GuestSession, script: string, timeoutMs?: number): Promise<string> {
  const r = await guest.run(script, timeoutMs);
  if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
  return r.output;
}

/** What the guest sees of the boot disk: its command line, the partition, the files on it. */
const INSPECT = `
  set -e
  echo "cmdline: $(cat /proc/cmdline)"
  echo "sda1 start $(cat /sys/block/sda/sda1/start) size $(cat /sys/block/sda/sda1/size)"
  blkid /dev/sda1
  mkdir -p /mnt
  mount -t vfat -o ro /dev/sda1 /mnt
  echo "files: $(ls /mnt | tr '\\n' ' ')"
  echo "md5 vmlinuz $(md5sum < /mnt/vmlinuz)"
  echo "md5 initrd $(md5sum < /mnt/initrd.img)"
  grep '^ *APPEND' /mnt/syslinux.cfg
  umount /mnt
  echo "errors: $(dmesg | grep -cE 'failed command|exception Emask|I/O error, dev sda')"`;

function checkInspect(out: string): void {
  const cmdline = /^cmdline: (.*)$/m.exec(out)?.[1] ?? "";
  // syslinux puts BOOT_IMAGE= first, then the APPEND line from syslinux.cfg.
  expect(cmdline).toContain(bootDisk!.cmdline);
  expect(cmdline).toContain("BOOT_IMAGE=/vmlinuz");
  expect(cmdline).toContain("VSTOR_MODE=agent");
  expect(out).toContain(`sda1 start ${bootDisk!.partition.startSector} size ${bootDisk!.partition.sectors}`);
  expect(out).toMatch(new RegExp(`/dev/sda1:.*LABEL="${bootDisk!.partition.label}".*TYPE="vfat"`));
  for (const f of ["vmlinuz", "initrd.img", "syslinux.cfg", "ldlinux.sys", "ldlinux.c32"]) expect(out).toMatch(new RegExp(`files: .*\\b${f.replace(".", "\\.")}\\b`));
  expect(out).toContain(`md5 vmlinuz ${kernelMd5}`);
  expect(out).toContain(`md5 initrd ${initrdMd5}`);
  expect(out).toContain(`APPEND ${bootDisk!.cmdline}`);
  expect(out).toContain("errors: 0");
}

/** syslinux talks on the serial console (SERIAL 0 in syslinux.cfg) before the kernel does. */
function checkLoader(guest: GuestSession): void {
  const t = guest.console.transcript;
  expect(t).toMatch(/SYSLINUX \d/);
  const loader = t.indexOf("SYSLINUX");
  const kernel = t.indexOf("Linux version");
  expect(kernel).toBeGreaterThan(loader);
  expect(t.indexOf("@@VSTOR BOOTED")).toBeGreaterThan(kernel);
  expect(t.indexOf("@@VSTOR AGENT")).toBeGreaterThan(t.indexOf("@@VSTOR READY"));
}

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
