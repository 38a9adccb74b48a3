/**
 * Saved state of the HBA: the global registers, every port's registers and link state, each
 * drive's ATA core state, and what was in flight.
 *
 * Commands in flight are not serialised: their command headers, FISes and PRDTs are still in
 * guest RAM, which is saved with the machine. After restore the port fetches them again:
 *  - a non-queued command keeps its PxCI bit, so the engine simply fetches that slot first and
 *    runs it from the start (its PRDBC starts at 0 again);
 *  - accepted queued commands (PxSACT set, PxCI already clear) are re-issued from their slots
 *    without a second accepting D2H FIS, and complete with SDB FISes as usual.
 * Re-running a command from the start is safe: a read reads the same sectors, a write writes the
 * data still in the guest's buffer (the guest may not touch it until the command completes).
 */
import type { AtaDeviceState } from "../ata/device.js";
import type { AhciPort } from "./port.js";

export const STATE_VERSION = 1;

export interface PortState {
  /** The drive the port had (a restore into a port with another kind of drive powers it on). */
  kind: "ata" | "atapi" | null;
  clb: number;
  fb: number;
  is: number;
  ie: number;
  cmd: number;
  tfd: number;
  sig: number;
  sctl: number;
  serr: number;
  sact: number;
  ci: number;
  ccs: number;
  nextSlot: number;
  linkUp: boolean;
  sigPending: boolean;
  stopped: boolean;
  srst: boolean;
  /** The non-queued command in flight (its PxCI bit is set), or null. */
  activeSlot: number | null;
  /** Accepted queued commands in flight, as a slot mask. */
  queued: number;
  device: AtaDeviceState | null;
}

export interface ControllerState {
  portCount: number;
  ghc: number;
  is: number;
  /** An OS driver had taken the HBA over (the ports beyond biosPorts were visible). */
  osOwned?: boolean;
  ports: PortState[];
}

export function savePort(p: AhciPort): PortState {
  return {
    kind: p.drive?.kind ?? null,
    clb: p.clb,
    fb: p.fb,
    is: p.is,
    ie: p.ie,
    cmd: p.cmd,
    tfd: p.tfd,
    sig: p.sig,
    sctl: p.sctl,
    serr: p.serr,
    sact: p.sact,
    ci: p.ci,
    ccs: p.ccs,
    nextSlot: p.nextSlot,
    linkUp: p.linkUp,
    sigPending: p.sigPending,
    stopped: p.stopped,
    srst: p.srst,
    activeSlot: p.active ? p.active.slot : null,
    queued: p.queue.mask,
    device: p.drive ? p.drive.saveState() : null,
  };
}

/**
 * Restore one port. Returns false (and leaves the port to be powered on) when the saved state
 * does not fit: another kind of drive, or malformed data.
 */
export function restorePort(p: AhciPort, s: PortState | undefined): boolean {
  if (!s || typeof s !== "object") return false;
  const kind = p.drive?.kind ?? null;
  if (s.kind !== kind) {
    p.trace(`saved state has ${s.kind ? `an ${s.kind} drive` : "no drive"}, the port has ${kind ? `an ${kind} drive` : "none"}; powering it on`);
    return false;
  }
  if (kind && !s.device) return false;
  p.abandon("state restored");
  const u32 = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v >>> 0 : 0);
  p.clb = (u32(s.clb) & ~0x3ff) >>> 0;
  p.fb = (u32(s.fb) & ~0xff) >>> 0;
  p.is = u32(s.is);
  p.ie = u32(s.ie);
  p.cmd = u32(s.cmd);
  p.tfd = u32(s.tfd) & 0xffff;
  p.sig = u32(s.sig);
  p.sctl = u32(s.sctl);
  p.serr = u32(s.serr);
  p.sact = u32(s.sact);
  p.ci = u32(s.ci);
  p.ccs = u32(s.ccs) & 0x1f;
  p.linkUp = s.linkUp === true && kind !== null;
  p.sigPending = s.sigPending === true && p.linkUp;
  p.stopped = s.stopped === true;
  p.srst = s.srst === true;
  if (p.drive && s.device) p.drive.restoreState(s.device);
  const active = typeof s.activeSlot === "number" ? s.activeSlot & 0x1f : undefined;
  // Fetch the interrupted non-queued command first, then carry on round-robin.
  p.nextSlot = active ?? u32(s.nextSlot) & 0x1f;
  p.resumeQueued(u32(s.queued));
  return true;
}
