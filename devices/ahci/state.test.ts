/**
 * Save/restore: registers, drive state and commands in flight, restored into a fresh TestHost
 * with a new controller object, as a machine restored in a new process would be.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { firstDifference } from "../ata/test-support.js";
import { HBA_REG, PORT_REG, PxIS, SIG } from "./registers.js";
import { ATA, fpdma, lba48, LINUX_IE } from "./test-driver.js";
import { heldDisk, sentinel } from "./test-media.js";
import { rig } from "./test-setup.js";

const lbaOf = (tag: number): number => 200 + tag * 8;

async function source() {
  const disk = await heldDisk();
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const r = rig(host, alloc, { portCount: 2, ports: { 0: { kind: "ata", medium: disk.medium, serial: "STATE-1" } } });
  r.drv.resetHba();
  r.drv.enableInterrupts();
  await r.drv.startPort(0, { ie: LINUX_IE });
  r.drv.ackPort(0);
  host.flush();
  return { ...r, alloc, disk };
}

/** The same machine definition in a fresh host, the image opened again (no fault wrapper). */
async function target(disk: Awaited<ReturnType<typeof heldDisk>>) {
  const host = new TestHost();
  const medium = await disk.reopen();
  return rig(host, new GuestAllocator(host), { portCount: 2, noPciSetup: true, ports: { 0: { kind: "ata", medium, serial: "STATE-1" } } });
}

