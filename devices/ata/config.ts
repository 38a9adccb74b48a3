/**
 * What an attachment tells the ATA core about the drive it emulates (kind, strings, geometry,
 * chipset transfer modes, flags), and the drive settings the guest can change at run time.
 */
import type { BlockBackend } from "../../media/block.js";
import type { Geometry } from "./task-file.js";
import type { AtapiPacketHandler } from "./transport.js";

/** Which front end the drive sits behind; decides the UDMA modes IDENTIFY advertises. */
export type AtaChipset = "piix3" | "piix4" | "ich6" | "ahci";

export interface AtaDeviceConfig {
  /** "ata": a hard disk. "atapi": a packet device (CD/DVD) whose commands go to `packetHandler`. */
  kind: "ata" | "atapi";
  /** The disk (ata only; 512-byte sectors). Without one, medium commands are aborted. */
  medium?: BlockBackend;
  /** The ATAPI command layer (atapi only). Without one, PACKET is aborted. */
  packetHandler?: AtapiPacketHandler;
  /** IDENTIFY serial number (up to 20 characters). See serialFromUuid. */
  serial?: string;
  /** Up to 40 characters. Default "VBOX HARDDISK" / "VBOX CD-ROM". */
  model?: string;
  /** Up to 8 characters. Default "1.0". */
  firmware?: string;
  /** Default CHS translation (IDENTIFY words 1/3/6). Default: 16 heads, 63 sectors, see defaultGeometry. */
  geometry?: Geometry;
  /** Default "piix4". PIIX3: no UDMA; PIIX4: UDMA 0-2; ICH6 and AHCI: UDMA 0-6. */
  chipset?: AtaChipset;
  /** The link is SATA (AHCI): IDENTIFY word 76 instead of the PATA word 93. Default: chipset "ahci". */
  sata?: boolean;
  /** The transport can queue (AHCI): IDENTIFY words 75/76 advertise NCQ, READ LOG EXT has page 10h. */
  ncq?: boolean;
  /** NCQ queue depth, 1..32. Default 32. */
  ncqDepth?: number;
  /** The attachment allows discard: DATA SET MANAGEMENT/TRIM and IDENTIFY words 69/169. */
  discard?: boolean;
  /** Report a solid-state drive (IDENTIFY word 217 = 1). */
  nonRotational?: boolean;
  /** Word 217 when rotational: 0 = not reported (default) or the rpm (0401h..FFFEh). */
  rotationRate?: number;
  /** Largest READ/WRITE MULTIPLE block, a power of two up to 128. Default 16. */
  maxMultiple?: number;
  /** PATA position (IDENTIFY word 93): 0 = master (default), 1 = slave. */
  deviceNumber?: 0 | 1;
  /** PATA: whether the other device on the cable exists (word 93; SeaBIOS skips probing an absent slave). */
  peerPresent?: boolean;
  /** PATA 80-conductor cable detected (word 93 bit 13). Default: true when UDMA above mode 2 is offered. */
  cable80?: boolean;
  /** Largest DATA SET MANAGEMENT payload in 512-byte blocks (word 105). Default 8. */
  maxDsmBlocks?: number;
  /** Time source for SMART power-on hours (the Host clock). */
  clock?: { nowNs(): number };
  /** Power-on hours already accumulated (persisted by the machine). */
  powerOnHours?: number;
  /** Diagnostics for guest mistakes (Host.trace); never required. */
  trace?: (message: string) => void;
}

/** The configuration with every default filled in. */
export interface ResolvedConfig {
  kind: "ata" | "atapi";
  serial: string;
  model: string;
  firmware: string;
  geometry: Geometry;
  chipset: AtaChipset;
  sata: boolean;
  ncq: boolean;
  ncqDepth: number;
  discard: boolean;
  /** The medium reads discarded ranges back as zeros (IDENTIFY word 69 bit 5). */
  discardZeroes: boolean;
  nonRotational: boolean;
  rotationRate: number;
  maxMultiple: number;
  deviceNumber: 0 | 1;
  peerPresent: boolean;
  cable80: boolean;
  maxDsmBlocks: number;
  /** Highest UDMA mode offered, or -1 for none. */
  udmaMax: number;
}

/** Highest UDMA mode a chipset's IDENTIFY offers (-1: none). */
export function udmaMaxFor(chipset: AtaChipset): number {
  switch (chipset) {
    case "piix3":
      return -1;
    case "piix4":
      return 2;
    case "ich6":
    case "ahci":
      return 6;
  }
}

