/**
 * Host drive passthrough, as VirtualBox's `--passthrough on`: guest CDBs go to a real drive,
 * but only through an allow-list filter (VirtualBox ATAPIPassthrough.cpp `ATAPIPassthroughParseCdb`
 * facts, ref/controllers.md §2). The filter also works out each command's direction and length
 * from the CDB, because the host interface (SG_IO) needs them before the command runs.
 *
 *  - Blocked, always: WRITE BUFFER in the microcode download/activate modes (04h-07h, 0Eh, 0Fh)
 *    → ILLEGAL REQUEST / INVALID FIELD IN CDB ("attempted to update firmware"); REZERO UNIT (01h)
 *    → INVALID COMMAND OPERATION CODE (Linux answers it with sense 0 and cdrecord loops forever);
 *    every opcode not on the list (READ/WRITE(16), ATA PASS-THROUGH, SECURITY PROTOCOL, SEND/
 *    RECEIVE DIAGNOSTIC, vendor opcodes, SBC-only commands) → INVALID COMMAND OPERATION CODE.
 *  - Blocked when `allowWrites` is false: everything that writes, formats or blanks the disc or
 *    the drive (FORMAT UNIT, BLANK, SEND OPC INFORMATION, WRITE(10)/(12), WRITE AND VERIFY,
 *    SEND CUE SHEET, SEND DVD STRUCTURE, CLOSE TRACK/SESSION, RESERVE/REPAIR TRACK, ERASE,
 *    WRITE BUFFER in any mode) → INVALID COMMAND OPERATION CODE. VirtualBox allows them (burning
 *    is what passthrough is for), so the default is true.
 *
 * `PassthroughTarget` is a `ScsiTarget`: the ATAPI handler (atapi-scsi.ts) drives it for IDE and
 * AHCI, and the SCSI HBAs can use it unchanged. Around the filter it answers REQUEST SENSE from
 * the sense it cached off the host, overwrites INQUIRY's identification so the host drive is not
 * recognisable ("VBOX", "CD-ROM", "1.0" by default), and splits reads and writes bigger than the
 * host's transfer limit into several host commands.
 */
import { be16, be24, be32, put16, put24, put32, putAscii } from "../scsi/bytes.js";
import { fixedSense, parseSense, SENSE, STATUS, type Sense } from "../scsi/sense.js";
import type { ScsiIo, ScsiResetKind, ScsiResult, ScsiTarget } from "../scsi/target.js";

/** One command for the host drive. */
export interface PassthroughRequest {
  /** The CDB as the guest sent it (or a piece of a split transfer). */
  cdb: Uint8Array;
  direction: "none" | "in" | "out";
  /** in: the buffer to fill (its length is the most the host may return); out: the data to send. */
  data: Uint8Array;
}

export interface PassthroughResponse {
  /** SAM status from the host drive. */
  status: number;
  /** Sense data the host returned with CHECK CONDITION (autosense). */
  sense?: Uint8Array;
  /** Bytes actually moved (for "in", the valid prefix of `data`). */
  transferred: number;
}

/**
 * A host CD/DVD drive (Linux SG_IO, Windows SPTI, a test double ...). `execute` may reject when
 * the host itself fails; that becomes ABORTED COMMAND for the guest.
 */
export interface PassthroughDevice {
  execute(request: PassthroughRequest): Promise<PassthroughResponse>;
  /** Largest transfer per command the host accepts, bytes (default 512 KiB). */
  readonly maxTransfer?: number;
}

export type PassthroughVerdict =
  | {
      allow: true;
      name: string;
      direction: "none" | "in" | "out";
      /** Bytes to move ("in": an upper bound, the host says how many came). */
      length: number;
      /** For block transfers that may be split: bytes per block and where LBA and count live. */
      blocks?: { sectorSize: number; lba: number; count: number; countOffset: number; countBytes: 2 | 3 | 4 };
    }
  | { allow: false; sense: Sense; reason: string };

export interface FilterContext {
  /** The transfer size the initiator set up (ScsiIo.transferHint), for FORMAT UNIT and GET PERFORMANCE. */
  transferHint?: number;
  /** Bytes per block for WRITE commands (from the write parameters mode page); default 2048. */
  writeSectorSize?: number;
  /** Let commands through that write to the disc or the drive (default true, as VirtualBox). */
  allowWrites?: boolean;
}

