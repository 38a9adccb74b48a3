/**
 * The media a machine works with, as VirtualBox keeps them: differencing images of its own in
 * the machine's Snapshots folder (named {UUID}.ext), created when a snapshot is taken, when an
 * immutable or multiattach medium is attached, and when an immutable disk is reset.
 */
import { existsSync, mkdirSync, renameSync } from "node:fs";
import { extname, join } from "node:path";
import { randomUUID } from "node:crypto";
import { MediumError } from "../media/block.js";
import type { MediumManager } from "../media/medium-manager.js";
import type { MediumRecord } from "../media/registry.js";
import { effectiveType, lineage, type MediumType } from "../media/medium-types.js";
import { CHILD_CREATORS } from "../media/differencing.js";
import type { StorageControllerConfig } from "./storage.js";
import type { MachineDefinition } from "./vm-store.js";
import { allSnapshots, mediumUsage } from "./medium-usage.js";

export const SNAPSHOTS_FOLDER = "Snapshots";

/** A medium's type: its base's (differencing images have none of their own). */
export function mediumType(mm: MediumManager, uuid: string): MediumType {
  return effectiveType(mm.registry, mm.requireRecord(uuid));
}

/** The chain from a medium up to its base, top first; refused if a parent is missing or it loops. */
export function chainRecords(mm: MediumManager, uuid: string): MediumRecord[] {
  const chain = lineage(mm.registry, mm.requireRecord(uuid));
  const last = chain[chain.length - 1]!;
  if (last.parentUuid) {
    mm.requireRecord(last.parentUuid); // lineage stopped at a parent that is not registered...
    throw new MediumError("corrupt", `the chain of ${uuid} loops`, { path: chain[0]!.location }); // ...or at a loop
  }
  return chain;
}

/** Where a saved state goes: `{UUID}.sav` in the machine's Snapshots folder (created if needed). */
export function stateFilePath(machineDir: string, uuid: string = randomUUID()): string {
  const folder = join(machineDir, SNAPSHOTS_FOLDER);
  mkdirSync(folder, { recursive: true });
  return join(folder, `{${uuid}}.sav`);
}

/** Create a differencing image over `parentUuid` in the machine's Snapshots folder; returns its UUID. */
export async function createMachineDiff(mm: MediumManager, machineDir: string, parentUuid: string): Promise<string> {
  const parent = mm.requireRecord(parentUuid);
  const ext = extname(parent.location) || ".vdi";
  const folder = join(machineDir, SNAPSHOTS_FOLDER);
  mkdirSync(folder, { recursive: true });
  const temp = join(folder, `new-${randomUUID()}${ext}`);
  const info = await mm.create({ path: temp, parent: parent.uuid });
  // Renamed to its UUID, as VirtualBox names them; nothing names a new child's file yet. A
  // monolithic VMDK names its own extent inside, so it keeps the name it was made with.
  if (info.format === "VMDK") return info.uuid;
  const final = join(folder, `{${info.uuid}}${ext}`);
  renameSync(temp, final);
  mm.registry.updateRecord(info.uuid, { location: final });
  return info.uuid;
}

/**
 * Refuse, before anything is created, media that cannot get a differencing image of their own
 * format (RAW, Parallels, VHDX): a snapshot or an indirect attachment needs one.
 */
export function checkCanHaveChildren(mm: MediumManager, uuids: readonly string[], why: string): void {
  for (const uuid of uuids) {
    const rec = mm.requireRecord(uuid);
    if (!Object.prototype.hasOwnProperty.call(CHILD_CREATORS, rec.format)) {
      throw new MediumError(
        "unsupported",
        `${why} needs a differencing image over ${rec.location}, and ${rec.format} images cannot have one (VDI, VMDK, VHD and QCOW2 can): make the disk writethrough, or clone it to VDI`,
        { path: rec.location },
      );
    }
  }
}

/** Forget a differencing image the machine no longer needs and delete its file. */
export async function deleteMachineDiff(mm: MediumManager, uuid: string): Promise<void> {
  const rec = mm.registry.findByUuid(uuid);
  if (!rec) return;
  if (!rec.parentUuid) throw new MediumError("in-use", `refusing to delete base medium ${rec.location}`, { path: rec.location });
  await mm.close(uuid, { delete: true });
}

/** Every hard disk attachment of a storage configuration. */
export function diskAttachments(controllers: readonly StorageControllerConfig[]) {
  return controllers.flatMap((c) => c.attachments.filter((a) => a.type === "hdd" && a.medium).map((a) => ({ controller: c, attachment: a })));
}

export function cloneControllers(controllers: readonly StorageControllerConfig[]): StorageControllerConfig[] {
  return JSON.parse(JSON.stringify(controllers)) as StorageControllerConfig[];
}

/**
 * unregistervm --delete, as VirtualBox does it: every hard disk image the machine uses (its
 * current state and snapshots, differencing images and their bases) that no other machine uses
 * is closed and deleted, children first. DVD images are left alone.
 */
export async function deleteMachineMedia(mm: MediumManager, vm: MachineDefinition, others: readonly MachineDefinition[]): Promise<string[]> {
  const configs = [vm.storageControllers, ...allSnapshots(vm.snapshot).map((s) => s.storageControllers)];
  const mine = new Set(configs.flatMap((c) => diskAttachments(c).flatMap(({ attachment }) => chainRecords(mm, attachment.medium!).map((r) => r.uuid))));
  const elsewhere = mediumUsage(others);
  const keep = new Set<string>();
  for (const uuid of elsewhere.keys()) if (mm.registry.findByUuid(uuid)) chainRecords(mm, uuid).forEach((r) => keep.add(r.uuid));
  const doomed = [...mine].filter((u) => !keep.has(u));
  const deleted: string[] = [];
  for (let progress = true; progress; ) {
    progress = false;
    for (const uuid of doomed) {
      if (deleted.includes(uuid) || mm.registry.children(uuid).length) continue;
      const rec = mm.registry.findByUuid(uuid);
      await mm.close(uuid, { delete: !!rec && existsSync(rec.location) });
      deleted.push(uuid);
      progress = true;
    }
  }
  return deleted;
}
