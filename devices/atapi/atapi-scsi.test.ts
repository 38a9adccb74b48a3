/**
 * The emulated CD-ROM behind the real ATA core: PACKET in, DRQ blocks / DMA and task-file status
 * out, as an IDE or AHCI front end sees it.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { firstDifference, issue, makeDevice, until } from "../ata/test-support.js";
import { STATUS as ATA_STATUS } from "../ata/task-file.js";
import { fixedSense, SENSE, STATUS } from "../scsi/sense.js";
import { cdb, cdImage, cdPattern } from "../scsi/test-support.js";
import { mode1Sector } from "../scsi/cd-sector.js";
import { atapiResult, createAtapiCdrom } from "./atapi-scsi.js";
import { concatBytes } from "../scsi/bytes.js";

const READY = ATA_STATUS.DRDY | ATA_STATUS.DSC;
const ERR = ATA_STATUS.DRDY | ATA_STATUS.ERR;

function packet(bytes: number[]): Uint8Array {
  const p = new Uint8Array(12);
  p.set(bytes.slice(0, 12));
  return p;
}

function cdrom(sectors: number | null = 64) {
  const cd = createAtapiCdrom(sectors === null ? {} : { medium: cdImage(sectors) });
  const { dev, t, traces } = makeDevice({ kind: "atapi", packetHandler: cd.handler });
  /** Send one packet; PIO with this byte count limit, or DMA. */
  const send = async (bytes: number[], opts: { limit?: number; dma?: boolean; hostData?: Uint8Array } = {}) => {
    const inBefore = t.pioInBlocks.length;
    const dmaBefore = t.dmaInData.length;
    const p = packet(bytes);
    const host = new Uint8Array(12 + (opts.hostData?.length ?? 0));
    host.set(p);
    if (opts.hostData) host.set(opts.hostData, 12);
    t.setHostData(host);
    const limit = opts.limit ?? 0xfffe;
    const c = await issue(dev, t, { command: 0xa0, features: opts.dma ? 1 : 0, lbaMid: limit & 0xff, lbaHigh: limit >> 8 });
    const blocks = t.pioInBlocks.slice(inBefore);
    const data = opts.dma ? concatBytes(t.dmaInData.slice(dmaBefore)) : concatBytes(blocks.map((b) => b.data));
    return { c, data, blocks };
  };
  return { ...cd, dev, t, traces, send };
}

