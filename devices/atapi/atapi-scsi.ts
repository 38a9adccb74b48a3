/**
 * The ATAPI packet layer: an `AtapiPacketHandler` (devices/ata/transport.ts) that hands each
 * 12-byte command packet to a SCSI target — the emulated MMC drive, or a host drive through the
 * passthrough filter — and maps the result back to ATA:
 *
 *  - data moves through the ATA core's AtapiIo, which already splits PIO into DRQ blocks of at
 *    most the host's byte count limit (LBA mid/high) or runs it by DMA;
 *  - GOOD ends the command with DRDY; CHECK CONDITION ends it with ERR and the sense key in
 *    error register bits 7:4 (plus ILI in bit 0 and EOM in bit 1 from the sense data); the full
 *    sense stays in the target for the REQUEST SENSE the host sends next (ATAPI has no autosense);
 *  - ATA resets reach the target (sense cleared; power-on and hardware resets release the tray lock).
 *
 * How an IDE or AHCI front end gets a CD-ROM drive:
 *
 *   const cd = createAtapiCdrom({ medium: iso });          // or { drive } to share a CdDrive
 *   new AtaDevice({ kind: "atapi", packetHandler: cd.handler, model: "VBOX CD-ROM" }, transport);
 *   cd.drive.insert(otherIso); cd.drive.eject({ force: true }); cd.drive.on(event => ...);
 */
import type { AtapiIo, AtapiPacketHandler, AtapiResult, ResetKind } from "../ata/transport.js";
import type { BlockBackend } from "../../media/block.js";
import { CdDrive, type MediumKind } from "../scsi/cd-drive.js";
import { MmcTarget, type MmcTargetConfig } from "../scsi/mmc-target.js";
import { parseSense, SENSE_KEY, STATUS } from "../scsi/sense.js";
import type { ScsiIo, ScsiResult, ScsiTarget } from "../scsi/target.js";

/** ATA error register bits an ATAPI device sets beside the sense key. */
const ERROR_BITS = { ILI: 0x01, EOM: 0x02 } as const;

/** What the ATA core reports for a SCSI result. */
export function atapiResult(r: ScsiResult): AtapiResult {
  if (r.status === STATUS.GOOD || r.status === STATUS.CONDITION_MET) return { ok: true };
  if (r.status !== STATUS.CHECK_CONDITION) return { ok: false, senseKey: SENSE_KEY.ABORTED_COMMAND };
  const s = parseSense(r.sense);
  return { ok: false, senseKey: s.key, error: (s.ili ? ERROR_BITS.ILI : 0) | (s.eom ? ERROR_BITS.EOM : 0) };
}

export class AtapiScsiHandler implements AtapiPacketHandler {
  constructor(readonly target: ScsiTarget) {}

  packet(cdb: Uint8Array, io: AtapiIo): Promise<void> {
    const scsiIo: ScsiIo = {
      dataIn: (data) => io.dataIn(data),
      dataOut: (buf) => io.dataOut(buf),
      complete: (r) => io.complete(atapiResult(r)),
      transferHint: io.byteCountLimit,
    };
    return this.target.execute(cdb, scsiIo);
  }

  reset(kind: ResetKind | "device"): void {
    this.target.reset?.(kind);
  }
}

export interface AtapiCdromOptions extends Omit<MmcTargetConfig, "transport" | "drive"> {
  /** The drive to use; a new one (with `medium` in it) by default. */
  drive?: CdDrive;
  /** A disc in the new drive from power-on (ignored when `drive` is given). */
  medium?: BlockBackend;
  /** Override the CD/DVD decision for `medium`. */
  kind?: MediumKind;
}

export interface AtapiCdrom {
  drive: CdDrive;
  target: MmcTarget;
  handler: AtapiScsiHandler;
}

/** An emulated ATAPI CD/DVD-ROM drive: mechanism, MMC target and packet handler. */
export function createAtapiCdrom(options: AtapiCdromOptions = {}): AtapiCdrom {
  const { drive: given, medium, kind, ...config } = options;
  const drive = given ?? new CdDrive({ ...(medium ? { medium } : {}), ...(kind ? { kind } : {}) });
  const target = new MmcTarget({ ...config, drive, transport: "atapi" });
  return { drive, target, handler: new AtapiScsiHandler(target) };
}