describe("AHCI save/restore", () => {
  it("re-issues 32 queued commands in flight (reads and writes) in a fresh machine, which completes them", async () => {
    const a = await source();
    a.disk.control.hold(["read", "write"]);
    const bufs = Array.from({ length: 32 }, (_, tag) => {
      const write = tag % 2 === 1;
      const buf = a.alloc.alloc(4096, 4096);
      if (write) for (let i = 0; i < 4096; i++) a.host.ram[buf + i] = (tag * 7 + i * 3) & 0xff;
      else sentinel(a.host.ram, buf, 4096);
      a.drv.buildCommand(0, tag, { fis: fpdma(write, tag, lbaOf(tag), 8), prdt: [{ addr: buf, len: 4096 }], write });
      return buf;
    });
    a.drv.issue(0, 0xffffffff, true);
    expect(await a.drv.until(() => a.disk.control.held.length === 32)).toBe(true);
    expect([a.drv.reg(0, PORT_REG.SACT) >>> 0, a.drv.reg(0, PORT_REG.CI)]).toEqual([0xffffffff, 0]);
    const state = a.host.saveState();

    const b = await target(a.disk);
    b.host.loadState(state);
    b.drv.portMemory.set(0, a.drv.portMemory.get(0)!);
    expect(await b.drv.until(() => b.drv.reg(0, PORT_REG.SACT) === 0)).toBe(true);
    expect(b.drv.reg(0, PORT_REG.IS) & (PxIS.SDBS | PxIS.TFES | PxIS.DHRS)).toBe(PxIS.SDBS);
    expect(b.drv.reg(0, PORT_REG.TFD)).toBe(0x50);
    expect(b.ahci.pci.irq.level).toBe(true);
    for (let tag = 0; tag < 32; tag++) {
      const buf = bufs[tag]!;
      const onDisk = a.disk.sectors(lbaOf(tag), 8);
      if (tag % 2 === 1) expect(firstDifference(onDisk, state.ram.slice(buf, buf + 4096))).toBe(-1);
      else expect(firstDifference(b.host.ram.slice(buf, buf + 4096), onDisk)).toBe(-1);
    }
    expect(b.ahci.device(0)!.queuedInFlight).toBe(0);
    // the old machine's I/O finishing later changes nothing in the new one
    const ramB = b.host.ram.slice();
    a.disk.control.releaseAll();
    for (let i = 0; i < 3; i++) await a.host.settle();
    expect(firstDifference(b.host.ram, ramB)).toBe(-1);
  });

  it("re-runs a non-queued command caught in flight", async () => {
    const a = await source();
    a.disk.control.hold(["read"]);
    const buf = a.alloc.alloc(8192, 4096);
    sentinel(a.host.ram, buf, 8192);
    a.drv.buildCommand(0, 6, { fis: lba48(ATA.READ_DMA_EXT, 1234, 16), prdt: [{ addr: buf, len: 8192 }] });
    a.drv.issue(0, 1 << 6);
    expect(await a.drv.until(() => a.disk.control.held.length === 1)).toBe(true);
    const state = a.host.saveState();
    const b = await target(a.disk);
    b.host.loadState(state);
    b.drv.portMemory.set(0, a.drv.portMemory.get(0)!);
    expect(await b.drv.until(() => b.drv.reg(0, PORT_REG.CI) === 0)).toBe(true);
    expect([b.drv.reg(0, PORT_REG.TFD), b.drv.prdbc(0, 6)]).toEqual([0x50, 8192]);
    expect(b.drv.reg(0, PORT_REG.IS) & PxIS.DHRS).toBe(PxIS.DHRS);
    expect(firstDifference(b.host.ram.slice(buf, buf + 8192), a.disk.sectors(1234, 16))).toBe(-1);
  });

  it("restores registers, the interrupt latch and the drive's settings", async () => {
    const a = await source();
    // write cache off (SET FEATURES 82h), then leave an interrupt pending
    const r = await a.drv.run(0, 0, { fis: { command: ATA.SET_FEATURES, features: 0x82 } });
    expect(r.tfd).toBe(0x50);
    expect(a.ahci.pci.irq.level).toBe(true);
    a.drv.setReg(0, PORT_REG.SCTL, 0x300);
    a.drv.setReg(0, PORT_REG.SERR, 0); // nothing to clear
    const regs = [PORT_REG.CLB, PORT_REG.FB, PORT_REG.IS, PORT_REG.IE, PORT_REG.CMD, PORT_REG.TFD, PORT_REG.SIG, PORT_REG.SSTS, PORT_REG.SCTL, PORT_REG.SERR];
    const before = regs.map((reg) => a.drv.reg(0, reg));
    const hba = [HBA_REG.GHC, HBA_REG.IS].map((reg) => a.drv.hba(reg));
    const empty = [PORT_REG.SSTS, PORT_REG.TFD, PORT_REG.SIG].map((reg) => a.drv.reg(1, reg));
    const state = a.host.saveState();
    const b = await target(a.disk);
    b.host.loadState(state);
    expect(regs.map((reg) => b.drv.reg(0, reg))).toEqual(before);
    expect([HBA_REG.GHC, HBA_REG.IS].map((reg) => b.drv.hba(reg))).toEqual(hba);
    expect([PORT_REG.SSTS, PORT_REG.TFD, PORT_REG.SIG].map((reg) => b.drv.reg(1, reg))).toEqual(empty);
    expect(b.ahci.pci.irq.level).toBe(true);
    expect(b.ahci.device(0)!.settings.writeCache).toBe(false);
    expect(b.drv.reg(0, PORT_REG.SIG)).toBe(SIG.ATA);
    // and the restored port works
    b.drv.portMemory.set(0, a.drv.portMemory.get(0)!);
    b.drv.ackPort(0);
    const buf = 0x400000;
    const io = await b.drv.run(0, 2, { fis: lba48(ATA.READ_DMA_EXT, 3, 1), prdt: [{ addr: buf, len: 512 }], table: 0x410000 });
    expect([io.ci, io.tfd]).toEqual([0, 0x50]);
    expect(firstDifference(b.host.ram.slice(buf, buf + 512), a.disk.sectors(3, 1))).toBe(-1);
  });

  it("powers on when the saved state does not fit", async () => {
    const a = await source();
    const state = a.host.saveState();
    state.devices["ahci"] = { version: 99, data: {} };
    const b = await target(a.disk);
    b.host.loadState(state);
    expect(b.host.traces.some((t) => /does not fit this controller/.test(t.message))).toBe(true);
    expect(b.drv.reg(0, PORT_REG.CMD) & 0x11).toBe(0);
    expect(b.drv.reg(0, PORT_REG.SSTS)).toBe(0x123);
  });
});
