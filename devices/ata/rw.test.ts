import { describe, expect, it } from "vitest";
import { lba28, lba48, STATUS } from "./task-file.js";
import { chsRegs, concat, firstDifference, issue, lba28Regs, lba48Regs, makeDevice, MemoryDisk, SparseDisk, until } from "./test-support.js";

const READY = STATUS.DRDY | STATUS.DSC;
const ERR = STATUS.DRDY | STATUS.ERR;
const UNC = 0x40;
const IDNF = 0x10;
const ABRT = 0x04;

function disk(sectors = 20000) {
  const medium = new MemoryDisk(sectors).fillPattern();
  return { medium, ...makeDevice({ medium }) };
}

function pattern(bytes: number, seed = 1): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed * 17 + (i >> 9)) & 0xff;
  return b;
}

describe("PIO READ/WRITE SECTORS", () => {
  it("reads LBA28 sectors one DRQ block each, interrupting per block and not at the end", async () => {
    const { dev, t, medium } = disk();
    const c = await issue(dev, t, lba28Regs(0x20, 100, 3));
    expect(c).toEqual({ status: READY, error: 0, interrupt: false });
    expect(t.pioInBlocks.map((b) => b.data.length)).toEqual([512, 512, 512]);
    expect(firstDifference(t.pioInData(), medium.sector(100, 3))).toBe(-1);
    expect(t.pioInBlocks.map((b) => [b.info.first, b.info.last, b.info.interrupt])).toEqual([
      [true, false, true],
      [false, false, true],
      [false, true, true],
    ]);
    expect(t.pioInBlocks.every((b) => b.status === (READY | STATUS.DRQ))).toBe(true);
  });

  it("treats a count of 0 as 256 sectors (LBA28) and reads across medium chunks", async () => {
    const { dev, t, medium } = disk();
    await issue(dev, t, lba28Regs(0x20, 7, 0));
    expect(t.pioInBlocks.length).toBe(256);
    expect(firstDifference(t.pioInData(), medium.sector(7, 256))).toBe(-1);
  });

  it("writes LBA28 sectors: no interrupt for the first block, one for each later block and at the end", async () => {
    const { dev, t, medium } = disk();
    const data = pattern(3 * 512);
    t.setHostData(data);
    const c = await issue(dev, t, lba28Regs(0x30, 0x1234, 3));
    expect(c).toEqual({ status: READY, error: 0, interrupt: true });
    expect(firstDifference(medium.sector(0x1234, 3), data)).toBe(-1);
    expect(t.pioOutBlocks.map((b) => b.info.interrupt)).toEqual([false, true, true]);
  });

  it("shows the final status synchronously when the host takes the last block (no BSY gap)", async () => {
    const { dev, t } = disk();
    t.pioMode = "manual";
    Object.assign(dev.tf, lba28Regs(0x20, 0, 2));
    dev.execute();
    await until(() => t.blockWaiting);
    expect(dev.tf.status).toBe(READY | STATUS.DRQ);
    t.finishBlock(); // second block comes from the same medium chunk: DRQ again at once
    expect(dev.tf.status).toBe(READY | STATUS.DRQ);
    expect(t.pioInBlocks.length).toBe(2);
    t.finishBlock();
    expect(dev.tf.status).toBe(READY);
    expect(t.completions.length).toBe(1);
  });

  it("hands out every block of a chunk synchronously with a transport that answers inside pioIn", async () => {
    const { dev, t, medium } = disk();
    t.pioMode = "sync";
    await issue(dev, t, lba28Regs(0x20, 50, 40));
    expect(firstDifference(t.pioInData(), medium.sector(50, 40))).toBe(-1);
    expect(medium.reads.length).toBe(1);
  });

  it("reads and writes LBA48 addresses above 2^32 sectors (HOB registers)", async () => {
    const medium = new SparseDisk(2 ** 41 * 512);
    const { dev, t } = makeDevice({ medium });
    const lba = 2 ** 40 + 0x123456;
    const data = pattern(2 * 512, 3);
    t.setHostData(data);
    const w = await issue(dev, t, lba48Regs(0x34, lba, 2));
    expect(w.status).toBe(READY);
    expect(firstDifference(medium.sectors.get(lba)!, data.subarray(0, 512))).toBe(-1);
    expect(firstDifference(medium.sectors.get(lba + 1)!, data.subarray(512))).toBe(-1);
    await issue(dev, t, lba48Regs(0x24, lba, 2));
    expect(firstDifference(t.pioInData(), data)).toBe(-1);
  });

  it("treats an LBA48 count of 0 as 65536 sectors", async () => {
    const { dev, t, medium } = disk(70000);
    await issue(dev, t, lba48Regs(0x25, 10, 0));
    expect(firstDifference(t.dmaInBytes(), medium.sector(10, 65536))).toBe(-1);
  });

  it("addresses by CHS when the LBA bit is clear, with the default and the INITIALIZE DEVICE PARAMETERS translation", async () => {
    const { dev, t, medium } = disk();
    await issue(dev, t, chsRegs(0x20, 2, 3, 4, 1)); // (2*16 + 3) * 63 + 3
    expect(firstDifference(t.pioInData(), medium.sector((2 * 16 + 3) * 63 + 3))).toBe(-1);
    await issue(dev, t, { command: 0x91, count: 17, device: 0x03 }); // 4 heads, 17 sectors
    const before = t.pioInBlocks.length;
    await issue(dev, t, chsRegs(0x20, 5, 2, 9, 2));
    expect(firstDifference(concat(t.pioInBlocks.slice(before).map((b) => b.data)), medium.sector((5 * 4 + 2) * 17 + 8, 2))).toBe(-1);
  });

  it("rejects CHS addresses outside the translation with IDNF", async () => {
    const { dev, t } = disk();
    expect((await issue(dev, t, chsRegs(0x20, 0, 0, 0, 1))).error).toBe(IDNF); // sector 0
    expect((await issue(dev, t, chsRegs(0x20, 0, 0, 64, 1))).error).toBe(IDNF); // sector > 63
    expect((await issue(dev, t, chsRegs(0x20, 5000, 0, 1, 1))).error).toBe(IDNF); // cylinder
    expect(t.pioInBlocks.length).toBe(0);
  });
});

