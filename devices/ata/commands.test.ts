import { describe, expect, it } from "vitest";
import { COMMANDS, commandInfo } from "./command-table.js";
import { smartAttributes, thresholdExceeded } from "./smart.js";
import { STATUS } from "./task-file.js";
import { issue, lba28Regs, makeDevice, MemoryDisk } from "./test-support.js";

const READY = STATUS.DRDY | STATUS.DSC;
const ERR = STATUS.DRDY | STATUS.ERR;
const ABRT = 0x04;
const SMART_KEY = { lbaMid: 0x4f, lbaHigh: 0xc2 };

function disk(config = {}) {
  const medium = new MemoryDisk(20000);
  return { medium, ...makeDevice({ medium, ...config }) };
}

function checksumOk(b: Uint8Array): boolean {
  return (b.reduce((a, x) => a + x, 0) & 0xff) === 0;
}

describe("SET FEATURES", () => {
  it("accepts transfer modes the drive offers and aborts the others", async () => {
    const { dev, t } = disk({ chipset: "piix4" });
    const ok = [0x00, 0x01, 0x08, 0x0b, 0x0c, 0x20, 0x22, 0x40, 0x42];
    const bad = [0x02, 0x07, 0x0d, 0x10, 0x12, 0x23, 0x43, 0x46, 0x47, 0x80, 0xff];
    for (const v of ok) expect((await issue(dev, t, { command: 0xef, features: 0x03, count: v })).status, `mode ${v.toString(16)}`).toBe(READY);
    for (const v of bad) expect((await issue(dev, t, { command: 0xef, features: 0x03, count: v })).error, `mode ${v.toString(16)}`).toBe(ABRT);
    expect(dev.settings.dmaMode).toEqual({ kind: "udma", mode: 2 }); // the rejected ones changed nothing
    expect(dev.settings.pioMode).toBe(4);
  });

  it("offers no UDMA on PIIX3 and UDMA 6 on AHCI", async () => {
    const piix3 = disk({ chipset: "piix3" });
    expect((await issue(piix3.dev, piix3.t, { command: 0xef, features: 0x03, count: 0x40 })).error).toBe(ABRT);
    const ahci = disk({ chipset: "ahci" });
    expect((await issue(ahci.dev, ahci.t, { command: 0xef, features: 0x03, count: 0x46 })).status).toBe(READY);
  });

  it("switches the write cache and accepts look-ahead on/off; aborts other subcommands", async () => {
    const { dev, t } = disk();
    await issue(dev, t, { command: 0xef, features: 0x82 });
    expect(dev.settings.writeCache).toBe(false);
    await issue(dev, t, { command: 0xef, features: 0x02 });
    expect(dev.settings.writeCache).toBe(true);
    expect((await issue(dev, t, { command: 0xef, features: 0x55 })).status).toBe(READY);
    expect(dev.settings.lookAhead).toBe(false);
    expect((await issue(dev, t, { command: 0xef, features: 0xaa })).status).toBe(READY);
    for (const f of [0x05, 0x10, 0x66, 0xcc, 0x00, 0x85]) {
      expect((await issue(dev, t, { command: 0xef, features: f })).error).toBe(ABRT);
    }
  });

  it("lets a packet device set transfer modes only", async () => {
    const { dev, t } = makeDevice({ kind: "atapi", chipset: "ich6" });
    expect((await issue(dev, t, { command: 0xef, features: 0x03, count: 0x44 })).status).toBe(READY);
    expect((await issue(dev, t, { command: 0xef, features: 0x02 })).error).toBe(ABRT);
  });
});

describe("SET MULTIPLE MODE and INITIALIZE DEVICE PARAMETERS", () => {
  it("accepts powers of two up to the maximum and 0, aborts the rest", async () => {
    const { dev, t } = disk();
    for (const n of [1, 2, 4, 8, 16, 0]) {
      expect((await issue(dev, t, { command: 0xc6, count: n })).status).toBe(READY);
      expect(dev.settings.multipleCount).toBe(n);
    }
    await issue(dev, t, { command: 0xc6, count: 8 });
    for (const n of [3, 6, 32, 128, 255]) expect((await issue(dev, t, { command: 0xc6, count: n })).error).toBe(ABRT);
    expect(dev.settings.multipleCount).toBe(8);
  });

  it("sets the CHS translation and refuses 0 sectors", async () => {
    const { dev, t } = disk();
    await issue(dev, t, { command: 0x91, count: 32, device: 0x0f });
    expect(dev.settings.chs).toEqual({ cylinders: Math.floor(20000 / 512), heads: 16, sectors: 32 });
    expect((await issue(dev, t, { command: 0x91, count: 0, device: 0x0f })).error).toBe(ABRT);
  });
});

