/**
 * What a power-on does to a machine's disks (no guest needed): immutable disks get an empty
 * differencing image unless the machine resumes a saved state, autoreset is off, or the current
 * snapshot is an online one; multiattach disks keep theirs; the locks follow the chain.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MediumManager } from "../media/medium-manager.js";
import { MediaRegistry } from "../media/registry.js";
import { lockRequests, prepareDisksForPowerOn } from "./power-on-media.js";
import { createMachineDiff } from "./machine-media.js";
import { VmStore, type MachineDefinition } from "./vm-store.js";

const work = mkdtempSync(join(tmpdir(), "vstor-power-on-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function setup(type: "immutable" | "multiattach" | "normal" | "shareable", name: string) {
  const home = join(work, name);
  const store = new VmStore(home);
  const mm = new MediumManager(new MediaRegistry(home));
  const info = await mm.create({ path: join(work, `${name}.vdi`), size: 4 << 20, variant: type === "shareable" ? "Fixed" : "Standard" });
  mm.registry.updateRecord(info.uuid, { type });
  const vm = store.create(name);
  const medium = type === "immutable" || type === "multiattach" ? await createMachineDiff(mm, store.machineDir(name), info.uuid) : info.uuid;
  vm.storageControllers = [{ name: "SATA", bus: "sata", controller: "IntelAhci", portCount: 1, hostIoCache: false, bootable: true, attachments: [{ port: 0, device: 0, type: "hdd", medium }] }];
  store.save(vm);
  return { store, mm, base: info.uuid, vm: () => store.get(name) };
}
const top = (vm: MachineDefinition) => vm.storageControllers[0]!.attachments[0]!.medium!;

async function written(mm: MediumManager, uuid: string): Promise<void> {
  const m = await mm.open(uuid);
  await m.write(0, new Uint8Array(512).fill(7));
  await m.close();
}

describe("power-on", () => {
  it("empties an immutable disk's differencing image (a new one replaces it)", async () => {
    const s = await setup("immutable", "imm");
    const before = top(s.vm());
    await written(s.mm, before);
    await prepareDisksForPowerOn(s.store, s.vm(), s.mm, { resuming: false });
    const after = top(s.vm());
    expect(after).not.toBe(before);
    expect(s.mm.registry.findByUuid(before)).toBeUndefined();
    expect(s.mm.registry.findByUuid(after)!.parentUuid).toBe(s.base);
  });

  it("keeps it when resuming a saved state, with autoreset off, or after an online snapshot", async () => {
    const s = await setup("immutable", "keep");
    const first = top(s.vm());
    await prepareDisksForPowerOn(s.store, s.vm(), s.mm, { resuming: true });
    expect(top(s.vm())).toBe(first);
    s.mm.registry.updateRecord(s.base, { autoReset: false });
    await prepareDisksForPowerOn(s.store, s.vm(), s.mm, { resuming: false });
    expect(top(s.vm())).toBe(first);
    s.mm.registry.updateRecord(s.base, { autoReset: true });
    const vm = s.vm();
    vm.snapshot = { uuid: "11111111-2222-3333-4444-555555555555", name: "online", takenAt: "", stateFile: "/x.sav", memoryMiB: 128, storageControllers: [], children: [] };
    vm.currentSnapshot = vm.snapshot.uuid;
    s.store.save(vm);
    await prepareDisksForPowerOn(s.store, s.vm(), s.mm, { resuming: false });
    expect(top(s.vm())).toBe(first);
  });

  it("keeps a multiattach machine's own differencing image", async () => {
    const s = await setup("multiattach", "multi");
    const first = top(s.vm());
    await prepareDisksForPowerOn(s.store, s.vm(), s.mm, { resuming: false });
    expect(top(s.vm())).toBe(first);
  });

  it("locks the written image and read-locks its parents; a shareable disk shared", async () => {
    const s = await setup("multiattach", "locks");
    expect(lockRequests(s.mm, s.vm().storageControllers).map((r) => [r.uuid, r.mode])).toEqual([
      [top(s.vm()), "write"],
      [s.base, "read"],
    ]);
    const sh = await setup("shareable", "shared");
    expect(lockRequests(sh.mm, sh.vm().storageControllers).map((r) => r.mode)).toEqual(["shared"]);
  });
});
