/**
 * One AHCI port (AHCI 1.1 sections 3.3 and 5): its registers, the link to its drive, the
 * received-FIS area and the command list engine. One drive per port (no port multiplier).
 *
 * Register side effects are immediate (CR follows ST, FR follows FRE, CLO self-clears), so drivers
 * that poll for them see them at once; work that touches guest memory (fetching commands, posting
 * the signature FIS) is deferred out of the MMIO handler through `kick()`.
 *
 *  - Commands are fetched only while PxCMD.ST is set, starting at slot 0 after ST rises and then
 *    round-robin. Non-queued commands run one at a time and never beside queued ones; a slot that
 *    must wait stays in PxCI and is fetched again when the port frees up.
 *  - Received FISes are copied to PxFB only while FRE is set (D2H at +40h, PIO Setup at +20h, SDB
 *    at +58h); PxTFD and PxIS follow every FIS.
 *  - Fatal errors (TFES, HBFS, HBDS, IFS) stop the port: nothing more is fetched, the failed slot
 *    keeps its PxCI bit, queued commands are aborted, until software clears ST (which clears
 *    PxCI and PxSACT) — the AHCI error model libahci's EH and SeaBIOS's recovery rely on.
 *  - The link: with a drive present it comes up at power-on and after COMRESET (PxSCTL.DET 1 →
 *    0); the drive's reset signature arrives as a D2H FIS (posted once FRE is set), which also
 *    sets PxSIG (0101h ATA, EB140101h ATAPI) and PxTFD.
 *  - Epochs: ST cleared, COMRESET, HBA reset, detach and restore start a new epoch. Every slot
 *    remembers its epoch and its identity; a continuation of an older one touches nothing.
 */
import type { AccessSize, GuestMemory } from "../../host-adapter/host.js";
import type { AtaDevice } from "../ata/device.js";
import { READ_FPDMA_QUEUED, WRITE_FPDMA_QUEUED } from "../ata/ncq.js";
import { newTaskFile, STATUS, type TaskFile } from "../ata/task-file.js";
import type { AtaCompletion, AtaTransport } from "../ata/transport.js";
import { readCommandFis, readHeader, writePrdbc, type CommandHeader } from "./command-list.js";
import { CONTROL_SRST, decodeH2d, encodeD2h, encodeSdb, SDB_STATUS_MASK, type FisRegisters } from "./fis.js";
import { NcqQueue, type NcqPort } from "./ncq-queue.js";
import {
  ISS_GEN2,
  PORT_REG,
  PxCMD,
  PxCMD_RW,
  PxIE_MASK,
  PxIS,
  PxIS_FATAL,
  PxIS_W1C,
  RX_FIS,
  SCTL,
  SERR,
  SIG,
  SLOTS,
  SSTS,
  TFD_BUSY,
  TFD_NO_DEVICE,
} from "./registers.js";
import { idleTransport, NonQueuedCommand, type SlotIo } from "./slot-transport.js";

export interface PortEnv {
  /** Guest memory as the HBA masters it (refuses everything while PCI bus mastering is off). */
  memory: GuestMemory;
  defer(fn: () => void): void;
  trace(message: string): void;
  /** PxIS or PxIE changed: the controller latches IS and updates its interrupt line. */
  interruptChanged(port: AhciPort): void;
}

export class AhciPort implements NcqPort {
  // ---- registers (public for the controller, hot-plug and saved state) ----
  clb = 0;
  fb = 0;
  /** PxIS without the bits that mirror PxSERR (see `interruptStatus`). */
  is = 0;
  ie = 0;
  /** The PxCMD bits software sets: ST, FRE, ATAPI, DLAE. The rest is computed on read. */
  cmd = 0;
  tfd = TFD_NO_DEVICE;
  sig: number = SIG.NONE;
  sctl = 0;
  serr = 0;
  sact = 0;
  ci = 0;
  /** PxCMD.CCS: the slot fetched last. */
  ccs = 0;

  // ---- state ----
  /** The drive, if one is attached. */
  drive: AtaDevice | undefined;
  /** Phy communication established (SSTS.DET = 3). */
  linkUp = false;
  /** The drive's reset signature FIS is waiting for FRE. */
  sigPending = false;
  /** A fatal error stopped the command list engine until ST is cleared. */
  stopped = false;
  /** A Device Control FIS with SRST set was sent and not yet released. */
  srst = false;
  /** Where the round-robin fetch resumes. */
  nextSlot = 0;
  epoch = 0;
  active: NonQueuedCommand | undefined;
  readonly queue: NcqQueue;
  private kickPending = false;
  /** Queued commands to re-issue after a restore (see state.ts). */
  private resume = 0;
  private readonly idle: AtaTransport;

