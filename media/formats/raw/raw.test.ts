import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { describeBlockBackendConformance, pattern } from "../../testing/conformance.js";
import { createRaw, openRaw } from "./raw.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-raw-test-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let serial = 0;
const tmpFile = (name = "disk.raw") => path.join(fs.mkdtempSync(path.join(tmpRoot, `${serial++}-`)), name);

describeBlockBackendConformance("raw on memory files", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new MemoryFileOpener());
  const backend = await createRaw(opener, "disk.raw", size);
  return { backend, reopen: (o) => openRaw(opener, "disk.raw", o) };
});

describeBlockBackendConformance("raw on Node files", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new NodeFileOpener());
  const file = tmpFile();
  const backend = await createRaw(opener, file, size);
  return { backend, reopen: (o) => openRaw(opener, file, o), cleanup: async () => fs.rmSync(path.dirname(file), { recursive: true }) };
});

// O_DIRECT with a 4 KiB alignment on this 512-byte device: every 512-byte request has page-cache
// head and tail pieces around a direct middle, so this runs the mixed path hard.
describeBlockBackendConformance("raw on Node files, host cache off (O_DIRECT, 4 KiB alignment)", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new NodeFileOpener({ directAlignment: 4096 }));
  const file = tmpFile();
  const backend = await createRaw(opener, file, size, { direct: true });
  return { backend, reopen: (o) => openRaw(opener, file, { ...o, direct: true }), cleanup: async () => fs.rmSync(path.dirname(file), { recursive: true }) };
});

// A CD/DVD image: 2048-byte sectors.
describeBlockBackendConformance("raw on memory files, 2048-byte sectors", async ({ size, wrapOpener }) => {
  const opener = wrapOpener(new MemoryFileOpener());
  const backend = await createRaw(opener, "cd.iso", size, { sectorSize: 2048 });
  return { backend, reopen: (o) => openRaw(opener, "cd.iso", { ...o, sectorSize: 2048 }) };
});

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return e instanceof MediumError ? e.kind : `not a MediumError: ${e}`;
  }
  return "resolved";
}

