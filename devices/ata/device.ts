/**
 * One ATA or ATAPI drive: task file, drive settings, medium, and the command engine. IDE and AHCI
 * front ends drive it unchanged through `AtaTransport` (see transport.ts):
 *
 *   front end writes the task file (tf)  →  device.execute()
 *   core moves data with transport.pioIn/pioOut (front end answers with device.pioBlockDone())
 *     or transport.dmaTransfer (promise)
 *   core writes the final status/error into tf  →  transport.commandComplete()
 *
 * Guest mistakes end as ATA status (ERR + ABRT/IDNF/UNC), never as an exception out of here.
 * Medium work is asynchronous; nothing in the core depends on a promise resolving in the same turn.
 */
import type { BlockBackend } from "../../media/block.js";
import { COMMANDS, type CommandSpec } from "./command-table.js";
import { defaultSettings, resolveConfig, type AtaDeviceConfig, type DriveSettings, type ResolvedConfig } from "./config.js";
import { hex } from "./medium-io.js";
import { NcqLog, executeQueued, type FpdmaCommand, type QueuedResult } from "./ncq.js";
import { ERROR, STATUS, STATUS_READY, newTaskFile, setAddress, type Addressing, type TaskFile } from "./task-file.js";
import type { AtaDmaTransport, AtaTransport, AtapiPacketHandler, DataDirection, DmaOutcome, ResetKind } from "./transport.js";

/** One command in flight. Identity is what matters: reset() drops it and every continuation checks `live`. */
export interface Cmd {
  readonly opcode: number;
  readonly spec: CommandSpec;
  /** PIO blocks handed to the transport so far. */
  blocks: number;
  /** Called if the command is cancelled by reset() (lets a waiting packet layer resume). */
  cancel?: (() => void) | undefined;
}

interface Step {
  cmd: Cmd;
  next: () => void;
}

export interface FinishOptions {
  interrupt?: boolean;
  /** Write this LBA into the address registers (the failing sector). */
  lba?: number;
  addressing?: Addressing;
  dmaFault?: "short" | "fault";
}

/** Plain, JSON-compatible device state (for save/restore while no command is in flight). */
export interface AtaDeviceState {
  tf: TaskFile;
  settings: DriveSettings;
  ncqLog: ReturnType<NcqLog["save"]>;
  powerOnHours: number;
}

export class AtaDevice {
  readonly tf: TaskFile = newTaskFile();
  readonly config: ResolvedConfig;
  settings: DriveSettings;
  readonly medium: BlockBackend | undefined;
  readonly packetHandler: AtapiPacketHandler | undefined;
  /** Capacity in 512-byte sectors (0 without a medium or for ATAPI). */
  readonly capacity: number;
  readonly ncqLog = new NcqLog();
  private scratchBuf = new Uint8Array(0);
  /** NCQ commands accepted and not yet finished. */
  queuedInFlight = 0;
  /** Counts resets (and abortQueued calls); queued commands started before the latest one are void. */
  resets = 0;
  transport: AtaTransport;

  private current: Cmd | undefined;
  /** The PIO block handed to the transport and what runs once it has moved. */
  private pending: Step | undefined;
  /**
   * Trampoline for transports that call pioBlockDone() from inside pioIn/pioOut (AHCI): the
   * continuation is queued here and run by the loop in drive(), so thousands of small DRQ blocks
   * do not nest thousands of stack frames.
   */
  private readyNext: Step | undefined;
  private issuing = false;
  private driving = false;
  private readonly traceFn: ((message: string) => void) | undefined;
  private readonly clock: { nowNs(): number } | undefined;
  private hoursBase: number;
  private clockBase: number;

  constructor(config: AtaDeviceConfig, transport: AtaTransport) {
    if (config.kind === "ata" && config.medium && config.medium.sectorSize !== 512) {
      throw new RangeError(`ATA disks need 512-byte sectors (medium has ${config.medium.sectorSize})`);
    }
    this.medium = config.kind === "ata" ? config.medium : undefined;
    this.packetHandler = config.kind === "atapi" ? config.packetHandler : undefined;
    this.capacity = this.medium ? Math.floor(this.medium.size / 512) : 0;
    this.config = resolveConfig(config, this.capacity);
    this.settings = defaultSettings(this.config);
    this.transport = transport;
    this.traceFn = config.trace;
    this.clock = config.clock;
    this.hoursBase = config.powerOnHours ?? 0;
    this.clockBase = this.clock?.nowNs() ?? 0;
    this.reset("power-on");
  }

