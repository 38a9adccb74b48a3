import { describe, expect, it } from "vitest";
import { TestHost } from "../../host-adapter/testbench/index.js";
import { firstDifference, MemoryDisk } from "../ata/test-support.js";
import { BM_STATUS, MAX_PRD_ENTRIES } from "./bus-master.js";
import { CMD, IdeTestDriver, STATUS_BSY, STATUS_DRQ, STATUS_ERR } from "./test-driver.js";
import { BM_BASE, rig as baseRig, type RigOptions } from "./test-setup.js";

const READY = 0x50;
const PRD = 0x8000; // PRD tables live here
const BUF = 0x100000; // data buffers from 1 MiB up

const bytesAt = (host: TestHost, addr: number, len: number) => host.ram.slice(addr, addr + len);

// Every case runs on both medium paths: asynchronous, and synchronous (a page-cached file's fast
// path, where the command completes inside the guest's bus master start).
describe.each([
  { path: "asynchronous medium", sync: false },
  { path: "synchronous medium", sync: true },
])("IDE bus master DMA, $path", ({ sync }) => {
  const rig = (host: TestHost, o: RigOptions = {}) => baseRig(host, { ...o, syncDisk: sync });
  it("READ DMA into one PRD region: data, interrupt, BM interrupt set and active clear", async () => {
    const { host, p, disk } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 8 * 512, eot: true }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 16, 8), PRD, true);
    expect(r.irq).toBe(true);
    expect(r.bmStatus & 0x07).toBe(BM_STATUS.INTERRUPT);
    expect(r.status).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF, 4096), disk.sector(16, 8))).toBe(-1);
    expect(p.bmStatus() & 0x07).toBe(0);
    expect(host.dmaErrors).toBe(0);
  });

  it("scatters over several entries, including 64 KiB ones written as count 0, and stops at EOT", async () => {
    const { host, p, disk } = rig(new TestHost());
    const regions = [
      { addr: BUF, len: 512 },
      { addr: BUF + 0x20000, len: 0x10000 }, // count 0
      { addr: BUF + 0x40000, len: 3 * 512 },
      { addr: BUF + 0x60000, len: 0x10000 - 2048, eot: true },
    ];
    const total = regions.reduce((n, r) => n + r.len, 0);
    const sectors = total / 512;
    p.writePrd(PRD, regions);
    new DataView(host.ram.buffer).setUint32(PRD + 8 * regions.length, BUF + 0x80000, true); // after EOT: never used
    new DataView(host.ram.buffer).setUint32(PRD + 8 * regions.length + 4, 0x80000200, true);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 33, sectors), PRD, true);
    expect([r.status, r.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT]);
    let lba = 33;
    for (const reg of regions) {
      expect(firstDifference(bytesAt(host, reg.addr, reg.len), disk.sector(lba, reg.len / 512))).toBe(-1);
      lba += reg.len / 512;
    }
    expect(bytesAt(host, BUF + 0x80000, 512).every((b) => b === 0)).toBe(true);
  });

  it("runs a 3 MiB LBA48 read across several core chunks, keeping the PRD position between them", async () => {
    const { host, p, disk } = rig(new TestHost({ memorySize: 32 << 20 }));
    const sectors = 6144;
    const entries = Array.from({ length: 48 }, (_, i) => ({ addr: BUF + i * 0x10000, len: 0x10000, eot: i === 47 }));
    p.writePrd(PRD, entries);
    const r = await p.dma(CMD.READ_DMA_EXT, IdeTestDriver.lba48(0, 1000, sectors), PRD, true);
    expect([r.status, r.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT]);
    expect(firstDifference(bytesAt(host, BUF, sectors * 512), disk.sector(1000, sectors))).toBe(-1);
  });

  it("WRITE DMA gathers from the PRD regions onto the medium", async () => {
    const { host, p, disk } = rig(new TestHost());
    const a = new Uint8Array(1024).map((_, i) => i ^ 0x5a);
    const b = new Uint8Array(2048).map((_, i) => (i * 7) & 0xff);
    host.ram.set(a, BUF);
    host.ram.set(b, BUF + 0x3000);
    p.writePrd(PRD, [{ addr: BUF, len: 1024 }, { addr: BUF + 0x3000, len: 2048, eot: true }]);
    const r = await p.dma(CMD.WRITE_DMA, IdeTestDriver.lba28(0, 200, 6), PRD, false);
    expect([r.status, r.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT]);
    expect(firstDifference(disk.sector(200, 2), a)).toBe(-1);
    expect(firstDifference(disk.sector(202, 4), b)).toBe(-1);
  });

  it("a PRD table larger than the transfer: interrupt with active still set, until the engine is stopped", async () => {
    const { p } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 0x10000, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x08);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 4));
    p.bmCommand(0x09);
    expect(await p.waitIrq()).toBe(true);
    expect(p.bmStatus() & 7).toBe(BM_STATUS.INTERRUPT | BM_STATUS.ACTIVE);
    expect(p.status()).toBe(READY);
    p.bmCommand(0x08);
    expect(p.bmStatus() & 7).toBe(BM_STATUS.INTERRUPT);
  });

  it("a PRD table smaller than the transfer: the command aborts (ABRT), active clears, no bus error", async () => {
    const { host, p } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 1024, eot: true }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 4), PRD, true);
    expect(r.irq).toBe(true);
    expect(r.bmStatus & 7).toBe(BM_STATUS.INTERRUPT);
    expect(r.status & STATUS_ERR).toBe(STATUS_ERR);
    expect(p.error()).toBe(0x04);
    expect(host.traces.some((t) => /DMA short/.test(t.message))).toBe(true);
  });

  it("start before the command and the PRD pointer after it both work (the pointer is latched at start)", async () => {
    const { host, p, disk } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 1024, eot: true }]);
    // start first, then the command
    p.bmPrd(PRD);
    p.bmCommand(0x09);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 50, 2));
    expect(await p.waitIrq()).toBe(true);
    expect(p.status()).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF, 1024), disk.sector(50, 2))).toBe(-1);
    p.bmCommand(0x08);
    p.bmClear();
    // command first, PRD pointer next, start last
    p.writePrd(PRD + 0x100, [{ addr: BUF + 0x10000, len: 512, eot: true }]);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 60, 1));
    await host.settle();
    expect(p.altStatus() & (STATUS_BSY | STATUS_DRQ)).not.toBe(0); // waiting for the bus master
    expect(p.irqUp).toBe(false);
    p.bmPrd(PRD + 0x100);
    p.bmCommand(0x09);
    expect(await p.waitIrq()).toBe(true);
    expect(p.status()).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF + 0x10000, 512), disk.sector(60))).toBe(-1);
  });

  it("a transfer waits while the engine is stopped, and a later command waits for a new start", async () => {
    const { host, p, disk } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 512, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x09);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 1, 1));
    expect(await p.waitIrq()).toBe(true);
    p.status();
    // start still set: the next command does not reuse the finished run
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 2, 1));
    await host.settle();
    expect(p.irqUp).toBe(false);
    expect(firstDifference(bytesAt(host, BUF, 512), disk.sector(1))).toBe(-1);
    p.bmCommand(0x08);
    p.bmCommand(0x09);
    expect(await p.waitIrq()).toBe(true);
    expect(p.status()).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF, 512), disk.sector(2))).toBe(-1);
  });

  it("a PRD table outside RAM: bus error, the command aborts, nothing throws", async () => {
    const { host, p } = rig(new TestHost());
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 1), 0xfffffff0, true);
    expect(r.irq).toBe(true);
    expect(r.bmStatus & 7).toBe(BM_STATUS.INTERRUPT | BM_STATUS.ERROR);
    expect(r.status & STATUS_ERR).toBe(STATUS_ERR);
    expect(host.traces.some((t) => /PRD entry at 0xfffffff0 is outside guest RAM/.test(t.message))).toBe(true);
  });

  it("a data region outside RAM: bus error, nothing written, command aborted", async () => {
    const { host, p } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 512 }, { addr: host.ram.length - 256, len: 512, eot: true }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 5, 2), PRD, true);
    expect(r.bmStatus & 7).toBe(BM_STATUS.INTERRUPT | BM_STATUS.ERROR);
    expect(r.status & STATUS_ERR).toBe(STATUS_ERR);
    expect(bytesAt(host, BUF, 512).every((b) => b === 0)).toBe(true);
  });

  it("a PRD table walking off the end of RAM without EOT faults instead of reading past it", async () => {
    const host = new TestHost({ memorySize: 2 << 20 });
    const { p } = rig(host, { sectors: 1024 });
    const at = host.ram.length - 16; // two entries fit, no EOT
    p.writePrd(at, [{ addr: BUF, len: 512 }, { addr: BUF + 512, len: 512 }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 4), at, true);
    expect(r.bmStatus & BM_STATUS.ERROR).toBe(BM_STATUS.ERROR);
    expect(r.status & STATUS_ERR).toBe(STATUS_ERR);
  });

  it("bounds a table without EOT to 8192 entries (short transfer, aborted), and an all-zero table is walked safely", async () => {
    const { host, p } = rig(new TestHost({ memorySize: 32 << 20 }));
    const entries = Array.from({ length: MAX_PRD_ENTRIES + 100 }, () => ({ addr: BUF, len: 2 }));
    p.writePrd(0x200000, entries);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 64), 0x200000, true);
    expect(r.irq).toBe(true);
    expect(r.status & STATUS_ERR).toBe(STATUS_ERR);
    expect(r.bmStatus & 7).toBe(BM_STATUS.INTERRUPT);
    expect(host.traces.some((t) => /no EOT within 8192 entries/.test(t.message))).toBe(true);
    // zero entries (address 0, count 0 = 64 KiB, no EOT): legal; each one lands at address 0
    const zero = 0x400000;
    const r2 = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 256), zero, true);
    expect([r2.status, r2.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT | BM_STATUS.ACTIVE]);
  });

  it("odd byte counts are taken as even (bit 0 is reserved)", async () => {
    const { host, p, disk } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 513 }, { addr: BUF + 0x1000, len: 513, eot: true }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 9, 2), PRD, true);
    expect([r.status, r.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT]);
    expect(firstDifference(bytesAt(host, BUF, 512), disk.sector(9))).toBe(-1);
    expect(host.ram[BUF + 512]).toBe(0);
    expect(firstDifference(bytesAt(host, BUF + 0x1000, 512), disk.sector(10))).toBe(-1);
    // 1 byte taken as 0 = 64 KiB: a 2-sector read then leaves the table unfinished (active stays set)
    p.writePrd(PRD, [{ addr: BUF, len: 1, eot: true }]);
    const r2 = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 9, 2), PRD, true);
    expect([r2.status, r2.bmStatus & 7]).toEqual([READY, BM_STATUS.INTERRUPT | BM_STATUS.ACTIVE]);
  });

  it("a direction bit that contradicts the command is a bus fault", async () => {
    const { host, p } = rig(new TestHost());
    p.writePrd(PRD, [{ addr: BUF, len: 512, eot: true }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 1), PRD, false);
    expect(r.bmStatus & 7).toBe(BM_STATUS.INTERRUPT | BM_STATUS.ERROR);
    expect(r.status & STATUS_ERR).toBe(STATUS_ERR);
    expect(bytesAt(host, BUF, 512).every((b) => b === 0)).toBe(true);
  });

  it("with bus mastering disabled in the PCI command register nothing moves (master abort)", async () => {
    const host = new TestHost();
    const { ide, p } = rig(host, { noPciSetup: true });
    IdeTestDriver.setupPci(host, ide.pci.devfn, BM_BASE, false);
    p.writePrd(PRD, [{ addr: BUF, len: 512, eot: true }]);
    const r = await p.dma(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 1), PRD, true);
    expect(r.bmStatus & BM_STATUS.ERROR).toBe(BM_STATUS.ERROR);
    expect(bytesAt(host, BUF, 512).every((b) => b === 0)).toBe(true);
  });

  it("with nIEN set the command completes without INTRQ and without the BM interrupt bit", async () => {
    const { host, p, disk } = rig(new TestHost());
    p.devctl(0x02);
    p.writePrd(PRD, [{ addr: BUF, len: 512, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x08);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 3, 1));
    p.bmCommand(0x09);
    expect(await p.waitNotBusy()).toBe(READY);
    expect(p.irqUp).toBe(false);
    expect(p.bmStatus() & 7).toBe(0);
    expect(firstDifference(bytesAt(host, BUF, 512), disk.sector(3))).toBe(-1);
  });

  it("bus master registers: widths, reserved bytes, W1C bits, drive-capable bits, pointer alignment", () => {
    const { host, p } = rig(new TestHost());
    expect(p.bmStatus()).toBe(0x20); // only the primary master is present
    expect(host.in8(BM_BASE + 8 + 2)).toBe(0x20); // secondary: master (the CD)
    host.out32(BM_BASE + 4, 0x12345677);
    expect(host.in32(BM_BASE + 4)).toBe(0x12345674);
    host.out8(BM_BASE + 5, 0xab);
    expect(host.in32(BM_BASE + 4)).toBe(0x1234ab74);
    expect(host.in16(BM_BASE + 6)).toBe(0x1234);
    host.out8(BM_BASE + 2, 0x60);
    expect(p.bmStatus()).toBe(0x60);
    host.out8(BM_BASE + 2, 0x00);
    expect(p.bmStatus()).toBe(0x00);
    host.out8(BM_BASE, 0xff);
    expect(host.in8(BM_BASE)).toBe(0x09);
    expect(p.bmStatus()).toBe(BM_STATUS.ACTIVE);
    host.out8(BM_BASE + 2, 0xff); // active is read-only
    expect(p.bmStatus()).toBe(0x61);
    expect([host.in8(BM_BASE + 1), host.in8(BM_BASE + 3)]).toEqual([0, 0]);
    expect(host.in16(BM_BASE)).toBe(0x09);
    expect(host.in32(BM_BASE)).toBe(0x00610009);
  });

  it("runs both channels' DMA at the same time", async () => {
    const disk2 = new MemoryDisk(256).fillPattern();
    const { host, p, s, disk } = rig(new TestHost(), { secondary: { master: { kind: "ata", medium: disk2 } } });
    p.writePrd(PRD, [{ addr: BUF, len: 4096, eot: true }]);
    s.writePrd(PRD + 0x100, [{ addr: BUF + 0x10000, len: 4096, eot: true }]);
    for (const [d, prd] of [[p, PRD], [s, PRD + 0x100]] as const) {
      d.bmPrd(prd);
      d.bmCommand(0x08);
    }
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 100, 8));
    s.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 200, 8));
    p.bmCommand(0x09);
    s.bmCommand(0x09);
    expect(await p.waitIrq()).toBe(true);
    expect(await s.waitIrq()).toBe(true);
    expect([p.status(), s.status()]).toEqual([READY, READY]);
    expect(firstDifference(bytesAt(host, BUF, 4096), disk.sector(100, 8))).toBe(-1);
    expect(firstDifference(bytesAt(host, BUF + 0x10000, 4096), disk2.sector(200, 8))).toBe(-1);
  });

  it("ATAPI PACKET with DMA: INQUIRY data through the PRD table", async () => {
    const { host, s } = rig(new TestHost());
    s.writePrd(PRD, [{ addr: BUF, len: 36, eot: true }]);
    s.bmPrd(PRD);
    s.bmCommand(0x08);
    s.command(CMD.PACKET, { features: 0x01, device: 0xa0 });
    const cdb = new Uint8Array(12);
    cdb.set([0x12, 0, 0, 0, 36]);
    s.writeData(cdb);
    s.bmCommand(0x09);
    expect(await s.waitIrq()).toBe(true);
    expect(s.bmStatus() & 7).toBe(BM_STATUS.INTERRUPT);
    expect(s.status()).toBe(READY);
    expect(host.ram[BUF]).toBe(0x05);
    expect(new TextDecoder().decode(host.ram.subarray(BUF + 16, BUF + 22))).toBe("CD-ROM");
  });
});

