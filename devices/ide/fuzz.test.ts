/**
 * A hostile guest: random accesses of every width to the task-file, control and bus master
 * ports, over RAM seeded with random PRD tables, must never throw, never leave deferred work
 * running forever, and never hit the ATA core's internal-error path.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TestHost } from "../../host-adapter/testbench/index.js";
import { BM_BASE, rig } from "./test-setup.js";

type Op = { port: number; size: 1 | 2 | 4; write: boolean; value: number };

const ports = [
  ...Array.from({ length: 8 }, (_, i) => 0x1f0 + i),
  0x3f6,
  ...Array.from({ length: 8 }, (_, i) => 0x170 + i),
  0x376,
  ...Array.from({ length: 16 }, (_, i) => BM_BASE + i),
];

const op: fc.Arbitrary<Op> = fc.record({
  port: fc.constantFrom(...ports),
  size: fc.constantFrom(1 as const, 2 as const, 4 as const),
  write: fc.boolean(),
  // bias towards values that do something: commands, SRST, start bits, small PRD pointers
  value: fc.oneof(
    fc.constantFrom(0x00, 0x01, 0x02, 0x04, 0x06, 0x08, 0x09, 0x20, 0x24, 0x25, 0x30, 0x35, 0x40, 0x90, 0xa0, 0xa1, 0xc4, 0xc6, 0xc8, 0xca, 0xe0, 0xec, 0xef, 0xf0),
    fc.integer({ min: 0, max: 0x3fff }).map((x) => x * 4),
    fc.nat({ max: 0xffffffff }),
  ),
});

describe("IDE under random register traffic", () => {
  it("never throws and settles", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 120 }), fc.uint8Array({ minLength: 256, maxLength: 256 }), async (ops, prds) => {
        const host = new TestHost({ memorySize: 1 << 20 });
        const { ide } = rig(host, { chipset: "ich6", sectors: 256 });
        host.ram.set(prds, 0); // random PRD entries at low addresses
        host.ram.set(prds, 0x4000);
        for (const o of ops) {
          if (o.port >= BM_BASE && o.port + o.size > BM_BASE + 16) continue;
          if (o.write) host.portOut(o.port, o.size, o.size === 4 ? o.value >>> 0 : o.value & ((1 << (8 * o.size)) - 1));
          else host.portIn(o.port, o.size);
          await host.settle();
        }
        host.out8(0x3f6, 0x04);
        host.out8(0x3f6, 0x00);
        host.out8(0x376, 0x04);
        host.out8(0x376, 0x00);
        await host.settle();
        expect(host.in8(0x1f7)).toBe(0x50);
        expect(host.traces.filter((t) => /internal error|threw|failed/.test(t.message))).toEqual([]);
        void ide;
      }),
      { numRuns: 150 },
    );
  });
});
