/**
 * Deleting a snapshot: each of its frozen disk images is merged with its only child, in the
 * direction VirtualBox takes into a base image (the child goes into the base, so a machine with
 * no snapshots left has its base images back), and otherwise the cheaper way (the smaller image
 * is copied into the bigger). Merges are in place: no more extra space than the copied blocks.
 *
 * The plan is journaled in the machine definition before any block moves. Killed midway, the
 * chain still reads as before (media/chain.ts's crash order); `snapshot delete` run again reads
 * the journal and finishes, and startvm refuses the machine until it has.
 */
import { existsSync, rmSync, statSync } from "node:fs";
import { MediumError } from "../media/block.js";
import { ImageChain, mergeChildIntoParent, mergeParentIntoChild, type LayeredImage, type MergeOptions, type MergeResult } from "../media/chain.js";
import { excludedFromSnapshots } from "../media/medium-types.js";
import { diskAttachments, mediumType } from "./machine-media.js";
import { allSnapshots } from "./medium-usage.js";
import { dropUnusedDiffs, findSnapshot, parentSnapshot, type MachineContext } from "./snapshots.js";
import { VmError, type SnapshotMerge, type SnapshotRecord } from "./vm-store.js";
import type { StorageControllerConfig } from "./storage.js";
import type { MediumManager } from "../media/medium-manager.js";

/** A running machine's part in an online merge (implemented by the VM process). */
export interface OnlineMerger {
  /**
   * If a running disk's chain holds `merge.child`, run the merge on that live chain (guest I/O
   * interleaved block by block) and return true; false if no running disk uses it.
   */
  mergeLive(merge: SnapshotMerge, run: (layers: readonly LayeredImage[], step: MergeOptions["step"]) => Promise<MergeResult>): Promise<boolean>;
}

export interface DeleteOptions {
  onMergeProgress?: (index: number, count: number, done: number, total: number) => void;
}

