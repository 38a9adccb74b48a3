import { describe, expect, it } from "vitest";
import { GuestAllocator, PciDriver, TestHost } from "../../host-adapter/testbench/index.js";
import { AhciController } from "./controller.js";
import { CAP, GHC, HBA_REG, PORT_REG } from "./registers.js";
import { AhciTestDriver } from "./test-driver.js";
import { rig } from "./test-setup.js";

describe("AHCI PCI function", () => {
  it("is an ICH8-M AHCI controller with an 8 KiB memory BAR5, INTA and no MSI", () => {
    const host = new TestHost();
    const ahci = new AhciController(host, { portCount: 1 });
    const pci = new PciDriver(host, ahci.pci.devfn);
    expect([pci.vendorId, pci.deviceId, pci.classCode]).toEqual([0x8086, 0x2829, 0x010601]);
    expect(ahci.pci.devfn >> 3).toBe(0x0d);
    for (const i of [0, 1, 2, 3, 4]) expect(pci.sizeBar(i)).toBeUndefined();
    expect(pci.sizeBar(5)).toEqual({ kind: "memory", size: 0x2000 });
    expect(pci.configRead(0x3d, 1)).toBe(1); // INTA
    expect(pci.status & 0x10).toBe(0); // no capability list: no MSI
    expect(pci.configRead(0x90, 1)).toBe(0x40); // MAP: AHCI mode
    expect(pci.configRead(0x92, 1)).toBe(0x01); // PCS: port 0 enabled
    pci.configWrite(0x92, 2, 0xffff); // Linux's PCS quirk may write here
    expect(pci.configRead(0x92, 2)).toBe(0x00ff);
  });

  it("decodes the ABAR only with memory space enabled, at the fixed base it reports", () => {
    const host = new TestHost();
    const ahci = new AhciController(host);
    const bar = new PciDriver(host, ahci.pci.devfn).configRead(0x24, 4);
    expect(ahci.abarBase).toBeUndefined();
    expect(host.readMmio(bar + HBA_REG.VS, 4)).toBe(0xffffffff);
    AhciTestDriver.setupPci(host, ahci.pci.devfn);
    expect(ahci.abarBase).toBe(bar);
    expect(host.readMmio(bar + HBA_REG.VS, 4)).toBe(0x00010100);
  });
});

describe("AHCI global registers", () => {
  for (const portCount of [1, 4, 30]) {
    it(`reports CAP, PI and VS for ${portCount} port(s)`, () => {
      const host = new TestHost();
      const { drv } = rig(host, new GuestAllocator(host), { portCount, ports: {} });
      const cap = drv.hba(HBA_REG.CAP);
      expect(cap & 0x1f).toBe(portCount - 1); // NP
      expect(cap >> CAP.NCS_SHIFT & 0x1f).toBe(31); // 32 slots
      expect(cap & CAP.SNCQ).toBeTruthy();
      expect(cap & CAP.SCLO).toBeTruthy();
      expect(cap >>> 0 & CAP.S64A).toBe(0); // 32-bit DMA only
      expect(cap & (CAP.SAM | CAP.SSS | CAP.SALP | CAP.SSNTF | CAP.SPM | CAP.CCCS | CAP.EMS)).toBe(0);
      expect(cap >> CAP.ISS_SHIFT & 0xf).toBe(2);
      expect(drv.hba(HBA_REG.PI)).toBe(portCount === 32 ? 0xffffffff : (2 ** portCount - 1));
      expect(drv.hba(HBA_REG.VS)).toBe(0x00010100);
      // past the last port, and in the reserved/vendor areas: zeros
      if (portCount < 30) expect(drv.reg(portCount, PORT_REG.SSTS)).toBe(0);
      expect(drv.hba(0x2c)).toBe(0);
      expect(drv.hba(0xa0)).toBe(0);
      // CAP/PI/VS are read-only (Linux writes its saved values back after HR)
      drv.setHba(HBA_REG.CAP, 0);
      drv.setHba(HBA_REG.PI, 0);
      expect(drv.hba(HBA_REG.CAP)).toBe(cap);
    });
  }

  it("keeps GHC.AE set, latches IE, and self-clears HR while resetting ports", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    expect(drv.hba(HBA_REG.GHC) >>> 0).toBe(GHC.AE);
    drv.setHba(HBA_REG.GHC, 0); // AE cannot be cleared (no legacy mode)
    expect(drv.hba(HBA_REG.GHC) >>> 0).toBe(GHC.AE);
    drv.enableInterrupts();
    expect(drv.hba(HBA_REG.GHC) >>> 0).toBe((GHC.AE | GHC.IE) >>> 0);
    await drv.startPort(0, { ie: 0xffffffff });
    expect(drv.reg(0, PORT_REG.CMD) & 0x11).toBe(0x11);
    drv.resetHba();
    expect(drv.hba(HBA_REG.GHC) >>> 0).toBe(GHC.AE); // HR clear, IE reset
    expect([drv.reg(0, PORT_REG.CMD) & 0xc011, drv.reg(0, PORT_REG.IE), drv.reg(0, PORT_REG.IS)]).toEqual([0, 0, 0]);
    // the command list and FIS area pointers survive HR
    expect(drv.reg(0, PORT_REG.CLB)).toBe(drv.portMemory.get(0)!.clb);
  });

  it("rejects impossible configurations with clear errors", () => {
    const host = new TestHost();
    expect(() => new AhciController(host, { portCount: 0 })).toThrow(/portCount 0/);
    expect(() => new AhciController(host, { portCount: 31 })).toThrow(/portCount 31/);
    expect(() => new AhciController(host, { portCount: 2, ports: { 3: { hotpluggable: true } } })).toThrow(/port 3 is configured but portCount is 2/);
    expect(() => new AhciController(host, { portCount: 2, biosPorts: 3 })).toThrow(/biosPorts/);
  });

  it("offers ports 0..3 to the BIOS by default, fewer on a smaller controller", () => {
    const a = new AhciController(new TestHost(), { portCount: 8 });
    const b = new AhciController(new TestHost(), { portCount: 2 });
    const c = new AhciController(new TestHost(), { portCount: 8, biosPorts: 1 });
    expect([a.biosPorts, b.biosPorts, c.biosPorts]).toEqual([4, 2, 1]);
  });
});