/** Highest PIO and multiword DMA modes offered (words 63/64). */
export const PIO_MAX = 4;
export const MWDMA_MAX = 2;

/**
 * The usual translation for a disk of `sectors` 512-byte sectors: 16 heads, 63 sectors per
 * track, as many cylinders as fit, at least 1 and at most 16383 (the ATA limit for words 1/54).
 */
export function defaultGeometry(sectors: number): Geometry {
  const cylinders = Math.max(1, Math.min(16383, Math.floor(sectors / (16 * 63))));
  return { cylinders, heads: 16, sectors: 63 };
}

/**
 * VirtualBox's drive serial from a medium UUID: "VB" + the UUID's first 32 bits + "-" + its last
 * 32 bits as IPRT reads them (RTUUID.au32[3], the last four bytes little-endian), 8 hex digits
 * each, e.g. 0e3d5a2c-...-1122aabbccdd → "VB0e3d5a2c-ddccbbaa". Malformed input yields "VB" +
 * zeros.
 */
export function serialFromUuid(uuid: string): string {
  const hex = uuid.toLowerCase().replace(/[{}-]/g, "");
  if (!/^[0-9a-f]{32}$/.test(hex)) return "VB00000000-00000000";
  const last = hex.slice(24, 32);
  const swapped = last.slice(6, 8) + last.slice(4, 6) + last.slice(2, 4) + last.slice(0, 2);
  return `VB${hex.slice(0, 8)}-${swapped}`;
}

export function resolveConfig(c: AtaDeviceConfig, capacity: number): ResolvedConfig {
  const chipset = c.chipset ?? "piix4";
  const udmaMax = udmaMaxFor(chipset);
  const depth = Math.trunc(c.ncqDepth ?? 32);
  const multiple = Math.trunc(c.maxMultiple ?? 16);
  return {
    kind: c.kind,
    serial: c.serial ?? "VB00000000-00000000",
    model: c.model ?? (c.kind === "atapi" ? "VBOX CD-ROM" : "VBOX HARDDISK"),
    firmware: c.firmware ?? "1.0",
    geometry: c.geometry ?? defaultGeometry(capacity),
    chipset,
    sata: c.sata ?? chipset === "ahci",
    ncq: c.ncq ?? false,
    ncqDepth: Math.max(1, Math.min(32, depth)),
    discard: c.discard ?? false,
    discardZeroes: c.medium?.discardZeroes === true,
    nonRotational: c.nonRotational ?? false,
    rotationRate: c.rotationRate ?? 0,
    // a power of two 1..128 (word 47 and SET MULTIPLE MODE)
    maxMultiple: multiple >= 1 && multiple <= 128 && (multiple & (multiple - 1)) === 0 ? multiple : 16,
    deviceNumber: c.deviceNumber ?? 0,
    peerPresent: c.peerPresent ?? false,
    cable80: c.cable80 ?? udmaMax > 2,
    maxDsmBlocks: Math.max(1, Math.min(0xffff, Math.trunc(c.maxDsmBlocks ?? 8))),
    udmaMax,
  };
}

/** Power states (ACS 4.15): active/idle answer at once, standby needs a spin-up, sleep a reset. */
export type PowerMode = "active" | "idle" | "standby" | "sleep";

/** The selected DMA mode (SET FEATURES 03h); only one of multiword and Ultra DMA is selected. */
export interface DmaModeSetting {
  kind: "mwdma" | "udma";
  mode: number;
}

/** What the guest can change: plain data, saved with the device. */
export interface DriveSettings {
  power: PowerMode;
  /** READ/WRITE MULTIPLE block size in sectors; 0 = multiple mode off. */
  multipleCount: number;
  writeCache: boolean;
  lookAhead: boolean;
  smartEnabled: boolean;
  pioMode: number;
  dmaMode: DmaModeSetting | undefined;
  /** Current CHS translation (INITIALIZE DEVICE PARAMETERS). */
  chs: { cylinders: number; heads: number; sectors: number };
}

/** Settings after power-on or hardware reset. */
export function defaultSettings(cfg: ResolvedConfig): DriveSettings {
  return {
    power: "active",
    multipleCount: 0,
    writeCache: true,
    lookAhead: true,
    smartEnabled: true,
    pioMode: PIO_MAX,
    dmaMode: cfg.udmaMax >= 0 ? { kind: "udma", mode: cfg.udmaMax } : { kind: "mwdma", mode: MWDMA_MAX },
    chs: { ...cfg.geometry },
  };
}