/** Plan the merges of one snapshot's disks; refused (nothing changed) if one cannot merge. */
export function planSnapshotDelete(ctx: MachineContext, snapshot: SnapshotRecord): SnapshotMerge[] {
  const { mm, vm } = ctx;
  if (snapshot.children.length > 1) {
    throw new VmError("invalid", `vstor: snapshot '${snapshot.name}' has ${snapshot.children.length} child snapshots; delete all but one of them first`);
  }
  const merges: SnapshotMerge[] = [];
  for (const { attachment } of diskAttachments(snapshot.storageControllers)) {
    const frozen = attachment.medium!;
    if (excludedFromSnapshots(mediumType(mm, frozen))) continue;
    if (merges.some((m) => m.frozen === frozen)) continue;
    const rec = mm.requireRecord(frozen);
    const children = mm.registry.children(frozen);
    if (children.length === 0) continue; // nothing was ever taken over it (cannot normally happen)
    if (children.length > 1) {
      throw new VmError(
        "invalid",
        `vstor: cannot delete snapshot '${snapshot.name}' of '${vm.name}': ${rec.location} has ${children.length} differencing images (${children.map((c) => c.location).join(", ")})`,
      );
    }
    const child = children[0]!;
    const into = !rec.parentUuid || fileSize(child.location) <= fileSize(rec.location) ? "parent" : "child";
    merges.push({ frozen, child: child.uuid, into });
  }
  return merges;
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Delete a snapshot (or finish an interrupted deletion of it). */
export async function deleteSnapshot(ctx: MachineContext, nameOrUuid: string, options: DeleteOptions = {}, online?: OnlineMerger): Promise<void> {
  const { vm, store } = ctx;
  const snapshot = findSnapshot(vm, nameOrUuid);
  if (vm.pendingDelete && vm.pendingDelete.snapshot !== snapshot.uuid) {
    const other = allSnapshots(vm.snapshot).find((s) => s.uuid === vm.pendingDelete!.snapshot);
    throw new VmError("invalid", `vstor: the deletion of snapshot '${other?.name ?? vm.pendingDelete.snapshot}' was interrupted; run 'snapshot delete' for it again first`);
  }
  const merges = vm.pendingDelete?.merges ?? planSnapshotDelete(ctx, snapshot);
  vm.pendingDelete = { snapshot: snapshot.uuid, startedAt: vm.pendingDelete?.startedAt ?? new Date().toISOString(), merges };
  store.save(vm);
  if (snapshot.stateFile) rmSync(snapshot.stateFile, { force: true });
  for (const [i, merge] of merges.entries()) {
    await mergeOne(ctx, merge, online, (done, total) => options.onMergeProgress?.(i, merges.length, done, total));
  }
  // The tree loses the node; its child (at most one) takes its place.
  const parent = parentSnapshot(vm, snapshot.uuid);
  if (parent) parent.children.splice(parent.children.indexOf(parent.children.find((c) => c.uuid === snapshot.uuid)!), 1, ...snapshot.children);
  else vm.snapshot = snapshot.children[0];
  if (vm.currentSnapshot === snapshot.uuid) vm.currentSnapshot = parent?.uuid;
  if (!vm.currentSnapshot) delete vm.currentSnapshot;
  delete vm.pendingDelete;
  store.save(vm);
  // Frozen images nothing builds on any more (their child state was restored away) just go.
  await dropUnusedDiffs(ctx, diskAttachments(snapshot.storageControllers).map(({ attachment }) => attachment.medium!));
}

async function mergeOne(ctx: MachineContext, merge: SnapshotMerge, online: OnlineMerger | undefined, onProgress: (done: number, total: number) => void): Promise<void> {
  const { mm } = ctx;
  const removed = merge.into === "parent" ? merge.child : merge.frozen;
  const survivor = merge.into === "parent" ? merge.frozen : merge.child;
  const removedRec = mm.registry.findByUuid(removed);
  if (removedRec && existsSync(removedRec.location) && !(await alreadyRelinked(mm, merge))) {
    const others = mm.registry.children(merge.child).map((c) => c.uuid);
    const run = async (layers: readonly LayeredImage[], step: MergeOptions["step"], extraChildren: readonly LayeredImage[]) => {
      const at = layers.findIndex((l) => l.uuid === merge.child);
      if (at < 0 || layers[at + 1]?.uuid !== merge.frozen) {
        throw new MediumError("corrupt", `${merge.child} is not the child of ${merge.frozen} any more`, { path: layers[0]?.path });
      }
      const options: MergeOptions = {
        hasOtherChildren: (parent, child) => mm.registry.children(parent.uuid).some((c) => c.uuid !== child.uuid),
        otherChildren: extraChildren,
        onProgress,
        step,
      };
      return merge.into === "parent" ? mergeChildIntoParent(layers, at, options) : mergeParentIntoChild(layers, at, options);
    };
    const liveDone = online
      ? await online.mergeLive(merge, async (layers, step) => {
          // Children of the merged child outside the live chain (other branches) are re-linked too.
          const inChain = new Set(layers.map((l) => l.uuid));
          const extra = await openLayers(mm, merge.into === "parent" ? others.filter((u) => !inChain.has(u)) : []);
          try {
            return await run(layers, step, extra.map((c) => c.top));
          } finally {
            await Promise.allSettled(extra.map((c) => c.close()));
          }
        })
      : false;
    if (!liveDone) {
      const chain = await openForMerge(mm, merge);
      const extra = await openLayers(mm, merge.into === "parent" ? others : []);
      try {
        const result = await run(chain.layers, undefined, extra.map((c) => c.top));
        await result.removed.flush().catch(() => undefined);
      } finally {
        await Promise.allSettled([chain.close(), ...extra.map((c) => c.close())]);
      }
    }
  }
  finishBookkeeping(ctx, merge, removed, survivor);
  const gone = mm.registry.findByUuid(removed);
  if (gone) await mm.close(removed, { delete: existsSync(gone.location) });
}

/** A backward merge that got as far as re-linking the child: only the bookkeeping is left. */
async function alreadyRelinked(mm: MediumManager, merge: SnapshotMerge): Promise<boolean> {
  if (merge.into !== "child") return false;
  const img = await mm.open(merge.child, { readOnly: true });
  try {
    const layers = img instanceof ImageChain ? img.layers : [];
    return layers[1]?.uuid !== merge.frozen;
  } finally {
    await img.close();
  }
}

/** The chain from the merged child down, with what the merge writes opened read-write. */
async function openForMerge(mm: MediumManager, merge: SnapshotMerge): Promise<ImageChain> {
  const img = await mm.open(merge.child, { writableParents: [merge.frozen], allowParentModified: true });
  if (!(img instanceof ImageChain)) {
    await img.close();
    throw new MediumError("corrupt", `${merge.child} has no parent to merge with`);
  }
  return img;
}

/** Open media (each with its chain) so their top image can be re-linked. */
async function openLayers(mm: MediumManager, uuids: readonly string[]): Promise<ImageChain[]> {
  const out: ImageChain[] = [];
  try {
    for (const u of uuids) {
      const img = await mm.open(u, { allowParentModified: true });
      if (img instanceof ImageChain) out.push(img);
      else await img.close();
    }
  } catch (e) {
    await Promise.allSettled(out.map((c) => c.close()));
    throw e;
  }
  return out;
}

/** The registry and every machine reference follow the merge. */
function finishBookkeeping(ctx: MachineContext, merge: SnapshotMerge, removed: string, survivor: string): void {
  const { mm, store } = ctx;
  const reg = mm.registry;
  if (merge.into === "child") {
    const grandparent = reg.findByUuid(merge.frozen)?.parentUuid;
    reg.updateRecord(merge.child, { parentUuid: grandparent });
  } else {
    for (const c of reg.children(merge.child)) reg.updateRecord(c.uuid, { parentUuid: merge.frozen });
  }
  const swap = (controllers: StorageControllerConfig[]) => {
    for (const { attachment } of diskAttachments(controllers)) if (attachment.medium === removed) attachment.medium = survivor;
  };
  for (const vm of store.list()) {
    const mine = vm.uuid === ctx.vm.uuid ? ctx.vm : vm;
    swap(mine.storageControllers);
    for (const s of allSnapshots(mine.snapshot)) swap(s.storageControllers);
    store.save(mine);
  }
}