  constructor(
    readonly index: number,
    readonly hotpluggable: boolean,
    private readonly env: PortEnv,
  ) {
    this.queue = new NcqQueue(this);
    this.idle = idleTransport((m) => this.trace(m));
  }

  get memory(): GuestMemory {
    return this.env.memory;
  }

  trace(message: string): void {
    this.env.trace(`port ${this.index}: ${message}`);
  }

  /** PxIS as read: stored bits plus PCS/PRCS/UFS, which mirror PxSERR.DIAG.X/N/F. */
  get interruptStatus(): number {
    const s = this.serr;
    return (this.is | (s & SERR.DIAG_X ? PxIS.PCS : 0) | (s & SERR.DIAG_N ? PxIS.PRCS : 0) | (s & SERR.DIAG_F ? PxIS.UFS : 0)) >>> 0;
  }

  /** An enabled interrupt condition is pending (feeds IS.IPS). */
  get interruptPending(): boolean {
    return (this.interruptStatus & this.ie) !== 0;
  }

  // ---- register access ----

  read(reg: number): number {
    switch (reg) {
      case PORT_REG.CLB: return this.clb;
      case PORT_REG.FB: return this.fb;
      case PORT_REG.IS: return this.interruptStatus;
      case PORT_REG.IE: return this.ie;
      case PORT_REG.CMD: return this.commandRegister();
      case PORT_REG.TFD: return this.tfd;
      case PORT_REG.SIG: return this.sig;
      case PORT_REG.SSTS: return this.status();
      case PORT_REG.SCTL: return this.sctl;
      case PORT_REG.SERR: return this.serr;
      case PORT_REG.SACT: return this.sact;
      case PORT_REG.CI: return this.ci;
      default: return 0; // CLBU/FBU (no 64-bit addressing), SNTF, reserved, vendor
    }
  }

  /** Write the bits of `mask` (a partial write touches only its bytes). */
  write(reg: number, value: number, mask: number): void {
    const v = value & mask;
    const merge = (old: number): number => ((old & ~mask) | v) >>> 0;
    switch (reg) {
      case PORT_REG.CLB: this.clb = (merge(this.clb) & ~0x3ff) >>> 0; break;
      case PORT_REG.FB: this.fb = (merge(this.fb) & ~0xff) >>> 0; break;
      case PORT_REG.IS: this.is = (this.is & ~(v & PxIS_W1C)) >>> 0; break;
      case PORT_REG.IE:
        this.ie = (merge(this.ie) & PxIE_MASK) >>> 0;
        this.env.interruptChanged(this);
        break;
      case PORT_REG.CMD: this.writeCommand(merge(this.commandRegister()), v); break;
      case PORT_REG.SCTL: this.writeSControl((merge(this.sctl) & SCTL.WRITABLE) >>> 0); break;
      case PORT_REG.SERR: this.serr = (this.serr & ~v) >>> 0; break;
      case PORT_REG.SACT:
        if (this.cmd & PxCMD.ST) this.sact = (this.sact | v) >>> 0;
        else if (v) this.trace("PxSACT written while ST is clear: ignored");
        break;
      case PORT_REG.CI:
        if (!(this.cmd & PxCMD.ST)) {
          if (v) this.trace("PxCI written while ST is clear: ignored");
          break;
        }
        this.ci = (this.ci | v) >>> 0;
        if (v) this.kick();
        break;
      default: break;
    }
  }

  private commandRegister(): number {
    const c = this.cmd;
    let v = (c & (PxCMD.ST | PxCMD.FRE | PxCMD_RW)) | PxCMD.SUD | PxCMD.POD; // no staggered spin-up, no cold presence power
    if (c & PxCMD.ST) v |= PxCMD.CR | (this.ccs & 0x1f) << PxCMD.CCS_SHIFT;
    if (c & PxCMD.FRE) v |= PxCMD.FR;
    if (this.hotpluggable) v |= PxCMD.HPCP;
    if (this.drive) v |= PxCMD.CPS;
    return v >>> 0;
  }

