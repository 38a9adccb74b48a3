/**
 * Non-queued commands through the command list: PIO with PIO Setup FISes, DMA through
 * multi-entry PRDTs, PRDBC, DPS, and what broken or hostile command lists turn into.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { encodeTrimRanges } from "../ata/dsm.js";
import { firstDifference, MemoryDisk } from "../ata/test-support.js";
import { FIS_TYPE } from "./fis.js";
import { PORT_REG, PxCMD, PxIS } from "./registers.js";
import { ATA, identifyString, lba28, lba48 } from "./test-driver.js";
import { rig } from "./test-setup.js";

async function started(o: Parameters<typeof rig>[2] = {}) {
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const r = rig(host, alloc, o);
  r.drv.resetHba();
  await r.drv.startPort(0);
  r.drv.ackPort(0);
  return { ...r, alloc };
}

/** A buffer in guest RAM filled with `fill`. */
function buffer(host: TestHost, alloc: GuestAllocator, bytes: number, fill = 0xcc): number {
  const at = alloc.alloc(bytes, 4096);
  host.ram.fill(fill, at, at + bytes);
  return at;
}

describe("AHCI PIO commands", () => {
  it("answers IDENTIFY DEVICE by PIO: PIO Setup FIS with E_Status, PSS, PRDBC, no D2H", async () => {
    const { drv, host } = await started();
    const id = await drv.identify(0);
    expect(id.is & (PxIS.PSS | PxIS.DHRS | PxIS.TFES)).toBe(PxIS.PSS);
    expect(id.tfd).toBe(0x50);
    expect(id.prdbc).toBe(512);
    expect(drv.reg(0, PORT_REG.CI)).toBe(0);
    expect(drv.pioSetup(0)).toMatchObject({ type: FIS_TYPE.PIO_SETUP, toHost: true, interrupt: true, status: 0x58, endStatus: 0x50, transferCount: 512 });
    expect(identifyString(id.words, 10, 10)).toBe("VB1234-5678");
    expect(identifyString(id.words, 27, 20)).toBe("VSTOR SATA DISK");
    expect(id.words[76]! & 0x0106).toBe(0x0106); // SATA Gen1, Gen2, NCQ
    expect(id.words[75]).toBe(31); // queue depth 32
    expect(id.words[93]).toBe(0); // no PATA cable word on SATA
    expect(host.dmaInMmio).toBe(0);
  });

  it("scatters PIO data over a multi-entry PRDT and handles multi-block READ/WRITE SECTORS", async () => {
    const { drv, host, alloc, disk } = await started();
    const parts = [buffer(host, alloc, 512), buffer(host, alloc, 1024), buffer(host, alloc, 512)];
    let r = await drv.run(0, 3, { fis: lba28(ATA.READ_SECTORS, 100, 4), prdt: [{ addr: parts[0]!, len: 512 }, { addr: parts[1]!, len: 1024 }, { addr: parts[2]!, len: 512 }] });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 2048]);
    expect(r.is & (PxIS.PSS | PxIS.DHRS)).toBe(PxIS.PSS);
    expect(firstDifference(host.ram.slice(parts[0]!, parts[0]! + 512), disk.sector(100))).toBe(-1);
    expect(firstDifference(host.ram.slice(parts[1]!, parts[1]! + 1024), disk.sector(101, 2))).toBe(-1);
    expect(firstDifference(host.ram.slice(parts[2]!, parts[2]! + 512), disk.sector(103))).toBe(-1);
    drv.ackPort(0);
    const src = buffer(host, alloc, 1024, 0x77);
    r = await drv.run(0, 4, { fis: lba28(ATA.WRITE_SECTORS, 300, 2), prdt: [{ addr: src, len: 1024 }], write: true });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 1024]);
    expect(r.is & PxIS.DHRS).toBe(PxIS.DHRS); // a data-out command ends with a D2H FIS
    expect(disk.sector(300, 2).every((b) => b === 0x77)).toBe(true);
  });
});

