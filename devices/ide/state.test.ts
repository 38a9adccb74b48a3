import { describe, expect, it } from "vitest";
import { TestHost } from "../../host-adapter/testbench/index.js";
import { firstDifference } from "../ata/test-support.js";
import { BM_STATUS } from "./bus-master.js";
import { CMD, IdeTestDriver, STATUS_ERR } from "./test-driver.js";
import { rig } from "./test-setup.js";

const READY = 0x50;
const PRD = 0x8000;
const BUF = 0x100000;

describe("IDE save/restore", () => {
  it("restores registers, drive settings, bus master and a pending interrupt into a fresh machine", async () => {
    const a = rig(new TestHost());
    a.p.command(CMD.SET_MULTIPLE_MODE, { count: 16, device: 0xe0 });
    await a.p.waitIrq();
    a.p.status();
    a.p.command(CMD.SET_FEATURES, { features: 0x03, count: 0x42, device: 0xe0 }); // UDMA2
    await a.p.waitIrq(); // left pending on purpose
    a.p.bmPrd(PRD);
    a.p.m.out8(a.p.bm + 2, 0x60);
    a.s.select(0);
    a.s.devctl(0x02);
    a.host.configWrite(a.ide.pci.devfn, 0x44, 1, 0x33);
    const state = a.host.saveState();

    const b = rig(new TestHost(), { noPciSetup: true });
    b.host.loadState(state);
    expect(b.p.irqUp).toBe(true);
    expect(b.p.bmStatus() & (BM_STATUS.INTERRUPT | 0x60)).toBe(BM_STATUS.INTERRUPT | 0x60);
    expect(b.p.m.in32(b.p.bm + 4)).toBe(PRD);
    expect(b.host.configRead(b.ide.pci.devfn, 0x44, 1)).toBe(0x33);
    expect(b.p.status()).toBe(READY);
    expect(b.p.irqUp).toBe(false);
    const dev = b.ide.device(0, 0)!;
    expect(dev.settings.multipleCount).toBe(16);
    expect(dev.settings.dmaMode).toEqual({ kind: "udma", mode: 2 });
    b.s.command(CMD.IDENTIFY_PACKET_DEVICE, { device: 0xa0 });
    await b.host.settle();
    expect(b.s.irqUp).toBe(false); // nIEN survived
    // and the restored machine does I/O
    b.p.bmClear();
    b.p.writePrd(PRD, [{ addr: BUF, len: 1024, eot: true }]);
    const r = await b.p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 77, 2), PRD, true);
    expect([r.status, r.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT]);
    expect(firstDifference(b.host.ram.slice(BUF, BUF + 1024), b.disk.sector(77, 2))).toBe(-1);
  });

  it("keeps a bus master run that was started before the command (start written, state saved)", async () => {
    const a = rig(new TestHost());
    a.p.writePrd(PRD, [{ addr: BUF, len: 512, eot: true }]);
    a.p.bmPrd(PRD);
    a.p.bmCommand(0x09);
    const state = a.host.saveState();
    const b = rig(new TestHost(), { noPciSetup: true });
    b.host.loadState(state);
    b.p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 12, 1));
    expect(await b.p.waitIrq()).toBe(true);
    expect(b.p.status()).toBe(READY);
    expect(firstDifference(b.host.ram.slice(BUF, BUF + 512), b.disk.sector(12))).toBe(-1);
  });

  it("ends a command caught in flight by the save with ABRT and an interrupt after restore", async () => {
    const a = rig(new TestHost());
    a.p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 8)); // the bus master is never started
    await a.host.settle();
    const state = a.host.saveState();
    const b = rig(new TestHost(), { noPciSetup: true });
    b.host.loadState(state);
    expect(b.p.irqUp).toBe(true);
    expect(b.p.status() & STATUS_ERR).toBe(STATUS_ERR);
    expect(b.p.error()).toBe(0x04);
    expect(b.host.traces.map((t) => t.message)).toContain("primary: device 0 was saved in the middle of a command; the command ends with ABRT");
    // the drive takes new commands
    const id = await b.p.identify(0);
    expect(id[60]).toBe(8192);
  });

  it("powers on instead when the saved state is not understood", () => {
    const a = rig(new TestHost());
    const state = a.host.saveState();
    state.devices["ide"] = { version: 99, data: {} };
    const b = rig(new TestHost(), { noPciSetup: true });
    b.host.loadState(state);
    expect(b.p.status()).toBe(READY);
    expect(b.host.traces.some((t) => /not understood/.test(t.message))).toBe(true);
  });
});
