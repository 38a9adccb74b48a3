/**
 * The running side of snapshots and saved states, in the VM process that owns the emulator and
 * the open media: a consistent checkpoint (guest I/O held on every disk, the CPU stopped unless
 * live) for savestate and online snapshots, and online merges for snapshot deletion.
 */
import { writeFileSync } from "node:fs";
import type { MediumManager } from "../media/medium-manager.js";
import type { GuestSession } from "./guest-session.js";
import { stateFilePath } from "./machine-media.js";
import type { MediumLease } from "./medium-lock.js";
import { lockRequests } from "./power-on-media.js";
import type { OnlineMerger } from "./snapshot-delete.js";
import type { RunningMachine } from "./snapshots.js";
import type { MachineStorage } from "./storage.js";
import type { MachineDefinition, VmStore } from "./vm-store.js";

export interface RunningParts {
  session: () => GuestSession;
  storage: MachineStorage;
  lease: MediumLease;
  mm: MediumManager;
}

export function runningMachine(parts: RunningParts): RunningMachine & OnlineMerger {
  return {
    async checkpoint(pause, during) {
      const emulator = parts.session().vm.emulator;
      if (pause) await emulator.stop();
      try {
        await parts.storage.quiesced(async () => {
          const state = new Uint8Array(await parts.session().vm.saveState());
          await during(state, (c, p, d, next) => parts.storage.reopenDisk(c, p, d, next));
        });
      } finally {
        if (pause) await emulator.run();
      }
    },
    mediaChanged(vm: MachineDefinition) {
      parts.lease.set(lockRequests(parts.mm, vm.storageControllers));
    },
    mergeLive: (merge, run) => parts.storage.mergeLive(merge, run),
  };
}

/**
 * controlvm savestate: the machine's state (CPU, RAM, devices) goes to a file and the machine
 * stops; the next startvm resumes it. The disks are flushed at the same instant.
 */
export async function saveMachineState(store: VmStore, vmUuid: string, running: RunningMachine): Promise<string> {
  const vm = store.get(vmUuid);
  const file = stateFilePath(store.machineDir(vm.name));
  await running.checkpoint(true, async (state) => writeFileSync(file, state));
  const now = store.get(vmUuid);
  now.state = "saved";
  now.savedStateFile = file;
  store.save(now);
  return file;
}
