/**
 * v86Options: what v86 is given for a kernel boot and for a disk boot (no guest is started).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BASE_CMDLINE, BOOT_ORDER_CD_FIRST, BOOT_ORDER_DISK_FIRST, v86Options } from "./emulator.js";
import type { GuestImages } from "./guest-images.js";

const dir = mkdtempSync(join(tmpdir(), "vstor-emu-opts-"));
const put = (name: string, bytes: number) => {
  const p = join(dir, name);
  writeFileSync(p, new Uint8Array(bytes).fill(0x5a));
  return p;
};
const images: GuestImages = { dir, kernel: put("vmlinuz", 4096), initrd: put("initrd.img", 1024), bios: put("bios.bin", 2048) };

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("v86Options", () => {
  it("kernel boot (default): bzimage, initrd and the command line with guestEnv; v86's own boot order", () => {
    const o = v86Options({ images, guestEnv: { VSTOR_MODE: "agent" } });
    expect((o.bzimage as { buffer: ArrayBuffer }).buffer.byteLength).toBe(4096);
    expect((o.initrd as { buffer: ArrayBuffer }).buffer.byteLength).toBe(1024);
    expect(o.cmdline).toBe(`${BASE_CMDLINE} VSTOR_MODE=agent`);
    expect(o.boot_order).toBeUndefined();
    // A script rides on a second archive after the initramfs.
    const s = v86Options({ images, script: "echo hi" });
    expect((s.initrd as { buffer: ArrayBuffer }).buffer.byteLength).toBeGreaterThan(1024);
  });

  it("disk boot: no kernel, initramfs or command line; the hard disk first in SeaBIOS's CMOS boot order", () => {
    const o = v86Options({ images, bootFrom: "disk", guestEnv: { VSTOR_MODE: "agent" }, memoryMiB: 96 });
    expect(o.bzimage).toBeUndefined();
    expect(o.initrd).toBeUndefined();
    expect(o.cmdline).toBeUndefined();
    expect(o.hda).toBeUndefined();
    expect(o.boot_order).toBe(BOOT_ORDER_DISK_FIRST);
    expect(BOOT_ORDER_DISK_FIRST & 0xf).toBe(2); // first nibble: hard disk
    expect(o.memory_size).toBe(96 << 20);
    expect((o.bios as { buffer: ArrayBuffer }).buffer.byteLength).toBe(2048);
  });

  it("CD boot: as a disk boot, with the CD-ROM first in the CMOS boot order", () => {
    const o = v86Options({ images, bootFrom: "cd" });
    expect(o.bzimage).toBeUndefined();
    expect(o.cdrom).toBeUndefined();
    expect(o.boot_order).toBe(BOOT_ORDER_CD_FIRST);
    expect(BOOT_ORDER_CD_FIRST & 0xf).toBe(3); // first nibble: CD-ROM
  });

  it("refuses a script with a disk boot (there is no initramfs to carry it)", () => {
    expect(() => v86Options({ images, bootFrom: "disk", script: "true" })).toThrow(/kernel boot/);
  });
});