describe("raw images", () => {
  it("creates a sparse file of the size asked, or a preallocated one", async () => {
    const opener = new MemoryFileOpener();
    const sparse = await createRaw(opener, "a.raw", 4 << 20);
    expect(opener.file("a.raw").size).toBe(4 << 20);
    expect(opener.file("a.raw").allocatedBytes).toBe(0);
    await sparse.close();

    const file = tmpFile();
    const full = await createRaw(new NodeFileOpener(), file, 3 << 20 | 512, { preallocate: true });
    await full.close();
    const st = fs.statSync(file);
    expect(st.size).toBe(3 << 20 | 512);
    expect(st.blocks * 512).toBeGreaterThanOrEqual(3 << 20);
    const file2 = tmpFile();
    await (await createRaw(new NodeFileOpener(), file2, 3 << 20)).close();
    expect(fs.statSync(file2).blocks).toBe(0);
  });

  it("refuses a size that is not whole sectors, and an existing file", async () => {
    const opener = new MemoryFileOpener();
    expect(await kindOf(createRaw(opener, "a.raw", 1000))).toBe("out-of-bounds");
    expect(await kindOf(createRaw(opener, "b.raw", 4096, { sectorSize: 2048 }))).toBe("resolved");
    expect(await kindOf(createRaw(opener, "b.raw", 4096))).toBe("io");
    const file = tmpFile();
    fs.writeFileSync(file, "x");
    expect(await kindOf(createRaw(new NodeFileOpener(), file, 4096))).toBe("io");
    expect(await kindOf(openRaw(new NodeFileOpener(), file + ".missing"))).toBe("not-found");
  });

  it("rounds an odd-sized file up to whole sectors; the missing tail reads as zeros", async () => {
    const file = tmpFile();
    fs.writeFileSync(file, Buffer.alloc(1000, 0x11));
    const b = await openRaw(new NodeFileOpener(), file);
    expect(b.size).toBe(1024);
    const buf = new Uint8Array(1024).fill(0xff);
    await b.read(0, buf);
    expect(buf.subarray(0, 1000).every((x) => x === 0x11)).toBe(true);
    expect(buf.subarray(1000).every((x) => x === 0)).toBe(true);
    await b.write(512, pattern(1, 512));
    await b.close();
    expect(fs.statSync(file).size).toBe(1024);
  });

  it("offers a synchronous path that agrees with the asynchronous one, with the same checks", async () => {
    const file = tmpFile();
    fs.writeFileSync(file, Buffer.alloc(1000, 0x11));
    const b = await openRaw(new NodeFileOpener(), file);
    const buf = new Uint8Array(1024).fill(0xff);
    expect(b.readSync(0, buf)).toBe(true);
    expect(buf.subarray(0, 1000).every((x) => x === 0x11) && buf.subarray(1000).every((x) => x === 0)).toBe(true);
    expect(b.writeSync(512, pattern(2, 512))).toBe(true);
    const back = new Uint8Array(512);
    await b.read(512, back);
    expect(back).toEqual(pattern(2, 512));
    expect(() => b.readSync(1, new Uint8Array(512))).toThrow(MediumError);
    expect(() => b.readSync(1024, new Uint8Array(512))).toThrow(expect.objectContaining({ kind: "out-of-bounds" }));
    // A write in flight over the range: declined (the caller goes the asynchronous way).
    const pending = b.write(0, pattern(3, 512));
    expect(b.readSync(0, new Uint8Array(512))).toBe(false);
    await pending;
    expect(b.queue.stats.synchronous).toBe(2);
    await b.close();
    const ro = await openRaw(new NodeFileOpener(), file, { readOnly: true });
    expect(() => ro.writeSync(0, new Uint8Array(512))).toThrow(expect.objectContaining({ kind: "read-only" }));
    await ro.close();
  });

  it("discards by punching holes where the file can, else keeps the data (discardZeroes says which)", async () => {
    const mem = new MemoryFileOpener();
    const m = await createRaw(mem, "a.raw", 1 << 20);
    expect(m.discardZeroes).toBe(true);
    await m.write(0, pattern(2, 256 << 10));
    expect(mem.file("a.raw").allocatedBytes).toBe(256 << 10);
    await m.discard(0, 128 << 10);
    expect(mem.file("a.raw").allocatedBytes).toBe(128 << 10);
    const back = new Uint8Array(128 << 10);
    await m.read(0, back);
    expect(back.every((x) => x === 0)).toBe(true);
    await m.close();

    // Node has no fallocate(PUNCH_HOLE): discard is a no-op and says so.
    const n = await createRaw(new NodeFileOpener(), tmpFile(), 1 << 20);
    expect(n.discardZeroes).toBe(false);
    const data = pattern(3, 4096);
    await n.write(0, data);
    await n.discard(0, 4096);
    const got = new Uint8Array(4096);
    await n.read(0, got);
    expect(got).toEqual(data);
    await n.close();
  });

  it("reports the whole disk as one data extent (Node cannot find holes)", async () => {
    const b = await createRaw(new MemoryFileOpener(), "a.raw", 1 << 20);
    expect(await b.allocatedExtents()).toEqual([{ offset: 0, length: 1 << 20, state: "data" }]);
    await b.resize(0, { allowShrink: true });
    expect(await b.allocatedExtents()).toEqual([]);
  });

  it("grows, and shrinks only when told to", async () => {
    const file = tmpFile();
    const opener = new NodeFileOpener();
    const b = await createRaw(opener, file, 1 << 20);
    const last = pattern(4, 512);
    await b.write((1 << 20) - 512, last);
    // Grow: new space reads as zeros; requests beyond the old end are now in bounds.
    await b.resize(2 << 20);
    expect(b.size).toBe(2 << 20);
    expect(fs.statSync(file).size).toBe(2 << 20);
    const tail = new Uint8Array(4096).fill(1);
    await b.read((2 << 20) - 4096, tail);
    expect(tail.every((x) => x === 0)).toBe(true);
    await b.write((2 << 20) - 512, pattern(5, 512));
    // Shrink: refused without the flag, and nothing changes.
    expect(await kindOf(b.resize(1 << 20))).toBe("unsupported");
    expect(b.size).toBe(2 << 20);
    expect(fs.statSync(file).size).toBe(2 << 20);
    expect(await kindOf(b.resize(1000))).toBe("out-of-bounds");
    await b.resize(1 << 20, { allowShrink: true });
    expect(b.size).toBe(1 << 20);
    expect(fs.statSync(file).size).toBe(1 << 20);
    expect(await kindOf(b.read(1 << 20, new Uint8Array(512)))).toBe("out-of-bounds");
    const keep = new Uint8Array(512);
    await b.read((1 << 20) - 512, keep);
    expect(keep).toEqual(last);
    // Grow again: the shrunk-away tail does not come back.
    await b.resize(2 << 20);
    const gone = new Uint8Array(512).fill(1);
    await b.read((2 << 20) - 512, gone);
    expect(gone.every((x) => x === 0)).toBe(true);
    await b.close();
    // Read-only media cannot be resized.
    const ro = await openRaw(opener, file, { readOnly: true });
    expect(await kindOf(ro.resize(4 << 20))).toBe("read-only");
    await ro.close();
  });

  it("orders a resize after requests already submitted", async () => {
    const opener = new MemoryFileOpener();
    const b = await createRaw(opener, "a.raw", 2 << 20);
    const data = pattern(6, 64 << 10);
    const w = b.write((1 << 20) - 32768, data);
    const r = b.resize(1 << 20, { allowShrink: true });
    await Promise.all([w, r]);
    const back = new Uint8Array(32768);
    await b.read((1 << 20) - 32768, back);
    expect(back).toEqual(data.subarray(0, 32768));
    expect(opener.file("a.raw").size).toBe(1 << 20);
  });

  it("flushes to the file", async () => {
    const opener = new MemoryFileOpener();
    const b = await createRaw(opener, "a.raw", 1 << 20);
    await b.flush();
    expect(opener.file("a.raw").flushes).toBe(1);
  });
});

