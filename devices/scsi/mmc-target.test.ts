/** The MMC target's commands, byte by byte, and its medium/sense state machine. */
import { describe, expect, it } from "vitest";
import { firstDifference } from "../ata/test-support.js";
import { be16, be32 } from "./bytes.js";
import { CdDrive } from "./cd-drive.js";
import { lbaToMsf, mode1Sector } from "./cd-sector.js";
import { MEDIA_EVENT, MmcTarget, type MmcTargetConfig } from "./mmc-target.js";
import { SENSE, senseName, STATUS, type Sense } from "./sense.js";
import { cdb, cdImage, cdPattern, failReadAt, PatternMedium, RecordingIo, run, type RunResult } from "./test-support.js";

const CD_SECTORS = 300;
const DVD_SECTORS = 2_295_104; // a 4.7 GB single-layer DVD

function cdTarget(config: MmcTargetConfig = {}, sectors = CD_SECTORS) {
  const disk = cdImage(sectors);
  const drive = new CdDrive({ medium: disk });
  const traces: string[] = [];
  const target = new MmcTarget({ transport: "atapi", drive, trace: (m) => traces.push(m), ...config });
  return { disk, drive, target, traces };
}

function dvdTarget() {
  const drive = new CdDrive({ medium: new PatternMedium(DVD_SECTORS * 2048) });
  return { drive, target: new MmcTarget({ transport: "atapi", drive }) };
}

function emptyTarget(config: MmcTargetConfig = {}) {
  const drive = new CdDrive();
  return { drive, target: new MmcTarget({ transport: "atapi", drive, ...config }) };
}

function expectGood(r: RunResult): void {
  expect(r.completions).toBe(1);
  if (r.status !== STATUS.GOOD) throw new Error(`expected GOOD, got CHECK CONDITION ${senseName(r.sense)}`);
}

function expectCheck(r: RunResult, s: Sense): void {
  expect(r.completions).toBe(1);
  expect(r.status).toBe(STATUS.CHECK_CONDITION);
  expect(senseName(r.sense)).toBe(senseName(s));
}

const ascii = (b: Uint8Array): string => String.fromCharCode(...b);

describe("INQUIRY", () => {
  it("reports a removable CD/DVD device identified as VBOX CD-ROM 1.0", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.inquiry(96));
    expectGood(r);
    const d = r.data;
    expect(d.length).toBe(36);
    expect(Array.from(d.subarray(0, 5))).toEqual([0x05, 0x80, 0x05, 0x32, 31]);
    expect(ascii(d.subarray(8, 36))).toBe("VBOX    CD-ROM          1.0 ");
  });

  it("takes configured strings and the SCSI response format behind a SCSI HBA", async () => {
    const { target } = cdTarget({ transport: "scsi", vendor: "ACME", product: "SuperDrive 9000X", revision: "2.31", serial: "SN123" });
    const d = (await run(target, cdb.inquiry(36))).data;
    expect(d[3]).toBe(0x02);
    expect(ascii(d.subarray(8, 36))).toBe("ACME    SuperDrive 9000X2.31");
    const sn = (await run(target, cdb.inquiry(64, true, 0x80))).data;
    expect(ascii(sn.subarray(4))).toBe("SN123");
  });

  it("cuts the data to the allocation length", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.inquiry(5));
    expectGood(r);
    expect(r.data.length).toBe(5);
    expect((await run(target, cdb.inquiry(0))).data.length).toBe(0);
  });

  it("has VPD pages 00h, 80h, 83h and refuses others", async () => {
    const { target } = cdTarget();
    const p0 = (await run(target, cdb.inquiry(255, true, 0))).data;
    expect(Array.from(p0)).toEqual([0x05, 0x00, 0x00, 0x03, 0x00, 0x80, 0x83]);
    const p80 = (await run(target, cdb.inquiry(255, true, 0x80))).data;
    expect(Array.from(p80.subarray(0, 4))).toEqual([0x05, 0x80, 0, 8]);
    expect(ascii(p80.subarray(4))).toBe("        ");
    const p83 = (await run(target, cdb.inquiry(255, true, 0x83))).data;
    expect(Array.from(p83.subarray(0, 8))).toEqual([0x05, 0x83, 0, 28, 0x02, 0x01, 0x00, 24]);
    expect(ascii(p83.subarray(8, 32))).toBe("VBOX    CD-ROM          ");
    expectCheck(await run(target, cdb.inquiry(255, true, 0xb0)), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(target, cdb.inquiry(255, false, 0x80)), SENSE.INVALID_FIELD_IN_CDB);
  });
});

