/**
 * What happens to a machine's disks when vstor powers it on, before any device sees them:
 * the cross-process locks (a normal disk in one running machine at a time, a shareable one in
 * several, parents read by many), the differencing image an immutable or multiattach medium is
 * attached through, and the reset of an immutable disk's differencing image. A guest reboot
 * (controlvm reset) and resuming a saved state do not come through here, so they keep it.
 */
import type { MediumManager } from "../media/medium-manager.js";
import { attachedIndirectly, effectiveAutoReset } from "../media/medium-types.js";
import { chainRecords, createMachineDiff, deleteMachineDiff, diskAttachments, mediumType } from "./machine-media.js";
import type { LockRequest } from "./medium-lock.js";
import { mediumUsage } from "./medium-usage.js";
import { currentSnapshot } from "./snapshots.js";
import type { StorageControllerConfig } from "./storage.js";
import type { MachineDefinition, VmStore } from "./vm-store.js";

/** The locks a machine's disks need: the image written is write- (or shared-) locked, its parents read-locked. */
export function lockRequests(mm: MediumManager, controllers: readonly StorageControllerConfig[]): LockRequest[] {
  const out: LockRequest[] = [];
  for (const { attachment } of diskAttachments(controllers)) {
    const chain = chainRecords(mm, attachment.medium!);
    const shareable = mediumType(mm, attachment.medium!) === "shareable";
    chain.forEach((rec, i) => out.push({ uuid: rec.uuid, location: rec.location, mode: i > 0 ? "read" : shareable ? "shared" : "write" }));
  }
  return out;
}

/**
 * The current snapshot was taken of a running machine: then an immutable disk behaves as a
 * normal one (its differencing image is the snapshot's state and must not be thrown away).
 */
function onlineCurrentSnapshot(vm: MachineDefinition): boolean {
  return !!currentSnapshot(vm)?.stateFile;
}

/**
 * Prepare the disks for a power-on (call with the machine's locks held): attach immutable and
 * multiattach media through a differencing image of this machine, and empty an immutable disk's
 * differencing image unless the machine resumes a saved state, autoreset is off, or the current
 * snapshot is an online one. Saves the definition if anything changed.
 */
export async function prepareDisksForPowerOn(store: VmStore, vm: MachineDefinition, mm: MediumManager, options: { resuming: boolean }): Promise<void> {
  const machineDir = store.machineDir(vm.name);
  const dropped: string[] = [];
  let changed = false;
  for (const { attachment } of diskAttachments(vm.storageControllers)) {
    const uuid = attachment.medium!;
    const type = mediumType(mm, uuid);
    const rec = mm.requireRecord(uuid);
    if (attachedIndirectly(type) && !rec.parentUuid) {
      attachment.medium = await createMachineDiff(mm, machineDir, uuid);
      changed = true;
      continue;
    }
    if (type === "immutable" && rec.parentUuid && !options.resuming && !onlineCurrentSnapshot(vm) && effectiveAutoReset(mm.registry, rec)) {
      attachment.medium = await createMachineDiff(mm, machineDir, rec.parentUuid);
      // The new image keeps the setting the old one had.
      if (rec.autoReset !== undefined) mm.registry.updateRecord(attachment.medium, { autoReset: rec.autoReset });
      dropped.push(uuid);
      changed = true;
    }
  }
  if (!changed) return;
  store.save(vm);
  const used = mediumUsage(store.list());
  for (const uuid of dropped) if (!used.has(uuid) && !mm.registry.children(uuid).length) await deleteMachineDiff(mm, uuid);
}
