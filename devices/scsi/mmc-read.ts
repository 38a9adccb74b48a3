/**
 * MMC data reads: READ CAPACITY, READ(10), READ(12), READ CD, READ CD MSF, SEEK(10).
 *
 * Data streams from the medium in chunks of CHUNK_SECTORS, each chunk sent before the next is
 * read, so a long read never holds more than one chunk. READ CD can return any of the fields of
 * a raw Mode 1 sector (sync, header, user data, EDC/ECC) and C2 error information (all zero: no
 * errors); the raw fields are synthesised from the 2048 bytes an ISO holds (cd-sector.ts).
 */
import { MediumError } from "../../media/block.js";
import { be16, be24, be32, put32 } from "./bytes.js";
import { encodeMode1Sector, MAX_MSF_LBA, msfToLba, OFFSET, RAW_SECTOR_SIZE, USER_DATA_SIZE } from "./cd-sector.js";
import { CD_SECTOR_SIZE } from "./cd-drive.js";
import { STOPPED, type CommandContext, type Handler, type Outcome } from "./dispatch.js";
import type { MmcTarget } from "./mmc-target.js";
import { SENSE, type Sense } from "./sense.js";

/** Sectors read from the medium per step (64 KiB of user data). */
export const CHUNK_SECTORS = 32;

/** READ CAPACITY (25h): last LBA and block length 2048. */
export const readCapacity: Handler<MmcTarget> = (unit, cmd) => {
  const d = new Uint8Array(8);
  put32(d, 0, Math.max(0, unit.drive.sectors - 1));
  put32(d, 4, CD_SECTOR_SIZE);
  return cmd.reply(d, d.length);
};

/** READ(10) (28h). */
export const read10: Handler<MmcTarget> = (unit, cmd) => readUserData(unit, cmd, be32(cmd.cdb, 2), be16(cmd.cdb, 7));

/** READ(12) (A8h). */
export const read12: Handler<MmcTarget> = (unit, cmd) => readUserData(unit, cmd, be32(cmd.cdb, 2), be32(cmd.cdb, 6));

/** SEEK(10) (2Bh): only checks the address. */
export const seek10: Handler<MmcTarget> = (unit, cmd) => (be32(cmd.cdb, 2) >= unit.drive.sectors ? SENSE.LBA_OUT_OF_RANGE : undefined);

function rangeError(unit: MmcTarget, lba: number, count: number): Sense | undefined {
  const total = unit.drive.sectors;
  if (lba < 0 || lba > total || count > total - lba) return SENSE.LBA_OUT_OF_RANGE;
  return undefined;
}

function readUserData(unit: MmcTarget, cmd: CommandContext, lba: number, count: number): Outcome | Promise<Outcome> {
  const bad = rangeError(unit, lba, count);
  if (bad) return bad;
  return stream(unit, cmd, lba, count, undefined);
}

/** Turns a chunk of user data into what the command returns. */
interface SectorFormat {
  bytesPerSector: number;
  format(lba: number, user: Uint8Array, out: Uint8Array, outOffset: number): void;
}

async function stream(unit: MmcTarget, cmd: CommandContext, lba: number, count: number, fmt: SectorFormat | undefined): Promise<Outcome> {
  const drive = unit.drive;
  const backend = drive.medium;
  if (!backend) return unit.notReady() ?? SENSE.MEDIUM_NOT_PRESENT;
  const generation = drive.generation;
  for (let done = 0; done < count;) {
    if (drive.generation !== generation || !drive.ready) {
      unit.trace(`read at LBA ${lba + done}: medium changed during the transfer`);
      return unit.notReady() ?? SENSE.NOT_READY_TO_READY_CHANGE;
    }
    const n = Math.min(CHUNK_SECTORS, count - done);
    const first = lba + done;
    const user = new Uint8Array(n * CD_SECTOR_SIZE);
    try {
      await backend.read(first * CD_SECTOR_SIZE, user);
    } catch (e) {
      return readFailure(unit, e, first, n);
    }
    let out = user;
    if (fmt) {
      out = new Uint8Array(n * fmt.bytesPerSector);
      for (let i = 0; i < n; i++) fmt.format(first + i, user.subarray(i * CD_SECTOR_SIZE, (i + 1) * CD_SECTOR_SIZE), out, i * fmt.bytesPerSector);
    }
    if (!(await cmd.send(out))) return STOPPED;
    done += n;
  }
  return undefined;
}

function readFailure(unit: MmcTarget, e: unknown, first: number, n: number): Sense {
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof MediumError && e.kind === "out-of-bounds") {
    unit.trace(`read at LBA ${first}: ${message}`);
    return SENSE.LBA_OUT_OF_RANGE;
  }
  let info = first;
  if (e instanceof MediumError && e.offset !== undefined) {
    const at = Math.floor(e.offset / CD_SECTOR_SIZE);
    if (at >= first && at < first + n) info = at;
  }
  unit.trace(`read at LBA ${first} (+${n}): medium error: ${message}`);
  return { ...SENSE.UNRECOVERED_READ_ERROR, info };
}

// ---- READ CD -----------------------------------------------------------------------------------

/** Expected sector type (READ CD byte 1 bits 4:2). */
const SECTOR_TYPE = { ANY: 0, CDDA: 1, MODE1: 2, MODE2_FORMLESS: 3, MODE2_FORM1: 4, MODE2_FORM2: 5 } as const;