describe("ATAPI CD-ROM on the ATA core", () => {
  it("answers INQUIRY by PIO with GOOD status", async () => {
    const { send } = cdrom();
    const { c, data } = await send(cdb.inquiry(36));
    expect(c).toEqual({ status: READY, error: 0, interrupt: true });
    expect(data[0]).toBe(0x05);
    expect(String.fromCharCode(...data.subarray(8, 36))).toBe("VBOX    CD-ROM          1.0 ");
  });

  it("puts the sense key in error bits 7:4 and keeps the sense for REQUEST SENSE", async () => {
    const { send, drive } = cdrom(null);
    let r = await send(cdb.tur());
    expect(r.c).toMatchObject({ status: ERR, error: 0x20 }); // NOT READY
    r = await send(cdb.requestSense());
    expect(r.c.status).toBe(READY);
    expect([r.data[2], r.data[12], r.data[13]]).toEqual([0x02, 0x3a, 0x01]);

    drive.insert(cdImage(16));
    expect((await send(cdb.tur())).c).toMatchObject({ status: ERR, error: 0x60 }); // UNIT ATTENTION
    r = await send(cdb.requestSense());
    expect([r.data[2], r.data[12], r.data[13]]).toEqual([0x06, 0x28, 0x00]);
    expect((await send(cdb.tur())).c).toEqual({ status: READY, error: 0, interrupt: true });
    expect((await send([0xff])).c).toMatchObject({ status: ERR, error: 0x50 }); // ILLEGAL REQUEST
  });

  it("reads sectors by PIO in blocks of at most the byte count limit", async () => {
    const { send } = cdrom();
    const { c, data, blocks } = await send(cdb.read10(3, 5), { limit: 4096 });
    expect(c.status).toBe(READY);
    expect(blocks.map((b) => b.byteCount)).toEqual([4096, 4096, 2048]);
    expect(firstDifference(data, concatBytes([3, 4, 5, 6, 7].map(cdPattern)))).toBe(-1);
  });

  it("reads raw sectors by DMA", async () => {
    const { send } = cdrom();
    const { c, data } = await send(cdb.readCd(20, 3, 0xf8), { dma: true });
    expect(c.status).toBe(READY);
    expect(data.length).toBe(3 * 2352);
    expect(firstDifference(data.subarray(2352, 4704), mode1Sector(21, cdPattern(21)))).toBe(-1);
  });

  it("reports a read past the end as ILLEGAL REQUEST without data", async () => {
    const { send } = cdrom(10);
    const r = await send(cdb.read10(9, 2));
    expect(r.c).toMatchObject({ status: ERR, error: 0x50 });
    expect(r.data.length).toBe(0);
    expect((await send(cdb.requestSense())).data[12]).toBe(0x21);
  });

  it("ejects through START STOP UNIT and tells the host layer it was the guest", async () => {
    const { send, drive } = cdrom();
    const seen: string[] = [];
    drive.on((e) => e.type === "ejected" && seen.push(e.by));
    expect((await send(cdb.prevent(true))).c.status).toBe(READY);
    expect((await send(cdb.startStop(true, false))).c).toMatchObject({ status: ERR, error: 0x50 });
    expect((await send(cdb.prevent(false))).c.status).toBe(READY);
    expect((await send(cdb.startStop(true, false))).c.status).toBe(READY);
    expect(seen).toEqual(["guest"]);
    expect((await send(cdb.tur())).c.error).toBe(0x20);
  });

  it("takes MODE SELECT parameter data by PIO", async () => {
    const { send } = cdrom();
    const r = await send([0x55, 0x10, 0, 0, 0, 0, 0, 0, 16, 0], { hostData: new Uint8Array(16) });
    expect(r.c.status).toBe(READY);
  });

  it("passes ATA resets to the target: SRST clears sense, a power-on reset releases the lock", async () => {
    const { dev, send, drive } = cdrom();
    await send(cdb.read10(1000, 1));
    await send(cdb.prevent(true));
    await send(cdb.read10(1000, 1));
    dev.reset("software");
    expect((await send(cdb.requestSense())).data[2]).toBe(0);
    expect(drive.isLocked).toBe(true);
    dev.reset("power-on");
    expect(drive.isLocked).toBe(false);
  });

  it("maps SCSI results to ATAPI results, ILI and EOM into error bits 0 and 1", () => {
    expect(atapiResult({ status: STATUS.GOOD })).toEqual({ ok: true });
    expect(atapiResult({ status: STATUS.CHECK_CONDITION, sense: fixedSense({ ...SENSE.ILLEGAL_MODE_FOR_THIS_TRACK, ili: true, eom: true }) })).toEqual({ ok: false, senseKey: 0x05, error: 0x03 });
    expect(atapiResult({ status: STATUS.BUSY })).toEqual({ ok: false, senseKey: 0x0b });
  });

  it("survives arbitrary command packets: one completion each, sane status, no traces of failure", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 12, maxLength: 12 }), dma: fc.boolean(), limit: fc.integer({ min: 0, max: 0xffff }) }), { minLength: 1, maxLength: 5 }),
        fc.boolean(),
        async (cmds, withDisc) => {
          const { send, t, traces, target } = cdrom(withDisc ? 32 : null);
          for (const cmd of cmds) {
            if (cmd.bytes[0] === 0x28 || cmd.bytes[0] === 0xa8 || cmd.bytes[0] === 0xbe) cmd.bytes[2] = cmd.bytes[3] = cmd.bytes[6] = cmd.bytes[7] = 0;
            const n = t.completions.length;
            const { c } = await send(cmd.bytes, { dma: cmd.dma, limit: cmd.limit, hostData: new Uint8Array(300) });
            expect(t.completions.length).toBe(n + 1);
            expect(c.status & (ATA_STATUS.BSY | ATA_STATUS.DRQ)).toBe(0);
            if (c.status & ATA_STATUS.ERR) expect(c.error >> 4).not.toBe(0);
          }
          await until(() => true);
          expect(traces.filter((m) => m.includes("packet layer failed"))).toEqual([]);
          expect(target.stats.internalErrors).toBe(0);
        },
      ),
      { numRuns: 150 },
    );
  });
});
