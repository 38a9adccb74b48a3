/**
 * vstor snapshot VM take|restore|restorecurrent|delete|list, VBoxManage-style. A running
 * machine takes and deletes snapshots itself (through its control channel), since it has the
 * disks open; restore needs it powered off.
 */
import { allowOnly, optString, parseArgs, UsageError } from "./args.js";
import { progress } from "./progress.js";
import type { Out } from "./vm-verbs.js";
import { runningSession, sendControl } from "../machine/control-channel.js";
import { MediumLocks } from "../machine/medium-lock.js";
import { lockRequests } from "../machine/power-on-media.js";
import { deleteSnapshot } from "../machine/snapshot-delete.js";
import { allSnapshots } from "../machine/medium-usage.js";
import { findSnapshot, restoreSnapshot, takeSnapshot, type MachineContext } from "../machine/snapshots.js";
import { VmError, VmStore, type MachineDefinition, type SnapshotRecord } from "../machine/vm-store.js";
import { MediumManager } from "../media/medium-manager.js";

/** A merge or a snapshot of a big RAM can take long: wait for the running machine this long. */
const ONLINE_TIMEOUT_MS = 3_600_000;

export async function snapshot(argv: string[], out: Out): Promise<number> {
  const [machine, action, ...rest] = argv;
  if (!machine || !action) throw new UsageError("snapshot needs a machine and an action (take, restore, restorecurrent, delete, edit, list)");
  const store = new VmStore();
  const vm = store.get(machine);
  const ctx: MachineContext = { store, mm: new MediumManager(), vm };
  const session = await runningSession(store.machineDir(vm.name));
  switch (action) {
    case "take": {
      const args = parseArgs(rest, ["live"]);
      allowOnly(args, ["description", "live", "json"]);
      const [name] = args.positional;
      if (!name) throw new UsageError("snapshot take needs a name");
      const description = optString(args, "description");
      let uuid: string;
      if (session) {
        const reply = await sendControl(store.machineDir(vm.name), { command: "snapshot-take", args: [name, args.options.has("live") ? "live" : "", description ?? ""] }, ONLINE_TIMEOUT_MS);
        if (!reply.ok) throw new VmError("running", `vstor: taking snapshot '${name}' of running machine '${vm.name}' failed: ${reply.error}`);
        uuid = (reply.data as { uuid: string }).uuid;
      } else {
        uuid = (await withMachineLocks(ctx, "snapshot take", () => takeSnapshot(ctx, name, { description }))).uuid;
      }
      out(args.options.has("json") ? JSON.stringify({ uuid, name }) : `Snapshot taken. UUID: ${uuid}\n`);
      return 0;
    }
    case "restore":
    case "restorecurrent": {
      const args = parseArgs(rest);
      allowOnly(args, []);
      const name = action === "restorecurrent" ? vm.currentSnapshot : args.positional[0];
      if (!name) throw new UsageError(action === "restorecurrent" ? `machine '${vm.name}' has no current snapshot` : "snapshot restore needs a snapshot name or UUID");
      if (session) throw new VmError("running", `vstor: machine '${vm.name}' is running; power it off (or save its state) before restoring a snapshot`);
      const snap = await withMachineLocks(ctx, "snapshot restore", () => restoreSnapshot(ctx, name));
      out(`Restored snapshot '${snap.name}' (UUID: ${snap.uuid})${snap.stateFile ? "; the next startvm resumes its saved state" : ""}.\n`);
      return 0;
    }
    case "delete": {
      const args = parseArgs(rest);
      allowOnly(args, []);
      const [name] = args.positional;
      if (!name) throw new UsageError("snapshot delete needs a snapshot name or UUID");
      const snap = findSnapshot(vm, name);
      if (session) {
        const reply = await sendControl(store.machineDir(vm.name), { command: "snapshot-delete", args: [snap.uuid] }, ONLINE_TIMEOUT_MS);
        if (!reply.ok) throw new VmError("running", `vstor: deleting snapshot '${snap.name}' of running machine '${vm.name}' failed: ${reply.error}`);
      } else {
        const bar = progress("Merging");
        try {
          await withMachineLocks(ctx, "snapshot delete", () =>
            deleteSnapshot(ctx, snap.uuid, { onMergeProgress: (i, n, done, total) => bar.update(done, total, `disk ${i + 1} of ${n}`) }),
          );
        } finally {
          bar.finish();
        }
      }
      out(`Deleted snapshot '${snap.name}' (UUID: ${snap.uuid}).\n`);
      return 0;
    }
    case "edit": {
      // Rename a snapshot or change its description; nothing on disk changes.
      const args = parseArgs(rest);
      allowOnly(args, ["name", "description"]);
      const [which] = args.positional;
      if (!which) throw new UsageError("snapshot edit needs a snapshot name or UUID");
      const newName = optString(args, "name");
      const description = optString(args, "description");
      if (newName === undefined && description === undefined) throw new UsageError("snapshot edit: give --name and/or --description");
      if (newName !== undefined && !newName.trim()) throw new UsageError("snapshot edit: --name cannot be empty");
      const fresh = store.get(vm.uuid);
      const snap = findSnapshot(fresh, which);
      if (newName !== undefined) snap.name = newName;
      if (description !== undefined) {
        if (description) snap.description = description;
        else delete snap.description;
      }
      store.save(fresh);
      out(`Snapshot {${snap.uuid}} is now '${snap.name}'.\n`);
      return 0;
    }
    case "list": {
      const args = parseArgs(rest, ["json"]);
      allowOnly(args, ["json"]);
      if (args.options.has("json")) out(JSON.stringify({ current: vm.currentSnapshot ?? null, snapshots: snapshotTreeJson(vm.snapshot) }));
      else if (!vm.snapshot) out(`This machine does not have any snapshots\n`);
      else out(snapshotTreeText(vm).join("\n") + "\n");
      return 0;
    }
    default:
      throw new UsageError(`snapshot: unknown action '${action}' (known: take, restore, restorecurrent, delete, edit, list)`);
  }
}

