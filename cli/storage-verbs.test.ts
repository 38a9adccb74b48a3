/**
 * storagectl / storageattach / showvminfo on a powered-off machine, as a user runs them
 * (`node dist/vstor.mjs` with VSTOR_HOME in a temporary folder): IDE and SATA controllers, port
 * ranges, the attachment flags, and the refusals. Run-time changes are guest tests
 * (guest-tests/storage-cli.test.ts, guest-tests/ahci-cli.test.ts).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const work = mkdtempSync(join(tmpdir(), "vstor-storage-cli-"));
const env = { ...process.env, VSTOR_HOME: join(work, "home"), VSTOR_PROGRESS: "0" };
const cli = join(process.cwd(), "dist", "vstor.mjs");
afterAll(() => rmSync(work, { recursive: true, force: true }));

function vstor(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}
function ok(...args: string[]): string {
  const r = vstor(...args);
  expect(r.status, r.out).toBe(0);
  return r.out;
}

interface VmJson {
  storageControllers: {
    name: string;
    bus: string;
    controller: string;
    portCount?: number;
    hostIoCache: boolean;
    attachments: { port: number; device: number; type: string; medium?: string; hotpluggable?: boolean; nonrotational?: boolean; discard?: boolean }[];
  }[];
}

describe("storagectl / storageattach with a SATA controller", () => {
  it("adds an IntelAhci controller with a port count, attaches disks to its ports, and shows them", () => {
    ok("createvm", "--name", "s1", "--register");
    ok("storagectl", "s1", "--name", "SATA", "--add", "sata", "--controller", "IntelAhci", "--portcount", "4");
    const disks = [0, 1, 2].map((i) => join(work, `d${i}.vdi`));
    for (const d of disks) ok("createmedium", "disk", "--filename", d, "--size", "8");
    ok("storageattach", "s1", "--storagectl", "SATA", "--port", "0", "--device", "0", "--type", "hdd", "--medium", disks[0]!,
      "--nonrotational", "on", "--discard", "on");
    ok("storageattach", "s1", "--storagectl", "SATA", "--port", "3", "--type", "hdd", "--medium", disks[1]!, "--hotpluggable", "on");
    const iso = join(process.cwd(), "build", "guest", "boot.iso");
    ok("storageattach", "s1", "--storagectl", "SATA", "--port", "1", "--type", "dvddrive", "--medium", iso);
    const vm = JSON.parse(ok("showvminfo", "s1", "--json")) as VmJson;
    const sata = vm.storageControllers[0]!;
    expect(sata).toMatchObject({ name: "SATA", bus: "sata", controller: "IntelAhci", portCount: 4, hostIoCache: false });
    expect(sata.attachments.find((a) => a.port === 0)).toMatchObject({ type: "hdd", nonrotational: true, discard: true, hotpluggable: false });
    expect(sata.attachments.find((a) => a.port === 3)).toMatchObject({ type: "hdd", hotpluggable: true });
    expect(sata.attachments.find((a) => a.port === 1)).toMatchObject({ type: "dvddrive" });
    const text = ok("showvminfo", "s1");
    expect(text).toMatch(/SATA: SATA IntelAhci, 4 ports \(host I\/O cache off, bootable on\)/);
    expect(text).toMatch(/port 0 device 0: disk \{[0-9a-f-]{36}\}, non-rotational, discard/);
    expect(text).toMatch(/port 3 device 0: disk \{[0-9a-f-]{36}\}, hot-pluggable/);
  });

  it("refuses ports outside the count, a device other than 0, a second SATA controller, and a count below an attachment", () => {
    expect(vstor("storageattach", "s1", "--storagectl", "SATA", "--port", "4", "--type", "hdd", "--medium", "none").out).toMatch(/ports 0-3 with device 0/);
    expect(vstor("storageattach", "s1", "--storagectl", "SATA", "--port", "0", "--device", "1", "--type", "hdd", "--medium", "none").out).toMatch(/device 0/);
    expect(vstor("storagectl", "s1", "--name", "SATA2", "--add", "sata").out).toMatch(/one SATA controller/);
    expect(vstor("storagectl", "s1", "--name", "SATA", "--portcount", "2").out).toMatch(/port 3 .* has an attachment/);
    expect(vstor("storagectl", "s1", "--name", "SATA", "--portcount", "31").out).toMatch(/1 to 30/);
    expect(vstor("storagectl", "s1", "--name", "S3", "--add", "scsi").out).toMatch(/--add ide\|sata/);
    expect(vstor("storagectl", "s1", "--name", "X", "--add", "sata", "--controller", "PIIX4").out).toMatch(/one SATA controller|IntelAhci/);
    ok("storagectl", "s1", "--name", "SATA", "--portcount", "30");
    const vm = JSON.parse(ok("showvminfo", "s1", "--json")) as VmJson;
    expect(vm.storageControllers[0]!.portCount).toBe(30);
  });

  it("defaults to 30 ports and sits beside an IDE controller", () => {
    ok("createvm", "--name", "s2", "--register");
    ok("storagectl", "s2", "--name", "SATA", "--add", "sata");
    ok("storagectl", "s2", "--name", "IDE", "--add", "ide");
    expect(vstor("storagectl", "s2", "--name", "IDE", "--portcount", "4").out).toMatch(/for SATA controllers/);
    const vm = JSON.parse(ok("showvminfo", "s2", "--json")) as VmJson;
    expect(vm.storageControllers.map((c) => [c.bus, c.controller, c.portCount, c.hostIoCache])).toEqual([
      ["sata", "IntelAhci", 30, false],
      ["ide", "PIIX4", undefined, true],
    ]);
  });
});
