/** Host passthrough: VirtualBox's allow-list filter and the target around it. */
import { describe, expect, it } from "vitest";
import { issue, makeDevice } from "../ata/test-support.js";
import { STATUS as ATA_STATUS } from "../ata/task-file.js";
import { fixedSense, SENSE, senseName, STATUS } from "../scsi/sense.js";
import { cdb, run } from "../scsi/test-support.js";
import { AtapiScsiHandler } from "./atapi-scsi.js";
import { filterPassthroughCdb, PassthroughTarget, readCdSectorSize, type PassthroughDevice, type PassthroughRequest, type PassthroughResponse } from "./passthrough.js";

/** A host drive double: records requests; answers with `respond` (default: GOOD, data filled with 0xAB). */
class HostDrive implements PassthroughDevice {
  readonly requests: PassthroughRequest[] = [];
  respond: (r: PassthroughRequest) => PassthroughResponse | Promise<PassthroughResponse> = (r) => {
    if (r.direction === "in") r.data.fill(0xab);
    return { status: STATUS.GOOD, transferred: r.data.length };
  };
  constructor(readonly maxTransfer?: number) {}
  execute(r: PassthroughRequest): Promise<PassthroughResponse> {
    this.requests.push({ ...r, cdb: r.cdb.slice(), data: r.direction === "out" ? r.data.slice() : r.data });
    return Promise.resolve(this.respond(r));
  }
}

const verdictOf = (bytes: number[], ctx = {}) => {
  const c = new Uint8Array(12);
  c.set(bytes);
  return filterPassthroughCdb(c, ctx);
};

