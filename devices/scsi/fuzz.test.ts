/**
 * Property test: whatever CDBs a guest sends, in any order, between whatever medium changes the
 * host makes, the MMC target never throws or rejects, never fails internally, completes every
 * command exactly once (or not at all when the transport stopped it) with GOOD or CHECK
 * CONDITION plus well-formed sense, and sends no more than the command allows.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CdDrive } from "./cd-drive.js";
import { MMC_COMMANDS, MmcTarget } from "./mmc-target.js";
import { parseSense, STATUS } from "./sense.js";
import { cdImage, failReadAt, PatternMedium, RecordingIo } from "./test-support.js";

const byte = fc.integer({ min: 0, max: 255 });
const supported = MMC_COMMANDS.map((c, op) => (c ? op : -1)).filter((op) => op >= 0);

/** A CDB: a supported or random opcode, random bytes, often small lengths/addresses so data moves. */
const cdbArb = fc.tuple(fc.oneof(fc.constantFrom(...supported), byte), fc.array(byte, { minLength: 15, maxLength: 15 }), fc.boolean(), fc.integer({ min: 0, max: 16 })).map(([op, rest, tame, length]) => {
  const c = new Uint8Array([op, ...rest]);
  if (tame) {
    // Keep LBAs and counts small (READ(10)/(12)/CD, SEEK), allocation lengths moderate.
    for (const i of [2, 3, 4]) c[i] = 0;
    c[6] = 0;
    c[7] = 0;
    c[8] = c[8]! & 0x0f;
  }
  return length === 0 ? c.subarray(0, 12) : c.subarray(0, Math.max(1, length));
});

const hostAction = fc.constantFrom("none", "none", "insert-cd", "insert-dvd", "eject", "force-eject", "reset");

const scenario = fc.record({
  disc: fc.constantFrom("none", "cd", "dvd"),
  transport: fc.constantFrom("atapi", "scsi") as fc.Arbitrary<"atapi" | "scsi">,
  locked: fc.boolean(),
  badSector: fc.option(fc.integer({ min: 0, max: 40 })),
  steps: fc.array(fc.record({ cdb: cdbArb, before: hostAction, stopAt: fc.oneof(fc.constant(Infinity), fc.integer({ min: 0, max: 3 })) }), { minLength: 1, maxLength: 6 }),
});

describe("MMC target under arbitrary CDBs", () => {
  it("never throws, completes each command once, and reports well-formed status", async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const cd = cdImage(48);
        if (s.badSector !== null) failReadAt(cd, s.badSector);
        const drive = new CdDrive({ medium: s.disc === "cd" ? cd : s.disc === "dvd" ? new PatternMedium(400_000 * 2048) : undefined });
        const target = new MmcTarget({ drive, transport: s.transport });
        if (s.locked) drive.setPrevent(true, false);
        for (const step of s.steps) {
          if (step.before === "insert-cd") drive.insert(cdImage(16));
          else if (step.before === "insert-dvd") drive.insert(new PatternMedium(400_000 * 2048));
          else if (step.before === "eject") drive.eject();
          else if (step.before === "force-eject") drive.eject({ force: true });
          else if (step.before === "reset") target.reset("power-on");
          const io = new RecordingIo();
          io.stopAt = step.stopAt;
          io.hostData = new Uint8Array(64).fill(0x5a);
          await expect(target.execute(step.cdb, io)).resolves.toBeUndefined();
          const stopped = io.completions.length === 0;
          expect(io.completions.length).toBeLessThanOrEqual(1);
          if (stopped) {
            expect(step.stopAt).not.toBe(Infinity);
            continue;
          }
          const r = io.completions[0]!;
          expect([STATUS.GOOD, STATUS.CHECK_CONDITION]).toContain(r.status);
          if (r.status === STATUS.CHECK_CONDITION) {
            expect(r.sense?.length).toBe(18);
            expect(parseSense(r.sense).key).not.toBe(0);
          }
          const sent = io.chunks.reduce((n, c) => n + c.length, 0);
          expect(sent).toBeLessThanOrEqual(64 * 1024 * 1024);
        }
        expect(target.stats.internalErrors).toBe(0);
      }),
      { numRuns: 400 },
    );
  });

  it("answers every one of the 256 opcodes with an all-zero and an all-FF CDB", async () => {
    for (const fill of [0x00, 0xff]) {
      for (let op = 0; op < 256; op++) {
        const target = new MmcTarget({ drive: new CdDrive({ medium: cdImage(8) }) });
        const io = new RecordingIo();
        const c = new Uint8Array(16).fill(fill);
        c[0] = op;
        await target.execute(c, io);
        expect(io.completions.length).toBe(1);
        expect(target.stats.internalErrors).toBe(0);
      }
    }
  });
});
