import { describe, expect, it } from "vitest";
import { Allocations } from "./allocations.js";
import { ScratchBuffers } from "./scratch-buffers.js";

describe("Allocations", () => {
  it("runAll claims a run of blocks: writers to any of them wait for it, then look again", async () => {
    const a = new Allocations();
    let finish!: () => void;
    const run = a.runAll(4, 3, () => new Promise<void>((r) => (finish = r)));
    expect([3, 4, 5, 6, 7].map((i) => a.busy(i))).toEqual([false, true, true, true, false]);
    let ranHere = false;
    const other = a.once(5, async () => {
      ranHere = true;
    });
    await expect(a.runAll(6, 2, async () => undefined)).rejects.toThrow(/already being allocated/);
    finish();
    await run;
    expect(await other).toBe(false);
    expect(ranHere).toBe(false);
    expect([4, 5, 6].some((i) => a.busy(i))).toBe(false);
  });

  it("a failed run frees its blocks for the next writer", async () => {
    const a = new Allocations();
    await expect(a.runAll(0, 2, async () => Promise.reject(new Error("disk full")))).rejects.toThrow("disk full");
    expect(a.busy(0) || a.busy(1)).toBe(false);
    expect(await a.once(1, async () => undefined)).toBe(true);
  });
});

describe("ScratchBuffers", () => {
  it("hands out zeroed buffers, reusing the ones given back, and keeps at most 8 MiB", () => {
    const s = new ScratchBuffers(1024);
    const b = s.take();
    b.fill(7);
    s.give(b);
    const again = s.take();
    expect(again === b).toBe(true);
    expect(again.every((x) => x === 0)).toBe(true);
    const big = new ScratchBuffers(16 << 20);
    const x = big.take();
    big.give(x);
    expect(big.take() === x).toBe(false); // too big to keep
  });
});
