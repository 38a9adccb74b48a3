import { describe, expect, it } from "vitest";
import { PciDriver, TestHost } from "../../host-adapter/testbench/index.js";
import { MemoryDisk } from "../ata/test-support.js";
import { CFG, CHIPSETS, type IdeChipset } from "./chipset.js";
import { defaultIdeLayout } from "./layout.js";
import { IdeController } from "./controller.js";
import { BM_BASE, rig } from "./test-setup.js";

const CHIPSET_LIST: IdeChipset[] = ["piix3", "piix4", "ich6"];

describe("IDE PCI function", () => {
  it.each(CHIPSET_LIST)("%s: identity, class 01:01 prog-if 80h, at 00:01.1, interrupt pin 0", (chipset) => {
    const host = new TestHost();
    const { ide } = rig(host, { chipset, noPciSetup: true });
    expect(ide.pci.devfn).toBe(0x09);
    const drv = new PciDriver(host, ide.pci.devfn);
    expect(drv.vendorId).toBe(0x8086);
    expect(drv.deviceId).toBe(CHIPSETS[chipset].deviceId);
    expect(drv.classCode).toBe(0x010180);
    expect(drv.configRead(0x08, 1)).toBe(CHIPSETS[chipset].revision);
    expect(drv.configRead(0x3d, 1)).toBe(0);
    expect(drv.configRead(0x2c, 4)).toBe(0); // no subsystem IDs, as the real part
    expect([0x7010, 0x7111, 0x269e]).toContain(drv.deviceId);
  });

  it("implements only BAR4: 16 I/O ports; BAR0-3 read 0 and ignore writes", () => {
    const host = new TestHost();
    const { ide } = rig(host, { noPciSetup: true });
    const drv = new PciDriver(host, ide.pci.devfn);
    for (let i = 0; i < 4; i++) {
      expect(drv.sizeBar(i)).toBeUndefined();
      drv.configWrite(0x10 + 4 * i, 4, 0x1f1);
      expect(drv.configRead(0x10 + 4 * i, 4)).toBe(0);
    }
    expect(drv.sizeBar(4)).toEqual({ kind: "io", size: 16 });
    expect(drv.sizeBar(5)).toBeUndefined();
    const bars = drv.setup({ busMaster: true });
    expect(bars).toEqual([{ index: 4, kind: "io", size: 16, base: 0xc000 }]);
    expect(ide.busMasterBase).toBe(0xc000);
  });

  it("decodes the legacy ports without any BAR assigned (compatibility mode)", () => {
    const host = new TestHost();
    rig(host, { noPciSetup: true });
    expect(host.in8(0x1f7)).toBe(0x50); // DRDY | DSC
    expect(host.in8(0x3f6)).toBe(0x50);
    expect(host.in8(0x177)).toBe(0x00); // ATAPI drive after reset
    expect(host.unclaimedPortReads).toBe(0);
  });

  it("moves the bus master registers with BAR4", () => {
    const host = new TestHost();
    const { ide } = rig(host);
    host.out32(BM_BASE + 4, 0x123458);
    host.configWrite(ide.pci.devfn, 0x20, 4, 0xd001);
    expect(host.in32(0xd004)).toBe(0x123458);
    expect(host.in32(BM_BASE + 4)).toBe(0xffffffff); // nothing there any more
  });

  it.each(CHIPSET_LIST)("%s: IDETIM presets the decode enable bits (ata_piix's port enable test)", (chipset) => {
    const host = new TestHost();
    const { ide } = rig(host, { chipset });
    const f = ide.pci.devfn;
    expect(host.configRead(f, 0x41, 1) & 0x80).toBe(0x80);
    expect(host.configRead(f, 0x43, 1) & 0x80).toBe(0x80);
    host.configWrite(f, CFG.IDETIM_PRIMARY, 2, 0xffff);
    expect(host.configRead(f, CFG.IDETIM_PRIMARY, 2)).toBe(0xf3ff); // bits 11:10 reserved
    host.configWrite(f, CFG.SIDETIM, 1, 0xa5);
    expect(host.configRead(f, CFG.SIDETIM, 1)).toBe(0xa5);
  });

  it("UDMA registers exist on PIIX4 and ICH6 only; IDE_CONFIG on ICH6 only, reporting 80-wire cables", () => {
    const regs = (chipset: IdeChipset, cable80?: boolean) => {
      const host = new TestHost();
      const ide = new IdeController(host, { chipset, cable80, ...defaultIdeLayout({ disks: [new MemoryDisk(64)] }) });
      const f = ide.pci.devfn;
      const before = host.configRead(f, CFG.IDE_CONFIG, 2);
      host.configWrite(f, CFG.UDMACTL, 1, 0xff);
      host.configWrite(f, CFG.UDMATIM, 2, 0xffff);
      host.configWrite(f, CFG.IDE_CONFIG, 2, 0xffff);
      return { before, udmactl: host.configRead(f, CFG.UDMACTL, 1), udmatim: host.configRead(f, CFG.UDMATIM, 2), ideConfig: host.configRead(f, CFG.IDE_CONFIG, 2) };
    };
    expect(regs("piix3")).toEqual({ before: 0, udmactl: 0, udmatim: 0, ideConfig: 0 });
    expect(regs("piix4")).toEqual({ before: 0, udmactl: 0x0f, udmatim: 0x3333, ideConfig: 0 });
    expect(regs("ich6")).toEqual({ before: 0x04f0, udmactl: 0x0f, udmatim: 0x3333, ideConfig: 0xf4ff });
    expect(regs("ich6", false).before).toBe(0x0400);
  });

  it("takes the timing writes of ata_piix's set_piomode/set_dmamode (ICH, UDMA5 on the primary master)", () => {
    const host = new TestHost();
    const { ide } = rig(host, { chipset: "ich6" });
    const f = ide.pci.devfn;
    // piix_set_piomode, PIO4 master: clear ISP|RCT|TIME0|IE0|PPE0|DTE0, set control and timings.
    let idetim = host.configRead(f, 0x40, 2);
    idetim = (idetim & 0xccf0) | 0x7 | (2 << 12) | (3 << 8);
    host.configWrite(f, 0x40, 2, idetim);
    // do_pata_set_dmamode, UDMA5: enable bit, cycle time, 100 MHz clock; cable bits preserved.
    host.configWrite(f, 0x48, 1, host.configRead(f, 0x48, 1) | 1);
    host.configWrite(f, 0x4a, 2, (host.configRead(f, 0x4a, 2) & ~3) | 1);
    host.configWrite(f, 0x54, 2, (host.configRead(f, 0x54, 2) & ~0x1001) | 0x1000);
    expect(host.configRead(f, 0x40, 2)).toBe(0xa307);
    expect(host.configRead(f, 0x48, 1)).toBe(1);
    expect(host.configRead(f, 0x4a, 2)).toBe(1);
    expect(host.configRead(f, 0x54, 2)).toBe(0x14f0);
    expect(host.in8(0x1f7)).toBe(0x50); // still decoding
  });

  it("stops decoding a channel's legacy ports when the guest clears its IDETIM decode enable", () => {
    const host = new TestHost();
    const { ide, p } = rig(host);
    const f = ide.pci.devfn;
    host.configWrite(f, 0x41, 1, 0x00);
    expect(p.status()).toBe(0xff);
    expect(host.in8(0x177)).toBe(0x00); // secondary unaffected
    p.setReg(2, 0x55); // dropped
    host.configWrite(f, 0x40, 4, 0x80008000);
    expect(p.status()).toBe(0x50);
    expect(p.reg(2)).toBe(0x01); // the signature, not the dropped write
  });

  it("goes back to its reset values on a machine reset", () => {
    const host = new TestHost();
    const { ide } = rig(host, { chipset: "ich6" });
    const f = ide.pci.devfn;
    host.configWrite(f, 0x40, 2, 0x0000);
    host.configWrite(f, 0x54, 2, 0x0000);
    host.reset();
    expect(host.configRead(f, 0x40, 2)).toBe(0x8000);
    expect(host.configRead(f, 0x54, 2)).toBe(0x04f0);
    expect(host.in8(0x1f7)).toBe(0x50);
  });

  it("can be placed elsewhere (function 0 of another slot)", () => {
    const host = new TestHost();
    const ide = new IdeController(host, { chipset: "piix3", slot: 5 });
    expect(ide.pci.devfn).toBe(5 << 3);
  });
});
