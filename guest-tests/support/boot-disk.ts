/**
 * Booting the guest's boot disk (build/guest/boot.img or a conversion of it) through SeaBIOS from
 * the primary master of our IDE controller, and checking what the guest then sees of that disk.
 * Shared by boot.test.ts and boot-formats.test.ts.
 */
import { rmSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { expect } from "vitest";
import { IdeController } from "../../devices/ide/controller.js";
import { defaultIdeLayout } from "../../devices/ide/layout.js";
import type { IdeChipset } from "../../devices/ide/chipset.js";
import { guestImages } from "../../machine/guest-images.js";
import { bootGuest, type GuestSession } from "../../machine/guest-session.js";
import type { BlockBackend } from "../../media/block.js";

export interface BootDiskManifest {
  size: number;
  cmdline: string;
  partition: { startSector: number; sectors: number; label: string };
}

export const images = guestImages();
const manifest = JSON.parse(readFileSync(join(images.dir, "manifest.json"), "utf8")) as {
  files: Record<string, unknown> & { "boot.img"?: BootDiskManifest };
};
export const bootDisk = manifest.files["boot.img"];
export const bootImg = join(images.dir, "boot.img");
const md5 = (data: Uint8Array) => createHash("md5").update(data).digest("hex");
const kernelMd5 = md5(readFileSync(images.kernel));
const initrdMd5 = md5(readFileSync(images.initrd));

/** Times to "@@VSTOR BOOTED", by case, printed at the end. */
export const bootTimes: string[] = [];

export interface Machine {
  guest: GuestSession;
  medium: BlockBackend;
  ide?: IdeController;
  dir: string;
}

export async function bootFromDisk(name: string, chipset: IdeChipset, openDisk: (dir: string) => Promise<BlockBackend>, withCd: boolean): Promise<Machine> {
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

export async function shutdown(m: Machine | undefined): Promise<void> {
  if (!m) return;
  await m.guest.stop().catch(() => undefined);
  await m.medium.close().catch(() => undefined);
  rmSync(m.dir, { recursive: true, force: true });
}

export async function sh(guest: GuestSession, script: string, timeoutMs?: number): Promise<string> {
  const r = await guest.run(script, timeoutMs);
  if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
  return r.output;
}

/** What the guest sees of the boot disk: its command line, the partition, the files on it. */
export const INSPECT = `
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

export function checkInspect(out: string): void {
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
export function checkLoader(guest: GuestSession): void {
  const t = guest.console.transcript;
  expect(t).toMatch(/SYSLINUX \d/);
  const loader = t.indexOf("SYSLINUX");
  const kernel = t.indexOf("Linux version");
  expect(kernel).toBeGreaterThan(loader);
  expect(t.indexOf("@@VSTOR BOOTED")).toBeGreaterThan(kernel);
  expect(t.indexOf("@@VSTOR AGENT")).toBeGreaterThan(t.indexOf("@@VSTOR READY"));
}

