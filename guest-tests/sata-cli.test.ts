/**
 * The machine `make run` builds, through the CLI as a user would: the guest's boot disk cloned
 * into a dynamic VDI (clonemedium, then resized) on port 0 of a 4-port SATA controller, a SATA
 * DVD drive with an ISO on port 1, `modifyvm --boot1 disk`. SeaBIOS boots the VDI through our
 * AHCI controller; startvm gives an interactive shell (a real pty); from another process
 * `storageattach` hot-plugs a disk into port 2 and pulls it out again, and the guest sees both;
 * `controlvm reset` boots through the BIOS again back to a shell.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pty from "node-pty";
import { waitForText } from "./support/pty-wait.js";
import { beforeAll, describe, expect, it } from "vitest";

const home = mkdtempSync(join(tmpdir(), "vstor-sata-home-"));
const env = { ...process.env, VSTOR_HOME: home, VSTOR_PROGRESS: "0" };
const cli = join(process.cwd(), "dist", "vstor.mjs");
const guestDir = join(process.cwd(), "build", "guest");

function vstor(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: "utf8", timeout: 300_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}
function ok(...args: string[]): string {
  const r = vstor(...args);
  expect(r.status, r.out).toBe(0);
  return r.out;
}


beforeAll(() => {
  const b = spawnSync(process.execPath, ["build.mjs"], { encoding: "utf8" });
  expect(b.status, b.stderr).toBe(0);
});

describe("a SATA machine booted from its VDI by SeaBIOS, driven through the CLI", () => {
  const disk = join(home, "boot.vdi");
  const extra = join(home, "extra.vdi");

  it("is set up like make run's machine", () => {
    ok("createvm", "--name", "sata", "--register");
    ok("clonemedium", "disk", join(guestDir, "boot.img"), disk, "--format", "VDI");
    ok("modifymedium", "disk", disk, "--resize", "128");
    ok("storagectl", "sata", "--name", "SATA", "--add", "sata", "--controller", "IntelAhci", "--portcount", "4");
    ok("storageattach", "sata", "--storagectl", "SATA", "--port", "0", "--device", "0", "--type", "hdd", "--medium", disk);
    ok("storageattach", "sata", "--storagectl", "SATA", "--port", "1", "--device", "0", "--type", "dvddrive", "--medium", join(guestDir, "boot.iso"));
    ok("modifyvm", "sata", "--boot1", "disk");
    ok("createmedium", "disk", "--filename", extra, "--size", "16");
    const info = ok("showvminfo", "sata");
    expect(info).toMatch(/Boot device:\s+disk/);
    expect(info).toMatch(/SATA: SATA IntelAhci, 4 ports/);
  });

  it("boots from the SATA disk to a shell, hot-plugs a disk from another process, resets and powers off", async () => {
    const term = pty.spawn(process.execPath, [cli, "startvm", "sata"], { env, cols: 120, rows: 40 });
    let screen = "";
    term.onData((d) => (screen += d));
    const exited = new Promise<number>((resolve) => term.onExit((e) => resolve(e.exitCode)));
    await waitForText(() => screen, /SYSLINUX \d/, 240_000);
    await waitForText(() => screen, "interactive shell", 240_000);
    await new Promise((r) => setTimeout(r, 1000));
    term.write("cat /proc/cmdline; echo sda=$(cat /sys/block/sda/size) sr0=$(cat /sys/block/sr0/device/model)\r");
    await waitForText(() => screen, /sda=262144 sr0=CD-ROM/, 60_000);
    expect(screen).toContain("vstor.boot=disk");

    // Hot-plug from another process, through the running VM's control channel.
    const plug = vstor("storageattach", "sata", "--storagectl", "SATA", "--port", "2", "--type", "hdd", "--medium", extra);
    expect(plug.status, plug.out).toBe(0);
    expect(plug.out).toMatch(/Hot-plugged medium/);
    term.write("for i in $(seq 1 100); do [ -b /dev/sdb ] && break; sleep 0.1; done; echo sdb=$(cat /sys/block/sdb/size)\r");
    await waitForText(() => screen, "sdb=32768", 60_000);
    expect(ok("showvminfo", "sata")).toMatch(/port 2 device 0: disk \{[0-9a-f-]{36}\}, hot-pluggable/);
    // A disk attached without --hotpluggable cannot be pulled while the machine runs.
    expect(vstor("storageattach", "sata", "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", "none").out).toMatch(/not hot-pluggable|hot-plug/);
    const unplug = vstor("storageattach", "sata", "--storagectl", "SATA", "--port", "2", "--type", "hdd", "--medium", "none");
    expect(unplug.status, unplug.out).toBe(0);
    // libata retries the pulled link (5 s cool-down) before it detaches the disk: allow two
    // minutes. The quotes keep the terminal's echo of the command from matching the answer.
    term.write("for i in $(seq 1 1200); do [ -b /dev/sdb ] || break; sleep 0.1; done; [ -b /dev/sdb ] || echo sdb-go''ne\r");
    await waitForText(() => screen, "sdb-gone", 180_000);
    expect(ok("showvminfo", "sata")).not.toMatch(/port 2 device 0/);

    const mark = screen.length;
    ok("controlvm", "sata", "reset");
    await waitForText(() => screen.slice(mark), /SYSLINUX \d/, 240_000);
    await waitForText(() => screen.slice(mark), "interactive shell", 240_000);
    await new Promise((r) => setTimeout(r, 1000));
    term.write("echo $((6*7))-after-reset\r");
    await waitForText(() => screen.slice(mark), "42-after-reset", 60_000);

    ok("controlvm", "sata", "poweroff");
    expect(await exited).toBe(0);
  });
});
