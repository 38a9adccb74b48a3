/**
 * Hot-plug of a drive on a running port (AHCI 10.10 and 7.3). What the guest sees, in the order
 * the hardware shows it:
 *
 *   attach: PxSSTS.DET 0 → 3 (unless software holds the Phy in COMRESET or offline), PxCMD.CPS
 *           set, PxSERR.DIAG.X (presence changed) and DIAG.N (PhyRdy changed) set, which PxIS
 *           reports as PCS and PRCS; then the drive's signature D2H FIS (PxSIG, PxTFD).
 *   detach: every command in flight is void, PxCI/PxSACT clear, PxSSTS.DET 3 → 0, CPS clear,
 *           PxTFD 7Fh, PxSIG FFFFFFFFh, DIAG.X and DIAG.N set (PCS, PRCS).
 *
 * PCS and PRCS interrupt when enabled (libahci enables both: ahci_error_intr treats either as a
 * hot-plug event, freezes the port and lets EH reset and re-probe the link). They stay set until
 * software clears PxSERR.DIAG.X/N, as on real hardware.
 */
import type { AtaDevice } from "../ata/device.js";
import type { AhciPort } from "./port.js";
import { SCTL, SERR, SIG, TFD_BUSY, TFD_NO_DEVICE } from "./registers.js";

export function plugDrive(port: AhciPort, dev: AtaDevice): void {
  port.drive = dev;
  port.sig = SIG.NONE;
  port.tfd = TFD_BUSY;
  if ((port.sctl & SCTL.DET_MASK) === 0) {
    port.linkUp = true;
    port.sigPending = true;
    port.kick();
  }
  port.serrorEvent(SERR.DIAG_X | SERR.DIAG_N);
}

/** Returns the drive that was removed. */
export function unplugDrive(port: AhciPort): AtaDevice | undefined {
  const dev = port.drive;
  port.abandon("drive removed", "power-on");
  port.ci = 0;
  port.sact = 0;
  port.drive = undefined;
  port.linkUp = false;
  port.sigPending = false;
  port.tfd = TFD_NO_DEVICE;
  port.sig = SIG.NONE;
  port.serrorEvent(SERR.DIAG_X | SERR.DIAG_N);
  return dev;
}
