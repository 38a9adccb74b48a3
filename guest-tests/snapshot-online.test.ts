/**
 * Snapshots and saved states of a running machine, with the real Linux guest doing I/O on our
 * SATA controller: a live snapshot (the guest keeps running, its disk moves to a new
 * differencing image at once), savestate and resume (RAM and devices come back: a file in the
 * guest's tmpfs survives), restoring an online snapshot (the machine resumes where it was), and
 * deleting a snapshot while the guest writes (online merge): what the guest reads afterwards,
 * and after a cold boot, is what it wrote, and the files on disk are one base image again.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { mark, probe, vmCli } from "./support/vm-cli.js";

const t = vmCli("online");
type Hdd = { uuid: string; parentUuid?: string; location: string };
const hdds = () => JSON.parse(t.ok("list", "hdds", "--json")) as Hdd[];
const info = () =>
  JSON.parse(t.ok("showvminfo", "live", "--json")) as {
    state: string;
    storageControllers: { attachments: { medium: string }[] }[];
    snapshots: { name: string; online: boolean; children: unknown[] }[];
  };
const attached = () => info().storageControllers[0]!.attachments[0]!.medium;
const snapshotFolder = () => join(t.home, "machines", "live", "Snapshots");


describe("a running machine's snapshots and saved state", () => {
  let base = "";

  it("takes a live snapshot while the guest runs", async () => {
    t.ok("createvm", "--name", "live", "--register");
    t.ok("storagectl", "live", "--name", "SATA", "--add", "sata", "--portcount", "1");
    t.ok("createmedium", "disk", "--filename", join(t.work, "live.vdi"), "--size", "32");
    t.ok("storageattach", "live", "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", join(t.work, "live.vdi"));
    base = attached();
    await t.start("live");
    t.runOk("live", `${mark("/dev/sda", 1, "0")} && echo before > /tmp/ram-mark`);
    t.ok("snapshot", "live", "take", "L1", "--live");
    // On disk at once: the running disk writes into a new differencing image of the base.
    const top = attached();
    expect(hdds().find((m) => m.uuid === top)!.parentUuid).toBe(base);
    expect(info().snapshots[0]!.online).toBe(true);
    expect(readdirSync(snapshotFolder()).filter((f) => f.endsWith(".sav"))).toHaveLength(1);
    const out = t.runOk("live", `${mark("/dev/sda", 2, "0")} && ${mark("/dev/sda", 3, "2m")} && rm /tmp/ram-mark && echo after > /tmp/after && ${probe("/dev/sda", 2, "0")}`);
    expect(out).toContain("/dev/sda:2:yes");
  });

  it("savestate stops the machine; startvm resumes it with its RAM and disks", async () => {
    t.ok("controlvm", "live", "savestate");
    expect(info().state).toBe("saved");
    await t.start("live");
    const out = t.runOk("live", `cat /tmp/after; [ -e /tmp/ram-mark ] || echo no-ram-mark; ${probe("/dev/sda", 2, "0")}; ${probe("/dev/sda", 3, "2m")}`);
    expect(out).toMatch(/after\s+no-ram-mark\s+\/dev\/sda:2:yes\s+\/dev\/sda:3:yes/);
    expect(info().state).toBe("running");
  });

  it("deletes the snapshot while the guest writes: an online merge into the base", async () => {
    // A writer runs in the guest while the merge goes on.
    t.runOk("live", `(vstor-io --dev /dev/sda --op write --seed 4 --offset 8m --size 8m --qd 4 > /tmp/writer.log 2>&1; echo done >> /tmp/writer.log) &`);
    t.ok("snapshot", "live", "delete", "L1");
    const out = t.runOk(
      "live",
      `while ! grep -q done /tmp/writer.log; do sleep 1; done; ${probe("/dev/sda", 2, "0")}; ${probe("/dev/sda", 3, "2m")}; vstor-io --dev /dev/sda --op verify --seed 4 --offset 8m --size 8m && echo writer-ok`,
    );
    expect(out).toMatch(/\/dev\/sda:2:yes\s+\/dev\/sda:3:yes[\s\S]*writer-ok/);
    // On disk: the base image alone, attached again; no differencing image left.
    expect(attached()).toBe(base);
    expect(hdds().filter((m) => m.parentUuid)).toEqual([]);
    expect(readdirSync(snapshotFolder())).toEqual([]);
    expect(info().snapshots).toEqual([]);
  });

  it("a cold boot reads what the guest wrote through the merge", async () => {
    t.ok("controlvm", "live", "poweroff");
    await new Promise((r) => setTimeout(r, 1000));
    await t.start("live");
    const out = t.runOk("live", `[ -e /tmp/after ] || echo fresh-boot; ${probe("/dev/sda", 2, "0")}; ${probe("/dev/sda", 3, "2m")}; vstor-io --dev /dev/sda --op verify --seed 4 --offset 8m --size 8m && echo writer-ok`);
    expect(out).toMatch(/fresh-boot\s+\/dev\/sda:2:yes\s+\/dev\/sda:3:yes[\s\S]*writer-ok/);
  });

  it("restoring an online snapshot resumes the machine as it was when taken", async () => {
    t.runOk("live", `echo L2-ram > /tmp/l2 && ${mark("/dev/sda", 5, "4m")}`);
    t.ok("snapshot", "live", "take", "L2");
    t.runOk("live", `rm /tmp/l2 && ${mark("/dev/sda", 6, "4m")}`);
    t.ok("controlvm", "live", "poweroff");
    await new Promise((r) => setTimeout(r, 1000));
    t.ok("snapshot", "live", "restore", "L2");
    expect(info().state).toBe("saved");
    expect(existsSync(join(t.home, "machines", "live", "Snapshots"))).toBe(true);
    await t.start("live");
    const out = t.runOk("live", `cat /tmp/l2; ${probe("/dev/sda", 5, "4m")}; ${probe("/dev/sda", 6, "4m")}`);
    expect(out).toMatch(/L2-ram\s+\/dev\/sda:5:yes\s+\/dev\/sda:6:no/);
    t.ok("controlvm", "live", "poweroff");
  });
});
