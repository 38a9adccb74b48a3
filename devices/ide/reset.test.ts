import { describe, expect, it } from "vitest";
import { TestHost } from "../../host-adapter/testbench/index.js";
import { MemoryDisk } from "../ata/test-support.js";
import { NoMediumAtapi } from "./no-medium.js";
import { CMD, IdeTestDriver, STATUS_BSY } from "./test-driver.js";
import { rig } from "./test-setup.js";

const READY = 0x50;

describe("IDE resets", () => {
  it("SRST: both drives BSY while asserted, signatures and device 0 selected after, no interrupt", async () => {
    const host = new TestHost();
    const { s } = rig(host, { secondary: { master: { kind: "atapi", packetHandler: new NoMediumAtapi() }, slave: { kind: "ata", medium: new MemoryDisk(64) } } });
    s.select(1);
    s.setReg(2, 0x77);
    s.setReg(5, 0x99);
    s.devctl(0x04 | 0x02); // SRST, nIEN (as Linux and SeaBIOS do)
    expect(s.altStatus()).toBe(STATUS_BSY | 0x10);
    expect(s.status() & STATUS_BSY).toBe(STATUS_BSY);
    s.select(1);
    expect(s.altStatus() & STATUS_BSY).toBe(STATUS_BSY);
    s.setReg(7, CMD.IDENTIFY_DEVICE); // ignored while in reset
    s.devctl(0x02);
    expect(s.reg(6) & 0x10).toBe(0); // device 0 selected
    expect([s.status(), s.error(), s.reg(2), s.reg(3), s.reg(4), s.reg(5)]).toEqual([0x00, 0x01, 0x01, 0x01, 0x14, 0xeb]);
    s.select(1);
    expect([s.status(), s.error(), s.reg(2), s.reg(3), s.reg(4), s.reg(5)]).toEqual([READY, 0x01, 0x01, 0x01, 0x00, 0x00]);
    s.devctl(0x00);
    await host.settle();
    expect(s.irqUp).toBe(false);
    expect(host.irqLog.filter((e) => e.irq === 15)).toEqual([]);
  });

  it("SRST cancels a command in flight and its pending interrupt; the drive works afterwards", async () => {
    const host = new TestHost();
    const { p, disk } = rig(host);
    // a DMA read that waits for the bus master, which the guest never starts
    p.bmPrd(0x10000);
    p.command(CMD.READ_DMA, IdeTestDriver.lba28(0, 0, 8));
    await host.settle();
    expect(p.altStatus() & 0x88).not.toBe(0); // BSY or DRQ: the command is in flight
    p.devctl(0x04);
    p.devctl(0x00);
    expect(p.status()).toBe(READY);
    p.bmCommand(0x09); // a late start must not move the cancelled command's data
    await host.settle();
    expect(host.ram.subarray(0x10000, 0x10000 + 4096).every((b) => b === 0)).toBe(true);
    p.bmCommand(0x00);
    p.command(CMD.READ_SECTORS, IdeTestDriver.lba28(0, 9, 1));
    const { data } = await p.pioIn(1);
    expect(data).toEqual(disk.sector(9));
  });

  it("power-on reset (machine reset) puts drives, registers and the bus master back", async () => {
    const host = new TestHost();
    const { ide, p } = rig(host);
    p.command(CMD.SET_MULTIPLE_MODE, { count: 8, device: 0xe0 });
    await p.waitIrq();
    p.devctl(0x02);
    p.bmPrd(0x1234);
    p.m.out8(p.bm + 2, 0x60);
    p.command(CMD.IDENTIFY_DEVICE, { device: 0xa0 });
    host.reset();
    IdeTestDriver.setupPci(host, ide.pci.devfn); // the BIOS again
    expect(p.status()).toBe(READY);
    expect(p.irqUp).toBe(false);
    expect(p.m.in32(p.bm + 4)).toBe(0);
    expect(p.bmStatus()).toBe(0x20); // drive 0 present, DMA capable
    expect(ide.device(0, 0)!.settings.multipleCount).toBe(0);
    const id = await p.identify(0); // nIEN is clear again: the interrupt comes
    expect(id[59]! & 0x100).toBe(0);
  });

  it("DEVICE RESET stops a busy packet device (it is the one command taken while busy)", async () => {
    const host = new TestHost();
    let released = false;
    const { s } = rig(host, {
      secondary: {
        master: {
          kind: "atapi",
          packetHandler: {
            packet: async (_cdb, io) => {
              await io.dataIn(new Uint8Array(8)); // the host never reads it
              released = true;
              io.complete({ ok: true });
            },
          },
        },
      },
    });
    s.command(CMD.PACKET, { lbaMid: 0, lbaHigh: 2, device: 0xa0 });
    s.writeData(new Uint8Array(12));
    expect(await s.waitIrq()).toBe(true);
    expect(s.status() & 0x08).toBe(0x08); // DRQ: data waiting
    s.setReg(7, 0x08);
    await host.settle();
    expect(released).toBe(true); // the packet layer was told (dataIn resolved false)
    expect([s.status(), s.reg(4), s.reg(5)]).toEqual([0x00, 0x14, 0xeb]);
    expect(s.irqUp).toBe(false); // DEVICE RESET completes without an interrupt
    expect(host.traces.map((t) => t.message)).toContain("secondary: DEVICE RESET while busy: the command in flight is cancelled");
  });
});
