/**
 * SeaBIOS boots a CD from our IDE controller: build/guest/boot.iso (El Torito, no emulation,
 * isolinux) in the ATAPI drive on the PIIX4 secondary master, with a blank (unbootable) disk on the
 * primary master. v86 gets no kernel, initramfs or command line (bootFrom "cd": CD first in the
 * CMOS boot order). SeaBIOS reads the boot catalog through our MMC target (READ(10) of 2048-byte
 * sectors), runs isolinux, isolinux loads the kernel and the initramfs from the ISO 9660 file
 * system through INT 13h, and the guest comes up in agent mode. The same through a SATA DVD
 * drive on our AHCI controller (SeaBIOS's AHCI driver, ATAPI over FISes).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAtapiCdrom } from "../devices/atapi/atapi-scsi.js";
import { AhciController } from "../devices/ahci/index.js";
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

describe.runIf(bootIso)("SeaBIOS boots boot.iso from a SATA DVD drive (AHCI port 1, a blank disk on port 0)", () => {
  let sata: GuestSession | undefined;
  const opened: BlockBackend[] = [];
  let sdir: string;

  beforeAll(async () => {
    sdir = mkdtempSync(join(tmpdir(), "vstor-boot-sata-cd-"));
    const opener = new NodeFileOpener();
    const blank = await createRaw(opener, join(sdir, "blank.raw"), 16 << 20);
    const { medium: disc } = await openIso(opener, join(images.dir, "boot.iso"));
    opened.push(blank, disc);
    sata = await bootGuest({
      bootFrom: "cd",
      setup: (host) => {
        new AhciController(host, {
          portCount: 2,
          ports: { 0: { kind: "ata", medium: blank }, 1: { kind: "atapi", packetHandler: createAtapiCdrom({ medium: disc }).handler, model: "VBOX CD-ROM" } },
        });
      },
      bootTimeoutMs: 300_000,
    });
  }, 600_000);

  afterAll(async () => {
    await sata?.stop().catch(() => undefined);
    for (const m of opened) await m.close().catch(() => undefined);
    if (sdir) rmSync(sdir, { recursive: true, force: true });
  });

  it("went SeaBIOS (AHCI) -> isolinux -> kernel, and the guest sees the disc on the SATA drive", async () => {
    expect(sata!.console.transcript).toMatch(/ISOLINUX \d/);
    const r = await sata!.run("cat /proc/cmdline; readlink /sys/block/sr0; blkid /dev/sr0");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("vstor.boot=iso");
    expect(r.output).toMatch(/0000:00:0d\.0\/ata2\//);
    expect(r.output).toMatch(new RegExp(`LABEL="${bootIso!.volumeId}"`));
  });
});

it("build/guest has boot.iso (make images)", () => {
  expect(bootIso, "manifest.json has no boot.iso: run node images/build.mjs").toBeTruthy();
});
