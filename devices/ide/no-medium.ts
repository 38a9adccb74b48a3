/**
 * A stand-in packet layer for an ATAPI CD/DVD drive with its tray empty, until the real MMC
 * layer (devices/atapi) is attached: enough for a guest to find the drive, identify it and learn
 * there is no disc. INQUIRY answers (peripheral type 05h, removable); TEST UNIT READY and every
 * medium command report NOT READY / MEDIUM NOT PRESENT (02h/3Ah/00h); REQUEST SENSE returns the
 * last sense; GET EVENT STATUS NOTIFICATION (polled) reports no media event; PREVENT ALLOW
 * MEDIUM REMOVAL and START STOP UNIT succeed; anything else is ILLEGAL
 * REQUEST / INVALID COMMAND OPERATION CODE (05h/20h/00h).
 */
import type { AtapiIo, AtapiPacketHandler, ResetKind } from "../ata/transport.js";

const SENSE_KEY = { NO_SENSE: 0x0, NOT_READY: 0x2, ILLEGAL_REQUEST: 0x5, UNIT_ATTENTION: 0x6 } as const;

const OP = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  INQUIRY: 0x12,
  START_STOP_UNIT: 0x1b,
  PREVENT_ALLOW_MEDIUM_REMOVAL: 0x1e,
  READ_CAPACITY: 0x25,
  READ_10: 0x28,
  SEEK_10: 0x2b,
  READ_SUB_CHANNEL: 0x42,
  GET_EVENT_STATUS_NOTIFICATION: 0x4a,
  READ_TOC: 0x43,
  READ_DISC_INFORMATION: 0x51,
  READ_TRACK_INFORMATION: 0x52,
  READ_12: 0xa8,
  READ_DVD_STRUCTURE: 0xad,
  READ_CD_MSF: 0xb9,
  READ_CD: 0xbe,
} as const;

/** GET EVENT STATUS NOTIFICATION: the media event class bit (class 4). */
const MEDIA_CLASS = 0x10;

/** Commands that need a disc: NOT READY / MEDIUM NOT PRESENT. */
const NEEDS_MEDIUM = new Set<number>([
  OP.TEST_UNIT_READY,
  OP.READ_CAPACITY,
  OP.READ_10,
  OP.SEEK_10,
  OP.READ_SUB_CHANNEL,
  OP.READ_TOC,
  OP.READ_DISC_INFORMATION,
  OP.READ_TRACK_INFORMATION,
  OP.READ_12,
  OP.READ_DVD_STRUCTURE,
  OP.READ_CD_MSF,
  OP.READ_CD,
]);

interface Sense {
  key: number;
  asc: number;
  ascq: number;
}

const NO_SENSE: Sense = { key: SENSE_KEY.NO_SENSE, asc: 0, ascq: 0 };

export interface NoMediumAtapiOptions {
  /** INQUIRY vendor (8 characters), default "VBOX". */
  vendor?: string;
  /** INQUIRY product (16 characters), default "CD-ROM". */
  product?: string;
  /** INQUIRY revision (4 characters), default "1.0". */
  revision?: string;
}

export class NoMediumAtapi implements AtapiPacketHandler {
  private sense: Sense = NO_SENSE;
  private readonly inquiry: Uint8Array;

  constructor(options: NoMediumAtapiOptions = {}) {
    const d = new Uint8Array(36);
    d[0] = 0x05; // CD/DVD device
    d[1] = 0x80; // removable
    d[2] = 0x05; // SPC-3
    d[3] = 0x32; // ATAPI transport (bits 7:4 = 3), response data format 2
    d[4] = 36 - 5;
    ascii(d, 8, 8, options.vendor ?? "VBOX");
    ascii(d, 16, 16, options.product ?? "CD-ROM");
    ascii(d, 32, 4, options.revision ?? "1.0");
    this.inquiry = d;
  }

  async packet(cdb: Uint8Array, io: AtapiIo): Promise<void> {
    const op = cdb[0]!;
    if (op === OP.REQUEST_SENSE) {
      const s = new Uint8Array(18);
      s[0] = 0x70;
      s[2] = this.sense.key;
      s[7] = 10;
      s[12] = this.sense.asc;
      s[13] = this.sense.ascq;
      this.sense = NO_SENSE;
      if (await io.dataIn(s.subarray(0, Math.min(cdb[4]!, s.length)))) io.complete({ ok: true });
      return;
    }
    if (op === OP.INQUIRY) {
      if (cdb[1]! & 0x01) return this.fail(io, SENSE_KEY.ILLEGAL_REQUEST, 0x24); // no VPD pages
      const alloc = (cdb[3]! << 8) | cdb[4]!;
      if (await io.dataIn(this.inquiry.subarray(0, Math.min(alloc, this.inquiry.length)))) this.ok(io);
      return;
    }
    if (op === OP.GET_EVENT_STATUS_NOTIFICATION) {
      // Polled only (no asynchronous notification): the media class, "no change, no disc".
      if (!(cdb[1]! & 0x01)) return this.fail(io, SENSE_KEY.ILLEGAL_REQUEST, 0x24);
      const alloc = (cdb[7]! << 8) | cdb[8]!;
      const media = (cdb[4]! & MEDIA_CLASS) !== 0;
      const d = media ? new Uint8Array([0, 6, 0x04, MEDIA_CLASS, 0, 0, 0, 0]) : new Uint8Array([0, 2, 0x80, MEDIA_CLASS]);
      if (await io.dataIn(d.subarray(0, Math.min(alloc, d.length)))) this.ok(io);
      return;
    }
    if (NEEDS_MEDIUM.has(op)) return this.fail(io, SENSE_KEY.NOT_READY, 0x3a);
    if (op === OP.PREVENT_ALLOW_MEDIUM_REMOVAL || op === OP.START_STOP_UNIT) return this.ok(io);
    return this.fail(io, SENSE_KEY.ILLEGAL_REQUEST, 0x20);
  }

  reset(_kind: ResetKind | "device"): void {
    this.sense = NO_SENSE;
  }

  private ok(io: AtapiIo): void {
    this.sense = NO_SENSE;
    io.complete({ ok: true });
  }

  private fail(io: AtapiIo, key: number, asc: number, ascq = 0): void {
    this.sense = { key, asc, ascq };
    io.complete({ ok: false, senseKey: key });
  }
}

function ascii(dst: Uint8Array, offset: number, length: number, text: string): void {
  for (let i = 0; i < length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x20;
    dst[offset + i] = c >= 0x20 && c < 0x7f ? c : 0x20;
  }
}