describe("READ CAPACITY", () => {
  it("returns the last LBA and 2048-byte blocks", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readCapacity());
    expectGood(r);
    expect(be32(r.data, 0)).toBe(CD_SECTORS - 1);
    expect(be32(r.data, 4)).toBe(2048);
  });

  it("is NOT READY without a disc", async () => {
    const { target } = emptyTarget();
    expectCheck(await run(target, cdb.readCapacity()), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
  });
});

describe("READ(10) / READ(12)", () => {
  it("returns the sectors' user data", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.read10(7, 3));
    expectGood(r);
    expect(r.data).toEqual(new Uint8Array([...cdPattern(7), ...cdPattern(8), ...cdPattern(9)]));
    const r12 = await run(target, cdb.read12(CD_SECTORS - 1, 1));
    expectGood(r12);
    expect(r12.data).toEqual(cdPattern(CD_SECTORS - 1));
  });

  it("streams long reads in chunks", async () => {
    const { target, disk } = cdTarget();
    const r = await run(target, cdb.read10(0, 100));
    expectGood(r);
    expect(r.io.chunks.map((c) => c.length / 2048)).toEqual([32, 32, 32, 4]);
    expect(firstDifference(r.data, disk.data.subarray(0, 100 * 2048))).toBe(-1);
  });

  it("moves nothing for a zero-length read", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.read10(CD_SECTORS, 0));
    expectGood(r);
    expect(r.data.length).toBe(0);
  });

  it("refuses reads past the capacity with LBA OUT OF RANGE and no data", async () => {
    const { target } = cdTarget();
    for (const c of [cdb.read10(CD_SECTORS - 1, 2), cdb.read10(CD_SECTORS, 1), cdb.read10(0xffffffff, 1), cdb.read12(1, 0xffffffff)]) {
      const r = await run(target, c);
      expectCheck(r, SENSE.LBA_OUT_OF_RANGE);
      expect(r.data.length).toBe(0);
    }
  });

  it("reports a failing medium as MEDIUM ERROR / UNRECOVERED READ ERROR with the LBA", async () => {
    const { target, disk } = cdTarget();
    failReadAt(disk, 40);
    const r = await run(target, cdb.read10(0, 64));
    expectCheck(r, SENSE.UNRECOVERED_READ_ERROR);
    expect(r.sense.info).toBe(40);
    expect(r.data.length).toBe(32 * 2048); // the first chunk went out before the failure
    const rs = await run(target, cdb.requestSense());
    expect(senseName(rs.sense)).toBe("00/00/00");
    expect(Array.from(rs.data.subarray(0, 3))).toEqual([0xf0, 0, 0x03]);
    expect(be32(rs.data, 3)).toBe(40);
    expect([rs.data[12], rs.data[13]]).toEqual([0x11, 0x00]);
  });

  it("stops without completing when the transport ends the command", async () => {
    const { target } = cdTarget();
    const io = new RecordingIo();
    io.stopAt = 1;
    const r = await run(target, cdb.read10(0, 100), { io });
    expect(r.completions).toBe(0);
    expect(io.chunks.length).toBe(1);
  });

  it("fails with NOT READY when the disc is taken out during a read", async () => {
    const { target, disk, drive } = cdTarget();
    disk.hold = true;
    const p = run(target, cdb.read10(0, 64));
    await until(() => disk.heldCount === 1);
    drive.eject({ force: true });
    disk.release();
    const r = await p;
    expectCheck(r, SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
  });
});

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await Promise.resolve();
}