type Length = (cdb: Uint8Array, ctx: FilterContext) => number;

interface Rule {
  name: string;
  direction: "none" | "in" | "out";
  length?: Length;
  /** Writes or erases the medium or the drive. */
  writes?: boolean;
  /** Block transfer: LBA at bytes 2-5 and the block count here. */
  blocks?: { countOffset: number; countBytes: 2 | 3 | 4; sectorSize: (cdb: Uint8Array, ctx: FilterContext) => number };
}

const u16at = (o: number): Length => (c) => be16(c, o);
const u24at = (o: number): Length => (c) => be24(c, o);
const u32at = (o: number): Length => (c) => be32(c, o);
const hint: Length = (_c, ctx) => ctx.transferHint ?? 0;
const writeSize = (_c: Uint8Array, ctx: FilterContext): number => ctx.writeSectorSize ?? 2048;

/** The allow-list, by opcode. */
const RULES = ((): (Rule | undefined)[] => {
  const t = new Array<Rule | undefined>(256).fill(undefined);
  const none = (op: number, name: string, writes = false): void => void (t[op] = { name, direction: "none", writes });
  const din = (op: number, name: string, length: Length): void => void (t[op] = { name, direction: "in", length });
  const dout = (op: number, name: string, length: Length, writes: boolean): void => void (t[op] = { name, direction: "out", length, writes });

  none(0xa1, "BLANK", true);
  none(0x5b, "CLOSE TRACK/SESSION", true);
  none(0x2c, "ERASE(10)", true); // MMC-2: the erase length is in blocks, there is no data phase
  none(0xa6, "LOAD/UNLOAD MEDIUM");
  none(0x4b, "PAUSE/RESUME");
  none(0x45, "PLAY AUDIO(10)");
  none(0xa5, "PLAY AUDIO(12)");
  none(0x47, "PLAY AUDIO MSF");
  none(0x1e, "PREVENT ALLOW MEDIUM REMOVAL");
  none(0x58, "REPAIR TRACK", true);
  none(0x53, "RESERVE TRACK", true);
  none(0xba, "SCAN");
  none(0x2b, "SEEK(10)");
  none(0xbb, "SET CD SPEED");
  none(0xa7, "SET READ AHEAD");
  none(0x1b, "START STOP UNIT");
  none(0x4e, "STOP PLAY/SCAN");
  none(0x35, "SYNCHRONIZE CACHE");
  none(0x00, "TEST UNIT READY");
  none(0x2f, "VERIFY(10)");

  din(0x46, "GET CONFIGURATION", u16at(7));
  din(0x4a, "GET EVENT STATUS NOTIFICATION", u16at(7));
  din(0xac, "GET PERFORMANCE", hint);
  din(0x12, "INQUIRY", u16at(3));
  din(0xbd, "MECHANISM STATUS", u16at(8));
  din(0x5a, "MODE SENSE(10)", u16at(7));
  din(0x3c, "READ BUFFER", u24at(6));
  din(0x5c, "READ BUFFER CAPACITY", u16at(7));
  din(0x25, "READ CAPACITY", () => 8);
  din(0x51, "READ DISC INFORMATION", u16at(7));
  din(0xad, "READ DVD STRUCTURE", u16at(8));
  din(0x23, "READ FORMAT CAPACITIES", u16at(7));
  din(0x42, "READ SUB-CHANNEL", u16at(7));
  din(0x43, "READ TOC/PMA/ATIP", u16at(7));
  din(0x52, "READ TRACK INFORMATION", u16at(7));
  din(0xa4, "REPORT KEY", u16at(8));
  din(0x03, "REQUEST SENSE", (c) => c[4]!);
  din(0xa0, "REPORT LUNS", u32at(6));
  t[0x28] = { name: "READ(10)", direction: "in", blocks: { countOffset: 7, countBytes: 2, sectorSize: () => 2048 } };
  t[0xa8] = { name: "READ(12)", direction: "in", blocks: { countOffset: 6, countBytes: 4, sectorSize: () => 2048 } };
  t[0xbe] = { name: "READ CD", direction: "in", blocks: { countOffset: 6, countBytes: 3, sectorSize: readCdSectorSize } };
  din(0xb9, "READ CD MSF", (c) => Math.max(0, msf(c, 6) - msf(c, 3)) * readCdSectorSize(c));

  dout(0x04, "FORMAT UNIT", hint, true);
  dout(0x55, "MODE SELECT(10)", u16at(7), false);
  dout(0x5d, "SEND CUE SHEET", u24at(6), true);
  dout(0xbf, "SEND DVD STRUCTURE", u16at(8), true);
  dout(0xa2, "SEND EVENT", u16at(8), false);
  dout(0xa3, "SEND KEY", u16at(8), false);
  dout(0x54, "SEND OPC INFORMATION", u16at(7), true);
  dout(0xb6, "SET STREAMING", u16at(9), false);
  dout(0x3b, "WRITE BUFFER", u24at(6), true);
  t[0x2a] = { name: "WRITE(10)", direction: "out", writes: true, blocks: { countOffset: 7, countBytes: 2, sectorSize: writeSize } };
  t[0x2e] = { name: "WRITE AND VERIFY(10)", direction: "out", writes: true, blocks: { countOffset: 7, countBytes: 2, sectorSize: writeSize } };
  t[0xaa] = { name: "WRITE(12)", direction: "out", writes: true, blocks: { countOffset: 6, countBytes: 4, sectorSize: writeSize } };
  return t;
})();

