/** The machines the save/restore tests save in one process and restore in another. */
import type { Host } from "../../host-adapter/host.js";
import type { BlockBackend } from "../../media/block.js";
import { AhciController } from "../../devices/ahci/index.js";
import { IdeController } from "../../devices/ide/controller.js";

export function addIdeWithDisk(host: Host, disk: BlockBackend): IdeController {
  return new IdeController(host, { chipset: "ich6", primary: { master: { kind: "ata", medium: disk, serial: "VB-STATE-TEST" } } });
}

export function addAhciWithDisk(host: Host, disk: BlockBackend): AhciController {
  return new AhciController(host, { portCount: 2, ports: { 0: { kind: "ata", medium: disk, serial: "VB-STATE-SATA" } } });
}