/**
 * Offline work on a machine's media holds the locks the machine would need, so it cannot be
 * started (or its disks used elsewhere) meanwhile.
 */
async function withMachineLocks<T>(ctx: MachineContext, what: string, fn: () => Promise<T>): Promise<T> {
  const requests = [ctx.vm.storageControllers, ...allSnapshots(ctx.vm.snapshot).map((s) => s.storageControllers)].flatMap((c) => lockRequests(ctx.mm, c));
  const lease = new MediumLocks().acquire(`${ctx.vm.name} (${what})`, requests);
  try {
    return await fn();
  } finally {
    lease.release();
  }
}

interface SnapshotJson {
  uuid: string;
  name: string;
  description?: string;
  takenAt: string;
  online: boolean;
  children: SnapshotJson[];
}

export function snapshotTreeJson(s: SnapshotRecord | undefined): SnapshotJson[] {
  if (!s) return [];
  return [{ uuid: s.uuid, name: s.name, ...(s.description ? { description: s.description } : {}), takenAt: s.takenAt, online: !!s.stateFile, children: s.children.flatMap((c) => snapshotTreeJson(c)) }];
}

/** The tree as VBoxManage prints it: indented, the current snapshot starred. */
export function snapshotTreeText(vm: MachineDefinition): string[] {
  const lines: string[] = [];
  const visit = (s: SnapshotRecord, depth: number) => {
    const current = s.uuid === vm.currentSnapshot ? " *" : "";
    lines.push(`${"   ".repeat(depth)}Name: ${s.name} (UUID: ${s.uuid})${s.stateFile ? " [online]" : ""}${current}`);
    if (s.description) lines.push(`${"   ".repeat(depth + 1)}Description: ${s.description}`);
    s.children.forEach((c) => visit(c, depth + 1));
  };
  if (vm.snapshot) visit(vm.snapshot, 0);
  return lines;
}
