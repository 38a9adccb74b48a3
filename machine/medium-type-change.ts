/**
 * Setting a medium's type (modifymedium --type, storageattach --mtype): VirtualBox's rules,
 * checked against the registry and the machines that use the medium, then kept in the registry.
 */
import type { MediumManager } from "../media/medium-manager.js";
import { checkTypeChange, effectiveType, type MediumType } from "../media/medium-types.js";
import { machinesUsing, mediumUsage } from "./medium-usage.js";
import type { MachineDefinition } from "./vm-store.js";

export async function setMediumType(mm: MediumManager, uuidOrPath: string, type: MediumType, vms: readonly MachineDefinition[]): Promise<void> {
  const rec = mm.requireRecord(uuidOrPath);
  const from = effectiveType(mm.registry, rec);
  if (from === type) return;
  const fixed = rec.deviceType !== "hdd" ? true : await mm.info(rec.uuid).then((i) => i.format === "RAW" || i.variant === "Fixed" || i.variant === "Split2G,Fixed");
  checkTypeChange(type, from, {
    location: rec.location,
    deviceType: rec.deviceType,
    isDifferencing: !!rec.parentUuid,
    childCount: mm.registry.children(rec.uuid).length,
    fixed,
    attachedTo: machinesUsing(mediumUsage(vms), rec.deviceType === "hdd" ? rec.uuid : rec.location).length,
  });
  mm.registry.updateRecord(rec.uuid, { type });
}
