/**
 * The MMC logical unit: a CD/DVD-ROM drive (peripheral type 05h) on a `CdDrive`, answering the
 * command set VirtualBox's and QEMU's ATAPI drives answer. Any transport drives it through
 * `ScsiTarget.execute`: the ATAPI packet layer (devices/atapi) for IDE and AHCI, the SCSI HBAs
 * later.
 *
 * Medium changes become sense and events: an inserted disc queues the unit attention
 * NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED (06/28/00) and a "new media" event for GET
 * EVENT STATUS NOTIFICATION; an eject queues "media removal"; a host eject refused because the
 * tray is locked queues "eject request". With no disc, medium commands fail NOT READY / MEDIUM
 * NOT PRESENT (02/3A/01 tray closed, 02/3A/02 tray open).
 */
import { commandTable, dispatch, SenseState, type CommandTable, type DispatchStats, type Handler, type Outcome } from "./dispatch.js";
import { CdDrive, type CdDriveEvent, type CdDriveState, type MediumKind } from "./cd-drive.js";
import { getConfiguration, getEventStatusNotification, modeSelect, modeSense, PROFILE } from "./mmc-config.js";
import { mechanismStatus, readDiscInformation, readDvdStructure, readToc, readTrackInformation } from "./mmc-info.js";
import { readCapacity, read10, read12, readCd, readCdMsf, seek10 } from "./mmc-read.js";
import { SENSE, type Sense } from "./sense.js";
import { SPC_COMMANDS, type InquiryIdentity, type SpcUnit } from "./spc.js";
import type { ScsiIo, ScsiResetKind, ScsiTarget } from "./target.js";

/** GET EVENT STATUS NOTIFICATION media event codes (MMC-6 table 150). */
export const MEDIA_EVENT = { NO_CHANGE: 0, EJECT_REQUEST: 1, NEW_MEDIA: 2, MEDIA_REMOVAL: 3, MEDIA_CHANGED: 4 } as const;

export interface MmcTargetConfig {
  /** The mechanism; a new empty drive by default. */
  drive?: CdDrive;
  /**
   * Which transport the unit sits behind. "atapi": INQUIRY version 05h / format 32h (ATAPI
   * transport bits), GET CONFIGURATION physical interface ATAPI (2). "scsi": 05h / 02h and
   * SPC (1). Default "scsi".
   */
  transport?: "atapi" | "scsi";
  /** INQUIRY vendor, 8 characters. Default "VBOX". */
  vendor?: string;
  /** INQUIRY product, 16 characters. Default "CD-ROM". */
  product?: string;
  /** INQUIRY revision, 4 characters. Default "1.0". */
  revision?: string;
  /** VPD page 80h serial number; default none (spaces). */
  serial?: string;
  /** Read speed reported in mode page 2Ah, kB/s. Default 4234 (24×). */
  readSpeedKBps?: number;
  /**
   * Queue POWER ON, RESET OR BUS DEVICE RESET OCCURRED (06/29/xx) after power-on, hardware and bus
   * resets, as SCSI targets do. Default: true for "scsi", false for "atapi" (VirtualBox's and
   * QEMU's ATAPI drives report none).
   */
  resetUnitAttention?: boolean;
  /** Diagnostics for guest mistakes; never required. */
  trace?: (message: string) => void;
}

/** Most media events kept for GET EVENT STATUS NOTIFICATION. */
const MAX_MEDIA_EVENTS = 4;

/** 2× CD speed is 353 kB/s; 24× is 4234. */
const DEFAULT_READ_SPEED = 4234;

export class MmcTarget implements ScsiTarget, SpcUnit {
  readonly drive: CdDrive;
  readonly identity: InquiryIdentity;
  readonly sense = new SenseState();
  readonly transport: "atapi" | "scsi";
  readonly readSpeedKBps: number;
  readonly stats: DispatchStats = { commands: 0, checkConditions: 0, internalErrors: 0 };
  /** Media events not yet reported by GET EVENT STATUS NOTIFICATION, oldest first. */
  readonly mediaEvents: number[] = [];
  private readonly resetUa: boolean;
  private readonly traceFn: ((message: string) => void) | undefined;
  private readonly unsubscribe: () => void;

  constructor(config: MmcTargetConfig = {}) {
    this.drive = config.drive ?? new CdDrive();
    this.transport = config.transport ?? "scsi";
    this.identity = {
      peripheralType: 0x05,
      removable: true,
      version: 0x05,
      responseFormat: this.transport === "atapi" ? 0x32 : 0x02,
      vendor: config.vendor ?? "VBOX",
      product: config.product ?? "CD-ROM",
      revision: config.revision ?? "1.0",
      serial: config.serial ?? "",
    };
    this.readSpeedKBps = config.readSpeedKBps ?? DEFAULT_READ_SPEED;
    this.resetUa = config.resetUnitAttention ?? this.transport === "scsi";
    this.traceFn = config.trace;
    this.unsubscribe = this.drive.on((e) => this.onDriveEvent(e));
  }

  execute(cdb: Uint8Array, io: ScsiIo): Promise<void> {
    return dispatch(MMC_COMMANDS, this, cdb, io, this.stats);
  }

  reset(kind: ScsiResetKind): void {
    this.sense.clear();
    if (kind === "power-on" || kind === "hardware") this.drive.resetLock();
    if (this.resetUa) {
      if (kind === "power-on" || kind === "hardware") this.sense.postUnitAttention(SENSE.POWER_ON_RESET);
      else if (kind === "bus") this.sense.postUnitAttention(SENSE.BUS_RESET);
    }
  }

  /** Stop listening to the drive (the target is being detached). */
  dispose(): void {
    this.unsubscribe();
  }

