/** The ATA device core shared by the IDE and AHCI front ends. */
export { AtaDevice, type AtaDeviceState, type Cmd, type FinishOptions } from "./device.js";
export {
  defaultGeometry,
  serialFromUuid,
  udmaMaxFor,
  type AtaChipset,
  type AtaDeviceConfig,
  type DriveSettings,
  type PowerMode,
  type ResolvedConfig,
} from "./config.js";
export { COMMANDS, commandInfo, type CommandSpec } from "./command-table.js";
export { identifyDevice, identifyPacketDevice, LBA28_LIMIT } from "./identify.js";
export { decodeFpdma, READ_FPDMA_QUEUED, WRITE_FPDMA_QUEUED, type FpdmaCommand, type QueuedResult } from "./ncq.js";
export { INT_REASON } from "./atapi.js";
export * from "./task-file.js";
export type * from "./transport.js";