  /** `merged`: the new register value; `written`: the bits this access set (for CLO). */
  private writeCommand(merged: number, written: number): void {
    const old = this.cmd;
    // ICC (link power requests) is accepted and done at once: without CAP.SALP there is no
    // partial/slumber state to enter, so it reads back 0 (idle) and IPM stays active.
    this.cmd = merged & (PxCMD.ST | PxCMD.FRE | PxCMD_RW);
    if (written & PxCMD.CLO) this.tfd &= ~(STATUS.BSY | STATUS.DRQ); // command list override, done at once
    if (old & PxCMD.ST && !(merged & PxCMD.ST)) this.stopEngine();
    if (!(old & PxCMD.ST) && merged & PxCMD.ST) {
      this.nextSlot = 0;
      this.ccs = 0;
      this.kick();
    }
    if (!(old & PxCMD.FRE) && merged & PxCMD.FRE && this.sigPending) this.kick();
  }

  private writeSControl(value: number): void {
    const oldDet = this.sctl & SCTL.DET_MASK;
    this.sctl = value;
    const det = value & SCTL.DET_MASK;
    if (det === oldDet) return;
    if (det === SCTL.DET_COMRESET || det === SCTL.DET_OFFLINE) {
      this.linkDown(det === SCTL.DET_COMRESET ? "COMRESET" : "Phy offline");
    } else if (det === 0 && !this.linkUp) {
      this.linkUpNow(); // COMRESET released (or the Phy back online)
    }
  }

  /** PxSSTS. */
  status(): number {
    if (!this.drive) return 0;
    const det = this.sctl & SCTL.DET_MASK;
    if (det === SCTL.DET_OFFLINE) return SSTS.DET_OFFLINE;
    if (!this.linkUp) return SSTS.DET_PRESENT;
    const limit = this.sctl >> SCTL.SPD_SHIFT & 0xf;
    const spd = limit === 0 ? ISS_GEN2 : Math.min(limit, ISS_GEN2);
    return SSTS.DET_ONLINE | spd << SSTS.SPD_SHIFT | SSTS.IPM_ACTIVE;
  }

  // ---- resets and the link ----

  /** Power-on or HBA reset (GHC.HR): registers to defaults, the drive reset, the link re-initialised. */
  reset(kind: "power-on" | "hba"): void {
    this.abandon(`${kind} reset`, kind === "power-on" ? "power-on" : "hardware");
    if (kind === "power-on") {
      this.clb = 0;
      this.fb = 0;
    }
    this.is = this.ie = this.cmd = this.sctl = this.serr = this.sact = this.ci = this.ccs = this.nextSlot = 0;
    this.stopped = this.srst = false;
    this.tfd = this.drive ? TFD_BUSY : TFD_NO_DEVICE;
    this.sig = SIG.NONE;
    this.linkUp = this.sigPending = this.drive !== undefined;
  }

  /** COMRESET asserted or the Phy taken offline: everything in flight is void, the drive reset. */
  private linkDown(why: string): void {
    this.abandon(why, "hardware");
    this.ci = this.sact = 0;
    this.stopped = this.srst = false;
    this.linkUp = this.sigPending = false;
    this.tfd = this.drive ? TFD_BUSY : TFD_NO_DEVICE;
    this.sig = SIG.NONE;
  }

  /** COMRESET released: with a drive, the link comes up and its signature follows. */
  private linkUpNow(): void {
    if (!this.drive) return;
    this.linkUp = true;
    this.sigPending = true;
    this.kick();
  }

  /**
   * Start a new epoch: every command in flight is forgotten and the drive told. `deviceReset`
   * resets the drive; otherwise a non-queued command the drive is still busy with is cancelled
   * with a software reset (a real drive would stay busy until the host resets it; libata and
   * SeaBIOS always do, so this only spares them the wait).
   */
  abandon(why: string, deviceReset?: "power-on" | "hardware"): void {
    this.epoch++;
    const inFlight = (this.active ? 1 : 0) + this.queue.size;
    if (inFlight) this.trace(`${why}: ${inFlight} command(s) in flight abandoned`);
    this.active = undefined;
    this.queue.abandon();
    const dev = this.drive;
    if (!dev) return;
    dev.transport = this.idle;
    if (deviceReset) dev.reset(deviceReset);
    else {
      dev.abortQueued();
      if (dev.busy) dev.reset("software");
    }
  }

  /** ST cleared: PxCI, PxSACT and CCS clear, the error stop ends. */
  private stopEngine(): void {
    this.abandon("ST cleared");
    this.ci = this.sact = this.ccs = 0;
    this.stopped = false;
  }

  // ---- command fetch ----

