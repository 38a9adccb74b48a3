/**
 * The contract between a SCSI transport and a SCSI target (a logical unit). Transports — the
 * ATAPI packet layer today, the LSI/SAS (Fusion-MPT) and BusLogic HBAs later — hand each CDB to
 * `ScsiTarget.execute` with a `ScsiIo` that moves the data phase through the transport's own
 * buffers (ATAPI DRQ blocks or DMA, MPT SGEs, BusLogic SG lists) and receives the final status.
 *
 *   transport ── execute(cdb, io) ──▶ target
 *                ◀── io.dataIn / io.dataOut (any number, in order) ──
 *                ◀── io.complete({ status, sense? })  exactly once
 *
 * A target never throws or rejects on anything a guest sends: malformed CDBs, impossible
 * addresses and medium failures all end as CHECK CONDITION with sense data.
 */

/** What a transport offers a target for one command. */
export interface ScsiIo {
  /**
   * Send `data` to the initiator. Resolves true once all of it was taken; false when the command
   * can not go on (reset, aborted, DMA fault — the transport has already finished it, and the
   * target stops without completing). Sending less than the initiator asked for is fine; the
   * transport reports the residual.
   */
  dataIn(data: Uint8Array): Promise<boolean>;
  /** Fill `buf` with data from the initiator; same result as dataIn. */
  dataOut(buf: Uint8Array): Promise<boolean>;
  /** End the command. Later calls are ignored by transports. */
  complete(result: ScsiResult): void;
  /**
   * The transfer size the initiator set up, when the transport knows it: a SCSI HBA request's
   * data length; for ATAPI the PIO byte count limit (what VirtualBox's passthrough uses for
   * commands whose CDB does not say, like FORMAT UNIT and GET PERFORMANCE). Undefined if unknown.
   */
  readonly transferHint?: number;
}

/** The outcome of one command. */
export interface ScsiResult {
  /** SAM status (STATUS.GOOD, STATUS.CHECK_CONDITION, ...). */
  status: number;
  /** With CHECK CONDITION: fixed-format sense data (autosense). */
  sense?: Uint8Array;
}

/**
 * power-on / hardware: as at power-up. software: ATA SRST. device: ATA DEVICE RESET or a SCSI
 * logical unit reset. bus: a SCSI bus or target reset seen by this unit.
 */
export type ScsiResetKind = "power-on" | "hardware" | "software" | "device" | "bus";

export interface ScsiTarget {
  /**
   * Run one command. The CDB is copied before the first await; the caller may reuse its buffer.
   * The promise settles when the command has ended (completed, or stopped because the transport
   * answered false); it never rejects.
   */
  execute(cdb: Uint8Array, io: ScsiIo): Promise<void>;
  /** The transport reset this unit. Commands in flight are ended by the transport. */
  reset?(kind: ScsiResetKind): void;
}
