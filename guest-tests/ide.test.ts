/**
 * The IDE controller (devices/ide) in a real Linux guest: an ICH6 IDE function at 00:01.1 with a
 * 64 MiB raw image on the primary master and an empty ATAPI CD drive on the secondary master,
 * replacing v86's built-in IDE. ata_piix must bind, find both drives, run the disk with UDMA
 * through the bus master, read what the host wrote, write what the host then finds in the file,
 * and carry an ext2 file system.
 *
 * Disk map (bytes): sector 1 text | 1..33 MiB partition 1 (ext2) | 34 MiB+7 sectors text |
 * 40..44 MiB host pattern | 45 MiB guest-written text | 48..63 MiB vstor-io | last sector text.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdeController } from "../devices/ide/controller.js";
import { NoMediumAtapi } from "../devices/ide/no-medium.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import { createRaw, type RawBackend } from "../media/formats/raw/raw.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { md5, patternRegion, textSector, vstorIoSector } from "./support/ide-pattern.js";

const MiB = 1 << 20;
const DISK_BYTES = 64 * MiB;
const TEXT = [
  { offset: 512, text: "VSTOR-IDE-SECTOR-ONE" },
  { offset: 34 * MiB + 7 * 512, text: "VSTOR-IDE-MIDDLE-SECTOR" },
  { offset: DISK_BYTES - 512, text: "VSTOR-IDE-LAST-SECTOR" },
];
const REGION = { offset: 40 * MiB, bytes: 4 * MiB };
const GUEST_TEXT = { offset: 45 * MiB, text: "GUEST-WROTE-THIS-THROUGH-PIIX" };
const VSTOR_IO = { offset: 48 * MiB, bytes: 15 * MiB, seed: 7 };
const PARTITION = { startSector: 2048, sectors: 65536 };

let dir: string;
let imagePath: string;
let medium: RawBackend;
let guest: GuestSession;
let ide: IdeController | undefined;
const traces: string[] = [];
const region = patternRegion(REGION.bytes);

async function sh(script: string, timeoutMs?: number): Promise<string> {
  const r = await guest.run(script, timeoutMs);
  if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
  return r.output;
}

describe("IDE (ICH6) in a Linux guest", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "vstor-ide-"));
    imagePath = join(dir, "disk.raw");
    medium = await createRaw(new NodeFileOpener(), imagePath, DISK_BYTES);
    for (const t of TEXT) await medium.write(t.offset, textSector(t.text));
    await medium.write(REGION.offset, region);
    await medium.flush();
    guest = await bootGuest({
      setup: (host) => {
        ide = new IdeController(host, {
          chipset: "ich6",
          primary: { master: { kind: "ata", medium, serial: "VBIDE-TEST-0001", model: "VSTOR IDE TEST DISK" } },
          secondary: { master: { kind: "atapi", packetHandler: new NoMediumAtapi() } },
        });
      },
      onTrace: (device, message) => traces.push(`${device}: ${message}`),
    });
  }, 600_000);

  afterAll(async () => {
    await guest?.stop();
    await medium?.close().catch(() => undefined);
    if (traces.length) console.log(`device traces (${traces.length}):\n${traces.slice(0, 40).join("\n")}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("binds ata_piix to 8086:269e at 00:01.1 and finds the disk and the ATAPI drive", async () => {
    expect(ide?.pci.devfn).toBe(0x09);
    const out = await sh(`
      ls /sys/bus/pci/drivers/ata_piix
      d=/sys/bus/pci/devices/0000:00:01.1
      echo "id $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"
      echo "sda $(cat /sys/block/sda/size)"
      readlink /sys/block/sda
      ls /dev/sr0 /dev/sda
      echo "sr0 $(cat /sys/block/sr0/device/vendor) $(cat /sys/block/sr0/device/model)"
      for d in /sys/class/ata_device/dev*; do echo "$(basename $d) class=$(cat $d/class) xfer=$(cat $d/xfer_mode)"; done
      dmesg | grep -E 'ata[12]|scsi [01]:|sr [01]:|sd 0:' | sed 's/^\\[[ .0-9]*\\] //'`);
    console.log(out);
    expect(out).toContain("0000:00:01.1");
    expect(out).toContain("id 0x8086 0x269e 0x010180");
    expect(out).toContain(`sda ${DISK_BYTES / 512}`);
    expect(out).toMatch(/0000:00:01\.1\/ata1\/.*\/sda/);
    expect(out).toMatch(/sr0 VBOX\s+CD-ROM/);
    expect(out).toMatch(/ata1: PATA max UDMA\/100 cmd 0x1f0 ctl 0x3f6 bmdma 0x[0-9a-f]+ irq 14/);
    expect(out).toMatch(/ata2: PATA max UDMA\/100 cmd 0x170 ctl 0x376 bmdma 0x[0-9a-f]+ irq 15/);
    expect(out).toContain("dev1.0 class=ata xfer=XFER_UDMA_5");
    expect(out).toContain("dev2.0 class=atapi xfer=XFER_UDMA_5");
    expect(out).toMatch(/ata2\.00: ATAPI: VBOX CD-ROM/);
  });

  it("shows our IDENTIFY data and DMA modes through hdparm -I", async () => {
    const out = await sh("hdparm -I /dev/sda");
    console.log(out);
    expect(out).toMatch(/Model Number:\s+VSTOR IDE TEST DISK/);
    expect(out).toMatch(/Serial Number:\s+VBIDE-TEST-0001/);
    expect(out).toMatch(/DMA:.*\*udma5/);
    expect(out).toMatch(/LBA48\s+user addressable sectors:\s+131072/);
  });

  it("answers smartctl: identity, SMART enabled, health PASSED, our attributes, no logs claimed", async () => {
    // smartctl's exit status is a bit mask of what failed: every command it sends must succeed.
    const out = await sh(`
      smartctl -i -H -A -c /dev/sda; echo "rc=$?"
      smartctl -s off /dev/sda >/dev/null; echo "after off: $(smartctl -i /dev/sda | grep 'SMART support is: [ED]')"
      smartctl -s on /dev/sda | grep -i 'SMART Enabled'
      echo "after on: $(smartctl -i /dev/sda | grep 'SMART support is: [ED]')"`);
    console.log(out);
    expect(out).toMatch(/Device Model:\s+VSTOR IDE TEST DISK/);
    expect(out).toMatch(/Serial Number:\s+VBIDE-TEST-0001/);
    expect(out).toMatch(/User Capacity:\s+67,108,864 bytes/);
    expect(out).toMatch(/SMART support is:\s+Enabled/);
    expect(out).toMatch(/SMART overall-health self-assessment test result: PASSED/);
    expect(out).toMatch(/^\s*5 Reallocated_Sector_Ct\s+0x0033\s+100\s+100\s+036\s.*\s0$/m);
    expect(out).toMatch(/^\s*9 Power_On_Hours\s+0x0032\s+100\s+100\s+000\s/m);
    expect(out).toMatch(/^\s*12 Power_Cycle_Count\s+0x0032\s+100\s+100\s+000\s.*\s1$/m);
    expect(out).toMatch(/^194 Temperature_Celsius\s+0x0022\s+070\s+070\s+000\s.*\s30$/m);
    // We offer no off-line collection, self-tests or SMART error log, and say so.
    expect(out).toMatch(/capabilities:\s+\(0x00\)\s+Offline data collection not supported/);
    expect(out).toMatch(/Error logging capability:\s+\(0x00\)\s+Error logging NOT supported/);
    expect(out).toMatch(/rc=0\b/);
    expect(out).toMatch(/after off: SMART support is: Disabled/);
    expect(out).toMatch(/after on: SMART support is: Enabled/);
  });

  it("reads what the host wrote (direct I/O through the bus master)", async () => {
    const out = await sh(`
      ${TEXT.map((t) => `dd if=/dev/sda bs=512 skip=${t.offset / 512} count=1 iflag=direct 2>/dev/null | head -c ${t.text.length}; echo`).join("\n")}
      echo "region $(dd if=/dev/sda bs=1M skip=${REGION.offset / MiB} count=${REGION.bytes / MiB} iflag=direct 2>/dev/null | md5sum)"`);
    for (const t of TEXT) expect(out).toContain(t.text);
    expect(out).toContain(`region ${md5(region)}`);
  });

  it("reads sequentially at a measurable rate (dd iflag=direct bs=1M, vstor-io)", async () => {
    const out = await sh(`
      up() { cut -d' ' -f1 /proc/uptime; }
      t0=$(up); dd if=/dev/sda of=/dev/null bs=1M count=48 iflag=direct 2>/dev/null; t1=$(up)
      echo "dd-1M $t0 $t1"
      t0=$(up); dd if=/dev/sda of=/dev/null bs=64k count=768 iflag=direct 2>/dev/null; t1=$(up)
      echo "dd-64k $t0 $t1"
      vstor-io --dev /dev/sda --op read --bs 1m --size 48m --qd 1
      vstor-io --dev /dev/sda --op randread --bs 4k --size 32m --count 500 --qd 1`);
    const rate = (tag: string) => {
      const m = new RegExp(`${tag} ([0-9.]+) ([0-9.]+)`).exec(out)!;
      return (48 * MiB) / 1e6 / Math.max(0.01, Number(m[2]) - Number(m[1]));
    };
    console.log(`guest sequential read: dd bs=1M ${rate("dd-1M").toFixed(1)} MB/s, dd bs=64k ${rate("dd-64k").toFixed(1)} MB/s\n${out}`);
    expect(out).toMatch(/op=read bytes=50331648/);
  });

  it("writes with vstor-io (qd 1) and verifies it back", async () => {
    const args = `--dev /dev/sda --offset ${VSTOR_IO.offset} --size ${VSTOR_IO.bytes} --bs 64k --qd 1 --seed ${VSTOR_IO.seed}`;
    const out = await sh(`vstor-io ${args} --op write && vstor-io ${args} --op verify`, 300_000);
    console.log(out);
    expect(out).toMatch(/op=write bytes=15728640/);
    expect(out).toMatch(/op=verify bytes=15728640 .*verified=yes/);
  });

  it("writes a text sector with dd (buffered, then sync)", async () => {
    await sh(`printf '${GUEST_TEXT.text}' | dd of=/dev/sda bs=512 seek=${GUEST_TEXT.offset / 512} conv=sync,notrunc 2>/dev/null; sync`);
  });

  it("carries an ext2 file system: sfdisk, mke2fs, mount, write, umount, e2fsck clean", async () => {
    const out = await sh(`
      set -e
      echo 'start=${PARTITION.startSector}, size=${PARTITION.sectors}, type=83' | sfdisk -q /dev/sda
      for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/sda1 ] && break; sleep 0.2; done
      mke2fs -q -F /dev/sda1
      mkdir -p /mnt/ide
      mount -t ext2 /dev/sda1 /mnt/ide
      dd if=/dev/urandom of=/mnt/ide/file bs=64k count=32 2>/dev/null
      a=$(md5sum < /mnt/ide/file)
      umount /mnt/ide
      e2fsck -fn /dev/sda1 > /tmp/fsck.out 2>&1 && echo "fsck clean" || { cat /tmp/fsck.out; exit 1; }
      mount -t ext2 /dev/sda1 /mnt/ide
      b=$(md5sum < /mnt/ide/file)
      umount /mnt/ide
      [ "$a" = "$b" ] && echo "file survives remount"`, 300_000);
    expect(out).toContain("fsck clean");
    expect(out).toContain("file survives remount");
  });

  it("shows the CD drive as /dev/sr0 with no medium, and no disk errors in the kernel log", async () => {
    const out = await sh(`
      dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>&1 | head -1 || true
      echo "errors: $(dmesg | grep -cE 'ata1.*(failed command|exception Emask)|I/O error, dev sda')"`);
    console.log(out);
    expect(out).toMatch(/No medium found|can't open|No such device/i);
    expect(out).toContain("errors: 0");
  });

  it("left the guest's data in the image file (read on the host after the guest stopped)", async () => {
    await guest.stop();
    await medium.close();
    const image = readFileSync(imagePath);
    expect(image.length).toBe(DISK_BYTES);
    // vstor-io's pattern, sector by sector
    let bad = -1;
    for (let off = VSTOR_IO.offset; off < VSTOR_IO.offset + VSTOR_IO.bytes; off += 512) {
      if (Buffer.compare(image.subarray(off, off + 512), vstorIoSector(off / 512, VSTOR_IO.seed)) !== 0) {
        bad = off;
        break;
      }
    }
    expect(bad).toBe(-1);
    expect(image.subarray(GUEST_TEXT.offset, GUEST_TEXT.offset + GUEST_TEXT.text.length).toString()).toBe(GUEST_TEXT.text);
    expect(image.readUInt16LE(510)).toBe(0xaa55); // sfdisk's MBR
    expect(image[446 + 4]).toBe(0x83);
    expect(image.readUInt16LE(PARTITION.startSector * 512 + 1024 + 56)).toBe(0xef53); // ext2 superblock magic
    expect(md5(image.subarray(REGION.offset, REGION.offset + REGION.bytes))).toBe(md5(region)); // untouched
    for (const t of TEXT.slice(1)) expect(image.subarray(t.offset, t.offset + t.text.length).toString()).toBe(t.text);
  });
});

/**
 * PIIX3 (multiword DMA only) with a master and a slave disk on the primary channel and nothing on
 * the secondary: device selection, the slave's own interrupts and an empty channel, as ata_piix
 * and SeaBIOS see them.
 */