describe("IDE DMA on the synchronous medium path", () => {
  const syncRig = () => baseRig(new TestHost(), { syncDisk: true });

  it("READ DMA completes inside the guest's bus master start: data, status and interrupt with no event-loop turn", () => {
    const { host, p, disk } = syncRig();
    p.writePrd(PRD, [{ addr: BUF, len: 8 * 512, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x08);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 40, 8));
    expect(p.altStatus() & STATUS_DRQ).toBe(STATUS_DRQ); // data fetched, waiting for the engine
    p.bmCommand(0x09);
    expect(p.irqUp).toBe(true);
    expect(p.bmStatus() & 7).toBe(BM_STATUS.INTERRUPT);
    expect(p.status()).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF, 4096), disk.sector(40, 8))).toBe(-1);
    expect(disk.syncOps).toBe(1);
  });

  it("WRITE DMA puts the data on the medium inside the start write", () => {
    const { host, p, disk } = syncRig();
    const data = new Uint8Array(2048).map((_, i) => (i * 13) & 0xff);
    host.ram.set(data, BUF);
    p.writePrd(PRD, [{ addr: BUF, len: 2048, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x00);
    p.command(CMD.WRITE_DMA, IdeTestDriver.lba28(0, 300, 4));
    p.bmCommand(0x01);
    expect(p.irqUp).toBe(true);
    expect(p.status()).toBe(READY);
    expect(firstDifference(disk.sector(300, 4), data)).toBe(-1);
    expect(disk.syncOps).toBe(1);
  });

  it("a request larger than one core chunk moves chunk by chunk, all inside the start write", () => {
    const host = new TestHost({ memorySize: 32 << 20 });
    const { p, disk } = baseRig(host, { syncDisk: true });
    const sectors = 5000; // 3 chunks of at most 2048 sectors
    const entries = Array.from({ length: 40 }, (_, i) => ({ addr: BUF + i * 0x10000, len: 0x10000, eot: i === 39 }));
    p.writePrd(PRD, entries);
    p.bmPrd(PRD);
    p.bmCommand(0x08);
    p.command(CMD.READ_DMA_EXT, IdeTestDriver.lba48(0, 100, sectors));
    p.bmCommand(0x09);
    expect(p.irqUp).toBe(true);
    expect(p.status()).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF, sectors * 512), disk.sector(100, sectors))).toBe(-1);
    expect(disk.syncOps).toBe(3);
  });

  it("when the medium declines (busy), the command goes on asynchronously with the same result", async () => {
    const { host, p, disk } = syncRig();
    disk.hold = true;
    p.writePrd(PRD, [{ addr: BUF, len: 1024, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x08);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 7, 2));
    p.bmCommand(0x09);
    await host.settle();
    expect(p.irqUp).toBe(false);
    expect(disk.heldCount).toBe(1);
    disk.hold = false;
    disk.release();
    expect(await p.waitIrq()).toBe(true);
    expect(p.status()).toBe(READY);
    expect(firstDifference(bytesAt(host, BUF, 1024), disk.sector(7, 2))).toBe(-1);
    expect(disk.syncOps).toBe(0);
  });

  it("a medium error on the synchronous path is UNC with the failing sector in the address registers", () => {
    const { host, p, disk } = syncRig();
    disk.errors.push({ op: "read", lba: 21, kind: "io" });
    p.writePrd(PRD, [{ addr: BUF, len: 4096, eot: true }]);
    p.bmPrd(PRD);
    p.bmCommand(0x08);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 20, 8));
    expect(p.irqUp).toBe(true); // failed at once, before the engine was started
    expect(p.status() & STATUS_ERR).toBe(STATUS_ERR);
    expect(p.error()).toBe(0x40);
    expect(host.in8(0x1f3)).toBe(21);
    expect(bytesAt(host, BUF, 512).every((b) => b === 0)).toBe(true);
  });
});