describe("READ/WRITE MULTIPLE", () => {
  it("moves multiple-count sectors per DRQ block, the last block shorter", async () => {
    const { dev, t, medium } = disk();
    await issue(dev, t, { command: 0xc6, count: 4 });
    await issue(dev, t, lba28Regs(0xc4, 30, 10));
    expect(t.pioInBlocks.map((b) => b.data.length)).toEqual([2048, 2048, 1024]);
    expect(firstDifference(t.pioInData(), medium.sector(30, 10))).toBe(-1);
    const data = pattern(10 * 512, 9);
    t.setHostData(data);
    await issue(dev, t, lba48Regs(0x39, 300, 10));
    expect(t.pioOutBlocks.map((b) => b.length)).toEqual([2048, 2048, 1024]);
    expect(firstDifference(medium.sector(300, 10), data)).toBe(-1);
  });

  it("aborts READ/WRITE MULTIPLE while multiple mode is off", async () => {
    const { dev, t } = disk();
    expect((await issue(dev, t, lba28Regs(0xc4, 0, 1))).error).toBe(ABRT);
    expect((await issue(dev, t, lba28Regs(0xc5, 0, 1))).error).toBe(ABRT);
    await issue(dev, t, { command: 0xc6, count: 2 });
    await issue(dev, t, { command: 0xc6, count: 0 });
    expect((await issue(dev, t, lba48Regs(0x29, 0, 1))).error).toBe(ABRT);
  });
});

