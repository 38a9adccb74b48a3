/** PIIX3 / PIIX4 / ICH6 IDE controllers over the shared ATA core. */
export { IdeController, type IdeChannelDrives, type IdeControllerOptions } from "./controller.js";
export { IdeChannel, ATA_REG, DEVCTL, EMPTY_BUS, type IdeDriveConfig } from "./channel.js";
export { BusMaster, BM_CMD, BM_REG, BM_STATUS, MAX_PRD_ENTRIES } from "./bus-master.js";
export { CHIPSETS, CFG, IDE_CLASS_CODE, INTEL_VENDOR_ID, type IdeChipset } from "./chipset.js";
export { defaultIdeLayout, type IdeLayout, type IdeLayoutOptions } from "./layout.js";
export { NoMediumAtapi, type NoMediumAtapiOptions } from "./no-medium.js";
