/**
 * Port registers and the link: the ST/CR and FRE/FR handshakes, the reset signature, COMRESET,
 * CLO, interrupt status and enables, and the global IS latch feeding INTx.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { createAtapiCdrom } from "../atapi/atapi-scsi.js";
import { MemoryDisk } from "../ata/test-support.js";
import { cdImage } from "../scsi/test-support.js";
import { FIS_TYPE } from "./fis.js";
import { HBA_REG, PORT_REG, PxCMD, PxIS, RX_FIS, SIG } from "./registers.js";
import { rig } from "./test-setup.js";

function twoDrives() {
  const host = new TestHost();
  const cd = createAtapiCdrom({ medium: cdImage(64) });
  const r = rig(host, new GuestAllocator(host), {
    ports: { 0: { kind: "ata", medium: new MemoryDisk(64) }, 1: { kind: "atapi", packetHandler: cd.handler } },
  });
  return r;
}

describe("AHCI port registers", () => {
  it("makes CR follow ST and FR follow FRE at once", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    await drv.startPort(0, { start: false });
    expect(drv.reg(0, PORT_REG.CMD) & (PxCMD.FRE | PxCMD.FR | PxCMD.ST | PxCMD.CR)).toBe(PxCMD.FRE | PxCMD.FR);
    drv.setReg(0, PORT_REG.CMD, drv.reg(0, PORT_REG.CMD) | PxCMD.ST);
    expect(drv.reg(0, PORT_REG.CMD) & (PxCMD.ST | PxCMD.CR)).toBe(PxCMD.ST | PxCMD.CR);
    drv.stopPort(0);
    expect(drv.reg(0, PORT_REG.CMD) & (PxCMD.FRE | PxCMD.FR | PxCMD.ST | PxCMD.CR)).toBe(0);
    // SUD and POD read 1 (no staggered spin-up, no cold presence power control)
    expect(drv.reg(0, PORT_REG.CMD) & (PxCMD.SUD | PxCMD.POD)).toBe(PxCMD.SUD | PxCMD.POD);
  });

  it("posts the reset signature D2H FIS once FRE is set: PxSIG, PxTFD, DHRS (ATA and ATAPI)", async () => {
    const { drv, host } = twoDrives();
    // before FRE: link up, signature not yet received
    expect(drv.reg(0, PORT_REG.SSTS)).toBe(0x123);
    expect(drv.reg(0, PORT_REG.TFD)).toBe(0x80);
    expect(drv.reg(0, PORT_REG.SIG) >>> 0).toBe(SIG.NONE);
    await drv.startPort(0, { start: false });
    await drv.startPort(1, { start: false });
    expect(drv.reg(0, PORT_REG.SIG)).toBe(SIG.ATA);
    expect(drv.reg(1, PORT_REG.SIG) >>> 0).toBe(SIG.ATAPI);
    expect(drv.reg(0, PORT_REG.TFD)).toBe(0x0150);
    expect(drv.reg(1, PORT_REG.TFD)).toBe(0x0100);
    expect(drv.reg(0, PORT_REG.IS) & PxIS.DHRS).toBe(PxIS.DHRS);
    const fis = drv.d2h(1);
    expect(fis).toMatchObject({ type: FIS_TYPE.REG_D2H, count: 1, lbaLow: 1, lbaMid: 0x14, lbaHigh: 0xeb });
    expect(host.dmaInMmio).toBe(0); // the FIS was written after the MMIO write returned
  });

  it("shows an empty port as no device", () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host), { ports: {} });
    expect([drv.reg(0, PORT_REG.SSTS), drv.reg(0, PORT_REG.TFD), drv.reg(0, PORT_REG.SIG) >>> 0]).toEqual([0, 0x7f, SIG.NONE]);
    expect(drv.reg(0, PORT_REG.CMD) & PxCMD.CPS).toBe(0);
  });

  it("runs COMRESET through SCTL.DET: link down, drive reset, link up, signature again", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    await drv.startPort(0);
    drv.ackPort(0);
    drv.setReg(0, PORT_REG.SCTL, 0x301);
    expect(drv.reg(0, PORT_REG.SSTS)).toBe(0x001);
    expect(drv.reg(0, PORT_REG.TFD) & 0x80).toBe(0x80); // busy until the signature arrives
    expect(drv.reg(0, PORT_REG.SIG) >>> 0).toBe(SIG.NONE);
    drv.setReg(0, PORT_REG.SCTL, 0x300);
    await host.settle();
    expect(drv.reg(0, PORT_REG.SSTS)).toBe(0x123);
    expect(drv.reg(0, PORT_REG.SIG)).toBe(SIG.ATA);
    expect(drv.reg(0, PORT_REG.TFD)).toBe(0x150);
    expect(drv.reg(0, PORT_REG.SCTL)).toBe(0x300);
    // SPD limits the negotiated speed, DET=4 takes the Phy offline
    drv.setReg(0, PORT_REG.SCTL, 0x311);
    drv.setReg(0, PORT_REG.SCTL, 0x310);
    expect(drv.reg(0, PORT_REG.SSTS)).toBe(0x113);
    drv.setReg(0, PORT_REG.SCTL, 0x314);
    expect(drv.reg(0, PORT_REG.SSTS)).toBe(0x004);
  });

  it("clears BSY/DRQ in PxTFD on CLO and reads CLO back as 0", () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    expect(drv.reg(0, PORT_REG.TFD)).toBe(0x80);
    drv.setReg(0, PORT_REG.CMD, drv.reg(0, PORT_REG.CMD) | PxCMD.CLO);
    expect(drv.reg(0, PORT_REG.TFD) & 0x88).toBe(0);
    expect(drv.reg(0, PORT_REG.CMD) & PxCMD.CLO).toBe(0);
  });

  it("ignores PxCI and PxSACT while ST is clear", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    await drv.startPort(0, { start: false });
    drv.setReg(0, PORT_REG.SACT, 1);
    drv.setReg(0, PORT_REG.CI, 1);
    expect([drv.reg(0, PORT_REG.SACT), drv.reg(0, PORT_REG.CI)]).toEqual([0, 0]);
  });

  it("raises INTx from PxIS & PxIE through a latched IS, gated by GHC.IE", async () => {
    const host = new TestHost();
    const { drv, ahci } = rig(host, new GuestAllocator(host));
    await drv.startPort(0, { start: false }); // DHRS from the signature, IE still 0
    expect(drv.reg(0, PORT_REG.IS) & PxIS.DHRS).toBeTruthy();
    expect(drv.hba(HBA_REG.IS)).toBe(0);
    drv.setReg(0, PORT_REG.IE, PxIS.DHRS); // enabling a pending bit sets IS
    expect(drv.hba(HBA_REG.IS)).toBe(1);
    expect(ahci.pci.irq.level).toBe(false); // GHC.IE off
    drv.enableInterrupts();
    host.flush();
    expect(ahci.pci.irq.level).toBe(true);
    expect(host.irqLevel(host.intxIrq(ahci.pci.devfn)!)).toBe(true);
    // clearing IS while PxIS is still pending sets it again (level semantics)
    drv.setHba(HBA_REG.IS, 1);
    expect(drv.hba(HBA_REG.IS)).toBe(1);
    // libahci: clear PxIS, then IS
    drv.setReg(0, PORT_REG.IS, 0xffffffff);
    expect(drv.hba(HBA_REG.IS)).toBe(1); // IS is a latch
    drv.setHba(HBA_REG.IS, 1);
    host.flush();
    expect(drv.hba(HBA_REG.IS)).toBe(0);
    expect(ahci.pci.irq.level).toBe(false);
  });

  it("takes byte and word writes to the bytes written only", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    const base = drv.abar + 0x100;
    host.writeMmio(base + PORT_REG.IE + 2, 2, 0xffff);
    expect(drv.reg(0, PORT_REG.IE) >>> 0).toBe(0x7dc00000); // no CPDE: no cold presence detection
    host.writeMmio(base + PORT_REG.CLB + 1, 1, 0x12);
    expect(drv.reg(0, PORT_REG.CLB)).toBe(0x1000);
    expect(host.readMmio(base + PORT_REG.SSTS, 1)).toBe(0x23);
    expect(host.readMmio(base + PORT_REG.SSTS + 1, 2)).toBe(0x01);
    // a byte write of ST leaves FRE alone
    await drv.startPort(0, { start: false });
    host.writeMmio(base + PORT_REG.CMD, 1, (drv.reg(0, PORT_REG.CMD) | PxCMD.ST) & 0xff);
    expect(drv.reg(0, PORT_REG.CMD) & (PxCMD.ST | PxCMD.FRE)).toBe(PxCMD.ST | PxCMD.FRE);
  });

  it("clears PxSERR by writing ones and keeps PCS/PRCS as its mirror", () => {
    const host = new TestHost();
    const { drv, ahci } = rig(host, new GuestAllocator(host));
    ahci.ports[0]!.serrorEvent((1 << 26) | (1 << 16));
    expect(drv.reg(0, PORT_REG.IS) & (PxIS.PCS | PxIS.PRCS)).toBe(PxIS.PCS | PxIS.PRCS);
    drv.setReg(0, PORT_REG.IS, 0xffffffff);
    expect(drv.reg(0, PORT_REG.IS) & (PxIS.PCS | PxIS.PRCS)).toBe(PxIS.PCS | PxIS.PRCS);
    drv.setReg(0, PORT_REG.SERR, 1 << 26);
    expect(drv.reg(0, PORT_REG.IS) & (PxIS.PCS | PxIS.PRCS)).toBe(PxIS.PRCS);
    drv.setReg(0, PORT_REG.SERR, 0xffffffff);
    expect(drv.reg(0, PORT_REG.SERR)).toBe(0);
  });

  it("does not write the FIS area while FRE is clear", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host));
    const fb = new GuestAllocator(host, 0x200000).alloc(256, 256);
    host.ram.fill(0xee, fb, fb + RX_FIS.SIZE);
    drv.setReg(0, PORT_REG.FB, fb);
    await host.settle();
    expect(host.ram.slice(fb, fb + RX_FIS.SIZE).every((b) => b === 0xee)).toBe(true);
    expect(drv.reg(0, PORT_REG.SIG) >>> 0).toBe(SIG.NONE);
  });
});
