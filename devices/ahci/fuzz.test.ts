/**
 * A hostile guest: random values written to every register, in random order and widths, mixed
 * with the writes that make a port run (command list pointers, ST/FRE, PxSACT/PxCI, COMRESET,
 * HR), over RAM seeded with random but plausible command lists, command tables and PRDTs. The
 * controller must never throw out of a register access, never reach an internal-error path, never
 * leave work running forever, and work normally after GHC.HR.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestAllocator, TestHost } from "../../host-adapter/testbench/index.js";
import { createAtapiCdrom } from "../atapi/atapi-scsi.js";
import { firstDifference, MemoryDisk } from "../ata/test-support.js";
import { cdImage } from "../scsi/test-support.js";
import { GHC, HBA_REG, PORT_BASE, PORT_REG, PORT_STRIDE, PxCMD } from "./registers.js";
import { ATA, lba48 } from "./test-driver.js";
import { rig } from "./test-setup.js";

/** Command lists and tables live below this; data buffers between DATA and DATA_END. */
const SEEDED = 0x10000;
const DATA = 0x20000;
const DATA_END = 0x40000;
const COMMANDS = [0x25, 0x35, 0xc8, 0xca, 0x20, 0x24, 0x30, 0x60, 0x60, 0x61, 0x61, 0xec, 0xa1, 0xa0, 0x2f, 0x47, 0x06, 0xea, 0xef, 0x00, 0x90, 0x08, 0xc4, 0xc6];

const portReg = (p: number, r: number): number => PORT_BASE + p * PORT_STRIDE + r;
const offsets = [...Object.values(HBA_REG), ...[0, 1, 2, 3].flatMap((p) => [...Object.values(PORT_REG), 0x1c, 0x40, 0x70].map((r) => portReg(p, r)))];

type Write = { offset: number; size: 1 | 2 | 4; value: number };
type Op = { kind: "raw"; w: Write; read: boolean } | { kind: "start" | "issue" | "stop" | "comreset" | "ack"; port: number; value: number } | { kind: "hr" | "attach" | "detach" };

const raw: fc.Arbitrary<Op> = fc.record({
  kind: fc.constant("raw" as const),
  read: fc.boolean(),
  w: fc.record({
    offset: fc.oneof(fc.constantFrom(...offsets), fc.integer({ min: 0, max: 0x1fff })),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const),
    value: fc.oneof(
      fc.constantFrom(PxCMD.ST | PxCMD.FRE, PxCMD.FRE, PxCMD.ST, PxCMD.CLO, 0, 1, 2, 3, 4, 0x301, 0x300, 0x304, 0xffffffff, 0x80000001),
      fc.integer({ min: 0, max: SEEDED / 0x400 - 1 }).map((x) => x * 0x400),
      fc.nat({ max: 0xffffffff }),
    ),
  }),
});

const portOp: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom("start" as const, "issue" as const, "issue" as const, "stop" as const, "comreset" as const, "ack" as const),
  port: fc.constantFrom(0, 0, 0, 1, 2, 3),
  value: fc.nat({ max: 0xffffffff }),
});

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: raw },
  { weight: 4, arbitrary: portOp },
  { weight: 1, arbitrary: fc.constantFrom({ kind: "hr" as const }, { kind: "attach" as const }, { kind: "detach" as const }) },
);

/** xorshift32, so one seed describes a whole RAM image. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** Command lists whose headers point at command tables with real commands and PRDTs into DATA. */
function seedRam(ram: Uint8Array, seed: number): void {
  const next = rng(seed);
  const view = new DataView(ram.buffer);
  for (let at = 0; at < SEEDED; at += 4) view.setUint32(at, next(), true);
  for (let at = 0; at < SEEDED; at += 32) {
    const r = next();
    const prdtl = r % 16 === 0 ? r >>> 16 : r >>> 8 & 3;
    view.setUint32(at, (prdtl << 16 | r & 0xffe0 & ~0xf000 | 5) >>> 0, true); // header DW0
    view.setUint32(at + 8, next() % 7 === 0 ? next() : (next() % (SEEDED / 128)) * 128, true); // CTBA
  }
  for (let t = 0; t < SEEDED; t += 128) {
    if (next() % 3 === 0) continue;
    const r = next();
    ram[t] = 0x27;
    ram[t + 1] = r % 11 === 0 ? 0x00 : 0x80;
    ram[t + 2] = COMMANDS[r % COMMANDS.length]!;
    // mostly small, valid requests: LBA < 512 in LBA mode, 1..8 sectors (count, or features for FPDMA)
    const q = next();
    ram[t + 3] = q & 7 || 1;
    ram[t + 4] = q >>> 8 & 0xff;
    ram[t + 5] = q % 13 === 0 ? 0xff : q >>> 16 & 1;
    ram[t + 6] = ram[t + 8] = ram[t + 9] = ram[t + 10] = ram[t + 13] = 0;
    ram[t + 7] = q % 17 === 0 ? q >>> 24 : 0x40;
    ram[t + 11] = 0;
    const queued = ram[t + 2] === 0x60 || ram[t + 2] === 0x61;
    ram[t + 12] = queued ? q >>> 3 & 0xf8 : (q >>> 20 & 7) + 1; // FPDMA: the tag; else 1..8 sectors
    for (let e = 0; e < 3; e++) {
      const p = t + 0x80 + e * 16;
      if (p + 16 > SEEDED) break;
      view.setUint32(p, DATA + (next() % ((DATA_END - DATA) / 2)) * 2, true);
      view.setUint32(p + 12, (next() % 8 === 0 ? next() : next() % 0x2000) >>> 0, true);
    }
  }
}

