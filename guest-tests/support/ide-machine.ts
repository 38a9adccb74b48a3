/** The IDE machine the save/restore test saves in one process and restores in another. */
import type { Host } from "../../host-adapter/host.js";
import type { BlockBackend } from "../../media/block.js";
import { IdeController } from "../../devices/ide/controller.js";

export function addIdeWithDisk(host: Host, disk: BlockBackend): IdeController {
  return new IdeController(host, { chipset: "ich6", primary: { master: { kind: "ata", medium: disk, serial: "VB-STATE-TEST" } } });
}
