/**
 * The ATAPI packet layer on top of the SCSI target core: the AtapiPacketHandler the ATA core's
 * PACKET command hands command packets to, the emulated CD/DVD-ROM drive, and host passthrough
 * with VirtualBox's command filter.
 */
export { AtapiScsiHandler, atapiResult, createAtapiCdrom, type AtapiCdrom, type AtapiCdromOptions } from "./atapi-scsi.js";
export {
  filterPassthroughCdb,
  PassthroughTarget,
  readCdSectorSize,
  type FilterContext,
  type PassthroughDevice,
  type PassthroughRequest,
  type PassthroughResponse,
  type PassthroughTargetOptions,
  type PassthroughVerdict,
} from "./passthrough.js";