describe("READ/WRITE DMA", () => {
  it("reads and writes through dmaTransfer (28- and 48-bit), showing DRQ while data moves", async () => {
    const { dev, t, medium } = disk();
    const c = await issue(dev, t, lba28Regs(0xc8, 1000, 16));
    expect(c).toEqual({ status: READY, error: 0, interrupt: true });
    expect(firstDifference(t.dmaInBytes(), medium.sector(1000, 16))).toBe(-1);
    expect(t.dmaCalls[0]).toEqual({ direction: "in", length: 16 * 512, status: READY | STATUS.DRQ });
    const data = pattern(33 * 512, 5);
    t.setHostData(data);
    await issue(dev, t, lba48Regs(0x35, 5000, 33));
    expect(firstDifference(medium.sector(5000, 33), data)).toBe(-1);
  });

  it("splits large transfers into chunks and keeps the data in order", async () => {
    const { dev, t, medium } = disk(10000);
    await issue(dev, t, lba48Regs(0x25, 1, 5000));
    expect(t.dmaCalls.map((c) => c.length / 512)).toEqual([2048, 2048, 904]);
    expect(firstDifference(t.dmaInBytes(), medium.sector(1, 5000))).toBe(-1);
    const data = pattern(5000 * 512, 2);
    t.setHostData(data);
    await issue(dev, t, lba48Regs(0x35, 2, 5000));
    expect(firstDifference(medium.sector(2, 5000), data)).toBe(-1);
  });

  it("waits for the front end's DMA (e.g. the guest starting the bus master)", async () => {
    const { dev, t, medium } = disk();
    t.holdDma = true;
    Object.assign(dev.tf, lba28Regs(0xc8, 3, 2));
    dev.execute();
    await until(() => t.dmaCalls.length === 1);
    for (let i = 0; i < 50; i++) await Promise.resolve();
    expect(t.completions.length).toBe(0);
    expect(dev.busy).toBe(true);
    t.releaseDma();
    await until(() => t.completions.length === 1);
    expect(firstDifference(t.dmaInBytes(), medium.sector(3, 2))).toBe(-1);
  });

  it("aborts with dmaFault when the PRD table is too short or memory faults", async () => {
    const { dev, t } = disk();
    t.dmaCapacity = 1024;
    const c = await issue(dev, t, lba28Regs(0xc8, 0, 4));
    expect(c).toEqual({ status: ERR, error: ABRT, interrupt: true, dmaFault: "short" });
    t.dmaCapacity = Infinity;
    t.dmaFault = true;
    const w = await issue(dev, t, lba28Regs(0xca, 0, 4));
    expect(w.dmaFault).toBe("fault");
    expect(w.error).toBe(ABRT);
  });
});

describe("errors", () => {
  it("answers commands beyond capacity with IDNF without touching the medium", async () => {
    const { dev, t, medium } = disk(1000);
    for (const regs of [lba28Regs(0x20, 999, 2), lba48Regs(0x24, 1000, 1), lba28Regs(0xc8, 5000, 1), lba48Regs(0x35, 2 ** 40, 1), lba28Regs(0x40, 990, 20)]) {
      const c = await issue(dev, t, regs);
      expect(c.status).toBe(ERR);
      expect(c.error).toBe(IDNF);
    }
    expect(medium.calls).toEqual([]);
  });

  it("reports a medium read error as UNC with the failing LBA in the task file (PIO, DMA, LBA48)", async () => {
    const { dev, t, medium } = disk();
    medium.errors.push({ op: "read", lba: 105, kind: "io" });
    const c = await issue(dev, t, lba28Regs(0x20, 100, 10));
    expect(c).toEqual({ status: ERR, error: UNC, interrupt: true });
    expect(lba28(dev.tf)).toBe(105);
    const d = await issue(dev, t, lba28Regs(0xc8, 104, 3));
    expect(d.error).toBe(UNC);
    expect(lba28(dev.tf)).toBe(105);
    await issue(dev, t, lba48Regs(0x25, 101, 8));
    expect(lba48(dev.tf)).toBe(105);
  });

  it("delivers the blocks before a failing chunk, then UNC", async () => {
    const { dev, t, medium } = disk();
    medium.errors.push({ op: "read", lba: 300, kind: "io" });
    const c = await issue(dev, t, lba48Regs(0x24, 0, 400)); // the second medium chunk (256..399) fails
    expect(c.error).toBe(UNC);
    expect(t.pioInBlocks.length).toBe(256);
    expect(firstDifference(t.pioInData(), medium.sector(0, 256))).toBe(-1);
    expect(lba48(dev.tf)).toBe(300);
  });

  it("reports write errors as ABRT and out-of-bounds medium errors as IDNF", async () => {
    const { dev, t, medium } = disk();
    medium.errors.push({ op: "write", lba: 20, kind: "io" });
    t.setHostData(pattern(4096));
    expect((await issue(dev, t, lba28Regs(0x30, 18, 4))).error).toBe(ABRT);
    expect(lba28(dev.tf)).toBe(20);
    medium.errors = [{ op: "read", lba: 40, kind: "out-of-bounds" }];
    expect((await issue(dev, t, lba28Regs(0xc8, 40, 1))).error).toBe(IDNF);
  });

  it("aborts writes to a read-only medium", async () => {
    const medium = new MemoryDisk(100, { readOnly: true });
    const { dev, t } = makeDevice({ medium });
    expect((await issue(dev, t, lba28Regs(0x30, 0, 1))).error).toBe(ABRT);
    expect((await issue(dev, t, lba28Regs(0xca, 0, 1))).error).toBe(ABRT);
    expect((await issue(dev, t, lba28Regs(0x20, 0, 1))).status).toBe(READY);
  });

  it("aborts medium commands on a drive without a medium", async () => {
    const { dev, t, traces } = makeDevice({});
    for (const op of [0x20, 0x25, 0x30, 0x40, 0xe7, 0xf8, 0x70]) {
      expect((await issue(dev, t, lba28Regs(op, 0, 1))).error).toBe(ABRT);
    }
    expect(traces.filter((m) => m.includes("no medium")).length).toBe(7);
  });

  it("drops a command cancelled by reset: no completion, no late DMA, next command fine", async () => {
    const { dev, t, medium } = disk();
    medium.hold = true;
    Object.assign(dev.tf, lba28Regs(0xc8, 0, 8));
    dev.execute();
    await until(() => medium.heldCount === 1);
    dev.reset("software");
    expect(dev.busy).toBe(false);
    medium.hold = false;
    medium.release();
    for (let i = 0; i < 100; i++) await Promise.resolve();
    expect(t.completions.length).toBe(0);
    expect(t.dmaCalls.length).toBe(0);
    const c = await issue(dev, t, lba28Regs(0x20, 1, 1));
    expect(c.status).toBe(READY);
  });
});

