/**
 * MMC disc structure: READ TOC/PMA/ATIP, READ DISC INFORMATION, READ TRACK INFORMATION,
 * READ DVD STRUCTURE and MECHANISM STATUS. An ISO is a finalised single-session disc with one
 * Mode 1 data track starting at LBA 0 (MSF 00:02:00) and the lead-out at the capacity.
 */
import { be16, be32, put16, put24, put32 } from "./bytes.js";
import { lbaToMsf } from "./cd-sector.js";
import type { Handler, Outcome } from "./dispatch.js";
import type { MmcTarget } from "./mmc-target.js";
import { SENSE } from "./sense.js";

/** ADR 1 (Q mode 1), control 4 (data track, recorded uninterrupted). */
const ADR_CONTROL_DATA = 0x14;
const LEAD_OUT = 0xaa;

/**
 * Write a 4-byte address field: big-endian LBA, or 00 M S F. Minutes above 255 (a DVD's
 * lead-out) are clamped to FF:3B:4A, the largest MSF a byte can carry.
 */
function putAddress(d: Uint8Array, o: number, lba: number, msf: boolean): void {
  if (!msf) {
    put32(d, o, lba >>> 0);
    return;
  }
  const t = lbaToMsf(lba);
  d[o] = 0;
  if (t.m > 0xff) {
    d[o + 1] = 0xff;
    d[o + 2] = 59;
    d[o + 3] = 74;
  } else {
    d[o + 1] = t.m;
    d[o + 2] = t.s;
    d[o + 3] = t.f;
  }
}

/** TOC formats (READ TOC byte 2 bits 3:0). */
const TOC_FORMAT = { TOC: 0, SESSION_INFO: 1, FULL_TOC: 2, PMA: 3, ATIP: 4, CD_TEXT: 5 } as const;

/**
 * READ TOC/PMA/ATIP (43h). Format 0: track descriptors from the given track plus the lead-out
 * (AAh), in LBA or MSF form. Format 1: the first track of the last session. Format 2: the raw
 * TOC (points A0h, A1h, A2h and track 1), always MSF. Older ATAPI hosts (Linux sr_vendor's
 * multisession probe) put the format in byte 9 bits 7:6 and leave byte 2 zero; that is honoured.
 */
export const readToc: Handler<MmcTarget> = (unit, cmd) => {
  const c = cmd.cdb;
  const msf = (c[1]! & 0x02) !== 0;
  let format = c[2]! & 0x0f;
  if (format === 0) format = c[9]! >> 6;
  const alloc = be16(c, 7);
  const sectors = unit.drive.sectors;
  switch (format) {
    case TOC_FORMAT.TOC: {
      const track = c[6]!;
      if (track > 1 && track !== LEAD_OUT) return SENSE.INVALID_FIELD_IN_CDB;
      const entries: [number, number][] = track <= 1 ? [[1, 0], [LEAD_OUT, sectors]] : [[LEAD_OUT, sectors]];
      const d = new Uint8Array(4 + 8 * entries.length);
      put16(d, 0, d.length - 2);
      d[2] = 1; // first track
      d[3] = 1; // last track
      entries.forEach(([number, lba], i) => {
        const o = 4 + 8 * i;
        d[o + 1] = ADR_CONTROL_DATA;
        d[o + 2] = number;
        putAddress(d, o + 4, lba, msf);
      });
      return cmd.reply(d, alloc);
    }
    case TOC_FORMAT.SESSION_INFO: {
      const d = new Uint8Array(12);
      put16(d, 0, 10);
      d[2] = 1; // first complete session
      d[3] = 1; // last complete session
      d[5] = ADR_CONTROL_DATA;
      d[6] = 1; // first track in the last session
      putAddress(d, 8, 0, msf);
      return cmd.reply(d, alloc);
    }
    case TOC_FORMAT.FULL_TOC: {
      if (c[6]! > 1) return SENSE.INVALID_FIELD_IN_CDB; // only session 1 exists
      const lo = lbaToMsf(sectors);
      const points: [point: number, pmin: number, psec: number, pframe: number][] = [
        [0xa0, 1, 0x00, 0], // first track 1, disc type 00h (CD-DA or CD-ROM)
        [0xa1, 1, 0, 0], // last track 1
        [0xa2, Math.min(lo.m, 0xff), lo.m > 0xff ? 59 : lo.s, lo.m > 0xff ? 74 : lo.f], // lead-out
        [1, 0, 2, 0], // track 1 at 00:02:00
      ];
      const d = new Uint8Array(4 + 11 * points.length);
      put16(d, 0, d.length - 2);
      d[2] = 1;
      d[3] = 1;
      points.forEach(([point, pmin, psec, pframe], i) => {
        const o = 4 + 11 * i;
        d[o] = 1; // session
        d[o + 1] = ADR_CONTROL_DATA;
        d[o + 3] = point;
        d[o + 8] = pmin;
        d[o + 9] = psec;
        d[o + 10] = pframe;
      });
      return cmd.reply(d, alloc);
    }
    default:
      // PMA, ATIP and CD-TEXT exist only on recordable media or audio discs.
      return SENSE.INVALID_FIELD_IN_CDB;
  }
};

