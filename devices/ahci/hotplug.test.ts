/**
 * Hot-plug: attach and detach on a running HBA, seen as libahci sees it — PxIS.PCS/PRCS with an
 * interrupt, cleared through PxSERR, then a COMRESET that finds (or no longer finds) the drive.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { firstDifference, MemoryDisk } from "../ata/test-support.js";
import { HBA_REG, PORT_REG, PxCMD, PxIS, SERR, SIG } from "./registers.js";
import { LINUX_IE, fpdma, identifyString } from "./test-driver.js";
import { sentinel, untouched } from "./test-media.js";
import { rig } from "./test-setup.js";

async function machine() {
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const r = rig(host, alloc, { ports: { 0: { kind: "ata", medium: new MemoryDisk(2048).fillPattern() }, 1: { hotpluggable: true } } });
  r.drv.resetHba();
  r.drv.enableInterrupts();
  for (const p of [0, 1]) {
    await r.drv.startPort(p, { ie: LINUX_IE });
    r.drv.ackPort(p);
  }
  host.flush();
  return { ...r, alloc };
}

/** What ahci_port_intr + ahci_error_intr do with a hot-plug interrupt. */
function linuxHotplugInterrupt(drv: Awaited<ReturnType<typeof machine>>["drv"], port: number): { is: number; serr: number } {
  const hostIs = drv.hba(HBA_REG.IS);
  expect(hostIs & 1 << port).toBeTruthy();
  const is = drv.reg(port, PORT_REG.IS);
  drv.setReg(port, PORT_REG.IS, is);
  const serr = drv.reg(port, PORT_REG.SERR);
  drv.setReg(port, PORT_REG.SERR, serr);
  drv.setHba(HBA_REG.IS, hostIs);
  return { is, serr };
}

