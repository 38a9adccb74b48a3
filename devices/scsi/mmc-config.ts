/**
 * What the drive says about itself and its state: GET CONFIGURATION (profiles and features),
 * GET EVENT STATUS NOTIFICATION (polled media events), MODE SENSE(6)/(10) with the
 * read/write error recovery page (01h) and the capabilities and mechanical status page (2Ah),
 * and MODE SELECT(6)/(10) (accepted, parameters ignored).
 */
import { be16, concatBytes, put16, put32 } from "./bytes.js";
import { STOPPED, type CommandContext, type Handler, type Outcome } from "./dispatch.js";
import type { MmcTarget } from "./mmc-target.js";
import { SENSE } from "./sense.js";

// ---- GET CONFIGURATION ------------------------------------------------------------------------

/** Profile numbers (MMC-6 table 91); the current one is chosen by the disc in the drive. */
export const PROFILE = { NONE: 0x0000, CD_ROM: 0x0008, DVD_ROM: 0x0010 } as const;

/** Feature codes (MMC-6 table 87). */
export const FEATURE = {
  PROFILE_LIST: 0x0000,
  CORE: 0x0001,
  MORPHING: 0x0002,
  REMOVABLE_MEDIUM: 0x0003,
  RANDOM_READABLE: 0x0010,
  CD_READ: 0x001e,
  DVD_READ: 0x001f,
} as const;

/** Physical interface standard of the Core feature. */
const INTERFACE = { SCSI: 0x00000001, ATAPI: 0x00000002 } as const;

interface Feature {
  code: number;
  version: number;
  persistent: boolean;
  current: boolean;
  body: Uint8Array;
}

function featureBytes(f: Feature): Uint8Array {
  const d = new Uint8Array(4 + f.body.length);
  put16(d, 0, f.code);
  d[2] = (f.version & 0x0f) << 2 | (f.persistent ? 0x02 : 0) | (f.current ? 0x01 : 0);
  d[3] = f.body.length;
  d.set(f.body, 4);
  return d;
}

function features(unit: MmcTarget): Feature[] {
  const kind = unit.mediumKind;
  const profiles: [number, boolean][] = [
    [PROFILE.DVD_ROM, kind === "dvd"],
    [PROFILE.CD_ROM, kind === "cd"],
  ];
  const profileList = new Uint8Array(4 * profiles.length);
  profiles.forEach(([p, cur], i) => {
    put16(profileList, 4 * i, p);
    profileList[4 * i + 2] = cur ? 0x01 : 0;
  });
  const core = new Uint8Array(8);
  put32(core, 0, unit.transport === "atapi" ? INTERFACE.ATAPI : INTERFACE.SCSI);
  const randomReadable = new Uint8Array(8);
  put32(randomReadable, 0, 2048); // logical block size
  put16(randomReadable, 4, kind === "dvd" ? 16 : 1); // blocking
  return [
    { code: FEATURE.PROFILE_LIST, version: 0, persistent: true, current: true, body: profileList },
    { code: FEATURE.CORE, version: 1, persistent: true, current: true, body: core },
    // Morphing: no asynchronous notification; events are polled.
    { code: FEATURE.MORPHING, version: 1, persistent: true, current: true, body: new Uint8Array(4) },
    // Removable medium: tray loading mechanism (001b), eject, lock.
    { code: FEATURE.REMOVABLE_MEDIUM, version: 0, persistent: true, current: true, body: new Uint8Array([0x29, 0, 0, 0]) },
    { code: FEATURE.RANDOM_READABLE, version: 0, persistent: false, current: kind !== undefined, body: randomReadable },
    { code: FEATURE.CD_READ, version: 2, persistent: false, current: kind === "cd", body: new Uint8Array(4) },
    { code: FEATURE.DVD_READ, version: 1, persistent: false, current: kind === "dvd", body: new Uint8Array(4) },
  ];
}

/**
 * GET CONFIGURATION (46h). RT 00b: all features from the starting feature number; 01b: the
 * current ones; 10b: just that feature. The header's data length counts the whole response, even
 * when the allocation length cuts it.
 */
export const getConfiguration: Handler<MmcTarget> = (unit, cmd) => {
  const c = cmd.cdb;
  const rt = c[1]! & 0x03;
  const start = be16(c, 2);
  const alloc = be16(c, 7);
  if (rt === 3) return SENSE.INVALID_FIELD_IN_CDB;
  const chosen = features(unit).filter((f) => (rt === 2 ? f.code === start : f.code >= start && (rt === 0 || f.current)));
  const body = concatBytes(chosen.map(featureBytes));
  const d = new Uint8Array(8 + body.length);
  put32(d, 0, d.length - 4);
  put16(d, 6, unit.currentProfile);
  d.set(body, 8);
  return cmd.reply(d, alloc);
};

// ---- GET EVENT STATUS NOTIFICATION ------------------------------------------------------------

/** Notification class 4 (media) as a bit in the request / supported-classes masks. */
const MEDIA_CLASS_BIT = 0x10;
const MEDIA_CLASS = 4;

/**
 * GET EVENT STATUS NOTIFICATION (4Ah), polled only (asynchronous operation is refused with
 * INVALID FIELD). Supports the media class: reports and consumes the oldest pending event (new
 * media, media removal, eject request) with the media status (present, tray open). A request
 * without the media class gets the header with NEA set.
 */
