/**
 * SeaBIOS boots a CD from our IDE controller: build/guest/boot.iso (El Torito, no emulation,
 * isolinux) in the ATAPI drive on the PIIX4 secondary master, with a blank (unbootable) disk on the
 * primary master. v86 gets no kernel, initramfs or command line (bootFrom "cd": CD first in the
 * CMOS boot order). SeaBIOS reads the boot catalog through our MMC target (READ(10) of 2048-byte
 * sectors), runs isolinux, isolinux loads the kernel and the initramfs from the ISO 9660 file
 * system through INT 13h, and the guest comes up in agent mode.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAtapiCdrom } from "../devices/atapi/atapi-scsi.js";
import { IdeController } from "../devices/ide/controller.js";
import { defaultIdeLayout } from "../devices/ide/layout.js";
import { guestImages } from "../machine/guest-images.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import type { BlockBackend } from "../media/block.js";
import { createRaw } from "../media/formats/raw/raw.js";
import { openIso } from "../media/formats/iso/iso.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";

interface BootIsoManifest {
  size: number;
  cmdline: string;
  volumeId: string;
}

const images = guestImages();
const manifest = JSON.parse(readFileSync(join(images.dir, "manifest.json"), "utf8")) as {
  files: Record<string, unknown> & { "boot.iso"?: BootIsoManifest };
};
const bootIso = manifest.files["boot.iso"];
const md5 = (data: Uint8Array) => createHash("md5").update(data).digest("hex");

let dir: string;
let guest: GuestSession | undefined;
const media: BlockBackend[] = [];

async function sh(script: string): Promise<string> {
  const r = await guest!.run(script);
  if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
  return r.output;
}

describe.runIf(bootIso)("SeaBIOS boots boot.iso (El Torito, isolinux) from the IDE (PIIX4) CD drive", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "vstor-boot-cd-"));
    const opener = new NodeFileOpener();
    const blank = await createRaw(opener, join(dir, "blank.raw"), 16 << 20);
    const { medium: iso } = await openIso(opener, join(images.dir, "boot.iso"));
    media.push(blank, iso);
    const cd = createAtapiCdrom({ medium: iso });
    guest = await bootGuest({
      bootFrom: "cd",
      setup: (host) => {
        new IdeController(host, { chipset: "piix4", ...defaultIdeLayout({ disks: [blank], cdrom: cd.handler }) });
      },
      bootTimeoutMs: 300_000,
    });
  }, 600_000);

  afterAll(async () => {
    await guest?.stop().catch(() => undefined);
    for (const m of media) await m.close().catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("went SeaBIOS -> isolinux -> kernel -> init, with isolinux.cfg's command line", async () => {
    const t = guest!.console.transcript;
    expect(t).toMatch(/ISOLINUX \d/);
    expect(t.indexOf("Linux version")).toBeGreaterThan(t.indexOf("ISOLINUX"));
    expect(t.indexOf("@@VSTOR BOOTED")).toBeGreaterThan(t.indexOf("Linux version"));
    const cmdline = await sh("cat /proc/cmdline");
    expect(cmdline).toContain(bootIso!.cmdline);
    expect(cmdline).toContain("vstor.boot=iso");
  });

  it("sees the boot CD as /dev/sr0 with the ISO's volume ID and the kernel and initramfs on it", async () => {
    const out = await sh(`
      set -e
      echo "sr0 $(cat /sys/block/sr0/size)"
      blkid /dev/sr0
      mkdir -p /mnt && mount -t iso9660 -o ro /dev/sr0 /mnt
      echo "files: $(ls /mnt /mnt/isolinux | tr '\\n' ' ')"
      echo "md5 vmlinuz $(md5sum < /mnt/vmlinuz)"
      echo "md5 initrd $(md5sum < /mnt/initrd.img)"
      umount /mnt
      echo "errors: $(dmesg | grep -cE 'failed command|exception Emask|I/O error')"`);
    expect(out).toContain(`sr0 ${bootIso!.size / 512}`);
    expect(out).toMatch(new RegExp(`/dev/sr0:.*LABEL="${bootIso!.volumeId}".*TYPE="iso9660"`));
    expect(out).toMatch(/files: .*isolinux\.bin.*isolinux\.cfg/);
    expect(out).toContain(`md5 vmlinuz ${md5(readFileSync(images.kernel))}`);
    expect(out).toContain(`md5 initrd ${md5(readFileSync(images.initrd))}`);
    expect(out).toContain("errors: 0");
  });
});

it("build/guest has boot.iso (make images)", () => {
  expect(bootIso, "manifest.json has no boot.iso: run node images/build.mjs").toBeTruthy();
});