describe("SMART", () => {
  it("RETURN STATUS answers 4Fh/C2h for a healthy drive, F4h/2Ch past a threshold", async () => {
    const { dev, t } = disk();
    dev.tf.lbaMid = 0;
    const c = await issue(dev, t, { command: 0xb0, features: 0xda, ...SMART_KEY });
    expect(c.status).toBe(READY);
    expect([dev.tf.lbaMid, dev.tf.lbaHigh]).toEqual([0x4f, 0xc2]);
    const worn = smartAttributes(0).map((a) => (a.id === 5 ? { ...a, value: 30 } : a));
    expect(thresholdExceeded(worn)).toBe(true);
    expect(thresholdExceeded(smartAttributes(0))).toBe(false);
  });

  it("READ DATA and READ THRESHOLDS return checksummed sectors with the attributes", async () => {
    let now = 0;
    const { dev, t } = disk({ clock: { nowNs: () => now }, powerOnHours: 100 });
    now = 5 * 3.6e12 + 1;
    await issue(dev, t, { command: 0xb0, features: 0xd0, ...SMART_KEY });
    const data = t.pioInData();
    expect(data.length).toBe(512);
    expect(checksumOk(data)).toBe(true);
    const ids = [0, 1, 2, 3].map((i) => data[2 + 12 * i]);
    expect(ids).toEqual([0x05, 0x09, 0x0c, 0xc2]);
    const hoursAt = 2 + 12 * 1 + 5;
    expect(data[hoursAt]! | data[hoursAt + 1]! << 8).toBe(105);
    expect(data[2 + 5]).toBe(0); // no reallocated sectors
    await issue(dev, t, { command: 0xb0, features: 0xd1, ...SMART_KEY });
    const th = t.pioInBlocks[1]!.data;
    expect(checksumOk(th)).toBe(true);
    expect([th[2], th[3]]).toEqual([0x05, 36]);
  });

  it("needs the key, is refused while disabled, and aborts unsupported subcommands", async () => {
    const { dev, t } = disk();
    expect((await issue(dev, t, { command: 0xb0, features: 0xda, lbaMid: 0, lbaHigh: 0 })).error).toBe(ABRT);
    await issue(dev, t, { command: 0xb0, features: 0xd9, ...SMART_KEY });
    expect((await issue(dev, t, { command: 0xb0, features: 0xd0, ...SMART_KEY })).error).toBe(ABRT);
    expect((await issue(dev, t, { command: 0xb0, features: 0xd8, ...SMART_KEY })).status).toBe(READY);
    for (const f of [0xd4, 0xd5, 0xd6, 0xdb, 0x00]) expect((await issue(dev, t, { command: 0xb0, features: f, ...SMART_KEY })).error).toBe(ABRT);
    expect((await issue(dev, t, { command: 0xb0, features: 0xd2, count: 0xf1, ...SMART_KEY })).status).toBe(READY);
  });
});

