/**
 * Native Command Queuing: 32 commands in flight on one port with their I/O held at the backend,
 * completed in reverse order; NCQ errors and libata's recovery through READ LOG EXT page 10h;
 * queued and non-queued commands on one port; several ports at once.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { MediumError } from "../../media/block.js";
import { firstDifference, MemoryDisk } from "../ata/test-support.js";
import { FIS_TYPE } from "./fis.js";
import { HBA_REG, PORT_REG, PxIS } from "./registers.js";
import { ATA, fpdma, lba48, LINUX_IE } from "./test-driver.js";
import { heldDisk, sentinel, untouched } from "./test-media.js";
import { rig } from "./test-setup.js";

const ALL = 0xffffffff;
const lbaOf = (tag: number): number => 100 + tag * 16;
const SECTORS = 8;

async function machine(medium?: Parameters<typeof rig>[2]) {
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const r = rig(host, alloc, medium);
  r.drv.resetHba();
  r.drv.enableInterrupts();
  await r.drv.startPort(0, { ie: LINUX_IE });
  r.drv.ackPort(0);
  return { ...r, alloc };
}

/** Build 32 READ FPDMA QUEUED commands (tag t reads 8 sectors at lbaOf(t)) into sentinel buffers. */
function build32(m: Awaited<ReturnType<typeof machine>>, write = false): number[] {
  const { drv, host, alloc } = m;
  return Array.from({ length: 32 }, (_, tag) => {
    const buf = alloc.alloc(SECTORS * 512, 4096);
    if (write) for (let i = 0; i < SECTORS * 512; i++) host.ram[buf + i] = (tag * 31 + i) & 0xff;
    else sentinel(host.ram, buf, SECTORS * 512);
    drv.buildCommand(0, tag, { fis: fpdma(write, tag, lbaOf(tag), SECTORS), prdt: [{ addr: buf, len: SECTORS * 512 }], write });
    return buf;
  });
}

