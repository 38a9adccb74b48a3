/**
 * The SCSI target core shared by the ATAPI packet layer and the SCSI HBAs: the transport contract
 * (target.ts), sense data (sense.ts), the command table and dispatcher (dispatch.ts), the SPC
 * commands every unit answers (spc.ts), and the MMC CD/DVD unit (mmc-target.ts on a CdDrive).
 */
export type { ScsiIo, ScsiResetKind, ScsiResult, ScsiTarget } from "./target.js";
export { FIXED_SENSE_LENGTH, fixedSense, parseSense, sameCondition, SENSE, SENSE_KEY, senseName, STATUS, type Sense } from "./sense.js";
export {
  cdbLengthOf,
  CommandContext,
  commandTable,
  dispatch,
  SenseState,
  STOPPED,
  type CommandFlags,
  type CommandTable,
  type DispatchStats,
  type DispatchUnit,
  type Handler,
  type Outcome,
  type ScsiCommand,
} from "./dispatch.js";
export { SPC_COMMANDS, standardInquiry, STANDARD_INQUIRY_LENGTH, VPD, type InquiryIdentity, type SpcUnit } from "./spc.js";
export { CD_MAX_SECTORS, CD_SECTOR_SIZE, CdDrive, type CdDriveEvent, type CdDriveListener, type CdDriveOptions, type CdDriveState, type MediumKind } from "./cd-drive.js";
export { MEDIA_EVENT, MMC_COMMANDS, MmcTarget, type MmcTargetConfig, type MmcTargetState } from "./mmc-target.js";
export { FEATURE, MODE_PAGE, PROFILE } from "./mmc-config.js";
export { edc, encodeMode1Sector, lbaToMsf, MAX_MSF_LBA, mode1Sector, msfToLba, RAW_SECTOR_SIZE, toBcd, USER_DATA_SIZE, type Msf } from "./cd-sector.js";
