/**
 * clonevm: a new machine with the settings of an existing one and copies of its disks as they
 * are now (each differencing chain flattened into one new image with a new UUID, so the clone's
 * disks report serials of their own). Shareable disks are attached, not copied, as VirtualBox
 * does: they are meant to be used by several machines. DVD drives keep their disc.
 */
import { extname, join } from "node:path";
import { allowOnly, optString, parseArgs, requireOpt, UsageError } from "./args.js";
import { progress } from "./progress.js";
import type { Out } from "./vm-verbs.js";
import { runningSession } from "../machine/control-channel.js";
import { cloneControllers, diskAttachments, mediumType } from "../machine/machine-media.js";
import { VmError, VmStore } from "../machine/vm-store.js";
import { MediumManager, type MediumFormat } from "../media/medium-manager.js";

const MiB = 1 << 20;
const CREATABLE: readonly string[] = ["VDI", "VMDK", "VHD", "HDD", "QCOW2", "RAW"];

export async function clonevm(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["register"]);
  allowOnly(args, ["name", "register"]);
  const [source] = args.positional;
  if (!source) throw new UsageError("clonevm needs the machine to clone");
  if (!args.options.has("register")) throw new UsageError("clonevm without --register is not supported: vstor keeps every machine in its registry");
  const name = requireOpt(args, "name");
  const store = new VmStore();
  const from = store.get(source);
  if (await runningSession(store.machineDir(from.name))) throw new VmError("running", `vstor: machine '${from.name}' is running; clone it powered off`);
  const mm = new MediumManager();
  const vm = store.create(name, { memoryMiB: from.memoryMiB });
  if (from.boot1) vm.boot1 = from.boot1;
  vm.storageControllers = cloneControllers(from.storageControllers);
  const disks = diskAttachments(vm.storageControllers).filter(({ attachment }) => mediumType(mm, attachment.medium!) !== "shareable");
  const bar = progress("Cloning");
  const made: string[] = [];
  try {
    for (const [i, { attachment }] of disks.entries()) {
      const rec = mm.requireRecord(attachment.medium!);
      // The base's format (a differencing chain may mix formats), when vstor can create it.
      let base = rec;
      while (base.parentUuid) base = mm.requireRecord(base.parentUuid);
      const format = (CREATABLE.includes(base.format) ? base.format : "VDI") as MediumFormat;
      const target = join(store.machineDir(name), `${name}-disk${i + 1}${extname(base.location) || ".vdi"}`);
      const info = await mm.clone(rec.uuid, target, {
        format,
        onProgress: (done, total) => bar.update(Math.ceil(done / MiB), Math.ceil(total / MiB), `disk ${i + 1} of ${disks.length}`),
      });
      attachment.medium = info.uuid;
      made.push(info.uuid);
    }
  } catch (e) {
    for (const uuid of made) await mm.close(uuid, { delete: true }).catch(() => undefined);
    store.unregister(name, { delete: true });
    throw e;
  } finally {
    bar.finish();
  }
  store.save(vm);
  out(`Machine '${from.name}' cloned as '${name}' (UUID ${vm.uuid}); ${disks.length} disk${disks.length === 1 ? "" : "s"} copied.\n`);
  return 0;
}
