/**
 * SPC commands every logical unit answers the same way, whatever its device type: TEST UNIT READY,
 * REQUEST SENSE, INQUIRY (standard data and the VPD pages 00h/80h/83h), REPORT LUNS. The MMC
 * target includes these definitions in its table; the SBC disk target will too.
 */
import { be16, be32, putAscii, put16, put32 } from "./bytes.js";
import { type CommandFlags, type DispatchUnit, type Handler, type Outcome } from "./dispatch.js";
import { fixedSense, SENSE } from "./sense.js";

/** What INQUIRY reports. */
export interface InquiryIdentity {
  /** Peripheral device type: 00h direct access (disk), 05h CD/DVD. */
  peripheralType: number;
  removable: boolean;
  /** VERSION byte: 05h = SPC-3 (Linux libata rewrites 0 to 5 for ATAPI anyway). */
  version: number;
  /**
   * Byte 3: response data format 2 in bits 3:0; for ATAPI devices bits 7:4 carry the ATAPI
   * transport version (32h, as our IDE no-medium stand-in reports).
   */
  responseFormat: number;
  /** T10 vendor identification, 8 characters. */
  vendor: string;
  /** 16 characters. */
  product: string;
  /** 4 characters. */
  revision: string;
  /** Unit serial number (VPD 80h); empty means "not available" (reported as spaces). */
  serial: string;
}

export interface SpcUnit extends DispatchUnit {
  readonly identity: InquiryIdentity;
}

/** Standard INQUIRY data length (additional length 31). */
export const STANDARD_INQUIRY_LENGTH = 36;

export function standardInquiry(id: InquiryIdentity): Uint8Array {
  const d = new Uint8Array(STANDARD_INQUIRY_LENGTH);
  d[0] = id.peripheralType & 0x1f; // qualifier 000b: connected
  d[1] = id.removable ? 0x80 : 0;
  d[2] = id.version;
  d[3] = id.responseFormat;
  d[4] = STANDARD_INQUIRY_LENGTH - 5;
  putAscii(d, 8, 8, id.vendor);
  putAscii(d, 16, 16, id.product);
  putAscii(d, 32, 4, id.revision);
  return d;
}

/** VPD page codes we answer. */
export const VPD = { SUPPORTED_PAGES: 0x00, UNIT_SERIAL_NUMBER: 0x80, DEVICE_IDENTIFICATION: 0x83 } as const;

function vpdPage(id: InquiryIdentity, page: number): Uint8Array | undefined {
  const head = (code: number, body: Uint8Array): Uint8Array => {
    const d = new Uint8Array(4 + body.length);
    d[0] = id.peripheralType & 0x1f;
    d[1] = code;
    put16(d, 2, body.length);
    d.set(body, 4);
    return d;
  };
  const serial = id.serial.length > 0 ? id.serial.slice(0, 252) : " ".repeat(8);
  switch (page) {
    case VPD.SUPPORTED_PAGES:
      return head(page, new Uint8Array([VPD.SUPPORTED_PAGES, VPD.UNIT_SERIAL_NUMBER, VPD.DEVICE_IDENTIFICATION]));
    case VPD.UNIT_SERIAL_NUMBER: {
      const b = new Uint8Array(serial.length);
      putAscii(b, 0, serial.length, serial);
      return head(page, b);
    }
    case VPD.DEVICE_IDENTIFICATION: {
      // One designator: T10 vendor ID based (type 1), ASCII, associated with the logical unit:
      // vendor (8) + product (16) + serial, so two drives differ when their serials do.
      const tail = id.serial.slice(0, 64);
      const len = 24 + tail.length;
      const b = new Uint8Array(4 + len);
      b[0] = 0x02; // protocol identifier 0, code set 2 (ASCII)
      b[1] = 0x01; // PIV 0, association 0 (logical unit), designator type 1 (T10 vendor ID)
      b[3] = len;
      putAscii(b, 4, 8, id.vendor);
      putAscii(b, 12, 16, id.product);
      putAscii(b, 28, tail.length, tail);
      return head(page, b);
    }
    default:
      return undefined;
  }
}

/** INQUIRY (12h): standard data, or a VPD page with EVPD. */
export const inquiry: Handler<SpcUnit> = (unit, cmd) => {
  const cdb = cmd.cdb;
  const evpd = (cdb[1]! & 0x01) !== 0;
  const page = cdb[2]!;
  const alloc = be16(cdb, 3);
  if (cdb[1]! & 0x02) return SENSE.INVALID_FIELD_IN_CDB; // CmdDt (obsolete) not supported
  if (!evpd) {
    if (page !== 0) return SENSE.INVALID_FIELD_IN_CDB;
    return cmd.reply(standardInquiry(unit.identity), alloc);
  }
  const data = vpdPage(unit.identity, page);
  if (!data) return SENSE.INVALID_FIELD_IN_CDB;
  return cmd.reply(data, alloc);
};

/**
 * REQUEST SENSE (03h): the pending unit attention if any, else the last command's sense, in
 * fixed format; either is consumed. Descriptor format (DESC=1) is not supported.
 */
export const requestSense: Handler<SpcUnit> = (unit, cmd) => {
  if (cmd.cdb[1]! & 0x01) return SENSE.INVALID_FIELD_IN_CDB;
  const s = unit.sense.takeForRequestSense();
  return cmd.reply(fixedSense(s), cmd.cdb[4]!);
};

/** TEST UNIT READY (00h): the dispatcher's needs-medium check is the whole command. */
export const testUnitReady: Handler<SpcUnit> = () => undefined;

/** REPORT LUNS (A0h): a single LUN 0. */
export const reportLuns: Handler<SpcUnit> = (_unit, cmd): Outcome | Promise<Outcome> => {
  const select = cmd.cdb[2]!;
  const alloc = be32(cmd.cdb, 6);
  if (select > 0x02) return SENSE.INVALID_FIELD_IN_CDB;
  if (alloc < 16) return SENSE.INVALID_FIELD_IN_CDB;
  const d = new Uint8Array(16);
  put32(d, 0, 8);
  return cmd.reply(d, alloc);
};

/** The SPC definitions, for a target's commandTable(). */
export const SPC_COMMANDS: readonly (readonly [number, string, CommandFlags, Handler<SpcUnit>])[] = [
  [0x00, "TEST UNIT READY", { needsMedium: true }, testUnitReady],
  [0x03, "REQUEST SENSE", { data: "in", allowUnitAttention: true, keepsSense: true }, requestSense],
  [0x12, "INQUIRY", { data: "in", allowUnitAttention: true }, inquiry],
  [0xa0, "REPORT LUNS", { data: "in", allowUnitAttention: true }, reportLuns],
];