describe("power management", () => {
  it("CHECK POWER MODE reports active, standby after STANDBY IMMEDIATE, idle after IDLE IMMEDIATE", async () => {
    const { dev, t, medium } = disk();
    await issue(dev, t, { command: 0xe5 });
    expect(dev.tf.count).toBe(0xff);
    await issue(dev, t, { command: 0xe0 });
    expect(medium.flushes).toBe(1);
    await issue(dev, t, { command: 0xe5 });
    expect(dev.tf.count).toBe(0x00);
    await issue(dev, t, { command: 0xe1 });
    await issue(dev, t, { command: 0xe5 });
    expect(dev.tf.count).toBe(0x80);
  });

  it("wakes from standby for medium access, not for IDENTIFY", async () => {
    const { dev, t } = disk();
    await issue(dev, t, { command: 0xe2, count: 10 });
    await issue(dev, t, { command: 0xec });
    expect(dev.settings.power).toBe("standby");
    await issue(dev, t, lba28Regs(0x20, 0, 1));
    expect(dev.settings.power).toBe("active");
  });

  it("after SLEEP aborts everything until a reset", async () => {
    const { dev, t } = disk();
    await issue(dev, t, { command: 0xe6 });
    for (const op of [0xe5, 0xec, 0x20, 0xe1]) expect((await issue(dev, t, { ...lba28Regs(op, 0, 1) })).error).toBe(ABRT);
    dev.reset("software");
    expect(dev.settings.power).toBe("standby");
    expect((await issue(dev, t, lba28Regs(0x20, 0, 1))).status).toBe(READY);
  });
});

describe("reset, diagnostics, signatures", () => {
  it("puts the ATA signature in the task file after reset", () => {
    const { dev } = disk();
    Object.assign(dev.tf, { count: 9, lbaLow: 9, lbaMid: 9, lbaHigh: 9, error: 0x44, status: 0xff });
    dev.reset("software");
    expect([dev.tf.count, dev.tf.lbaLow, dev.tf.lbaMid, dev.tf.lbaHigh, dev.tf.error]).toEqual([1, 1, 0, 0, 1]);
    expect(dev.tf.status).toBe(READY);
  });

  it("puts the ATAPI signature 14h/EBh in the task file after reset", () => {
    const { dev } = makeDevice({ kind: "atapi" });
    dev.reset("hardware");
    expect([dev.tf.count, dev.tf.lbaLow, dev.tf.lbaMid, dev.tf.lbaHigh, dev.tf.error]).toEqual([1, 1, 0x14, 0xeb, 1]);
    expect(dev.tf.status).toBe(0);
  });

  it("keeps drive settings on a software reset, restores defaults on a hardware reset", async () => {
    const { dev, t } = disk();
    await issue(dev, t, { command: 0xc6, count: 8 });
    await issue(dev, t, { command: 0xef, features: 0x82 });
    dev.reset("software");
    expect(dev.settings.multipleCount).toBe(8);
    expect(dev.settings.writeCache).toBe(false);
    dev.reset("hardware");
    expect(dev.settings.multipleCount).toBe(0);
    expect(dev.settings.writeCache).toBe(true);
  });

  it("EXECUTE DEVICE DIAGNOSTIC leaves the signature and code 01h without ERR", async () => {
    const { dev, t } = disk();
    const c = await issue(dev, t, { command: 0x90, lbaMid: 0x55 });
    expect(c).toEqual({ status: READY, error: 0x01, interrupt: true });
    expect([dev.tf.count, dev.tf.lbaLow, dev.tf.lbaMid, dev.tf.lbaHigh]).toEqual([1, 1, 0, 0]);
    const cd = makeDevice({ kind: "atapi" });
    const c2 = await issue(cd.dev, cd.t, { command: 0x90 });
    expect(c2).toEqual({ status: 0, error: 0x01, interrupt: true });
    expect([cd.dev.tf.lbaMid, cd.dev.tf.lbaHigh]).toEqual([0x14, 0xeb]);
  });

  it("DEVICE RESET resets a packet device without an interrupt (and wakes it), but is aborted by a disk", async () => {
    const cd = makeDevice({ kind: "atapi" });
    await issue(cd.dev, cd.t, { command: 0xe6 });
    const c = await issue(cd.dev, cd.t, { command: 0x08 });
    expect(c).toEqual({ status: 0, error: 0x01, interrupt: false });
    expect(cd.dev.settings.power).toBe("standby");
    const { dev, t } = disk();
    expect((await issue(dev, t, { command: 0x08 })).error).toBe(ABRT);
  });
});