interface ReadCdFields {
  sync: boolean;
  header: boolean;
  userData: boolean;
  edcEcc: boolean;
  /** C2 error information bytes per sector: 0, 294 (C2 pointers) or 296 (block error byte + pad + pointers). */
  c2: 0 | 294 | 296;
}

const C2_SIZES = [0, 294, 296] as const;

/**
 * Decode bytes 1, 9 and 10 of READ CD / READ CD MSF for a Mode 1 data track. Sub-channel data is
 * not supported (INVALID FIELD); sync without a header is one of MMC's illegal combinations.
 */
function decodeFields(unit: MmcTarget, cdb: Uint8Array): ReadCdFields | Sense {
  const type = cdb[1]! >> 2 & 0x07;
  if (type > SECTOR_TYPE.MODE2_FORM2) return SENSE.INVALID_FIELD_IN_CDB;
  if (type !== SECTOR_TYPE.ANY && type !== SECTOR_TYPE.MODE1) return SENSE.ILLEGAL_MODE_FOR_THIS_TRACK;
  const b9 = cdb[9]!;
  const headerCode = b9 >> 5 & 0x03;
  const c2 = b9 >> 1 & 0x03;
  if (c2 === 3) return SENSE.INVALID_FIELD_IN_CDB;
  if ((cdb[10]! & 0x07) !== 0) return SENSE.INVALID_FIELD_IN_CDB;
  const f: ReadCdFields = {
    sync: (b9 & 0x80) !== 0,
    // Mode 1 sectors have no sub-header: "sub-header only" (10b) selects nothing, "all headers" the header.
    header: headerCode === 1 || headerCode === 3,
    userData: (b9 & 0x10) !== 0,
    edcEcc: (b9 & 0x08) !== 0,
    c2: C2_SIZES[c2]!,
  };
  if (f.sync && !f.header) return SENSE.INVALID_FIELD_IN_CDB;
  if (unit.mediumKind === "dvd" && (f.sync || f.header || f.edcEcc || f.c2)) return SENSE.ILLEGAL_MODE_FOR_THIS_TRACK;
  return f;
}

function sectorFormat(f: ReadCdFields): SectorFormat | undefined {
  const raw = f.sync || f.header || f.edcEcc;
  if (!raw && !f.c2) return undefined; // user data only (or nothing)
  const pieces: [number, number][] = [];
  if (f.sync) pieces.push([OFFSET.SYNC, OFFSET.HEADER]);
  if (f.header) pieces.push([OFFSET.HEADER, OFFSET.USER_DATA]);
  if (f.userData) pieces.push([OFFSET.USER_DATA, OFFSET.EDC]);
  if (f.edcEcc) pieces.push([OFFSET.EDC, RAW_SECTOR_SIZE]);
  const bytesPerSector = pieces.reduce((n, [a, b]) => n + b - a, 0) + f.c2;
  const scratch = new Uint8Array(RAW_SECTOR_SIZE);
  return {
    bytesPerSector,
    format(lba, user, out, o) {
      if (raw) {
        encodeMode1Sector(lba, user, scratch);
        for (const [a, b] of pieces) {
          out.set(scratch.subarray(a, b), o);
          o += b - a;
        }
      } else if (f.userData) {
        out.set(user.subarray(0, USER_DATA_SIZE), o);
      }
      // C2 bytes stay zero: no errors.
    },
  };
}

function bytesPerSector(f: ReadCdFields): number {
  return (f.sync ? 12 : 0) + (f.header ? 4 : 0) + (f.userData ? USER_DATA_SIZE : 0) + (f.edcEcc ? 288 : 0) + f.c2;
}

function readCdCommon(unit: MmcTarget, cmd: CommandContext, lba: number, count: number): Outcome | Promise<Outcome> {
  const f = decodeFields(unit, cmd.cdb);
  if ("key" in f) return f;
  const bad = rangeError(unit, lba, count);
  if (bad) return bad;
  const size = bytesPerSector(f);
  if (size === 0 || count === 0) return undefined;
  const fmt = sectorFormat(f);
  if (fmt && (f.sync || f.header || f.edcEcc) && lba + count - 1 > MAX_MSF_LBA) return SENSE.LBA_OUT_OF_RANGE;
  return stream(unit, cmd, lba, count, fmt);
}

/** READ CD (BEh): LBA in bytes 2-5 (signed), transfer length in blocks in bytes 6-8. */
export const readCd: Handler<MmcTarget> = (unit, cmd) => readCdCommon(unit, cmd, be32(cmd.cdb, 2) | 0, be24(cmd.cdb, 6));

/** READ CD MSF (B9h): start M:S:F in bytes 3-5, end (exclusive) in bytes 6-8. */
export const readCdMsf: Handler<MmcTarget> = (unit, cmd) => {
  const c = cmd.cdb;
  if (c[4]! >= 60 || c[5]! >= 75 || c[7]! >= 60 || c[8]! >= 75) return SENSE.INVALID_FIELD_IN_CDB;
  const start = msfToLba(c[3]!, c[4]!, c[5]!);
  const end = msfToLba(c[6]!, c[7]!, c[8]!);
  if (start > end) return SENSE.INVALID_FIELD_IN_CDB;
  return readCdCommon(unit, cmd, start, end - start);
};