describe("AHCI under random register traffic", () => {
  it("never throws, settles, and works after an HBA reset", async () => {
    let commandsRun = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 80 }), fc.nat(), async (ops, seed) => {
        const host = new TestHost({ memorySize: 1 << 20 });
        const cd = createAtapiCdrom({ medium: cdImage(16) });
        const disk = new MemoryDisk(1024).fillPattern();
        const { drv, ahci } = rig(host, new GuestAllocator(host, 0x80000), {
          ports: { 0: { kind: "ata", medium: disk, discard: true }, 1: { kind: "atapi", packetHandler: cd.handler }, 2: { hotpluggable: true }, 3: { kind: "ata", medium: new MemoryDisk(64) } },
        });
        seedRam(host.ram, seed);
        const w32 = (offset: number, value: number): void => host.writeMmio(drv.abar + offset, 4, value >>> 0);
        const start = (port: number, value: number): void => {
          w32(portReg(port, PORT_REG.CMD), 0);
          w32(portReg(port, PORT_REG.CLB), (value % (SEEDED / 1024)) * 1024);
          w32(portReg(port, PORT_REG.FB), 0x60000 + port * 256);
          w32(portReg(port, PORT_REG.IE), value);
          w32(portReg(port, PORT_REG.CMD), PxCMD.FRE | PxCMD.ST);
        };
        for (const o of ops) {
          switch (o.kind) {
            case "raw": {
              const addr = drv.abar + (o.w.offset & ~(o.w.size - 1));
              const mask = o.w.size === 4 ? 0xffffffff : (1 << 8 * o.w.size) - 1;
              if (o.read) host.readMmio(addr, o.w.size);
              else host.writeMmio(addr, o.w.size, (o.w.value & mask) >>> 0);
              break;
            }
            case "start": // (re)start: ST cycled, as error recovery does
              start(o.port, o.value);
              break;
            case "issue":
              if (!(host.readMmio(drv.abar + portReg(o.port, PORT_REG.CMD), 4) & PxCMD.ST)) start(o.port, o.value >>> 7);
              if (o.value & 1) w32(portReg(o.port, PORT_REG.SACT), o.value);
              w32(portReg(o.port, PORT_REG.CI), o.value);
              break;
            case "stop":
              w32(portReg(o.port, PORT_REG.CMD), o.value & PxCMD.FRE);
              break;
            case "comreset":
              w32(portReg(o.port, PORT_REG.SCTL), 1);
              if (o.value & 1) w32(portReg(o.port, PORT_REG.SCTL), 0);
              break;
            case "ack":
              w32(portReg(o.port, PORT_REG.IS), 0xffffffff);
              w32(portReg(o.port, PORT_REG.SERR), 0xffffffff);
              w32(HBA_REG.IS, 0xffffffff);
              w32(HBA_REG.GHC, GHC.IE);
              break;
            case "hr":
              w32(HBA_REG.GHC, GHC.HR);
              break;
            case "attach":
              if (!ahci.device(2)) ahci.attach(2, { kind: "ata", medium: new MemoryDisk(32) });
              break;
            case "detach":
              if (ahci.device(2)) ahci.detach(2);
              break;
          }
          await host.settle();
        }
        await host.settle();
        commandsRun += disk.calls.length;
        expect(host.traces.filter((t) => /internal error|threw|failed: .*Error/.test(t.message))).toEqual([]);

        // a driver that starts over: HBA reset, port bring-up, IDENTIFY and a DMA read
        drv.resetHba();
        await drv.startPort(0);
        drv.ackPort(0);
        const id = await drv.identify(0, 5);
        expect([id.tfd, id.ci, id.words[0]]).toEqual([0x50, 0, 0x0040]);
        const r = await drv.run(0, 9, { fis: lba48(ATA.READ_DMA_EXT, 7, 2), prdt: [{ addr: 0x90000, len: 1024 }] });
        expect([r.tfd, r.ci]).toEqual([0x50, 0]);
        // What the disk holds now (the random traffic may have written sector 7 too).
        expect(firstDifference(host.ram.slice(0x90000, 0x90000 + 1024), disk.sector(7, 2))).toBe(-1);
      }),
      { numRuns: 150 },
    );
    // the traffic did reach the drive, not just the registers
    expect(commandsRun).toBeGreaterThan(10);
  });
});
