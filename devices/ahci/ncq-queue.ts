/**
 * Native Command Queuing on one port (AHCI 5.3.x, SATA 2.6 13.6): up to 32 READ/WRITE FPDMA
 * QUEUED commands in flight at once, each running through the ATA core's executeQueued with its
 * own slot transport.
 *
 *  - Issue: the driver sets the tag's PxSACT bit, then PxCI. The drive accepts the command with a
 *    Register D2H FIS that clears BSY, without I: PxCI's bit clears at once, PxSACT's stays.
 *  - Completion: a Set Device Bits FIS with the tag's bit in SActive and I set: PxSACT's bit
 *    clears, PxIS.SDBS. libahci completes queued commands from PxSACT, so each completion is one
 *    SDB FIS, in whatever order the medium finishes.
 *  - Error: an SDB FIS with ERR (and the error register), no SActive bit, I set: PxIS.TFES, the
 *    port stops. The drive aborts every other queued command (they keep their PxSACT bits and
 *    move nothing more) and refuses new ones until the host reads the NCQ error log (READ LOG EXT
 *    page 10h, kept by the core), which names the failed tag. This is what libata's EH expects:
 *    stop the engine, read page 10h, retry the rest.
 */
import type { AtaDevice } from "../ata/device.js";
import { decodeFpdma, type QueuedResult } from "../ata/ncq.js";
import { ERROR, STATUS, type TaskFile } from "../ata/task-file.js";
import { writePrdbc, type CommandHeader } from "./command-list.js";
import { QueuedCommand, type SlotPort } from "./slot-transport.js";

export interface NcqPort extends SlotPort {
  readonly clb: number;
  /** Post the D2H FIS that accepts a queued command (BSY clear, no interrupt) and clear its PxCI bit. */
  acceptQueued(slot: number, regs: TaskFile): void;
  /** Post a Set Device Bits FIS. */
  receiveSdb(o: { status: number; error: number; sactive: number; interrupt: boolean }): void;
  /** Fetch more commands (a slot freed up). */
  kick(): void;
}

export class NcqQueue {
  private readonly slots = new Map<number, QueuedCommand>();

  constructor(private readonly port: NcqPort) {}

  /** Queued commands accepted and not finished. */
  get size(): number {
    return this.slots.size;
  }

  /** Their slots as a bit mask. */
  get mask(): number {
    let m = 0;
    for (const slot of this.slots.keys()) m |= 1 << slot;
    return m >>> 0;
  }

  owns(cmd: unknown): boolean {
    return cmd instanceof QueuedCommand && this.slots.get(cmd.slot) === cmd;
  }

  /**
   * Start a READ/WRITE FPDMA QUEUED command found in `header`'s slot. `accepted`: its accepting
   * D2H FIS went out before (a command re-issued after restore).
   */
  start(dev: AtaDevice, header: CommandHeader, tf: TaskFile, accepted = false): void {
    const q = decodeFpdma(tf);
    if (!q) throw new Error("not an FPDMA command"); // the caller checked the opcode
    const slot = header.slot;
    if (q.tag !== slot) this.port.trace(`slot ${slot}: FPDMA tag ${q.tag} differs from the slot; the slot is used`);
    const cmd = new QueuedCommand(this.port, header);
    this.slots.set(slot, cmd);
    if (!accepted) this.port.acceptQueued(slot, { ...tf, status: dev.readyStatus(), error: 0 });
    let result: Promise<QueuedResult>;
    try {
      result = dev.executeQueued({ ...q, tag: slot }, cmd);
    } catch (e) {
      result = Promise.resolve({ ok: false, status: STATUS.DRDY | STATUS.ERR, error: ERROR.ABRT });
      this.port.trace(`slot ${slot}: executeQueued threw: ${String(e)}`);
    }
    result.then(
      (r) => this.finished(dev, cmd, r),
      (e: unknown) => {
        this.port.trace(`slot ${slot}: queued command failed: ${String(e)}`);
        this.finished(dev, cmd, { ok: false, status: STATUS.DRDY | STATUS.ERR, error: ERROR.ABRT });
      },
    );
  }

  /**
   * Forget every queued command (ST cleared, COMRESET, HBA reset, detach, a fatal error): late
   * results are dropped. The drive is told separately (abortQueued or a reset).
   */
  abandon(): void {
    this.slots.clear();
  }

  private finished(dev: AtaDevice, cmd: QueuedCommand, r: QueuedResult): void {
    if (!cmd.live) return;
    this.slots.delete(cmd.slot);
    const port = this.port;
    if (!writePrdbc(port.memory, port.clb, cmd.slot, cmd.prdt.moved)) port.trace(`slot ${cmd.slot}: cannot write PRDBC (command list outside guest memory)`);
    if (r.ok) {
      port.receiveSdb({ status: dev.readyStatus(), error: 0, sactive: 1 << cmd.slot, interrupt: true });
    } else {
      port.trace(`slot ${cmd.slot}: queued command failed (status ${hex(r.status)}, error ${hex(r.error)})`);
      port.receiveSdb({ status: r.status | STATUS.ERR, error: r.error, sactive: 0, interrupt: true });
    }
    port.kick();
  }
}

function hex(n: number): string {
  return `${n.toString(16).padStart(2, "0")}h`;
}
