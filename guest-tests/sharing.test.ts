/**
 * Disks used by several machines, each machine a real Linux guest in its own vstor process:
 * - a shareable fixed disk in two running machines at once, each seeing the other's writes;
 * - a normal disk refused to a second running machine (the lock across processes), and accepted
 *   once the first machine's process is killed with SIGKILL (a crash leaves no stale lock);
 * - a multiattach base in three machines, each with a differencing image and a history of its
 *   own, kept across power cycles.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { mark, probe, vmCli } from "./support/vm-cli.js";

const t = vmCli("sharing");
type Hdd = { uuid: string; parentUuid?: string; location: string };
const hdds = () => JSON.parse(t.ok("list", "hdds", "--json")) as Hdd[];
const attached = (vm: string) => (JSON.parse(t.ok("showvminfo", vm, "--json")) as { storageControllers: { attachments: { medium: string }[] }[] }).storageControllers[0]!.attachments[0]!.medium;

function machine(name: string, disk: string, mtype?: string): void {
  t.ok("createvm", "--name", name, "--register");
  t.ok("storagectl", name, "--name", "SATA", "--add", "sata", "--portcount", "1");
  t.ok("storageattach", name, "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", disk, ...(mtype ? ["--mtype", mtype] : []));
}


describe("a shareable disk in two running machines", () => {
  it("each sees what the other writes", async () => {
    const disk = join(t.work, "shared.vdi");
    t.ok("createmedium", "disk", "--filename", disk, "--size", "16", "--variant", "Fixed");
    machine("s1", disk, "shareable");
    machine("s2", disk);
    const one = await t.start("s1");
    const two = await t.start("s2");
    t.runOk("s1", mark("/dev/sda", 11, "0"));
    expect(t.runOk("s2", probe("/dev/sda", 11, "0"))).toContain("/dev/sda:11:yes");
    t.runOk("s2", mark("/dev/sda", 12, "1m"));
    expect(t.runOk("s1", probe("/dev/sda", 12, "1m"))).toContain("/dev/sda:12:yes");
    t.ok("controlvm", "s1", "poweroff");
    t.ok("controlvm", "s2", "poweroff");
    await Promise.all([one.exited, two.exited]);
  });
});

describe("a normal disk in two machines", () => {
  it("is refused to the second running machine, and accepted after the first one is killed", async () => {
    const disk = join(t.work, "normal.vdi");
    t.ok("createmedium", "disk", "--filename", disk, "--size", "16");
    machine("n1", disk);
    machine("n2", disk);
    const first = await t.start("n1");
    const refused = t.vstor("startvm", "n2", "--agent");
    expect(refused.status).not.toBe(0);
    expect(refused.out).toMatch(/locked for writing by machine 'n1'/);
    // kill -9 the process that runs the machine (startvm re-executes itself; the session file names it).
    const pid = (JSON.parse(readFileSync(join(t.home, "machines", "n1", "session.json"), "utf8")) as { pid: number }).pid;
    process.kill(pid, "SIGKILL");
    await first.exited;
    const second = await t.start("n2");
    t.runOk("n2", `${mark("/dev/sda", 21, "0")} && ${probe("/dev/sda", 21, "0")}`);
    t.ok("controlvm", "n2", "poweroff");
    await second.exited;
  });
});

describe("a multiattach base in three machines", () => {
  const names = ["m1", "m2", "m3"];

  it("gives each machine a differencing image of its own", () => {
    const disk = join(t.work, "multi.vdi");
    t.ok("createmedium", "disk", "--filename", disk, "--size", "16");
    t.ok("modifymedium", "disk", disk, "--type", "multiattach");
    for (const n of names) machine(n, disk);
    const base = hdds().find((m) => m.location === disk)!.uuid;
    const diffs = names.map(attached);
    expect(new Set(diffs).size).toBe(3);
    for (const d of diffs) expect(hdds().find((m) => m.uuid === d)!.parentUuid).toBe(base);
  });

  it("keeps three separate histories across power cycles", async () => {
    const diffs = names.map(attached);
    for (const [i, n] of names.entries()) {
      const vm = await t.start(n);
      t.runOk(n, mark("/dev/sda", 30 + i, "0"));
      t.ok("controlvm", n, "poweroff");
      await vm.exited;
    }
    for (const [i, n] of names.entries()) {
      const vm = await t.start(n);
      const out = t.runOk(n, names.map((_, j) => probe("/dev/sda", 30 + j, "0")).join("; "));
      for (const j of names.keys()) expect(out).toContain(`/dev/sda:${30 + j}:${i === j ? "yes" : "no"}`);
      t.ok("controlvm", n, "poweroff");
      await vm.exited;
    }
    expect(names.map(attached)).toEqual(diffs);
  });
});
