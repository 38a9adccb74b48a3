/**
 * The streamOptimized writer: our reader gets back every byte (grain and grain-table boundaries,
 * a last partial grain), zeros and holes are not stored, the layout is VMware's (GD at the end
 * behind a footer), a failed write leaves no file; and qemu-img checks, compares and names it.
 */
import * as fs from "node:fs";
import { describe, expect, it } from "vitest";
import { MediumError, type BlockBackend, type Extent } from "../../block.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuCheckClean, expectQemuIdentical, hasQemu, qemu, qemuInfo, tempFiles } from "../../testing/qemu.js";
import { openRaw } from "../raw/raw.js";
import { nodeDeflate, nodeDeflateAsync, nodeInflate } from "./node/zlib.js";
import { FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_TEST, GD_AT_END, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, parseSparseHeader } from "./sparse-header.js";
import { writeStreamVmdk } from "./stream-writer.js";
import { openVmdk } from "./vmdk-open.js";

const KiB = 1024;
const MiB = 1 << 20;
const GRAIN = 64 * KiB;
/** Bytes one grain table covers (512 grains). */
const GT_SPAN = 512 * GRAIN;

/** A disk in memory whose allocatedExtents we choose; it records the reads made. */
class MemoryDisk implements BlockBackend {
  readonly sectorSize = 512;
  readonly readOnly = true;
  readonly reads: [number, number][] = [];
  failAt: number | null = null;

  constructor(
    readonly data: Uint8Array,
    private readonly extents: Extent[] = [{ offset: 0, length: data.length, state: "data" }],
  ) {}
  get size(): number {
    return this.data.length;
  }
  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.reads.push([offset, buf.length]);
    if (this.failAt !== null && offset <= this.failAt && this.failAt < offset + buf.length) {
      throw new MediumError("io", "injected read error", { offset });
    }
    buf.set(this.data.subarray(offset, offset + buf.length));
  }
  async write(): Promise<void> {
    throw new MediumError("read-only", "source");
  }
  async flush(): Promise<void> {}
  async discard(): Promise<void> {}
  async allocatedExtents(): Promise<Extent[]> {
    return this.extents;
  }
  async close(): Promise<void> {}
}

function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed * 2654435761;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = i % 3 === 0 ? x >>> 24 : (i >>> 7) & 0xff; // partly compressible, never all zero
  }
  return out;
}