  get kind(): "ata" | "atapi" {
    return this.config.kind;
  }

  /** A command is in flight (the front end shows BSY or DRQ). */
  get busy(): boolean {
    return this.current !== undefined;
  }

  /** Execute the command in tf.command with the parameters in the task file. */
  execute(): void {
    if (this.current) {
      this.trace(`command ${hex(this.tf.command)} ignored: busy with ${this.current.spec.name}`);
      return;
    }
    const opcode = this.tf.command & 0xff;
    const spec = COMMANDS[opcode];
    if (!spec) {
      this.trace(`unsupported command ${hex(opcode)} aborted`);
      this.rejectCommand(opcode);
      return;
    }
    const cmd: Cmd = { opcode, spec, blocks: 0 };
    this.current = cmd;
    this.tf.error = 0;
    this.tf.status = STATUS.BSY;
    const refusal = this.refusal(spec);
    if (refusal) {
      this.trace(`${spec.name} aborted: ${refusal}`);
      this.finishError(cmd, ERROR.ABRT);
      return;
    }
    if (spec.needsMedium && (this.settings.power === "standby" || this.settings.power === "idle")) {
      this.settings.power = "active";
    }
    this.run(cmd, () => spec.run(this, cmd));
  }

  /** The front end has moved the PIO block it was given (see AtaTransport.pioIn/pioOut). */
  pioBlockDone(): void {
    const p = this.pending;
    if (!p) {
      this.trace("pioBlockDone with no block outstanding");
      return;
    }
    this.pending = undefined;
    if (!this.live(p.cmd)) return;
    this.tf.status = STATUS.BSY;
    if (this.issuing || this.driving) this.readyNext = p;
    else this.drive(p);
  }

  /**
   * Reset the drive: cancel what is in flight, put the signature in the task file (ATA: count 1,
   * LBA 1/0/0; ATAPI: 1, 1, 14h, EBh), diagnostic code 01h in the error register.
   */
  reset(kind: ResetKind): void {
    this.resets++;
    this.queuedInFlight = 0;
    const cancelled = this.current;
    this.current = undefined;
    this.pending = undefined;
    this.readyNext = undefined;
    try {
      cancelled?.cancel?.();
    } catch (e) {
      this.trace(`cancel hook failed: ${String(e)}`);
    }
    if (kind === "software") {
      if (this.settings.power === "sleep") this.settings.power = "standby";
    } else {
      this.settings = defaultSettings(this.config);
    }
    this.ncqLog.clear();
    const tf = this.tf;
    tf.features = tf.hobFeatures = tf.hobCount = tf.hobLbaLow = tf.hobLbaMid = tf.hobLbaHigh = 0;
    tf.device = 0;
    this.setSignature();
    tf.error = 0x01;
    tf.status = this.kind === "ata" ? STATUS_READY : 0;
    try {
      this.packetHandler?.reset?.(kind);
    } catch (e) {
      this.trace(`packet handler reset failed: ${String(e)}`);
    }
  }

  /**
   * AHCI: execute a READ/WRITE FPDMA QUEUED command (see ncq.ts decodeFpdma) through the slot's
   * own PRDT. Runs beside other queued commands; resolves with the outcome for the SDB FIS. Errors
   * are also recorded in the NCQ error log (READ LOG EXT page 10h).
   */
  executeQueued(command: FpdmaCommand, transport: AtaDmaTransport): Promise<QueuedResult> {
    return executeQueued(this, command, transport);
  }

  /**
   * AHCI: the host threw its queue away (PxCMD.ST cleared, or the port aborted the other queued
   * commands after an NCQ error). Every queued command in flight is void from here on: it moves no
   * more data and resolves as aborted. Unlike reset(), the drive's settings, a non-queued command
   * and the NCQ error log (which the host reads next) are kept.
   */
  abortQueued(): void {
    this.resets++; // executeQueued compares against this; see its `alive`
    this.queuedInFlight = 0;
  }