describe("AHCI DMA commands", () => {
  it("reads and writes through multi-entry PRDTs, checked against the disk, with DPS for PRDs with I", async () => {
    const { drv, host, alloc, disk } = await started();
    const a = buffer(host, alloc, 4096);
    const b = buffer(host, alloc, 8192);
    let r = await drv.run(0, 0, {
      fis: lba48(ATA.READ_DMA_EXT, 1000, 24),
      prdt: [{ addr: a, len: 4096, interrupt: true }, { addr: b, len: 6144 }, { addr: b + 6144, len: 2048 }],
    });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 12288]);
    expect(r.is & (PxIS.DHRS | PxIS.DPS | PxIS.TFES)).toBe(PxIS.DHRS | PxIS.DPS);
    expect(drv.d2h(0)).toMatchObject({ type: FIS_TYPE.REG_D2H, interrupt: true, status: 0x50, error: 0 });
    expect(firstDifference(host.ram.slice(a, a + 4096), disk.sector(1000, 8))).toBe(-1);
    expect(firstDifference(host.ram.slice(b, b + 8192), disk.sector(1008, 16))).toBe(-1);
    drv.ackPort(0);
    const src = buffer(host, alloc, 3072);
    for (let i = 0; i < 3072; i++) host.ram[src + i] = (i * 13 + 5) & 0xff;
    r = await drv.run(0, 31, { fis: lba48(ATA.WRITE_DMA_EXT, 2000, 6), prdt: [{ addr: src + 2048, len: 1024 }, { addr: src, len: 2048 }], write: true });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 3072]);
    const expected = new Uint8Array(3072);
    expected.set(host.ram.subarray(src + 2048, src + 3072), 0);
    expected.set(host.ram.subarray(src, src + 2048), 1024);
    expect(firstDifference(disk.sector(2000, 6), expected)).toBe(-1);
  });

  it("ends a command whose PRDT is too short with TFES (ABRT) and OFS, keeps its PxCI bit and stops until ST is cycled", async () => {
    const { drv, host, alloc, disk } = await started();
    const a = buffer(host, alloc, 1024);
    let r = await drv.run(0, 2, { fis: lba48(ATA.READ_DMA_EXT, 0, 4), prdt: [{ addr: a, len: 1024 }] });
    expect(r.is & (PxIS.TFES | PxIS.OFS | PxIS.DHRS)).toBe(PxIS.TFES | PxIS.OFS | PxIS.DHRS);
    expect(r.tfd).toBe(0x0441); // ABRT, DRDY|ERR
    expect(r.ci).toBe(1 << 2);
    // stopped: a new command waits
    const b = buffer(host, alloc, 512);
    drv.buildCommand(0, 5, { fis: lba48(ATA.READ_DMA_EXT, 9, 1), prdt: [{ addr: b, len: 512 }] });
    drv.issue(0, 1 << 5);
    await host.settle();
    expect(drv.reg(0, PORT_REG.CI)).toBe((1 << 2 | 1 << 5) >>> 0);
    // AHCI 6.2.2 recovery: ST off (clears PxCI), clear SERR/IS, ST on, reissue
    drv.restartEngine(0);
    expect(drv.reg(0, PORT_REG.CI)).toBe(0);
    r = await drv.run(0, 5, { fis: lba48(ATA.READ_DMA_EXT, 9, 1), prdt: [{ addr: b, len: 512 }] });
    expect([r.ci, r.tfd]).toEqual([0, 0x50]);
    expect(firstDifference(host.ram.slice(b, b + 512), disk.sector(9))).toBe(-1);
  });

  it("turns a PRDT outside guest RAM into a host bus fatal error without touching memory or throwing", async () => {
    const { drv, host, alloc } = await started();
    const ram = host.ram.length;
    const before = host.dmaErrors;
    const r = await drv.run(0, 0, { fis: lba48(ATA.READ_DMA_EXT, 0, 8), prdt: [{ addr: ram - 1024, len: 4096 }] });
    expect(r.is & PxIS.HBFS).toBe(PxIS.HBFS);
    expect(r.ci).toBe(1);
    expect(host.dmaErrors).toBeGreaterThan(before);
    expect(host.ram.slice(ram - 1024).every((x) => x === 0)).toBe(true);
    // the port recovers after COMRESET and a restart
    drv.stopPort(0);
    drv.comreset(0);
    await drv.startPort(0);
    const buf = buffer(host, alloc, 512);
    const ok = await drv.run(0, 0, { fis: lba48(ATA.READ_DMA_EXT, 1, 1), prdt: [{ addr: buf, len: 512 }] });
    expect([ok.ci, ok.tfd]).toEqual([0, 0x50]);
    expect(host.traces.filter((t) => /internal error|threw/.test(t.message))).toEqual([]);
  });

  it("reports command lists, command tables and FIS areas outside RAM as HBFS", async () => {
    const { drv, host } = await started();
    const far = host.ram.length + 0x10000;
    drv.setReg(0, PORT_REG.CMD, drv.reg(0, PORT_REG.CMD) & ~PxCMD.ST);
    drv.setReg(0, PORT_REG.CLB, far);
    drv.setReg(0, PORT_REG.CMD, drv.reg(0, PORT_REG.CMD) | PxCMD.ST);
    drv.setReg(0, PORT_REG.CI, 1);
    await host.settle();
    expect(drv.reg(0, PORT_REG.IS) & PxIS.HBFS).toBe(PxIS.HBFS);
    expect(drv.reg(0, PORT_REG.CMD) & PxCMD.CR).toBe(PxCMD.CR); // stopped, but still "running" until ST clears
  });

  it("survives hostile PRDTL and DBC values", async () => {
    const { drv, host, alloc, disk } = await started();
    // 65535 two-byte entries (DBC 1) cover 128 KiB - 2: an 8-sector read walks 2048 of them
    const data = buffer(host, alloc, 4096);
    const table = alloc.alloc(0x80 + 65535 * 16, 128);
    const view = new DataView(host.ram.buffer);
    for (let i = 0; i < 65535; i++) {
      view.setUint32(table + 0x80 + 16 * i, data + 2 * (i % 2048), true);
      view.setUint32(table + 0x80 + 16 * i + 12, 0xfffc0000 | 0, true); // I set, reserved bits, DBC 0 (→ 2 bytes)
    }
    let r = await drv.run(0, 0, { fis: lba48(ATA.READ_DMA_EXT, 50, 8), table, prdtl: 65535 });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 4096]);
    expect(firstDifference(host.ram.slice(data, data + 4096), disk.sector(50, 8))).toBe(-1);
    drv.ackPort(0);
    // an entry claiming 4 MiB at the top of RAM, and a PRDTL of 65535 whose table runs out of RAM
    r = await drv.run(0, 1, { fis: lba48(ATA.READ_DMA_EXT, 0, 32), prdt: [{ addr: host.ram.length - 8192, len: 4 << 20 }] });
    expect(r.is & PxIS.HBFS).toBe(PxIS.HBFS);
    drv.restartEngine(0);
    const tail = host.ram.length - 0x100; // 8 PRDT entries fit, the other 65527 are beyond RAM
    r = await drv.run(0, 2, { fis: lba48(ATA.READ_DMA_EXT, 0, 8), table: tail, prdtl: 65535 });
    expect(r.is & PxIS.HBFS).toBe(PxIS.HBFS);
    expect(host.traces.filter((t) => /internal error|threw/.test(t.message))).toEqual([]);
  });

  it("refuses to master the bus while PCI bus mastering is off", async () => {
    const host = new TestHost();
    const { drv } = rig(host, new GuestAllocator(host), { noBusMaster: true });
    drv.resetHba();
    await drv.startPort(0);
    // the signature arrived (PxSIG) but could not be written to the FIS area
    expect(drv.reg(0, PORT_REG.SIG)).toBe(0x101);
    expect(drv.reg(0, PORT_REG.IS) & PxIS.HBFS).toBe(PxIS.HBFS);
    expect(host.traces.some((t) => /bus mastering is off/.test(t.message))).toBe(true);
  });
});

