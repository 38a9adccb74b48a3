/**
 * Snapshots of a powered-off machine, checked on disk: after every take, restore and delete the
 * registry (`list hdds --json`), the machine definition and the files show the expected tree,
 * and what each disk reads is byte for byte what it should be. A merge killed midway (kill -9)
 * leaves a chain that reads the same, and running the delete again finishes it.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliPath, cliSandbox } from "./testing/cli-sandbox.js";
import { MediumManager } from "../media/medium-manager.js";
import { VmStore, type MachineDefinition } from "../machine/vm-store.js";

const MiB = 1 << 20;
const sandbox = cliSandbox("snapshot-cli");
const { work, home, env, vstor, ok } = sandbox;
const cli = cliPath;

let saved: string | undefined;
beforeAll(() => {
  saved = process.env.VSTOR_HOME;
  process.env.VSTOR_HOME = home; // the in-process MediumManager and VmStore below read the same registry
});
afterAll(() => {
  if (saved === undefined) delete process.env.VSTOR_HOME;
  else process.env.VSTOR_HOME = saved;
  sandbox.cleanup();
});

const pattern = (seed: number, length: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed * 17 + (i >> 9)) & 0xff);

async function writeDisk(uuid: string, offset: number, data: Uint8Array): Promise<void> {
  const m = await new MediumManager().open(uuid);
  await m.write(offset, data);
  await m.flush();
  await m.close();
}
async function readDisk(uuid: string, offset: number, length: number): Promise<Buffer> {
  const m = await new MediumManager().open(uuid, { readOnly: true });
  const buf = new Uint8Array(length);
  await m.read(offset, buf);
  await m.close();
  return Buffer.from(buf);
}

const vm = (): MachineDefinition => new VmStore(home).get("snap");
const slot = (port: number) => vm().storageControllers[0]!.attachments.find((a) => a.port === port)!.medium!;
const hdds = () => JSON.parse(ok("list", "hdds", "--json")) as { uuid: string; parentUuid?: string; location: string }[];
const snapshotFiles = () => readdirSync(join(home, "machines", "snap", "Snapshots")).filter((f) => !f.endsWith(".sav")).sort();

describe("snapshot take, restore and delete on a powered-off machine", () => {
  let normal = "";
  let writethrough = "";
  let shareable = "";
  const A = pattern(1, MiB);
  const B = pattern(2, MiB);
  const C = pattern(3, MiB);

  it("sets up a machine with a normal, a writethrough and a shareable disk", () => {
    ok("createvm", "--name", "snap", "--register");
    ok("storagectl", "snap", "--name", "SATA", "--add", "sata", "--portcount", "4");
    for (const [name, extra] of [["normal.vdi", []], ["wt.vdi", []], ["shared.vdi", ["--variant", "Fixed"]]] as const) {
      ok("createmedium", "disk", "--filename", join(work, name), "--size", "16", ...extra);
    }
    ok("storageattach", "snap", "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", join(work, "normal.vdi"));
    ok("storageattach", "snap", "--storagectl", "SATA", "--port", "1", "--type", "hdd", "--medium", join(work, "wt.vdi"), "--mtype", "writethrough");
    ok("storageattach", "snap", "--storagectl", "SATA", "--port", "2", "--type", "hdd", "--medium", join(work, "shared.vdi"), "--mtype", "shareable");
    [normal, writethrough, shareable] = [slot(0), slot(1), slot(2)];
  });

  it("refuses a dynamic image as shareable", () => {
    ok("createmedium", "disk", "--filename", join(work, "dyn.vdi"), "--size", "4");
    const r = vstor("modifymedium", "disk", join(work, "dyn.vdi"), "--type", "shareable");
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/fixed/);
  });

  it("take: a new differencing image for the normal disk only", async () => {
    for (const d of [normal, writethrough, shareable]) await writeDisk(d, 0, A);
    ok("snapshot", "snap", "take", "S1");
    expect(slot(1)).toBe(writethrough);
    expect(slot(2)).toBe(shareable);
    const d1 = slot(0);
    expect(d1).not.toBe(normal);
    const rec = hdds().find((m) => m.uuid === d1)!;
    expect(rec.parentUuid).toBe(normal);
    expect(rec.location).toBe(join(home, "machines", "snap", "Snapshots", `{${d1}}.vdi`));
    expect(existsSync(rec.location)).toBe(true);
    expect(hdds().filter((m) => m.parentUuid === writethrough || m.parentUuid === shareable)).toEqual([]);
    expect(vm().snapshot!.storageControllers[0]!.attachments.find((a) => a.port === 0)!.medium).toBe(normal);
    expect(vm().currentSnapshot).toBe(vm().snapshot!.uuid);
  });

  it("take again: the tree grows, the current state writes on top", async () => {
    for (const d of [slot(0), writethrough, shareable]) await writeDisk(d, 0, B);
    ok("snapshot", "snap", "take", "S2", "--description", "after B");
    const d1 = vm().snapshot!.children[0]!.storageControllers[0]!.attachments.find((a) => a.port === 0)!.medium!;
    expect(hdds().find((m) => m.uuid === slot(0))!.parentUuid).toBe(d1);
    await writeDisk(slot(0), 0, C);
    expect(snapshotFiles()).toHaveLength(2);
    const list = JSON.parse(ok("snapshot", "snap", "list", "--json"));
    expect(list.snapshots[0].name).toBe("S1");
    expect(list.snapshots[0].children[0].name).toBe("S2");
    expect(list.current).toBe(list.snapshots[0].children[0].uuid);
  });

  it("restore S1: fresh image over the frozen one, old current state gone, writethrough untouched", async () => {
    const oldCurrent = slot(0);
    ok("snapshot", "snap", "restore", "S1");
    const d3 = slot(0);
    expect(hdds().find((m) => m.uuid === d3)!.parentUuid).toBe(normal);
    expect(hdds().some((m) => m.uuid === oldCurrent)).toBe(false);
    expect(snapshotFiles()).toHaveLength(2); // S2's frozen image and the new one
    expect((await readDisk(d3, 0, MiB)).equals(Buffer.from(A))).toBe(true);
    // Writethrough and shareable disks keep what was written last.
    expect((await readDisk(writethrough, 0, MiB)).equals(Buffer.from(B))).toBe(true);
    expect((await readDisk(shareable, 0, MiB)).equals(Buffer.from(B))).toBe(true);
    expect(vm().currentSnapshot).toBe(vm().snapshot!.uuid);
  });

  it("delete S2: its frozen image has no child any more, so it just goes", () => {
    ok("snapshot", "snap", "delete", "S2");
    expect(vm().snapshot!.children).toEqual([]);
    expect(snapshotFiles()).toEqual([`{${slot(0)}}.vdi`]);
  });

  it("delete S1: the current image merges into the base, which is attached again", async () => {
    await writeDisk(slot(0), 3 * MiB, C);
    ok("snapshot", "snap", "delete", "S1");
    expect(slot(0)).toBe(normal);
    expect(vm().snapshot).toBeUndefined();
    expect(vm().currentSnapshot).toBeUndefined();
    expect(snapshotFiles()).toEqual([]);
    expect(hdds().filter((m) => m.parentUuid)).toEqual([]);
    expect((await readDisk(normal, 0, MiB)).equals(Buffer.from(A))).toBe(true);
    expect((await readDisk(normal, 3 * MiB, MiB)).equals(Buffer.from(C))).toBe(true);
  });

  it("edit renames a snapshot and sets its description", () => {
    ok("snapshot", "snap", "take", "E1");
    ok("snapshot", "snap", "edit", "E1", "--name", "renamed", "--description", "after the merge");
    const list = JSON.parse(ok("snapshot", "snap", "list", "--json"));
    expect(list.snapshots[0]).toMatchObject({ name: "renamed", description: "after the merge" });
    ok("snapshot", "snap", "delete", "renamed");
  });

  it("restorecurrent and delete refuse what is not there", () => {
    expect(vstor("snapshot", "snap", "restorecurrent").status).not.toBe(0);
    expect(vstor("snapshot", "snap", "delete", "nope").stderr).toMatch(/no snapshot 'nope'/);
  });
});

describe("a snapshot delete killed in the middle", () => {
  const size = 64 * MiB;
  let base = "";
  let expected: Buffer;

  it("prepares a chain whose merge takes a while", async () => {
    ok("createvm", "--name", "kill", "--register");
    ok("storagectl", "kill", "--name", "SATA", "--add", "sata", "--portcount", "1");
    ok("createmedium", "disk", "--filename", join(work, "kill-base.vdi"), "--size", String(size / MiB));
    ok("storageattach", "kill", "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", join(work, "kill-base.vdi"));
    base = new VmStore(home).get("kill").storageControllers[0]!.attachments[0]!.medium!;
    await writeDisk(base, 0, pattern(7, size));
    ok("snapshot", "kill", "take", "K1");
    const top = new VmStore(home).get("kill").storageControllers[0]!.attachments[0]!.medium!;
    for (let at = 0; at < size; at += 2 * MiB) await writeDisk(top, at, pattern(at / MiB, MiB));
    expected = await readDisk(top, 0, size);
  });

  it("reads the same after kill -9 midway, refuses to start, and finishes when run again", async () => {
    const top = new VmStore(home).get("kill").storageControllers[0]!.attachments[0]!.medium!;
    const child = spawn(process.execPath, [cli, "snapshot", "kill", "delete", "K1"], { env: { ...env, VSTOR_PROGRESS: "1" } });
    // Killed at the first progress line: blocks are being copied into the base.
    await new Promise<void>((resolve) => {
      let err = "";
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
        if (/Merging.*\d+%/.test(err)) {
          child.kill("SIGKILL");
          resolve();
        }
      });
      child.on("exit", () => resolve());
    });
    await new Promise((r) => child.on("exit", r));
    const def = new VmStore(home).get("kill");
    expect(def.pendingDelete, "the kill came after the merge had finished").toBeDefined();
    expect((await readDisk(top, 0, size)).equals(expected)).toBe(true);
    const start = vstor("startvm", "kill", "--agent");
    expect(start.status).not.toBe(0);
    expect(start.stderr).toMatch(/interrupted.*snapshot kill delete/);
    ok("snapshot", "kill", "delete", "K1");
    const after = new VmStore(home).get("kill");
    expect(after.pendingDelete).toBeUndefined();
    expect(after.storageControllers[0]!.attachments[0]!.medium).toBe(base);
    expect((await readDisk(base, 0, size)).equals(expected)).toBe(true);
    expect(readdirSync(join(home, "machines", "kill", "Snapshots"))).toEqual([]);
  });
});

describe("snapshot chains qemu can read (VMDK, QCOW2)", () => {
  const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0;
  for (const format of ["VMDK", "QCOW2"] as const) {
    it.skipIf(!hasQemu)(`${format}: take twice, delete both; qemu reads the same disk before and after every step`, async () => {
      const name = `q-${format.toLowerCase()}`;
      ok("createvm", "--name", name, "--register");
      ok("storagectl", name, "--name", "SATA", "--add", "sata", "--portcount", "1");
      const file = join(work, `${name}.${format.toLowerCase()}`);
      ok("createmedium", "disk", "--filename", file, "--size", "16", "--format", format);
      ok("storageattach", name, "--storagectl", "SATA", "--port", "0", "--type", "hdd", "--medium", file);
      const current = () => new VmStore(home).get(name).storageControllers[0]!.attachments[0]!.medium!;
      const location = (uuid: string) => hdds().find((m) => m.uuid === uuid)!.location;
      await writeDisk(current(), 0, pattern(1, MiB));
      ok("snapshot", name, "take", "one");
      await writeDisk(current(), MiB, pattern(2, 2 * MiB));
      ok("snapshot", name, "take", "two");
      await writeDisk(current(), 0, pattern(3, MiB / 2));
      // The current image outgrows the frozen one: deleting "two" merges the frozen image into it.
      await writeDisk(current(), 6 * MiB, pattern(4, 4 * MiB));
      const beforeTwo = current();
      const reference = join(work, `${name}-ref.raw`);
      const conv = spawnSync("qemu-img", ["convert", "-O", "raw", location(current()), reference], { encoding: "utf8" });
      expect(conv.status, conv.stderr).toBe(0);
      for (const snap of ["two", "one"]) {
        ok("snapshot", name, "delete", snap);
        if (snap === "two") expect(current()).toBe(beforeTwo);
        const cmp = spawnSync("qemu-img", ["compare", reference, location(current())], { encoding: "utf8" });
        expect(cmp.stdout + cmp.stderr, `after deleting '${snap}'`).toContain("Images are identical");
        const chk = spawnSync("qemu-img", ["check", location(current())], { encoding: "utf8" });
        expect(chk.status, chk.stdout + chk.stderr).toBe(0);
      }
      expect(current()).toBe(hdds().find((m) => m.location === file)!.uuid);
    });
  }
});
