/**
 * The mechanism of a CD/DVD drive, apart from any command set: the tray, the disc in it, the
 * guest's medium-removal lock, and events for whoever manages the attachment.
 *
 * Two sides use it:
 *  - the host (machine layer, `vstor storageattach --medium`, the VM's control channel):
 *    `insert(medium)`, `eject({ force })`; it listens with `on()` so it can persist a
 *    guest-initiated eject (VirtualBox removes the medium from the VM's configuration unless the
 *    attachment has `tempeject`).
 *  - the guest, through the MMC target: START STOP UNIT (LoEj) calls `guestEject()` /
 *    `guestLoad()`, PREVENT ALLOW MEDIUM REMOVAL calls `setPrevent()`.
 *
 * A locked tray refuses eject unless forced: a refused host eject is reported to the guest as an
 * eject request (GET EVENT STATUS NOTIFICATION), so a cooperating guest unmounts, unlocks and
 * ejects by itself.
 *
 * CD or DVD is decided by size: more than an 80-minute CD (360 000 sectors, 737 280 000 bytes)
 * is a DVD, unless the inserter says otherwise.
 */
import type { BlockBackend } from "../../media/block.js";

export type MediumKind = "cd" | "dvd";

/** Sectors on an 80-minute CD (80 × 60 × 75). More than this is taken to be a DVD. */
export const CD_MAX_SECTORS = 360_000;
/** Sector size of CD/DVD media (and of ISO images). */
export const CD_SECTOR_SIZE = 2048;

export type CdDriveEvent =
  | { type: "inserted"; medium: BlockBackend; kind: MediumKind }
  /** The medium left the drive: the guest ejected it (START STOP UNIT), or the host did. */
  | { type: "ejected"; by: "guest" | "host"; forced: boolean; medium: BlockBackend }
  /** The host asked to eject but the guest has the tray locked; the guest sees an eject request. */
  | { type: "eject-refused"; medium: BlockBackend | undefined }
  | { type: "lock"; locked: boolean }
  | { type: "tray"; open: boolean };

export interface CdDriveState {
  trayOpen: boolean;
  prevent: boolean;
  persistentPrevent: boolean;
}

export type CdDriveListener = (event: CdDriveEvent) => void;

export interface CdDriveOptions {
  /** A disc in the drive from the start (no unit attention for it). */
  medium?: BlockBackend;
  /** Override the CD/DVD decision for `medium`. */
  kind?: MediumKind;
  /** Sector count above which a medium is a DVD (default CD_MAX_SECTORS). */
  dvdThresholdSectors?: number;
}

export class CdDrive {
  private current: BlockBackend | undefined;
  private kind: MediumKind | undefined;
  private open = false;
  private prevent = false;
  private persistentPrevent = false;
  private readonly listeners = new Set<CdDriveListener>();
  private readonly dvdThreshold: number;
  /** Counts medium changes (inserts and ejects); lets a target notice a change between chunks. */
  generation = 0;

  constructor(options: CdDriveOptions = {}) {
    this.dvdThreshold = options.dvdThresholdSectors ?? CD_MAX_SECTORS;
    if (options.medium) {
      checkMedium(options.medium);
      this.current = options.medium;
      this.kind = options.kind ?? this.kindBySize(options.medium);
    }
  }

  /** The disc in the drive (undefined: empty). */
  get medium(): BlockBackend | undefined {
    return this.current;
  }

  /** 2048-byte sectors on the disc (0 when empty). */
  get sectors(): number {
    return this.current ? Math.floor(this.current.size / CD_SECTOR_SIZE) : 0;
  }

  get mediumKind(): MediumKind | undefined {
    return this.current ? this.kind : undefined;
  }

  get trayOpen(): boolean {
    return this.open;
  }

  /** The guest prevents medium removal (PREVENT ALLOW MEDIUM REMOVAL, prevent or persistent prevent). */
  get isLocked(): boolean {
    return this.prevent || this.persistentPrevent;
  }

  /** A disc is in and the tray closed: medium commands can run. */
  get ready(): boolean {
    return this.current !== undefined && !this.open;
  }

  on(listener: CdDriveListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Host: put a disc in (closing the tray). A disc already in is replaced (ejected first, even if
   * locked: this is the host's forced medium change). Throws RangeError for a medium that is not
   * made of 2048-byte sectors — a configuration mistake, not guest input.
   */
  insert(medium: BlockBackend, opts: { kind?: MediumKind } = {}): void {
    checkMedium(medium);
    if (this.current) this.remove("host", true);
    this.current = medium;
    this.kind = opts.kind ?? this.kindBySize(medium);
    this.generation++;
    if (this.open) {
      this.open = false;
      this.emit({ type: "tray", open: false });
    }
    this.emit({ type: "inserted", medium, kind: this.kind });
  }

  /**
   * Host: take the disc out. Refused (false, and an "eject-refused" event that the guest sees as
   * an eject request) while the guest has the tray locked, unless `force`. True when the drive
   * is empty afterwards.
   */
  eject(opts: { force?: boolean } = {}): boolean {
    if (!this.current) return true;
    if (this.isLocked && !opts.force) {
      this.emit({ type: "eject-refused", medium: this.current });
      return false;
    }
    this.remove("host", opts.force ?? false);
    return true;
  }

  // ---- guest side (MMC target) -----------------------------------------------------------------

  /** PREVENT ALLOW MEDIUM REMOVAL. */
  setPrevent(prevent: boolean, persistent: boolean): void {
    const was = this.isLocked;
    this.prevent = prevent;
    this.persistentPrevent = persistent;
    if (was !== this.isLocked) this.emit({ type: "lock", locked: this.isLocked });
  }

  /** START STOP UNIT with LoEj, Start=0: open the tray, taking the disc out. False while locked. */
  guestEject(): boolean {
    if (this.isLocked) return false;
    if (this.current) this.remove("guest", false);
    if (!this.open) {
      this.open = true;
      this.emit({ type: "tray", open: true });
    }
    return true;
  }

  /** START STOP UNIT with LoEj, Start=1: close the tray. */
  guestLoad(): void {
    if (!this.open) return;
    this.open = false;
    this.emit({ type: "tray", open: false });
  }

  /** The mechanism's own state (the disc is the machine layer's to re-insert). */
  saveState(): CdDriveState {
    return { trayOpen: this.open, prevent: this.prevent, persistentPrevent: this.persistentPrevent };
  }

  restoreState(s: CdDriveState): void {
    this.open = s.trayOpen && !this.current;
    this.prevent = s.prevent;
    this.persistentPrevent = s.persistentPrevent;
  }

  /** Power-on or hardware reset: the tray lock is released. */
  resetLock(): void {
    this.setPrevent(false, false);
  }

  private remove(by: "guest" | "host", forced: boolean): void {
    const medium = this.current!;
    this.current = undefined;
    this.kind = undefined;
    this.generation++;
    this.emit({ type: "ejected", by, forced, medium });
  }

  private kindBySize(medium: BlockBackend): MediumKind {
    return Math.floor(medium.size / CD_SECTOR_SIZE) > this.dvdThreshold ? "dvd" : "cd";
  }

  private emit(event: CdDriveEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch {
        // A listener's failure is the listener's problem; the drive's state has already changed.
      }
    }
  }
}

function checkMedium(medium: BlockBackend): void {
  if (medium.sectorSize !== CD_SECTOR_SIZE) {
    throw new RangeError(`a CD/DVD medium needs ${CD_SECTOR_SIZE}-byte sectors (this one has ${medium.sectorSize})`);
  }
}
