/**
 * Resets with work in flight: GHC.HR, COMRESET and ST cleared while 32 queued reads (or a
 * non-queued one) wait at the backend. Once the held I/O is let go, nothing of the new epoch may
 * change: guest buffers, PxCI, PxSACT, PxIS, the FIS area, the interrupt line.
 */
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { firstDifference } from "../ata/test-support.js";
import { PORT_REG, PxCMD } from "./registers.js";
import { ATA, fpdma, lba48, LINUX_IE, type AhciTestDriver } from "./test-driver.js";
import { heldDisk, sentinel, untouched } from "./test-media.js";
import { rig } from "./test-setup.js";

const lbaOf = (tag: number): number => 100 + tag * 16;

type Variant = "GHC.HR" | "COMRESET" | "ST cleared";

async function newEpoch(drv: AhciTestDriver, variant: Variant): Promise<void> {
  if (variant === "GHC.HR") {
    drv.resetHba();
    drv.enableInterrupts();
  } else if (variant === "COMRESET") {
    drv.stopPort(0);
    drv.comreset(0);
  } else {
    drv.setReg(0, PORT_REG.CMD, drv.reg(0, PORT_REG.CMD) & ~PxCMD.ST);
    expect([drv.reg(0, PORT_REG.CI), drv.reg(0, PORT_REG.SACT), drv.reg(0, PORT_REG.CMD) & PxCMD.CR]).toEqual([0, 0, 0]);
  }
  await drv.startPort(0, { ie: LINUX_IE }); // same command list and FIS area as before
  drv.ackPort(0);
}

async function setup() {
  const disk = await heldDisk();
  const host = new TestHost();
  const alloc = new GuestAllocator(host);
  const r = rig(host, alloc, { ports: { 0: { kind: "ata", medium: disk.medium } } });
  r.drv.resetHba();
  r.drv.enableInterrupts();
  await r.drv.startPort(0, { ie: LINUX_IE });
  r.drv.ackPort(0);
  return { ...r, alloc, disk };
}

function snapshot(drv: AhciTestDriver) {
  return {
    ci: drv.reg(0, PORT_REG.CI),
    sact: drv.reg(0, PORT_REG.SACT),
    is: drv.reg(0, PORT_REG.IS),
    tfd: drv.reg(0, PORT_REG.TFD),
    fis: Array.from(drv.fisArea(0)),
  };
}

describe("AHCI resets with commands in flight", () => {
  for (const variant of ["GHC.HR", "COMRESET", "ST cleared"] as const) {
    it(`${variant} with 32 queued reads at the backend: their late completions touch nothing`, async () => {
      const { drv, host, alloc, disk, ahci } = await setup();
      disk.control.hold(["read"]);
      const old = Array.from({ length: 32 }, (_, tag) => {
        const buf = alloc.alloc(4096, 4096);
        sentinel(host.ram, buf, 4096);
        drv.buildCommand(0, tag, { fis: fpdma(false, tag, lbaOf(tag), 8), prdt: [{ addr: buf, len: 4096 }] });
        return buf;
      });
      drv.issue(0, 0xffffffff, true);
      expect(await drv.until(() => disk.control.held.length === 32)).toBe(true);
      const oldRequests = [...disk.control.held];

      await newEpoch(drv, variant);
      // new epoch: one queued read in slot 3, held too
      const fresh = alloc.alloc(4096, 4096);
      sentinel(host.ram, fresh, 4096, 0xdd);
      drv.buildCommand(0, 3, { fis: fpdma(false, 3, 5000, 8), prdt: [{ addr: fresh, len: 4096 }] });
      drv.issue(0, 1 << 3, true);
      expect(await drv.until(() => disk.control.held.length === 33)).toBe(true);
      drv.ackPort(0);
      host.flush();
      const before = snapshot(drv);
      expect([before.ci, before.sact, before.is]).toEqual([0, 1 << 3, 0]);
      expect(ahci.pci.irq.level).toBe(false);

      for (const r of [...oldRequests].reverse()) r.release();
      for (let i = 0; i < 5; i++) await host.settle();
      expect(snapshot(drv)).toEqual(before);
      expect(ahci.pci.irq.level).toBe(false);
      expect(old.every((b) => untouched(host.ram, b, 4096))).toBe(true);
      expect(untouched(host.ram, fresh, 4096, 0xdd)).toBe(true);

      // the new epoch's command completes normally
      disk.control.held[0]!.release();
      expect(await drv.until(() => drv.reg(0, PORT_REG.SACT) === 0)).toBe(true);
      expect(drv.sdb(0).sactive).toBe(1 << 3);
      expect(firstDifference(host.ram.slice(fresh, fresh + 4096), disk.sectors(5000, 8))).toBe(-1);
      expect(ahci.device(0)!.queuedInFlight).toBe(0);
      expect(old.every((b) => untouched(host.ram, b, 4096))).toBe(true);
    });
  }

  it("ST cleared with a non-queued read in flight: the command is dropped, the drive takes the next one", async () => {
    const { drv, host, alloc, disk } = await setup();
    disk.control.hold(["read"]);
    const buf = alloc.alloc(4096, 4096);
    sentinel(host.ram, buf, 4096);
    drv.buildCommand(0, 0, { fis: lba48(ATA.READ_DMA_EXT, 64, 8), prdt: [{ addr: buf, len: 4096 }] });
    drv.issue(0, 1);
    expect(await drv.until(() => disk.control.held.length === 1)).toBe(true);
    const late = disk.control.held[0]!;
    await newEpoch(drv, "ST cleared");
    disk.control.stopHolding();
    const buf2 = alloc.alloc(512, 512);
    const r = await drv.run(0, 1, { fis: lba48(ATA.READ_DMA_EXT, 9, 1), prdt: [{ addr: buf2, len: 512 }] });
    expect([r.ci, r.tfd]).toEqual([0, 0x50]);
    drv.ackPort(0);
    const before = snapshot(drv);
    late.release();
    for (let i = 0; i < 5; i++) await host.settle();
    expect(snapshot(drv)).toEqual(before);
    expect(untouched(host.ram, buf, 4096)).toBe(true);
    expect(firstDifference(host.ram.slice(buf2, buf2 + 512), disk.sectors(9, 1))).toBe(-1);
  });
});