function msf(c: Uint8Array, o: number): number {
  return (c[o]! * 60 + c[o + 1]!) * 75 + c[o + 2]!;
}

/** Sub-header, user data and EDC/ECC sizes of the data sector types 2..5 (CD-DA is 2352 raw). */
const READ_CD_FIELDS: readonly { subheader: number; user: number; edc: number }[] = [
  { subheader: 0, user: 2048, edc: 288 }, // 2: Mode 1
  { subheader: 0, user: 2336, edc: 0 }, // 3: Mode 2 formless
  { subheader: 8, user: 2048, edc: 280 }, // 4: Mode 2 Form 1
  { subheader: 8, user: 2324, edc: 4 }, // 5: Mode 2 Form 2
];

/**
 * Bytes per block a READ CD returns: from the expected sector type and the selected fields
 * (byte 9) and sub-channel (byte 10). For "any type" the largest any track could give, since the
 * host reports what it actually returned.
 */
export function readCdSectorSize(c: Uint8Array): number {
  const type = c[1]! >> 2 & 0x07;
  const b9 = c[9]!;
  const c2 = [0, 294, 296, 296][b9 >> 1 & 0x03]!;
  const sub = [0, 96, 16, 96, 96, 96, 96, 96][c[10]! & 0x07]!;
  const audio = (b9 & 0xf8) !== 0 ? 2352 : 0;
  const data = (f: { subheader: number; user: number; edc: number }): number => {
    const headers = b9 >> 5 & 0x03;
    return (b9 & 0x80 ? 12 : 0) + (headers & 1 ? 4 : 0) + (headers & 2 ? f.subheader : 0) + (b9 & 0x10 ? f.user : 0) + (b9 & 0x08 ? f.edc : 0);
  };
  let main: number;
  if (type === 1) main = audio;
  else if (type >= 2 && type <= 5) main = data(READ_CD_FIELDS[type - 2]!);
  else main = Math.max(audio, ...READ_CD_FIELDS.map(data));
  return main + c2 + sub;
}

/** WRITE BUFFER modes that download or activate microcode. */
const MICROCODE_MODES = new Set([0x04, 0x05, 0x06, 0x07, 0x0e, 0x0f]);

/** Decide whether a guest CDB may reach the host drive, and how its data moves. */
export function filterPassthroughCdb(cdb: Uint8Array, ctx: FilterContext = {}): PassthroughVerdict {
  const op = cdb[0];
  if (op === undefined) return { allow: false, sense: SENSE.INVALID_COMMAND_OPERATION_CODE, reason: "empty CDB" };
  if (op === 0x01) return { allow: false, sense: SENSE.INVALID_COMMAND_OPERATION_CODE, reason: "REZERO UNIT is answered here" };
  if (op === 0x3b && MICROCODE_MODES.has(cdb[1]! & 0x1f)) {
    return { allow: false, sense: SENSE.INVALID_FIELD_IN_CDB, reason: "WRITE BUFFER microcode download/activation (firmware update) blocked" };
  }
  const rule = RULES[op];
  if (!rule) return { allow: false, sense: SENSE.INVALID_COMMAND_OPERATION_CODE, reason: `opcode 0x${op.toString(16).padStart(2, "0")} is not on the allow-list` };
  if (rule.writes && ctx.allowWrites === false) return { allow: false, sense: SENSE.INVALID_COMMAND_OPERATION_CODE, reason: `${rule.name} writes to the drive or disc` };
  const c = new Uint8Array(16);
  c.set(cdb.subarray(0, 16));
  if (rule.blocks) {
    const b = rule.blocks;
    const count = b.countBytes === 2 ? be16(c, b.countOffset) : b.countBytes === 3 ? be24(c, b.countOffset) : be32(c, b.countOffset);
    const sectorSize = b.sectorSize(c, ctx);
    return { allow: true, name: rule.name, direction: rule.direction, length: count * sectorSize, blocks: { sectorSize, lba: be32(c, 2), count, countOffset: b.countOffset, countBytes: b.countBytes } };
  }
  return { allow: true, name: rule.name, direction: rule.direction, length: rule.length ? rule.length(c, ctx) : 0 };
}