  /** SMART attribute 9: hours since power-on of the disk's life (config.powerOnHours + clock). */
  powerOnHours(): number {
    if (!this.clock) return this.hoursBase;
    return this.hoursBase + Math.floor(Math.max(0, this.clock.nowNs() - this.clockBase) / 3.6e12);
  }

  saveState(): AtaDeviceState {
    return {
      tf: { ...this.tf },
      settings: { ...this.settings, chs: { ...this.settings.chs }, dmaMode: this.settings.dmaMode && { ...this.settings.dmaMode } },
      ncqLog: this.ncqLog.save(),
      powerOnHours: this.powerOnHours(),
    };
  }

  /** Restore a saved state; any command in flight is dropped (save only between commands). */
  restoreState(s: AtaDeviceState): void {
    this.current = undefined;
    this.pending = undefined;
    Object.assign(this.tf, s.tf);
    this.settings = { ...s.settings, chs: { ...s.settings.chs }, dmaMode: s.settings.dmaMode && { ...s.settings.dmaMode } };
    this.ncqLog.restore(s.ncqLog);
    this.hoursBase = s.powerOnHours;
    this.clockBase = this.clock?.nowNs() ?? 0;
  }

  // ---- for the command modules ----------------------------------------------------------------

  /** Still the command in flight (not finished, not cancelled by reset)? */
  live(cmd: Cmd): boolean {
    return this.current === cmd;
  }

  trace(message: string): void {
    this.traceFn?.(message);
  }

  /** Run command code, turning any throw or rejection into an aborted command. */
  run(cmd: Cmd, fn: () => void | Promise<void>): void {
    try {
      const r = fn();
      if (r) r.then(undefined, (e: unknown) => this.internalError(cmd, e));
    } catch (e) {
      this.internalError(cmd, e);
    }
  }

  /** The status of a ready drive of this kind. */
  readyStatus(): number {
    return STATUS_READY;
  }

  finishOk(cmd: Cmd, opts: { interrupt?: boolean; status?: number } = {}): void {
    if (!this.live(cmd)) return;
    this.tf.status = opts.status ?? this.readyStatus();
    this.complete(opts.interrupt ?? true, undefined);
  }

  finishError(cmd: Cmd, error: number, opts: FinishOptions = {}): void {
    if (!this.live(cmd)) return;
    if (opts.lba !== undefined) setAddress(this.tf, opts.addressing ?? "lba28", opts.lba, this.settings.chs);
    this.tf.error = error & 0xff;
    this.tf.status = STATUS.DRDY | STATUS.ERR;
    this.complete(opts.interrupt ?? true, opts.dmaFault);
  }

  /** Present one PIO data-in block; `next` runs after the front end's pioBlockDone(). */
  pioIn(cmd: Cmd, block: Uint8Array, last: boolean, next: () => void, interrupt = true): void {
    if (!this.live(cmd)) return;
    const info = { first: cmd.blocks === 0, last, interrupt };
    cmd.blocks++;
    this.tf.status = this.readyStatus() | STATUS.DRQ;
    this.handOver({ cmd, next }, () => this.transport.pioIn(block, info));
  }

  /** Ask for one PIO data-out block; by default the first block does not interrupt, later ones do. */
  pioOut(cmd: Cmd, block: Uint8Array, last: boolean, next: () => void, opts: { interrupt?: boolean; packet?: boolean } = {}): void {
    if (!this.live(cmd)) return;
    const first = cmd.blocks === 0;
    const info = { first, last, interrupt: opts.interrupt ?? !first, ...(opts.packet ? { packet: true } : {}) };
    cmd.blocks++;
    this.tf.status = this.readyStatus() | STATUS.DRQ;
    this.handOver({ cmd, next }, () => this.transport.pioOut(block, info));
  }