describe("READ CD / READ CD MSF", () => {
  it("returns user data for flags 10h", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readCd(5, 2, 0x10));
    expectGood(r);
    expect(r.data).toEqual(new Uint8Array([...cdPattern(5), ...cdPattern(6)]));
  });

  it("synthesises 2352-byte raw sectors for flags F8h", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readCd(16, 2, 0xf8));
    expectGood(r);
    expect(r.data.length).toBe(2 * 2352);
    expect(r.data.subarray(0, 2352)).toEqual(mode1Sector(16, cdPattern(16)));
    expect(r.data.subarray(2352)).toEqual(mode1Sector(17, cdPattern(17)));
    expect(Array.from(r.data.subarray(12, 16))).toEqual([0x00, 0x02, 0x16, 0x01]); // 00:02:16, mode 1
  });

  it("selects the requested fields and appends C2 information", async () => {
    const { target } = cdTarget();
    const raw = mode1Sector(3, cdPattern(3));
    const cases: [number, Uint8Array][] = [
      [0x20, raw.subarray(12, 16)], // header only
      [0x78, raw.subarray(12, 2352)], // all headers, user data, EDC/ECC
      [0x18, raw.subarray(16, 2352)], // user data + EDC/ECC
      [0x12, new Uint8Array([...raw.subarray(16, 2064), ...new Uint8Array(294)])], // user data + C2 pointers
      [0xfc, new Uint8Array([...raw, ...new Uint8Array(296)])], // everything + C2 and block error bits
      [0x40, new Uint8Array(0)], // sub-header only: Mode 1 has none
    ];
    for (const [flags, expected] of cases) {
      const r = await run(target, cdb.readCd(3, 1, flags));
      expectGood(r);
      expect(r.data).toEqual(expected);
    }
  });

  it("refuses other sector types, sub-channel data and illegal field combinations", async () => {
    const { target } = cdTarget();
    expectCheck(await run(target, cdb.readCd(0, 1, 0x10, 1)), SENSE.ILLEGAL_MODE_FOR_THIS_TRACK); // CD-DA
    expectCheck(await run(target, cdb.readCd(0, 1, 0x10, 4)), SENSE.ILLEGAL_MODE_FOR_THIS_TRACK); // mode 2 form 1
    expectCheck(await run(target, cdb.readCd(0, 1, 0x10, 7)), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(target, cdb.readCd(0, 1, 0x10, 2, 1)), SENSE.INVALID_FIELD_IN_CDB); // raw P-W
    expectCheck(await run(target, cdb.readCd(0, 1, 0x90)), SENSE.INVALID_FIELD_IN_CDB); // sync without header
    expectCheck(await run(target, cdb.readCd(0, 1, 0x16)), SENSE.INVALID_FIELD_IN_CDB); // C2 code 11b
    expectCheck(await run(target, cdb.readCd(CD_SECTORS - 1, 2, 0xf8)), SENSE.LBA_OUT_OF_RANGE);
    expectCheck(await run(target, cdb.readCd(-1, 1, 0x10)), SENSE.LBA_OUT_OF_RANGE);
  });

  it("reads by MSF range, end exclusive", async () => {
    const { target } = cdTarget();
    const r = await run(target, [0xb9, 0, 0, 0, 2, 10, 0, 2, 13, 0xf8, 0, 0]);
    expectGood(r);
    expect(r.data.length).toBe(3 * 2352);
    expect(r.data.subarray(0, 2352)).toEqual(mode1Sector(10, cdPattern(10)));
    expectGood(await run(target, [0xb9, 0, 0, 0, 2, 10, 0, 2, 10, 0xf8, 0, 0])); // empty range
    expectCheck(await run(target, [0xb9, 0, 0, 0, 2, 10, 0, 2, 9, 0xf8, 0, 0]), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(target, [0xb9, 0, 0, 0, 1, 0, 0, 2, 1, 0x10, 0, 0]), SENSE.LBA_OUT_OF_RANGE); // lead-in
    expectCheck(await run(target, [0xb9, 0, 0, 0, 60, 0, 0, 61, 0, 0x10, 0, 0]), SENSE.INVALID_FIELD_IN_CDB); // second 60
  });

  it("on a DVD returns user data but no CD sector fields", async () => {
    const { target } = dvdTarget();
    const r = await run(target, cdb.readCd(DVD_SECTORS - 1, 1, 0x10));
    expectGood(r);
    expect(r.data).toEqual(cdPattern(DVD_SECTORS - 1));
    expectCheck(await run(target, cdb.readCd(0, 1, 0xf8)), SENSE.ILLEGAL_MODE_FOR_THIS_TRACK);
  });
});

