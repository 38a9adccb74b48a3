import { describe, expect, it } from "vitest";
import { defaultGeometry, serialFromUuid, type AtaDeviceConfig } from "./config.js";
import { bytesToWords, getString } from "./identify.js";
import { issue, makeDevice, MemoryDisk, SparseDisk } from "./test-support.js";
import { STATUS } from "./task-file.js";

async function identify(config: Partial<AtaDeviceConfig> = {}, before?: (dev: ReturnType<typeof makeDevice>) => Promise<void>) {
  const d = makeDevice({ medium: new MemoryDisk(20000), ...config });
  if (before) await before(d);
  const from = d.t.pioInBlocks.length;
  const c = await issue(d.dev, d.t, { command: config.kind === "atapi" ? 0xa1 : 0xec });
  expect(c.status & STATUS.ERR).toBe(0);
  const bytes = d.t.pioInBlocks[from]!.data;
  return { bytes, w: bytesToWords(bytes), ...d };
}

function sum(bytes: Uint8Array): number {
  return bytes.reduce((a, b) => a + b, 0) & 0xff;
}

describe("IDENTIFY DEVICE", () => {
  it("reports LBA28 and LBA48 capacity (words 60-61, 100-103)", async () => {
    const { w } = await identify({ medium: new MemoryDisk(123457) });
    expect(w[60]! | w[61]! << 16).toBe(123457);
    expect(w[100]! + w[101]! * 0x10000 + w[102]! * 2 ** 32 + w[103]! * 2 ** 48).toBe(123457);
  });

  it("caps words 60-61 at 0FFFFFFFh for a disk beyond 128 GiB and reports the rest in 100-103", async () => {
    const sectors = 2 ** 40 + 12345; // 512 TiB
    const { w } = await identify({ medium: new SparseDisk(sectors * 512) });
    expect(w[60]! | w[61]! << 16).toBe(0x0fffffff);
    expect([w[100], w[101], w[102], w[103]]).toEqual([12345 & 0xffff, 0, 0x100, 0]);
    expect(w[1]).toBe(16383); // default CHS capped
    expect(w[3]).toBe(16);
    expect(w[6]).toBe(63);
  });

  it("has a valid checksum and signature in word 255", async () => {
    for (const cfg of [{}, { discard: true, nonRotational: true }, { chipset: "ahci", ncq: true } as const]) {
      const { bytes } = await identify(cfg);
      expect(bytes[510]).toBe(0xa5);
      expect(sum(bytes)).toBe(0);
    }
  });

  it("stores strings byte-swapped and space-padded", async () => {
    const { bytes, w } = await identify({ serial: "VB12345678-9abcdef0", model: "VBOX HARDDISK", firmware: "1.0" });
    expect(String.fromCharCode(bytes[20]!, bytes[21]!)).toBe("BV"); // word 10: 'V' in the high byte
    expect(getString(w, 10, 20)).toBe("VB12345678-9abcdef0");
    expect(getString(w, 27, 40)).toBe("VBOX HARDDISK");
    expect(getString(w, 23, 8)).toBe("1.0");
    expect(w[46]).toBe(0x2020); // padding
  });

  it("makes VirtualBox-style serials from a UUID", () => {
    expect(serialFromUuid("0e3d5a2c-1111-2222-3333-1122aabbccdd")).toBe("VB0e3d5a2c-ddccbbaa");
    expect(serialFromUuid("not a uuid")).toBe("VB00000000-00000000");
  });

  it("computes the default geometry as 16 heads / 63 sectors", () => {
    expect(defaultGeometry(16 * 63 * 100 + 5)).toEqual({ cylinders: 100, heads: 16, sectors: 63 });
    expect(defaultGeometry(10)).toEqual({ cylinders: 1, heads: 16, sectors: 63 });
    expect(defaultGeometry(2 ** 32).cylinders).toBe(16383);
  });

  it("advertises PIO 3-4, MWDMA 0-2 and UDMA per chipset", async () => {
    const piix3 = (await identify({ chipset: "piix3" })).w;
    expect(piix3[64]).toBe(0x03);
    expect(piix3[63]! & 0xff).toBe(0x07);
    expect(piix3[88]).toBe(0);
    expect(piix3[63]! >> 8).toBe(1 << 2); // MWDMA2 selected when there is no UDMA
    const piix4 = (await identify({ chipset: "piix4" })).w;
    expect(piix4[88]! & 0xff).toBe(0x07);
    expect(piix4[88]! >> 8).toBe(1 << 2); // UDMA2 selected
    expect(piix4[63]! >> 8).toBe(0);
    const ahci = (await identify({ chipset: "ahci" })).w;
    expect(ahci[88]! & 0xff).toBe(0x7f);
    expect(piix4[53]! & 0x06).toBe(0x06);
  });

  it("reflects the transfer mode chosen by SET FEATURES in words 63 and 88", async () => {
    const { w } = await identify({ chipset: "ich6" }, async ({ dev, t }) => {
      await issue(dev, t, { command: 0xef, features: 0x03, count: 0x21 }); // MWDMA1
    });
    expect(w[63]! >> 8).toBe(1 << 1);
    expect(w[88]! >> 8).toBe(0);
    const u = await identify({ chipset: "ich6" }, async ({ dev, t }) => {
      await issue(dev, t, { command: 0xef, features: 0x03, count: 0x45 }); // UDMA5
    });
    expect(u.w[88]! >> 8).toBe(1 << 5);
    expect(u.w[63]! >> 8).toBe(0);
  });

  it("reports write cache, flush, LBA48 and SMART support and state", async () => {
    const { w } = await identify();
    expect(w[82]! & (1 << 5 | 1 << 0)).toBe(1 << 5 | 1 << 0);
    expect(w[85]! & (1 << 5 | 1 << 0)).toBe(1 << 5 | 1 << 0);
    expect(w[83]! & 0xf400).toBe(0x7400); // bit 14 set, 13 flush ext, 12 flush, 10 LBA48
    expect(w[86]! & 0x3400).toBe(0x3400);
    expect(w[84]! & 0xc000).toBe(0x4000);
    expect(w[87]! & 0xc000).toBe(0x4000);
    const off = await identify({}, async ({ dev, t }) => {
      await issue(dev, t, { command: 0xef, features: 0x82 });
      await issue(dev, t, { command: 0xb0, features: 0xd9, lbaMid: 0x4f, lbaHigh: 0xc2 });
    });
    expect(off.w[82]! & (1 << 5 | 1)).toBe(1 << 5 | 1); // still supported
    expect(off.w[85]! & (1 << 5 | 1)).toBe(0); // no longer enabled
  });

  it("claims TRIM and deterministic read only when discard is on", async () => {
    const plain = (await identify()).w;
    expect(plain[169]).toBe(0);
    expect(plain[69]).toBe(0);
    const on = (await identify({ discard: true })).w;
    expect(on[169]! & 1).toBe(1);
    expect(on[69]! & (1 << 14)).toBe(1 << 14);
    expect(on[69]! & (1 << 5)).toBe(0);
    expect(on[80]! >> 7 & 1).toBe(1); // ATA-7: libata wants major version >= 7 for TRIM
    const zeroes = (await identify({ discard: true, medium: new MemoryDisk(1000, { discardZeroes: true }) })).w;
    expect(zeroes[69]! & (1 << 5)).toBe(1 << 5);
  });

  it("reports non-rotational media in word 217 only when asked", async () => {
    expect((await identify()).w[217]).toBe(0);
    expect((await identify({ nonRotational: true })).w[217]).toBe(1);
    expect((await identify({ rotationRate: 7200 })).w[217]).toBe(7200);
  });

  it("reports in word 93 whether the other device on the cable answered (SeaBIOS skips an absent slave)", async () => {
    const alone = (await identify({ chipset: "piix4" })).w[93]!;
    expect(alone & 0xdf61).toBe(0x4041); // device 0 responds for device 1: no slave to probe
    const paired = (await identify({ chipset: "piix4", peerPresent: true })).w[93]!;
    expect(paired & 0x0070).toBe(0x0038 & 0x0070); // PDIAG- and DASP- seen, not "responds for device 1"
    expect(paired & 0x0040).toBe(0);
    const slave = (await identify({ chipset: "piix4", deviceNumber: 1, peerPresent: true })).w[93]!;
    expect(slave & 0x1f00).toBe(0x0b00);
    expect(slave & 0x00ff).toBe(0);
  });

  it("advertises NCQ (words 75/76) only when the transport queues, and SATA only on SATA", async () => {
    const pata = (await identify({ chipset: "ich6" })).w;
    expect(pata[75]).toBe(0);
    expect(pata[76]).toBe(0);
    expect(pata[93]! & 0x6000).toBe(0x6000); // 80-wire cable for UDMA > 2
    expect((await identify({ chipset: "piix4" })).w[93]! & 0x2000).toBe(0);
    const sata = (await identify({ chipset: "ahci" })).w;
    expect(sata[76]! & 0x0006).toBe(0x0006);
    expect(sata[76]! & 0x0100).toBe(0);
    expect(sata[75]).toBe(0);
    expect(sata[93]).toBe(0);
    const ncq = (await identify({ chipset: "ahci", ncq: true, ncqDepth: 32 })).w;
    expect(ncq[76]! & 0x0100).toBe(0x0100);
    expect(ncq[75]).toBe(31);
  });

  it("reports the multiple-count maximum (word 47) and setting (word 59)", async () => {
    const { w } = await identify({}, async ({ dev, t }) => {
      await issue(dev, t, { command: 0xc6, count: 8 });
    });
    expect(w[47]).toBe(0x8010);
    expect(w[59]).toBe(0x0108);
    expect((await identify()).w[59]).toBe(0);
  });

  it("reports the current CHS translation after INITIALIZE DEVICE PARAMETERS", async () => {
    const { w } = await identify({ medium: new MemoryDisk(20000) }, async ({ dev, t }) => {
      await issue(dev, t, { command: 0x91, count: 32, device: 0x07 });
    });
    expect([w[54], w[55], w[56]]).toEqual([Math.floor(20000 / (8 * 32)), 8, 32]);
    expect(w[57]! | w[58]! << 16).toBe(Math.floor(20000 / 256) * 256);
    expect(w[53]! & 1).toBe(1);
  });

  it("never claims features the core does not implement", async () => {
    const { w } = await identify({ chipset: "ahci", ncq: true, discard: true, nonRotational: true });
    expect(w[82]! & (1 << 1 | 1 << 10)).toBe(0); // no security, no HPA
    expect(w[83]! & (1 << 3 | 1 << 5)).toBe(0); // no APM, no PUIS
    expect(w[84]! & (1 << 0 | 1 << 1 | 1 << 6)).toBe(0); // no SMART error log/self-test, no FUA
    expect(w[86]! & (1 << 15)).toBe(0); // words 119/120 (READ LOG DMA EXT, sense data ...) not claimed
    expect(w[48]).toBe(0); // no trusted computing
    expect(w[77]).toBe(0);
    expect(w[78]).toBe(0);
    expect(w[62]).toBe(0); // no single-word DMA
  });
});

