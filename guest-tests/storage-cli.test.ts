/**
 * A user's path to a disk in the guest: createmedium (VDI), storagectl (IDE), storageattach (disk
 * and an empty DVD drive), startvm --script. The guest's ata_piix sees the disk and writes to it;
 * after power-off the data is in the VDI, as qemu-img reads it.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";

const home = mkdtempSync(join(tmpdir(), "vstor-home-"));
const work = mkdtempSync(join(tmpdir(), "vstor-disk-"));
const env = { ...process.env, VSTOR_HOME: home };
const cli = join(process.cwd(), "dist", "vstor.mjs");
const vstor = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { env, encoding: "utf8", timeout: 300_000 });

beforeAll(() => {
  const b = spawnSync(process.execPath, ["build.mjs"], { encoding: "utf8" });
  expect(b.status, b.stderr).toBe(0);
});

describe("a VDI on the IDE controller, set up with the CLI", () => {
  it("is seen and written by the guest, and the data lands in the VDI", () => {
    const disk = join(work, "data.vdi");
    expect(vstor("createvm", "--name", "io", "--register").status).toBe(0);
    const made = vstor("createmedium", "disk", "--filename", disk, "--size", "32");
    expect(made.status, made.stderr).toBe(0);
    expect(vstor("storagectl", "io", "--name", "IDE", "--add", "ide", "--controller", "ICH6").status).toBe(0);
    const att = vstor("storageattach", "io", "--storagectl", "IDE", "--port", "0", "--device", "0", "--type", "hdd", "--medium", disk);
    expect(att.status, att.stderr).toBe(0);
    const isoDir = join(work, "iso");
    mkdirSync(isoDir);
    writeFileSync(join(isoDir, "hello.txt"), "hello from an ISO image\n");
    const iso = join(work, "disc.iso");
    const mk = spawnSync("genisoimage", ["-quiet", "-V", "VSTOR_DISC", "-R", "-J", "-o", iso, isoDir], { encoding: "utf8" });
    expect(mk.status, mk.stderr).toBe(0);
    const notIso = vstor("storageattach", "io", "--storagectl", "IDE", "--port", "1", "--device", "0", "--type", "dvddrive", "--medium", disk);
    expect(notIso.status).toBe(1);
    expect(notIso.stderr).toContain("CD001");
    const cd = vstor("storageattach", "io", "--storagectl", "IDE", "--port", "1", "--device", "0", "--type", "dvddrive", "--medium", iso);
    expect(cd.status, cd.stderr).toBe(0);
    expect(vstor("showvminfo", "io").stdout).toMatch(/IDE ICH6[\s\S]*port 0 device 0: disk[\s\S]*port 1 device 0: DVD drive \(.*disc\.iso\)/);

    const script = join(work, "s.sh");
    writeFileSync(
      script,
      `echo "size $(cat /sys/block/sda/size)"
       ls /sys/bus/pci/drivers/ata_piix | grep -q 0000: && echo "ata_piix bound"
       hdparm -I /dev/sda | grep -i "model number"
       yes vstor-guest-wrote-this | head -c 1048576 | dd of=/dev/sda bs=64k seek=80 conv=fsync 2>/dev/null
       dd if=/dev/sda bs=64k skip=80 count=16 iflag=direct 2>/dev/null | md5sum
       test -b /dev/sr0 && echo "cd drive present"
       mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd && cat /mnt/cd/hello.txt
       blkid /dev/sr0
       sync`,
    );
    const r = vstor("startvm", "io", "--script", script, "--timeout", "300");
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain(`size ${(32 * 1024 * 1024) / 512}`);
    expect(r.stdout).toContain("ata_piix bound");
    expect(r.stdout).toMatch(/Model Number:\s+VBOX HARDDISK/);
    expect(r.stdout).toContain("cd drive present");
    expect(r.stdout).toContain("hello from an ISO image");
    expect(r.stdout).toContain('LABEL="VSTOR_DISC"');

    const raw = join(work, "data.raw");
    const conv = spawnSync("qemu-img", ["convert", "-f", "vdi", "-O", "raw", disk, raw], { encoding: "utf8" });
    expect(conv.status, conv.stderr).toBe(0);
    const bytes = readFileSync(raw);
    const written = bytes.subarray(80 * 65536, 80 * 65536 + 1048576).toString("latin1");
    expect(written.startsWith("vstor-guest-wrote-this\n")).toBe(true);
    expect(written.split("\n").filter((l) => l && l !== "vstor-guest-wrote-this").length).toBeLessThanOrEqual(1); // the cut-off last line
    expect(spawnSync("qemu-img", ["check", disk], { encoding: "utf8" }).status).toBe(0);
  });

  it("changes the disc of a running machine from another process; a guest eject persists", async () => {
    expect(vstor("createvm", "--name", "cd", "--register").status).toBe(0);
    expect(vstor("storagectl", "cd", "--name", "IDE", "--add", "ide", "--controller", "PIIX4").status).toBe(0);
    expect(vstor("storageattach", "cd", "--storagectl", "IDE", "--port", "1", "--device", "0", "--type", "dvddrive", "--medium", "emptydrive").status).toBe(0);
    const isoDir = join(work, "iso2");
    mkdirSync(isoDir);
    writeFileSync(join(isoDir, "late.txt"), "inserted while running\n");
    const iso = join(work, "late.iso");
    expect(spawnSync("genisoimage", ["-quiet", "-V", "LATE", "-o", iso, isoDir]).status).toBe(0);
    const script = join(work, "cd.sh");
    writeFileSync(
      script,
      `echo waiting-for-disc
       mkdir -p /mnt/cd
       for i in $(seq 300); do mount -t iso9660 -o ro /dev/sr0 /mnt/cd 2>/dev/null && break; sleep 0.2; done
       cat /mnt/cd/LATE.TXT /mnt/cd/late.txt 2>/dev/null
       umount /mnt/cd
       sleep 5   # the host checks the recorded disc before the guest ejects it
       sg_start --eject /dev/sr0 && echo ejected-by-guest`,
    );
    const child = spawn(process.execPath, [cli, "startvm", "cd", "--script", script, "--timeout", "300"], { env });
    let stdout = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number>((r) => child.on("exit", (code) => r(code ?? -1)));
    for (let i = 0; i < 600 && !stdout.includes("waiting-for-disc"); i++) await new Promise((r) => setTimeout(r, 500));
    expect(stdout).toContain("waiting-for-disc");
    const change = vstor("storageattach", "cd", "--storagectl", "IDE", "--port", "1", "--device", "0", "--type", "dvddrive", "--medium", iso);
    expect(change.status, change.stderr).toBe(0);
    expect(vstor("showvminfo", "cd").stdout).toMatch(/DVD drive \(.*late\.iso\)/);
    const code = await exited;
    expect(stdout).toContain("inserted while running");
    expect(code, stdout).toBe(0);
    expect(stdout).toContain("ejected-by-guest");
    expect(vstor("showvminfo", "cd").stdout).toContain("DVD drive (empty)"); // no --tempeject: the eject sticks
  });
});
