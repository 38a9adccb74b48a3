import { describe, expect, it } from "vitest";
import { byteCountLimit } from "./atapi.js";
import { STATUS } from "./task-file.js";
import { firstDifference, issue, makeDevice, until } from "./test-support.js";
import type { AtapiIo, AtapiPacketHandler } from "./transport.js";

const READY = STATUS.DRDY | STATUS.DSC;

/** A packet layer scripted per test: records CDBs, runs `body`. */
function handler(body: (cdb: Uint8Array, io: AtapiIo) => void | Promise<void>) {
  const cdbs: Uint8Array[] = [];
  const resets: string[] = [];
  const h: AtapiPacketHandler = {
    packet: (cdb, io) => {
      cdbs.push(cdb.slice());
      return body(cdb, io);
    },
    reset: (kind) => void resets.push(kind),
  };
  return { h, cdbs, resets };
}

function cdrom(body: (cdb: Uint8Array, io: AtapiIo) => void | Promise<void>) {
  const p = handler(body);
  return { ...p, ...makeDevice({ kind: "atapi", packetHandler: p.h }) };
}

const INQUIRY = new Uint8Array([0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0]);

describe("PACKET", () => {
  it("takes the 12-byte CDB by PIO (CoD, no interrupt) and hands it to the packet layer", async () => {
    const { dev, t, cdbs } = cdrom(async (_cdb, io) => {
      await io.dataIn(new Uint8Array(36).fill(7));
      io.complete({ ok: true });
    });
    t.setHostData(INQUIRY);
    const c = await issue(dev, t, { command: 0xa0, features: 0, lbaMid: 0x00, lbaHigh: 0x08 });
    expect(cdbs).toEqual([INQUIRY]);
    const cmd = t.pioOutBlocks[0]!;
    expect(cmd.length).toBe(12);
    expect(cmd.info).toEqual({ first: true, last: true, interrupt: false, packet: true });
    expect(cmd.count & 0x03).toBe(0x01);
    expect(cmd.status & STATUS.DRQ).toBe(STATUS.DRQ);
    expect(t.pioInBlocks.map((b) => [b.data.length, b.byteCount, b.count & 3, b.info.interrupt])).toEqual([[36, 36, 0x02, true]]);
    expect(c).toEqual({ status: READY, error: 0, interrupt: true });
    expect(dev.tf.count & 0x03).toBe(0x03); // status phase: IO | CoD
  });

  it("splits PIO data into blocks of at most the byte count limit", async () => {
    const data = new Uint8Array(2500).map((_, i) => i & 0xff);
    const { dev, t } = cdrom(async (_cdb, io) => {
      expect(io.byteCountLimit).toBe(1000);
      await io.dataIn(data);
      io.complete({ ok: true });
    });
    t.setHostData(INQUIRY);
    await issue(dev, t, { command: 0xa0, lbaMid: 1000 & 0xff, lbaHigh: 1000 >> 8 });
    expect(t.pioInBlocks.map((b) => b.byteCount)).toEqual([1000, 1000, 500]);
    expect(firstDifference(t.pioInData(), data)).toBe(-1);
  });

  it("moves thousands of tiny DRQ blocks without nesting when the transport answers inside pioIn", async () => {
    const data = new Uint8Array(0xfffe).map((_, i) => i * 13);
    const { dev, t, traces } = cdrom(async (_cdb, io) => {
      if (await io.dataIn(data)) io.complete({ ok: true });
    });
    t.pioMode = "sync";
    t.setHostData(INQUIRY);
    const c = await issue(dev, t, { command: 0xa0, lbaMid: 2, lbaHigh: 0 });
    expect(c.status).toBe(READY);
    expect(t.pioInBlocks.length).toBe(0xfffe / 2);
    expect(firstDifference(t.pioInData(), data)).toBe(-1);
    expect(traces).toEqual([]);
  });

  it("sanitises the byte count limit", () => {
    expect(byteCountLimit(0)).toBe(0xfffe);
    expect(byteCountLimit(0xffff)).toBe(0xfffe);
    expect(byteCountLimit(2049)).toBe(2048);
    expect(byteCountLimit(1)).toBe(2);
  });

  it("moves data by DMA when PACKET features bit 0 is set", async () => {
    const { dev, t } = cdrom(async (_cdb, io) => {
      expect(io.dma).toBe(true);
      expect(await io.dataIn(new Uint8Array(4096).fill(3))).toBe(true);
      io.complete({ ok: true });
    });
    t.setHostData(INQUIRY);
    const c = await issue(dev, t, { command: 0xa0, features: 0x01 });
    expect(c.status).toBe(READY);
    expect(t.dmaCalls.map((d) => d.length)).toEqual([4096]);
    expect(t.pioInBlocks.length).toBe(0);
  });

  it("receives data-out (MODE SELECT) by PIO", async () => {
    const got: Uint8Array[] = [];
    const { dev, t } = cdrom(async (_cdb, io) => {
      const buf = new Uint8Array(20);
      expect(await io.dataOut(buf)).toBe(true);
      got.push(buf);
      io.complete({ ok: true });
    });
    const host = new Uint8Array(32).map((_, i) => i);
    t.setHostData(host);
    await issue(dev, t, { command: 0xa0, lbaMid: 0xff, lbaHigh: 0 });
    expect(got[0]).toEqual(host.subarray(12, 32));
    expect(t.pioOutBlocks[1]).toMatchObject({ length: 20, byteCount: 20 });
    expect(t.pioOutBlocks[1]!.count & 3).toBe(0);
    expect(t.pioOutBlocks[1]!.info.interrupt).toBe(true);
  });

  it("reports CHECK CONDITION as ERR with the sense key in error bits 7:4", async () => {
    const { dev, t } = cdrom((_cdb, io) => io.complete({ ok: false, senseKey: 0x05, error: 0x04 }));
    t.setHostData(INQUIRY);
    const c = await issue(dev, t, { command: 0xa0 });
    expect(c).toEqual({ status: STATUS.DRDY | STATUS.ERR, error: 0x54, interrupt: true });
  });

  it("turns a throwing or rejecting packet layer into ABORTED COMMAND", async () => {
    for (const body of [
      () => {
        throw new Error("boom");
      },
      () => Promise.reject(new Error("late boom")),
    ]) {
      const { dev, t, traces } = cdrom(body);
      t.setHostData(INQUIRY);
      const c = await issue(dev, t, { command: 0xa0 });
      expect(c.error).toBe(0xb4);
      expect(traces.some((m) => m.includes("boom"))).toBe(true);
    }
  });

  it("ends a PACKET whose DMA comes up short, and tells the packet layer to stop", async () => {
    const results: boolean[] = [];
    const { dev, t } = cdrom(async (_cdb, io) => {
      results.push(await io.dataIn(new Uint8Array(4096)));
      io.complete({ ok: true }); // ignored: already finished
    });
    t.setHostData(INQUIRY);
    t.dmaCapacity = 2048;
    const c = await issue(dev, t, { command: 0xa0, features: 1 });
    expect(c).toMatchObject({ status: STATUS.DRDY | STATUS.ERR, dmaFault: "short" });
    await until(() => results.length === 1);
    expect(results).toEqual([false]);
    expect(t.completions.length).toBe(1);
  });

  it("resolves a waiting dataIn with false when the drive is reset, and tells the packet layer", async () => {
    const results: boolean[] = [];
    const { dev, t, resets } = cdrom(async (_cdb, io) => {
      results.push(await io.dataIn(new Uint8Array(100)));
    });
    t.setHostData(INQUIRY);
    t.pioMode = "manual";
    Object.assign(dev.tf, { command: 0xa0 });
    dev.execute();
    t.finishBlock(); // the command packet
    expect(t.pioInBlocks.length).toBe(1); // the data block now waits for the host
    dev.reset("software");
    await until(() => results.length === 1);
    expect(results).toEqual([false]);
    expect(resets).toContain("software");
    expect([dev.tf.lbaMid, dev.tf.lbaHigh]).toEqual([0x14, 0xeb]);
  });

  it("is aborted without a packet layer", async () => {
    const { dev, t } = makeDevice({ kind: "atapi" });
    expect((await issue(dev, t, { command: 0xa0 })).error).toBe(0x04);
  });
});
