import { describe, expect, it } from "vitest";
import { TestHost } from "../../host-adapter/testbench/index.js";
import { firstDifference, MemoryDisk } from "../ata/test-support.js";
import { NoMediumAtapi } from "./no-medium.js";
import { CMD, identifyString, IdeTestDriver, STATUS_BSY, STATUS_DRDY, STATUS_DRQ, STATUS_ERR } from "./test-driver.js";
import { rig as baseRig, type RigOptions } from "./test-setup.js";

const READY = 0x50; // DRDY | DSC

// On both medium paths: asynchronous, and synchronous (data ready before the command write returns).
describe.each([
  { path: "asynchronous medium", sync: false },
  { path: "synchronous medium", sync: true },
])("IDE PIO, $path", ({ sync }) => {
  const rig = (host: TestHost, o: RigOptions = {}) => baseRig(host, { ...o, syncDisk: sync });
  it.each([2, 4] as const)("IDENTIFY DEVICE with %i-byte data accesses: model, serial, interrupt", async (width) => {
    const { host, p } = rig(new TestHost());
    p.select(0);
    p.command(CMD.IDENTIFY_DEVICE);
    expect(p.irqUp).toBe(true);
    expect(p.altStatus() & (STATUS_BSY | STATUS_DRQ)).toBe(STATUS_DRQ);
    expect(p.irqUp).toBe(true); // alternate status does not clear INTRQ
    expect(p.status() & STATUS_DRQ).toBe(STATUS_DRQ);
    expect(p.irqUp).toBe(false); // status does
    const id = new Uint16Array(p.readData(512, width).buffer);
    expect(identifyString(id, 27, 20)).toBe("VSTOR TEST DISK");
    expect(identifyString(id, 10, 10)).toBe("VB1234-5678");
    expect(id[60]! | (id[61]! << 16)).toBe(8192);
    expect(id[88]! & 0x07).toBe(0x07); // PIIX4: UDMA 0-2
    expect(p.status()).toBe(READY); // the last word completed it, without another interrupt
    expect(p.irqUp).toBe(false);
    expect(host.irqLog.filter((e) => e.irq === 14 && e.level)).toHaveLength(1);
  });

  it("reports the chipset's DMA modes in IDENTIFY (PIIX3: multiword only; ICH6: UDMA 0-6, 80-wire cable)", async () => {
    const id3 = await rig(new TestHost(), { chipset: "piix3" }).p.identify(0);
    expect(id3[88]).toBe(0);
    expect(id3[63]! & 0x07).toBe(0x07);
    const id6 = await rig(new TestHost(), { chipset: "ich6" }).p.identify(0);
    expect(id6[88]! & 0x7f).toBe(0x7f);
    expect(id6[93]! & (1 << 13)).toBe(1 << 13);
  });

  it("reads sectors by PIO, one interrupt per block, data from the medium", async () => {
    const { p, disk } = rig(new TestHost());
    p.command(CMD.READ_SECTORS, IdeTestDriver.lba28(0, 100, 5));
    const { data, status } = await p.pioIn(5);
    expect(status).toBe(READY);
    expect(firstDifference(data, disk.sector(100, 5))).toBe(-1);
  });

  it("reads with READ MULTIPLE (4-sector blocks) and 32-bit accesses", async () => {
    const { p, disk } = rig(new TestHost());
    p.command(CMD.SET_MULTIPLE_MODE, { count: 4, device: 0xe0 });
    expect(await p.waitIrq()).toBe(true);
    expect(p.status()).toBe(READY);
    p.command(CMD.READ_MULTIPLE, IdeTestDriver.lba28(0, 7, 10));
    // 10 sectors = DRQ blocks of 4, 4 and 2 sectors, one interrupt each
    const parts: Uint8Array[] = [];
    for (const sectors of [4, 4, 2]) {
      expect(await p.waitIrq()).toBe(true);
      expect(p.status() & (STATUS_BSY | STATUS_DRQ)).toBe(STATUS_DRQ);
      parts.push(p.readData(sectors * 512, 4));
    }
    expect(p.status()).toBe(READY);
    const data = new Uint8Array(5120);
    parts.forEach((d, i) => data.set(d, i * 2048));
    expect(firstDifference(data, disk.sector(7, 10))).toBe(-1);
  });

  it("writes sectors by PIO (first block without an interrupt) and the medium has them", async () => {
    const { p, disk } = rig(new TestHost());
    const payload = new Uint8Array(3 * 512).map((_, i) => (i * 31 + 7) & 0xff);
    p.command(CMD.WRITE_SECTORS, IdeTestDriver.lba28(0, 40, 3));
    expect(p.irqUp).toBe(false);
    const status = await p.pioOut(payload, 512, 4);
    expect(status).toBe(READY);
    expect(firstDifference(disk.sector(40, 3), payload)).toBe(-1);
  });

  it("moves one byte per 8-bit data access", async () => {
    const { p, disk } = rig(new TestHost());
    p.command(CMD.READ_SECTORS, IdeTestDriver.lba28(0, 3, 1));
    await p.waitIrq();
    p.status();
    const bytes = Array.from({ length: 512 }, () => p.m.in8(p.base));
    expect(firstDifference(new Uint8Array(bytes), disk.sector(3))).toBe(-1);
    expect(p.status()).toBe(READY);
  });

  it("reads the HOB bytes of an LBA48 address back with the HOB bit", async () => {
    const { p, disk } = rig(new TestHost());
    const lba = 0x1234;
    p.command(CMD.READ_SECTORS_EXT, IdeTestDriver.lba48(0, lba, 2));
    const { data } = await p.pioIn(2);
    expect(firstDifference(data, disk.sector(lba, 2))).toBe(-1);
    p.setReg(3, 0x11); // low byte moves into the HOB slot
    p.setReg(3, 0x22);
    p.devctl(0x80);
    expect(p.reg(3)).toBe(0x11);
    p.devctl(0x00);
    expect(p.reg(3)).toBe(0x22);
    p.devctl(0x80);
    p.setReg(4, 0); // any command block write clears HOB
    expect(p.reg(3)).toBe(0x22);
  });

  it("masks INTRQ with nIEN and raises it again when nIEN is cleared with the interrupt still pending", async () => {
    const { host, p } = rig(new TestHost());
    p.devctl(0x02);
    p.command(CMD.IDENTIFY_DEVICE, { device: 0xa0 });
    expect(p.irqUp).toBe(false);
    expect(p.altStatus() & STATUS_DRQ).toBe(STATUS_DRQ);
    expect(p.bmStatus() & 0x04).toBe(0); // no edge seen by the bus master either
    p.devctl(0x00);
    expect(p.irqUp).toBe(true);
    expect(p.bmStatus() & 0x04).toBe(0x04);
    p.status();
    expect(p.irqUp).toBe(false);
    p.readData(512);
    expect(host.traces).toEqual([]);
  });

  it("drops INTRQ when the other drive is selected and brings it back when the drive is selected again", async () => {
    const disk2 = new MemoryDisk(64);
    const { p } = rig(new TestHost(), { primary: { master: { kind: "ata", medium: new MemoryDisk(64) }, slave: { kind: "ata", medium: disk2 } } });
    p.select(1);
    p.command(CMD.FLUSH_CACHE);
    expect(await p.waitIrq()).toBe(true);
    p.select(0);
    expect(p.irqUp).toBe(false);
    p.select(1);
    expect(p.irqUp).toBe(true);
    expect(p.status()).toBe(READY);
    expect(p.irqUp).toBe(false);
  });

  it("answers for an absent slave: status 00h, the ATA master's registers otherwise; commands ignored", async () => {
    const { host, p } = rig(new TestHost());
    p.select(1);
    expect(p.status()).toBe(0);
    expect(p.altStatus()).toBe(0);
    expect(p.error()).toBe(0);
    // ata_devchk: the registers read back (the master holds them), so libata goes on to classify
    p.setReg(2, 0x55);
    p.setReg(3, 0xaa);
    expect([p.reg(2), p.reg(3), p.reg(6)]).toEqual([0x55, 0xaa, 0xf0]);
    p.setReg(7, CMD.IDENTIFY_DEVICE);
    await host.settle();
    expect(p.irqUp).toBe(false);
    expect(p.status()).toBe(0);
    expect(host.traces.map((t) => t.message)).toEqual(["primary: command ech to absent device 1: ignored"]);
  });

  it("reads 00h for an absent slave behind an ATAPI master (so probes find nothing)", () => {
    const { s } = rig(new TestHost());
    s.select(1);
    s.setReg(2, 0x55);
    s.setReg(3, 0xaa);
    expect([s.status(), s.reg(2), s.reg(3), s.error()]).toEqual([0, 0, 0, 0]);
  });

  it("reads 7Fh on every port of a channel with no drive, and on an absent master with a slave", () => {
    const host = new TestHost();
    const { p, s } = rig(host, { secondary: {} });
    expect([s.status(), s.altStatus(), s.reg(2), s.error()]).toEqual([0x7f, 0x7f, 0x7f, 0x7f]);
    expect(host.in16(0x170)).toBe(0x7f7f);
    expect(host.in32(0x170)).toBe(0x7f7f7f7f);
    s.setReg(2, 0x55);
    expect(s.reg(2)).toBe(0x7f);
    const only = rig(new TestHost(), { primary: { slave: { kind: "ata", medium: new MemoryDisk(64) } } });
    only.p.select(0);
    expect(only.p.status()).toBe(0x7f);
    only.p.select(1);
    expect(only.p.status()).toBe(READY);
    void p;
  });

  it("EXECUTE DEVICE DIAGNOSTIC runs on both drives: signatures, code 01h, one interrupt from device 0", async () => {
    const { host, s } = rig(new TestHost(), { secondary: { master: { kind: "atapi", packetHandler: new NoMediumAtapi() }, slave: { kind: "ata", medium: new MemoryDisk(64) } } });
    s.select(1);
    s.setReg(2, 0x33);
    s.command(CMD.EXECUTE_DEVICE_DIAGNOSTIC);
    expect(s.irqUp).toBe(false); // device 1 is selected; device 0 interrupts
    s.select(0);
    expect(s.irqUp).toBe(true);
    expect([s.status(), s.error(), s.reg(2), s.reg(3), s.reg(4), s.reg(5)]).toEqual([0x00, 0x01, 0x01, 0x01, 0x14, 0xeb]);
    s.select(1);
    expect([s.status(), s.error(), s.reg(2), s.reg(3), s.reg(4), s.reg(5)]).toEqual([READY, 0x01, 0x01, 0x01, 0x00, 0x00]);
    expect(s.irqUp).toBe(false);
    expect(host.irqLog.filter((e) => e.irq === 15 && e.level)).toHaveLength(1);
  });

  it("ATAPI: IDENTIFY DEVICE aborts with the signature; IDENTIFY PACKET DEVICE works", async () => {
    const { s } = rig(new TestHost());
    s.select(0);
    s.command(CMD.IDENTIFY_DEVICE, { device: 0xa0 });
    expect(await s.waitIrq()).toBe(true);
    expect(s.status() & STATUS_ERR).toBe(STATUS_ERR);
    expect([s.error(), s.reg(4), s.reg(5)]).toEqual([0x04, 0x14, 0xeb]);
    const id = await s.identify(0, 4, CMD.IDENTIFY_PACKET_DEVICE);
    expect(id[0]! >> 14).toBe(2); // ATAPI
    expect((id[0]! >> 8) & 0x1f).toBe(5); // CD/DVD
    expect(identifyString(id, 27, 20)).toBe("VBOX CD-ROM");
  });

  it("ATAPI PACKET by PIO: INQUIRY data, TEST UNIT READY fails NOT READY, REQUEST SENSE says medium not present", async () => {
    const { s } = rig(new TestHost());
    const packet = async (cdb: number[], expectData: number): Promise<{ data: Uint8Array; status: number; error: number }> => {
      s.command(CMD.PACKET, { features: 0, lbaMid: 0x00, lbaHigh: 0x02, device: 0xa0 });
      expect(s.irqUp).toBe(false); // the command packet is taken without an interrupt
      expect(s.altStatus() & (STATUS_BSY | STATUS_DRQ)).toBe(STATUS_DRQ);
      expect(s.reg(2) & 3).toBe(1); // CoD
      const c = new Uint8Array(12);
      c.set(cdb);
      s.writeData(c);
      let data: Uint8Array = new Uint8Array(0);
      if (expectData > 0) {
        expect(await s.waitIrq()).toBe(true);
        expect(s.status() & STATUS_DRQ).toBe(STATUS_DRQ);
        expect(s.reg(2) & 3).toBe(2); // IO, data phase
        const n = s.reg(4) | (s.reg(5) << 8);
        expect(n).toBe(expectData);
        data = s.readData(n);
      }
      expect(await s.waitIrq()).toBe(true);
      expect(s.reg(2) & 3).toBe(3); // status phase
      return { data, status: s.status(), error: s.error() };
    };
    const inq = await packet([0x12, 0, 0, 0, 96], 36);
    expect(inq.status).toBe(READY);
    expect(inq.data[0]).toBe(0x05);
    expect(new TextDecoder().decode(inq.data.subarray(8, 22))).toBe("VBOX    CD-ROM");
    const tur = await packet([0x00], 0);
    expect(tur.status & (STATUS_ERR | STATUS_DRDY)).toBe(STATUS_ERR | STATUS_DRDY);
    expect(tur.error >> 4).toBe(0x2); // NOT READY
    const sense = await packet([0x03, 0, 0, 0, 18], 18);
    expect([sense.data[2], sense.data[12]]).toEqual([0x02, 0x3a]);
  });
});
