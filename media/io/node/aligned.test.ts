import { describe, expect, it } from "vitest";
import { BOUNCE_SIZE, BouncePool, PageLocks } from "./aligned.js";

/** A piece of work the test finishes by hand. */
function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}
const settle = () => new Promise<void>((r) => setImmediate(r));

describe("PageLocks", () => {
  it("keeps page-cache and direct pieces on the same pages apart, first come first served", async () => {
    const locks = new PageLocks();
    const log: string[] = [];
    const piece = (name: string, cls: "buffered" | "direct", pos: number, len: number) => {
      const g = gate();
      const done = locks.run(cls, pos, len, async () => {
        log.push(`start ${name}`);
        await g.p;
        log.push(`end ${name}`);
      });
      return { ...g, done };
    };
    const d1 = piece("d1", "direct", 0, 4096);
    const d2 = piece("d2", "direct", 512, 512); // same class: runs alongside d1
    const b1 = piece("b1", "buffered", 4096, 100); // same 64 KiB page as d1: waits
    const b2 = piece("b2", "buffered", 1 << 20, 100); // other pages: runs at once
    const d3 = piece("d3", "direct", 8192, 4096); // after b1 on the same page: waits for b1
    await settle();
    expect(log).toEqual(["start d1", "start d2", "start b2"]);
    d1.open();
    await d1.done;
    await settle();
    expect(log).not.toContain("start b1"); // d2 still runs
    d2.open();
    await d2.done;
    await settle();
    expect(log.slice(-1)).toEqual(["start b1"]);
    expect(log).not.toContain("start d3");
    b1.open();
    await b1.done;
    await settle();
    expect(log.slice(-1)).toEqual(["start d3"]);
    d3.open();
    b2.open();
    await Promise.all([d3.done, b2.done]);
    expect(locks.waits).toBe(2);
  });

  it("releases the lock when a piece fails", async () => {
    const locks = new PageLocks();
    await expect(locks.run("direct", 0, 512, async () => Promise.reject(new Error("x")))).rejects.toThrow("x");
    expect(await locks.run("buffered", 0, 512, async () => 7)).toBe(7);
  });
});

describe("BouncePool", () => {
  it("hands out distinct 1 MiB buffers, waits when all are out, and reuses them", async () => {
    const pool = new BouncePool(8);
    const slots = await Promise.all(Array.from({ length: 8 }, () => pool.acquire()));
    expect(new Set(slots).size).toBe(8);
    expect(slots.every((s) => s.length === BOUNCE_SIZE && s.byteOffset % 4096 === 0)).toBe(true);
    let ninth: Uint8Array | null = null;
    const waiting = pool.acquire().then((s) => (ninth = s));
    await settle();
    expect(ninth).toBeNull();
    pool.release(slots[3]);
    await waiting;
    expect(ninth).toBe(slots[3]);
    expect(pool.allocated).toBe(8);
  });
});
