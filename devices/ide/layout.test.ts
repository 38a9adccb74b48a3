import { describe, expect, it } from "vitest";
import { TestHost } from "../../host-adapter/testbench/index.js";
import { MemoryDisk } from "../ata/test-support.js";
import type { AtapiIo, AtapiResult } from "../ata/transport.js";
import { IdeController } from "./controller.js";
import { defaultIdeLayout } from "./layout.js";
import { NoMediumAtapi } from "./no-medium.js";

describe("defaultIdeLayout", () => {
  it("puts the CD drive on the secondary master and disks on primary master, primary slave, secondary slave", () => {
    const d = [new MemoryDisk(8), new MemoryDisk(8), new MemoryDisk(8)];
    const l = defaultIdeLayout({ disks: d });
    expect(l.primary.master).toEqual({ kind: "ata", medium: d[0] });
    expect(l.primary.slave).toEqual({ kind: "ata", medium: d[1] });
    expect(l.secondary.master?.kind).toBe("atapi");
    expect(l.secondary.master?.packetHandler).toBeInstanceOf(NoMediumAtapi);
    expect(l.secondary.slave).toEqual({ kind: "ata", medium: d[2] });
    expect(() => defaultIdeLayout({ disks: [...d, new MemoryDisk(8)] })).toThrow(RangeError);
  });

  it("without a CD drive the secondary master takes the third disk; drive configs pass through", () => {
    const d = [new MemoryDisk(8), new MemoryDisk(8), new MemoryDisk(8), new MemoryDisk(8)];
    const l = defaultIdeLayout({ disks: [d[0]!, { kind: "ata", medium: d[1]!, model: "SECOND" }, d[2]!, d[3]!], cdrom: false });
    expect(l.primary.slave).toEqual({ kind: "ata", medium: d[1], model: "SECOND" });
    expect(l.secondary.master).toEqual({ kind: "ata", medium: d[2] });
    expect(l.secondary.slave).toEqual({ kind: "ata", medium: d[3] });
  });

  it("takes a packet layer for the CD drive", () => {
    const h = new NoMediumAtapi({ product: "DVD" });
    expect(defaultIdeLayout({ cdrom: h }).secondary.master).toEqual({ kind: "atapi", packetHandler: h });
  });

  it("builds a working controller", () => {
    const host = new TestHost();
    const ide = new IdeController(host, { chipset: "ich6", ...defaultIdeLayout({ disks: [new MemoryDisk(64)] }) });
    expect(ide.device(0, 0)?.kind).toBe("ata");
    expect(ide.device(1, 0)?.kind).toBe("atapi");
    expect(ide.device(0, 1)).toBeUndefined();
  });
});

describe("NoMediumAtapi", () => {
  const run = async (h: NoMediumAtapi, cdb: number[]) => {
    const data: Uint8Array[] = [];
    let result: AtapiResult | undefined;
    const io: AtapiIo = {
      dma: false,
      byteCountLimit: 0xfffe,
      dataIn: (d) => (data.push(d.slice()), Promise.resolve(true)),
      dataOut: () => Promise.resolve(true),
      complete: (r) => void (result = r),
    };
    const c = new Uint8Array(12);
    c.set(cdb);
    await h.packet(c, io);
    return { data, result };
  };

  it("answers INQUIRY within the allocation length and refuses VPD pages", async () => {
    const h = new NoMediumAtapi();
    const r = await run(h, [0x12, 0, 0, 0, 5]);
    expect(r.data[0]).toEqual(new Uint8Array([0x05, 0x80, 0x05, 0x32, 31]));
    expect(r.result).toEqual({ ok: true });
    expect((await run(h, [0x12, 1, 0x80, 0, 255])).result).toEqual({ ok: false, senseKey: 5 });
  });

  it("reports no medium for medium commands, keeps the sense for REQUEST SENSE, then clears it", async () => {
    const h = new NoMediumAtapi();
    expect((await run(h, [0x25])).result).toEqual({ ok: false, senseKey: 2 });
    const s = await run(h, [0x03, 0, 0, 0, 18]);
    expect([s.data[0]![0], s.data[0]![2], s.data[0]![12], s.data[0]![13]]).toEqual([0x70, 2, 0x3a, 0]);
    const again = await run(h, [0x03, 0, 0, 0, 18]);
    expect(again.data[0]![2]).toBe(0);
    expect((await run(h, [0xff])).result).toEqual({ ok: false, senseKey: 5 });
    expect((await run(h, [0x1e, 0, 0, 0, 1])).result).toEqual({ ok: true });
  });

  it("answers a polled GET EVENT STATUS NOTIFICATION for the media class: no event, no disc", async () => {
    const h = new NoMediumAtapi();
    const r = await run(h, [0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8]);
    expect(r.data[0]).toEqual(new Uint8Array([0, 6, 0x04, 0x10, 0, 0, 0, 0]));
    expect(r.result).toEqual({ ok: true });
    expect((await run(h, [0x4a, 0x00, 0, 0, 0x10, 0, 0, 0, 8])).result).toEqual({ ok: false, senseKey: 5 });
  });
});