describe("IDENTIFY PACKET DEVICE", () => {
  it("describes a removable CD/DVD drive with 12-byte packets", async () => {
    const { bytes, w } = await identify({ kind: "atapi", medium: undefined, serial: "VBabc" });
    expect(w[0]).toBe(0x85c0);
    expect(getString(w, 27, 40)).toBe("VBOX CD-ROM");
    expect(getString(w, 10, 20)).toBe("VBabc");
    expect(w[82]! & (1 << 4 | 1 << 9)).toBe(1 << 4 | 1 << 9);
    expect(bytes[510]).toBe(0xa5);
    expect(sum(bytes)).toBe(0);
  });

  it("is aborted by a disk, and IDENTIFY DEVICE is aborted by a packet device", async () => {
    const disk = makeDevice({ medium: new MemoryDisk(100) });
    const c = await issue(disk.dev, disk.t, { command: 0xa1 });
    expect(c.status & STATUS.ERR).toBe(STATUS.ERR);
    expect(c.error).toBe(0x04);
    const cd = makeDevice({ kind: "atapi" });
    const c2 = await issue(cd.dev, cd.t, { command: 0xec });
    expect(c2.error).toBe(0x04);
    expect([cd.dev.tf.lbaMid, cd.dev.tf.lbaHigh]).toEqual([0x14, 0xeb]); // signature left for the host
  });
});
