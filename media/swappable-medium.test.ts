/**
 * The running disk whose backing changes: an exclusive section waits for requests in flight and
 * holds new ones back; a swap is seen by the next request; mirrored writes reach the mirror
 * inside the request; the synchronous fast paths step aside while anything special goes on.
 */
import { describe, expect, it } from "vitest";
import { createRaw } from "./formats/raw/raw.js";
import { MemoryFileOpener } from "./io/fault-io.js";
import type { BlockBackend } from "./block.js";
import { SwappableMedium } from "./swappable-medium.js";

const opener = new MemoryFileOpener();
let n = 0;
const raw = async (fill: number): Promise<BlockBackend> => {
  const b = await createRaw(opener, `/disk-${n++}`, 64 * 1024);
  await b.write(0, new Uint8Array(64 * 1024).fill(fill));
  return b;
};

/** A backend whose reads finish only when released. */
function held(inner: BlockBackend, done: (offset: number) => void) {
  const waiting: (() => void)[] = [];
  const backend: BlockBackend = Object.assign(Object.create(inner) as BlockBackend, {
    read: async (offset: number, buf: Uint8Array) => {
      await new Promise<void>((r) => waiting.push(r));
      await inner.read(offset, buf);
      done(offset);
    },
  });
  return { backend, release: () => waiting.splice(0).forEach((r) => r()), pending: () => waiting.length };
}

describe("SwappableMedium", () => {
  it("waits for requests in flight before an exclusive section, and holds new ones until it ends", async () => {
    const order: string[] = [];
    const h = held(await raw(1), (offset) => order.push(offset === 0 ? "first read" : "second read"));
    const m = new SwappableMedium(h.backend);
    const first = m.read(0, new Uint8Array(512));
    await Promise.resolve();
    const section = m.exclusive(async () => {
      order.push("exclusive");
      await new Promise((r) => setTimeout(r, 5));
      order.push("exclusive end");
    });
    const second = m.read(512, new Uint8Array(512));
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([]); // the first read is still in flight
    h.release();
    await section;
    await new Promise((r) => setTimeout(r, 1));
    h.release();
    await Promise.all([first, second]);
    expect(order).toEqual(["first read", "exclusive", "exclusive end", "second read"]);
  });

  it("swaps the backing for the next request", async () => {
    const m = new SwappableMedium(await raw(1));
    const next = await raw(2);
    const old = await m.exclusive(async () => m.replace(next));
    await old.close();
    const buf = new Uint8Array(512);
    await m.read(0, buf);
    expect(buf[0]).toBe(2);
  });

  it("mirrors writes inside the request, and skips discards meanwhile", async () => {
    const m = new SwappableMedium(await raw(1));
    const mirror = await raw(0);
    m.afterWrite = (offset, data) => mirror.write(offset, data);
    await m.write(4096, new Uint8Array(512).fill(9));
    const got = new Uint8Array(512);
    await mirror.read(4096, got);
    expect(got[0]).toBe(9);
    await m.discard(0, 4096);
    await m.inner.read(0, got);
    expect(got[0]).toBe(1);
  });

  it("turns the synchronous fast paths down while gated or mirroring", async () => {
    const inner = await raw(1);
    const m = new SwappableMedium(inner);
    const buf = new Uint8Array(512);
    const canSync = !!inner.readSync;
    expect(m.readSync(0, buf)).toBe(canSync && inner.readSync!(0, buf));
    let insideRead: boolean | undefined;
    await m.exclusive(async () => {
      insideRead = m.readSync(0, buf);
    });
    expect(insideRead).toBe(false);
    m.afterWrite = async () => undefined;
    expect(m.writeSync(0, buf)).toBe(false);
  });
});
