/**
 * Which machines (current state and snapshots) use which media: the back references
 * VirtualBox's Virtual Media Manager keeps, computed from the machine definitions.
 */
import type { StorageControllerConfig } from "./storage.js";
import type { MachineDefinition, SnapshotRecord } from "./vm-store.js";

export interface MediumUse {
  vm: string;
  vmUuid: string;
  /** The snapshot whose state uses it; absent for the machine's current state. */
  snapshot?: { uuid: string; name: string };
}

/** Every snapshot of a tree, depth first (parents before children). */
export function allSnapshots(root: SnapshotRecord | undefined): SnapshotRecord[] {
  if (!root) return [];
  return [root, ...root.children.flatMap((c) => allSnapshots(c))];
}

/** Medium UUIDs (hard disks) and ISO paths (DVD drives) a storage configuration names. */
export function mediaOf(controllers: readonly StorageControllerConfig[]): string[] {
  return controllers.flatMap((c) => c.attachments.flatMap((a) => (a.type === "hdd" ? (a.medium ? [a.medium] : []) : a.image ? [a.image] : [])));
}

/** Uses of every medium by UUID (hard disks) or ISO path (DVDs), in machine order. */
export function mediumUsage(vms: readonly MachineDefinition[]): Map<string, MediumUse[]> {
  const uses = new Map<string, MediumUse[]>();
  const add = (key: string, use: MediumUse) => {
    const k = usageKey(key);
    const list = uses.get(k) ?? [];
    if (!list.some((u) => u.vmUuid === use.vmUuid && u.snapshot?.uuid === use.snapshot?.uuid)) list.push(use);
    uses.set(k, list);
  };
  for (const vm of vms) {
    for (const m of mediaOf(vm.storageControllers)) add(m, { vm: vm.name, vmUuid: vm.uuid });
    for (const s of allSnapshots(vm.snapshot)) {
      for (const m of mediaOf(s.storageControllers)) add(m, { vm: vm.name, vmUuid: vm.uuid, snapshot: { uuid: s.uuid, name: s.name } });
    }
  }
  return uses;
}

/** Machines (not counting snapshots twice) that use a medium. */
export function machinesUsing(usage: Map<string, MediumUse[]>, key: string): string[] {
  return [...new Set((usage.get(usageKey(key)) ?? []).map((u) => u.vmUuid))];
}

/** UUIDs compare case-insensitively, ISO paths as they are. */
const usageKey = (key: string) => (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(key) ? key.toLowerCase() : key);