describe("READ TOC/PMA/ATIP", () => {
  it("format 0 in LBA form: track 1 at 0 and the lead-out at the capacity", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readToc(0, false));
    expectGood(r);
    expect(Array.from(r.data)).toEqual([
      0, 18, 1, 1,
      0, 0x14, 1, 0, 0, 0, 0, 0,
      0, 0x14, 0xaa, 0, 0, 0, CD_SECTORS >> 8, CD_SECTORS & 0xff,
    ]);
  });

  it("format 0 in MSF form: 00:02:00 and the lead-out's absolute time", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readToc(0, true));
    const lo = lbaToMsf(CD_SECTORS);
    expect(Array.from(r.data)).toEqual([0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 2, 0, 0, 0x14, 0xaa, 0, 0, lo.m, lo.s, lo.f]);
    expect(lo).toEqual({ m: 0, s: 6, f: 0 });
  });

  it("starting at the lead-out lists only the lead-out; a track beyond the last is refused", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readToc(0, false, 0xaa));
    expect(Array.from(r.data)).toEqual([0, 10, 1, 1, 0, 0x14, 0xaa, 0, 0, 0, CD_SECTORS >> 8, CD_SECTORS & 0xff]);
    expectCheck(await run(target, cdb.readToc(0, false, 2)), SENSE.INVALID_FIELD_IN_CDB);
  });

  it("format 1 (session info), also when asked the old ATAPI way in byte 9", async () => {
    const { target } = cdTarget();
    const expected = [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0];
    expect(Array.from((await run(target, cdb.readToc(1, false))).data)).toEqual(expected);
    const legacy = await run(target, [0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40]); // Linux sr_cd_check
    expect(Array.from(legacy.data)).toEqual(expected);
  });

  it("format 2 (full TOC): points A0, A1, A2 and track 1", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readToc(2, true));
    expectGood(r);
    const d = r.data;
    expect(be16(d, 0)).toBe(46);
    const desc = (i: number) => Array.from(d.subarray(4 + 11 * i, 15 + 11 * i));
    const lo = lbaToMsf(CD_SECTORS);
    expect(desc(0)).toEqual([1, 0x14, 0, 0xa0, 0, 0, 0, 0, 1, 0, 0]);
    expect(desc(1)).toEqual([1, 0x14, 0, 0xa1, 0, 0, 0, 0, 1, 0, 0]);
    expect(desc(2)).toEqual([1, 0x14, 0, 0xa2, 0, 0, 0, 0, lo.m, lo.s, lo.f]);
    expect(desc(3)).toEqual([1, 0x14, 0, 0x01, 0, 0, 0, 0, 0, 2, 0]);
  });

  it("cuts to the allocation length, refuses PMA/ATIP, needs a disc", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.readToc(0, false, 0, 4));
    expect(Array.from(r.data)).toEqual([0, 18, 1, 1]);
    expectCheck(await run(target, cdb.readToc(4, false)), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(emptyTarget().target, cdb.readToc(0, false)), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
  });

  it("clamps a DVD lead-out that does not fit in MSF bytes", async () => {
    const { target } = dvdTarget();
    const lba = await run(target, cdb.readToc(0, false));
    expect(be32(lba.data, 16)).toBe(DVD_SECTORS);
    const msf = await run(target, cdb.readToc(0, true));
    expect(Array.from(msf.data.subarray(16, 20))).toEqual([0, 0xff, 59, 74]);
  });
});