describe("IDE (PIIX3) with master and slave disks in a Linux guest", () => {
  const SMALL = 8 * MiB;
  let pdir: string;
  const paths: string[] = [];
  const media: RawBackend[] = [];
  let pguest: GuestSession;
  let pide: IdeController | undefined;

  const psh = async (script: string, timeoutMs?: number): Promise<string> => {
    const r = await pguest.run(script, timeoutMs);
    if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
    return r.output;
  };

  beforeAll(async () => {
    pdir = mkdtempSync(join(tmpdir(), "vstor-piix3-"));
    for (const name of ["master", "slave"]) {
      const path = join(pdir, `${name}.raw`);
      const m = await createRaw(new NodeFileOpener(), path, SMALL);
      await m.write(4096, textSector(`VSTOR-PIIX3-${name.toUpperCase()}-DISK`));
      paths.push(path);
      media.push(m);
    }
    pguest = await bootGuest({
      setup: (host) => {
        pide = new IdeController(host, {
          chipset: "piix3",
          primary: { master: { kind: "ata", medium: media[0]! }, slave: { kind: "ata", medium: media[1]!, model: "VSTOR SLAVE" } },
        });
      },
    });
  }, 600_000);

  afterAll(async () => {
    await pguest?.stop();
    for (const m of media) await m.close().catch(() => undefined);
    if (pdir) rmSync(pdir, { recursive: true, force: true });
  });

  it("finds both disks on the primary channel with MWDMA2, and nothing on the empty secondary", async () => {
    expect(pide?.pci.devfn).toBe(0x09);
    const out = await psh(`
      d=/sys/bus/pci/devices/0000:00:01.1
      echo "id $(cat $d/vendor) $(cat $d/device) driver $(basename $(readlink $d/driver))"
      echo "sizes $(cat /sys/block/sda/size) $(cat /sys/block/sdb/size)"
      echo "models $(cat /sys/block/sda/device/model) / $(cat /sys/block/sdb/device/model)"
      for d in /sys/class/ata_device/dev*; do echo "$(basename $d) class=$(cat $d/class) xfer=$(cat $d/xfer_mode)"; done
      ls /dev/sr0 2>&1 || true
      for n in a b; do dd if=/dev/sd$n bs=512 skip=8 count=1 iflag=direct 2>/dev/null | head -c 24; echo; done`);
    console.log(out);
    expect(out).toContain("id 0x8086 0x7010 driver ata_piix");
    expect(out).toContain(`sizes ${SMALL / 512} ${SMALL / 512}`);
    expect(out).toMatch(/models VBOX HARDDISK\s+\/ VSTOR SLAVE/);
    expect(out).toContain("dev1.0 class=ata xfer=XFER_MW_DMA_2");
    expect(out).toContain("dev1.1 class=ata xfer=XFER_MW_DMA_2");
    expect(out).not.toMatch(/dev2\.[01] class=(ata|atapi)/);
    expect(out).toMatch(/No such file/);
    expect(out).toContain("VSTOR-PIIX3-MASTER-DISK");
    expect(out).toContain("VSTOR-PIIX3-SLAVE-DISK");
  });

  it("writes both disks at once (vstor-io on each, in parallel) and verifies", async () => {
    const args = (dev: string, seed: number) => `--dev ${dev} --offset 1m --size 6m --bs 32k --qd 1 --seed ${seed}`;
    const out = await psh(`
      vstor-io ${args("/dev/sda", 11)} --op write > /tmp/a.out 2>&1 &
      vstor-io ${args("/dev/sdb", 12)} --op write > /tmp/b.out 2>&1 &
      wait
      vstor-io ${args("/dev/sda", 11)} --op verify && vstor-io ${args("/dev/sdb", 12)} --op verify
      cat /tmp/a.out /tmp/b.out`, 300_000);
    console.log(out);
    expect(out.match(/op=verify .*verified=yes/g)).toHaveLength(2);
    await pguest.stop();
    for (const m of media) await m.close();
    const [a, b] = paths.map((p) => readFileSync(p));
    for (const [img, seed] of [[a!, 11], [b!, 12]] as const) {
      for (const lba of [2048, 2049, 5000, 14335]) {
        expect(Buffer.compare(img.subarray(lba * 512, lba * 512 + 512), vstorIoSector(lba, seed))).toBe(0);
      }
    }
  });
});
