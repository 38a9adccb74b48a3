import { describe, expect, it } from "vitest";
import { decodeFpdma } from "./ncq.js";
import { newTaskFile, STATUS } from "./task-file.js";
import { firstDifference, issue, makeDevice, MemoryDisk, TestTransport, until } from "./test-support.js";

const ERR = STATUS.DRDY | STATUS.ERR;

function fpdmaTf(command: number, tag: number, lba: number, count: number, fua = false) {
  const tf = newTaskFile();
  Object.assign(tf, {
    command,
    count: tag << 3,
    features: count & 0xff,
    hobFeatures: count >> 8 & 0xff,
    lbaLow: lba & 0xff,
    lbaMid: lba >>> 8 & 0xff,
    lbaHigh: lba >>> 16 & 0xff,
    hobLbaLow: Math.floor(lba / 2 ** 24) & 0xff,
    hobLbaMid: Math.floor(lba / 2 ** 32) & 0xff,
    device: 0x40 | (fua ? 0x80 : 0),
  });
  return tf;
}

function slot() {
  const t = new TestTransport();
  return t;
}

function ncqDisk(sectors = 10000) {
  const medium = new MemoryDisk(sectors).fillPattern();
  return { medium, ...makeDevice({ medium, chipset: "ahci", ncq: true }) };
}

describe("FPDMA decoding", () => {
  it("takes the tag from count 7:3, the sector count from features, the LBA from 48 bits, FUA from device bit 7", () => {
    expect(decodeFpdma(fpdmaTf(0x60, 17, 2 ** 33 + 9, 300, true))).toEqual({ tag: 17, write: false, lba: 2 ** 33 + 9, count: 300, fua: true, priority: 0 });
    expect(decodeFpdma(fpdmaTf(0x61, 31, 0, 0))?.count).toBe(65536);
    expect(decodeFpdma(fpdmaTf(0x61, 0, 0, 1))?.write).toBe(true);
    expect(decodeFpdma(fpdmaTf(0x25, 0, 0, 1))).toBeUndefined();
  });
});

describe("queued execution", () => {
  it("runs several queued reads and writes at once, each through its own transport", async () => {
    const { dev, medium } = ncqDisk();
    const a = slot();
    const b = slot();
    const w = slot();
    const data = new Uint8Array(4 * 512).fill(0x5a);
    w.setHostData(data);
    const results = await Promise.all([
      dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 1, 10, 3))!, a),
      dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 2, 500, 5))!, b),
      dev.executeQueued(decodeFpdma(fpdmaTf(0x61, 3, 2000, 4))!, w),
    ]);
    expect(results).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    expect(firstDifference(a.dmaInBytes(), medium.sector(10, 3))).toBe(-1);
    expect(firstDifference(b.dmaInBytes(), medium.sector(500, 5))).toBe(-1);
    expect(firstDifference(medium.sector(2000, 4), data)).toBe(-1);
    expect(dev.queuedInFlight).toBe(0);
  });

  it("flushes FUA writes", async () => {
    const { dev, medium } = ncqDisk();
    const t = slot();
    t.setHostData(new Uint8Array(512));
    await dev.executeQueued(decodeFpdma(fpdmaTf(0x61, 0, 1, 1))!, t);
    expect(medium.flushes).toBe(0);
    await dev.executeQueued(decodeFpdma(fpdmaTf(0x61, 0, 1, 1, true))!, t);
    expect(medium.flushes).toBe(1);
  });

  it("records an error in log page 10h, refuses new queued commands until the host reads it", async () => {
    const { dev, t, medium } = ncqDisk();
    medium.errors.push({ op: "read", lba: 77, kind: "io" });
    const r = await dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 9, 70, 10))!, slot());
    expect(r).toEqual({ ok: false, status: ERR, error: 0x40 });
    expect(dev.ncqLog.pending).toBe(true);
    const refused = await dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 4, 0, 1))!, slot());
    expect(refused).toMatchObject({ ok: false, error: 0x04 });
    await issue(dev, t, { command: 0x2f, lbaLow: 0x10, count: 1, lbaMid: 0, hobLbaMid: 0 });
    const page = t.pioInData();
    expect(page[0]).toBe(9); // tag, NQ clear
    expect([page[2], page[3]]).toEqual([ERR, 0x40]);
    expect(page[4]! | page[5]! << 8 | page[6]! << 16).toBe(77);
    expect(page[12]).toBe(10);
    expect(page.reduce((s, x) => s + x, 0) & 0xff).toBe(0);
    expect(dev.ncqLog.pending).toBe(false);
    medium.errors = [];
    expect(await dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 4, 0, 1))!, slot())).toEqual({ ok: true });
    // read again with no error pending: NQ set, so libata finds no failed tag
    await issue(dev, t, { command: 0x2f, lbaLow: 0x10, count: 1 });
    expect(t.pioInBlocks[1]!.data[0]).toBe(0x80);
  });

  it("answers IDNF beyond capacity and short PRDTs with ABRT, both logged", async () => {
    const { dev } = ncqDisk(100);
    expect(await dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 2, 99, 2))!, slot())).toEqual({ ok: false, status: ERR, error: 0x10 });
    dev.ncqLog.clear();
    const short = slot();
    short.dmaCapacity = 100;
    expect(await dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 3, 0, 2))!, short)).toEqual({ ok: false, status: ERR, error: 0x04, dmaFault: "short" });
    expect(dev.ncqLog.readPage()[0]).toBe(3);
  });

  it("is refused when the attachment does not queue", async () => {
    const { dev } = makeDevice({ medium: new MemoryDisk(100) });
    expect(await dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 1, 0, 1))!, slot())).toMatchObject({ ok: false, error: 0x04 });
    expect(dev.ncqLog.pending).toBe(false);
  });

  it("voids queued commands on reset", async () => {
    const { dev, medium } = ncqDisk();
    medium.hold = true;
    const p = dev.executeQueued(decodeFpdma(fpdmaTf(0x60, 1, 0, 4))!, slot());
    await until(() => medium.heldCount > 0);
    expect(dev.queuedInFlight).toBe(1);
    dev.reset("hardware");
    expect(dev.queuedInFlight).toBe(0);
    medium.release();
    expect(await p).toMatchObject({ ok: false });
    expect(dev.queuedInFlight).toBe(0);
  });
});
