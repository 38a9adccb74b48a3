/**
 * Snapshots, with VirtualBox's semantics: taking one freezes every hard disk that is not
 * writethrough or shareable and gives it a new differencing image for the current state (and,
 * if the machine runs, saves its state: CPU, RAM and our devices); restoring one puts fresh
 * differencing images over the frozen ones (they are never written again) and brings back the
 * saved state. Deleting one merges its images away (snapshot-delete.ts).
 */
import { randomUUID } from "node:crypto";
import { copyFileSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { canonicalLocation } from "../media/registry.js";
import { join } from "node:path";
import type { MediumManager } from "../media/medium-manager.js";
import { excludedFromSnapshots } from "../media/medium-types.js";
import { checkCanHaveChildren, cloneControllers, createMachineDiff, deleteMachineDiff, diskAttachments, mediumType, SNAPSHOTS_FOLDER, stateFilePath } from "./machine-media.js";
import { allSnapshots, mediumUsage } from "./medium-usage.js";
import { VmError, type MachineDefinition, type SnapshotRecord, type VmStore } from "./vm-store.js";

export interface MachineContext {
  store: VmStore;
  mm: MediumManager;
  vm: MachineDefinition;
}

/** Change a running disk's backing: `next` gets the medium now attached and returns the one to open. */
export type ReopenDisk = (controller: string, port: number, device: number, next: (current: string) => Promise<string>) => Promise<void>;

/** What a running machine offers to snapshot operations (implemented by the VM process). */
export interface RunningMachine {
  /**
   * With guest I/O held on every disk (and the CPU stopped, unless `pause` is false), give
   * `during` the machine's saved state and a way to switch disks to other media.
   */
  checkpoint(pause: boolean, during: (state: Uint8Array, reopen: ReopenDisk) => Promise<void>): Promise<void>;
  /** The media are now these: move the cross-process locks along. */
  mediaChanged(vm: MachineDefinition): void;
}

// --- the tree --------------------------------------------------------------------------------

/** A snapshot by name or UUID; refused if the name is ambiguous. */
export function findSnapshot(vm: MachineDefinition, nameOrUuid: string): SnapshotRecord {
  const all = allSnapshots(vm.snapshot);
  const byUuid = all.find((s) => s.uuid === nameOrUuid.toLowerCase());
  if (byUuid) return byUuid;
  const named = all.filter((s) => s.name === nameOrUuid);
  if (named.length > 1) throw new VmError("invalid", `vstor: ${named.length} snapshots of '${vm.name}' are named '${nameOrUuid}'; use its UUID`);
  if (!named[0]) throw new VmError("not-found", `vstor: machine '${vm.name}' has no snapshot '${nameOrUuid}'`);
  return named[0];
}

/** The snapshot the current state derives from, if any. */
export function currentSnapshot(vm: MachineDefinition): SnapshotRecord | undefined {
  return vm.currentSnapshot ? allSnapshots(vm.snapshot).find((s) => s.uuid === vm.currentSnapshot) : undefined;
}

export function parentSnapshot(vm: MachineDefinition, uuid: string): SnapshotRecord | undefined {
  return allSnapshots(vm.snapshot).find((s) => s.children.some((c) => c.uuid === uuid));
}

// --- take ------------------------------------------------------------------------------------

export interface TakeOptions {
  description?: string;
  /** A running machine keeps running while the snapshot is taken. */
  live?: boolean;
}

/** Whether a snapshot freezes this disk (writethrough and shareable disks are left alone). */
function frozenBySnapshots(mm: MediumManager, uuid: string): boolean {
  return !excludedFromSnapshots(mediumType(mm, uuid));
}

export async function takeSnapshot(ctx: MachineContext, name: string, options: TakeOptions = {}, running?: RunningMachine): Promise<SnapshotRecord> {
  const { vm, mm } = ctx;
  if (!name.trim()) throw new VmError("invalid", "vstor: a snapshot needs a name");
  const snapshot: SnapshotRecord = {
    uuid: randomUUID(),
    name,
    ...(options.description ? { description: options.description } : {}),
    takenAt: new Date().toISOString(),
    memoryMiB: vm.memoryMiB,
    ...(vm.boot1 ? { boot1: vm.boot1 } : {}),
    storageControllers: cloneControllers(vm.storageControllers),
    children: [],
  };
  const machineDir = ctx.store.machineDir(vm.name);
  const disks = diskAttachments(vm.storageControllers).filter(({ attachment }) => frozenBySnapshots(mm, attachment.medium!));
  checkCanHaveChildren(mm, disks.map(({ attachment }) => attachment.medium!), "a snapshot");
  if (running) {
    try {
      await checkpointed(ctx, snapshot, disks, options, running);
    } catch (e) {
      // Disks already switched stay switched (the guest writes there now): record them, so
      // nothing the guest writes is lost; the frozen images just become part of the chain.
      if (snapshot.stateFile) rmSync(snapshot.stateFile, { force: true });
      ctx.store.save(vm);
      running.mediaChanged(vm);
      throw e;
    }
  } else {
    if (vm.state === "saved" && vm.savedStateFile && existsSync(vm.savedStateFile)) {
      // A saved machine's snapshot keeps its state too, as VirtualBox's does.
      const file = stateFilePath(machineDir, snapshot.uuid);
      copyFileSync(vm.savedStateFile, file);
      snapshot.stateFile = file;
    }
    for (const { attachment } of disks) attachment.medium = await createMachineDiff(mm, machineDir, attachment.medium!);
  }
  const parent = currentSnapshot(vm);
  if (parent) parent.children.push(snapshot);
  else if (vm.snapshot) throw new VmError("invalid", `vstor: machine '${vm.name}' has snapshots but no current one`);
  else vm.snapshot = snapshot;
  vm.currentSnapshot = snapshot.uuid;
  ctx.store.save(vm);
  running?.mediaChanged(vm);
  return snapshot;
}

/** The running machine's part of take: its saved state and the switch of every frozen disk, at one instant. */
async function checkpointed(
  ctx: MachineContext,
  snapshot: SnapshotRecord,
  disks: ReturnType<typeof diskAttachments>,
  options: TakeOptions,
  running: RunningMachine,
): Promise<void> {
  const machineDir = ctx.store.machineDir(ctx.vm.name);
  await running.checkpoint(!options.live, async (state, reopen) => {
    const file = stateFilePath(machineDir, snapshot.uuid);
    writeFileSync(file, state);
    snapshot.stateFile = file;
    for (const { controller, attachment } of disks) {
      await reopen(controller.name, attachment.port, attachment.device, async (current) => {
        attachment.medium = await createMachineDiff(ctx.mm, machineDir, current);
        return attachment.medium;
      });
    }
  });
}

// --- restore ---------------------------------------------------------------------------------

/**
 * Restore a snapshot of a powered-off (or saved) machine: the current state's differencing
 * images go, fresh ones are made over the snapshot's frozen images, and its saved state (if any)
 * becomes the machine's, so the next startvm resumes it.
 */
export async function restoreSnapshot(ctx: MachineContext, nameOrUuid: string): Promise<SnapshotRecord> {
  const { vm, mm } = ctx;
  const snapshot = findSnapshot(vm, nameOrUuid);
  const machineDir = ctx.store.machineDir(vm.name);
  const previous = diskAttachments(vm.storageControllers).map(({ attachment }) => attachment.medium!);
  const controllers = cloneControllers(snapshot.storageControllers);
  for (const { controller, attachment } of diskAttachments(controllers)) {
    if (frozenBySnapshots(mm, attachment.medium!)) {
      attachment.medium = await createMachineDiff(mm, machineDir, attachment.medium!);
      continue;
    }
    // Writethrough and shareable disks are not restored: the slot keeps what it has now.
    const now = vm.storageControllers.find((c) => c.name === controller.name)?.attachments.find((a) => a.port === attachment.port && a.device === attachment.device);
    if (now?.medium) attachment.medium = now.medium;
  }
  vm.storageControllers = controllers;
  vm.memoryMiB = snapshot.memoryMiB;
  if (snapshot.boot1) vm.boot1 = snapshot.boot1;
  else delete vm.boot1;
  discardSavedState(vm);
  if (snapshot.stateFile && existsSync(snapshot.stateFile)) {
    const file = stateFilePath(machineDir);
    copyFileSync(snapshot.stateFile, file);
    vm.savedStateFile = file;
    vm.state = "saved";
  }
  vm.currentSnapshot = snapshot.uuid;
  ctx.store.save(vm);
  await dropUnusedDiffs(ctx, previous);
  return snapshot;
}

/** Forget the machine's own saved state (not a snapshot's). */
export function discardSavedState(vm: MachineDefinition): void {
  if (vm.savedStateFile) rmSync(vm.savedStateFile, { force: true });
  delete vm.savedStateFile;
  vm.state = "poweroff";
}

/** Delete the differencing images of the machine's own that nothing uses any more. */
export async function dropUnusedDiffs(ctx: MachineContext, candidates: readonly string[]): Promise<void> {
  const used = mediumUsage(ctx.store.list());
  const machineDir = ctx.store.machineDir(ctx.vm.name);
  for (const uuid of candidates) {
    const rec = ctx.mm.registry.findByUuid(uuid);
    if (!rec?.parentUuid || used.has(uuid) || ctx.mm.registry.children(uuid).length) continue;
    if (!rec.location.startsWith(canonicalLocation(join(machineDir, SNAPSHOTS_FOLDER)))) continue; // not ours to delete
    await deleteMachineDiff(ctx.mm, uuid);
  }
}
