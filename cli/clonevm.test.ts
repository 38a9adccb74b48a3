/**
 * clonevm, unregistervm --delete and the saved-state rules, through the CLI, checked on disk:
 * a clone's disks are new images (new UUIDs) holding what the source reads now; deleting a
 * machine deletes the images only it uses; a machine with a saved state keeps its settings.
 */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MediumManager } from "../media/medium-manager.js";
import { VmStore } from "../machine/vm-store.js";
import { cliSandbox } from "./testing/cli-sandbox.js";

const s = cliSandbox("clonevm");
let saved: string | undefined;
beforeAll(() => {
  saved = process.env.VSTOR_HOME;
  process.env.VSTOR_HOME = s.home;
});
afterAll(() => {
  if (saved === undefined) delete process.env.VSTOR_HOME;
  else process.env.VSTOR_HOME = saved;
  s.cleanup();
});

const MiB = 1 << 20;
type Hdd = { uuid: string; parentUuid?: string; location: string };
const hdds = () => JSON.parse(s.ok("list", "hdds", "--json")) as Hdd[];
const disk = (vm: string, port: number) => new VmStore(s.home).get(vm).storageControllers[0]!.attachments.find((a) => a.port === port)!.medium!;

async function write(uuid: string, offset: number, byte: number): Promise<void> {
  const m = await new MediumManager().open(uuid);
  await m.write(offset, new Uint8Array(MiB).fill(byte));
  await m.close();
}
async function read(uuid: string, offset: number): Promise<number[]> {
  const m = await new MediumManager().open(uuid, { readOnly: true });
  const b = new Uint8Array(MiB);
  await m.read(offset, b);
  await m.close();
  return [...new Set(b)];
}

describe("clonevm", () => {
  it("copies each disk as it reads now into a new image with a new UUID; shareable disks are shared", async () => {
    s.ok("createvm", "--name", "src", "--register");
    s.ok("storagectl", "src", "--name", "SATA", "--add", "sata", "--portcount", "2");
    s.ok("createmedium", "disk", "--filename", s.file("src.vdi"), "--size", "8");
    s.ok("createmedium", "disk", "--filename", s.file("shared.vdi"), "--size", "8", "--variant", "Fixed");
    s.ok("storageattach", "src", "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", s.file("src.vdi"));
    s.ok("storageattach", "src", "--storagectl", "SATA", "--port", "1", "--type", "hdd", "--medium", s.file("shared.vdi"), "--mtype", "shareable");
    await write(disk("src", 0), 0, 0x11);
    s.ok("snapshot", "src", "take", "one");
    await write(disk("src", 0), MiB, 0x22);
    s.ok("clonevm", "src", "--name", "copy", "--register");
    const copy = disk("copy", 0);
    expect(copy).not.toBe(disk("src", 0));
    expect(hdds().find((m) => m.uuid === copy)!.parentUuid).toBeUndefined();
    expect(hdds().find((m) => m.uuid === copy)!.location).toBe(join(s.home, "machines", "copy", "copy-disk1.vdi"));
    expect(await read(copy, 0)).toEqual([0x11]);
    expect(await read(copy, MiB)).toEqual([0x22]);
    expect(disk("copy", 1)).toBe(disk("src", 1));
  });
});

describe("unregistervm --delete", () => {
  it("deletes the images only this machine uses, children first, and keeps shared ones", () => {
    const own = hdds().filter((m) => m.location.includes("/machines/src/") || m.location === s.file("src.vdi"));
    expect(own.length).toBe(2); // the base and the current differencing image
    s.ok("unregistervm", "src", "--delete");
    for (const m of own) expect(existsSync(m.location)).toBe(false);
    expect(hdds().some((m) => own.some((o) => o.uuid === m.uuid))).toBe(false);
    expect(existsSync(s.file("shared.vdi"))).toBe(true); // "copy" still uses it
  });
});

describe("saved state and formats that cannot have children", () => {
  it("refuses setting changes while a saved state exists, until it is discarded", () => {
    const store = new VmStore(s.home);
    const vm = store.get("copy");
    vm.state = "saved";
    vm.savedStateFile = s.file("fake.sav");
    writeFileSync(vm.savedStateFile, "x");
    store.save(vm);
    expect(s.vstor("modifyvm", "copy", "--memory", "256").stderr).toMatch(/saved state/);
    expect(s.vstor("storagectl", "copy", "--name", "IDE", "--add", "ide").stderr).toMatch(/saved state/);
    s.ok("discardstate", "copy");
    expect(existsSync(s.file("fake.sav"))).toBe(false);
    s.ok("modifyvm", "copy", "--memory", "256");
  });

  it("refuses a snapshot of a RAW disk before creating anything", () => {
    s.ok("createmedium", "disk", "--filename", s.file("raw.img"), "--size", "4", "--format", "RAW");
    s.ok("storageattach", "copy", "--storagectl", "SATA", "--port", "1", "--type", "hdd", "--medium", s.file("raw.img"));
    const before = hdds().length;
    expect(s.vstor("snapshot", "copy", "take", "nope").stderr).toMatch(/RAW images cannot have one/);
    expect(hdds().length).toBe(before);
    expect(new VmStore(s.home).get("copy").snapshot).toBeUndefined();
  });
});