/** Write parameters mode page (05h) data block type → bytes per block written. */
const DATA_BLOCK_SIZE: Readonly<Record<number, number>> = { 0: 2352, 1: 2368, 2: 2448, 3: 2448, 8: 2048, 9: 2336, 10: 2048, 11: 2056, 12: 2324, 13: 2332 };

export interface PassthroughTargetOptions {
  /** Overwrite INQUIRY vendor/product/revision (VirtualBox's InquiryOverwrite, default true). */
  overwriteInquiry?: boolean;
  vendor?: string;
  product?: string;
  revision?: string;
  /** See FilterContext.allowWrites (default true). */
  allowWrites?: boolean;
  /** Largest data phase for commands that cannot be split (default 16 MiB). */
  maxUnsplit?: number;
  trace?: (message: string) => void;
}

const DEFAULT_MAX_TRANSFER = 512 * 1024;
const DEFAULT_MAX_UNSPLIT = 16 * 1024 * 1024;

export class PassthroughTarget implements ScsiTarget {
  /** Sense of the host's last CHECK CONDITION or of a filtered command, for REQUEST SENSE. */
  private cachedSense: Sense | undefined;
  /** Bytes per block of WRITE commands, from the last write parameters page sent. */
  private writeSectorSize = 2048;
  readonly blocked: { opcode: number; reason: string }[] = [];

  constructor(
    readonly device: PassthroughDevice,
    private readonly options: PassthroughTargetOptions = {},
  ) {}

  async execute(cdbIn: Uint8Array, io: ScsiIo): Promise<void> {
    const cdb = cdbIn.slice(0, 16);
    let done = false;
    const complete = (r: ScsiResult): void => {
      if (done) return;
      done = true;
      try {
        io.complete(r);
      } catch (e) {
        this.trace(`transport complete() threw: ${String(e)}`);
      }
    };
    const fail = (s: Sense): void => {
      this.cachedSense = s;
      complete({ status: STATUS.CHECK_CONDITION, sense: fixedSense(s) });
    };
    try {
      const verdict = filterPassthroughCdb(cdb, { transferHint: io.transferHint, writeSectorSize: this.writeSectorSize, allowWrites: this.options.allowWrites });
      if (!verdict.allow) {
        this.blocked.push({ opcode: cdb[0] ?? -1, reason: verdict.reason });
        this.trace(`passthrough blocked: ${verdict.reason}`);
        fail(verdict.sense);
        return;
      }
      if (cdb[0] === 0x03 && this.cachedSense) {
        const s = this.cachedSense;
        this.cachedSense = undefined;
        const data = fixedSense(s).subarray(0, Math.min(18, cdb[4]!));
        if (data.length && !(await io.dataIn(data))) return;
        complete({ status: STATUS.GOOD });
        return;
      }
      this.cachedSense = undefined;
      const maxTransfer = Math.max(2048, this.device.maxTransfer ?? DEFAULT_MAX_TRANSFER);
      if (verdict.blocks && verdict.length > maxTransfer && verdict.blocks.sectorSize > 0) {
        await this.split(cdb, verdict, verdict.blocks, maxTransfer, io, complete);
        return;
      }
      if (verdict.length > (this.options.maxUnsplit ?? DEFAULT_MAX_UNSPLIT)) {
        this.trace(`passthrough: ${verdict.name} of ${verdict.length} bytes cannot be split`);
        fail(SENSE.INVALID_FIELD_IN_CDB);
        return;
      }
      const r = await this.one(cdb, verdict.direction, verdict.length, io);
      if (r === undefined) return;
      if (r.status === STATUS.GOOD && cdb[0] === 0x55 && r.out) this.noteModeSelect(r.out);
      this.finish(r.response, complete);
    } catch (e) {
      this.trace(`passthrough: host drive failed: ${e instanceof Error ? e.message : String(e)}`);
      fail(SENSE.ABORTED_COMMAND);
    }
  }

