/**
 * PIIX4 with all four positions used (three disks and the CD drive with an ISO), in a real Linux
 * guest: sizes and UDMA modes as ata_piix sees them, raw 2352-byte CD reads through SG_IO (READ CD
 * with sync, header and EDC/ECC), and a host read error injected with the fault wrapper reaching
 * the guest as an I/O error, not a hang.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAtapiCdrom } from "../devices/atapi/index.js";
import { IdeController } from "../devices/ide/controller.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import { MediumError } from "../media/block.js";
import { openIso } from "../media/formats/iso/iso.js";
import { createRaw, openRaw, type RawBackend } from "../media/formats/raw/raw.js";
import { FaultControl, HeldFileOpener } from "../media/io/fault-io.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";

const MiB = 1 << 20;
const BAD_OFFSET = 8 * MiB; // reads of this sector on disk 0 fail on the host
let guest: GuestSession;
const faults = new FaultControl();
const disks: RawBackend[] = [];

async function sh(script: string, timeoutMs?: number): Promise<string> {
  const r = await guest.run(script, timeoutMs);
  if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
  return r.output;
}

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "vstor-piix4-"));
  const node = new NodeFileOpener();
  for (const [i, mb] of [16, 24, 32].entries()) {
    const path = join(dir, `d${i}.raw`);
    await (await createRaw(node, path, mb * MiB)).close();
    // Disk 0 goes through the fault wrapper so the test can make one sector unreadable.
    disks.push(await openRaw(i === 0 ? new HeldFileOpener(node, faults) : node, path));
  }
  mkdirSync(join(dir, "iso"));
  writeFileSync(join(dir, "iso", "data.bin"), new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff));
  const isoPath = join(dir, "disc.iso");
  expect(spawnSync("genisoimage", ["-quiet", "-V", "PIIX4CD", "-o", isoPath, join(dir, "iso")]).status).toBe(0);
  const { medium: iso } = await openIso(node, isoPath);
  const cd = createAtapiCdrom({ medium: iso });
  guest = await bootGuest({
    setup: (host) =>
      void new IdeController(host, {
        chipset: "piix4",
        primary: { master: { kind: "ata", medium: disks[0] }, slave: { kind: "ata", medium: disks[1] } },
        secondary: { master: { kind: "atapi", packetHandler: cd.handler }, slave: { kind: "ata", medium: disks[2] } },
      }),
  });
});
afterAll(async () => {
  await guest?.stop();
  for (const d of disks) await d.close().catch(() => undefined);
});

describe("PIIX4 IDE with all four positions in a Linux guest", () => {
  it("finds three disks with their sizes at UDMA2 and the CD drive", async () => {
    const out = await sh(`
      for d in sda sdb sdc; do echo "$d $(cat /sys/block/$d/size)"; done
      ls /sys/bus/pci/drivers/ata_piix
      cat /sys/class/ata_device/*/xfer_mode
      test -b /dev/sr0 && echo "sr0 present"`);
    const sizes = Object.fromEntries([...out.matchAll(/^(sd[abc]) (\d+)$/gm)].map((m) => [m[1], Number(m[2]) / 2048]));
    expect(Object.values(sizes).sort((a, b) => a - b)).toEqual([16, 24, 32]);
    expect(out).toContain("0000:00:01.1");
    expect((out.match(/^XFER_UDMA_2$/gm) ?? []).length, out).toBe(4); // PIIX4 offers UDMA 0-2
    expect(out).toContain("sr0 present");
  });

  it("reads the ISO's files, and raw 2352-byte sectors with a valid sync pattern and header", async () => {
    const out = await sh(`
      mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd
      md5sum /mnt/cd/data.bin
      # READ CD (BEh), LBA 16, one sector, sync+header+user data+EDC/ECC (flags F8h)
      sg_raw -r 2352 -o /tmp/raw.bin /dev/sr0 be 00 00 00 00 10 00 00 01 f8 00 00 >/dev/null 2>&1; echo "sg_raw $?"
      hexdump -v -e '16/1 "%02x" "\\n"' -n 16 /tmp/raw.bin
      dd if=/tmp/raw.bin bs=1 skip=17 count=5 2>/dev/null
      echo
      umount /mnt/cd`);
    const expected = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    const md5 = spawnSync("md5sum", { input: expected, encoding: "utf8" }).stdout.split(" ")[0];
    expect(out).toContain(`${md5}  /mnt/cd/data.bin`);
    expect(out).toContain("sg_raw 0");
    // sync (00 FF*10 00), then MSF of LBA 16 = 00:02:16 in BCD, mode 1
    expect(out).toContain("00ffffffffffffffffffff0000021601");
    expect(out).toContain("CD001"); // user data of sector 16 starts at byte 16: type, "CD001"
  });

  it("reports an injected host read error as an I/O error, and the disk works again afterwards", async () => {
    faults.failWhen((r) => r.op === "read" && r.pos <= BAD_OFFSET && BAD_OFFSET < r.pos + r.length, new MediumError("io", "injected read error"), 1000);
    const out = await sh(`
      dd if=/dev/sda of=/dev/null bs=4096 skip=${BAD_OFFSET / 4096} count=1 iflag=direct 2>&1; echo "dd exit $?"
      dmesg -s 1000000 | grep -iE "I/O error|UNC|media error" | tail -3`, 180_000);
    expect(out).toMatch(/dd exit [1-9]/);
    expect(out).toMatch(/I\/O error/i);
    faults.revive();
    const again = await sh(`dd if=/dev/sda of=/dev/null bs=4096 skip=${BAD_OFFSET / 4096} count=1 iflag=direct 2>&1; echo "dd exit $?"`);
    expect(again).toContain("dd exit 0");
  });
});