describe("AHCI command set details", () => {
  it("fails IDENTIFY PACKET DEVICE on a disk with TFES, as SeaBIOS's probe expects, and recovers", async () => {
    const { drv } = await started();
    let id = await drv.identify(0, 0, ATA.IDENTIFY_PACKET_DEVICE);
    expect(id.is & (PxIS.TFES | PxIS.DHRS)).toBe(PxIS.TFES | PxIS.DHRS);
    expect(drv.d2h(0)).toMatchObject({ status: 0x41, error: 0x04 });
    drv.restartEngine(0);
    id = await drv.identify(0, 0, ATA.IDENTIFY_DEVICE);
    expect([id.tfd, id.is & PxIS.TFES, id.words[0]]).toEqual([0x50, 0, 0x0040]);
  });

  it("passes DATA SET MANAGEMENT (TRIM) through to the medium's discard", async () => {
    const disk = new MemoryDisk(8192).fillPattern();
    const { drv, host, alloc } = await started({ ports: { 0: { kind: "ata", medium: disk, discard: true } } });
    const id = await drv.identify(0);
    expect(id.words[169]! & 1).toBe(1);
    drv.ackPort(0);
    const payload = encodeTrimRanges([{ lba: 64, count: 8 }, { lba: 1000, count: 100 }]);
    const at = alloc.alloc(payload.length, 2);
    host.ram.set(payload, at);
    const r = await drv.run(0, 1, { fis: lba48(ATA.DATA_SET_MANAGEMENT, 0, 1, { features: 1 }), prdt: [{ addr: at, len: 512 }], write: true });
    expect([r.ci, r.tfd]).toEqual([0, 0x50]);
    expect(disk.discards).toEqual([{ offset: 64 * 512, length: 8 * 512 }, { offset: 1000 * 512, length: 100 * 512 }]);
  });

  it("flushes on FLUSH CACHE EXT", async () => {
    const { drv, disk } = await started();
    const r = await drv.run(0, 0, { fis: { command: ATA.FLUSH_CACHE_EXT } });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 0]);
    expect(disk.flushes).toBe(1);
  });

  it("runs libahci's software reset: two Device Control FISes, SRST then not, then the signature", async () => {
    const { drv, host } = await started();
    drv.ackPort(0);
    let r = await drv.run(0, 0, { fis: new Uint8Array([0x27, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0]), reset: true, clearBusy: true });
    expect(r.ci).toBe(0);
    expect(r.tfd & 0x80).toBe(0x80);
    r = await drv.run(0, 0, { fis: new Uint8Array([0x27, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0, 0, 0, 0]) });
    await host.settle();
    expect(r.ci).toBe(0);
    expect(drv.reg(0, PORT_REG.TFD)).toBe(0x150);
    expect(drv.reg(0, PORT_REG.SIG)).toBe(0x101);
    const id = await drv.identify(0);
    expect(id.tfd).toBe(0x50);
  });

  it("stops on a command FIS that is not a Register H2D FIS (IFS)", async () => {
    const { drv } = await started();
    const r = await drv.run(0, 0, { fis: new Uint8Array([0x34, 0x80, 0xec, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) });
    expect(r.is & PxIS.IFS).toBe(PxIS.IFS);
    expect(r.ci).toBe(1);
  });
});