  /** Run the engine after the current register access (no guest memory from MMIO handlers). */
  kick(): void {
    if (this.kickPending) return;
    this.kickPending = true;
    this.env.defer(() => {
      this.kickPending = false;
      try {
        this.process();
      } catch (e) {
        this.trace(`internal error: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  /** After a restore: re-issue these accepted queued commands from their slots. */
  resumeQueued(mask: number): void {
    this.resume = mask >>> 0;
    this.kickPending = false; // a kick deferred before the restore may have been dropped with the host's queue
    this.kick();
  }

  private process(): void {
    if (this.sigPending) this.postSignature();
    const resume = this.resume;
    this.resume = 0;
    if (!(this.cmd & PxCMD.ST) || this.stopped || !this.drive || !this.linkUp) return;
    for (let slot = 0; slot < SLOTS; slot++) if (resume & 1 << slot) this.reissueQueued(slot);
    // Each round consumes a slot (its PxCI bit clears or it becomes the active command) or stops.
    for (let round = 0; round < SLOTS; round++) {
      const pending = (this.ci & ~(this.active ? 1 << this.active.slot : 0)) >>> 0;
      if (!pending) return;
      let slot = this.nextSlot;
      while (!(pending & 1 << slot)) slot = (slot + 1) % SLOTS;
      if (!this.startSlot(slot)) return;
      this.nextSlot = (slot + 1) % SLOTS;
    }
  }

  /** Fetch and start one slot; false when fetching must stop here for now. */
  private startSlot(slot: number): boolean {
    const dev = this.drive!;
    this.ccs = slot;
    const header = readHeader(this.memory, this.clb, slot);
    const bytes = header && readCommandFis(this.memory, header.ctba);
    if (!header || !bytes) {
      this.raise(PxIS.HBFS, `slot ${slot}: command ${header ? "table" : "list"} outside guest memory`);
      return false;
    }
    const fis = decodeH2d(bytes);
    if (!fis) {
      this.raise(PxIS.IFS, `slot ${slot}: command FIS type ${bytes[0]!.toString(16)}h is not a Register H2D FIS`);
      return false;
    }
    if (fis.kind === "control") {
      if (this.active || this.queue.size) return false;
      this.deviceControl(header, fis.control);
      return true;
    }
    const tf: TaskFile = { ...newTaskFile(), ...fis.tf };
    if (tf.command === READ_FPDMA_QUEUED || tf.command === WRITE_FPDMA_QUEUED) {
      if (this.active || dev.busy) return false;
      this.queue.start(dev, header, tf);
      return true;
    }
    if (this.active || this.queue.size || dev.busy) return false;
    this.startNonQueued(dev, header, tf);
    return false; // nothing else can start beside it
  }

  private reissueQueued(slot: number): void {
    const header = readHeader(this.memory, this.clb, slot);
    const bytes = header && readCommandFis(this.memory, header.ctba);
    const fis = bytes && decodeH2d(bytes);
    if (!header || fis?.kind !== "command" || (fis.tf.command !== READ_FPDMA_QUEUED && fis.tf.command !== WRITE_FPDMA_QUEUED)) {
      this.trace(`slot ${slot}: saved as a queued command in flight, but its slot no longer holds one`);
      return;
    }
    this.queue.start(this.drive!, header, { ...newTaskFile(), ...fis.tf }, true);
  }

  private startNonQueued(dev: AtaDevice, header: CommandHeader, tf: TaskFile): void {
    const cmd = new NonQueuedCommand(this, header, dev);
    this.active = cmd;
    this.tfd = (this.tfd & 0xff00 | STATUS.BSY) >>> 0;
    const { status: _s, error: _e, ...regs } = tf;
    Object.assign(dev.tf, regs);
    dev.transport = cmd;
    dev.execute();
  }

  /** A Register H2D FIS without C: Device Control. SRST 1 → 0 is a software reset of the drive. */
  private deviceControl(header: CommandHeader, control: number): void {
    const dev = this.drive!;
    const srst = (control & CONTROL_SRST) !== 0;
    if (srst && !this.srst) {
      this.srst = true;
      dev.reset("software");
      this.tfd = (this.tfd & 0xff00 | STATUS.BSY) >>> 0;
    } else if (!srst && this.srst) {
      this.srst = false;
      dev.reset("software");
      this.sigPending = true;
    }
    this.ci = (this.ci & ~(1 << header.slot)) >>> 0;
    writePrdbc(this.memory, this.clb, header.slot, 0);
    if (this.sigPending) this.postSignature();
  }

  /** The drive's reset D2H FIS: PxSIG, PxTFD, DHRS. Waits for FRE. */
  private postSignature(): void {
    const dev = this.drive;
    if (!dev || !this.linkUp) {
      this.sigPending = false;
      return;
    }
    if (!(this.cmd & PxCMD.FRE)) return;
    this.sigPending = false;
    const tf = dev.tf;
    this.sig = (tf.lbaHigh << 24 | tf.lbaMid << 16 | tf.lbaLow << 8 | tf.count) >>> 0;
    this.receiveD2h(tf, true);
  }

  // ---- SlotPort / NcqPort ----

  owns(slot: SlotIo): boolean {
    return slot === this.active || this.queue.owns(slot);
  }

  commandDone(cmd: NonQueuedCommand, c: AtaCompletion): void {
    const dev = this.drive!;
    this.active = undefined;
    dev.transport = this.idle;
    if (!writePrdbc(this.memory, this.clb, cmd.slot, cmd.prdt.moved)) this.raise(PxIS.HBFS, `slot ${cmd.slot}: command list outside guest memory`);
    if (cmd.pioInFinished && !c.interrupt) {
      // ATA PIO data-in: the ending status came with the last PIO Setup FIS; no D2H follows.
      this.tfd = (c.error << 8 | c.status) >>> 0;
    } else {
      this.receiveD2h(dev.tf, c.interrupt);
    }
    // A failed command keeps its PxCI bit (the port has stopped on TFES); so does every command
    // of a port stopped by another fatal error.
    if (!this.stopped) this.ci = (this.ci & ~(1 << cmd.slot)) >>> 0;
    this.kick();
  }

  acceptQueued(slot: number, regs: TaskFile): void {
    this.ci = (this.ci & ~(1 << slot)) >>> 0;
    this.receiveD2h(regs, false);
  }

  receivePioSetup(fis: Uint8Array, interrupt: boolean): void {
    this.writeFis(RX_FIS.PSFIS, fis);
    this.tfd = (fis[3]! << 8 | fis[15]!) >>> 0; // error, E_Status (the data has moved)
    if (interrupt) this.raise(PxIS.PSS);
  }

  receiveD2h(regs: FisRegisters, interrupt: boolean): void {
    this.writeFis(RX_FIS.RFIS, encodeD2h(regs, interrupt));
    this.tfd = (regs.error << 8 | regs.status) >>> 0;
    this.raise((interrupt ? PxIS.DHRS : 0) | (regs.status & STATUS.ERR ? PxIS.TFES : 0));
  }

  receiveSdb(o: { status: number; error: number; sactive: number; interrupt: boolean }): void {
    this.writeFis(RX_FIS.SDBFIS, encodeSdb(o));
    this.tfd = (o.error << 8 | this.tfd & 0xff & ~SDB_STATUS_MASK | o.status & SDB_STATUS_MASK) >>> 0;
    this.sact = (this.sact & ~o.sactive) >>> 0;
    this.raise((o.interrupt ? PxIS.SDBS : 0) | (o.status & STATUS.ERR ? PxIS.TFES : 0));
  }

  /** Set PxSERR bits (a PxSERR.DIAG.X/N change shows in PxIS.PCS/PRCS and may interrupt). */
  serrorEvent(bits: number): void {
    this.serr = (this.serr | bits) >>> 0;
    this.env.interruptChanged(this);
  }

  /** Set PxIS bits; a fatal one stops the port (and aborts the queued commands). */
  raise(bits: number, why?: string): void {
    if (why) this.trace(why);
    if (!bits) return;
    this.is = (this.is | bits) >>> 0;
    if (bits & PxIS_FATAL && !this.stopped) {
      this.stopped = true;
      if (this.queue.size) {
        this.trace(`stopped: ${this.queue.size} queued command(s) aborted`);
        this.queue.abandon();
        this.drive?.abortQueued();
      }
    }
    this.env.interruptChanged(this);
  }

  private writeFis(offset: number, fis: Uint8Array): void {
    if (!(this.cmd & PxCMD.FRE)) return;
    if (!this.memory.write(this.fb + offset, fis)) this.raise(PxIS.HBFS, "received-FIS area outside guest memory");
  }
}

/** Merge a partial register write: the dword value and the mask of the bytes written. */
export function byteLanes(offset: number, size: AccessSize, value: number): { value: number; mask: number } {
  const shift = (offset & 3) * 8;
  const width = size === 4 ? 0xffff_ffff : (1 << 8 * size) - 1;
  return { value: (value & width) << shift >>> 0, mask: width << shift >>> 0 };
}
