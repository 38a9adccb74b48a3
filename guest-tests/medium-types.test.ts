/**
 * The manual's "virus" scenario with the real Linux guest on our SATA controller, for normal,
 * immutable and writethrough disks: the guest writes a marker ("the virus"), then the machine
 * is reset, power-cycled, or restored to a snapshot, and the marker survives exactly where the
 * VirtualBox manual says it does. The files on disk are checked alongside, and the disk serial
 * the guest sees follows the base image's UUID (a clone gets its own).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { serialFromUuid } from "../devices/ata/config.js";
import { mark, probe, vmCli } from "./support/vm-cli.js";

const t = vmCli("types");
const VIRUS = 666;
const disk = (name: string) => join(t.work, name);
type Hdd = { uuid: string; parentUuid?: string; location: string };
const hdds = () => JSON.parse(t.ok("list", "hdds", "--json")) as Hdd[];
const attached = (port: number) => (JSON.parse(t.ok("showvminfo", "types", "--json")) as { storageControllers: { attachments: { port: number; medium: string }[] }[] }).storageControllers[0]!.attachments.find((a) => a.port === port)!.medium;

const checkAll = `${probe("/dev/sda", VIRUS)}; ${probe("/dev/sdb", VIRUS)}; ${probe("/dev/sdc", VIRUS)}`;
const infectAll = `${mark("/dev/sda", VIRUS)} && ${mark("/dev/sdb", VIRUS)} && ${mark("/dev/sdc", VIRUS)}`;
const serials = `for d in sda sdb sdc sdd; do [ -b /dev/$d ] && echo "$d=$(hdparm -I /dev/$d | sed -n 's/.*Serial Number: *//p')"; done; true`;


describe("normal, immutable and writethrough disks against a virus", () => {
  let base = "";
  let clone = "";

  it("sets up the machine and takes a clean snapshot", () => {
    t.ok("createvm", "--name", "types", "--register");
    t.ok("storagectl", "types", "--name", "SATA", "--add", "sata", "--portcount", "4");
    for (const n of ["normal", "immutable", "wt"]) t.ok("createmedium", "disk", "--filename", disk(`${n}.vdi`), "--size", "16");
    t.ok("storageattach", "types", "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", disk("normal.vdi"));
    t.ok("storageattach", "types", "--storagectl", "SATA", "--port", "1", "--type", "hdd", "--medium", disk("immutable.vdi"), "--mtype", "immutable");
    t.ok("storageattach", "types", "--storagectl", "SATA", "--port", "2", "--type", "hdd", "--medium", disk("wt.vdi"), "--mtype", "writethrough");
    base = hdds().find((m) => m.location === disk("normal.vdi"))!.uuid;
    // The immutable disk is attached through a differencing image of the machine's own.
    const imm = hdds().find((m) => m.location === disk("immutable.vdi"))!.uuid;
    expect(hdds().find((m) => m.uuid === attached(1))!.parentUuid).toBe(imm);
    t.ok("snapshot", "types", "take", "clean");
    expect(hdds().find((m) => m.uuid === attached(0))!.parentUuid).toBe(base);
    expect(attached(2)).toBe(hdds().find((m) => m.location === disk("wt.vdi"))!.uuid);
  });

  it("a guest reboot keeps the virus everywhere, immutable included", async () => {
    const vm = await t.start("types");
    const out = t.runOk("types", `${infectAll} && ${checkAll} && ${serials}`);
    expect(out).toMatch(/sda:666:yes[\s\S]*sdb:666:yes[\s\S]*sdc:666:yes/);
    // The serial follows the base image's UUID, though the guest writes into a differencing image.
    expect(out).toContain(`sda=${serialFromUuid(base)}`);
    t.ok("controlvm", "types", "reset");
    expect(t.runOk("types", checkAll)).toMatch(/sda:666:yes\s+\/dev\/sdb:666:yes\s+\/dev\/sdc:666:yes/);
    t.ok("controlvm", "types", "poweroff");
    await vm.exited;
  });

  it("powering on again resets the immutable disk only", async () => {
    const before = attached(1);
    const vm = await t.start("types");
    expect(t.runOk("types", checkAll)).toMatch(/sda:666:yes\s+\/dev\/sdb:666:no\s+\/dev\/sdc:666:yes/);
    // On disk: the immutable disk's differencing image was replaced by an empty one.
    const after = attached(1);
    expect(after).not.toBe(before);
    expect(hdds().some((m) => m.uuid === before)).toBe(false);
    t.runOk("types", infectAll);
    t.ok("controlvm", "types", "poweroff");
    await vm.exited;
  });

  it("restoring the clean snapshot removes it from the normal disk, not from the writethrough one", async () => {
    const infected = attached(0);
    t.ok("snapshot", "types", "restore", "clean");
    expect(existsSync(hdds().find((m) => m.uuid === attached(0))!.location)).toBe(true);
    expect(hdds().some((m) => m.uuid === infected)).toBe(false);
    clone = JSON.parse(t.ok("clonemedium", "disk", disk("normal.vdi"), disk("clone.vdi"), "--json")).uuid as string;
    t.ok("storageattach", "types", "--storagectl", "SATA", "--port", "3", "--type", "hdd", "--medium", disk("clone.vdi"));
    const vm = await t.start("types");
    const out = t.runOk("types", `${checkAll} && ${serials} && ${mark("/dev/sdb", VIRUS)}`);
    expect(out).toMatch(/sda:666:no\s+\/dev\/sdb:666:no\s+\/dev\/sdc:666:yes/);
    expect(out).toContain(`sda=${serialFromUuid(base)}`);
    expect(clone).not.toBe(base);
    expect(out).toContain(`sdd=${serialFromUuid(clone)}`);
    t.ok("controlvm", "types", "poweroff");
    await vm.exited;
  });

  it("with --autoreset off the immutable disk keeps what the guest wrote", async () => {
    t.ok("modifymedium", "disk", disk("immutable.vdi"), "--autoreset", "off");
    const vm = await t.start("types");
    expect(t.runOk("types", probe("/dev/sdb", VIRUS))).toMatch(/sdb:666:yes/);
    t.ok("controlvm", "types", "poweroff");
    await vm.exited;
  });
});
