/** AHCI SATA host bus adapter (ICH8-M compatible) over the shared ATA core. */
export {
  AhciController,
  AHCI_CLASS_CODE,
  ICH8M_AHCI_DEVICE_ID,
  INTEL_VENDOR_ID,
  type AhciControllerOptions,
  type AhciDriveConfig,
  type AhciPortFlags,
  type AhciPortOptions,
} from "./controller.js";
export { AhciPort } from "./port.js";
export { ABAR_INDEX, ABAR_SIZE, AHCI_VERSION, CAP, GHC, HBA_REG, MAX_PORTS, PORT_REG, PxCMD, PxIS, RX_FIS, SERR, SIG } from "./registers.js";
export { FIS_TYPE, decodeH2d, encodeH2d } from "./fis.js";
