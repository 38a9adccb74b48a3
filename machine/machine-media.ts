/**
 * The media a machine works with, as VirtualBox keeps them: differencing images of its own in
 * the machine's Snapshots folder (named {UUID}.ext), created when a snapshot is taken, when an
 * immutable or multiattach medium is attached, and when an immutable disk is reset.
 */
import { mkdirSync, renameSync } from "node:fs";
import { extname, join } from "node:path";
import { randomUUID } from "node:crypto";
import { MediumError } from "../media/block.js";
import type { MediumManager } from "../media/medium-manager.js";
import type { MediumRecord } from "../media/registry.js";
import { effectiveType, type MediumType } from "../media/medium-types.js";
import { MAX_CHAIN_DEPTH } from "../media/chain.js";
import type { StorageControllerConfig } from "./storage.js";

export const SNAPSHOTS_FOLDER = "Snapshots";

/** A medium's type: its base's (differencing images have none of their own). */
export function mediumType(mm: MediumManager, uuid: string): MediumType {
  return effectiveType(mm.registry, mm.requireRecord(uuid));
}

/** The chain from a medium up to its base, top first. */
export function chainRecords(mm: MediumManager, uuid: string): MediumRecord[] {
  const out = [mm.requireRecord(uuid)];
  while (out[out.length - 1]!.parentUuid) {
    if (out.length > MAX_CHAIN_DEPTH) throw new MediumError("corrupt", `the chain of ${uuid} loops`, { path: out[0]!.location });
    out.push(mm.requireRecord(out[out.length - 1]!.parentUuid!));
  }
  return out;
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