describe("AHCI NCQ", () => {
  it("keeps 32 reads in flight, all at the backend before any completes, and completes them in reverse release order", async () => {
    const disk = await heldDisk();
    const m = await machine({ ports: { 0: { kind: "ata", medium: disk.medium } } });
    const { drv, host, ahci } = m;
    disk.control.hold(["read"]);
    const bufs = build32(m);
    drv.issue(0, ALL, true);
    expect(await drv.until(() => disk.control.held.length === 32)).toBe(true);
    // accepted: PxCI clear, PxSACT full, BSY clear, the accepting D2H FIS has no I bit
    expect([drv.reg(0, PORT_REG.CI), drv.reg(0, PORT_REG.SACT) >>> 0, drv.reg(0, PORT_REG.TFD)]).toEqual([0, ALL, 0x50]);
    expect(drv.d2h(0)).toMatchObject({ type: FIS_TYPE.REG_D2H, interrupt: false, status: 0x50 });
    expect(drv.reg(0, PORT_REG.IS) & (PxIS.SDBS | PxIS.DHRS)).toBe(0);
    expect(ahci.pci.irq.level).toBe(false);
    expect(bufs.every((b) => untouched(host.ram, b, SECTORS * 512))).toBe(true);
    expect(ahci.device(0)!.queuedInFlight).toBe(32);

    for (let tag = 31; tag >= 0; tag--) {
      const req = disk.control.held.find((r) => r.pos === lbaOf(tag) * 512)!;
      expect(req.length).toBe(SECTORS * 512);
      req.release();
      expect(await drv.until(() => !(drv.reg(0, PORT_REG.SACT) & 1 << tag))).toBe(true);
      expect(drv.reg(0, PORT_REG.SACT) >>> 0).toBe(tag === 0 ? 0 : (2 ** tag - 1));
      expect(drv.sdb(0)).toEqual({ type: FIS_TYPE.SDB, interrupt: true, status: 0x50, error: 0, sactive: (1 << tag) >>> 0 });
      expect(drv.reg(0, PORT_REG.IS) & PxIS.SDBS).toBe(PxIS.SDBS);
      expect(ahci.pci.irq.level).toBe(true);
      expect(drv.ackPort(0) & ~(PxIS.SDBS | PxIS.DPS)).toBe(0);
      host.flush();
      expect(ahci.pci.irq.level).toBe(false);
      expect(firstDifference(host.ram.slice(bufs[tag]!, bufs[tag]! + SECTORS * 512), disk.sectors(lbaOf(tag), SECTORS))).toBe(-1);
      expect(firstDifference(host.ram.slice(bufs[tag]!, bufs[tag]! + SECTORS * 512), disk.pattern.slice(lbaOf(tag) * 512, (lbaOf(tag) + SECTORS) * 512))).toBe(-1);
      for (let older = 0; older < tag; older++) expect(untouched(host.ram, bufs[older]!, SECTORS * 512)).toBe(true);
    }
    expect(drv.reg(0, PORT_REG.TFD)).toBe(0x50);
    expect(ahci.device(0)!.queuedInFlight).toBe(0);
    expect(host.dmaInMmio).toBe(0); // command fetch and FISes happen after the MMIO write returns
  });

  it("completes 32 queued writes released in reverse order, each landing on the medium", async () => {
    const disk = await heldDisk();
    const m = await machine({ ports: { 0: { kind: "ata", medium: disk.medium } } });
    const { drv, host } = m;
    disk.control.hold(["write"]);
    const bufs = build32(m, true);
    drv.issue(0, ALL, true);
    expect(await drv.until(() => disk.control.held.length === 32)).toBe(true);
    for (let tag = 31; tag >= 0; tag--) {
      disk.control.held.find((r) => r.pos === lbaOf(tag) * 512)!.release();
      expect(await drv.until(() => !(drv.reg(0, PORT_REG.SACT) & 1 << tag))).toBe(true);
      expect(drv.sdb(0).sactive >>> 0).toBe((1 << tag) >>> 0);
      expect(firstDifference(disk.sectors(lbaOf(tag), SECTORS), host.ram.slice(bufs[tag]!, bufs[tag]! + SECTORS * 512))).toBe(-1);
      if (tag > 0) expect(firstDifference(disk.sectors(lbaOf(tag - 1), SECTORS), disk.pattern.slice(lbaOf(tag - 1) * 512, (lbaOf(tag - 1) + SECTORS) * 512))).toBe(-1);
    }
    expect(drv.reg(0, PORT_REG.SACT)).toBe(0);
  });

  it("reports an NCQ error with an SDB FIS and TFES, aborts the rest, and names the tag in log page 10h", async () => {
    const disk = await heldDisk();
    const m = await machine({ ports: { 0: { kind: "ata", medium: disk.medium } } });
    const { drv, host, ahci } = m;
    disk.control.hold(["read"]);
    const bufs = build32(m).slice(0, 8);
    drv.issue(0, 0xff, true);
    expect(await drv.until(() => disk.control.held.length === 8)).toBe(true);
    const held = (tag: number) => disk.control.held.find((r) => r.pos === lbaOf(tag) * 512)!;
    held(2).release();
    expect(await drv.until(() => !(drv.reg(0, PORT_REG.SACT) & 1 << 2))).toBe(true);
    drv.ackPort(0);
    held(5).fail(new MediumError("io", "injected read error", { offset: (lbaOf(5) + 3) * 512 }));
    expect(await drv.until(() => (drv.reg(0, PORT_REG.IS) & PxIS.TFES) !== 0)).toBe(true);
    expect(drv.sdb(0)).toMatchObject({ type: FIS_TYPE.SDB, interrupt: true, status: 0x41, sactive: 0 });
    expect(drv.sdb(0).error & 0x40).toBe(0x40); // UNC
    expect(drv.reg(0, PORT_REG.TFD) & 0xff).toBe(0x41);
    expect(drv.reg(0, PORT_REG.SACT)).toBe(0xfb); // every tag but 2 is still outstanding
    expect(ahci.pci.irq.level).toBe(true);
    // the drive aborted the others: their late I/O moves nothing and completes nothing
    disk.control.releaseAll("reverse");
    await host.settle();
    await host.settle();
    expect(drv.reg(0, PORT_REG.SACT)).toBe(0xfb);
    for (const tag of [0, 1, 3, 4, 5, 6, 7]) expect(untouched(host.ram, bufs[tag]!, SECTORS * 512)).toBe(true);
    // libata EH: stop/start the engine, READ LOG EXT page 10h
    drv.ackPort(0);
    drv.restartEngine(0);
    expect([drv.reg(0, PORT_REG.SACT), drv.reg(0, PORT_REG.CI)]).toEqual([0, 0]);
    const log = m.alloc.alloc(512, 2);
    const r = await drv.run(0, 8, { fis: lba48(ATA.READ_LOG_EXT, 0, 1, { lbaLow: 0x10, lbaMid: 0, lbaHigh: 0, device: 0 }), prdt: [{ addr: log, len: 512 }] });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 512]);
    const page = host.ram.slice(log, log + 512);
    expect(page[0]! & 0x9f).toBe(5); // the failed tag, NQ clear
    expect([page[2], page[3]! & 0x40]).toEqual([0x41, 0x40]);
    const lba = page[4]! | page[5]! << 8 | page[6]! << 16;
    expect(lba).toBe(lbaOf(5) + 3);
    // the queue works again: retry the others
    drv.ackPort(0);
    disk.control.stopHolding();
    drv.issue(0, 0xdb, true);
    expect(await drv.until(() => drv.reg(0, PORT_REG.SACT) === 0)).toBe(true);
    for (const tag of [0, 1, 3, 4, 6, 7]) expect(firstDifference(host.ram.slice(bufs[tag]!, bufs[tag]! + 4096), disk.sectors(lbaOf(tag), SECTORS))).toBe(-1);
  });

  it("fails one LBA (failWhen): TFES, new queued commands refused until page 10h is read, then the queue works", async () => {
    const disk = await heldDisk();
    disk.control.failWhen((r) => r.op === "read" && r.pos === 40 * 512, new MediumError("io", "injected read error", { offset: 40 * 512 }));
    const m = await machine({ ports: { 0: { kind: "ata", medium: disk.medium } } });
    const { drv, alloc, host } = m;
    const buf = alloc.alloc(4096, 4096);
    drv.buildCommand(0, 3, { fis: fpdma(false, 3, 40, 1), prdt: [{ addr: buf, len: 512 }] });
    drv.issue(0, 1 << 3, true);
    expect(await drv.until(() => (drv.reg(0, PORT_REG.IS) & PxIS.TFES) !== 0)).toBe(true);
    expect(drv.sdb(0)).toMatchObject({ status: 0x41, error: 0x40, sactive: 0 });
    expect(drv.reg(0, PORT_REG.SACT)).toBe(1 << 3);
    // a queued command before the log is read: the drive refuses it (ABRT)
    drv.restartEngine(0);
    drv.buildCommand(0, 4, { fis: fpdma(false, 4, 41, 1), prdt: [{ addr: buf, len: 512 }] });
    drv.issue(0, 1 << 4, true);
    expect(await drv.until(() => (drv.reg(0, PORT_REG.IS) & PxIS.TFES) !== 0)).toBe(true);
    expect(drv.sdb(0)).toMatchObject({ status: 0x41, error: 0x04 });
    // READ LOG EXT page 10h names tag 3 and LBA 40, and ends the error condition
    drv.restartEngine(0);
    const log = alloc.alloc(512, 2);
    const r = await drv.run(0, 0, { fis: lba48(ATA.READ_LOG_EXT, 0, 1, { lbaLow: 0x10, lbaMid: 0, lbaHigh: 0, device: 0 }), prdt: [{ addr: log, len: 512 }] });
    expect([r.ci, r.tfd]).toEqual([0, 0x50]);
    expect([host.ram[log], host.ram[log + 4]]).toEqual([3, 40]);
    drv.ackPort(0);
    drv.issue(0, 1 << 4, true);
    expect(await drv.until(() => drv.reg(0, PORT_REG.SACT) === 0)).toBe(true);
    expect(drv.reg(0, PORT_REG.IS) & PxIS.TFES).toBe(0);
    expect(firstDifference(host.ram.slice(buf, buf + 512), disk.sectors(41, 1))).toBe(-1);
  });

  it("serialises a non-queued command behind queued ones on the same port", async () => {
    const disk = new MemoryDisk(8192).fillPattern();
    const m = await machine({ ports: { 0: { kind: "ata", medium: disk } } });
    const { drv, host, alloc } = m;
    disk.hold = true;
    const q = alloc.alloc(4096, 4096);
    const d = alloc.alloc(512, 512);
    drv.buildCommand(0, 0, { fis: fpdma(false, 0, 7, 8), prdt: [{ addr: q, len: 4096 }] });
    drv.buildCommand(0, 1, { fis: lba48(ATA.READ_DMA_EXT, 9, 1), prdt: [{ addr: d, len: 512 }] });
    drv.setReg(0, PORT_REG.SACT, 1);
    drv.setReg(0, PORT_REG.CI, 3);
    await host.settle();
    expect(disk.calls.length).toBe(1); // only the queued read reached the medium
    expect([drv.reg(0, PORT_REG.CI), drv.reg(0, PORT_REG.SACT)]).toEqual([2, 1]);
    disk.release();
    expect(await drv.until(() => disk.heldCount > 0 || drv.reg(0, PORT_REG.CI) === 0)).toBe(true);
    disk.hold = false;
    disk.release();
    expect(await drv.until(() => drv.reg(0, PORT_REG.CI) === 0 && drv.reg(0, PORT_REG.SACT) === 0)).toBe(true);
    expect(firstDifference(host.ram.slice(q, q + 4096), disk.sector(7, 8))).toBe(-1);
    expect(firstDifference(host.ram.slice(d, d + 512), disk.sector(9))).toBe(-1);
  });

  it("runs four ports at once, each with its own queue", async () => {
    const host = new TestHost();
    const alloc = new GuestAllocator(host);
    const disks = [0, 1, 2, 3].map(() => new MemoryDisk(4096).fillPattern());
    const { drv, ahci } = rig(host, alloc, { ports: Object.fromEntries(disks.map((medium, i) => [i, { kind: "ata" as const, medium }])) });
    drv.resetHba();
    drv.enableInterrupts();
    for (const p of [0, 1, 2, 3]) await drv.startPort(p, { ie: LINUX_IE });
    for (const d of disks) d.hold = true;
    const bufs = new Map<string, number>();
    for (const p of [0, 1, 2, 3]) {
      for (let tag = 0; tag < 8; tag++) {
        const buf = alloc.alloc(4096, 4096);
        bufs.set(`${p}.${tag}`, buf);
        drv.buildCommand(p, tag, { fis: fpdma(false, tag, p * 500 + tag * 8, 8), prdt: [{ addr: buf, len: 4096 }] });
      }
      drv.issue(p, 0xff, true);
    }
    expect(await drv.until(() => disks.every((d) => d.heldCount === 8))).toBe(true);
    for (const p of [0, 1, 2, 3]) expect(drv.reg(p, PORT_REG.SACT)).toBe(0xff);
    for (const d of [...disks].reverse()) d.release();
    expect(await drv.until(() => [0, 1, 2, 3].every((p) => drv.reg(p, PORT_REG.SACT) === 0))).toBe(true);
    expect(drv.hba(HBA_REG.IS)).toBe(0xf);
    expect(ahci.pci.irq.level).toBe(true);
    for (const p of [0, 1, 2, 3]) {
      for (let tag = 0; tag < 8; tag++) {
        const buf = bufs.get(`${p}.${tag}`)!;
        expect(firstDifference(host.ram.slice(buf, buf + 4096), disks[p]!.sector(p * 500 + tag * 8, 8))).toBe(-1);
      }
    }
  });
});