  notReady(): Sense | undefined {
    if (this.drive.ready) return undefined;
    return this.drive.trayOpen ? SENSE.MEDIUM_NOT_PRESENT_TRAY_OPEN : SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED;
  }

  trace(message: string): void {
    this.traceFn?.(`mmc: ${message}`);
  }

  /** The disc's kind when one is ready. */
  get mediumKind(): MediumKind | undefined {
    return this.drive.ready ? this.drive.mediumKind : undefined;
  }

  get currentProfile(): number {
    const k = this.mediumKind;
    return k === "dvd" ? PROFILE.DVD_ROM : k === "cd" ? PROFILE.CD_ROM : PROFILE.NONE;
  }

  /** Take the oldest unreported media event (NO_CHANGE when none). */
  takeMediaEvent(): number {
    return this.mediaEvents.shift() ?? MEDIA_EVENT.NO_CHANGE;
  }

  /** Plain state for save/restore (the medium itself is re-attached by the machine layer). */
  saveState(): MmcTargetState {
    return { sense: this.sense.save(), mediaEvents: [...this.mediaEvents], drive: this.drive.saveState() };
  }

  restoreState(s: MmcTargetState): void {
    this.sense.restore(s.sense);
    this.drive.restoreState(s.drive);
    this.mediaEvents.length = 0;
    this.mediaEvents.push(...s.mediaEvents.slice(-MAX_MEDIA_EVENTS));
  }

  private onDriveEvent(e: CdDriveEvent): void {
    switch (e.type) {
      case "inserted":
        this.sense.postUnitAttention(SENSE.NOT_READY_TO_READY_CHANGE);
        this.queueMediaEvent(MEDIA_EVENT.NEW_MEDIA);
        break;
      case "ejected":
        this.queueMediaEvent(MEDIA_EVENT.MEDIA_REMOVAL);
        break;
      case "eject-refused":
        this.queueMediaEvent(MEDIA_EVENT.EJECT_REQUEST);
        break;
      default:
        break;
    }
  }

  private queueMediaEvent(code: number): void {
    if (this.mediaEvents[this.mediaEvents.length - 1] === code) return;
    this.mediaEvents.push(code);
    if (this.mediaEvents.length > MAX_MEDIA_EVENTS) this.mediaEvents.shift();
  }
}

export interface MmcTargetState {
  sense: ReturnType<SenseState["save"]>;
  mediaEvents: number[];
  drive: CdDriveState;
}

// ---- mechanism commands -----------------------------------------------------------------------

/**
 * START STOP UNIT (1Bh). With a power condition (byte 4 bits 7:4) nothing else happens. LoEj=1:
 * Start=0 ejects (refused with 05/53/02 while locked), Start=1 closes the tray. LoEj=0: spin
 * up/down, which needs nothing here.
 */
const startStopUnit: Handler<MmcTarget> = (unit, cmd): Outcome => {
  const b4 = cmd.cdb[4]!;
  if (b4 >> 4) return undefined;
  const loej = (b4 & 0x02) !== 0;
  const start = (b4 & 0x01) !== 0;
  if (!loej) return undefined;
  if (start) {
    unit.drive.guestLoad();
    return undefined;
  }
  if (!unit.drive.guestEject()) return SENSE.MEDIUM_REMOVAL_PREVENTED;
  return undefined;
};

/** PREVENT ALLOW MEDIUM REMOVAL (1Eh): byte 4 bit 0 prevent, bit 1 persistent prevent. */
const preventAllow: Handler<MmcTarget> = (unit, cmd): Outcome => {
  const b = cmd.cdb[4]!;
  unit.drive.setPrevent((b & 0x01) !== 0, (b & 0x02) !== 0);
  return undefined;
};

/** SET CD SPEED (BBh): accepted; the emulated drive has one speed. */
const setCdSpeed: Handler<MmcTarget> = () => undefined;

const din = { data: "in" } as const;
const medium = { needsMedium: true } as const;

/** The MMC command table. */
export const MMC_COMMANDS: CommandTable<MmcTarget> = commandTable<MmcTarget>([
  ...SPC_COMMANDS,
  [0x15, "MODE SELECT(6)", { data: "out" }, modeSelect],
  [0x1a, "MODE SENSE(6)", din, modeSense],
  [0x1b, "START STOP UNIT", {}, startStopUnit],
  [0x1e, "PREVENT ALLOW MEDIUM REMOVAL", {}, preventAllow],
  [0x25, "READ CAPACITY", { ...din, ...medium }, readCapacity],
  [0x28, "READ(10)", { ...din, ...medium }, read10],
  [0x2b, "SEEK(10)", medium, seek10],
  [0x43, "READ TOC/PMA/ATIP", { ...din, ...medium }, readToc],
  [0x46, "GET CONFIGURATION", { ...din, allowUnitAttention: true }, getConfiguration],
  [0x4a, "GET EVENT STATUS NOTIFICATION", { ...din, allowUnitAttention: true }, getEventStatusNotification],
  [0x51, "READ DISC INFORMATION", { ...din, ...medium }, readDiscInformation],
  [0x52, "READ TRACK INFORMATION", { ...din, ...medium }, readTrackInformation],
  [0x55, "MODE SELECT(10)", { data: "out" }, modeSelect],
  [0x5a, "MODE SENSE(10)", din, modeSense],
  [0xa8, "READ(12)", { ...din, ...medium }, read12],
  [0xad, "READ DVD STRUCTURE", din, readDvdStructure],
  [0xb9, "READ CD MSF", { ...din, ...medium }, readCdMsf],
  [0xbb, "SET CD SPEED", {}, setCdSpeed],
  [0xbd, "MECHANISM STATUS", din, mechanismStatus],
  [0xbe, "READ CD", { ...din, ...medium }, readCd],
]);