  reset(_kind: ScsiResetKind): void {
    this.cachedSense = undefined;
  }

  /** Run one host command; undefined when the guest's transport stopped the command. */
  private async one(cdb: Uint8Array, direction: "none" | "in" | "out", length: number, io: ScsiIo): Promise<{ status: number; response: PassthroughResponse; out?: Uint8Array } | undefined> {
    if (direction === "out") {
      const data = new Uint8Array(length);
      if (length && !(await io.dataOut(data))) return undefined;
      const response = await this.device.execute({ cdb, direction, data });
      return { status: response.status, response, out: data };
    }
    const data = new Uint8Array(direction === "in" ? length : 0);
    const response = await this.device.execute({ cdb, direction, data });
    if (direction === "in") {
      const n = Math.max(0, Math.min(length, response.transferred | 0));
      const got = data.subarray(0, n);
      if (cdb[0] === 0x12 && !(cdb[1]! & 0x01) && response.status === STATUS.GOOD) this.overwriteInquiry(got);
      if (n && !(await io.dataIn(got))) return undefined;
    }
    return { status: response.status, response };
  }

  /** A block transfer bigger than the host takes: several commands, each for whole blocks. */
  private async split(cdb: Uint8Array, verdict: { direction: "none" | "in" | "out"; name: string }, b: NonNullable<Extract<PassthroughVerdict, { allow: true }>["blocks"]>, maxTransfer: number, io: ScsiIo, complete: (r: ScsiResult) => void): Promise<void> {
    const perCommand = Math.max(1, Math.floor(maxTransfer / b.sectorSize));
    for (let done = 0; done < b.count;) {
      const n = Math.min(perCommand, b.count - done);
      const piece = cdb.slice();
      put32(piece, 2, (b.lba + done) >>> 0);
      if (b.countBytes === 2) put16(piece, b.countOffset, n);
      else if (b.countBytes === 3) put24(piece, b.countOffset, n);
      else put32(piece, b.countOffset, n);
      const r = await this.one(piece, verdict.direction, n * b.sectorSize, io);
      if (r === undefined) return;
      if (r.status !== STATUS.GOOD || (verdict.direction === "in" && r.response.transferred < n * b.sectorSize)) {
        this.finish(r.response, complete);
        return;
      }
      done += n;
    }
    complete({ status: STATUS.GOOD });
  }

  private finish(response: PassthroughResponse, complete: (r: ScsiResult) => void): void {
    if (response.status === STATUS.CHECK_CONDITION) {
      const sense = response.sense && response.sense.length ? response.sense : fixedSense(SENSE.ABORTED_COMMAND);
      this.cachedSense = parseSense(sense);
      complete({ status: STATUS.CHECK_CONDITION, sense: sense.slice() });
      return;
    }
    complete({ status: response.status });
  }

  private overwriteInquiry(d: Uint8Array): void {
    if (this.options.overwriteInquiry === false || d.length <= 8) return;
    const id = new Uint8Array(28);
    putAscii(id, 0, 8, this.options.vendor ?? "VBOX");
    putAscii(id, 8, 16, this.options.product ?? "CD-ROM");
    putAscii(id, 24, 4, this.options.revision ?? "1.0");
    d.set(id.subarray(0, Math.min(28, d.length - 8)), 8);
  }

  /** Track the write parameters page's data block type so WRITE lengths come out right. */
  private noteModeSelect(p: Uint8Array): void {
    if (p.length < 8) return;
    let o = 8 + be16(p, 6);
    while (o + 2 <= p.length) {
      const code = p[o]! & 0x3f;
      const len = p[o + 1]!;
      if (code === 0x05 && o + 4 < p.length) {
        const size = DATA_BLOCK_SIZE[p[o + 4]! & 0x0f];
        if (size) this.writeSectorSize = size;
        return;
      }
      o += 2 + len;
    }
  }

  private trace(message: string): void {
    this.options.trace?.(message);
  }
}
