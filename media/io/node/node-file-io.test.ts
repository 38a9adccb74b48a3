import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { type NodeFileIo, NodeFileOpener, mediumErrorFromNode } from "./node-file-io.js";
import { withoutHostCache } from "../file-io.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-nodeio-test-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let serial = 0;
const tmp = (name = "f") => path.join(root, `${serial++}-${name}`);

const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
/** Byte equality without vitest's element-by-element diffing (slow on megabytes). */
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

function xorshift(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/** Bytes of the file that sit in the page cache (fincore, util-linux). */
function cachedBytes(file: string): number {
  const r = spawnSync("fincore", ["--bytes", "--noheadings", "--output", "RES", file], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`fincore failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

/** Push a file out of the page cache (what it has on disk stays). */
function dropCache(file: string): void {
  const fd = fs.openSync(file, "r");
  try {
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  // POSIX_FADV_DONTNEED is not in Node; dd can do it.
  const r = spawnSync("dd", [`if=${file}`, "iflag=nocache", "count=0", "status=none"]);
  if (r.status !== 0) throw new Error(`dd nocache failed: ${r.stderr}`);
}

describe("NodeFileIo", () => {
  const opener = new NodeFileOpener();

  it("creates, writes, reads, grows, truncates and flushes", async () => {
    const p = tmp();
    const f = await opener.open(p, { create: true });
    expect(f.direct).toBe(false);
    await f.write(4096, fill(1000, 7));
    expect(await f.size()).toBe(5096);
    const b = new Uint8Array(8192).fill(1);
    expect(await f.read(4000, b)).toBe(1096);
    expect([...b.subarray(0, 96)]).toEqual([...fill(96, 0)]);
    expect(b.subarray(96, 1096).every((x) => x === 7)).toBe(true);
    expect(await f.read(1 << 20, b)).toBe(0);
    await f.truncate(4500);
    expect(fs.statSync(p).size).toBe(4500);
    await f.truncate(1 << 30);
    expect(await f.size()).toBe(1 << 30);
    await f.flush();
    await f.close();
    await f.close();
    await expect(f.read(0, b)).rejects.toMatchObject({ kind: "closed" });
    await expect(f.write(0, b)).rejects.toMatchObject({ kind: "closed" });
    await expect(f.flush()).rejects.toMatchObject({ kind: "closed" });
  });

  it("has a synchronous path that sees what the asynchronous one wrote (and the other way round)", async () => {
    const p = tmp();
    const f = await opener.open(p, { create: true });
    await f.write(0, fill(4096, 3));
    const b = new Uint8Array(8192);
    expect(f.readSync!(0, b)).toBe(4096); // short at the end of the file
    expect(b.subarray(0, 4096).every((x) => x === 3)).toBe(true);
    expect(f.writeSync!(6144, fill(2048, 9))).toBe(true);
    const c = new Uint8Array(2048);
    expect(await f.read(6144, c)).toBe(2048);
    expect(c.every((x) => x === 9)).toBe(true);
    expect(() => f.readSync!(-1, b)).toThrow(expect.objectContaining({ kind: "out-of-bounds" }));
    await f.close();
    expect(f.readSync!(0, b)).toBeUndefined();
    const ro = await opener.open(p, { readOnly: true });
    expect(() => ro.writeSync!(0, fill(512, 1))).toThrow(expect.objectContaining({ kind: "read-only" }));
    await ro.close();
  });

  it("reads and writes past 4 GiB", async () => {
    const f = await opener.open(tmp(), { create: true });
    const pos = 2 ** 32 + 2 ** 31 + 512;
    await f.write(pos, fill(512, 9));
    const b = new Uint8Array(512);
    expect(await f.read(pos, b)).toBe(512);
    expect(b.every((x) => x === 9)).toBe(true);
    await f.close();
  });

  it("keeps many requests in flight", async () => {
    const f = await opener.open(tmp(), { create: true });
    const chunks = Array.from({ length: 64 }, (_, i) => fill(4096 + i * 512, i + 1));
    const offsets = chunks.map((_, i) => i * 65536);
    await Promise.all(chunks.map((c, i) => f.write(offsets[i], c)));
    const back = chunks.map((c) => new Uint8Array(c.length));
    const counts = await Promise.all(back.map((b, i) => f.read(offsets[i], b)));
    counts.forEach((n, i) => expect(n).toBe(chunks[i].length));
    back.forEach((b, i) => expect(same(b, chunks[i]), `chunk ${i}`).toBe(true));
    await f.close();
  });

  for (const direct of [false, true]) {
    it(`waits for running requests before closing the descriptor${direct ? " (O_DIRECT, requests in several pieces)" : ""}`, async () => {
      const p = tmp();
      const f = await opener.open(p, { create: true, direct });
      // Unaligned 3 MiB writes: a page-cache head, three direct pieces, a page-cache tail.
      const writes = Array.from({ length: 8 }, (_, i) => f.write(i * (4 << 20) + 100, fill(3 << 20, i + 1)));
      const closed = f.close();
      await Promise.all(writes);
      await closed;
      const back = fs.readFileSync(p);
      for (let i = 0; i < 8; i++) expect(back.subarray(i * (4 << 20) + 100, i * (4 << 20) + 100 + (3 << 20)).every((x) => x === i + 1)).toBe(true);
    });
  }

  it("opens read-only and refuses writes with read-only", async () => {
    const p = tmp();
    fs.writeFileSync(p, Buffer.alloc(4096, 3));
    const f = await opener.open(p, { readOnly: true });
    expect(f.readOnly).toBe(true);
    await expect(f.write(0, fill(512, 1))).rejects.toMatchObject({ kind: "read-only", path: p });
    await expect(f.truncate(0)).rejects.toMatchObject({ kind: "read-only" });
    expect((f as { punchHole?: unknown }).punchHole).toBeUndefined();
    const b = new Uint8Array(512);
    await f.read(0, b);
    expect(b.every((x) => x === 3)).toBe(true);
    await f.close();
    expect(fs.readFileSync(p).every((x) => x === 3)).toBe(true);
  });

  it("maps open errors to kinds, with the path", async () => {
    const missing = tmp("missing");
    await expect(opener.open(missing)).rejects.toMatchObject({ kind: "not-found", path: missing });
    const e = await opener.open(missing).catch((x) => x);
    expect(e).toBeInstanceOf(MediumError);
    expect(e.message).toContain(missing);
    expect((e.cause as NodeJS.ErrnoException).code).toBe("ENOENT");
    const file = tmp("file");
    fs.writeFileSync(file, "x");
    await expect(opener.open(path.join(file, "below"))).rejects.toMatchObject({ kind: "not-found" });
    await expect(opener.open(file, { create: true })).rejects.toMatchObject({ kind: "io" });
    await expect(opener.open(root)).rejects.toMatchObject({ kind: "io" }); // EISDIR
    await expect(opener.remove(missing)).rejects.toMatchObject({ kind: "not-found", path: missing });
    await expect(opener.rename(missing, file)).rejects.toMatchObject({ kind: "not-found" });
  });

  it.skipIf(process.getuid?.() === 0)("maps a permission error to read-only", async () => {
    const p = tmp();
    fs.writeFileSync(p, "x");
    fs.chmodSync(p, 0o444);
    await expect(opener.open(p)).rejects.toMatchObject({ kind: "read-only" });
  });

  it("maps Node error codes to MediumError kinds", () => {
    const err = (code: string) => Object.assign(new Error(`${code}: test`), { code });
    const kinds = Object.fromEntries(
      ["ENOENT", "ENOTDIR", "EACCES", "EPERM", "EROFS", "ENOSPC", "EIO", "EDQUOT", "EFBIG", "EAGAIN", "EWOULDBLOCK", "EBUSY", "ETXTBSY", "EISDIR", "EEXIST"].map((c) => [c, mediumErrorFromNode(err(c), "/p", "write", 512).kind]),
    );
    expect(kinds).toEqual({
      ENOENT: "not-found", ENOTDIR: "not-found", EACCES: "read-only", EPERM: "read-only", EROFS: "read-only",
      ENOSPC: "io", EIO: "io", EDQUOT: "io", EFBIG: "io", EAGAIN: "locked", EWOULDBLOCK: "locked", EBUSY: "locked",
      ETXTBSY: "locked", EISDIR: "io", EEXIST: "io",
    });
    const m = mediumErrorFromNode(err("EIO"), "/p", "write", 512);
    expect(m).toMatchObject({ path: "/p", offset: 512 });
    expect(m.message).toBe("/p: write failed: EIO: test");
    const same = new MediumError("corrupt", "x");
    expect(mediumErrorFromNode(same, "/q", "read")).toBe(same);
  });

  it("renames, removes and answers exists", async () => {
    const a = tmp("a");
    const b = tmp("b");
    await (await opener.open(a, { create: true })).close();
    expect(await opener.exists(a)).toBe(true);
    await opener.rename(a, b);
    expect(await opener.exists(a)).toBe(false);
    await opener.remove(b);
    expect(await opener.exists(b)).toBe(false);
  });
});

describe("NodeFileIo with the host cache off (O_DIRECT)", () => {
  it("is what withoutHostCache gives every file it opens (a controller with --hostiocache off)", async () => {
    const p = tmp();
    const opener = withoutHostCache(new NodeFileOpener());
    const f = (await opener.open(p, { create: true })) as NodeFileIo;
    expect(f.direct).toBe(true);
    await f.close();
    expect(await opener.exists(p)).toBe(true);
  });

  it("bypasses the page cache for aligned requests", async () => {
    const p = tmp();
    const f = await new NodeFileOpener().open(p, { create: true, direct: true });
    expect(f.direct).toBe(true);
    expect(f.directAlignment).toBe(512);
    // No synchronous path: it would wait for the disk inside the emulator's CPU loop.
    expect(f.readSync!(0, new Uint8Array(512))).toBeUndefined();
    expect(f.writeSync!(0, fill(512, 1))).toBe(false);
    await f.write(0, fill(4 << 20, 0x42));
    expect(cachedBytes(p)).toBe(0);
    const b = new Uint8Array(4 << 20);
    expect(await f.read(0, b)).toBe(4 << 20);
    expect(b.every((x) => x === 0x42)).toBe(true);
    expect(cachedBytes(p)).toBe(0);
    await f.close();
    // The same through the page cache does leave pages behind (so the check above can fail).
    const g = await new NodeFileOpener().open(p);
    await g.read(0, b);
    expect(cachedBytes(p)).toBeGreaterThan(0);
    await g.close();
  });

  it("reads data written through the page cache (and the other way round)", async () => {
    const p = tmp();
    const buffered = await new NodeFileOpener().open(p, { create: true });
    const direct = await new NodeFileOpener().open(p, { direct: true });
    await buffered.write(0, fill(8192, 1));
    const b = new Uint8Array(8192);
    await direct.read(0, b);
    expect(b.every((x) => x === 1)).toBe(true);
    await direct.write(4096, fill(4096, 2));
    await buffered.read(0, b);
    expect([...b.subarray(4090, 4100)]).toEqual([1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
    await direct.close();
    await buffered.close();
  });

  it("reads short at an unaligned end of file", async () => {
    const p = tmp();
    fs.writeFileSync(p, Buffer.alloc(5000, 6));
    dropCache(p);
    const f = await new NodeFileOpener().open(p, { direct: true });
    const b = new Uint8Array(8192).fill(1);
    expect(await f.read(0, b)).toBe(5000);
    expect(b.subarray(0, 5000).every((x) => x === 6)).toBe(true);
    expect(await f.read(4096, b.subarray(0, 4096))).toBe(904);
    expect(await f.read(8192, b)).toBe(0);
    await f.close();
  });

  it("keeps page-cache pieces from running beside direct pieces on the same pages", async () => {
    const f = await new NodeFileOpener().open(tmp(), { create: true, direct: true });
    // Each unaligned request below starts while an aligned direct write to another range of the
    // same 64 KiB page is running: its page-cache head or tail must wait for it.
    const cases: [string, () => Promise<unknown>][] = [
      ["write head", () => f.write(100, fill(200, 1))],
      ["read head", () => f.read(100, new Uint8Array(200))],
      ["write tail", () => f.write(4096, fill(4196, 2))],
      ["read tail", () => f.read(4096, new Uint8Array(4196))],
    ];
    for (const [name, op] of cases) {
      const before = f.lockWaits;
      await Promise.all([f.write(32768, fill(8192, 3)), op()]);
      expect(f.lockWaits - before, name).toBeGreaterThanOrEqual(1);
    }
    // Direct pieces do not wait for each other.
    const before = f.lockWaits;
    await Promise.all([f.write(32768, fill(8192, 3)), f.write(0, fill(8192, 4))]);
    expect(f.lockWaits).toBe(before);
    await f.close();
  });

  for (const alignment of [512, 4096] as const) {
    it(`handles any byte range, many in flight, with ${alignment}-byte alignment`, async () => {
      const p = tmp();
      const f = (await new NodeFileOpener({ directAlignment: alignment }).open(p, { create: true, direct: true })) as NodeFileIo;
      expect(f.direct).toBe(true);
      const size = 3 << 20;
      const model = new Uint8Array(size);
      let end = 0;
      const rnd = xorshift(alignment);
      for (let round = 0; round < 30; round++) {
        // A batch of non-overlapping writes, many sharing pages, all in flight at once.
        const taken: [number, number][] = [];
        const batch: Promise<void>[] = [];
        for (let i = 0; i < 24; i++) {
          const len = 1 + (rnd(4) === 0 ? rnd(1 << 20) + 8192 : rnd(3000));
          const pos = rnd(size - len);
          if (taken.some(([a, b]) => pos < b && a < pos + len)) continue;
          taken.push([pos, pos + len]);
          const data = new Uint8Array(len);
          for (let k = 0; k < len; k += 97) data[k] = rnd(255) + 1;
          model.set(data, pos);
          end = Math.max(end, pos + len);
          batch.push(f.write(pos, data));
        }
        await Promise.all(batch);
        // Reads at random ranges, also in flight together.
        const reads = Array.from({ length: 16 }, () => {
          const len = 1 + rnd(70000);
          const pos = rnd(size - len);
          const b = new Uint8Array(len);
          return f.read(pos, b).then((n) => {
            expect(n).toBe(Math.max(0, Math.min(len, end - pos)));
            expect(same(b.subarray(0, n), model.subarray(pos, pos + n)), `read ${pos}+${len}`).toBe(true);
          });
        });
        await Promise.all(reads);
      }
      expect(await f.size()).toBe(end);
      await f.flush();
      await f.close();
      expect(same(fs.readFileSync(p), model.subarray(0, end))).toBe(true);
    });
  }
});