describe("passthrough filter", () => {
  it("blocks firmware download and activation (WRITE BUFFER microcode modes)", () => {
    for (const mode of [0x04, 0x05, 0x06, 0x07, 0x0e, 0x0f]) {
      const v = verdictOf([0x3b, mode, 0, 0, 0, 0, 0, 0x10, 0]);
      expect(v.allow).toBe(false);
      if (!v.allow) {
        expect(senseName(v.sense)).toBe(senseName(SENSE.INVALID_FIELD_IN_CDB));
        expect(v.reason).toMatch(/firmware/);
      }
    }
    expect(verdictOf([0x3b, 0x02, 0, 0, 0, 0, 0, 0x10, 0])).toMatchObject({ allow: true, direction: "out", length: 0x1000 }); // data mode
  });

  it("blocks REZERO UNIT and everything not on the list with INVALID COMMAND OPERATION CODE", () => {
    // REZERO, READ/WRITE(16), ATA PASS-THROUGH(16), SEND/RECEIVE DIAGNOSTIC, SECURITY PROTOCOL OUT,
    // READ/WRITE(6), READ/WRITE LONG, vendor specific.
    for (const op of [0x01, 0x88, 0x8a, 0x85, 0x1d, 0x1c, 0xb5, 0x08, 0x0a, 0x3e, 0x3f, 0xc0, 0xff]) {
      const v = verdictOf([op]);
      expect(v.allow).toBe(false);
      if (!v.allow) expect(senseName(v.sense)).toBe(senseName(SENSE.INVALID_COMMAND_OPERATION_CODE));
    }
  });

  it("lets safe commands through with direction and length from the CDB", () => {
    expect(verdictOf(cdb.tur())).toMatchObject({ allow: true, direction: "none", length: 0 });
    expect(verdictOf(cdb.inquiry(96))).toMatchObject({ allow: true, direction: "in", length: 96 });
    expect(verdictOf(cdb.readCapacity())).toMatchObject({ allow: true, direction: "in", length: 8 });
    expect(verdictOf(cdb.read10(100, 3))).toMatchObject({ allow: true, direction: "in", length: 3 * 2048, blocks: { lba: 100, count: 3 } });
    expect(verdictOf(cdb.read12(5, 70000))).toMatchObject({ allow: true, length: 70000 * 2048 });
    expect(verdictOf(cdb.gesn(0x10, 8))).toMatchObject({ allow: true, direction: "in", length: 8 });
    expect(verdictOf([0xac, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], { transferHint: 0x800 })).toMatchObject({ allow: true, length: 0x800 }); // GET PERFORMANCE
    expect(verdictOf([0x03, 0, 0, 0, 96])).toMatchObject({ allow: true, length: 96 });
    expect(verdictOf([0xa0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0])).toMatchObject({ allow: true, length: 256 }); // REPORT LUNS
  });

  it("allows burning commands by default (as VirtualBox) and blocks them when writes are off", () => {
    const writing: number[][] = [
      [0x04, 0x11], // FORMAT UNIT
      [0x54, 0, 0, 0, 0, 0, 0, 0, 16], // SEND OPC INFORMATION
      [0xa1], // BLANK
      [0x2a, 0, 0, 0, 0, 0, 0, 0, 1], // WRITE(10)
      [0x5d, 0, 0, 0, 0, 0, 0, 0, 32], // SEND CUE SHEET
      [0x3b, 0x02, 0, 0, 0, 0, 0, 0, 8], // WRITE BUFFER, data mode
    ];
    for (const c of writing) {
      expect(verdictOf(c, { transferHint: 12 }).allow).toBe(true);
      const v = verdictOf(c, { allowWrites: false });
      expect(v.allow).toBe(false);
      if (!v.allow) expect(senseName(v.sense)).toBe("05/20/00");
    }
    expect(verdictOf([0x04, 0x11], { transferHint: 12 })).toMatchObject({ direction: "out", length: 12 });
    expect(verdictOf(cdb.read10(0, 1), { allowWrites: false }).allow).toBe(true);
  });

  it("sizes READ CD blocks from the sector type and the selected fields", () => {
    const rc = (type: number, flags: number, sub = 0) => readCdSectorSize(new Uint8Array([0xbe, type << 2, 0, 0, 0, 0, 0, 0, 1, flags, sub, 0]));
    expect(rc(2, 0x10)).toBe(2048);
    expect(rc(2, 0xf8)).toBe(2352);
    expect(rc(1, 0x10)).toBe(2352); // CD-DA
    expect(rc(3, 0x10)).toBe(2336);
    expect(rc(4, 0xf8)).toBe(2352);
    expect(rc(5, 0x58)).toBe(8 + 2324 + 4);
    expect(rc(0, 0x10)).toBe(2352); // any type: the most a track could give
    expect(rc(2, 0xfa, 0x01)).toBe(2352 + 294 + 96);
    expect(rc(2, 0x00)).toBe(0);
  });
});