describe("raw interop with QEMU", () => {
  const qemu = (tool: string, args: string[]) => {
    const r = spawnSync(tool, args, { encoding: "utf8" });
    if (r.error) throw new Error(`${tool} is needed for interop tests (apt-get install qemu-utils): ${r.error.message}`);
    return r;
  };

  it("writes an image qemu-img compares identical to one qemu-io wrote", async () => {
    const ours = tmpFile("ours.raw");
    const theirs = path.join(path.dirname(ours), "theirs.raw");
    const b = await createRaw(new NodeFileOpener(), ours, 4 << 20);
    await b.write(1 << 20, new Uint8Array(64 << 10).fill(0xab));
    await b.close();
    expect(qemu("qemu-img", ["create", "-q", "-f", "raw", theirs, "4M"]).status).toBe(0);
    const w = qemu("qemu-io", ["-f", "raw", "-c", "write -P 0xab 1M 64k", theirs]);
    expect(w.status, w.stderr).toBe(0);
    const same = qemu("qemu-img", ["compare", "-f", "raw", "-F", "raw", ours, theirs]);
    expect(same.status, same.stdout + same.stderr).toBe(0);

    // And the comparison can fail: one sector more of ours differs.
    const b2 = await openRaw(new NodeFileOpener(), ours);
    await b2.write((1 << 20) + (64 << 10), new Uint8Array(512).fill(0xab));
    await b2.close();
    const differ = qemu("qemu-img", ["compare", "-f", "raw", "-F", "raw", ours, theirs]);
    expect(differ.status).toBe(1);
  });

  it("reads what qemu-io wrote", async () => {
    const theirs = tmpFile("theirs.raw");
    expect(qemu("qemu-img", ["create", "-q", "-f", "raw", theirs, "2M"]).status).toBe(0);
    expect(qemu("qemu-io", ["-f", "raw", "-c", "write -P 0x5c 512 1536", "-c", "write -P 0x77 2096640 512", theirs]).status).toBe(0);
    const b = await openRaw(new NodeFileOpener(), theirs, { readOnly: true });
    expect(b.size).toBe(2 << 20);
    const buf = new Uint8Array(4096);
    await b.read(0, buf);
    expect(buf.subarray(0, 512).every((x) => x === 0)).toBe(true);
    expect(buf.subarray(512, 2048).every((x) => x === 0x5c)).toBe(true);
    expect(buf.subarray(2048).every((x) => x === 0)).toBe(true);
    const last = new Uint8Array(512);
    await b.read((2 << 20) - 512, last);
    expect(last.every((x) => x === 0x77)).toBe(true);
    await b.close();
  });
});