/** READ DISC INFORMATION (51h), data type 000b: a finalised disc with one complete session. */
export const readDiscInformation: Handler<MmcTarget> = (_unit, cmd) => {
  if ((cmd.cdb[1]! & 0x07) !== 0) return SENSE.INVALID_FIELD_IN_CDB;
  const d = new Uint8Array(34);
  put16(d, 0, d.length - 2);
  d[2] = 0x0e; // not erasable, last session complete (11b), disc complete (10b)
  d[3] = 1; // first track on disc
  d[4] = 1; // sessions (LSB)
  d[5] = 1; // first track in last session (LSB)
  d[6] = 1; // last track in last session (LSB)
  d[7] = 0x20; // URU: unrestricted use
  d[8] = 0x00; // disc type: CD-DA or CD-ROM (DVD: reserved, 0)
  // Last session lead-in start and last possible lead-out start: FF FF FF FF for a finalised disc.
  put32(d, 16, 0xffffffff);
  put32(d, 20, 0xffffffff);
  return cmd.reply(d, be16(cmd.cdb, 7));
};

/**
 * READ TRACK INFORMATION (52h). Address type 0: the track holding an LBA; 1: a track number;
 * 2: the first track of a session. Only track 1 / session 1 exist.
 */
export const readTrackInformation: Handler<MmcTarget> = (unit, cmd) => {
  const c = cmd.cdb;
  const type = c[1]! & 0x03;
  const value = be32(c, 2);
  const sectors = unit.drive.sectors;
  const ok = type === 0 ? value < sectors : type === 1 || type === 2 ? value === 1 : false;
  if (!ok) return SENSE.INVALID_FIELD_IN_CDB;
  const d = new Uint8Array(36);
  put16(d, 0, d.length - 2);
  d[2] = 1; // track number (LSB)
  d[3] = 1; // session number (LSB)
  d[5] = 0x04; // not damaged, not a copy, track mode 4: data, uninterrupted
  d[6] = 0x01; // not reserved, not blank, not packet; data mode 1
  d[7] = 0x00; // last recorded / next writable address not valid
  put32(d, 8, 0); // track start
  put32(d, 24, sectors); // track size
  return cmd.reply(d, be16(c, 7));
};

/** MECHANISM STATUS (BDh): a tray drive, no changer; door-open bit from the tray. */
export const mechanismStatus: Handler<MmcTarget> = (unit, cmd) => {
  const d = new Uint8Array(8);
  d[1] = unit.drive.trayOpen ? 0x10 : 0x00; // mechanism state idle, door open bit 4
  put24(d, 2, 0); // current LBA (obsolete)
  d[5] = 0; // no slots
  put16(d, 6, 0); // slot table length
  return cmd.reply(d, be16(cmd.cdb, 8));
};

/** DVD structure formats we answer (READ DVD STRUCTURE byte 7). */
const DVD_FORMAT = { PHYSICAL: 0x00, COPYRIGHT: 0x01, LIST: 0xff } as const;

/** First physical sector number of the data zone on a DVD-ROM. */
const DVD_DATA_ZONE_START = 0x030000;

/**
 * READ DVD STRUCTURE (ADh), media type DVD: format 00h physical format information (single
 * layer DVD-ROM, 120 mm), 01h copyright information (no protection, all regions), FFh the
 * list of structures. Other formats need media we do not emulate. A CD in the drive answers
 * CANNOT READ MEDIUM - INCOMPATIBLE FORMAT.
 */
export const readDvdStructure: Handler<MmcTarget> = (unit, cmd): Outcome | Promise<Outcome> => {
  const c = cmd.cdb;
  const mediaType = c[1]! & 0x0f;
  const layer = c[6]!;
  const format = c[7]!;
  const alloc = be16(c, 8);
  if (mediaType !== 0) return SENSE.INVALID_FIELD_IN_CDB;
  if (format === DVD_FORMAT.LIST) {
    const list: [number, number][] = [
      [DVD_FORMAT.PHYSICAL, 2048],
      [DVD_FORMAT.COPYRIGHT, 4],
      [DVD_FORMAT.LIST, 12],
    ];
    const d = new Uint8Array(4 + 4 * list.length);
    put16(d, 0, d.length - 2);
    list.forEach(([code, length], i) => {
      d[4 + 4 * i] = code;
      d[5 + 4 * i] = 0x40; // RDS: readable with READ DVD STRUCTURE; SDS 0: not sendable
      put16(d, 6 + 4 * i, length);
    });
    return cmd.reply(d, alloc);
  }
  const notReady = unit.notReady();
  if (notReady) return notReady;
  if (unit.mediumKind !== "dvd") return SENSE.INCOMPATIBLE_MEDIUM_FORMAT;
  switch (format) {
    case DVD_FORMAT.PHYSICAL: {
      if (layer !== 0) return SENSE.INVALID_FIELD_IN_CDB;
      const d = new Uint8Array(4 + 2048);
      put16(d, 0, d.length - 2);
      d[4] = 0x01; // book type 0 (DVD-ROM), part version 1
      d[5] = 0x0f; // 120 mm, maximum rate not specified
      d[6] = 0x01; // one layer, parallel track path, layer type: embossed (read-only)
      d[7] = 0x00; // linear density 0.267 µm/bit, track density 0.74 µm
      put32(d, 8, DVD_DATA_ZONE_START);
      put32(d, 12, DVD_DATA_ZONE_START + unit.drive.sectors - 1);
      put32(d, 16, 0); // end sector in layer 0: unused on a single-layer disc
      d[20] = 0x00; // no BCA
      return cmd.reply(d, alloc);
    }
    case DVD_FORMAT.COPYRIGHT: {
      if (layer !== 0) return SENSE.INVALID_FIELD_IN_CDB;
      const d = new Uint8Array(8);
      put16(d, 0, d.length - 2);
      d[4] = 0x00; // no copy protection system
      d[5] = 0x00; // region management: playable in all regions
      return cmd.reply(d, alloc);
    }
    default:
      return SENSE.INVALID_FIELD_IN_CDB;
  }
};
