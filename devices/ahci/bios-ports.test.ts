/**
 * VirtualBox's IDE-compatibility ports: the firmware (SeaBIOS: no HBA reset, no interrupts) sees
 * only ports 0..biosPorts-1; drives on the other ports appear when an OS driver takes the HBA
 * over (its GHC.HR, or GHC.IE set), and hide again after a machine reset.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { MemoryDisk } from "../ata/test-support.js";
import { GHC, HBA_REG, PORT_REG, PxIS, SERR, SIG } from "./registers.js";
import { AhciTestDriver } from "./test-driver.js";
import { rig } from "./test-setup.js";

const DET = (ssts: number) => ssts & 0xf;

function machine() {
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const disk = (n: number) => ({ kind: "ata" as const, medium: new MemoryDisk(256 * n).fillPattern() });
  return rig(host, alloc, { portCount: 6, ports: { 0: disk(1), 3: disk(2), 5: disk(3) } });
}

describe("AHCI IDE-compatibility ports (what the firmware sees)", () => {
  it("shows the firmware only ports 0-3; port 5's drive has no link", () => {
    const { ahci, drv } = machine();
    expect(ahci.biosPorts).toBe(4);
    expect(DET(drv.reg(0, PORT_REG.SSTS))).toBe(3);
    expect(DET(drv.reg(3, PORT_REG.SSTS))).toBe(3);
    expect(DET(drv.reg(5, PORT_REG.SSTS))).toBe(0);
    expect(ahci.device(5)).toBeUndefined();
  });

  it("brings port 5's drive up when the OS resets the HBA, with its signature", async () => {
    const { ahci, drv, host } = machine();
    drv.resetHba();
    host.flush();
    expect(DET(drv.reg(5, PORT_REG.SSTS))).toBe(3);
    expect(ahci.device(5)?.capacity).toBe(768);
    await drv.startPort(5);
    expect(drv.reg(5, PORT_REG.SIG)).toBe(SIG.ATA);
  });

  it("brings it up as a hot-plug event when the OS enables interrupts without a reset", async () => {
    const { drv, host } = machine();
    await drv.startPort(5, { ie: PxIS.PCS | PxIS.PRCS | PxIS.DHRS });
    drv.setHba(HBA_REG.GHC, GHC.IE | GHC.AE);
    host.flush();
    expect(DET(drv.reg(5, PORT_REG.SSTS))).toBe(3);
    expect(drv.reg(5, PORT_REG.SERR) & (SERR.DIAG_X | SERR.DIAG_N)).toBe(SERR.DIAG_X | SERR.DIAG_N);
    expect(drv.reg(5, PORT_REG.IS) & PxIS.PCS).toBe(PxIS.PCS);
    expect(drv.hba(HBA_REG.IS) & 1 << 5).toBeTruthy();
  });

  it("hides it again after a machine reset", () => {
    const { ahci, drv, host } = machine();
    drv.resetHba();
    host.flush();
    expect(DET(drv.reg(5, PORT_REG.SSTS))).toBe(3);
    host.reset();
    AhciTestDriver.setupPci(host, ahci.pci.devfn, { busMaster: true }); // the firmware's PCI setup again
    expect(DET(drv.reg(5, PORT_REG.SSTS))).toBe(0);
    expect(DET(drv.reg(0, PORT_REG.SSTS))).toBe(3);
  });
});
