// How NodeFileIo copes when O_DIRECT says EINVAL, on a simulated device: node:fs is wrapped so
// that descriptors opened with O_DIRECT refuse requests not aligned to the simulated logical
// block (the real file underneath goes through the page cache), or refuse O_DIRECT at open.
import * as realFs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeEach, describe, expect, it, vi } from "vitest";

const sim = vi.hoisted(() => ({ openEinval: false, logicalBlock: 512, directFds: new Set<number>(), refused: 0, maxCount: Infinity, shortCalls: 0 }));

vi.mock("node:fs", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs")>();
  const O_DIRECT = fs.constants.O_DIRECT;
  const einval = () => Object.assign(new Error("EINVAL: invalid argument (simulated)"), { code: "EINVAL", errno: -22 });
  type Cb = (err: Error | null, n?: number) => void;
  const refuses = (fd: number, len: number, pos: number) => sim.directFds.has(fd) && ((pos | len) % sim.logicalBlock !== 0 || sim.logicalBlock > 1 << 30);
  const wrapped = {
    ...fs,
    open: (p: string, flags: number, mode: number, cb: (err: Error | null, fd: number) => void) => {
      if (!(flags & O_DIRECT)) return fs.open(p, flags, mode, cb);
      if (sim.openEinval) return setImmediate(() => cb(einval(), -1));
      fs.open(p, flags & ~O_DIRECT, mode, (err, fd) => {
        if (!err) sim.directFds.add(fd);
        cb(err, fd);
      });
    },
    read: (fd: number, buf: Uint8Array, off: number, len: number, pos: number, cb: Cb) => {
      if (refuses(fd, len, pos)) return setImmediate(() => (sim.refused++, cb(einval())));
      if (len > sim.maxCount) sim.shortCalls++;
      fs.read(fd, buf, off, Math.min(len, sim.maxCount), pos, cb);
    },
    write: (fd: number, buf: Uint8Array, off: number, len: number, pos: number, cb: Cb) => {
      if (refuses(fd, len, pos)) return setImmediate(() => (sim.refused++, cb(einval())));
      if (len > sim.maxCount) sim.shortCalls++;
      fs.write(fd, buf, off, Math.min(len, sim.maxCount), pos, cb);
    },
  };
  return { ...wrapped, default: wrapped };
});

const { NodeFileOpener } = await import("./node-file-io.js");

const root = realFs.mkdtempSync(path.join(os.tmpdir(), "vstor-einval-test-"));
afterAll(() => realFs.rmSync(root, { recursive: true, force: true }));
let serial = 0;

beforeEach(() => {
  sim.openEinval = false;
  sim.logicalBlock = 512;
  sim.refused = 0;
  sim.maxCount = Infinity;
  sim.shortCalls = 0;
});

/** Unaligned and aligned writes and reads of all sizes, checked against a model. */
async function exercise(f: import("../file-io.js").FileIo): Promise<void> {
  const model = new Uint8Array(1 << 20);
  const writes: [number, number][] = [[0, 512], [512, 4096], [4096, 8192], [100, 3], [12345, 70000], [65536, 4096], [1000000, 48576]];
  for (const [i, [pos, len]] of writes.entries()) {
    const data = new Uint8Array(len).fill(i + 1);
    await f.write(pos, data);
    model.set(data, pos);
  }
  for (const [pos, len] of [[0, 1 << 20], [512, 512], [4096, 4096], [99, 5000]]) {
    const b = new Uint8Array(len);
    expect(await f.read(pos, b)).toBe(len);
    expect(Buffer.from(b).equals(Buffer.from(model.subarray(pos, pos + len))), `read ${pos}+${len}`).toBe(true);
  }
}

describe("NodeFileIo when the system moves fewer bytes than asked", () => {
  for (const direct of [false, true]) {
    it(`goes on until the request is done${direct ? " (O_DIRECT)" : ""}`, async () => {
      sim.maxCount = 1000; // short and unaligned counts
      const f = await new NodeFileOpener().open(path.join(root, `${serial++}`), { create: true, direct });
      await exercise(f);
      expect(sim.shortCalls).toBeGreaterThan(0);
      const b = new Uint8Array(4096);
      expect(await f.read((1 << 20) - 1000, b)).toBe(1000); // the end of the file is still the end
      await f.close();
    });
  }
});

describe("NodeFileIo when O_DIRECT refuses", () => {
  it("raises its alignment to 4096 on a 4 KiB device and stays direct", async () => {
    sim.logicalBlock = 4096;
    const f = await new NodeFileOpener().open(path.join(root, `${serial++}`), { create: true, direct: true });
    expect(f.directAlignment).toBe(512);
    await exercise(f);
    expect(sim.refused).toBeGreaterThan(0);
    expect(f.direct).toBe(true);
    expect(f.directAlignment).toBe(4096);
    // Now aligned to 4096, nothing more is refused.
    const before = sim.refused;
    await exercise(f);
    expect(sim.refused).toBe(before);
    await f.close();
  });

  it("falls back to the page cache when even 4096-byte requests are refused", async () => {
    sim.logicalBlock = 2 ** 31; // refuse everything
    const f = await new NodeFileOpener().open(path.join(root, `${serial++}`), { create: true, direct: true });
    await exercise(f);
    expect(f.direct).toBe(false);
    await f.close();
  });

  it("falls back to the page cache when the file system has no O_DIRECT", async () => {
    sim.openEinval = true;
    const f = await new NodeFileOpener().open(path.join(root, `${serial++}`), { create: true, direct: true });
    expect(f.direct).toBe(false);
    await exercise(f);
    await f.close();
  });

  it("does not pass a 512-byte request to a 4 KiB device when told the alignment", async () => {
    sim.logicalBlock = 4096;
    const f = await new NodeFileOpener({ directAlignment: 4096 }).open(path.join(root, `${serial++}`), { create: true, direct: true });
    await exercise(f);
    expect(sim.refused).toBe(0);
    expect(f.direct).toBe(true);
    await f.close();
  });
});