export const getEventStatusNotification: Handler<MmcTarget> = (unit, cmd) => {
  const c = cmd.cdb;
  if ((c[1]! & 0x01) === 0) return SENSE.INVALID_FIELD_IN_CDB;
  const alloc = be16(c, 7);
  if ((c[4]! & MEDIA_CLASS_BIT) === 0) {
    const d = new Uint8Array([0, 2, 0x80, MEDIA_CLASS_BIT]);
    return cmd.reply(d, alloc);
  }
  const d = new Uint8Array(8);
  put16(d, 0, 6);
  d[2] = MEDIA_CLASS;
  d[3] = MEDIA_CLASS_BIT;
  d[4] = unit.takeMediaEvent() & 0x0f;
  d[5] = (unit.drive.ready ? 0x02 : 0) | (unit.drive.trayOpen ? 0x01 : 0);
  return cmd.reply(d, alloc);
};

// ---- MODE SENSE / MODE SELECT -----------------------------------------------------------------

export const MODE_PAGE = { ERROR_RECOVERY: 0x01, CAPABILITIES: 0x2a, ALL: 0x3f } as const;

/** Page control (MODE SENSE byte 2 bits 7:6). */
const PC = { CURRENT: 0, CHANGEABLE: 1, DEFAULT: 2, SAVED: 3 } as const;

function errorRecoveryPage(pc: number): Uint8Array {
  const d = new Uint8Array(12);
  d[0] = MODE_PAGE.ERROR_RECOVERY;
  d[1] = d.length - 2;
  if (pc !== PC.CHANGEABLE) d[3] = 5; // read retry count
  return d;
}

/** Capabilities and mechanical status page (2Ah), the MMC-2 layout Linux sr reads (length 14h). */
function capabilitiesPage(unit: MmcTarget, pc: number): Uint8Array {
  const d = new Uint8Array(22);
  d[0] = MODE_PAGE.CAPABILITIES;
  d[1] = d.length - 2;
  if (pc === PC.CHANGEABLE) return d;
  d[2] = 0x3b; // reads CD-R, CD-RW, DVD-ROM, DVD-R, DVD-RAM media
  d[3] = 0x00; // writes nothing
  d[4] = 0x71; // audio play (some guests want it to automount), mode 2 form 1 and 2, multi-session
  d[5] = 0x00; // no CD-DA extraction
  // Lock supported (bit 0), lock state (bit 1), eject (bit 3), tray loading mechanism (001b).
  d[6] = 0x29 | (pc === PC.CURRENT && unit.drive.isLocked ? 0x02 : 0);
  d[7] = 0x00; // no separate volume/mute, no changer
  put16(d, 8, unit.readSpeedKBps); // maximum read speed
  put16(d, 10, 0); // volume levels
  put16(d, 12, 512); // buffer size, KiB
  put16(d, 14, unit.readSpeedKBps); // current read speed
  return d;
}

function modePages(unit: MmcTarget, page: number, pc: number): Uint8Array[] | undefined {
  switch (page) {
    case MODE_PAGE.ERROR_RECOVERY:
      return [errorRecoveryPage(pc)];
    case MODE_PAGE.CAPABILITIES:
      return [capabilitiesPage(unit, pc)];
    case MODE_PAGE.ALL:
      return [errorRecoveryPage(pc), capabilitiesPage(unit, pc)];
    default:
      return undefined;
  }
}

/**
 * MODE SENSE(6) (1Ah) and (10) (5Ah): no block descriptors, pages 01h, 2Ah or all (3Fh), current,
 * changeable or default values; saved values are not supported (05/39/00).
 */
export const modeSense: Handler<MmcTarget> = (unit, cmd): Outcome | Promise<Outcome> => {
  const c = cmd.cdb;
  const ten = cmd.opcode === 0x5a;
  const pc = c[2]! >> 6;
  const page = c[2]! & 0x3f;
  const subpage = c[3]!;
  const alloc = ten ? be16(c, 7) : c[4]!;
  if (pc === PC.SAVED) return SENSE.SAVING_PARAMETERS_NOT_SUPPORTED;
  if (subpage !== 0 && !(page === MODE_PAGE.ALL && subpage === 0xff)) return SENSE.INVALID_FIELD_IN_CDB;
  const pages = modePages(unit, page, pc);
  if (!pages) return SENSE.INVALID_FIELD_IN_CDB;
  const body = concatBytes(pages);
  const headerLength = ten ? 8 : 4;
  const d = new Uint8Array(headerLength + body.length);
  // Mode data length (excluding itself); medium type, device-specific parameter and block
  // descriptor length stay 0.
  if (ten) put16(d, 0, d.length - 2);
  else d[0] = Math.min(0xff, d.length - 1);
  d.set(body, headerLength);
  return cmd.reply(d, alloc);
};

/**
 * MODE SELECT(6) (15h) and (10) (55h): take the parameter list and keep nothing (nothing on
 * these pages is changeable). Saving (SP) is not supported.
 */
export const modeSelect: Handler<MmcTarget> = async (_unit, cmd: CommandContext): Promise<Outcome> => {
  const c = cmd.cdb;
  const ten = cmd.opcode === 0x55;
  const length = ten ? be16(c, 7) : c[4]!;
  if (c[1]! & 0x01) return SENSE.SAVING_PARAMETERS_NOT_SUPPORTED;
  const data = await cmd.receive(length);
  if (!data) return STOPPED;
  const headerLength = ten ? 8 : 4;
  if (length > 0 && length < headerLength) return SENSE.PARAMETER_LIST_LENGTH_ERROR;
  return undefined;
};