describe("dispatch", () => {
  it("aborts unknown opcodes and NOP with ERR/ABRT", async () => {
    const { dev, t, traces } = disk();
    for (const op of [0x00, 0x01, 0x60, 0x61, 0x92, 0xf1, 0xf9, 0xff]) {
      const c = await issue(dev, t, { command: op });
      expect(c, `opcode ${op.toString(16)}`).toEqual({ status: ERR, error: ABRT, interrupt: true });
    }
    expect(traces.length).toBeGreaterThan(0);
  });

  it("refuses packet commands on a disk and disk commands on a packet device", async () => {
    const { dev, t } = disk();
    expect((await issue(dev, t, { command: 0xa0 })).error).toBe(ABRT);
    const cd = makeDevice({ kind: "atapi" });
    for (const op of [0x20, 0xc8, 0xb0, 0x2f, 0xc6, 0xe7]) expect((await issue(cd.dev, cd.t, { command: op })).error).toBe(ABRT);
  });

  it("ignores a command written while one is in flight", async () => {
    const { dev, t, medium, traces } = disk();
    medium.hold = true;
    Object.assign(dev.tf, lba28Regs(0xe7, 0, 0));
    dev.execute();
    dev.tf.command = 0xec;
    dev.execute();
    expect(traces.some((m) => m.includes("busy"))).toBe(true);
    medium.release();
    medium.hold = false;
    await Promise.resolve();
    await Promise.resolve();
    expect(t.completions.length).toBe(1);
    expect(t.pioInBlocks.length).toBe(0);
  });

  it("describes commands for front ends", () => {
    expect(commandInfo(0x25)).toMatchObject({ name: "READ DMA EXT", lba48: true, data: "in", protocol: "dma" });
    expect(commandInfo(0x60)).toBeUndefined();
    expect(COMMANDS.length).toBe(256);
  });
});

describe("save and restore", () => {
  it("carries drive settings, task file and power-on hours through JSON", async () => {
    let now = 0;
    const { dev, t } = disk({ clock: { nowNs: () => now } });
    await issue(dev, t, { command: 0xc6, count: 4 });
    await issue(dev, t, { command: 0xef, features: 0x03, count: 0x21 });
    await issue(dev, t, { command: 0x91, count: 17, device: 0x03 });
    await issue(dev, t, { command: 0xe0 });
    now = 7 * 3.6e12;
    const saved = JSON.parse(JSON.stringify(dev.saveState())) as ReturnType<typeof dev.saveState>;
    const other = disk({ clock: { nowNs: () => 1e15 } });
    other.dev.restoreState(saved);
    expect(other.dev.settings).toEqual(dev.settings);
    expect(other.dev.tf).toEqual(dev.tf);
    expect(other.dev.powerOnHours()).toBe(7);
    expect(other.dev.settings.power).toBe("standby");
  });
});

describe("READ LOG EXT", () => {
  it("returns the log directory and the NCQ error log when queuing, aborts other logs", async () => {
    const { dev, t } = disk({ chipset: "ahci", ncq: true });
    await issue(dev, t, { command: 0x2f, lbaLow: 0x00, count: 1 });
    const dir = t.pioInData();
    expect(dir[0]! | dir[1]! << 8).toBe(1);
    expect(dir[0x20]! | dir[0x21]! << 8).toBe(1); // log 10h: one page
    expect(dir[0x60]).toBe(0); // log 30h (IDENTIFY DEVICE data) not offered
    expect((await issue(dev, t, { command: 0x2f, lbaLow: 0x10, count: 1 })).status).toBe(READY);
    for (const regs of [{ lbaLow: 0x30, count: 1 }, { lbaLow: 0x00, count: 2 }, { lbaLow: 0x10, count: 0 }, { lbaLow: 0x10, count: 1, lbaMid: 1 }]) {
      expect((await issue(dev, t, { command: 0x2f, lbaMid: 0, ...regs })).error).toBe(ABRT);
    }
  });

  it("has no NCQ log without NCQ, and serves READ LOG DMA EXT by DMA", async () => {
    const { dev, t } = disk();
    expect((await issue(dev, t, { command: 0x2f, lbaLow: 0x10, count: 1 })).error).toBe(ABRT);
    expect((await issue(dev, t, { command: 0x47, lbaLow: 0x00, count: 1 })).status).toBe(READY);
    expect(t.dmaInBytes()[0]).toBe(1);
  });
});
