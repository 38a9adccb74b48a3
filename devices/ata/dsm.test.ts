import { describe, expect, it } from "vitest";
import { encodeTrimRanges, parseTrimRanges } from "./dsm.js";
import { STATUS } from "./task-file.js";
import { issue, makeDevice, MemoryDisk } from "./test-support.js";

const READY = STATUS.DRDY | STATUS.DSC;
const ABRT = 0x04;

function trimRegs(blocks: number, features = 0x01) {
  return { command: 0x06, features, hobFeatures: 0, count: blocks & 0xff, hobCount: blocks >> 8, device: 0x40 };
}

describe("DATA SET MANAGEMENT / TRIM", () => {
  it("parses 8-byte entries: 48-bit LBA, 16-bit count, skipping empty ones", () => {
    const payload = encodeTrimRanges([{ lba: 2 ** 40 + 5, count: 0xffff }, { lba: 3, count: 0 }, { lba: 7, count: 2 }]);
    expect(payload.length).toBe(512);
    expect(parseTrimRanges(payload)).toEqual([{ lba: 2 ** 40 + 5, count: 0xffff }, { lba: 7, count: 2 }]);
    // byte layout: LBA little-endian in bytes 0-5, count in 6-7
    const one = encodeTrimRanges([{ lba: 0x0102030405, count: 0x0a0b }]);
    expect([...one.subarray(0, 8)]).toEqual([0x05, 0x04, 0x03, 0x02, 0x01, 0x00, 0x0b, 0x0a]);
  });

  it("discards the ranges on the medium when the attachment allows discard", async () => {
    const medium = new MemoryDisk(10000, { discardZeroes: true }).fillPattern();
    const { dev, t } = makeDevice({ medium, discard: true });
    t.setHostData(encodeTrimRanges([{ lba: 100, count: 8 }, { lba: 5000, count: 300 }]));
    const c = await issue(dev, t, trimRegs(1));
    expect(c).toEqual({ status: READY, error: 0, interrupt: true });
    expect(t.dmaCalls).toEqual([{ direction: "out", length: 512, status: READY | STATUS.DRQ }]);
    expect(medium.discards).toEqual([
      { offset: 100 * 512, length: 8 * 512 },
      { offset: 5000 * 512, length: 300 * 512 },
    ]);
  });

  it("is aborted when discard is off, without moving data", async () => {
    const medium = new MemoryDisk(10000);
    const { dev, t } = makeDevice({ medium });
    t.setHostData(encodeTrimRanges([{ lba: 1, count: 1 }]));
    const c = await issue(dev, t, trimRegs(1));
    expect(c.error).toBe(ABRT);
    expect(t.dmaCalls.length).toBe(0);
    expect(medium.discards.length).toBe(0);
  });

  it("aborts without the TRIM bit, with 0 or too many blocks, and for ranges beyond capacity", async () => {
    const medium = new MemoryDisk(1000);
    const { dev, t } = makeDevice({ medium, discard: true, maxDsmBlocks: 2 });
    expect((await issue(dev, t, trimRegs(1, 0x00))).error).toBe(ABRT);
    expect((await issue(dev, t, trimRegs(0))).error).toBe(ABRT);
    expect((await issue(dev, t, trimRegs(3))).error).toBe(ABRT);
    t.setHostData(encodeTrimRanges([{ lba: 10, count: 1 }, { lba: 990, count: 20 }]));
    expect((await issue(dev, t, trimRegs(1))).error).toBe(ABRT);
    expect(medium.calls).toEqual([]); // checked before anything is discarded
    t.setHostData(encodeTrimRanges([{ lba: 990, count: 10 }], 2));
    expect((await issue(dev, t, trimRegs(2))).status).toBe(READY);
    expect(medium.discards).toEqual([{ offset: 990 * 512, length: 10 * 512 }]);
  });

  it("reports a failing discard as ABRT", async () => {
    const medium = new MemoryDisk(1000);
    medium.errors.push({ op: "discard", kind: "io" });
    const { dev, t } = makeDevice({ medium, discard: true });
    t.setHostData(encodeTrimRanges([{ lba: 1, count: 1 }]));
    expect((await issue(dev, t, trimRegs(1))).error).toBe(ABRT);
  });
});