describe("GET CONFIGURATION", () => {
  type Feature = { code: number; version: number; persistent: boolean; current: boolean; data: Uint8Array };
  function parse(d: Uint8Array): { length: number; profile: number; features: Feature[] } {
    const features: Feature[] = [];
    for (let o = 8; o + 4 <= d.length; o += 4 + d[o + 3]!) {
      features.push({ code: be16(d, o), version: d[o + 2]! >> 2 & 0xf, persistent: (d[o + 2]! & 2) !== 0, current: (d[o + 2]! & 1) !== 0, data: d.subarray(o + 4, o + 4 + d[o + 3]!) });
    }
    return { length: be32(d, 0), profile: be16(d, 6), features };
  }

  it("reports CD-ROM as the current profile for a CD, with the required features", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.getConfiguration());
    expectGood(r);
    const c = parse(r.data);
    expect(c.length).toBe(r.data.length - 4);
    expect(c.profile).toBe(0x0008);
    expect(c.features.map((f) => f.code)).toEqual([0x0000, 0x0001, 0x0002, 0x0003, 0x0010, 0x001e, 0x001f]);
    const [profiles, core, , removable, random, cdRead, dvdRead] = c.features;
    expect(Array.from(profiles!.data)).toEqual([0x00, 0x10, 0, 0, 0x00, 0x08, 1, 0]);
    expect(profiles!.current && profiles!.persistent).toBe(true);
    expect(be32(core!.data, 0)).toBe(2); // ATAPI
    expect(removable!.data[0]).toBe(0x29); // tray, eject, lock
    expect(random!.current).toBe(true);
    expect(be32(random!.data, 0)).toBe(2048);
    expect([cdRead!.current, dvdRead!.current]).toEqual([true, false]);
  });

  it("reports DVD-ROM for a disc bigger than a CD, and no profile without a disc", async () => {
    const dvd = parse((await run(dvdTarget().target, cdb.getConfiguration())).data);
    expect(dvd.profile).toBe(0x0010);
    expect(dvd.features.find((f) => f.code === 0x1f)!.current).toBe(true);
    expect(dvd.features.find((f) => f.code === 0x1e)!.current).toBe(false);
    const none = parse((await run(emptyTarget().target, cdb.getConfiguration())).data);
    expect(none.profile).toBe(0);
    expect(none.features.find((f) => f.code === 0x10)!.current).toBe(false);
  });

  it("honours RT and the starting feature, and keeps the full length when cut", async () => {
    const { target } = emptyTarget();
    const current = parse((await run(target, cdb.getConfiguration(1))).data);
    expect(current.features.map((f) => f.code)).toEqual([0, 1, 2, 3]);
    const one = parse((await run(target, cdb.getConfiguration(2, 0x1e))).data);
    expect(one.features.map((f) => f.code)).toEqual([0x1e]);
    const from = parse((await run(target, cdb.getConfiguration(0, 0x10))).data);
    expect(from.features.map((f) => f.code)).toEqual([0x10, 0x1e, 0x1f]);
    const none = await run(target, cdb.getConfiguration(2, 0x1234));
    expect(none.data.length).toBe(8);
    const cut = await run(cdTarget().target, cdb.getConfiguration(0, 0, 8));
    expect(cut.data.length).toBe(8);
    expect(be32(cut.data, 0)).toBeGreaterThan(4);
    expect(be16(cut.data, 6)).toBe(8);
    expectCheck(await run(target, cdb.getConfiguration(3)), SENSE.INVALID_FIELD_IN_CDB);
  });
});

describe("GET EVENT STATUS NOTIFICATION", () => {
  const event = (d: Uint8Array) => ({ code: d[4]! & 0xf, present: (d[5]! & 2) !== 0, open: (d[5]! & 1) !== 0 });

  it("reports new media after an insert, once", async () => {
    const { drive, target } = emptyTarget();
    let r = await run(target, cdb.gesn());
    expect(Array.from(r.data)).toEqual([0, 6, 4, 0x10, 0, 0, 0, 0]);
    drive.insert(cdImage(10));
    r = await run(target, cdb.gesn());
    expectGood(r); // allowed with the unit attention pending
    expect(event(r.data)).toEqual({ code: MEDIA_EVENT.NEW_MEDIA, present: true, open: false });
    expect(event((await run(target, cdb.gesn())).data)).toEqual({ code: 0, present: true, open: false });
    expect(target.sense.unitAttentionPending).toBe(true);
  });

  it("reports media removal after a guest eject, with the tray open", async () => {
    const { target } = cdTarget();
    expectGood(await run(target, cdb.startStop(true, false)));
    expect(event((await run(target, cdb.gesn())).data)).toEqual({ code: MEDIA_EVENT.MEDIA_REMOVAL, present: false, open: true });
  });

  it("reports an eject request when the host's eject meets a locked tray", async () => {
    const { target, drive } = cdTarget();
    expectGood(await run(target, cdb.prevent(true)));
    expect(drive.eject()).toBe(false);
    expect(event((await run(target, cdb.gesn())).data)).toEqual({ code: MEDIA_EVENT.EJECT_REQUEST, present: true, open: false });
  });

  it("answers a request without the media class with NEA, and refuses asynchronous mode", async () => {
    const { target } = cdTarget();
    expect(Array.from((await run(target, cdb.gesn(0x02))).data)).toEqual([0, 2, 0x80, 0x10]);
    expectCheck(await run(target, cdb.gesn(0x10, 8, false)), SENSE.INVALID_FIELD_IN_CDB);
  });
});

