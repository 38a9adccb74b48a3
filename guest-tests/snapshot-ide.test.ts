/**
 * The running-machine snapshot path on IDE, whose requests may complete synchronously inside
 * the CPU loop (the fast path the AHCI test does not use): a live snapshot, savestate and
 * resume, and an online merge while the guest writes, with the real ata_piix driver.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { mark, probe, vmCli } from "./support/vm-cli.js";

const t = vmCli("snap-ide");
type Hdd = { uuid: string; parentUuid?: string };
const hdds = () => JSON.parse(t.ok("list", "hdds", "--json")) as Hdd[];
const attached = () => (JSON.parse(t.ok("showvminfo", "ide", "--json")) as { storageControllers: { attachments: { medium: string }[] }[] }).storageControllers[0]!.attachments[0]!.medium;

describe("snapshots of a running machine with an IDE disk", () => {
  it("live snapshot, savestate and resume, online merge under writes", async () => {
    t.ok("createvm", "--name", "ide", "--register");
    t.ok("storagectl", "ide", "--name", "IDE", "--add", "ide", "--controller", "PIIX4");
    t.ok("createmedium", "disk", "--filename", join(t.work, "ide.vdi"), "--size", "32");
    t.ok("storageattach", "ide", "--storagectl", "IDE", "--port", "0", "--device", "0", "--type", "hdd", "--medium", join(t.work, "ide.vdi"));
    const base = attached();
    await t.start("ide");
    t.runOk("ide", mark("/dev/sda", 1, "0"));
    t.ok("snapshot", "ide", "take", "I1", "--live");
    expect(hdds().find((m) => m.uuid === attached())!.parentUuid).toBe(base);
    t.runOk("ide", `${mark("/dev/sda", 2, "2m")} && echo kept > /tmp/kept`);
    t.ok("controlvm", "ide", "savestate");
    await t.start("ide");
    expect(t.runOk("ide", `cat /tmp/kept; ${probe("/dev/sda", 1, "0")}; ${probe("/dev/sda", 2, "2m")}`)).toMatch(/kept\s+\/dev\/sda:1:yes\s+\/dev\/sda:2:yes/);
    t.runOk("ide", `(vstor-io --dev /dev/sda --op write --seed 3 --offset 8m --size 4m > /tmp/w.log 2>&1; echo done >> /tmp/w.log) &`);
    t.ok("snapshot", "ide", "delete", "I1");
    const out = t.runOk("ide", `while ! grep -q done /tmp/w.log; do sleep 1; done; ${probe("/dev/sda", 1, "0")}; ${probe("/dev/sda", 2, "2m")}; vstor-io --dev /dev/sda --op verify --seed 3 --offset 8m --size 4m && echo writer-ok`);
    expect(out).toMatch(/\/dev\/sda:1:yes\s+\/dev\/sda:2:yes[\s\S]*writer-ok/);
    expect(attached()).toBe(base);
    expect(hdds().filter((m) => m.parentUuid)).toEqual([]);
    t.ok("controlvm", "ide", "poweroff");
  });
});