describe("PassthroughTarget", () => {
  it("refuses a firmware download without touching the host drive, and REQUEST SENSE says why", async () => {
    const host = new HostDrive();
    const target = new PassthroughTarget(host);
    const r = await run(target, [0x3b, 0x05, 0, 0, 0, 0, 0, 0x10, 0, 0]);
    expect(r.status).toBe(STATUS.CHECK_CONDITION);
    expect(senseName(r.sense)).toBe("05/24/00");
    expect(host.requests).toEqual([]);
    expect(target.blocked.map((b) => b.opcode)).toEqual([0x3b]);
    const rs = await run(target, cdb.requestSense());
    expect([rs.data[2], rs.data[12]]).toEqual([0x05, 0x24]);
    expect(host.requests).toEqual([]);
  });

  it("passes INQUIRY to the host and overwrites the identification", async () => {
    const host = new HostDrive();
    host.respond = (req) => {
      req.data.fill(0x41);
      req.data[0] = 0x05;
      return { status: STATUS.GOOD, transferred: 36 };
    };
    const r = await run(new PassthroughTarget(host), cdb.inquiry(96));
    expect(r.status).toBe(STATUS.GOOD);
    expect(r.data.length).toBe(36);
    expect(String.fromCharCode(...r.data.subarray(8, 36))).toBe("VBOX    CD-ROM          1.0 ");
    expect(host.requests[0]!.data.length).toBe(96);
    const plain = await run(new PassthroughTarget(host, { overwriteInquiry: false }), cdb.inquiry(96));
    expect(plain.data[8]).toBe(0x41);
  });

  it("splits a read bigger than the host's limit into whole-block commands", async () => {
    const host = new HostDrive(64 * 1024);
    const r = await run(new PassthroughTarget(host), cdb.read10(1000, 70));
    expect(r.status).toBe(STATUS.GOOD);
    expect(r.data.length).toBe(70 * 2048);
    expect(host.requests.map((q) => [q.cdb[2]! << 24 | q.cdb[3]! << 16 | q.cdb[4]! << 8 | q.cdb[5]!, q.cdb[7]! << 8 | q.cdb[8]!])).toEqual([
      [1000, 32],
      [1032, 32],
      [1064, 6],
    ]);
  });

  it("returns the host's CHECK CONDITION with its sense, and answers REQUEST SENSE from it", async () => {
    const host = new HostDrive();
    host.respond = () => ({ status: STATUS.CHECK_CONDITION, sense: fixedSense(SENSE.MEDIUM_NOT_PRESENT), transferred: 0 });
    const target = new PassthroughTarget(host);
    const r = await run(target, cdb.tur());
    expect(senseName(r.sense)).toBe("02/3a/00");
    const rs = await run(target, cdb.requestSense());
    expect([rs.data[2], rs.data[12]]).toEqual([0x02, 0x3a]);
    expect(host.requests.length).toBe(1);
  });

  it("turns a failing host into ABORTED COMMAND", async () => {
    const host = new HostDrive();
    host.respond = () => {
      throw new Error("EIO");
    };
    const traces: string[] = [];
    const r = await run(new PassthroughTarget(host, { trace: (m) => traces.push(m) }), cdb.tur());
    expect(senseName(r.sense)).toBe("0b/00/00");
    expect(traces.some((m) => m.includes("EIO"))).toBe(true);
  });

  it("sends data-out to the host and learns the write block size from mode page 05h", async () => {
    const host = new HostDrive();
    const target = new PassthroughTarget(host);
    const params = new Uint8Array(8 + 2 + 0x32);
    params[8] = 0x05;
    params[9] = 0x32;
    params[12] = 0x00; // data block type 0: raw 2352
    expect((await run(target, [0x55, 0x10, 0, 0, 0, 0, 0, 0, params.length, 0], { hostData: params })).status).toBe(STATUS.GOOD);
    expect(host.requests[0]!.data).toEqual(params);
    await run(target, [0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], { hostData: new Uint8Array(2 * 2352) });
    expect(host.requests[1]!.data.length).toBe(2 * 2352);
  });

  it("refuses an oversized transfer that cannot be split", async () => {
    const host = new HostDrive();
    const r = await run(new PassthroughTarget(host), [0xb9, 0, 0, 0, 2, 0, 255, 59, 74, 0xf8, 0, 0]);
    expect(senseName(r.sense)).toBe("05/24/00");
    expect(host.requests).toEqual([]);
  });

  it("works as an ATAPI drive: a firmware download PACKET ends with ERR, sense key ILLEGAL REQUEST", async () => {
    const host = new HostDrive();
    const { dev, t } = makeDevice({ kind: "atapi", packetHandler: new AtapiScsiHandler(new PassthroughTarget(host)) });
    const p = new Uint8Array(12);
    p.set([0x3b, 0x07, 0, 0, 0, 0, 0, 0x02, 0]);
    t.setHostData(p);
    const c = await issue(dev, t, { command: 0xa0, lbaMid: 0, lbaHigh: 2 });
    expect(c).toMatchObject({ status: ATA_STATUS.DRDY | ATA_STATUS.ERR, error: 0x50 });
    expect(host.requests).toEqual([]);
    t.setHostData(new Uint8Array(cdb.tur().concat(new Array(11).fill(0))));
    expect((await issue(dev, t, { command: 0xa0 })).status & ATA_STATUS.ERR).toBe(0);
    expect(host.requests.length).toBe(1);
  });
});