describe("write cache, flush, verify, seek, native max", () => {
  it("flushes after every write while the write cache is off", async () => {
    const { dev, t, medium } = disk();
    t.setHostData(pattern(8192));
    await issue(dev, t, lba28Regs(0x30, 0, 1));
    await issue(dev, t, lba28Regs(0xca, 0, 1));
    expect(medium.flushes).toBe(0);
    await issue(dev, t, { command: 0xef, features: 0x82 });
    const afterDisable = medium.flushes;
    expect(afterDisable).toBe(1); // disabling the cache flushes it
    await issue(dev, t, lba28Regs(0x30, 0, 1));
    await issue(dev, t, lba28Regs(0xca, 0, 1));
    expect(medium.flushes).toBe(afterDisable + 2);
  });

  it("FLUSH CACHE (EXT) reaches the medium; a failing flush aborts", async () => {
    const { dev, t, medium } = disk();
    await issue(dev, t, { command: 0xe7 });
    await issue(dev, t, { command: 0xea });
    expect(medium.flushes).toBe(2);
    medium.errors.push({ op: "flush", kind: "io" });
    expect((await issue(dev, t, { command: 0xe7 })).error).toBe(ABRT);
  });

  it("READ VERIFY reads without transferring and reports UNC", async () => {
    const { dev, t, medium } = disk();
    const c = await issue(dev, t, lba28Regs(0x40, 10, 20));
    expect(c).toEqual({ status: READY, error: 0, interrupt: true });
    expect(medium.reads.length).toBe(1);
    expect(t.pioInBlocks.length + t.dmaCalls.length).toBe(0);
    medium.errors.push({ op: "read", lba: 12, kind: "io" });
    expect((await issue(dev, t, lba48Regs(0x42, 10, 20))).error).toBe(UNC);
    expect(lba48(dev.tf)).toBe(12);
  });

  it("SEEK checks the address", async () => {
    const { dev, t } = disk(1000);
    expect((await issue(dev, t, lba28Regs(0x70, 999, 0))).status).toBe(READY);
    expect((await issue(dev, t, lba28Regs(0x70, 1000, 0))).error).toBe(IDNF);
  });

  it("READ NATIVE MAX ADDRESS (EXT) returns the last LBA", async () => {
    const { dev, t } = disk(20000);
    await issue(dev, t, { command: 0xf8, device: 0x40 });
    expect(lba28(dev.tf)).toBe(19999);
    const big = makeDevice({ medium: new SparseDisk((2 ** 36 + 7) * 512) });
    await issue(big.dev, big.t, { command: 0x27, device: 0x40 });
    expect(lba48(big.dev.tf)).toBe(2 ** 36 + 6);
    await issue(big.dev, big.t, { command: 0xf8, device: 0x40 });
    expect(lba28(big.dev.tf)).toBe(0x0fffffff);
  });
});