describe("MODE SENSE", () => {
  it("returns the capabilities page 2Ah after an 8-byte header", async () => {
    const { target } = cdTarget();
    const r = await run(target, cdb.modeSense10(0x2a));
    expectGood(r);
    const d = r.data;
    expect(be16(d, 0)).toBe(d.length - 2);
    expect(be16(d, 6)).toBe(0); // no block descriptors
    const p = d.subarray(8);
    expect([p[0], p[1]]).toEqual([0x2a, 0x14]);
    expect(p[2]! & 0x08).toBe(0x08); // DVD-ROM read (Linux sr: otherwise no DVD)
    expect(p[3]).toBe(0); // no writing
    expect(p[4]! & 0x01).toBe(0x01); // audio play
    expect(p[6]).toBe(0x29); // tray, eject, lock supported, unlocked
    expect(be16(p, 8)).toBe(4234);
    expect(be16(p, 14)).toBe(4234);
  });

  it("shows the lock state, changeable values as zeros, and pages 01h and all", async () => {
    const { target } = cdTarget();
    await run(target, cdb.prevent(true));
    expect((await run(target, cdb.modeSense10(0x2a))).data[8 + 6]).toBe(0x2b);
    expect((await run(target, cdb.modeSense10(0x2a, 2))).data[8 + 6]).toBe(0x29); // default: unlocked
    const changeable = (await run(target, cdb.modeSense10(0x2a, 1))).data.subarray(8);
    expect(Array.from(changeable.subarray(0, 2))).toEqual([0x2a, 0x14]);
    expect(changeable.subarray(2).every((b) => b === 0)).toBe(true);
    const p1 = (await run(target, cdb.modeSense10(0x01))).data.subarray(8);
    expect(Array.from(p1)).toEqual([0x01, 0x0a, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    const all = (await run(target, cdb.modeSense10(0x3f))).data;
    expect(all.length).toBe(8 + 12 + 22);
    expect([all[8], all[20]]).toEqual([0x01, 0x2a]);
  });

  it("MODE SENSE(6) has a 4-byte header; saved values and unknown pages are refused", async () => {
    const { target } = cdTarget();
    const r = await run(target, [0x1a, 0x08, 0x2a, 0, 255, 0]);
    expect(r.data[0]).toBe(r.data.length - 1);
    expect([r.data[4], r.data[5]]).toEqual([0x2a, 0x14]);
    expectCheck(await run(target, cdb.modeSense10(0x2a, 3)), SENSE.SAVING_PARAMETERS_NOT_SUPPORTED);
    expectCheck(await run(target, cdb.modeSense10(0x0e)), SENSE.INVALID_FIELD_IN_CDB);
  });

  it("MODE SELECT takes the parameter list and succeeds", async () => {
    const { target } = cdTarget();
    const r = await run(target, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 16, 0], { hostData: new Uint8Array(16) });
    expectGood(r);
    expectCheck(await run(target, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 4, 0], { hostData: new Uint8Array(4) }), SENSE.PARAMETER_LIST_LENGTH_ERROR);
  });
});

