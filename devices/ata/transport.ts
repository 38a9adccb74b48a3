/**
 * How the ATA core talks to its front end. IDE (task-file registers + bus-master DMA) and AHCI
 * (FISes + PRDT) each implement `AtaTransport`; the core never sees a register or a descriptor.
 * QEMU's IDEDMAOps plays this role in C; here it is typed and asynchronous.
 *
 * Phases of a command, as the core drives them:
 *  - PIO: the core hands over one DRQ data block at a time (`pioIn` / `pioOut`) and waits for the
 *    front end to call `AtaDevice.pioBlockDone()`. That call may come synchronously from inside
 *    `pioIn`/`pioOut` (AHCI copying into the PRDT) or later (IDE, when the guest has read or
 *    written the last word of the block). When it returns, the task file already shows what comes
 *    next (DRQ for another block, BSY while the medium works, or the final status), so an IDE
 *    front end never has to guess a status between blocks.
 *  - DMA: `dmaTransfer` is called one or more times per command, in order, each time with the next
 *    piece of the transfer; the front end continues from where its PRD table / PRDT left off.
 *  - Completion: `commandComplete` once per command, after the core has written the final status
 *    and error into the task file.
 * Every call happens at most once at a time per device; the core never calls the transport for a
 * command that `reset()` has cancelled.
 */

/** ATA data direction: "in" moves device → host memory (reads), "out" host memory → device (writes). */
export type DataDirection = "in" | "out";

/** One PIO DRQ data block. */
export interface PioBlock {
  /** First DRQ block of the command. */
  first: boolean;
  /**
   * Last DRQ block of the command's data (ATA). After the host takes the last block of a PIO
   * data-in command the core completes it without an interrupt. Always false for ATAPI data
   * blocks: a packet command ends with its own interrupting status phase.
   */
  last: boolean;
  /**
   * Whether the host is interrupted when this block becomes ready (DRQ set): true for every
   * data-in block and for every data-out block but the first (ATA PIO protocols), and for each
   * ATAPI data block. AHCI: the PIO Setup FIS I bit.
   */
  interrupt: boolean;
  /** ATAPI only: this block carries the command packet (CoD=1). */
  packet?: boolean;
}

/** What a front end managed to move for one `dmaTransfer` call. */
export interface DmaOutcome {
  /** Bytes moved, 0..buf.length. Fewer than buf.length: the PRD table / PRDT ended first. */
  bytes: number;
  /** The bus master could not access guest memory (outside RAM, bus master disabled ...). */
  fault?: boolean;
}

/** A front end that can move DMA data for a command (IDE bus master, an AHCI slot's PRDT). */
export interface AtaDmaTransport {
  /**
   * Move `buf` to ("in") or from ("out") guest memory through the command's scatter-gather list,
   * continuing after what earlier calls for the same command moved. For "out", fill `buf`.
   * May wait (IDE: until the guest starts the bus master). Must not reject.
   */
  dmaTransfer(direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome>;
  /**
   * Optional callback form, for front ends allowed to complete commands inside the CPU loop (IDE):
   * `done` runs synchronously within this call when the data can move at once, else within the
   * guest's register write that lets it move (bus master start), or with nothing moved on reset.
   * Offering it lets the core finish a command without waiting for an event-loop turn.
   */
  dmaTransferNow?(direction: DataDirection, buf: Uint8Array, done: (out: DmaOutcome) => void): void;
}

/** Completion of a non-queued command. The task file holds the same status and error. */
export interface AtaCompletion {
  status: number;
  error: number;
  /**
   * Raise the interrupt (IDE: INTRQ unless nIEN; AHCI: the D2H FIS I bit). False after a PIO
   * data-in command (its last block already interrupted) and after DEVICE RESET.
   */
  interrupt: boolean;
  /** The command ended because a DMA transfer came up short or faulted (IDE: BM status bits). */
  dmaFault?: "short" | "fault";
}

export interface AtaTransport extends AtaDmaTransport {
  /**
   * PIO data-in: `block` is ready for the host. The task file shows DRQ (and for ATAPI the byte
   * count in LBA mid/high and the interrupt reason in count). Call `pioBlockDone()` when the host
   * has taken all of it. The core does not touch `block` until then.
   */
  pioIn(block: Uint8Array, info: PioBlock): void;
  /** PIO data-out: fill `block` with the host's data, then call `pioBlockDone()`. */
  pioOut(block: Uint8Array, info: PioBlock): void;
  /** The command finished; see AtaCompletion. */
  commandComplete(completion: AtaCompletion): void;
}

/**
 * The packet (ATAPI/MMC) layer of an ATAPI drive, written apart from this core. The core owns the
 * ATA side: signature, IDENTIFY PACKET DEVICE, receiving the 12-byte command packet, splitting
 * data into byte-count-limited DRQ blocks, DMA, status and interrupt reason. The handler owns
 * the command set, sense data and the medium.
 */
export interface AtapiPacketHandler {
  /**
   * Execute one command packet. Move data with `io.dataIn` / `io.dataOut` (any number of calls,
   * in order), then call `io.complete` exactly once. Must not throw; a throw or rejection is
   * turned into CHECK CONDITION / ABORTED COMMAND.
   */
  packet(cdb: Uint8Array, io: AtapiIo): void | Promise<void>;
  /** The device was reset (power-on, hardware, software/SRST, or DEVICE RESET). */
  reset?(kind: ResetKind | "device"): void;
}

export interface AtapiIo {
  /** The host asked for DMA (PACKET features bit 0). */
  readonly dma: boolean;
  /** PIO byte count limit from LBA mid/high of PACKET (0 and odd values already sanitised). */
  readonly byteCountLimit: number;
  /**
   * Send `data` to the host. Resolves true once all of it was taken; false if the command can
   * not go on (reset, DMA fault: the core has already finished it). Sending less than the host's
   * allocation length is fine.
   */
  dataIn(data: Uint8Array): Promise<boolean>;
  /** Receive `buf.length` bytes from the host into `buf`; same result as dataIn. */
  dataOut(buf: Uint8Array): Promise<boolean>;
  /**
   * End the command: GOOD, or CHECK CONDITION with a sense key (the ATA error register gets
   * senseKey << 4 | extra error bits). Later calls are ignored.
   */
  complete(result: AtapiResult): void;
}

export type AtapiResult = { ok: true } | { ok: false; senseKey: number; error?: number };

/**
 * power-on: everything to defaults. hardware: IDE RESET- / AHCI COMRESET, defaults as power-on.
 * software: SRST; drive settings (multiple count, transfer mode, write cache, ...) are kept.
 */
export type ResetKind = "power-on" | "hardware" | "software";
