import { describe, expect, it } from "vitest";
import { PciDriver, TestHost } from "../../host-adapter/testbench/index.js";
import {
  DMA_CMD_FILL,
  DMA_CMD_IRQ,
  DMA_CMD_START,
  DMA_STATUS_BUSY,
  DMA_STATUS_DONE,
  DMA_STATUS_ERROR,
  FIXTURE_DEVICE,
  FIXTURE_MAGIC,
  FIXTURE_VENDOR,
  REG,
  TestFixture,
} from "./fixture.js";

function machine() {
  const host = new TestHost({ memorySize: 4 << 20 });
  const fixture = new TestFixture(host, "a", { slot: 3 });
  const drv = PciDriver.find(host, FIXTURE_VENDOR, FIXTURE_DEVICE);
  drv.setup({ busMaster: true });
  return { host, fixture, drv, io: drv.bar(0), mmio: drv.bar(1) };
}

describe("test fixture on the TestHost", () => {
  it("exposes the same registers through both BARs, merging byte writes", () => {
    const { io, mmio } = machine();
    expect(mmio.read32(REG.MAGIC)).toBe(FIXTURE_MAGIC);
    io.write32(REG.SCRATCH, 0xdeadbeef);
    expect(mmio.read32(REG.SCRATCH)).toBe(0xdeadbeef);
    mmio.write8(REG.SCRATCH + 1, 0x12);
    expect(io.read32(REG.SCRATCH)).toBe(0xdead12ef);
  });

  it("defers an INTx raised from an MMIO write and drops it on request", () => {
    const { host, drv, mmio } = machine();
    const irq = drv.interruptLine;
    mmio.write32(REG.IRQ, 1);
    expect(host.irqChangesInMmio).toBe(1); // asked inside the handler, applied after it
    expect(host.irqLevel(irq)).toBe(true);
    mmio.write32(REG.IRQ, 0);
    expect(host.irqLevel(irq)).toBe(false);
  });

  it("fills guest memory after the programmed delay and can interrupt", () => {
    const { host, drv, io } = machine();
    io.write32(REG.DMA_DST, 0x10000);
    io.write32(REG.DMA_LEN, 4096);
    io.write32(REG.DMA_FILL, 0x5a);
    io.write32(REG.DMA_DELAY_US, 1000);
    io.write32(REG.DMA_CMD, DMA_CMD_START | DMA_CMD_FILL | DMA_CMD_IRQ);
    expect(io.read32(REG.DMA_STATUS)).toBe(DMA_STATUS_BUSY);
    host.advance(999_000);
    expect(host.ram[0x10000]).toBe(0);
    host.advance(1_000);
    expect(io.read32(REG.DMA_STATUS)).toBe(DMA_STATUS_DONE);
    expect(host.ram.subarray(0x10000, 0x11000).every((b) => b === 0x5a)).toBe(true);
    expect(host.ram[0x11000]).toBe(0);
    expect(host.irqLevel(drv.interruptLine)).toBe(true);
  });

  it("refuses DMA outside RAM and without bus mastering, moving nothing", () => {
    const { host, drv, io } = machine();
    io.write32(REG.DMA_SRC, 0x1000);
    io.write32(REG.DMA_DST, (4 << 20) - 16);
    io.write32(REG.DMA_LEN, 32);
    io.write32(REG.DMA_CMD, DMA_CMD_START);
    host.runUntilIdle();
    expect(io.read32(REG.DMA_STATUS)).toBe(DMA_STATUS_DONE | DMA_STATUS_ERROR);
    expect(host.ram.subarray((4 << 20) - 16).every((b) => b === 0)).toBe(true);
    drv.disable({ busMaster: true });
    io.write32(REG.DMA_DST, 0x2000);
    io.write32(REG.DMA_CMD, DMA_CMD_START | DMA_CMD_FILL);
    host.runUntilIdle();
    expect(io.read32(REG.DMA_STATUS) & DMA_STATUS_ERROR).toBeTruthy();
    expect(io.read32(REG.DMA_COUNT)).toBe(0);
  });

  it("completes a DMA that was in flight when the machine was saved", () => {
    const a = machine();
    a.io.write32(REG.DMA_DST, 0x20000);
    a.io.write32(REG.DMA_LEN, 512);
    a.io.write32(REG.DMA_FILL, 0x77);
    a.io.write32(REG.DMA_DELAY_US, 500);
    a.io.write32(REG.DMA_CMD, DMA_CMD_START | DMA_CMD_FILL);
    a.host.advance(200_000);
    const saved = structuredClone(a.host.saveState()); // nothing shared with the first machine
    const b = new TestHost({ memorySize: 4 << 20 });
    new TestFixture(b, "a", { slot: 3 });
    b.loadState(saved);
    const io = PciDriver.find(b, FIXTURE_VENDOR, FIXTURE_DEVICE).bar(0);
    expect(io.read32(REG.DMA_STATUS)).toBe(DMA_STATUS_BUSY);
    b.runUntilIdle();
    expect(io.read32(REG.DMA_STATUS)).toBe(DMA_STATUS_DONE);
    expect(b.ram[0x20000]).toBe(0x77);
  });
});