describe("disc, track, mechanism and DVD structure", () => {
  it("READ DISC INFORMATION: a finalised disc with one session and track", async () => {
    const d = (await run(cdTarget().target, [0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0])).data;
    expect(Array.from(d.subarray(0, 9))).toEqual([0, 32, 0x0e, 1, 1, 1, 1, 0x20, 0]);
  });

  it("READ TRACK INFORMATION by track, LBA and session", async () => {
    const { target } = cdTarget();
    for (const c of [[0x52, 1, 0, 0, 0, 1, 0, 0, 36, 0], [0x52, 0, 0, 0, 0, 100, 0, 0, 36, 0], [0x52, 2, 0, 0, 0, 1, 0, 0, 36, 0]]) {
      const r = await run(target, c);
      expectGood(r);
      expect(Array.from(r.data.subarray(0, 8))).toEqual([0, 34, 1, 1, 0, 0x04, 0x01, 0]);
      expect(be32(r.data, 8)).toBe(0);
      expect(be32(r.data, 24)).toBe(CD_SECTORS);
    }
    expectCheck(await run(target, [0x52, 1, 0, 0, 0, 2, 0, 0, 36, 0]), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(target, [0x52, 0, 0, 0, CD_SECTORS >> 8, CD_SECTORS & 0xff, 0, 0, 36, 0]), SENSE.INVALID_FIELD_IN_CDB);
  });

  it("MECHANISM STATUS shows the tray", async () => {
    const { target } = cdTarget();
    expect(Array.from((await run(target, [0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0])).data)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    await run(target, cdb.startStop(true, false));
    expect((await run(target, [0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0])).data[1]).toBe(0x10);
  });

  it("READ DVD STRUCTURE: physical format and copyright on a DVD, refused on a CD", async () => {
    const { target } = dvdTarget();
    const phys = await run(target, [0xad, 0, 0, 0, 0, 0, 0, 0x00, 0x08, 0x04, 0, 0]);
    expectGood(phys);
    const d = phys.data;
    expect(d.length).toBe(2052);
    expect(be16(d, 0)).toBe(2050);
    expect(Array.from(d.subarray(4, 8))).toEqual([0x01, 0x0f, 0x01, 0x00]);
    expect(be32(d, 8)).toBe(0x30000);
    expect(be32(d, 12)).toBe(0x30000 + DVD_SECTORS - 1);
    const copy = await run(target, [0xad, 0, 0, 0, 0, 0, 0, 0x01, 0, 8, 0, 0]);
    expect(Array.from(copy.data)).toEqual([0, 6, 0, 0, 0, 0, 0, 0]);
    expectCheck(await run(cdTarget().target, [0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04, 0, 0]), SENSE.INCOMPATIBLE_MEDIUM_FORMAT);
    expectCheck(await run(emptyTarget().target, [0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04, 0, 0]), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
    const list = await run(emptyTarget().target, [0xad, 0, 0, 0, 0, 0, 0, 0xff, 0, 64, 0, 0]);
    expectGood(list);
    expect(Array.from(list.data.subarray(4, 8))).toEqual([0x00, 0x40, 0x08, 0x00]);
    expectCheck(await run(target, [0xad, 0, 0, 0, 0, 0, 0, 0x04, 0, 64, 0, 0]), SENSE.INVALID_FIELD_IN_CDB);
  });

  it("SEEK(10) checks the address; SET CD SPEED is accepted", async () => {
    const { target } = cdTarget();
    expectGood(await run(target, [0x2b, 0, 0, 0, 0, 10, 0, 0, 0, 0]));
    expectCheck(await run(target, [0x2b, 0, 0, 0, CD_SECTORS >> 8, CD_SECTORS & 0xff, 0, 0, 0, 0]), SENSE.LBA_OUT_OF_RANGE);
    expectGood(await run(target, [0xbb, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]));
  });
});

describe("sense and unit attention", () => {
  it("reports a medium change once: CHECK CONDITION, REQUEST SENSE shows it, then TUR is GOOD", async () => {
    const { drive, target } = emptyTarget();
    expectCheck(await run(target, cdb.tur()), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
    drive.insert(cdImage(20));
    expectCheck(await run(target, cdb.tur()), SENSE.NOT_READY_TO_READY_CHANGE);
    const rs = await run(target, cdb.requestSense());
    expectGood(rs);
    expect(Array.from(rs.data)).toEqual([0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x28, 0x00, 0, 0, 0, 0]);
    expectGood(await run(target, cdb.tur()));
    expect(Array.from((await run(target, cdb.requestSense())).data.subarray(0, 3))).toEqual([0x70, 0, 0]);
  });

  it("lets INQUIRY, REQUEST SENSE and GET CONFIGURATION through a pending unit attention", async () => {
    const { drive, target } = emptyTarget();
    drive.insert(cdImage(20));
    expectGood(await run(target, cdb.inquiry()));
    expectGood(await run(target, cdb.getConfiguration()));
    expect(target.sense.unitAttentionPending).toBe(true);
    const rs = await run(target, cdb.requestSense()); // reports and clears it
    expect([rs.data[2], rs.data[12]]).toEqual([0x06, 0x28]);
    expectGood(await run(target, cdb.read10(0, 1)));
  });

  it("reports the unit attention before an unknown opcode, then the opcode error", async () => {
    const { drive, target } = emptyTarget();
    drive.insert(cdImage(20));
    expectCheck(await run(target, [0xff]), SENSE.NOT_READY_TO_READY_CHANGE);
    expectCheck(await run(target, [0xff]), SENSE.INVALID_COMMAND_OPERATION_CODE);
    expectCheck(await run(target, [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]), SENSE.INVALID_COMMAND_OPERATION_CODE); // WRITE(10)
  });

  it("keeps NOT READY for REQUEST SENSE after a failed medium command", async () => {
    const { target } = emptyTarget();
    expectCheck(await run(target, cdb.read10(0, 1)), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
    const rs = await run(target, cdb.requestSense(252));
    expect(rs.data.length).toBe(18);
    expect([rs.data[2], rs.data[12], rs.data[13]]).toEqual([0x02, 0x3a, 0x01]);
  });

  it("refuses descriptor-format sense and a short CDB", async () => {
    const { target } = cdTarget();
    expectCheck(await run(target, [0x03, 0x01, 0, 0, 18, 0]), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(target, [0x28, 0, 0, 0, 0, 0], { length: 6 }), SENSE.INVALID_FIELD_IN_CDB);
    expectCheck(await run(target, [], { length: 0 }), SENSE.INVALID_COMMAND_OPERATION_CODE);
  });

  it("queues POWER ON RESET behind a SCSI HBA, not behind ATAPI", async () => {
    const scsi = cdTarget({ transport: "scsi" }).target;
    scsi.reset("power-on");
    expectCheck(await run(scsi, cdb.tur()), SENSE.POWER_ON_RESET);
    expectGood(await run(scsi, cdb.tur()));
    scsi.reset("bus");
    expectCheck(await run(scsi, cdb.tur()), SENSE.BUS_RESET);
    const atapi = cdTarget().target;
    atapi.reset("power-on");
    expectGood(await run(atapi, cdb.tur()));
  });

  it("saves and restores its sense state and the tray lock", async () => {
    const { drive, target } = emptyTarget();
    drive.insert(cdImage(20));
    drive.setPrevent(true, false);
    const saved = JSON.parse(JSON.stringify(target.saveState())) as ReturnType<MmcTarget["saveState"]>;
    const other = new MmcTarget({ transport: "atapi", drive: new CdDrive({ medium: cdImage(20) }) });
    other.restoreState(saved);
    expect(event((await run(other, cdb.gesn())).data)).toBe(MEDIA_EVENT.NEW_MEDIA);
    expectCheck(await run(other, cdb.tur()), SENSE.NOT_READY_TO_READY_CHANGE);
    expect(other.drive.isLocked).toBe(true);
    function event(d: Uint8Array): number {
      return d[4]!;
    }
  });
});

describe("lock and eject", () => {
  it("a locked tray refuses the guest's eject; unlocked, the disc leaves and the tray opens", async () => {
    const { drive, target } = cdTarget();
    const events: string[] = [];
    drive.on((e) => events.push(e.type === "ejected" ? `ejected:${e.by}` : e.type));
    expectGood(await run(target, cdb.prevent(true)));
    expect(drive.isLocked).toBe(true);
    expectCheck(await run(target, cdb.startStop(true, false)), SENSE.MEDIUM_REMOVAL_PREVENTED);
    expect(drive.medium).toBeDefined();
    expectGood(await run(target, cdb.prevent(false)));
    expectGood(await run(target, cdb.startStop(true, false)));
    expect(drive.medium).toBeUndefined();
    expect(events).toEqual(["lock", "lock", "ejected:guest", "tray"]);
    expectCheck(await run(target, cdb.tur()), SENSE.MEDIUM_NOT_PRESENT_TRAY_OPEN);
    expectGood(await run(target, cdb.startStop(true, true))); // close the tray
    expectCheck(await run(target, cdb.tur()), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
  });

  it("the host's eject is refused while locked unless forced", async () => {
    const { drive, target } = cdTarget();
    await run(target, cdb.prevent(true));
    expect(drive.eject()).toBe(false);
    expectGood(await run(target, cdb.tur()));
    expect(drive.eject({ force: true })).toBe(true);
    expectCheck(await run(target, cdb.tur()), SENSE.MEDIUM_NOT_PRESENT_TRAY_CLOSED);
  });

  it("start/stop without LoEj and with a power condition do nothing", async () => {
    const { drive, target } = cdTarget();
    expectGood(await run(target, cdb.startStop(false, false)));
    expectGood(await run(target, [0x1b, 0, 0, 0, 0x32]));
    expect(drive.medium).toBeDefined();
  });

  it("a power-on reset releases the lock", () => {
    const { drive, target } = cdTarget();
    drive.setPrevent(true, false);
    target.reset("software");
    expect(drive.isLocked).toBe(true);
    target.reset("power-on");
    expect(drive.isLocked).toBe(false);
  });
});