describe("AHCI hot-plug", () => {
  it("shows an empty hot-pluggable port with HPCP and no presence", async () => {
    const { drv } = await machine();
    expect(drv.reg(1, PORT_REG.CMD) & (PxCMD.HPCP | PxCMD.CPS)).toBe(PxCMD.HPCP);
    expect(drv.reg(0, PORT_REG.CMD) & (PxCMD.HPCP | PxCMD.CPS)).toBe(PxCMD.CPS);
    expect([drv.reg(1, PORT_REG.SSTS), drv.reg(1, PORT_REG.TFD)]).toEqual([0, 0x7f]);
  });

  it("attaches a drive: presence, PCS/PRCS and an interrupt, then the signature; the guest re-probes and uses it", async () => {
    const { drv, host, ahci, alloc } = await machine();
    const disk = new MemoryDisk(4096).fillPattern();
    const dev = ahci.attach(1, { kind: "ata", medium: disk, serial: "HOTPLUG-1" });
    expect(ahci.device(1)).toBe(dev);
    expect(drv.reg(1, PORT_REG.SSTS)).toBe(0x123);
    expect(drv.reg(1, PORT_REG.CMD) & PxCMD.CPS).toBe(PxCMD.CPS);
    expect(drv.reg(1, PORT_REG.SERR) & (SERR.DIAG_X | SERR.DIAG_N)).toBe(SERR.DIAG_X | SERR.DIAG_N);
    expect(drv.reg(1, PORT_REG.IS) & (PxIS.PCS | PxIS.PRCS)).toBe(PxIS.PCS | PxIS.PRCS);
    expect(ahci.pci.irq.level).toBe(true);
    await host.settle();
    expect(drv.reg(1, PORT_REG.SIG)).toBe(SIG.ATA);
    // the interrupt handler clears PxIS, PxSERR (which clears PCS/PRCS), then IS: the line drops
    const seen = linuxHotplugInterrupt(drv, 1);
    expect(seen.is & (PxIS.PCS | PxIS.PRCS)).toBe(PxIS.PCS | PxIS.PRCS);
    host.flush();
    expect(drv.reg(1, PORT_REG.IS) & (PxIS.PCS | PxIS.PRCS)).toBe(0);
    expect(ahci.pci.irq.level).toBe(false);
    // EH: stop, COMRESET, start, IDENTIFY
    drv.stopPort(1);
    drv.comreset(1);
    await drv.startPort(1, { ie: LINUX_IE });
    expect(drv.reg(1, PORT_REG.SIG)).toBe(SIG.ATA);
    const id = await drv.identify(1);
    expect(identifyString(id.words, 10, 10)).toBe("HOTPLUG-1");
    const buf = alloc.alloc(4096, 4096);
    drv.ackPort(1);
    drv.buildCommand(1, 4, { fis: fpdma(false, 4, 33, 8), prdt: [{ addr: buf, len: 4096 }] });
    drv.issue(1, 1 << 4, true);
    expect(await drv.until(() => drv.reg(1, PORT_REG.SACT) === 0)).toBe(true);
    expect(firstDifference(host.ram.slice(buf, buf + 4096), disk.sector(33, 8))).toBe(-1);
  });

  it("detaches a drive with commands in flight: they are dropped, the port reads empty, PCS/PRCS interrupt", async () => {
    const { drv, host, ahci, alloc } = await machine();
    const disk = new MemoryDisk(4096).fillPattern();
    ahci.attach(1, { kind: "ata", medium: disk });
    await host.settle();
    linuxHotplugInterrupt(drv, 1);
    disk.hold = true;
    const bufs = [0, 1, 2].map((tag) => {
      const buf = alloc.alloc(4096, 4096);
      sentinel(host.ram, buf, 4096);
      drv.buildCommand(1, tag, { fis: fpdma(false, tag, tag * 8, 8), prdt: [{ addr: buf, len: 4096 }] });
      return buf;
    });
    drv.issue(1, 0x7, true);
    expect(await drv.until(() => disk.heldCount === 3)).toBe(true);
    drv.ackPort(1);
    host.flush();
    const removed = ahci.detach(1);
    expect(removed.medium).toBe(disk);
    expect(ahci.device(1)).toBeUndefined();
    expect([drv.reg(1, PORT_REG.SSTS), drv.reg(1, PORT_REG.TFD), drv.reg(1, PORT_REG.SIG) >>> 0]).toEqual([0, 0x7f, SIG.NONE]);
    expect([drv.reg(1, PORT_REG.CI), drv.reg(1, PORT_REG.SACT)]).toEqual([0, 0]);
    expect(drv.reg(1, PORT_REG.CMD) & PxCMD.CPS).toBe(0);
    expect(drv.reg(1, PORT_REG.IS) & (PxIS.PCS | PxIS.PRCS)).toBe(PxIS.PCS | PxIS.PRCS);
    expect(ahci.pci.irq.level).toBe(true);
    linuxHotplugInterrupt(drv, 1);
    const fisBefore = Array.from(drv.fisArea(1));
    disk.hold = false;
    disk.release();
    for (let i = 0; i < 5; i++) await host.settle();
    expect(bufs.every((b) => untouched(host.ram, b, 4096))).toBe(true);
    expect(Array.from(drv.fisArea(1))).toEqual(fisBefore);
    expect(drv.reg(1, PORT_REG.IS)).toBe(0);
    // EH's COMRESET finds nothing
    drv.comreset(1);
    await host.settle();
    expect(drv.reg(1, PORT_REG.SSTS)).toBe(0);
    // and a new drive can come back
    ahci.attach(1, { kind: "ata", medium: new MemoryDisk(16).fillPattern() });
    await host.settle();
    expect(drv.reg(1, PORT_REG.SIG)).toBe(SIG.ATA);
  });

  it("refuses hot-plug on a port that is not hot-pluggable, an occupied port, or an empty one", async () => {
    const { ahci } = await machine();
    expect(() => ahci.attach(0, { kind: "ata", medium: new MemoryDisk(16) })).toThrow(/not hot-pluggable/);
    expect(() => ahci.detach(0)).toThrow(/not hot-pluggable/);
    expect(() => ahci.detach(1)).toThrow(/has no drive/);
    ahci.attach(1, { kind: "ata", medium: new MemoryDisk(16) });
    expect(() => ahci.attach(1, { kind: "ata", medium: new MemoryDisk(16) })).toThrow(/already has a drive/);
    expect(() => ahci.attach(7, { kind: "ata", medium: new MemoryDisk(16) })).toThrow(/does not exist/);
  });

  it("keeps the link down on a port held in COMRESET until the guest releases it", async () => {
    const { drv, host, ahci } = await machine();
    drv.setReg(1, PORT_REG.SCTL, 0x301);
    ahci.attach(1, { kind: "atapi" });
    await host.settle();
    expect(drv.reg(1, PORT_REG.SSTS)).toBe(0x001);
    drv.setReg(1, PORT_REG.SCTL, 0x300);
    await host.settle();
    expect([drv.reg(1, PORT_REG.SSTS), drv.reg(1, PORT_REG.SIG) >>> 0]).toEqual([0x123, SIG.ATAPI]);
  });
});