  /** One DMA piece of the command; undefined when the command was cancelled meanwhile. */
  async dma(cmd: Cmd, direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome | undefined> {
    if (!this.live(cmd)) return undefined;
    this.tf.status = this.readyStatus() | STATUS.DRQ;
    let out: DmaOutcome;
    try {
      out = await this.transport.dmaTransfer(direction, buf);
    } catch (e) {
      this.trace(`dmaTransfer threw: ${String(e)}`);
      out = { bytes: 0, fault: true };
    }
    if (!this.live(cmd)) return undefined;
    this.tf.status = STATUS.BSY;
    return out;
  }

  /** The transport can complete DMA inside the CPU loop (see AtaDmaTransport.dmaTransferNow). */
  get canDmaNow(): boolean {
    return this.transport.dmaTransferNow !== undefined;
  }

  /**
   * Callback form of dma(): `next(out)` runs synchronously when the transport moves the data
   * (possibly inside this call), never after a reset cancelled the command.
   */
  dmaNow(cmd: Cmd, direction: DataDirection, buf: Uint8Array, next: (out: DmaOutcome) => void): void {
    if (!this.live(cmd)) return;
    this.tf.status = this.readyStatus() | STATUS.DRQ;
    const moved = (out: DmaOutcome): void => {
      if (!this.live(cmd)) return;
      this.tf.status = STATUS.BSY;
      this.run(cmd, () => next(out));
    };
    try {
      this.transport.dmaTransferNow!(direction, buf, moved);
    } catch (e) {
      this.trace(`dmaTransferNow threw: ${String(e)}`);
      moved({ bytes: 0, fault: true });
    }
  }

  /**
   * A buffer for one synchronous DMA chunk, reused from command to command (a fresh one per
   * request costs page faults). Only for data that does not outlive the synchronous step.
   */
  scratch(bytes: number): Uint8Array {
    if (this.scratchBuf.length < bytes) this.scratchBuf = new Uint8Array(bytes);
    return this.scratchBuf.subarray(0, bytes);
  }

  /** Signature registers (also left by EXECUTE DEVICE DIAGNOSTIC and DEVICE RESET). */
  setSignature(): void {
    const tf = this.tf;
    tf.count = 1;
    tf.lbaLow = 1;
    tf.lbaMid = this.kind === "atapi" ? 0x14 : 0;
    tf.lbaHigh = this.kind === "atapi" ? 0xeb : 0;
    tf.device &= 0xf0;
  }

  // ---- internals -------------------------------------------------------------------------------

  private refusal(spec: CommandSpec): string | undefined {
    if (this.kind === "ata" ? !spec.ata : !spec.atapi) return `not a ${this.kind === "ata" ? "disk" : "packet device"} command`;
    if (this.settings.power === "sleep" && !spec.inSleep) return "drive is asleep (needs a reset)";
    if (spec.needsMedium && !this.medium) return "no medium";
    return undefined;
  }

  /** An opcode with no table entry: abort without running anything. */
  private rejectCommand(opcode: number): void {
    const cmd: Cmd = { opcode, spec: COMMANDS[0x00]!, blocks: 0 };
    this.current = cmd;
    this.finishError(cmd, ERROR.ABRT);
  }

  /** Give a PIO block to the transport; if it was moved at once, continue without nesting. */
  private handOver(step: Step, give: () => void): void {
    this.pending = step;
    const outer = this.issuing;
    this.issuing = true;
    try {
      give();
    } finally {
      this.issuing = outer;
    }
    const ready = this.readyNext;
    if (ready && !this.issuing && !this.driving) {
      this.readyNext = undefined;
      this.drive(ready);
    }
  }

  /** Run continuations one after another (see readyNext). */
  private drive(first: Step): void {
    this.driving = true;
    try {
      let step: Step | undefined = first;
      while (step) {
        this.readyNext = undefined;
        if (this.live(step.cmd)) this.run(step.cmd, step.next);
        step = this.readyNext;
      }
    } finally {
      this.driving = false;
    }
  }

  private complete(interrupt: boolean, dmaFault: "short" | "fault" | undefined): void {
    this.current = undefined;
    this.pending = undefined;
    const c = { status: this.tf.status, error: this.tf.error, interrupt, ...(dmaFault ? { dmaFault } : {}) };
    this.transport.commandComplete(c);
  }

  private internalError(cmd: Cmd, e: unknown): void {
    this.trace(`${cmd.spec.name}: internal error: ${e instanceof Error ? e.message : String(e)}`);
    this.finishError(cmd, ERROR.ABRT);
  }
}
