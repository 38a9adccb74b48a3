/**
 * An ATAPI CD/DVD drive on an AHCI port: the packet from the command table's ACMD, data by PIO
 * (one PIO Setup FIS per DRQ block) or DMA, status by D2H FIS, sense through the shared MMC
 * target, with an ISO image from media/formats/iso as the disc.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { createAtapiCdrom } from "../atapi/atapi-scsi.js";
import { firstDifference } from "../ata/test-support.js";
import { cdb, cdPattern } from "../scsi/test-support.js";
import { concatBytes } from "../scsi/bytes.js";
import { PORT_REG, PxIS, SIG } from "./registers.js";
import { ATA, identifyString, type AhciTestDriver } from "./test-driver.js";
import { isoImage } from "./test-media.js";
import { rig } from "./test-setup.js";

async function cdMachine() {
  const { medium } = await isoImage(64);
  const cd = createAtapiCdrom({ medium });
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const r = rig(host, alloc, { ports: { 1: { kind: "atapi", packetHandler: cd.handler } } });
  r.drv.resetHba();
  await r.drv.startPort(1);
  r.drv.ackPort(1);
  return { ...r, alloc, cd };
}

/** Send one packet: PIO with a byte count limit, or DMA. */
function packet(drv: AhciTestDriver, slot: number, bytes: number[], buf: number, len: number, dma: boolean, limit = 0xfffe) {
  return drv.run(1, slot, {
    fis: { command: ATA.PACKET, features: dma ? 1 : 0, lbaMid: limit & 0xff, lbaHigh: limit >> 8 },
    acmd: bytes,
    atapi: true,
    prdt: len ? [{ addr: buf, len }] : [],
  });
}

describe("AHCI ATAPI", () => {
  it("reports the ATAPI signature and answers IDENTIFY PACKET DEVICE, not IDENTIFY DEVICE", async () => {
    const { drv } = await cdMachine();
    expect(drv.reg(1, PORT_REG.SIG) >>> 0).toBe(SIG.ATAPI);
    let id = await drv.identify(1, 0, ATA.IDENTIFY_DEVICE);
    expect(id.is & PxIS.TFES).toBe(PxIS.TFES);
    expect(drv.d2h(1)).toMatchObject({ status: 0x41, error: 0x04, lbaMid: 0x14, lbaHigh: 0xeb });
    drv.restartEngine(1);
    id = await drv.identify(1, 0, ATA.IDENTIFY_PACKET_DEVICE);
    expect([id.tfd, id.prdbc, id.is & PxIS.PSS]).toEqual([0x50, 512, PxIS.PSS]);
    expect(id.words[0]! >> 8 & 0x1f).toBe(5); // CD/DVD: what SeaBIOS checks
    expect(id.words[76]! & 0x100).toBe(0); // no NCQ on a packet device
    expect(identifyString(id.words, 27, 20)).toBe("VBOX CD-ROM");
  });

  it("answers INQUIRY by PIO with a PIO Setup FIS per block and a D2H FIS at the end", async () => {
    const { drv, host, alloc } = await cdMachine();
    const buf = alloc.alloc(96, 2);
    const r = await packet(drv, 2, cdb.inquiry(36), buf, 36, false);
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 36]);
    expect(r.is & (PxIS.PSS | PxIS.DHRS | PxIS.TFES)).toBe(PxIS.PSS | PxIS.DHRS);
    expect(drv.pioSetup(1)).toMatchObject({ toHost: true, interrupt: true, transferCount: 36, count: 0x02 }); // IO, data
    expect(host.ram[buf]).toBe(0x05);
    expect(String.fromCharCode(...host.ram.slice(buf + 8, buf + 36))).toBe("VBOX    CD-ROM          1.0 ");
  });

  it("splits PIO data at the byte count limit", async () => {
    const { drv, host, alloc } = await cdMachine();
    const buf = alloc.alloc(4096, 2);
    const r = await packet(drv, 0, cdb.read10(3, 2), buf, 4096, false, 1024);
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 4096]);
    expect(drv.pioSetup(1).transferCount).toBe(1024);
    expect(firstDifference(host.ram.slice(buf, buf + 4096), concatBytes([cdPattern(3), cdPattern(4)]))).toBe(-1);
  });

  it("reads an ISO through READ(10) by DMA", async () => {
    const { drv, host, alloc } = await cdMachine();
    const a = alloc.alloc(4096, 4096);
    const b = alloc.alloc(4096, 4096);
    const r = await drv.run(1, 7, {
      fis: { command: ATA.PACKET, features: 1 },
      acmd: cdb.read10(20, 4),
      atapi: true,
      prdt: [{ addr: a, len: 4096 }, { addr: b, len: 4096 }],
    });
    expect([r.ci, r.tfd, r.prdbc]).toEqual([0, 0x50, 8192]);
    expect(r.is & (PxIS.DHRS | PxIS.PSS)).toBe(PxIS.DHRS); // the packet's PIO Setup FIS has no I bit
    const read = concatBytes([host.ram.slice(a, a + 4096), host.ram.slice(b, b + 4096)]);
    expect(firstDifference(read, concatBytes([20, 21, 22, 23].map(cdPattern)))).toBe(-1);
    // the primary volume descriptor is there too
    const pvd = alloc.alloc(2048, 2);
    await packet(drv, 8, cdb.read10(16, 1), pvd, 2048, true);
    expect(String.fromCharCode(...host.ram.slice(pvd + 1, pvd + 6))).toBe("CD001");
  });

  it("ends a failing packet command with ERR and the sense key, and keeps the sense for REQUEST SENSE", async () => {
    const { drv, host, alloc, cd } = await cdMachine();
    expect((await packet(drv, 0, cdb.tur(), 0, 0, false)).tfd).toBe(0x50);
    cd.drive.eject({ force: true });
    const r = await packet(drv, 0, cdb.tur(), 0, 0, false);
    expect(r.is & PxIS.TFES).toBe(PxIS.TFES);
    expect(r.tfd & 0xff).toBe(0x41);
    expect(r.tfd >> 12).toBe(0x2); // NOT READY in error bits 7:4
    drv.restartEngine(1);
    const sense = alloc.alloc(18, 2);
    const s = await packet(drv, 1, cdb.requestSense(18), sense, 18, false);
    expect([s.tfd, s.prdbc]).toEqual([0x50, 18]);
    expect([host.ram[sense + 2]! & 0xf, host.ram[sense + 12]]).toEqual([0x2, 0x3a]); // MEDIUM NOT PRESENT
  });
});
