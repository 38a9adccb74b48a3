/**
 * One command slot as the ATA core sees it: an AtaTransport (non-queued commands) or an
 * AtaDmaTransport (NCQ) whose data moves through the slot's PRDT.
 *
 *  - PIO data-in: the block is copied into the PRDT, then the PIO Setup FIS (D = 1, E_Status =
 *    the status after the block: ready after the last block of an ATA command, BSY otherwise) is
 *    posted, so a driver polling PxIS.PSS (SeaBIOS) finds the data already in memory.
 *  - PIO data-out: PIO Setup FIS (D = 0), then the block is taken from the PRDT. The ATAPI
 *    command packet comes from the command table's ACMD instead, with a PIO Setup FIS without I.
 *  - DMA: each dmaTransfer continues through the PRDT; a PRD with I set raises PxIS.DPS.
 *  - Guest memory the HBA cannot reach (outside RAM, bus mastering off) is a host bus fatal error
 *    (PxIS.HBFS) and moves nothing. A PRDT too short for the device's data-in is an overflow
 *    (PxIS.OFS); the core then ends the command with ABRT.
 *
 * Every call first checks the slot is still the port's (same object, same epoch): after a reset,
 * ST cleared or a detach, a late call touches neither guest memory nor registers.
 */
import type { GuestMemory } from "../../host-adapter/host.js";
import type { AtaDevice } from "../ata/device.js";
import { STATUS } from "../ata/task-file.js";
import type { AtaCompletion, AtaDmaTransport, AtaTransport, DataDirection, DmaOutcome, PioBlock } from "../ata/transport.js";
import { readAtapiCommand, type CommandHeader } from "./command-list.js";
import { encodePioSetup } from "./fis.js";
import { PrdtCursor } from "./prdt.js";
import { PxIS } from "./registers.js";

/** What a slot needs from its port. */
export interface SlotPort {
  readonly memory: GuestMemory;
  readonly epoch: number;
  /** Is this slot object still the port's current command (non-queued) or queued slot? */
  owns(slot: SlotIo): boolean;
  /** Copy a PIO Setup FIS into the received-FIS area and update PxTFD (and PSS when `interrupt`). */
  receivePioSetup(fis: Uint8Array, interrupt: boolean): void;
  /** Set PxIS event bits; fatal ones stop the port. */
  raise(bits: number, why?: string): void;
  /** A non-queued command ended (the task file holds its status). */
  commandDone(cmd: NonQueuedCommand, c: AtaCompletion): void;
  trace(message: string): void;
}

const FAULT: DmaOutcome = { bytes: 0, fault: true };

/** What both kinds of slot share: the PRDT cursor and the liveness check. */
export abstract class SlotIo {
  readonly prdt: PrdtCursor;
  readonly epoch: number;
  private faulted = false;

  constructor(
    readonly port: SlotPort,
    readonly header: CommandHeader,
  ) {
    this.prdt = new PrdtCursor(port.memory, header.ctba, header.prdtl);
    this.epoch = port.epoch;
  }

  get slot(): number {
    return this.header.slot;
  }

  get live(): boolean {
    return this.port.epoch === this.epoch && this.port.owns(this);
  }

  /** Move data through the PRDT and raise what the move calls for. */
  protected moveData(direction: DataDirection, buf: Uint8Array): DmaOutcome {
    if (this.faulted) return FAULT; // after a host bus error the command moves nothing more
    const out = this.prdt.move(direction, buf);
    if (out.fault) {
      this.faulted = true;
      this.port.raise(PxIS.HBFS, `slot ${this.slot}: PRDT or data buffer outside guest memory`);
      return FAULT;
    }
    let bits = out.interrupt ? PxIS.DPS : 0;
    if (direction === "in" && out.bytes < buf.length) {
      this.port.trace(`slot ${this.slot}: PRDT holds ${out.bytes} of ${buf.length} bytes the device sends`);
      bits |= PxIS.OFS;
    }
    if (bits) this.port.raise(bits);
    return { bytes: out.bytes };
  }
}

/** A non-queued command: the whole AtaTransport. */
export class NonQueuedCommand extends SlotIo implements AtaTransport {
  /** The last ATA PIO data-in block went out with the final status in its PIO Setup FIS: no D2H follows. */
  pioInFinished = false;

  constructor(
    port: SlotPort,
    header: CommandHeader,
    private readonly dev: AtaDevice,
  ) {
    super(port, header);
  }

  pioIn(block: Uint8Array, info: PioBlock): void {
    if (!this.live) return;
    const out = this.moveData("in", block);
    if (!out.fault) {
      const tf = this.dev.tf;
      const endStatus = info.last ? this.dev.readyStatus() : STATUS.BSY;
      this.port.receivePioSetup(encodePioSetup(tf, { toHost: true, interrupt: info.interrupt, endStatus, transferCount: block.length }), info.interrupt);
      this.pioInFinished = info.last;
    }
    // Data the guest could not take is lost, but the command runs to its end (the port has stopped).
    this.dev.pioBlockDone();
  }

  pioOut(block: Uint8Array, info: PioBlock): void {
    if (!this.live) return;
    const tf = this.dev.tf;
    this.port.receivePioSetup(encodePioSetup(tf, { toHost: false, interrupt: info.interrupt, endStatus: STATUS.BSY, transferCount: block.length }), info.interrupt);
    if (info.packet) {
      const acmd = readAtapiCommand(this.port.memory, this.header.ctba);
      if (!acmd) {
        this.port.raise(PxIS.HBFS, `slot ${this.slot}: command table outside guest memory`);
        return; // the device waits for its packet until the host resets it
      }
      block.set(acmd.subarray(0, block.length));
      this.dev.pioBlockDone();
      return;
    }
    const out = this.moveData("out", block);
    if (out.fault) return;
    if (out.bytes < block.length) {
      // The device would wait for data that never comes; stop the port instead of writing garbage.
      this.port.raise(PxIS.IFS, `slot ${this.slot}: PRDT ran out after ${out.bytes} of ${block.length} bytes of PIO data-out`);
      return;
    }
    this.dev.pioBlockDone();
  }

  dmaTransfer(direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome> {
    return Promise.resolve(this.live ? this.moveData(direction, buf) : FAULT);
  }

  commandComplete(c: AtaCompletion): void {
    if (this.live) this.port.commandDone(this, c);
  }
}

/** An NCQ slot: only DMA (READ/WRITE FPDMA QUEUED). */
export class QueuedCommand extends SlotIo implements AtaDmaTransport {
  dmaTransfer(direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome> {
    return Promise.resolve(this.live ? this.moveData(direction, buf) : FAULT);
  }
}

/** The transport a drive has between commands: any call is a stray one and does nothing. */
export function idleTransport(trace: (message: string) => void): AtaTransport {
  return {
    pioIn: () => trace("PIO block with no command slot"),
    pioOut: () => trace("PIO block with no command slot"),
    dmaTransfer: () => Promise.resolve(FAULT),
    commandComplete: () => trace("completion with no command slot"),
  };
}