/** Bytes zlib cannot shrink: the grain's compressed form is larger than the grain. */
function noise(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Content with data across a grain boundary, an incompressible grain, data across the first
 * grain table boundary, and at the very end (size > GT_SPAN + 2 grains).
 */
function sampleDisk(size: number): Uint8Array {
  const d = new Uint8Array(size);
  d.set(pattern(5000, 1), 0);
  d.set(pattern(8192, 2), GRAIN - 4096);
  d.set(noise(GRAIN, 99), 7 * GRAIN);
  d.set(pattern(3 * GRAIN, 3), GT_SPAN - GRAIN - 512);
  d.set(pattern(1024, 4), size - 1024);
  return d;
}

async function readAll(opener: MemoryFileOpener | NodeFileOpener, p: string): Promise<Uint8Array> {
  const img = await openVmdk(opener, p, { inflate: nodeInflate });
  try {
    const out = new Uint8Array(img.size);
    await img.read(0, out);
    return out;
  } finally {
    await img.close();
  }
}

const fileBytes = (o: MemoryFileOpener, p: string): Uint8Array => o.file(p).bytes();

const u32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getUint32(at, true);

describe("writeStreamVmdk", () => {
  it("writes what our reader reads back byte for byte, across grain and grain-table boundaries and a last partial grain", async () => {
    const o = new MemoryFileOpener();
    const size = GT_SPAN + 3 * GRAIN + 5 * 512; // two grain tables; the last grain holds 5 sectors
    const data = sampleDisk(size);
    const progress: [number, number][] = [];
    await writeStreamVmdk(o, "s.vmdk", new MemoryDisk(data), {
      deflate: nodeDeflate,
      uuid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
      chunkSize: 256 * KiB,
      onProgress: (done, total) => progress.push([done, total]),
    });
    const back = await readAll(o, "s.vmdk");
    expect(back.length).toBe(size);
    expect(Buffer.compare(back, data)).toBe(0);
    expect(progress[0]).toEqual([0, size]);
    expect(progress[progress.length - 1]).toEqual([size, size]);

    const img = await openVmdk(o, "s.vmdk", { inflate: nodeInflate });
    expect(img.createType).toBe("streamOptimized");
    expect(img.uuid).toBe("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
    expect(img.readOnly).toBe(true);
    await expect(img.write(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "read-only" });
    // Only the grains holding data are stored.
    expect(img.extents[0]!.stored()).toEqual([
      { offset: 0, length: 2 * GRAIN, state: "data" },
      { offset: 7 * GRAIN, length: GRAIN, state: "data" },
      { offset: 510 * GRAIN, length: 4 * GRAIN, state: "data" },
      { offset: 515 * GRAIN, length: 5 * 512, state: "data" },
    ]);
    await img.close();
  });

  it("lays the file out as VMware does: header with GD_AT_END, grain markers, GT markers, GD, footer, end of stream", async () => {
    const o = new MemoryFileOpener();
    const size = 2 * GT_SPAN + GRAIN; // three grain tables; the middle one stays empty
    const data = new Uint8Array(size);
    data.set(pattern(GRAIN, 5), 0);
    data.set(pattern(GRAIN, 6), 2 * GT_SPAN);
    await writeStreamVmdk(o, "l.vmdk", new MemoryDisk(data), { deflate: nodeDeflate });
    const f = fileBytes(o, "l.vmdk");
    expect(f.length % 512).toBe(0);
    const head = parseSparseHeader(f.subarray(0, 512));
    expect(head).toMatchObject({ version: 3, flags: FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS, gdOffset: GD_AT_END, capacity: size / 512, grainSize: 128, compressAlgorithm: 1, descriptorOffset: 1 });
    expect(new TextDecoder().decode(f.subarray(512, 1024))).toMatch(/createType="streamOptimized"[\s\S]*RDONLY \d+ SPARSE "l\.vmdk"/);

    // Walk the stream as a sequential reader would.
    const seen: string[] = [];
    let at = head.overHead * 512;
    let gdAt = -1;
    for (;;) {
      const value = u32(f, at) + u32(f, at + 4) * 2 ** 32;
      const len = u32(f, at + 8);
      if (len > 0) {
        seen.push(`grain@${value}`);
        at += Math.ceil((12 + len) / 512) * 512;
        continue;
      }
      const type = u32(f, at + 12);
      at += 512;
      if (type === MARKER_EOS) {
        seen.push("eos");
        break;
      }
      seen.push(["", "gt", "gd", "footer"][type]!);
      if (type === MARKER_GD) gdAt = at / 512;
      if (type === MARKER_FOOTER) expect(parseSparseHeader(f.subarray(at, at + 512)).gdOffset).toBe(gdAt);
      at += value * 512;
    }
    expect(at).toBe(f.length);
    expect(seen).toEqual([`grain@0`, "gt", `grain@${(2 * GT_SPAN) / 512}`, "gt", "gd", "footer", "eos"]);
    expect(u32(f, gdAt * 512 + 4)).toBe(0); // the empty middle table is not written
  });

  it("skips all-zero grains and never reads what the source reports unallocated", async () => {
    const o = new MemoryFileOpener();
    const size = 8 * MiB;
    const data = new Uint8Array(size);
    data.set(pattern(GRAIN, 7), MiB);
    data.set(pattern(512, 8), 6 * MiB + 512);
    // Bytes the source does not report stored (as a sparse image's unallocated blocks read zeros).
    const disk = new MemoryDisk(data, [
      { offset: MiB, length: 2 * MiB, state: "data" }, // one grain of data, the rest zeros
      { offset: 4 * MiB, length: MiB, state: "zero" },
      { offset: 6 * MiB, length: MiB, state: "data" },
    ]);
    await writeStreamVmdk(o, "z.vmdk", disk, { deflate: nodeDeflateAsync, chunkSize: MiB });
    expect(disk.reads.map(([at]) => at / MiB)).toEqual([1, 2, 6]);
    const img = await openVmdk(o, "z.vmdk", { inflate: nodeInflate });
    expect(img.extents[0]!.stored()).toEqual([
      { offset: MiB, length: GRAIN, state: "data" },
      { offset: 6 * MiB, length: GRAIN, state: "data" },
    ]);
    const back = new Uint8Array(size);
    await img.read(0, back);
    expect(Buffer.compare(back, data)).toBe(0);
    await img.close();
  });

  it("writes a disk of zeros as header, descriptor and an empty directory", async () => {
    const o = new MemoryFileOpener();
    await writeStreamVmdk(o, "e.vmdk", new MemoryDisk(new Uint8Array(3 * MiB)), { deflate: nodeDeflate });
    const f = fileBytes(o, "e.vmdk");
    expect(f.length).toBe(128 * 512 + 512 * 5); // overhead, GD marker, GD, footer marker, footer, EOS
    expect(Buffer.compare(await readAll(o, "e.vmdk"), new Uint8Array(3 * MiB))).toBe(0);
  });

  it("leaves no file behind when the source fails, and never touches a file that already exists", async () => {
    const o = new MemoryFileOpener();
    const disk = new MemoryDisk(pattern(4 * MiB, 11));
    disk.failAt = 3 * MiB + 512;
    await expect(writeStreamVmdk(o, "f.vmdk", disk, { deflate: nodeDeflate, chunkSize: 256 * KiB })).rejects.toMatchObject({ kind: "io" });
    expect(await o.exists("f.vmdk")).toBe(false);

    const failing = new MemoryDisk(pattern(MiB, 12));
    await writeStreamVmdk(o, "g.vmdk", failing, { deflate: () => Promise.reject(new Error("deflate broke")) }).catch(() => undefined);
    expect(await o.exists("g.vmdk")).toBe(false);

    await writeStreamVmdk(o, "h.vmdk", new MemoryDisk(pattern(MiB, 13)), { deflate: nodeDeflate });
    const before = fileBytes(o, "h.vmdk");
    await expect(writeStreamVmdk(o, "h.vmdk", new MemoryDisk(pattern(MiB, 14)), { deflate: nodeDeflate })).rejects.toThrow();
    expect(Buffer.compare(fileBytes(o, "h.vmdk"), before)).toBe(0);
  });

  it("refuses a chunk size that is not whole grains, and a source of no sectors", async () => {
    const o = new MemoryFileOpener();
    await expect(writeStreamVmdk(o, "c.vmdk", new MemoryDisk(new Uint8Array(MiB)), { deflate: nodeDeflate, chunkSize: 4096 })).rejects.toMatchObject({ kind: "unsupported" });
    await expect(writeStreamVmdk(o, "c.vmdk", new MemoryDisk(new Uint8Array(0)), { deflate: nodeDeflate })).rejects.toMatchObject({ kind: "unsupported" });
    expect(await o.exists("c.vmdk")).toBe(false);
  });
});

describe.skipIf(!hasQemu)("writeStreamVmdk with qemu-img", () => {
  const opener = new NodeFileOpener();
  const file = tempFiles("vstor-vmdk-stream-");

  for (const size of [GT_SPAN + 3 * GRAIN, 2 * GT_SPAN + 7 * GRAIN + 3 * 512]) {
    it(`a stream of ${size} bytes written from a raw file passes qemu-img check and compares identical`, async () => {
      const raw = file(`src-${size}.raw`);
      const out = file(`out-${size}.vmdk`);
      const data = sampleDisk(size);
      data.set(pattern(GRAIN + 4096, 9), GT_SPAN + GRAIN - 2048); // into the second table, across grains
      fs.writeFileSync(raw, data);
      const src = await openRaw(opener, raw, { readOnly: true });
      await writeStreamVmdk(opener, out, src, { deflate: nodeDeflateAsync });
      await src.close();

      expectQemuCheckClean(out, "vmdk");
      expectQemuIdentical("-f", "raw", "-F", "vmdk", raw, out);
      const info = qemuInfo(out, "vmdk");
      expect(info["virtual-size"]).toBe(size);
      expect(info["format-specific"]?.data?.["create-type"]).toBe("streamOptimized");
      expect(Buffer.compare(await readAll(opener, out), data)).toBe(0);

      // qemu's own conversion of our stream gives the source back.
      const again = file(`again-${size}.raw`);
      qemu("qemu-img", "convert", "-f", "vmdk", "-O", "raw", out, again);
      expect(Buffer.compare(fs.readFileSync(again), data)).toBe(0);
    });
  }
});
